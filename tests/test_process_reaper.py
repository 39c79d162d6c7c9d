"""pobatch.corelib.browser.process_reaper against real headless Chromium: find and kill exactly our browsers.

The crash test kills the Python side of a browser hard (a spawned child killed with SIGKILL), which
orphans chromedriver and Chromium exactly as a crashed worker would.
"""
from __future__ import annotations

import fnmatch
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import psutil
import pytest

from pobatch.corelib.browser import processes as browser_processes_module
from pobatch.corelib.browser.processes import browser_processes
from pobatch.corelib.browser.process_reaper import kill_browser_tree
from pobatch.corelib.browser.profile_lock import live_browsers_on
from eventually import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TEST_BROWSER_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)


# Drivers started by this module (in-process or reported by a child), checked by the leftovers fixture.
_STARTED_DRIVERS: list[psutil.Process] = []


# --------------------------------------------------------------------------------------------------
# Local fixtures: a browser starter (the real factory replaces it later), a tiny portal, leftovers
# --------------------------------------------------------------------------------------------------


def start_test_browser(user_data_dir: Path):
    """A headless Chromium on this profile dir, resolving only 127.0.0.1."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in TEST_BROWSER_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    return driver


def driver_process(driver) -> psutil.Process:
    return psutil.Process(driver.service.process.pid)


def browser_tree(driver_proc: psutil.Process) -> set[int]:
    """The driver and every process below it: what a browser session consists of."""
    return {driver_proc.pid} | {p.pid for p in driver_proc.children(recursive=True)}


def is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def processes_using_dirs_under(root: Path) -> list[psutil.Process]:
    """Independent of the code under test: live processes whose command line names a dir under root."""
    needle = f"--user-data-dir={root}"
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if needle in cmdline and proc.pid != os.getpid() and not is_gone(proc.pid):
            found.append(proc)
    return found


# chromedriver's own empty temp dir (for extensions): it stays when the driver is killed, and nothing
# ties it to a profile dir, so kill_browser_tree cannot know it is ours. See the report / DESIGN note.
DRIVER_TEMP_DIR = "org.chromium.Chromium.scoped_dir.*"


@pytest.fixture(autouse=True)
def scratch(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private temp root for profile dirs, and the temp folder of this test's browsers.

    Its name has a space on purpose (Linux Chromium's helper titles then split the dir). TMPDIR and
    tempfile point into it, so a browser's socket folder lands there. Afterwards no browser and no
    profile dir may remain, and no socket folder either.
    """
    root = Path(tempfile.mkdtemp(prefix="pobatch test "))
    temp_dir = root / "tmp"
    temp_dir.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp_dir))  # inherited by chromedriver, Chromium, child workers
    monkeypatch.setattr(tempfile, "tempdir", str(temp_dir))
    _STARTED_DRIVERS.clear()
    try:
        yield root
    finally:
        leftovers: list[psutil.Process] = []
        try:
            wait_for(lambda: not processes_using_dirs_under(root), timeout=10, what="browsers to exit")
        except AssertionError:
            leftovers = processes_using_dirs_under(root)
        drivers_left = [p for p in _STARTED_DRIVERS if p.is_running() and not is_gone(p.pid)]
        for proc in leftovers + drivers_left:  # never leave them running, even when failing
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(leftovers + drivers_left, timeout=5)
        temp_left = sorted(p.name for p in temp_dir.iterdir() if not fnmatch.fnmatchcase(p.name, DRIVER_TEMP_DIR))
        shutil.rmtree(root, ignore_errors=True)
        assert not leftovers, f"browser processes left on {root}: {[p.pid for p in leftovers]}"
        assert not drivers_left, f"chromedriver processes left: {[p.pid for p in drivers_left]}"
        assert not temp_left, f"temp folders left by browsers: {temp_left}"
        assert not root.exists(), f"temp profile root {root} could not be removed"


