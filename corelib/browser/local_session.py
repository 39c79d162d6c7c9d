"""A browser on this machine, held as a BrowserSession (the contract: pobatch.corelib.browser.session).

Sequential mode holds one in-process, each parallel worker one in its own process. abort() is the
watchdog's lever: killing the browser by its profile dir makes any blocked WebDriver call fail fast,
and the next task restarts a fresh browser.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pobatch.corelib.browser.factory import BrowserSpec, quit_browser, start_browser
from pobatch.corelib.browser.session import TEMP_PREFIX, SessionLifecycle
from pobatch.corelib.browser.process_reaper import kill_browser_tree, kill_scratch_users
from pobatch.corelib.watchdog import quiet_dead_driver

log = logging.getLogger(__name__)


class LocalBrowserSession(SessionLifecycle):
    def __init__(self, spec: BrowserSpec) -> None:
        if not spec.user_data_dir:
            # Without a profile dir we could not find our processes after a crash.
            raise ValueError("LocalBrowserSession needs spec.user_data_dir")
        super().__init__()
        self.spec = spec
        self._temp: str | None = None

    @property
    def download_dir(self) -> Path | None:
        return Path(self.spec.download_dir) if self.spec.download_dir else None

    def _open(self) -> Any:
        if self._temp is None:
            # Short on purpose: the browser's singleton socket path must stay under 108 bytes.
            self._temp = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-")
        return start_browser(self.spec, temp_dir=self._temp)

    def abort(self) -> None:
        """Kill the browser from any thread, its driver's retries silenced first."""
        quiet_dead_driver(self._driver)
        n = kill_browser_tree(self.spec.user_data_dir)
        log.warning("aborted browser on %s (%d processes killed)", self.spec.user_data_dir, n)

    def _release(self, driver: Any) -> None:
        """Quit politely, then make sure nothing with our profile dir survives."""
        if driver is not None:
            quit_browser(driver)
        kill_browser_tree(self.spec.user_data_dir)
        temp, self._temp = self._temp, None
        if temp:
            # A start cut short (the worker told to stop while its driver came up) leaves a driver no
            # profile dir names, which would write into the folder after it is gone.
            kill_scratch_users(temp)
            shutil.rmtree(temp, ignore_errors=True)
