"""A page loading in a background tab while WebDriver keeps working in the current one.

Why DevTools: ChromeDriver runs one command at a time, and a WebDriver navigation holds every command
(every window) until the page has answered. A tab made with DevTools' `Target.createTarget` loads on
its own: commands in the current tab go on meanwhile (measured: 7-50 ms each while the other tab
waited 2 s for its server). When the caller wants that page, the tab is *adopted*: WebDriver switches
to it and the old tab is closed, so the caller is again in a browser with one tab, on a page that has
loaded (or is finishing loading) while it did something else.

The tab is hidden from the driver's `window_handles` until adopted (`TabHidingDriver`), so code that
treats a new window as a popup, or closes every window but its own, never sees it.

Nothing here judges the page: whether a loaded-ahead page can be used is the caller's decision, and
a page it does not trust is simply loaded again in the adopted tab.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from pobatch.corelib.devtools import DevToolsError, DevToolsLink

log = logging.getLogger(__name__)


class TabHidingDriver:
    """Mixed into the local WebDriver classes (corelib/browser.py): `window_handles` leaves out the
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
    """At most one page loading ahead per browser: start(), then take() and adopt() it, or discard()."""

    def __init__(self) -> None:
        self._tab: LoadingTab | None = None
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
        self.discard(driver, link)
        # A blank tab first, then the page: a tab made with the URL itself has no document until the
        # portal answers, so nothing could show it (a failure screenshot of it would wait forever).
        # ChromeDriver connects to a new tab at its next window list and, if the tab is navigating by
        # then, waits for the page (measured: the whole 20 s of a stalled one): so it is made to
        # connect while the tab is blank. Page.navigate is what the address bar does (SameSite=Strict
        # cookies go along); its answer comes once the portal has answered, so nobody waits for it.
        handle = ""
        try:
            handle = str(link.call("Target.createTarget", {"url": "about:blank", "background": True},
                                   timeout=10)["targetId"])
            _hide(driver, handle)
            driver.window_handles  # noqa: B018 - ChromeDriver connects to the blank tab now
            session = str(link.call("Target.attachToTarget", {"targetId": handle, "flatten": True},
                                    timeout=10)["sessionId"])
            link.send("Page.navigate", {"url": url}, session_id=session)
        except Exception as exc:  # DevTools or WebDriver said no: the page loads the ordinary way
            log.debug("no background tab for %s: %s", url, exc)
            if handle:
                self._close(driver, link, LoadingTab(handle, "", url, key, driver, time.monotonic(), generation))
            return None
        tab = LoadingTab(handle, session, url, key, driver, time.monotonic(), generation)
        with self._lock:
            self._tab = tab
        return tab

    def take(self, driver: Any, link: DevToolsLink | None, key: str) -> LoadingTab | None:
        """The tab loading for `key` in this browser, now the caller's to adopt; any other is closed."""
        with self._lock:
            tab, self._tab = self._tab, None
        if tab is None:
            return None
        if tab.key == key and tab.driver is driver:
            return tab
        self._close(driver, link, tab)
        return None

    def adopt(self, driver: Any, link: DevToolsLink | None, tab: LoadingTab) -> None:
        """Make the tab the driver's one window: close the one the driver was in, switch to it, and
        bring it to the front; our DevTools session on it is no longer needed."""
        _unhide(driver, tab.handle)
        driver.close()
        driver.switch_to.window(tab.handle)
        if link is not None and not link.closed:
            try:
                link.call("Target.activateTarget", {"targetId": tab.handle}, timeout=5)
                link.send("Target.detachFromTarget", {"sessionId": tab.session})
            except DevToolsError as exc:
                log.debug("could not bring tab %s to the front: %s", tab.handle[:8], exc)

    def discard(self, driver: Any, link: DevToolsLink | None) -> None:
        """Close the tab loading ahead, if any (the page is not wanted, or the run ends)."""
        with self._lock:
            tab, self._tab = self._tab, None
        if tab is not None:
            self._close(driver, link, tab)

    @staticmethod
    def _close(driver: Any, link: DevToolsLink | None, tab: LoadingTab) -> None:
        _unhide(driver, tab.handle)
        if link is None or link.closed or tab.driver is not driver:
            return  # its browser is gone, and the tab with it
        try:
            link.call("Target.closeTarget", {"targetId": tab.handle}, timeout=5)
        except DevToolsError as exc:
            log.debug("background tab %s already gone: %s", tab.handle[:8], exc)


def _hide(driver: Any, handle: str) -> None:
    if isinstance(driver, TabHidingDriver):
        driver.hidden_tabs = driver.hidden_tabs | {handle}


def _unhide(driver: Any, handle: str) -> None:
    if isinstance(driver, TabHidingDriver):
        driver.hidden_tabs = driver.hidden_tabs - {handle}