class _Portal(http.server.ThreadingHTTPServer):
    """A tiny portal on 127.0.0.1: /login sets a persistent session cookie; every request's path and
    Cookie header are recorded."""

    daemon_threads = True
    SESSION_COOKIE = "pobatch_session=s3cr3t-42"

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _PortalHandler)
        self.requests: list[tuple[str, str]] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _PortalHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.requests.append((self.path, self.headers.get("Cookie") or ""))  # type: ignore[attr-defined]
        body = f"<html><head><title>page {self.path}</title></head><body>ok</body></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        if self.path == "/login":
            # Persistent (Max-Age), so Chromium writes it to the profile's Cookies database.
            self.send_header("Set-Cookie", f"{_Portal.SESSION_COOKIE}; Max-Age=86400; Path=/; HttpOnly")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def portal() -> Iterator[_Portal]:
    server = _Portal()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _browser_until_killed(user_data_dir: str, url: str, report_file: str) -> None:
    """Child process body: start a browser, report, then wait to be killed like a hung worker."""
    driver = start_test_browser(Path(user_data_dir))
    driver.get(url)
    info = {"driver_pid": driver.service.process.pid, "title": driver.title}
    tmp = report_file + ".tmp"
    Path(tmp).write_text(json.dumps(info))
    os.replace(tmp, report_file)
    while True:
        time.sleep(60)


def start_python_child(function: Callable[..., None], *args: str) -> subprocess.Popen:
    """Run function(*args) of this module in a fresh interpreter, as a worker process would run.

    A plain subprocess rather than multiprocessing: a spawn start also starts multiprocessing's
    resource tracker, a long-lived child that would outlive the test.
    """
    code = (
        "import json, sys; sys.path[:0] = json.loads(sys.argv[1]); import importlib; "
        "getattr(importlib.import_module(sys.argv[2]), sys.argv[3])(*json.loads(sys.argv[4]))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(sys.path), function.__module__, function.__name__, json.dumps(args)]
    )


def read_child_report(child: subprocess.Popen, report_file: Path, timeout: float = 90.0) -> dict:
    """Wait for the child's report file; fail fast if the child died first."""
    try:
        wait_for(lambda: report_file.exists() or child.poll() is not None, timeout, "the child's report")
        if not report_file.exists():
            raise AssertionError(f"child exited with {child.returncode} before reporting")
    except BaseException:
        child.kill()
        child.wait(15)
        raise
    return json.loads(report_file.read_text())


def _start_browser_in_child(user_data_dir: Path, url: str) -> tuple[subprocess.Popen, dict]:
    report_file = user_data_dir.parent / f"{user_data_dir.name}.report.json"
    child = start_python_child(_browser_until_killed, str(user_data_dir), url, str(report_file))
    info = read_child_report(child, report_file)
    _STARTED_DRIVERS.append(psutil.Process(info["driver_pid"]))
    return child, info


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_kill_browser_tree_after_worker_sigkill_leaves_other_browser_alive(scratch: Path, portal: _Portal, browser_available: None) -> None:
    crashed_dir = scratch / "w1"
    survivor_dir = scratch / "w1 2"  # a prefix of the crashed dir's name, with a space: must not match
    crashed_dir.mkdir()
    survivor_dir.mkdir()

    survivor = start_test_browser(survivor_dir)
    survivor_driver = driver_process(survivor)
    _STARTED_DRIVERS.append(survivor_driver)
    survivor_tree = browser_tree(survivor_driver)

    child, info = _start_browser_in_child(crashed_dir, portal.url("/crash"))
    assert info["title"] == "page /crash"
    orphan_driver = psutil.Process(info["driver_pid"])
    orphan_tree = browser_tree(orphan_driver)
    socket_dir = Path(os.readlink(crashed_dir / "SingletonSocket")).parent
    assert socket_dir.is_dir() and socket_dir.parent == scratch / "tmp"

    psutil.Process(child.pid).kill()  # the worker dies hard: nothing of its cleanup runs
    child.wait(15)
    assert orphan_driver.is_running() and not is_gone(orphan_driver.pid), "chromedriver should be orphaned"

    found = {p.pid for p in browser_processes(crashed_dir)}
    assert orphan_driver.pid in found
    assert found & survivor_tree == set()
    # Every found process was in the crashed session's tree: nothing else was picked up.
    assert found <= orphan_tree
    assert len(found) >= 3  # driver, main browser, and its helpers

    # Not told the folder is pobatch's own (a clone): only what this process started may go, and the
    # orphans were started by a worker that is gone, so nothing is touched.
    assert kill_browser_tree(crashed_dir) == 0  # nothing signalled
    # The driver and the browser it started are untouched (as for the survivor below: a helper of a
    # busy browser may end by itself, which is not the reaper's doing).
    assert not is_gone(orphan_driver.pid)
    assert all(not is_gone(p.pid) for p in orphan_driver.children()), sorted(p for p in orphan_tree if is_gone(p))
    killed = kill_browser_tree(crashed_dir, owned=True)
    assert killed >= len(found)
    assert all(is_gone(pid) for pid in orphan_tree)
    assert browser_processes(crashed_dir) == []
    assert not socket_dir.exists(), "the SingletonSocket folder of a killed browser should be removed"
    assert not (crashed_dir / "SingletonLock").is_symlink(), "stale lock left behind"
    shutil.rmtree(crashed_dir)

    # The other browser did not notice.
    assert not is_gone(survivor_driver.pid)
    assert all(not is_gone(p.pid) for p in survivor_driver.children())
    survivor.get(portal.url("/still-alive"))
    assert survivor.title == "page /still-alive"
    assert kill_browser_tree(survivor_dir) >= 2
    assert all(is_gone(pid) for pid in survivor_tree)
    shutil.rmtree(survivor_dir)


