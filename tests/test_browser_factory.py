"""pobatch.corelib.browser.factory: driver resolution and options as pure logic, then real starts of headless Chromium.

Resolution tests change only PATH, environment variables and sys.platform; the start tests use the
real Debian Chromium and chromedriver (no Selenium mocks), a real page from a local http.server, and
check that nothing is left running.
"""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import stat
import sys
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PureWindowsPath
from typing import Iterator

import psutil
import pytest
from selenium import webdriver

from pobatch.core.preparation.profiles import browser_user_data_dir
from pobatch.corelib.browser.factory import (
    LOOPBACK_RESOLVER_RULES,
    PORTAL_RESOLVER_RULES,
    BrowserSpec,
    DriverResolution,
    _away_from_the_console,
    _driver_name,
    browser_binary_candidates,
    build_options,
    default_browser,
    merge_list_switches,
    quit_browser,
    resolve_browser_binary,
    resolve_driver,
    start_browser,
)
from pobatch.corelib.browser.session import BrowserSession, SessionNotStarted
from pobatch.corelib.errors import FatalError
from pobatch.corelib.browser.grid import GridSpec
from pobatch.corelib.browser.local_session import LocalBrowserSession
from pobatch.corelib.browser.process_reaper import kill_browser_tree
from pobatch.corelib.browser.remote_session import RemoteBrowserSession
from pobatch.core.modes.single_session.shared_browser import SharedBrowser
from pobatch.core.modes.single_session.window_session import WindowSession
from conftest import CHROMEDRIVER
from eventually import wait_for

pytestmark = pytest.mark.timeout(120)


# -- helpers ----------------------------------------------------------------------------------------
def fake_executable(folder: Path, name: str) -> Path:
    """An executable file with the driver's name: resolution only needs it to exist and be runnable."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH holds one empty folder: no driver can be found there."""
    folder = tmp_path / "empty-bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    return folder


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """webdriver-manager is installed here: never let a test reach the internet through it."""
    monkeypatch.setenv("POBATCH_OFFLINE", "1")


