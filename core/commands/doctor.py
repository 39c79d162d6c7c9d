"""`pobatch doctor`: can a run start on this PC? One line per check, each with a verdict and, when it
fails, what to do.

pobatch runs on office PCs its developers never see. When a run does not start, the person who helps
needs the facts in one screen: the Python, the browser and its driver (and whether their versions
match), the profile (there, and not held by a running browser), the output folder (writable, room),
the portal (answers), the sign-in (one headless page on a clone of the profile), a Grid (answers, a
free slot with managed downloads) and the proxy variables in effect. Every check reuses what a run
itself does (core/preparation/preflight.py, core/preparation/profiles.py, core/commands/sign_in.py, corelib/browser/grid.py, corelib/browser/factory.py),
so the doctor and the run cannot disagree. A check never raises: its failure is its line.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

from pobatch.core.preparation.preflight import check_reachable
from pobatch.core.preparation.profiles import profile_location, seed_profile
from pobatch.core.monitoring.redaction import redact
from pobatch.corelib.errors import FatalError

log = logging.getLogger(__name__)

OK, WARN, FAIL, SKIP, INFO = "ok", "warn", "FAIL", "skip", "info"
MIN_PYTHON = (3, 10)
LOW_SPACE = 5 * 1024 ** 3  # a big batch of scans fills less than this; under it, say so
SIGN_IN_WAIT = 30.0
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)\.(\d+)")


@dataclass
class Check:
    name: str
    verdict: str
    detail: str
    todo: str = ""  # what to do, for a failed or warned line

    def lines(self) -> list[str]:
        out = [f"{self.verdict:<5} {self.name:<17} {self.detail}"]
        if self.todo and self.verdict in (FAIL, WARN):
            out.append(f"{'':<5} {'':<17} -> {self.todo}")
        return out


@dataclass
class DoctorOptions:
    base_url: str | None = None
    site: str = "coupa"
    site_file: str | None = None
    browser: str = "chromium"
    profile: str | None = None
    driver: str | None = None
    browser_binary: str | None = None
    out: Path = field(default_factory=Path.cwd)
    grid: str | None = None
    sign_in: bool = True  # open one headless page on a clone of the profile (the slowest check)


@dataclass
class _Facts:
    """What later checks need from earlier ones."""

    binary: str | None = None
    browser_major: int | None = None
    driver_ok: bool = True
    profile: Path | None = None
    profile_usable: bool = False
    portal_ok: bool = False


def run_doctor(opts: DoctorOptions, echo: Callable[[str], None] | None = None) -> list[Check]:
    """Every check in order; `echo` is told each line as soon as its check is done."""
    facts = _Facts()
    steps: list[Callable[[DoctorOptions, _Facts], Check]] = [
        check_python, check_browser, check_driver, check_profile, check_output, check_portal, check_signed_in,
        check_grid_slots, check_proxy]
    checks = []
    for step in steps:
        try:
            check = step(opts, facts)
        except Exception as exc:  # a check that broke is a finding too, never a traceback
            log.debug("doctor check %s", step.__name__, exc_info=True)
            check = Check(step.__name__.replace("check_", "").replace("_", " "), FAIL,
                          f"the check itself failed: {type(exc).__name__}: {exc}",
                          "send this output (pobatch support) to whoever maintains pobatch")
        checks.append(check)
        if echo:
            for line in check.lines():
                echo(line)
    return checks


def can_start(checks: list[Check]) -> bool:
    return not any(c.verdict == FAIL for c in checks)


def verdict_line(checks: list[Check]) -> str:
    failed = [c.name for c in checks if c.verdict == FAIL]
    if not failed:
        warned = [c.name for c in checks if c.verdict == WARN]
        return "A run can start on this PC." + (f" Worth a look: {', '.join(warned)}." if warned else "")
    return f"A run cannot start on this PC yet: fix {', '.join(failed)} (see '->' above), then run pobatch doctor again."


def report_text(checks: list[Check]) -> str:
    return "\n".join([line for c in checks for line in c.lines()] + [verdict_line(checks)]) + "\n"


# -- the checks ---------------------------------------------------------------------------------------
def check_python(opts: DoctorOptions, facts: _Facts) -> Check:
    version = ".".join(str(p) for p in sys.version_info[:3])
    if sys.version_info[:2] < MIN_PYTHON:
        return Check("python", FAIL, f"Python {version} at {sys.executable}",
                     f"install Python {'.'.join(map(str, MIN_PYTHON))} or newer, then run run.bat again")
    return Check("python", OK, f"Python {version} at {sys.executable}")


def version_of(executable: str, timeout: float = 20.0) -> str | None:
    """The 4-part version an executable says it is (`--version`), or that its install folder names
    (Edge and Chrome on Windows print nothing: their version is a folder next to the executable)."""
    try:
        done = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        m = _VERSION.search((done.stdout or "") + (done.stderr or ""))
        if m:
            return m.group(0)
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("%s --version: %s", executable, exc)
    try:
        folders = [p.name for p in Path(executable).parent.iterdir() if p.is_dir() and _VERSION.fullmatch(p.name)]
    except OSError:
        folders = []
    return max(folders, key=lambda v: tuple(int(x) for x in v.split(".")), default=None)


def _major(version: str | None) -> int | None:
    return int(version.split(".")[0]) if version else None


def check_browser(opts: DoctorOptions, facts: _Facts) -> Check:
    from pobatch.corelib.browser.factory import BrowserSpec, resolve_browser_binary

    try:
        binary = resolve_browser_binary(BrowserSpec(browser=opts.browser, binary=opts.browser_binary))
    except FatalError as exc:
        return Check("browser", FAIL, str(exc), "pass the browser's real path with --browser-binary, or leave it out")
    if binary is None:
        todo = ("install Microsoft Edge (it comes with Windows; ask IT if it was removed)" if opts.browser == "edge"
                else f"install {opts.browser} (./run.sh --yes installs Chromium), or pass --browser-binary")
        return Check("browser", FAIL, f"no {opts.browser} found on this PC", todo)
    facts.binary = binary
    version = version_of(binary)
    facts.browser_major = _major(version)
    return Check("browser", OK if version else WARN, f"{opts.browser} {version or '(version unknown)'} at {binary}",
                 "" if version else "pobatch could not read the browser's version; the driver check below "
                 "cannot compare versions")


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Driver resolution without downloading one: the doctor says what is on this PC, it installs nothing."""
    old = os.environ.get("POBATCH_OFFLINE")
    os.environ["POBATCH_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("POBATCH_OFFLINE", None)
        else:
            os.environ["POBATCH_OFFLINE"] = old


def check_driver(opts: DoctorOptions, facts: _Facts) -> Check:
    from pobatch.corelib.browser.factory import BrowserSpec, resolve_driver

    name = "msedgedriver" if opts.browser == "edge" else "chromedriver"
    try:
        with _offline():
            found = resolve_driver(BrowserSpec(browser=opts.browser, driver=opts.driver), facts.binary)
    except FatalError as exc:
        facts.driver_ok = False
        return Check("driver", FAIL, str(exc), f"pass the path of {name} with --driver, or leave it out")
    if found.path is None:
        return Check("driver", WARN, f"no {name} on this PC (not on PATH, not next to the browser)",
                     f"the first run fetches a matching {name} (needs the internet); on a PC without it, put "
                     f"{name} {facts.browser_major or ''} on PATH or pass --driver".replace("  ", " "))
    version = version_of(found.path)
    major = _major(version)
    where = f"{name} {version or '(version unknown)'} at {found.path} ({found.how})"
    if major is not None and facts.browser_major is not None and major != facts.browser_major:
        facts.driver_ok = False
        return Check("driver", FAIL, f"{where} does not match the browser (version {facts.browser_major})",
                     f"get {name} {facts.browser_major} (the browser's version) and pass it with --driver, or "
                     f"remove the old {name} from {'PATH' if found.how == 'PATH' else Path(found.path).parent}")
    if major is None:
        return Check("driver", WARN, where, f"pobatch could not read the driver's version; run {found.path} "
                     "--version to see what it is")
    return Check("driver", OK, where + " matches the browser")


def check_profile(opts: DoctorOptions, facts: _Facts) -> Check:
    from pobatch.corelib.browser.profile_manager import profile_in_use_error

    path = profile_location(opts.profile, opts.browser)
    facts.profile = path
    own = opts.profile in (None, "")
    if not path.exists():
        if own:
            return Check("profile", WARN, f"pobatch's own profile {path} does not exist yet",
                         f"it is created at the first run; sign in once with pobatch login --base-url "
                         f"{opts.base_url or 'URL'}")
        if str(opts.profile).lower() == "browser":
            return Check("profile", FAIL, f"--profile browser: no {opts.browser} profile at {path}",
                         f"open {opts.browser} once on this PC, or use pobatch's own profile (leave --profile out)")
        return Check("profile", WARN, f"{path} does not exist yet", "it is created at the first run; sign in there "
                     "once with pobatch login --profile ...")
    if not path.is_dir():
        return Check("profile", FAIL, f"{path} is a file", "--profile must name a folder")
    message = profile_in_use_error(path)
    if message:
        return Check("profile", FAIL, message, "close every window of that browser (check the taskbar), then run "
                     "pobatch doctor again")
    facts.profile_usable = True
    return Check("profile", OK, f"{path} exists and no running browser holds it")


def _existing_parent(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def check_output(opts: DoctorOptions, facts: _Facts) -> Check:
    out = Path(opts.out).resolve()
    where = _existing_parent(out)
    if not where.is_dir():
        return Check("output folder", FAIL, f"{where} is a file, not a folder", "pass a folder with --out")
    probe = where / f".pobatch-doctor-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        probe.write_bytes(b"pobatch")
        probe.unlink()
    except OSError as exc:
        return Check("output folder", FAIL, f"cannot write in {where} ({exc.strerror or type(exc).__name__})",
                     "choose a folder you can write to with --out (e.g. in Documents), or ask IT for write access")
    free = shutil.disk_usage(where).free
    text = f"{out} is writable" + ("" if where == out else f" (created at the first run, in {where})") + \
        f", {free / 1024 ** 3:.1f} GB free"
    if free < LOW_SPACE:
        return Check("output folder", WARN, text, "less than 5 GB free: free some space, or choose a folder on "
                     "another drive with --out; a full disk stops the run")
    return Check("output folder", OK, text)


def check_portal(opts: DoctorOptions, facts: _Facts) -> Check:
    if not opts.base_url:
        return Check("portal", SKIP, "no portal address (pass --base-url, or run pobatch start once)")
    try:
        t = time.monotonic()
        check_reachable(opts.base_url)
    except FatalError as exc:
        text = str(exc).replace("--base-url: ", "", 1)
        if opts.grid:  # the Grid's nodes reach the portal, maybe not this PC
            return Check("portal", WARN, text, "this PC cannot reach it; the Grid's nodes may")
        return Check("portal", FAIL, text, "open the address in your browser; if it opens there, the network needs "
                     "a proxy (see 'proxy' below) or a VPN; else check the address")
    facts.portal_ok = True
    return Check("portal", OK, f"{opts.base_url} answers ({time.monotonic() - t:.1f}s)")


def check_signed_in(opts: DoctorOptions, facts: _Facts) -> Check:
    if not opts.sign_in:
        return Check("signed in", SKIP, "not checked (it opens a browser; pobatch doctor does it)")
    missing = [why for ok, why in ((opts.base_url, "no portal address"), (facts.portal_ok, "the portal did not answer"),
                                   (facts.binary, "no browser"), (facts.driver_ok, "the driver does not fit"),
                                   (facts.profile_usable, "the profile is missing or in use")) if not ok]
    if missing:
        return Check("signed in", SKIP, f"not checked: {missing[0]}")
    assert opts.base_url and facts.profile is not None
    signed_in, detail = probe_sign_in(opts, facts.profile)
    if signed_in:
        return Check("signed in", OK, detail)
    return Check("signed in", FAIL, detail, f"sign in once: pobatch login --base-url {opts.base_url}"
                 + (f" --profile {opts.profile}" if opts.profile else "") + " (or run.bat, which offers it)")


def probe_sign_in(opts: DoctorOptions, profile: Path) -> tuple[bool, str]:
    """One headless page on a clone of the profile (never the profile itself): is it signed in?"""
    from pobatch.core.commands.sign_in import home_url, page_looks_signed_in, portal_lets_in
    from pobatch.core.portal_address import is_local_address
    from pobatch.core.sites import resolve_site
    from pobatch.core.workflow.page_probes import PAGE_STATE_JS, PageProbe, PageState
    from pobatch.corelib.browser.factory import BrowserSpec
    from pobatch.corelib.browser.local_session import LocalBrowserSession
    from pobatch.corelib.browser.profile_manager import ProfileManager

    site = resolve_site(opts.site, Path(opts.site_file) if opts.site_file else None)
    base_url = opts.base_url or ""
    with ProfileManager(seed_profile(profile) if opts.profile in (None, "") else profile,
                        f"doctor-{uuid.uuid4().hex[:8]}") as profiles:
        clone = profiles.clone("doctor")
        spec = BrowserSpec(browser=opts.browser, headless=True, binary=opts.browser_binary, driver=opts.driver,
                           user_data_dir=str(clone), local_only=is_local_address(base_url),
                           page_load_timeout=SIGN_IN_WAIT)
        with LocalBrowserSession(spec) as session:
            session.start()
            driver = session.driver
            try:
                driver.get(home_url(base_url))
            except Exception as exc:  # a slow page still tells below
                log.debug("doctor: first page: %s", exc)
            deadline = time.monotonic() + SIGN_IN_WAIT
            state = ""
            while time.monotonic() < deadline:
                state = PageProbe.of(driver.execute_script(PAGE_STATE_JS, site.page_probe_config(base_url), None)).state
                url = driver.current_url
                if state == PageState.LOGIN or site.is_login_url(base_url, url):
                    return False, f"not signed in: {redact(base_url)} shows its sign-in page"
                if urlsplit(url).netloc.lower() != site.host_of(base_url):
                    return False, f"not signed in: the portal sent the browser to {urlsplit(url).netloc} (single sign-on)"
                if page_looks_signed_in(driver, site, base_url):
                    if portal_lets_in(driver, site, base_url):
                        return True, f"the profile is signed in to {base_url}"
                    return False, "not signed in: the portal's home page sends this profile to its sign-in page"
                time.sleep(0.3)
            return False, f"no answer within {SIGN_IN_WAIT:.0f}s (the page stayed {state or 'loading'})"


def check_grid_slots(opts: DoctorOptions, facts: _Facts) -> Check:
    if not opts.grid:
        return Check("grid", SKIP, "no --grid given (runs use browsers on this PC)")
    from pobatch.corelib.browser.grid import GRID_BROWSER_NAMES, check_grid

    try:
        slots = check_grid(opts.grid, opts.browser)
    except FatalError as exc:
        todo = {"GRID_NO_DOWNLOADS": "start the Grid's nodes with --enable-managed-downloads true",
                "GRID_NO_NODE": f"start a node with {GRID_BROWSER_NAMES[opts.browser]}, or pick --browser"
                }.get(getattr(exc, "reason", ""), "start the Grid, or check the --grid address")
        return Check("grid", FAIL, str(exc), todo)
    if slots.free == 0:
        return Check("grid", WARN, f"{opts.grid}: all {slots.total} slot(s) with managed downloads are busy",
                     "a run waits for a free slot; try again later or add nodes")
    return Check("grid", OK, f"{opts.grid}: {slots.free} of {slots.total} slot(s) free, managed downloads on")


def check_proxy(opts: DoctorOptions, facts: _Facts) -> Check:
    """What Python's requests (the pre-flight, the Grid, driver downloads) go through. The browser may
    use another route (a PAC script, the Windows sign-in): that is why it is information, not a verdict."""
    names = {k.upper() for k in os.environ if k.upper() in PROXY_VARIABLES}
    proxies = urllib.request.getproxies()
    shown = []
    for scheme, url in sorted(proxies.items()):
        shown.append(f"{scheme}={redact(str(url))}")
    if not shown:
        return Check("proxy", INFO, "no proxy variables set: Python connects directly (the browser may still use "
                     "a system proxy or PAC script)")
    source = "environment " + ", ".join(sorted(names)) if names else "system settings"
    return Check("proxy", INFO, f"from {source}: {'; '.join(shown)}")