@pytest.mark.timeout(180)
def test_browser_processes_finds_exactly_the_session_tree(scratch: Path, portal: _Portal, browser_available: None) -> None:
    first_dir, second_dir = scratch / "p", scratch / "p-2"
    first_dir.mkdir()
    second_dir.mkdir()
    first = start_test_browser(first_dir)
    second = start_test_browser(second_dir)
    first_driver, second_driver = driver_process(first), driver_process(second)
    _STARTED_DRIVERS.extend([first_driver, second_driver])
    first.get(portal.url("/a"))
    second.get(portal.url("/b"))
    # A process that only mentions the dir on its command line but is not a browser is never ours.
    decoy = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", f"--user-data-dir={first_dir}"],
    )
    try:
        for driver_proc, user_data_dir in ((first_driver, first_dir), (second_driver, second_dir)):
            tree = {p.pid for p in driver_proc.children(recursive=True)} | {driver_proc.pid}
            found = {p.pid for p in browser_processes(user_data_dir)}
            # Every helper of the live browser (crashpad handlers aside) and the driver, nothing more.
            helpers = {
                p.pid for p in driver_proc.children(recursive=True)
                if "crashpad" not in p.name() and not is_gone(p.pid)
            }
            assert found <= tree
            assert helpers | {driver_proc.pid} <= found
            # Titles of helpers are rewritten on Linux; the command-line match alone still finds them.
            matched = {p.pid for p in browser_processes_module.matching_browsers(user_data_dir)}
            assert helpers <= matched
        assert decoy.pid not in {p.pid for p in browser_processes(first_dir)}
        # Path spellings that mean the same dir find the same processes.
        same = {p.pid for p in browser_processes(str(first_dir) + os.sep)}
        assert same == {p.pid for p in browser_processes(first_dir / "x" / "..")}
        assert same == {p.pid for p in browser_processes(first_dir)}
        assert browser_processes(scratch / "nobody") == []
        assert kill_browser_tree(scratch / "nobody") == 0
    finally:
        decoy.kill()
        decoy.wait(10)
        first.quit()
        second.quit()
    wait_for(lambda: not browser_processes(first_dir) and not browser_processes(second_dir), 15, "quit")


@pytest.mark.timeout(180)
def test_live_browsers_on_by_command_line_and_by_lock(scratch: Path, portal: _Portal, browser_available: None) -> None:
    profile = scratch / "base"
    profile.mkdir()
    assert live_browsers_on(profile) == []
    driver = start_test_browser(profile)
    _STARTED_DRIVERS.append(driver_process(driver))
    try:
        driver.get(portal.url("/x"))
        mains = live_browsers_on(profile)
        main_pids = [p.pid for p in mains]
        assert main_pids == [p.pid for p in driver_process(driver).children()], "one main process, the driver's child"

        # A browser that uses its default dir has no --user-data-dir: only SingletonLock names it.
        by_lock = scratch / "default-dir"
        by_lock.mkdir()
        os.symlink(f"{socket.gethostname()}-{main_pids[0]}", by_lock / "SingletonLock")
        assert [p.pid for p in live_browsers_on(by_lock)] == main_pids

        # A stale lock (dead pid) or one whose pid was reused by a non-browser is no browser.
        stale = scratch / "stale"
        stale.mkdir()
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait(10)
        os.symlink(f"{socket.gethostname()}-{dead.pid}", stale / "SingletonLock")
        assert live_browsers_on(stale) == []
        os.unlink(stale / "SingletonLock")
        os.symlink(f"{socket.gethostname()}-{os.getpid()}", stale / "SingletonLock")
        assert live_browsers_on(stale) == []
        os.unlink(stale / "SingletonLock")
        os.symlink(f"another-host-{main_pids[0]}", stale / "SingletonLock")
        assert live_browsers_on(stale) == []
    finally:
        driver.quit()
    wait_for(lambda: live_browsers_on(profile) == [], 15, "the browser to exit")


