"""A browser on a Selenium Grid, held as a BrowserSession (the contract: pobatch.corelib.browser.session).

restart = a new remote session (the old one deleted on the Grid); abort = close its browser and
delete the session on the Grid, from any thread, so a blocked command returns; nothing local to
kill or remove. on_start runs after every new session (e.g. to carry the login cookies over); if it
fails, the session is deleted again and the error raised.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from pobatch.corelib.browser.factory import BrowserSpec
from pobatch.corelib.browser.session import SessionLifecycle
from pobatch.corelib.browser.grid import GridSpec, close_browser_via_cdp, delete_session, quit_remote, start_remote_browser
from pobatch.corelib.watchdog import quiet_dead_driver

log = logging.getLogger(__name__)


class RemoteBrowserSession(SessionLifecycle):
    def __init__(self, spec: BrowserSpec, grid: GridSpec, on_start: Callable[[Any], None] | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.grid = grid
        self._on_start = on_start

    @property
    def download_dir(self) -> Path | None:
        return None  # the node's folder: files are fetched through the Grid (GridDownloadSink)

    @property
    def session_id(self) -> str | None:
        d = self._driver
        return d.session_id if d is not None else None

    def _open(self) -> Any:
        driver = start_remote_browser(self.grid, self.spec)
        if self._on_start is not None:
            try:
                self._on_start(driver)
            except BaseException:
                quit_remote(driver)
                raise
        return driver

    def abort(self) -> None:
        """Close the remote browser (DevTools, does not queue behind the blocked command), then delete
        the session so the Grid's slot is free even if this process never comes back."""
        d = self._driver
        if d is None:
            return
        quiet_dead_driver(d)
        sid, cdp = d.session_id, (d.capabilities or {}).get("se:cdp")
        closed = close_browser_via_cdp(cdp) if cdp else False
        deleted = delete_session(self.grid.url, sid)
        log.warning("aborted Grid session %s on %s (browser %s, session %s)", sid, self.grid.url,
                    "closed" if closed else "not reached", "deleted" if deleted else "not confirmed")

    def _release(self, driver: Any) -> None:
        if driver is not None:
            quit_remote(driver)
