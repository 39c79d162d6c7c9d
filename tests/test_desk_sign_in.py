"""The first real run, end to end, under a pseudo-terminal: pobatch's profile starts signed out, the run
stops at the portal's sign-in page, pobatch opens its sign-in window, "the person" signs in there (this
test, through a second WebDriver client attached to that window's DevTools port), pobatch notices,
closes the window, finishes the same batch, says how it went and offers to open the results.

The sign-in window runs headless here (POBATCH_SIGN_IN_HEADLESS=1: this machine has no screen); the
flow is otherwise the one a person sees.
"""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import openpyxl
import pytest

from conftest import CHROMEDRIVER
from pobatch.core.demo_portal import DemoPortal
from pobatch.core.reports.workbook import ATTENTION_SHEET
from pobatch.core.sites.demo import DEMO_EMAIL, DEMO_PASSWORD
from desk_pty import PtySession, fake_opener, sign_in_through_devtools
from eventually import wait_for

pytestmark = pytest.mark.usefixtures("browser_available")

ROOT = Path(__file__).resolve().parent.parent
# Two POs with files, one without attachments, one the portal does not know (it needs a person).
ORDERS = "PO_NUMBER\n100001\n100002\n100006\n100007\n"
STEP = 180  # seconds any one step may take on a busy 2-core machine


@pytest.fixture(scope="module")
def portal():
    with DemoPortal().start() as p:
        yield p


def desk_env(tmp_path: Path, bin_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}  # CI=true must not change what a person sees
    env.update(POBATCH_SIGN_IN_HEADLESS="1", PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
               XDG_DATA_HOME=str(tmp_path / "data"), PYTHONPATH=str(ROOT), POBATCH_OFFLINE="1")
    return env


def signer(profile: Path, errors: list[BaseException]) -> threading.Thread:
    def work() -> None:
        try:
            sign_in_through_devtools(profile, DEMO_EMAIL, DEMO_PASSWORD, timeout=STEP)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
    return threading.Thread(target=work, daemon=True)


@pytest.mark.parametrize("mode", [["--sequential"], ["--parallel", "--workers", "2"]], ids=["sequential", "parallel"])
def test_signed_out_profile_signs_in_and_finishes_the_batch_in_one_command(portal, tmp_path, mode):
    orders = tmp_path / "orders.csv"
    orders.write_text(ORDERS, encoding="utf-8")
    profile, out = tmp_path / "profile", tmp_path / "out"
    bin_dir, opened = fake_opener(tmp_path)
    session = PtySession([sys.executable, "-m", "pobatch.core", "run", str(orders), "--site", "demo", "--base-url",
                          portal.base_url, "--profile", str(profile), "--out", str(out), "--driver", CHROMEDRIVER,
                          "--sign-in-if-needed", *mode], env=desk_env(tmp_path, bin_dir), cwd=tmp_path)
    errors: list[BaseException] = []
    try:
        session.expect(r"pobatch must be signed in to " + portal.base_url, STEP)
        session.expect(r"Open the sign-in window now\? \(Y/N\)", STEP)
        thread = signer(profile, errors)
        session.send("y")
        session.expect(r"Sign in in the browser window", STEP)
        thread.start()
        session.expect(r"Signed in\. Carrying on with the same batch\.", STEP)
        thread.join(STEP)
        assert not errors, errors
        session.expect(r"3 of 4 POs done; 1 needs attention, see the 'Attention' sheet in orders_results\.xlsx\.",
                       STEP)
        session.expect(r"Open the results workbook and the report now\? \(Y/N\)", STEP)
        session.send("y")
        assert session.wait(STEP) == 0, session.text[-3000:]
    finally:
        session.close()

    results = out / "orders_results.xlsx"
    wb = openpyxl.load_workbook(results)
    statuses = {str(r[0].value): r[1].value for r in wb["Results"].iter_rows(min_row=2, max_col=2)}
    assert statuses == {"100001": "COMPLETED", "100002": "COMPLETED", "100006": "NO_ATTACHMENTS",
                        "100007": "PO_NOT_FOUND"}
    attention = [[c.value for c in row] for row in wb[ATTENTION_SHEET].iter_rows(min_row=2)]
    assert [(r[1], r[2]) for r in attention] == [("100007", "PO_NOT_FOUND")]
    assert "Check the PO number" in attention[0][4]
    # Both files were handed to the desktop's opener, and the files really are there.
    lines = wait_for(lambda: opened.exists() and len(set(opened.read_text().splitlines())) == 2 and
                     sorted(opened.read_text().splitlines()), STEP, "both files handed to xdg-open")
    assert lines[1] == str(results) and lines[0].endswith("_report.html") and Path(lines[0]).is_file()
    # The sign-in window is closed: nothing runs on the profile any more (conftest also checks).
    assert not (profile / "SingletonLock").exists()


