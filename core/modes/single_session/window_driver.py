"""A WebDriver that is one window of a shared browser: the per-PO workflow cannot tell the difference.

It shares the real driver's WebDriver session and overrides the one funnel every command goes
through (`execute`, elements included: an element's commands go through the driver that found it):
- every command holds the browser's command lock and first switches ChromeDriver to this window
  (or to the popup this window switched to), so N threads can drive N windows;
- `window_handles` lists only this window and the popups it opened (opener chain, from DevTools),
  so the workflow's popup handling and "leave one window" reset never touch another window;
- `get` returns as soon as the new document has replaced the old one (the browser runs with
  page_load_strategy "none", and the wait for the portal's answer happens on this window's own
  DevTools session, not in ChromeDriver): the workflow's own readiness probe waits for the page,
  sleeping between polls without the lock, which is where the windows overlap;
- `current_url` comes from DevTools too: ChromeDriver would hold every window up while a click in
  this one is still turning into a download.
"""
from __future__ import annotations

import inspect
import logging
import secrets
import time
from typing import Any

from selenium.common.exceptions import (
    InvalidSessionIdException,
    NoSuchWindowException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.remote.command import Command
from selenium.webdriver.remote.fedcm import FedCM
from selenium.webdriver.remote.mobile import Mobile
from selenium.webdriver.remote.switch_to import SwitchTo
from selenium.webdriver.remote.webdriver import WebDriver as RemoteWebDriver

from pobatch.corelib.browser.devtools import DevToolsError
from pobatch.core.modes.single_session.shared_browser import BrowserGone, SharedBrowser

log = logging.getLogger(__name__)

_MARK_JS = "document.__pobatchDocument = arguments[0];"
_SAME_DOCUMENT_JS = "return document.__pobatchDocument === arguments[0];"
_NEW_DOCUMENT_POLL = 0.02
SLOW_COMMAND = 0.5  # seconds: a command that holds every window up this long is logged (debug)
_BLOCKED = {Command.QUIT, Command.NEW_WINDOW, Command.NEW_SESSION, Command.DELETE_SESSION}
# Per-driver helpers that keep a reference to the driver they were made for.
_BOUND_HELPERS = ("_websocket_connection", "_script", "_network", "_browser", "_bidi_session",
                  "_browsing_context", "_storage", "_webextension", "_permissions", "_emulation", "_input",
                  "_request", "_devtools")


class WindowDriver(RemoteWebDriver):
    def __init__(self, browser: SharedBrowser, main: str, page_timeout: float) -> None:  # noqa: D107
        real = browser.driver
        if real is None:
            raise NoSuchWindowException("the shared browser is not running")
        # Share the session: no new one is started (RemoteWebDriver.__init__ would start one).
        self.__dict__.update({k: v for k, v in real.__dict__.items() if k != "service"})
        for name in _BOUND_HELPERS:
            if name in self.__dict__:
                setattr(self, name, None)
        self._switch_to = SwitchTo(self)
        self._mobile = Mobile(self)
        self._fedcm = FedCM(self)
        self._shared = browser
        self.main = main
        self._current: str | None = main
        self.page_timeout = page_timeout
        self.commands = 0
        self._cdp_session: str | None = None
        self._cdp_failed = False

    def __repr__(self) -> str:
        return f"<WindowDriver window={self.main[:8]} session={self.session_id}>"

    # -- the funnel -------------------------------------------------------------------------------
    def execute(self, driver_command: Any, params: dict[str, Any] | None = None) -> Any:
        if inspect.isgenerator(driver_command):
            raise WebDriverException("WebDriver BiDi is not available per window in the single-session strategy")
        if driver_command in _BLOCKED:
            raise WebDriverException(f"{driver_command}: a window cannot do this to the shared browser")
        if driver_command == Command.SWITCH_TO_WINDOW:
            return self._switch((params or {}).get("handle", ""))
        if driver_command == Command.W3C_GET_CURRENT_WINDOW_HANDLE:
            if self._current is None:
                raise NoSuchWindowException("the current window of this slot was closed")
            return {"value": self._current}
        if driver_command == Command.W3C_GET_WINDOW_HANDLES:
            return {"value": self._own_handles()}
        router = self._shared.router
        if router is not None and router.crashed(self._current or self.main):
            raise WebDriverException(f"tab crashed (window {self.main[:8]}, reported by DevTools)")
        if driver_command == Command.GET_CURRENT_URL and self._current == self.main:
            url = self._current_url()
            if url is not None:
                return {"value": url}
        response = self._locked(driver_command, params)
        if driver_command == Command.CLOSE:
            self._current = None
            response = {"value": self._own_handles()}
        return response

    def _locked(self, driver_command: str, params: dict[str, Any] | None) -> Any:
        target = self._current or self.main
        t0 = time.monotonic()
        with self._shared.command_lock:
            t1 = time.monotonic()
            if self._shared.focused != target:
                self._raw(Command.SWITCH_TO_WINDOW, {"handle": target})
                self._shared.focused = target
            self.commands += 1
            try:
                return self._raw(driver_command, params)
            finally:
                if driver_command == Command.CLOSE:
                    self._shared.focused = None
                held = time.monotonic() - t1
                if held > SLOW_COMMAND or t1 - t0 > SLOW_COMMAND:
                    log.debug("window %s: %s waited %.2fs for the lock and held it %.2fs", self.main[:8],
                              driver_command, t1 - t0, held)

    def _raw(self, driver_command: str, params: dict[str, Any] | None = None) -> Any:
        """One command to ChromeDriver; a driver that no longer answers is a dead browser (transient)."""
        try:
            return RemoteWebDriver.execute(self, driver_command, params)
        except WebDriverException:
            raise
        except Exception as exc:  # urllib3 / socket errors: the browser and its driver are gone
            raise BrowserGone(f"the shared browser's driver does not answer ({type(exc).__name__})") from exc

    def _switch(self, handle: str) -> dict[str, Any]:
        if handle != self.main and self._owner(handle) != self.main:
            raise NoSuchWindowException(f"window {handle} does not belong to this slot")
        with self._shared.command_lock:
            self._raw(Command.SWITCH_TO_WINDOW, {"handle": handle})
            self._shared.focused = handle
        self._current = handle
        return {"value": None}

    def _owner(self, handle: str) -> str | None:
        router = self._shared.router
        return router.owner_of(handle) if router else None

    def _own_handles(self) -> list[str]:
        """This window first, then the popups it opened, in the browser's order."""
        with self._shared.command_lock:
            handles = self._raw(Command.W3C_GET_WINDOW_HANDLES)["value"]
        if self.main not in handles:
            raise NoSuchWindowException(f"window {self.main} was closed or crashed")
        own = [h for h in handles if h != self.main and h != self._shared.anchor and self._owner(h) == self.main]
        return [self.main, *own]

    # -- navigation -------------------------------------------------------------------------------
    def get(self, url: str) -> None:
        """Load url and return once the new document has replaced the old one.

        ChromeDriver runs one command at a time, and a command for a window whose navigation is
        pending waits until that navigation commits: polling it would hold every window up for the
        portal's whole response time. So the navigation goes through this window's own DevTools
        session, which waits in this thread only; ChromeDriver is asked only once the page has
        committed. The old document is marked first: the mark's absence proves that the next probe
        looks at the new page (or the browser's error page), never at the previous PO's."""
        token = secrets.token_hex(8)
        self.execute(Command.W3C_EXECUTE_SCRIPT, {"script": _MARK_JS, "args": [token]})
        self._navigate(url)
        deadline = time.monotonic() + self.page_timeout
        while True:
            try:
                same = self.execute(Command.W3C_EXECUTE_SCRIPT, {"script": _SAME_DOCUMENT_JS, "args": [token]})["value"]
            except (NoSuchWindowException, InvalidSessionIdException):
                raise
            except WebDriverException as exc:
                if "crash" in str(exc).lower():  # the page's renderer is gone: no new document will come
                    raise
                # the old document is going away under the script
                log.debug("while waiting for %s: %s", url, str(exc).splitlines()[0] if str(exc) else exc)
                same = True
            if same is not True:
                return
            if time.monotonic() > deadline:
                raise TimeoutException(f"no new document for {url} within {self.page_timeout:.0f}s")
            time.sleep(_NEW_DOCUMENT_POLL)

    def _navigate(self, url: str) -> None:
        session = self._devtools_session()
        link = self._shared.link
        if session is None or link is None:
            self.execute(Command.GET, {"url": url})  # returns at once (page_load_strategy "none")
            return
        try:
            link.call("Page.navigate", {"url": url}, session_id=session, timeout=self.page_timeout)
        except DevToolsError as exc:
            if "no answer within" in str(exc):
                try:
                    link.call("Page.stopLoading", session_id=session, timeout=5)
                except DevToolsError:
                    pass
                raise TimeoutException(f"{url} did not answer within {self.page_timeout:.0f}s") from exc
            if link.closed:
                raise BrowserGone(f"the shared browser is gone ({exc})") from exc
            raise NoSuchWindowException(f"window {self.main} went away while loading {url}: {exc}") from exc

    def _current_url(self) -> str | None:
        """This window's address from DevTools: asking ChromeDriver would wait out a pending
        navigation (a click that is becoming a download) and hold every window up meanwhile."""
        session = self._devtools_session()
        link = self._shared.link
        if session is None or link is None:
            return None
        try:
            result = link.call("Runtime.evaluate", {"expression": "location.href", "returnByValue": True},
                               session_id=session, timeout=2)
        except DevToolsError:
            return None
        value = (result.get("result") or {}).get("value")
        return value if isinstance(value, str) and not result.get("exceptionDetails") else None

    def _devtools_session(self) -> str | None:
        """This window's own DevTools session (attached once), or None when DevTools cannot have it."""
        if self._cdp_session is None and not self._cdp_failed:
            link = self._shared.link
            if link is None:
                return None
            try:
                self._cdp_session = link.call("Target.attachToTarget", {"targetId": self.main, "flatten": True},
                                          timeout=10)["sessionId"]
            except (DevToolsError, KeyError) as exc:
                log.debug("window %s: no DevTools session (%s)", self.main[:8], exc)
                self._cdp_failed = True
        return self._cdp_session

    def get_log(self, log_type: str) -> Any:
        """The browser's log of that type (ChromeDriver keeps one console log for all windows)."""
        return self.execute(Command.GET_LOG, {"type": log_type})["value"]

    def quit(self) -> None:
        raise WebDriverException("a window cannot quit the shared browser; close its slot instead")
