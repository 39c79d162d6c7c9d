"""A per-task deadline that pulls a lever instead of waiting forever.

WebDriver calls can block indefinitely on a hung browser; the only reliable way out is to kill the
browser from another thread, which makes the blocked call fail. Both modes use this.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)


class Watchdog:
    def __init__(self, timeout: float | None, on_expire: Callable[[], None], label: str = "") -> None:
        self.timeout = timeout
        self.on_expire = on_expire
        self.label = label
        self.expired = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def _watch(self) -> None:
        if not self._done.wait(self.timeout):
            self.expired = True
            log.warning("%s ran past its %.0fs limit: aborting it", self.label or "task", self.timeout)
            try:
                self.on_expire()
            except Exception:  # the lever failing must not kill the watcher's process
                log.exception("abort after timeout failed")

    def __enter__(self) -> "Watchdog":
        if self.timeout:
            self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
