"""One long-lived browser that can be restarted, or killed from another thread, without leaks.

Both modes hold their browser through this: sequential mode in-process, each parallel worker in its
own process. abort() is the watchdog's lever: killing the browser by its profile dir makes any
blocked WebDriver call fail fast, and the next task restarts a fresh browser.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import psutil

from pobatch.corelib.browser import BrowserSpec, quit_browser, start_browser

if TYPE_CHECKING:
    from pobatch.corelib.grid import GridSpec

log = logging.getLogger(__name__)


TEMP_PREFIX = "pobatch-drv-"


def sweep_driver_temp() -> list[Path]:
    """Remove driver scratch folders whose owning process is gone (a worker that was killed)."""
    removed = []
    for path in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
        try:
            pid = int(path.name[len(TEMP_PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if not psutil.pid_exists(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


class BrowserSession:
    def __init__(self, spec: BrowserSpec) -> None:
        if not spec.user_data_dir:
            # Without a profile dir we could not find our processes after a crash.
            raise ValueError("BrowserSession needs spec.user_data_dir")
        self.spec = spec
        self._driver = None
        self._lock = threading.Lock()
        self.starts = 0
        self.start_seconds = 0.0
        self._temp: str | None = None

    @property
    def driver(self):
        """The live driver, started on first use and after a restart."""
        with self._lock:
            if self._driver is None:
                t0 = time.monotonic()
                if self._temp is None:
                    # Short on purpose: the browser's singleton socket path must stay under 108 bytes.
                    self._temp = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-")
                self._driver = start_browser(self.spec, temp_dir=self._temp)
                self.start_seconds = time.monotonic() - t0
                self.starts += 1
            return self._driver

    @property
    def started(self) -> bool:
        return self._driver is not None

    def is_alive(self) -> bool:
        d = self._driver
        if d is None:
            return False
        try:
            d.window_handles  # cheap round trip to driver and browser
            return True
        except Exception:
            return False

    def restart(self) -> None:
        self.close()

    def abort(self) -> None:
        """Kill the browser from any thread; the thread blocked in WebDriver gets an error soon."""
        from pobatch.corelib.process_reaper import kill_browser_tree

        n = kill_browser_tree(self.spec.user_data_dir)
        log.warning("aborted browser on %s (%d processes killed)", self.spec.user_data_dir, n)

    def close(self) -> None:
        """Quit politely, then make sure nothing with our profile dir survives."""
        from pobatch.corelib.process_reaper import kill_browser_tree

        with self._lock:
            d, self._driver = self._driver, None
        if d is not None:
            quit_browser(d)
        kill_browser_tree(self.spec.user_data_dir)
        temp, self._temp = self._temp, None
        if temp:
            shutil.rmtree(temp, ignore_errors=True)

    def __enter__(self) -> "BrowserSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteBrowserSession:
    """The same lifecycle as BrowserSession for a browser on a Selenium Grid.

    restart = a new remote session (the old one deleted on the Grid); abort = close its browser and
    delete the session on the Grid, from any thread, so a blocked command returns; nothing local to
    kill or remove. on_start runs after every new session (e.g. to carry the login cookies over);
    if it fails, the session is deleted again and the error raised.
    """

    def __init__(self, spec: BrowserSpec, grid: "GridSpec", on_start: Callable[[Any], None] | None = None) -> None:
        self.spec = spec
        self.grid = grid
        self._on_start = on_start
        self._driver = None
        self._lock = threading.Lock()
        self.starts = 0
        self.start_seconds = 0.0

    @property
    def driver(self):
        from pobatch.corelib.grid import quit_remote, start_remote_browser

        with self._lock:
            if self._driver is None:
                t0 = time.monotonic()
                driver = start_remote_browser(self.grid, self.spec)
                if self._on_start is not None:
                    try:
                        self._on_start(driver)
                    except BaseException:
                        quit_remote(driver)
                        raise
                self._driver = driver
                self.start_seconds = time.monotonic() - t0
                self.starts += 1
            return self._driver

    @property
    def started(self) -> bool:
        return self._driver is not None

    @property
    def session_id(self) -> str | None:
        d = self._driver
        return d.session_id if d is not None else None

    def is_alive(self) -> bool:
        d = self._driver
        if d is None:
            return False
        try:
            d.window_handles
            return True
        except Exception:
            return False

    def restart(self) -> None:
        self.close()

    def abort(self) -> None:
        """Close the remote browser (DevTools, does not queue behind the blocked command), then delete
        the session so the Grid's slot is free even if this process never comes back."""
        from pobatch.corelib.grid import close_browser_via_cdp, delete_session

        d = self._driver
        if d is None:
            return
        sid, cdp = d.session_id, (d.capabilities or {}).get("se:cdp")
        closed = close_browser_via_cdp(cdp) if cdp else False
        deleted = delete_session(self.grid.url, sid)
        log.warning("aborted Grid session %s on %s (browser %s, session %s)", sid, self.grid.url,
                    "closed" if closed else "not reached", "deleted" if deleted else "not confirmed")

    def close(self) -> None:
        from pobatch.corelib.grid import quit_remote

        with self._lock:
            d, self._driver = self._driver, None
        if d is not None:
            quit_remote(d)

    def __enter__(self) -> "RemoteBrowserSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