@pytest.fixture
def scratch() -> Iterator[Path]:
    """The driver's TMPDIR: short on purpose, Chromium's singleton socket path must stay under 108 bytes
    (a pytest tmp_path is too long for it)."""
    path = Path(tempfile.mkdtemp(prefix="pbf-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def our_drivers() -> list[psutil.Process]:
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "chromedriver" in p.name():
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@contextlib.contextmanager
def local_site(root: Path) -> Iterator[str]:
    """Serve `root` on 127.0.0.1 (an ephemeral port) for the duration of the block."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# -- driver resolution ------------------------------------------------------------------------------
def test_explicit_driver_that_exists_wins_over_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = fake_executable(tmp_path / "path-bin", "chromedriver")
    monkeypatch.setenv("PATH", str(on_path.parent) + os.pathsep + os.environ.get("PATH", ""))
    explicit = fake_executable(tmp_path / "mine", "my-chromedriver")

    res = resolve_driver(BrowserSpec(driver=str(explicit)), binary=None)

    assert (res.path, res.how) == (str(explicit), "explicit --driver")


def test_explicit_driver_that_does_not_exist_is_fatal_and_says_what_was_expected(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "chromedriver"
    with pytest.raises(FatalError) as info:
        resolve_driver(BrowserSpec(driver=str(missing)))
    msg = str(info.value)
    assert "--driver" in msg and str(missing) in msg
    assert "expected the path of chromedriver" in msg
    assert info.value.reason == "BAD_CONFIG"

    with pytest.raises(FatalError, match=r"--driver.*expected the path of msedgedriver"):
        resolve_driver(BrowserSpec(browser="edge", driver=str(missing)))


def test_driver_on_path_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_executable(tmp_path / "bin", "chromedriver")
    monkeypatch.setenv("PATH", str(fake.parent) + os.pathsep + os.environ.get("PATH", ""))

    res = resolve_driver(BrowserSpec(), binary=None)

    assert (res.path, res.how) == (str(fake), "PATH")
    assert res.attempts == ["explicit path: no --driver given"]


def test_edge_looks_for_msedgedriver_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_executable(tmp_path / "bin", "chromedriver")  # the wrong driver for Edge must be ignored
    edge = fake_executable(tmp_path / "bin", "msedgedriver")
    monkeypatch.setenv("PATH", str(edge.parent))

    res = resolve_driver(BrowserSpec(browser="edge"))

    assert (res.path, res.how) == (str(edge), "PATH")


def test_driver_next_to_the_browser_is_found_when_path_has_none(tmp_path: Path, empty_path: Path) -> None:
    browser = fake_executable(tmp_path / "portable-chromium", "chromium")
    beside = fake_executable(browser.parent, "chromedriver")

    res = resolve_driver(BrowserSpec(binary=str(browser)), binary=resolve_browser_binary(BrowserSpec(binary=str(browser))))

    assert (res.path, res.how) == (str(beside), "next to the browser")


def test_offline_with_nothing_found_explains_every_step_in_one_line_each(
    tmp_path: Path, empty_path: Path, offline: None
) -> None:
    browser = fake_executable(tmp_path / "browser-without-driver", "chromium")

    res = resolve_driver(BrowserSpec(), binary=str(browser))

    assert isinstance(res, DriverResolution)
    assert (res.path, res.how) == (None, "Selenium Manager")
    assert len(res.attempts) == 4, res.attempts
    explicit, local, wdm, selenium_manager = res.attempts
    assert explicit.startswith("explicit path:") and "--driver" in explicit
    assert local.startswith("PATH / next to the browser:") and "chromedriver" in local
    assert wdm.startswith("webdriver-manager:") and "skipped" in wdm and "POBATCH_OFFLINE" in wdm
    assert selenium_manager.startswith("Selenium Manager:")
    assert all("\n" not in a and a.strip() == a for a in res.attempts)


# -- browser binary and browser name ----------------------------------------------------------------
def test_browser_binary_that_does_not_exist_is_fatal_naming_the_option(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-browser"
    spec = BrowserSpec(binary=str(missing))
    with pytest.raises(FatalError) as info:
        resolve_browser_binary(spec)
    assert "--browser-binary" in str(info.value) and str(missing) in str(info.value)
    assert info.value.reason == "BAD_CONFIG"
    # start_browser checks it before anything is started
    with pytest.raises(FatalError, match="--browser-binary"):
        start_browser(spec)
    assert not our_drivers()


def test_explicit_browser_binary_that_exists_is_used(tmp_path: Path) -> None:
    browser = fake_executable(tmp_path / "b", "chromium")
    assert resolve_browser_binary(BrowserSpec(binary=str(browser))) == str(browser)


def test_debian_chromium_resolves_to_the_real_binary_not_the_wrapper(browser_available: None) -> None:
    if not Path("/usr/lib/chromium/chromium").is_file():
        pytest.skip("not Debian's chromium layout")
    assert resolve_browser_binary(BrowserSpec(browser="chromium")) == "/usr/lib/chromium/chromium"


def test_unsupported_browser_is_fatal_and_names_the_accepted_ones() -> None:
    with pytest.raises(FatalError) as info:
        BrowserSpec(browser="firefox")
    msg = str(info.value)
    assert "firefox" in msg and "--browser" in msg
    for accepted in ("edge", "chrome", "chromium"):
        assert accepted in msg


def test_edge_on_windows_paths_driver_name_profile_and_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("PROGRAMFILES(X86)", r"C:\Program Files (x86)")
    monkeypatch.setenv("PROGRAMFILES", r"C:\Program Files")
    monkeypatch.setenv("LOCALAPPDATA", r"C:\Users\anna\AppData\Local")

    # Compared as Windows paths: the code joins with the host's Path class, which on Windows is WindowsPath.
    cands = [PureWindowsPath(str(c)) for c in browser_binary_candidates("edge")]
    assert cands == [
        PureWindowsPath(r"C:\Program Files (x86)\Microsoft\Edge\Application\msedge.exe"),
        PureWindowsPath(r"C:\Program Files\Microsoft\Edge\Application\msedge.exe"),
        PureWindowsPath(r"C:\Users\anna\AppData\Local\Microsoft\Edge\Application\msedge.exe"),
    ]
    assert _driver_name("edge") == "msedgedriver.exe"
    assert _driver_name("chrome") == "chromedriver.exe"
    assert PureWindowsPath(str(browser_user_data_dir("edge"))) == PureWindowsPath(
        r"C:\Users\anna\AppData\Local\Microsoft\Edge\User Data")
    assert default_browser() == "edge"


def test_default_browser_elsewhere_is_chromium(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    assert default_browser() == "chromium"
    assert _driver_name("edge") == "msedgedriver"


# -- options ----------------------------------------------------------------------------------------
def _resolver_rules(args: list[str]) -> list[str]:
    return [a.split("=", 1)[1] for a in args if a.startswith("--host-resolver-rules=")]


def test_build_options_headless_profile_local_only_and_download_prefs(tmp_path: Path) -> None:
    profile, downloads = tmp_path / "profile", tmp_path / "downloads"
    spec = BrowserSpec(user_data_dir=str(profile), download_dir=str(downloads), local_only=True, no_sandbox=True,
                       profile_directory="Profile 1")

    opts = build_options(spec, "/opt/chromium/chrome")

    args = list(opts.arguments)
    assert opts.binary_location == "/opt/chromium/chrome"
    for flag in ("--headless=new", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        assert flag in args, flag
    assert f"--user-data-dir={profile.resolve()}" in args
    assert "--profile-directory=Profile 1" in args
    assert _resolver_rules(args) == [LOOPBACK_RESOLVER_RULES]
    # nothing but the loopback addresses the demo portal and its identity provider listen on
    assert LOOPBACK_RESOLVER_RULES == "MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE 127.0.0.2"
    prefs = opts.experimental_options["prefs"]
    assert prefs["download.default_directory"] == str(downloads.resolve())
    assert prefs["download.prompt_for_download"] is False
    assert prefs["plugins.always_open_pdf_externally"] is True
    assert prefs["download.directory_upgrade"] is True


def test_build_options_for_a_real_portal_only_blocks_the_new_tab_lookup(tmp_path: Path) -> None:
    spec = BrowserSpec(browser="edge", headless=False, user_data_dir=str(tmp_path / "p"))

    opts = build_options(spec, None)

    args = list(opts.arguments)
    assert isinstance(opts, webdriver.EdgeOptions)
    assert _resolver_rules(args) == [PORTAL_RESOLVER_RULES]
    assert PORTAL_RESOLVER_RULES == "MAP start.duckduckgo.com ~NOTFOUND"
    assert "--headless=new" not in args
    assert "download.default_directory" not in opts.experimental_options["prefs"]
    assert opts.experimental_options["prefs"]["plugins.always_open_pdf_externally"] is True


def test_a_second_disable_features_adds_to_the_factory_list_instead_of_replacing_it(tmp_path: Path) -> None:
    """Chromium keeps only the last --disable-features: extra_args' own would drop BackForwardCache and the rest."""
    spec = BrowserSpec(user_data_dir=str(tmp_path / "p"), extra_args=(
        "--disable-features=PaintHolding,Translate", "--blink-settings=imagesEnabled=false", "--mute-audio"))

    args = list(build_options(spec, None).arguments)

    features = [a for a in args if a.startswith("--disable-features=")]
    assert len(features) == 1
    names = features[0].split("=", 1)[1].split(",")
    assert {"BackForwardCache", "Translate", "MediaRouter", "OptimizationHints", "PaintHolding"} <= set(names)
    assert len(names) == len(set(names))  # Translate once
    assert args.count("--blink-settings=imagesEnabled=false") == 1 and "--mute-audio" in args
    assert merge_list_switches(["--a", "--enable-features=X", "--b=1", "--enable-features=Y,X"]) == \
        ["--a", "--enable-features=X,Y", "--b=1"]


def test_a_headless_browser_starts_full_screen_on_a_screen_of_the_window_size(tmp_path: Path) -> None:
    """No toolbar, tab strip or location bar to lay out and paint at every navigation (docs/design.md,
    "Browser flags"); a visible browser keeps them, a person needs them."""
    headless = list(build_options(BrowserSpec(user_data_dir=str(tmp_path / "p"), window_size=(1400, 1000)),
                                  None).arguments)
    assert "--start-fullscreen" in headless and "--screen-info={1400x1000}" in headless
    assert "--window-size=1400,1000" in headless
    for browser in ("edge", "chromium"):
        visible = list(build_options(BrowserSpec(browser=browser, headless=False), None).arguments)
        assert "--start-fullscreen" not in visible and not any(a.startswith("--screen-info") for a in visible)


# -- real starts ------------------------------------------------------------------------------------
PDF_BYTES = b"%PDF-1.4\n% pobatch factory test\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"


def test_real_start_loads_a_local_page_and_saves_an_inline_pdf_in_download_dir(
    browser_available: None, tmp_path: Path, scratch: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(
        "<!DOCTYPE html><html><head><title>pobatch factory test</title></head>"
        '<body><h1 id="hello">Hello from 127.0.0.1</h1><a id="doc" href="doc.pdf">doc</a></body></html>',
        encoding="utf-8")
    (site / "doc.pdf").write_bytes(PDF_BYTES)  # served as application/pdf, no Content-Disposition
    profile, downloads = tmp_path / "profile", tmp_path / "downloads"
    downloads.mkdir()
    spec = BrowserSpec(user_data_dir=str(profile), local_only=True, download_dir=str(downloads),
                       page_load_timeout=60)
    driver = None
    with local_site(site) as base:
        try:
            driver = start_browser(spec, temp_dir=str(scratch))
            driver.get(base + "/index.html")
            assert driver.title == "pobatch factory test"
            assert driver.execute_script("return document.getElementById('hello').innerText") == "Hello from 127.0.0.1"
            # headless full screen: no toolbar drawn, and the page has the whole window as its viewport
            assert driver.execute_script("return [innerWidth, innerHeight, matchMedia('(display-mode: fullscreen)')"
                                         ".matches]") == [*spec.window_size, True]
            driver.execute_script("document.getElementById('doc').click();")
            target = downloads / "doc.pdf"

            def landed() -> bool:
                names = [p.name for p in downloads.iterdir()]
                return target.is_file() and not any(n.endswith(".crdownload") or n.startswith(".org.chromium")
                                                    for n in names)

            wait_for(landed, 60, "doc.pdf in the download folder")
            assert target.read_bytes() == PDF_BYTES
            assert len(driver.window_handles) == 1  # saved, not opened in a viewer tab
            if hasattr(os, "getsid"):
                # A console Ctrl+C goes to the terminal's process group: the driver and browser are outside it.
                assert os.getsid(driver.service.process.pid) != os.getsid(0)
        finally:
            quit_browser(driver)
            kill_browser_tree(profile)
    wait_for(lambda: not our_drivers(), 15, "chromedriver to exit")


def test_every_session_kind_implements_the_browser_session_contract(tmp_path: Path) -> None:
    spec = BrowserSpec(user_data_dir=str(tmp_path / "p"), download_dir=str(tmp_path / "dl"))
    shared = SharedBrowser(spec, tmp_path / "spool")
    sessions = [LocalBrowserSession(spec), RemoteBrowserSession(spec, GridSpec("http://127.0.0.1:1")),
                WindowSession(shared, "w1", tmp_path / "windows", page_timeout=5)]
    contract = {name for name in vars(BrowserSession) if not name.startswith("_")}
    assert contract == {"driver", "started", "download_dir", "start", "is_alive", "restart", "abort", "close"}
    for session in sessions:
        assert contract <= set(dir(type(session))), type(session).__name__
        assert not session.started
    assert [s.download_dir for s in sessions] == [tmp_path / "dl", None, tmp_path / "windows" / "incoming-w1-1"]


def test_reading_the_driver_never_starts_a_browser_start_does_once(browser_available: None, tmp_path: Path) -> None:
    session = LocalBrowserSession(BrowserSpec(user_data_dir=str(tmp_path / "p"), local_only=True))
    try:
        with pytest.raises(SessionNotStarted, match="call start"):
            session.driver
        assert not session.started and not our_drivers(), "reading driver started a browser"
        session.start()
        first = session.driver
        session.start()  # started already: returns at once, same browser
        assert session.driver is first and session.starts == 1 and session.is_alive()
        session.restart()
        with pytest.raises(SessionNotStarted):
            session.driver
        session.start()
        assert session.driver is not first and session.starts == 2
    finally:
        session.close()
    wait_for(lambda: not our_drivers(), 15, "chromedriver to exit")
    with LocalBrowserSession(BrowserSpec(user_data_dir=str(tmp_path / "p"), local_only=True)) as entered:
        assert entered.started and entered.is_alive()  # entering the block starts the browser
    assert not entered.started


def test_start_failure_is_fatal_and_lists_the_driver_routes_tried(browser_available: None, tmp_path: Path,
                                                                  scratch: Path) -> None:
    spec = BrowserSpec(binary="/bin/false", user_data_dir=str(tmp_path / "profile"), local_only=True)
    try:
        with pytest.raises(FatalError) as info:
            start_browser(spec, temp_dir=str(scratch))
    finally:
        kill_browser_tree(tmp_path / "profile")
    msg = str(info.value)
    assert info.value.reason == "BROWSER_START_FAILED"
    assert "/bin/false" in msg
    assert "Driver routes tried:" in msg
    routes = msg.split("Driver routes tried:", 1)[1]
    assert "explicit path: no --driver given" in routes
    assert "PATH: " in routes and "chromedriver" in routes
    # Nothing holds the profile, so the hint points at the browser, not at "close your other window".
    assert "open in another browser window" not in msg
    assert "--browser-binary" in msg
    wait_for(lambda: not our_drivers(), 15, "chromedriver to exit after the failed start")

    with pytest.raises(FatalError, match=r"Driver routes tried: explicit --driver: .*chromedriver"):
        start_browser(BrowserSpec(binary="/bin/false", driver=CHROMEDRIVER, local_only=True), temp_dir=str(scratch))
    wait_for(lambda: not our_drivers(), 15, "chromedriver to exit after the failed start")


def test_start_on_a_profile_in_use_says_so(browser_available: None, tmp_path: Path, scratch: Path) -> None:
    profile = tmp_path / "profile"
    spec = BrowserSpec(user_data_dir=str(profile), local_only=True)
    first = None
    try:
        first = start_browser(spec, temp_dir=str(scratch))
        with pytest.raises(FatalError) as info:
            start_browser(spec, temp_dir=str(scratch))
        assert "open in another browser window" in str(info.value)
        assert str(profile) in str(info.value)
        assert len(first.window_handles) == 1  # the first browser is untouched
    finally:
        quit_browser(first)
        kill_browser_tree(profile)
    wait_for(lambda: not our_drivers(), 15, "chromedriver to exit")


def test_the_driver_starts_outside_the_consoles_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows: CREATE_NEW_PROCESS_GROUP (no CTRL_C_EVENT reaches it); elsewhere: a session of its own."""
    monkeypatch.setattr(sys, "platform", "win32")
    assert _away_from_the_console() == {"creation_flags": 0x200}
    monkeypatch.setattr(sys, "platform", "linux")
    assert _away_from_the_console() == {"start_new_session": True}
