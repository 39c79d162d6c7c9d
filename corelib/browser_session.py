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

import psutil

from corelib.browser import BrowserSpec, quit_browser, start_browser

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
        from corelib.process_reaper import kill_browser_tree

        n = kill_browser_tree(self.spec.user_data_dir)
        log.warning("aborted browser on %s (%d processes killed)", self.spec.user_data_dir, n)

    def close(self) -> None:
        """Quit politely, then make sure nothing with our profile dir survives."""
        from corelib.process_reaper import kill_browser_tree

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
