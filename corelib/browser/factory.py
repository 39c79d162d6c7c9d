"""Browser factory: one place that knows how to start Edge, Chrome or Chromium reliably.

Driver resolution is explicit and explained, step by step, because office PCs differ: an explicit
path, a driver on PATH or next to the browser, webdriver-manager, then Selenium Manager. The last two
need the internet; the first two must always work offline.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pobatch.corelib.browser.background_tab import TabHidingDriver
from pobatch.corelib.errors import FatalError
from pobatch.corelib.browser.profile_lock import live_browsers_on

log = logging.getLogger(__name__)

BROWSERS = ("edge", "chrome", "chromium")

# Flags from the traps in docs/design.md ("Browser flags and the first-load stall"): quiet,
# headless-safe, and no background fetches that stall first loads.
BASE_ARGS = (
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # BackForwardCache: a page left behind keeps its requests open in the cache; a pixel or long-poll
    # that never ends then holds one of the six connections per host, and after six such pages every
    # load stalls (docs/design.md, "Pages judged by their content").
    "--disable-features=Translate,MediaRouter,OptimizationHints,BackForwardCache",
    "--password-store=basic",
)
HEADLESS_ARGS = ("--headless=new", "--disable-gpu")
# A headless browser is the whole browser, its own toolbar, tab strip and location bar included, laid
# out, painted and composited at every navigation, download and title change though nobody sees them
# (docs/design.md, "Browser flags and the first-load stall"). Started full screen (as F11 would), it
# paints none of that: 11 to 15 % less CPU per PO (BENCHMARKS.md, "CPU per PO"). The headless screen is
# sized to BrowserSpec.window_size, so the page gets the whole window as its viewport. Not for a visible
# browser: a person needs the toolbar.
HEADLESS_FULL_SCREEN_ARGS = ("--start-fullscreen",)
# The new-tab page looks up this host and ChromeDriver waits for the DNS failure (about 5 s).
PORTAL_RESOLVER_RULES = "MAP start.duckduckgo.com ~NOTFOUND"
# Local-only runs (tests, demo): nothing but loopback resolves.
# Chromium applies these rules to IP literals too: every loopback address a local portal (and the demo
# portal's stand-in identity provider on 127.0.0.2) listens on must be excluded by name.
LOOPBACK_RESOLVER_RULES = "MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE 127.0.0.2"

DOWNLOAD_PREFS = {
    "download.prompt_for_download": False,
    "download.directory_upgrade": True,
    "plugins.always_open_pdf_externally": True,
    "safebrowsing.enabled": False,
    "profile.default_content_setting_values.automatic_downloads": 1,
    "profile.default_content_settings.popups": 0,
}


PAGE_LOAD_STRATEGIES = ("normal", "eager", "none")


@dataclass
class BrowserSpec:
    """Everything needed to start one browser; picklable so workers can receive it."""

    browser: str = "chromium"  # edge | chrome | chromium
    headless: bool = True
    binary: str | None = None  # --browser-binary
    driver: str | None = None  # --driver
    user_data_dir: str | None = None
    profile_directory: str | None = None  # e.g. "Default", "Profile 1"
    download_dir: str | None = None
    page_load_timeout: float = 60.0
    local_only: bool = False  # resolve only loopback: tests and the demo
    no_sandbox: bool = False  # needed when running as root (CI containers)
    extra_args: tuple[str, ...] = ()
    window_size: tuple[int, int] = (1366, 900)
    bidi: bool = False  # WebDriver BiDi (preload scripts reach popups too: the session recorder needs it)
    # "eager": get() returns once the document is parsed, not at the load event, which a tracking
    # pixel or a widget may hold for ever; the readiness probe then judges the page by its content
    # (docs/design.md, "Pages judged by their content"). "none" suits a client that drives several
    # windows and must not block on one window's navigation.
    page_load_strategy: str = "eager"

    def __post_init__(self) -> None:
        if self.browser not in BROWSERS:
            raise FatalError(
                f"--browser: '{self.browser}' is not supported; expected one of {', '.join(BROWSERS)}",
                reason="BAD_CONFIG",
            )
        if self.page_load_strategy not in PAGE_LOAD_STRATEGIES:
            raise ValueError(f"page_load_strategy {self.page_load_strategy!r}: expected one of {PAGE_LOAD_STRATEGIES}")


@dataclass
class DriverResolution:
    """Which driver executable will be used and why; `attempts` explains the steps that failed."""

    path: str | None
    how: str
    attempts: list[str] = field(default_factory=list)


def default_browser() -> str:
    """Edge on Windows (it is what office PCs have and where SSO lives), Chromium elsewhere."""
    return "edge" if sys.platform == "win32" else "chromium"


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _driver_name(browser: str) -> str:
    base = "msedgedriver" if browser == "edge" else "chromedriver"
    return base + (".exe" if sys.platform == "win32" else "")


def browser_binary_candidates(browser: str) -> list[Path]:
    """Where each browser is usually installed, most likely first."""
    env = os.environ
    out: list[Path] = []
    if sys.platform == "win32":
        roots = [env.get("PROGRAMFILES(X86)"), env.get("PROGRAMFILES"), env.get("LOCALAPPDATA")]
        rel = {
            "edge": r"Microsoft\Edge\Application\msedge.exe",
            "chrome": r"Google\Chrome\Application\chrome.exe",
            "chromium": r"Chromium\Application\chrome.exe",
        }[browser]
        out += [Path(r) / rel for r in roots if r]
    elif sys.platform == "darwin":
        app = {
            "edge": "Microsoft Edge.app/Contents/MacOS/Microsoft Edge",
            "chrome": "Google Chrome.app/Contents/MacOS/Google Chrome",
            "chromium": "Chromium.app/Contents/MacOS/Chromium",
        }[browser]
        out.append(Path("/Applications") / app)
    else:
        names = {
            "edge": ["microsoft-edge", "microsoft-edge-stable"],
            "chrome": ["google-chrome", "google-chrome-stable"],
            "chromium": ["chromium", "chromium-browser"],
        }[browser]
        if browser == "chromium":
            # Debian's /usr/bin/chromium is a shell wrapper; the real binary starts faster.
            out.append(Path("/usr/lib/chromium/chromium"))
        for name in names:
            found = shutil.which(name)
            if found:
                out.append(Path(found))
    return out


def resolve_browser_binary(spec: BrowserSpec) -> str | None:
    """The browser executable, or None to let the driver find it itself."""
    if spec.binary:
        if not Path(spec.binary).is_file():
            raise FatalError(
                f"--browser-binary: '{spec.binary}' does not exist; expected the path of the "
                f"{spec.browser} executable",
                reason="BAD_CONFIG",
            )
        return spec.binary
    for cand in browser_binary_candidates(spec.browser):
        if cand.is_file():
            return str(cand)
    return None


def resolve_driver(spec: BrowserSpec, binary: str | None = None) -> DriverResolution:
    """Find a driver executable, trying each route in order and recording why a route failed."""
    attempts: list[str] = []
    name = _driver_name(spec.browser)
    if spec.driver:
        if Path(spec.driver).is_file():
            return DriverResolution(spec.driver, "explicit --driver")
        raise FatalError(
            f"--driver: '{spec.driver}' does not exist; expected the path of {name}",
            reason="BAD_CONFIG",
        )
    attempts.append("explicit path: no --driver given")

    on_path = shutil.which(name)
    if on_path:
        return DriverResolution(on_path, "PATH", attempts)
    beside = Path(binary).parent / name if binary else None
    if beside and beside.is_file():
        return DriverResolution(str(beside), "next to the browser", attempts)
    attempts.append(f"PATH / next to the browser: no {name} found")

    if os.environ.get("POBATCH_OFFLINE") != "1":
        try:
            path = _webdriver_manager_install(spec.browser)
            return DriverResolution(path, "webdriver-manager", attempts)
        except Exception as exc:  # network, proxy, unknown version: explain and move on
            attempts.append(f"webdriver-manager: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}")
    else:
        attempts.append("webdriver-manager: skipped (POBATCH_OFFLINE=1)")
    # Selenium Manager runs inside the Service when no path is given.
    attempts.append("Selenium Manager: will be tried by Selenium itself")
    return DriverResolution(None, "Selenium Manager", attempts)


def _webdriver_manager_install(browser: str) -> str:
    if browser == "edge":
        from webdriver_manager.microsoft import EdgeChromiumDriverManager

        return EdgeChromiumDriverManager().install()
    from webdriver_manager.chrome import ChromeDriverManager
    from webdriver_manager.core.os_manager import ChromeType

    kind = ChromeType.CHROMIUM if browser == "chromium" else ChromeType.GOOGLE
    return ChromeDriverManager(chrome_type=kind).install()


# Switches whose value is a comma-separated list. Chromium keeps only the last occurrence of a switch,
# so a second --disable-features (from extra_args) would silently drop BASE_ARGS' list: they are merged.
LIST_SWITCHES = ("--disable-features", "--enable-features", "--blink-settings")


def merge_list_switches(args: list[str]) -> list[str]:
    """`args` with every LIST_SWITCHES switch given once, at its first place, holding the values of all
    its occurrences in order (each value once)."""
    values: dict[str, list[str]] = {}
    out: list[str] = []
    for a in args:
        name, eq, value = a.partition("=")
        if eq and name in LIST_SWITCHES:
            if name not in values:
                values[name] = []
                out.append(name)
            values[name] += [v for v in value.split(",") if v and v not in values[name]]
        else:
            out.append(a)
    return [f"{a}={','.join(values[a])}" if a in values else a for a in out]


def build_options(spec: BrowserSpec, binary: str | None):
    """Chromium-family options with the flags and download preferences from docs/design.md."""
    from selenium import webdriver

    opts = webdriver.EdgeOptions() if spec.browser == "edge" else webdriver.ChromeOptions()
    if binary:
        opts.binary_location = binary
    args = list(BASE_ARGS)
    w, h = spec.window_size
    if spec.headless:
        args += HEADLESS_ARGS
        args += HEADLESS_FULL_SCREEN_ARGS
        args.append(f"--screen-info={{{w}x{h}}}")  # the headless screen (else 800x600) the full screen fills
    if spec.no_sandbox or running_as_root():
        args.append("--no-sandbox")
    args.append(
        "--host-resolver-rules="
        + (LOOPBACK_RESOLVER_RULES if spec.local_only else PORTAL_RESOLVER_RULES)
    )
    if spec.user_data_dir:
        args.append(f"--user-data-dir={os.path.abspath(spec.user_data_dir)}")
    if spec.profile_directory:
        args.append(f"--profile-directory={spec.profile_directory}")
    args.append(f"--window-size={w},{h}")
    args += list(spec.extra_args)
    for a in merge_list_switches(args):
        opts.add_argument(a)
    prefs = dict(DOWNLOAD_PREFS)
    if spec.download_dir:
        prefs["download.default_directory"] = os.path.abspath(spec.download_dir)
    opts.add_experimental_option("prefs", prefs)
    opts.add_experimental_option("excludeSwitches", ["enable-automation", "enable-logging"])
    # Page loads are awaited by our own explicit readiness checks, with their own timeout.
    opts.page_load_strategy = spec.page_load_strategy
    # The console log, for the artifacts of a failed attempt (driver.get_log("browser")).
    opts.set_capability("ms:loggingPrefs" if spec.browser == "edge" else "goog:loggingPrefs", {"browser": "ALL"})
    if spec.bidi:
        opts.enable_bidi = True
    return opts


def start_browser(spec: BrowserSpec, temp_dir: str | None = None):
    """Start one WebDriver session; a failure becomes one FatalError naming every route tried."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException

    binary = resolve_browser_binary(spec)
    resolution = resolve_driver(spec, binary)
    opts = build_options(spec, binary)
    service_cls = webdriver.EdgeService if spec.browser == "edge" else webdriver.ChromeService
    # The driver and browser put scratch folders (scoped_dir*, the singleton socket) in TMPDIR and
    # leave them behind even after a clean quit: give them a folder we own and remove.
    env = dict(os.environ)
    if temp_dir:
        env.update(TMPDIR=temp_dir, TMP=temp_dir, TEMP=temp_dir)
    service = service_cls(executable_path=resolution.path, env=env, popen_kw=_away_from_the_console())
    driver_cls = _local_driver_class(spec.browser)
    t0 = time.monotonic()
    try:
        driver = driver_cls(options=opts, service=service)
    except WebDriverException as exc:
        msg = (exc.msg or str(exc)).strip().splitlines()[0] if (exc.msg or str(exc)) else type(exc).__name__
        hint = ""
        if "exited" in msg or "user data directory is already in use" in msg:
            if "already in use" in msg or _profile_in_use(spec.user_data_dir):
                hint = (
                    f" The profile {spec.user_data_dir} may be open in another browser window: close it, "
                    "or let pobatch work on a copy."
                )
            else:  # nothing holds the profile: the browser itself would not run
                hint = (
                    f" The browser exited as it started: check that {binary or spec.browser} runs on its own "
                    "(or point --browser-binary at a working one)."
                )
        tried = "; ".join(resolution.attempts + [f"{resolution.how}: {resolution.path or 'auto'}"])
        raise FatalError(
            f"Could not start {spec.browser} ({binary or 'default install'}): {msg}.{hint} "
            f"Driver routes tried: {tried}",
            reason="BROWSER_START_FAILED",
        ) from exc
    log.debug(
        "started %s via %s (%s) in %.2fs", spec.browser, resolution.how, resolution.path, time.monotonic() - t0
    )
    driver.set_page_load_timeout(spec.page_load_timeout)
    return driver


