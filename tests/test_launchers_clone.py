"""Issue 17's "done when": a fresh clone, ./run.sh with no arguments under a pseudo-terminal, and a
person who only answers the prompts. The clone sets itself up (a new .venv, pip install -e .), asks
for the orders file, the portal address and the mode, stops at the demo portal's sign-in page with a
signed-out profile, opens the sign-in window, notices the sign-in ("the person" signs in through a
second WebDriver client on the window's DevTools port), finishes the same batch, says how it went and
offers to open the results.

It needs the package index for the clone's first set-up (as a person's first run does).
"""
from __future__ import annotations

import os
import subprocess
import sys

import openpyxl
import pytest

from pobatch.core.demo_portal import DemoPortal
from pobatch.core.sites.demo import DEMO_EMAIL, DEMO_PASSWORD
from desk_pty import PtySession, fake_opener, sign_in_through_devtools
from package_index import fresh_clone, require_package_index
from eventually import wait_for

SETUP = 900  # a new venv and pip install on a busy machine
STEP = 180

pytestmark = [pytest.mark.usefixtures("browser_available"),
              pytest.mark.skipif(sys.platform == "win32", reason="run.sh is for Linux and macOS")]


def test_fresh_clone_run_sh_asks_signs_in_and_finishes_the_batch(tmp_path):
    require_package_index("the clone cannot set itself up")
    clone = fresh_clone(tmp_path / "clone")
    orders = tmp_path / "my orders.csv"
    orders.write_text("PO_NUMBER\n100001\n100006\n", encoding="utf-8")
    bin_dir, opened = fake_opener(tmp_path)
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", XDG_DATA_HOME=str(data),
               POBATCH_SIGN_IN_HEADLESS="1", PYTHON=getattr(sys, "_base_executable", sys.executable))
    with DemoPortal().start() as portal:
        session = PtySession([str(clone / "run.sh")], env=env, cwd=tmp_path)
        try:
            session.expect(r"Setting up pobatch in \.venv", STEP)
            session.expect(r"Orders file \(CSV or Excel\)", SETUP)
            session.send(f"'{orders}'")  # as a terminal pastes a file dragged into it
            session.expect(r"Portal address \(e\.g\. https://yourcompany\.coupahost\.com\)", STEP)
            session.send(portal.base_url)
            session.expect(r"Sequential \(S\) or parallel \(P\)\?", STEP)
            session.send("s")
            session.expect(r"pobatch must be signed in to " + portal.base_url, STEP)
            session.expect(r"Open the sign-in window now\? \(Y/N\)", STEP)
            session.send("y")
            session.expect(r"Sign in in the browser window", STEP)
            sign_in_through_devtools(data / "pobatch" / "profile", DEMO_EMAIL, DEMO_PASSWORD, timeout=STEP)
            session.expect(r"Signed in\. Carrying on with the same batch\.", STEP)
            session.expect(r"2 of 2 POs done; nothing needs attention\.", STEP)
            session.expect(r"Open the results workbook and the report now\? \(Y/N\)", STEP)
            session.send("y")
            assert session.wait(STEP) == 0, session.text[-3000:]
        finally:
            session.close()
    results = tmp_path / "my orders_downloads" / "my orders_results.xlsx"
    statuses = [r[1].value for r in openpyxl.load_workbook(results)["Results"].iter_rows(min_row=2, max_col=2)]
    assert statuses == ["COMPLETED", "NO_ATTACHMENTS"]
    assert (data / "pobatch" / "base_url.txt").read_text().strip() == portal.base_url  # asked once, remembered
    wait_for(lambda: opened.exists() and len(opened.read_text().splitlines()) == 2, STEP, "both files opened")
    assert not (clone / ".venv" / ".pobatch-test-setup.cfg").exists()  # a user gets no test tools
    assert subprocess.run([str(clone / ".venv" / "bin" / "python"), "-c", "import pytest"],
                          capture_output=True).returncode != 0
