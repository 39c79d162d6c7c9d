"""A page loading in a background tab while WebDriver keeps working in the current one.

Why DevTools: ChromeDriver runs one command at a time, and a WebDriver navigation holds every command
(every window) until the page has answered. A tab made with DevTools' `Target.createTarget` loads on
its own: commands in the current tab go on meanwhile (measured: 7-50 ms each while the other tab
waited 2 s for its server). When the caller wants that page, the tab is *adopted*: WebDriver switches
to it, and the caller is on a page that has loaded (or is finishing loading) while it did something
else. The tab it left stays, hidden, and loads the page after.

Our tabs are hidden from the driver's `window_handles` while they are not the window
(`TabHidingDriver`), so code that treats a new window as a popup, or closes every window but its own,
never sees them, and the caller's browser looks like one window.

Nothing here judges the page: whether a loaded-ahead page can be used is the caller's decision, and
a page it does not trust is simply loaded again in the adopted tab.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from pobatch.corelib.browser.devtools import DevToolsError, DevToolsLink

log = logging.getLogger(__name__)


LEFT_BEHIND = "__pobatchLeftBehind"
# True while a tab still shows the page it showed before it was asked for its page ahead.
STILL_THE_PAGE_BEFORE_JS = f"return window.{LEFT_BEHIND} === true;"


class TabHidingDriver:
    """Mixed into the local WebDriver classes (corelib/browser/factory.py): `window_handles` leaves out the
    tabs in `hidden_tabs`. A mixin on `execute`, the one funnel every command goes through."""

    hidden_tabs: frozenset[str] = frozenset()

    def execute(self, driver_command: str, params: dict[str, Any] | None = None) -> Any:
        from selenium.webdriver.remote.command import Command

        response = super().execute(driver_command, params)  # type: ignore[misc]
        if driver_command == Command.W3C_GET_WINDOW_HANDLES and self.hidden_tabs and isinstance(response, dict):
            response["value"] = [h for h in response.get("value") or [] if h not in self.hidden_tabs]
        return response


@dataclass(frozen=True, eq=False)
class LoadingTab:
    """A tab loading `url` for `key` in the browser of `driver` (a restarted browser has none of it)."""

    handle: str  # the DevTools target id, which is also its WebDriver window handle
    session: str  # our DevTools session on it, which asked for the page
    url: str
    key: str
    driver: Any  # held, not its id(): a new driver could reuse a dead one's id
    started: float  # time.monotonic() when it was asked for
    generation: int  # the caller's count of session changes when it was asked for


class BackgroundTab:
    """At most one page loading ahead per browser: start(), then take() and adopt() it, or discard().

    Two tabs take turns: the window a page was adopted from stays, hidden, and loads the next page. A
    tab made afresh for every PO would cost a renderer process start each time; the same site in the
    same tab keeps its renderer (measured in BENCHMARKS.md, issue 23)."""

    def __init__(self) -> None:
        self._tab: LoadingTab | None = None
        self._spare: LoadingTab | None = None  # a hidden tab of ours, not loading anything wanted
        self._sessions: dict[str, str] = {}  # tab -> our DevTools session on it
        self._lock = threading.Lock()

    @property
    def pending(self) -> LoadingTab | None:
        return self._tab

    def start(self, driver: Any, link: DevToolsLink, url: str, key: str, generation: int = 0) -> LoadingTab | None:
        """Begin loading url in a hidden background tab; a tab already loading for `key` in this
        browser is kept. None when the browser would not make one, or the driver cannot hide it (the
        caller then loads as usual)."""
        if not isinstance(driver, TabHidingDriver):
            return None
        with self._lock:
            tab = self._tab
            if tab is not None and tab.key == key and tab.driver is driver:
                return tab
            # A page no longer wanted is replaced in its own tab; else the spare tab loads it.
            reuse = next((t for t in (self._tab, self._spare) if t is not None and t.driver is driver), None)
            if reuse is self._tab:
                self._tab = None
            else:
                self._spare = None
        try:
            handle, session = (reuse.handle, reuse.session) if reuse else self._new_tab(driver, link)
            self._sessions[handle] = session
            # The page the tab showed is marked before the new one is asked for: until the new one has
            # replaced it, a look at the tab must not take the old page (another PO's) for the new.
            link.call("Runtime.evaluate", {"expression": f"window.{LEFT_BEHIND} = true"}, session_id=session,
                      timeout=5)
            link.send("Page.navigate", {"url": url}, session_id=session)
        except Exception as exc:  # DevTools or WebDriver said no: the page loads the ordinary way
            log.debug("no background tab for %s: %s", url, exc)
            return None
        tab = LoadingTab(handle, session, url, key, driver, time.monotonic(), generation)
        with self._lock:
            self._tab = tab
        return tab

    @staticmethod
    def _new_tab(driver: Any, link: DevToolsLink) -> tuple[str, str]:
        """A hidden blank tab and our DevTools session on it.

        Blank first, then the page: a tab made with the URL itself has no document until the portal
        answers, so nothing could show it (a failure screenshot of it would wait forever). ChromeDriver
        connects to a new tab at its next window list and, if the tab is navigating by then, waits for
        the page (measured: the whole 20 s of a stalled one): so it is made to connect while the tab is
        blank. The page is then asked for with Page.navigate, as the address bar does (SameSite=Strict
        cookies go along); its answer comes once the portal has answered, so nobody waits for it."""
        handle = str(link.call("Target.createTarget", {"url": "about:blank", "background": True},
                               timeout=10)["targetId"])
        _hide(driver, handle)
        try:
            driver.window_handles  # noqa: B018 - ChromeDriver connects to the blank tab now
            return handle, _attach(link, handle)
        except Exception:
            _close_target(driver, link, handle)
            raise

    def take(self, driver: Any, key: str) -> LoadingTab | None:
        """The tab loading for `key` in this browser, now the caller's to adopt. A tab loading for
        another PO stays (a retry of this PO still has the next one's page coming); one of a browser
        that is gone is forgotten."""
        with self._lock:
            if self._spare is not None and self._spare.driver is not driver:
                self._spare = None
            tab = self._tab
            if tab is not None and tab.driver is not driver:
                self._tab = tab = None
            if tab is None or tab.key != key:
                return None
            self._tab = None
            return tab

    def adopt(self, driver: Any, link: DevToolsLink | None, tab: LoadingTab) -> None:
        """Make the tab the driver's window and bring it to the front; the window it replaces stays,
        hidden, for the next page. Raises (and changes nothing) when the tab is gone."""
        old = driver.current_window_handle
        driver.switch_to.window(tab.handle)
        _unhide(driver, tab.handle)
        _hide(driver, old)
        if link is None or link.closed:
            return
        try:
            link.call("Target.activateTarget", {"targetId": tab.handle}, timeout=5)
            spare = LoadingTab(old, self._session_of(link, old), "", "", driver, time.monotonic(), 0)
        except DevToolsError as exc:
            log.debug("tab %s: no spare for the next page (%s)", old[:8], exc)
            _close_target(driver, link, old)
            return
        with self._lock:
            self._spare = spare

    def _session_of(self, link: DevToolsLink, handle: str) -> str:
        session = self._sessions.get(handle)
        if session is None:
            session = self._sessions[handle] = _attach(link, handle)
        return session

    def discard(self, driver: Any, link: DevToolsLink | None) -> None:
        """Close the tabs of ours that are hidden (the page ahead is not wanted, or pages ahead stop)."""
        with self._lock:
            tabs = [t for t in (self._tab, self._spare) if t is not None]
            self._tab = self._spare = None
        for tab in tabs:
            self._sessions.pop(tab.handle, None)
            if tab.driver is driver:
                _close_target(driver, link, tab.handle)


def _attach(link: DevToolsLink, handle: str) -> str:
    return str(link.call("Target.attachToTarget", {"targetId": handle, "flatten": True}, timeout=10)["sessionId"])


def _close_target(driver: Any, link: DevToolsLink | None, handle: str) -> None:
    _unhide(driver, handle)
    if link is None or link.closed:
        return  # its browser is gone, and the tab with it
    try:
        link.call("Target.closeTarget", {"targetId": handle}, timeout=5)
    except DevToolsError as exc:
        log.debug("background tab %s already gone: %s", handle[:8], exc)


def _hide(driver: Any, handle: str) -> None:
    if isinstance(driver, TabHidingDriver):
        driver.hidden_tabs = driver.hidden_tabs | {handle}


def _unhide(driver: Any, handle: str) -> None:
    if isinstance(driver, TabHidingDriver):
        driver.hidden_tabs = driver.hidden_tabs - {handle}