def _local_driver_class(browser: str) -> type:
    """Edge's or Chrome's WebDriver class, able to keep a tab loading ahead out of `window_handles`
    (corelib/browser/background_tab.py)."""
    from selenium import webdriver

    base = webdriver.Edge if browser == "edge" else webdriver.Chrome
    return type(f"TabHiding{base.__name__}", (TabHidingDriver, base), {})


def _away_from_the_console() -> dict:
    """The driver (and the browser it starts) in a process group of its own: a Ctrl+C in the console
    then reaches pobatch alone, which stops the run and quits the browser cleanly, instead of also
    killing the browser in the middle of a download (Windows: a new process group gets no CTRL_C_EVENT)."""
    if sys.platform == "win32":
        return {"creation_flags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200)}
    return {"start_new_session": True}


def _profile_in_use(user_data_dir: str | None) -> bool:
    """Whether another browser holds this profile: only then is "close your other window" the right advice."""
    if not user_data_dir:
        return False
    try:
        return bool(live_browsers_on(user_data_dir))
    except Exception:  # a diagnosis must never hide the start failure itself
        return False


def quit_browser(driver, on_error: Callable[[BaseException], None] | None = None) -> None:
    """Quit, tolerating a browser that is already gone."""
    if driver is None:
        return
    try:
        driver.quit()
    except Exception as exc:  # a crashed browser cannot say goodbye; cleanup by profile dir follows
        if on_error:
            on_error(exc)
        log.debug("quit failed: %s", exc)
