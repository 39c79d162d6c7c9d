"""The one browser every window lives in: one WebDriver session, one login, one download router.

Started like any pobatch browser (pobatch.corelib.browser.factory's flags, binary and driver resolution), with two
differences that make overlap possible:
- page_load_strategy "none": `get` and a click that navigates return at once instead of holding
  ChromeDriver (which runs one command at a time per session) until the page has loaded; the
  window driver waits for the new document itself, and the workflow's probes wait for readiness;
- no throttling of windows in the background: every window is working, none is "hidden".

An anchor window (the first one) is never used or closed: closing a worker's last window would
otherwise end the WebDriver session for all of them.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from pobatch.corelib.browser.factory import BrowserSpec, quit_browser, start_browser
from pobatch.corelib.browser.session import TEMP_PREFIX
from pobatch.corelib.browser.devtools import DevToolsError, DevToolsLink
from pobatch.corelib.browser.download_events import DownloadTracker
from pobatch.corelib.errors import FatalError, TransientError
from pobatch.corelib.browser.process_reaper import kill_browser_tree
from pobatch.core.modes.single_session.download_router import DownloadRouter

log = logging.getLogger(__name__)

RESTART_TRIES = 3
NO_BACKGROUND_THROTTLING = (
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
)


class BrowserGone(TransientError):
    """The shared browser died (crash, kill): every window is gone with it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="BROWSER_CRASHED")


