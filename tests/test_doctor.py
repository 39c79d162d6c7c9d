"""`pobatch doctor` (issue 25): one line per check with a verdict, exit 0 when a run can start, 1 when not.

Each failing line is brought about for real where this machine allows it: a browser that is not
installed (chrome), a driver whose version does not match (a stand-in that says 99), a profile held by
a running Chromium, a read-only output folder (a read-only mount), a portal nobody answers at, a
profile that is not signed in to the demo portal, and a Grid whose nodes lack managed downloads (a
stand-in /status). The passing case is the demo portal with a signed-in demo profile.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pobatch.core.demo_portal import DemoPortal
from pobatch.core.commands.doctor import FAIL, OK, DoctorOptions, can_start, run_doctor
from pobatch.core.commands.login import prepare_demo_profile
from pobatch.core.preparation.profiles import seed_profile
from pobatch.corelib.browser.profile_lock import profile_lock_held
from eventually import wait_for

CHROMIUM_BINARY = "/usr/lib/chromium/chromium"


@pytest.fixture(scope="module")
def portal():
    with DemoPortal() as p:
        yield p


@pytest.fixture(scope="module")
def signed_in(portal, tmp_path_factory, browser_available_module):
    return prepare_demo_profile(tmp_path_factory.mktemp("doctor-profile") / "p", portal.base_url)


def by_name(checks) -> dict:
    return {c.name: c for c in checks}


def doctor(tmp_path: Path, **kw) -> dict:
    opts = DoctorOptions(**{"site": "demo", "browser": "chromium", "out": tmp_path / "out", **kw})
    lines: list[str] = []
    checks = run_doctor(opts, echo=lines.append)
    assert all(len(line) < 400 for line in lines)
    result = by_name(checks)
    result["_can_start"] = can_start(checks)
    return result


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pobatch.core", "doctor", *args], capture_output=True, text=True,
                          timeout=180, env={**os.environ, **(env or {})})


@pytest.mark.timeout(180)
def test_a_pc_that_can_run_passes_every_check_and_exits_0(tmp_path, portal, signed_in):
    res = cli("--site", "demo", "--base-url", portal.base_url, "--browser", "chromium", "--profile", str(signed_in),
              "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    verdicts = {line.split()[1]: line.split()[0]
                for line in lines if line[:5].strip() in ("ok", "warn", "FAIL", "skip", "info")}
    for name in ("python", "browser", "driver", "profile", "output", "portal", "signed"):
        assert verdicts[name] == "ok", (name, res.stdout)
    assert "matches the browser" in res.stdout and "is signed in to" in res.stdout
    assert "GB free" in res.stdout and res.stdout.strip().splitlines()[-1].startswith("A run can start")
    assert "Traceback" not in res.stderr


@pytest.mark.timeout(120)
def test_a_profile_that_is_not_signed_in_fails_with_what_to_do(tmp_path, portal, browser_available):
    fresh = seed_profile(tmp_path / "fresh")
    res = cli("--site", "demo", "--base-url", portal.base_url, "--browser", "chromium", "--profile", str(fresh),
              "--out", str(tmp_path / "out"))
    assert res.returncode == 1, res.stdout + res.stderr
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("FAIL  signed in"))
    assert "not signed in" in line
    assert f"-> sign in once: pobatch login --base-url {portal.base_url}" in res.stdout
    assert "A run cannot start on this PC yet: fix signed in" in res.stdout


def test_no_browser_installed(tmp_path):
    res = doctor(tmp_path, browser="chrome", sign_in=False)  # Chromium is here, Google Chrome is not
    assert res["browser"].verdict == FAIL and "no chrome found" in res["browser"].detail
    assert "install chrome" in res["browser"].todo and not res["_can_start"]


def test_a_driver_that_does_not_match_the_browser(tmp_path):
    stand_in = tmp_path / "chromedriver"
    stand_in.write_text("#!/bin/sh\necho 'ChromeDriver 99.0.4844.51 (stand-in)'\n")
    stand_in.chmod(0o755)
    res = doctor(tmp_path, driver=str(stand_in), sign_in=False)
    assert res["browser"].verdict == OK
    assert res["driver"].verdict == FAIL and "99.0.4844.51" in res["driver"].detail
    assert "does not match the browser (version 156)" in res["driver"].detail.replace("version 1", "version 1")
    assert "chromedriver 156" in res["driver"].todo and not res["_can_start"]


@pytest.mark.timeout(60)
def test_a_profile_open_in_a_running_browser(tmp_path, browser_available):
    profile = seed_profile(tmp_path / "busy")
    browser = subprocess.Popen([CHROMIUM_BINARY, "--headless=new", "--no-sandbox", "--disable-gpu",
                                f"--user-data-dir={profile}", "--no-first-run", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: profile_lock_held(profile), what="the browser to lock its profile", timeout=30)
        res = doctor(tmp_path, profile=str(profile), sign_in=False)
    finally:
        browser.terminate()
        try:
            browser.wait(10)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait()
    assert res["profile"].verdict == FAIL and "open in a running browser" in res["profile"].detail
    assert "close every window" in res["profile"].todo and not res["_can_start"]


def test_a_read_only_output_folder(tmp_path, read_only_dir):
    res = doctor(tmp_path, out=read_only_dir / "batch", sign_in=False)
    assert res["output folder"].verdict == FAIL and f"cannot write in {read_only_dir}" in res["output folder"].detail
    assert "--out" in res["output folder"].todo and not res["_can_start"]


def test_a_portal_nobody_answers_at(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    res = doctor(tmp_path, base_url=dead)
    assert res["portal"].verdict == FAIL and "cannot be reached" in res["portal"].detail
    assert res["signed in"].verdict == "skip"  # no browser is started for a portal that is not there
    assert not res["_can_start"]


class _FakeGrid:
    """A stand-in Selenium Grid /status: one node with one chrome slot, managed downloads on or off."""

    def __init__(self, downloads: bool, busy: bool = False) -> None:
        status = {"value": {"ready": True, "message": "Selenium Grid ready.", "nodes": [{
            "availability": "UP", "slots": [{"stereotype": {"browserName": "chrome",
                                                            "se:downloadsEnabled": downloads},
                                             "session": {"sessionId": "x"} if busy else None}]}]}}
        body = json.dumps(status).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server API
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("downloads,busy,verdict,words", [
    (False, False, FAIL, "only without managed downloads"),
    (True, True, "warn", "busy"),
    (True, False, OK, "1 of 1 slot(s) free, managed downloads on"),
])
def test_a_grid_is_checked_for_a_free_slot_with_managed_downloads(tmp_path, downloads, busy, verdict, words):
    grid = _FakeGrid(downloads, busy)
    try:
        res = doctor(tmp_path, grid=grid.url, sign_in=False)
    finally:
        grid.close()
    assert res["grid"].verdict == verdict and words in res["grid"].detail
    if verdict == FAIL:
        assert "--enable-managed-downloads true" in res["grid"].todo


def test_proxy_variables_in_effect_are_shown_without_their_passwords(tmp_path):
    env = {"HTTPS_PROXY": "http://me:s3cret@proxy.example:8080", "NO_PROXY": "localhost"}
    res = cli("--no-sign-in-check", "--out", str(tmp_path), env=env)
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("info  proxy"))
    assert "proxy.example:8080" in line and "s3cret" not in line and "HTTPS_PROXY" in line


@pytest.mark.parametrize("args,words", [
    (["--base-url", "yourcompany"], "--base-url: 'yourcompany' is not a portal address"),
    (["--grid", "gridhost:4444"], "--grid: 'gridhost:4444' is not a Grid address"),
])
def test_bad_options_get_one_line_and_exit_2(args, words):
    res = cli(*args)
    assert res.returncode == 2 and words in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


# -- run.sh offers the doctor when a run could not start (exit 2) ------------------------------------
def _failing_sandbox(tmp_path: Path):
    from test_launchers import Sandbox, stub

    box = Sandbox(tmp_path)
    stub(box.root / ".venv" / "bin" / "pobatch", f'[ "$1" = "--version" ] && exit 0\n'
                                                 f'echo "pobatch $*" >> "{box.log}"\n'
                                                 f'[ "$1" = "run" ] && exit 2\nexit 1\n')
    return box


@pytest.mark.skipif(sys.platform == "win32", reason="run.sh is for Linux and macOS")
def test_run_sh_says_how_to_check_the_pc_when_nobody_is_at_the_terminal(tmp_path):
    box = _failing_sandbox(tmp_path)
    result = box.run("run", "o.csv", "--base-url", "https://x.coupahost.com")
    assert result.returncode == 2 and '"./run.sh doctor" checks this PC' in result.stderr
    assert box.calls() == ["pobatch run o.csv --base-url https://x.coupahost.com"]


@pytest.mark.skipif(sys.platform == "win32", reason="run.sh is for Linux and macOS")
def test_run_sh_offers_the_doctor_with_the_runs_own_options(tmp_path):
    from desk_pty import PtySession
    from test_launchers import SH

    box = _failing_sandbox(tmp_path)
    session = PtySession([SH, str(box.root / "run.sh"), "run", "o.csv", "--parallel", "--base-url",
                          "https://x.coupahost.com", "--profile", "my profile", "--out=out dir", "-v"],
                         env={"PATH": str(box.bin), "HOME": str(box.root), "PYTHON": str(box.bin / "python3")})
    try:
        session.expect(r'Check this PC with "pobatch doctor" now\? \(Y/N\)', 60)
        session.send("y")
        assert session.wait(60) == 2  # the run's exit code, not the doctor's
    finally:
        session.close()
    assert box.calls()[-1] == "pobatch doctor --base-url https://x.coupahost.com --profile my profile --out=out dir"


def test_run_bat_offers_the_doctor_when_a_run_could_not_start():
    bat = (Path(__file__).resolve().parent.parent / "run.bat").read_bytes().decode("ascii")
    assert bat.count('if "%RC%"=="2" call :offer_doctor') == 2  # a dropped file and a double-click
    offer = bat[bat.index("\r\n:offer_doctor\r\n"):]
    assert 'choice /c YN /m "The run could not start. Check this PC with pobatch doctor now"' in offer
    doctor_at = offer.index('"%POBATCH%" doctor')
    assert offer.index("if errorlevel 2 exit /b 0") < doctor_at < offer.index("exit /b 0", doctor_at) < \
        offer.index(":setup_failed")  # N returns at once; after the doctor it returns, never falls through
    assert '"run.bat doctor" checks this PC' in bat  # typed commands get the hint, never a question
