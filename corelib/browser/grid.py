"""Selenium Grid client helpers: how many slots are free, and remote sessions that fail in known ways.

A Grid session differs from a local browser in three ways that matter to the engine:
- the browser and its files live on another machine: downloads come back through the Grid's managed
  downloads (`options.enable_downloads = True`, Grid started with `--enable-managed-downloads true`);
- the link to it is HTTP through the Grid: a lost node or a hung router shows up as a transport error
  or a client timeout, which must be a transient error (retry on a new session), not a crash;
- nothing local identifies its processes, so "kill it" means deleting the session on the Grid.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from pobatch.corelib.browser.factory import BrowserSpec, build_options
from pobatch.corelib.errors import FatalError, TransientError

log = logging.getLogger(__name__)

# What the client asks for, per browser: the Grid matches it against its nodes' stereotypes.
GRID_BROWSER_NAMES = {"chromium": "chrome", "chrome": "chrome", "edge": "MicrosoftEdge"}


@dataclass(frozen=True)
class GridSpec:
    """Where the Grid is and how long its answers may take; picklable for worker processes."""

    url: str
    queue_wait: float = 120.0  # longest a new-session request may wait in the Grid's queue
    margin: float = 30.0  # network and Grid overhead on top of the slowest legitimate command

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise FatalError(f"--grid: '{self.url}' is not a Grid address; expected e.g. http://gridhost:4444",
                             reason="BAD_CONFIG")
        object.__setattr__(self, "url", self.url.rstrip("/"))

    def client_timeout(self, page_load_timeout: float) -> int:
        """The HTTP timeout for every command: above the page-load timeout plus the queue wait, so a
        slow page or a full queue is never mistaken for a lost node, and a lost node is noticed."""
        return int(math.ceil(page_load_timeout + self.queue_wait + self.margin))


@dataclass(frozen=True)
class SlotCount:
    free: int  # usable slots (our browser, managed downloads, node up) with no session
    total: int  # usable slots
    without_downloads: int = 0  # slots for our browser on nodes without managed downloads


class GridUnreachable(TransientError):
    def __init__(self, message: str) -> None:
        super().__init__(message, reason="GRID_UNREACHABLE")


# -- /status ---------------------------------------------------------------------------------------
def grid_status(url: str, timeout: float = 10.0) -> dict[str, Any]:
    """The Grid's /status document (`value` part); raises GridUnreachable when it does not answer."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=timeout) as resp:
            data = json.loads(resp.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise GridUnreachable(f"the Selenium Grid at {url} does not answer on /status: {exc}") from exc
    value = data.get("value") if isinstance(data, dict) else None
    if not isinstance(value, dict):
        raise GridUnreachable(f"{url}/status did not answer like a Selenium Grid: {str(data)[:200]}")
    return value


def count_slots(status: dict[str, Any], browser_name: str) -> SlotCount:
    """Slots whose stereotype offers `browser_name` (e.g. "chrome") with managed downloads, on nodes
    that are UP. A slot without managed downloads cannot serve us: the Grid would leave our request
    in its queue until the request timeout rather than refuse it, so those are counted apart."""
    free = total = without = 0
    for node in status.get("nodes") or []:
        if str(node.get("availability", "UP")).upper() != "UP":
            continue
        for slot in node.get("slots") or []:
            stereo = slot.get("stereotype") or {}
            if str(stereo.get("browserName", "")).lower() != browser_name.lower():
                continue
            if stereo.get("se:downloadsEnabled") is not True:
                without += 1
                continue
            total += 1
            if not slot.get("session"):
                free += 1
    return SlotCount(free, total, without)


def free_slots(url: str, browser: str) -> SlotCount:
    return count_slots(grid_status(url), GRID_BROWSER_NAMES[browser])


def check_grid(url: str, browser: str) -> SlotCount:
    """Fail early and clearly: the Grid answers, is ready, and has nodes for our browser."""
    try:
        status = grid_status(url)
    except GridUnreachable as exc:
        raise FatalError(f"{exc}. Start the Grid first, or check the --grid address.", reason="GRID_UNREACHABLE")
    slots = count_slots(status, GRID_BROWSER_NAMES[browser])
    if slots.total == 0 and slots.without_downloads:
        raise FatalError(
            f"the Selenium Grid at {url} offers {GRID_BROWSER_NAMES[browser]} only without managed downloads, "
            "so the files could not come back; start its nodes with --enable-managed-downloads true",
            reason="GRID_NO_DOWNLOADS")
    if slots.total == 0:
        raise FatalError(
            f"the Selenium Grid at {url} has no node that offers {GRID_BROWSER_NAMES[browser]} "
            f"({status.get('message', 'no message')}); start a node with that browser, or pick --browser",
            reason="GRID_NO_NODE")
    return slots


def wait_until_ready(url: str, timeout: float, poll: float = 0.2) -> dict[str, Any]:
    """Poll /status until the Grid says ready; for starting a Grid in scripts and tests."""
    deadline = time.monotonic() + timeout
    last: Exception | str = "no answer yet"
    while time.monotonic() < deadline:
        try:
            status = grid_status(url, timeout=min(5.0, timeout))
            if status.get("ready"):
                return status
            last = status.get("message", "not ready")
        except GridUnreachable as exc:
            last = exc
        time.sleep(poll)
    raise GridUnreachable(f"the Selenium Grid at {url} was not ready within {timeout:.0f}s: {last}")


# -- remote sessions -------------------------------------------------------------------------------
def remote_options(spec: BrowserSpec):
    """The local options minus what only makes sense on this PC (profile, download folder, binary).

    The node's stereotype names its own browser binary; the Grid sets the download folder itself
    when managed downloads are on, and the files come back through it.
    """
    local_only_fields = {"user_data_dir": None, "download_dir": None, "profile_directory": None, "binary": None}
    opts = build_options(dataclasses.replace(spec, **local_only_fields), binary=None)
    opts.enable_downloads = True
    return opts


def _grid_driver_class():
    """webdriver.Remote whose transport failures are transient errors instead of urllib3 exceptions.

    A node that died, a Grid that restarted, or a command that ran past the client timeout surface as
    urllib3 errors, which the engine's classification would otherwise call fatal (unknown)."""
    import urllib3
    from selenium import webdriver

    class GridDriver(webdriver.Remote):
        grid_url = ""

        def execute(self, driver_command, params=None):  # type: ignore[override]
            try:
                return super().execute(driver_command, params)
            except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
                raise GridUnreachable(
                    f"lost the Grid session ({driver_command}): {type(exc).__name__}: {str(exc)[:200]}") from exc

    return GridDriver


def start_remote_browser(grid: GridSpec, spec: BrowserSpec):
    """One remote session with managed downloads; a failure says whether retrying can help."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.remote.client_config import ClientConfig

    opts = remote_options(spec)
    config = ClientConfig(remote_server_addr=grid.url, keep_alive=True,
                          timeout=grid.client_timeout(spec.page_load_timeout))
    t0 = time.monotonic()
    try:
        driver = _grid_driver_class()(command_executor=grid.url, options=opts, client_config=config)
    except WebDriverException as exc:
        msg = (exc.msg or str(exc)).strip()
        first = msg.splitlines()[0] if msg else type(exc).__name__
        if "Unable to find provider" in msg or "No nodes support" in msg:
            raise FatalError(f"the Selenium Grid at {grid.url} has no node for this browser request: {first}",
                             reason="GRID_NO_NODE") from exc
        # A full queue, a node that failed to start its browser: another try may well work.
        raise TransientError(f"the Selenium Grid at {grid.url} could not start a session: {first}",
                             reason="GRID_SESSION_FAILED") from exc
    driver.grid_url = grid.url
    if "se:downloadsEnabled" not in (driver.capabilities or {}):
        quit_remote(driver)
        raise FatalError(
            f"the Selenium Grid at {grid.url} does not offer managed downloads; start it with "
            "--enable-managed-downloads true", reason="GRID_NO_DOWNLOADS")
    driver.set_page_load_timeout(spec.page_load_timeout)
    log.debug("remote session %s on %s in %.2fs", driver.session_id, grid.url, time.monotonic() - t0)
    return driver


def quit_remote(driver) -> None:
    """Quit, tolerating a session the Grid already dropped."""
    try:
        driver.quit()
    except Exception as exc:
        log.debug("remote quit failed: %s", exc)


def close_browser_via_cdp(cdp_url: str, timeout: float = 10.0) -> bool:
    """Close a remote Chromium/Edge from any thread: DevTools `Browser.close` through the Grid's CDP
    relay (the session's `se:cdp` capability). ChromeDriver runs one command per session at a time,
    so a DELETE waits behind a blocked page load; DevTools does not, and the closed browser makes the
    blocked command return at once. True when the browser acknowledged."""
    try:
        import websocket  # websocket-client, a dependency of selenium
    except ImportError:  # pragma: no cover
        return False
    try:
        ws = websocket.create_connection(cdp_url, timeout=timeout)
        try:
            ws.send(json.dumps({"id": 1, "method": "Browser.close"}))
            return '"id":1' in ws.recv().replace(" ", "")
        finally:
            ws.close()
    except Exception as exc:  # the browser may already be gone: that is the goal anyway
        log.debug("Browser.close via %s: %s", cdp_url, exc)
        return False


def delete_session(grid_url: str, session_id: str, timeout: float = 15.0) -> bool:
    """DELETE the session straight on the Grid, outside the driver object, so any thread may call it;
    it frees the Grid's slot. It waits behind a command still running in that session (see
    close_browser_via_cdp). True when the Grid confirmed."""
    req = urllib.request.Request(f"{grid_url.rstrip('/')}/session/{session_id}", method="DELETE")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError) as exc:
        log.debug("DELETE session %s on %s: %s", session_id, grid_url, exc)
        return False
