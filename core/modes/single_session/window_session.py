"""One window of the shared browser, a pobatch.corelib.browser.session.BrowserSession for PoJob.

Here a "browser" is a window instance: start() opens one, restart retires it (its popups and its
in-flight downloads with it) and the next start() opens a fresh one with a fresh folder, so nothing
the old instance still receives can land where the new one looks. Only when the shared browser
itself is gone is it restarted, once, for every window.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from pobatch.core.events import PoEvent
from pobatch.corelib.browser.session import SessionLifecycle
from pobatch.corelib.browser.devtools import DevToolsError
from pobatch.corelib.worker_pool.tasks import Event
from pobatch.corelib.tree_removal import remove_tree
from pobatch.core.modes.single_session.shared_browser import BrowserGone, SharedBrowser
from pobatch.core.modes.single_session.window_driver import WindowDriver

log = logging.getLogger(__name__)


class WindowSession(SessionLifecycle):
    def __init__(self, browser: SharedBrowser, name: str, folders_root: Path, page_timeout: float,
                 emit: Callable[[Event], None] | None = None) -> None:
        super().__init__()
        self.browser = browser
        self.name = name
        self.folders_root = Path(folders_root)
        self.page_timeout = page_timeout
        self._emit = emit or (lambda e: None)
        self._generation = 0
        self._aborted = False
        self.instances = 0
        # Always the folder of the current instance, or of the next one while none is open.
        self._download_dir = self._folder(1)

    def _folder(self, instance: int) -> Path:
        return self.folders_root / f"incoming-{self.name}-{instance}"

    # -- the BrowserSession contract --------------------------------------------------------------
    @property
    def download_dir(self) -> Path:
        return self._download_dir

    @property
    def handle(self) -> str:
        d = self._driver
        return d.main if d else ""

    def is_alive(self) -> bool:
        d = self._driver
        if d is None or self._aborted or self._generation != self.browser.generation:
            return False
        try:
            if d.main not in self.browser.page_targets():
                return False
        except BrowserGone:
            return False
        return self.browser.responsive(d.main)

    def restart(self) -> None:
        """Retire this window; a dead shared browser is restarted (once for all windows)."""
        generation = self._generation
        self.close()
        if not self._browser_alive():
            self.browser.restart(generation)

    def abort(self) -> None:
        """From the watchdog's thread: close this window (and its popups) behind ChromeDriver's back,
        so a command stuck in it fails; the shared browser is killed only if DevTools cannot do it."""
        self._aborted = True
        d = self._driver
        if d is None:
            return
        router = self.browser.router
        handles = [d.main]
        try:
            handles += [h for h in self.browser.page_targets() if router and h != d.main and router.owner_of(h) == d.main]
            self.browser.close_targets(handles)
            log.warning("window %s: aborted (closed %d window(s))", self.name, len(handles))
        except (BrowserGone, DevToolsError) as exc:
            log.warning("window %s: could not close it through DevTools (%s): killing the shared browser",
                        self.name, exc)
            self.browser.kill()

    def close(self) -> None:
        with self._lock:
            d, self._driver = self._driver, None
            self._aborted = False
            folder, self._download_dir = self._download_dir, self._folder(self.instances + 1)
        if d is None:
            return
        router = self.browser.router
        if router is not None and self._generation == self.browser.generation:
            router.retire(d.main)
            try:
                handles = [h for h in self.browser.page_targets() if h == d.main or router.owner_of(h) == d.main]
                self.browser.close_targets(handles)
            except BrowserGone:
                pass
        remove_tree(folder)
        self.event(PoEvent.WINDOW_CLOSED, detail=f"{d.main[:8]} after {d.commands} commands")

    # -- plumbing ---------------------------------------------------------------------------------
    def event(self, action: str, **kw) -> None:
        self._emit(Event(action=action, worker_id=self.name, window=self.name, **kw))

    def _browser_alive(self) -> bool:
        try:
            self.browser.page_targets()
            return True
        except BrowserGone:
            return False

    def _open(self) -> WindowDriver:
        handle, generation = self.browser.open_window()
        self.instances += 1
        folder = self._folder(self.instances)
        router = self.browser.router
        if router is None:
            raise BrowserGone("the shared browser is not running")
        router.register(handle)
        self._download_dir = folder
        self._generation = generation
        self._aborted = False
        driver = WindowDriver(self.browser, handle, self.page_timeout)
        self.event(PoEvent.WINDOW_OPEN, detail=f"{handle[:8]} (instance {self.instances})")
        return driver