def test_sign_in_window_closed_before_signing_in_leaves_exit_3(portal, tmp_path):
    """The person closes the window instead of signing in: pobatch says so and stops with exit 3."""
    from selenium import webdriver

    from desk_pty import debugger_address

    orders = tmp_path / "orders.csv"
    orders.write_text("PO_NUMBER\n100001\n", encoding="utf-8")
    profile = tmp_path / "profile"
    bin_dir, opened = fake_opener(tmp_path)
    session = PtySession([sys.executable, "-m", "pobatch.core", "run", str(orders), "--site", "demo", "--base-url",
                          portal.base_url, "--profile", str(profile), "--out", str(tmp_path / "out"),
                          "--driver", CHROMEDRIVER, "--sign-in-if-needed"], env=desk_env(tmp_path, bin_dir))
    try:
        session.expect(r"Open the sign-in window now\? \(Y/N\)", STEP)
        session.send("y")
        session.expect(r"Sign in in the browser window", STEP)
        opts = webdriver.ChromeOptions()
        opts.debugger_address = debugger_address(profile, STEP)
        client = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
        try:
            client.execute_cdp_cmd("Browser.close", {})  # what closing the last window does
        except Exception:
            pass
        finally:
            try:
                client.quit()
            except Exception:
                pass
        session.expect(r"The sign-in window was closed before the sign-in finished\.", STEP)
        session.expect(r"0 of 1 PO done; 1 needs attention, see the 'Attention' sheet in orders_results\.xlsx "
                       r"\(sign in first\)\.", STEP)
        session.expect(r"Open the results workbook now\? \(Y/N\)|Open the results workbook and the report now\? "
                       r"\(Y/N\)", STEP)
        session.send("n")
        assert session.wait(STEP) == 3
    finally:
        session.close()
    assert not opened.exists()  # "n" opens nothing


def test_pobatch_login_closes_the_window_by_itself_once_signed_in(portal, tmp_path):
    """No need to close the window: pobatch login notices the sign-in, and the session is on disk."""
    import subprocess

    profile = tmp_path / "profile"
    bin_dir, _opened = fake_opener(tmp_path)
    env = desk_env(tmp_path, bin_dir)
    login = subprocess.Popen([sys.executable, "-m", "pobatch.core", "login", "--site", "demo", "--base-url", portal.base_url,
                              "--profile", str(profile), "--driver", CHROMEDRIVER], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        sign_in_through_devtools(profile, DEMO_EMAIL, DEMO_PASSWORD, timeout=STEP)
        out, _ = login.communicate(timeout=STEP)
    finally:
        if login.poll() is None:
            login.kill()
            login.communicate()
    assert login.returncode == 0, out
    assert "pobatch closes the window by itself once you are signed in" in out and "Signed in:" in out
    orders = tmp_path / "orders.csv"
    orders.write_text("PO_NUMBER\n100001\n", encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "pobatch.core", "run", str(orders), "--site", "demo", "--base-url",
                          portal.base_url, "--profile", str(profile), "--out", str(tmp_path / "out"),
                          "--driver", CHROMEDRIVER], env=env, capture_output=True, text=True, timeout=STEP)
    assert run.returncode == 0, run.stdout + run.stderr  # the session the sign-in left is what the run uses
    assert "1 of 1 PO done; nothing needs attention." in run.stdout


def test_the_sign_in_page_is_never_taken_for_a_finished_sign_in(portal, tmp_path):
    """At the sign-in page (and on a page of another host, as an identity provider's) the watch keeps
    waiting; once the form is sent it answers at once."""
    from selenium.webdriver.common.by import By

    from pobatch.core.preparation.profiles import seed_profile
    from pobatch.core.commands.sign_in import SignInOutcome, home_url, wait_for_sign_in
    from pobatch.core.sites import get_site
    from pobatch.corelib.browser.factory import BrowserSpec
    from pobatch.corelib.browser.local_session import LocalBrowserSession

    site = get_site("demo")
    profile = seed_profile(tmp_path / "profile")
    spec = BrowserSpec(browser="chromium", headless=True, driver=CHROMEDRIVER, user_data_dir=str(profile),
                       local_only=False)  # "localhost" must resolve below
    with LocalBrowserSession(spec) as session:
        d = session.driver
        d.get(home_url(portal.base_url))
        assert "/sessions/new" in d.current_url
        assert wait_for_sign_in(d, site, portal.base_url, timeout=3) is SignInOutcome.TIMED_OUT
        # "localhost" is the same portal under another host name: to the watch, an identity provider
        d.get(portal.base_url.replace("127.0.0.1", "localhost") + "/sessions/new")
        assert wait_for_sign_in(d, site, portal.base_url, timeout=3) is SignInOutcome.TIMED_OUT
        d.get(home_url(portal.base_url))
        d.find_element(By.ID, "user_email").send_keys(DEMO_EMAIL)
        d.find_element(By.ID, "user_password").send_keys(DEMO_PASSWORD)
        d.find_element(By.CSS_SELECTOR, "form#new_session [type=submit]").click()
        assert wait_for_sign_in(d, site, portal.base_url, timeout=STEP) is SignInOutcome.SIGNED_IN
        d.close()  # the person closes the last window
        assert wait_for_sign_in(d, site, portal.base_url, timeout=STEP) is SignInOutcome.WINDOW_CLOSED