def test_kill_browser_tree_removes_only_a_dead_browsers_own_socket_folder(scratch: Path) -> None:
    temp_dir = Path(tempfile.gettempdir())  # scratch/tmp during tests
    profile = scratch / "profile"
    profile.mkdir()

    def socket_folder(parent: Path, name: str) -> Path:
        folder = parent / name
        folder.mkdir(parents=True)
        (folder / "SingletonSocket").write_text("")
        for link in ("SingletonSocket", "SingletonLock"):
            if (profile / link).is_symlink():
                (profile / link).unlink()
        os.symlink(folder / "SingletonSocket", profile / "SingletonSocket")
        return folder

    # The lock names a live process: some browser still holds the profile; leave everything.
    held = socket_folder(temp_dir, "org.chromium.Chromium.held01")
    os.symlink(f"{socket.gethostname()}-{os.getpid()}", profile / "SingletonLock")
    assert kill_browser_tree(profile) == 0
    assert held.is_dir() and (profile / "SingletonLock").is_symlink()
    shutil.rmtree(held)

    # Not in the temp folder, or not named like Chromium's: not ours either.
    elsewhere = socket_folder(scratch / "elsewhere", "org.chromium.Chromium.abc123")
    assert kill_browser_tree(profile) == 0 and elsewhere.is_dir()
    shutil.rmtree(elsewhere.parent)
    odd_name = socket_folder(temp_dir, "my-own-folder")
    assert kill_browser_tree(profile) == 0 and odd_name.is_dir()
    shutil.rmtree(odd_name)

    # A dead browser's lock and socket folder: removed, so the dir can be reused or deleted.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(10)
    ours = socket_folder(temp_dir, "org.chromium.Chromium.dead01")
    os.symlink(f"{socket.gethostname()}-{dead.pid}", profile / "SingletonLock")
    assert kill_browser_tree(profile) == 0
    assert not ours.exists()
    assert not (profile / "SingletonLock").is_symlink() and not (profile / "SingletonSocket").is_symlink()


def test_user_data_dir_flag_forms() -> None:
    """Both flag spellings, quotes, trailing separators; never a prefix of another dir."""
    target = os.path.abspath(os.path.join(tempfile.gettempdir(), "pobatch forms", "w1"))
    forms = browser_processes_module._target_forms(target)
    carries = browser_processes_module._carries_dir
    assert carries(["chromium", f"--user-data-dir={target}"], forms)
    assert carries(["chromium", "--user-data-dir", target, "data:,"], forms)
    assert carries(["chromium", f'--user-data-dir="{target}"'], forms)
    assert carries(["chromium", f"--user-data-dir={target}{os.sep}"], forms)
    assert not carries(["chromium", f"--user-data-dir={target}0"], forms)
    assert not carries(["chromium", f"--user-data-dir={target}{os.sep}sub"], forms)
    assert not carries(["chromium", "--user-data-dir"], forms)
    assert not carries(["chromium", "--profile-directory", target], forms)
    if browser_processes_module._TITLES_REWRITTEN:
        # A rewritten helper title that psutil split on spaces.
        title = f"/usr/lib/chromium/chromium --type=renderer --user-data-dir={target} --lang=en".split(" ")
        assert carries(title, forms)
        other = f"/usr/lib/chromium/chromium --type=renderer --user-data-dir={target} 2 --lang=en".split(" ")
        assert not carries(other, forms)


def test_a_child_still_using_a_scratch_folder_is_killed_before_the_folder_goes(tmp_path):
    """A driver whose start was cut short has no browser (no profile dir names it): found by its temp folder."""
    import subprocess
    import sys

    from pobatch.corelib.browser.process_reaper import kill_scratch_users

    scratch = tmp_path / "pobatch-drv-1-x"
    scratch.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    user = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env={"TMPDIR": str(scratch)})
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env={"TMPDIR": str(other)})
    try:
        assert kill_scratch_users(scratch) == 1
        assert user.wait(timeout=10) is not None and bystander.poll() is None
    finally:
        for p in (user, bystander):
            p.kill()
            p.wait(timeout=10)