class SharedBrowser:
    """Owns the browser process, the command lock and the download router; windows borrow from it."""

    def __init__(self, spec: BrowserSpec, spool: Path) -> None:
        if not spec.user_data_dir:
            raise ValueError("SharedBrowser needs spec.user_data_dir (to find its processes after a crash)")
        # Page load strategy "none": a window's navigation must not hold the one command lock.
        self.spec = dataclasses.replace(spec, download_dir=str(spool), page_load_strategy="none",
                                        extra_args=tuple(spec.extra_args) + NO_BACKGROUND_THROTTLING)
        self.spool = Path(spool)
        self.command_lock = threading.Lock()  # one WebDriver command at a time, after its window switch
        self.focused: str | None = None  # ChromeDriver's current window, as far as we switched it
        self._life = threading.Lock()
        self.generation = 0
        self.driver = None
        self.link: DevToolsLink | None = None
        self.tracker: DownloadTracker | None = None
        self.router: DownloadRouter | None = None
        self.anchor = ""
        self._temp: str | None = None
        self.starts = 0

    # -- life -------------------------------------------------------------------------------------
    def start(self) -> int:
        """Start the browser if it is not running; returns its generation."""
        with self._life:
            if self.driver is None:
                self._start_locked()
            return self.generation

    def restart(self, seen_generation: int) -> int:
        """Replace a dead browser once, however many windows noticed it (they pass what they saw)."""
        with self._life:
            if self.generation == seen_generation:
                log.warning("the shared browser is gone: starting a new one (all windows are reopened)")
                self._stop_locked()
                self._start_locked()
            return self.generation

    def _start_locked(self) -> None:
        """The first start fails at once (a configuration problem shows before any PO); a restart of a
        browser that ran before is tried three times (its old processes may still be going away)."""
        tries = 1 if self.generation == 0 else RESTART_TRIES
        for attempt in range(1, tries + 1):
            try:
                self._start_once()
                return
            except Exception as exc:
                self._stop_locked()
                if attempt == tries:
                    if isinstance(exc, FatalError):
                        raise
                    raise FatalError(f"the shared browser could not be started again: {type(exc).__name__}: "
                                     f"{str(exc).splitlines()[0] if str(exc) else ''}",
                                     reason="BROWSER_START_FAILED") from exc
                log.warning("starting the shared browser again failed (%s): trying once more", exc)
                time.sleep(attempt)

    def _start_once(self) -> None:
        if self._temp is None:
            self._temp = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-")
        t0 = time.monotonic()
        self.driver = start_browser(self.spec, self._temp)
        self.anchor = self.driver.current_window_handle
        self.focused = self.anchor
        self.link = DevToolsLink.to_driver_browser(self.driver)
        self.tracker = DownloadTracker(self.link, self.spool)
        self.router = DownloadRouter(self.link, self.tracker)
        self.generation += 1
        self.starts += 1
        log.info("shared browser started in %.2fs (generation %d)", time.monotonic() - t0, self.generation)

    def _stop_locked(self) -> None:
        link, self.link, self.router, self.tracker = self.link, None, None, None
        driver, self.driver = self.driver, None
        if link is not None:
            link.close()
        if driver is not None:
            quit_browser(driver)
        kill_browser_tree(self.spec.user_data_dir)
        self.focused = None

    def kill(self) -> None:
        """From any thread: every blocked WebDriver call fails soon; the next restart() starts afresh."""
        n = kill_browser_tree(self.spec.user_data_dir)
        log.warning("killed the shared browser on %s (%d processes)", self.spec.user_data_dir, n)

    def close(self) -> None:
        with self._life:
            self._stop_locked()
            temp, self._temp = self._temp, None
        if temp:
            shutil.rmtree(temp, ignore_errors=True)

    # -- windows ----------------------------------------------------------------------------------
    def open_window(self) -> tuple[str, int]:
        """A new top-level window (not a tab: nothing in it counts as in the background)."""
        from selenium.webdriver.remote.command import Command

        generation = self.start()
        driver = self.driver
        if driver is None:
            raise BrowserGone("the shared browser is not running")
        from selenium.common.exceptions import WebDriverException

        with self.command_lock:
            try:
                # From the anchor: ChromeDriver cannot open a window while its current one is closed.
                driver.execute(Command.SWITCH_TO_WINDOW, {"handle": self.anchor})
                self.focused = self.anchor
                before = set(driver.execute(Command.W3C_GET_WINDOW_HANDLES)["value"])
                value = driver.execute(Command.NEW_WINDOW, {"type": "window"})["value"]
                handle = value.get("handle") if isinstance(value, dict) else None
                if not handle:
                    fresh = set(driver.execute(Command.W3C_GET_WINDOW_HANDLES)["value"]) - before
                    if len(fresh) != 1:
                        raise BrowserGone(f"the browser did not open a window (answer {value!r})")
                    handle = fresh.pop()
            except (BrowserGone, WebDriverException):
                raise
            except Exception as exc:  # urllib3 / socket errors: the browser and its driver are gone
                raise BrowserGone(f"the shared browser's driver does not answer ({type(exc).__name__})") from exc
        return handle, generation

    def close_targets(self, handles: list[str]) -> None:
        """Close windows through DevTools: works while ChromeDriver is stuck in a command for them."""
        link = self.link
        for handle in handles:
            if not handle or handle == self.anchor or link is None:
                continue
            if self.focused == handle:
                self.focused = None  # ChromeDriver's current window is going: switch before the next command
            try:
                link.call("Target.closeTarget", {"targetId": handle}, timeout=5)
            except DevToolsError as exc:
                log.debug("close %s: %s", handle, exc)

    def page_targets(self) -> dict[str, dict]:
        """Every page target the browser has now (id -> targetInfo), from DevTools, not ChromeDriver."""
        link = self.link
        if link is None:
            raise BrowserGone("the shared browser is not running")
        try:
            infos = link.call("Target.getTargets", timeout=10).get("targetInfos", [])
        except DevToolsError as exc:
            raise BrowserGone(f"the shared browser does not answer: {exc}") from exc
        return {i["targetId"]: i for i in infos if i.get("type") == "page"}

    def responsive(self, handle: str, timeout: float = 3.0) -> bool:
        """The window's page still runs script (a crashed or closed tab does not); asked via DevTools
        so a hung page never blocks ChromeDriver for the other windows."""
        link, router = self.link, self.router
        if link is None or link.closed or router is None or router.crashed(handle):
            return False
        session = None
        try:
            session = link.call("Target.attachToTarget", {"targetId": handle, "flatten": True},
                                timeout=timeout)["sessionId"]
            result = link.call("Runtime.evaluate", {"expression": "1", "returnByValue": True},
                               session_id=session, timeout=timeout)
            return result.get("result", {}).get("value") == 1
        except (DevToolsError, KeyError):
            return False
        finally:
            if session:
                try:
                    link.call("Target.detachFromTarget", {"sessionId": session}, timeout=timeout)
                except DevToolsError:
                    pass
