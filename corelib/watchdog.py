"""A per-task deadline that pulls a lever instead of waiting forever.

WebDriver calls can block indefinitely on a hung browser; the only reliable way out is to kill the
browser from another thread, which makes the blocked call fail. Both modes use this.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)


class Watchdog:
    """Pulls `on_expire` once the guarded block has gone `timeout` seconds without progress.

    touch() is progress (a page read, a download begun, bytes received): the limit then counts
    from it, so a PO with 300 files needs no larger limit than one with 3, and a stuck one is still
    cut off `timeout` after its last sign of life."""

    def __init__(self, timeout: float | None, on_expire: Callable[[], None], label: str = "") -> None:
        self.timeout = timeout
        self.on_expire = on_expire
        self.label = label
        self.expired = False
        self._cond = threading.Condition()
        self._done = False
        self._deadline = 0.0
        self._thread: threading.Thread | None = None

    def touch(self) -> None:
        """Progress: the limit counts from now."""
        if self.timeout:
            with self._cond:
                self._deadline = time.monotonic() + self.timeout

    def _watch(self) -> None:
        with self._cond:
            while not self._done:
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._done:
                return
            self.expired = True
        log.warning("%s made no progress for %.0fs: aborting it", self.label or "task", self.timeout)
        try:
            self.on_expire()
        except Exception:  # the lever failing must not kill the watcher's process
            log.exception("abort after timeout failed")

    def __enter__(self) -> "Watchdog":
        if self.timeout:
            self._deadline = time.monotonic() + self.timeout
            self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._done = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()


class _DeadSessionFilter(logging.Filter):
    """Drops urllib3's "Retrying ... Connection refused" lines about WebDriver sessions that were
    killed on purpose: after an abort every pending or later command of that session must fail, and
    saying so hundreds of times helps nobody."""

    def __init__(self) -> None:
        super().__init__()
        self.sessions: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.sessions:
            return True
        try:
            text = record.getMessage()
        except Exception:
            return True
        return not any(f"/session/{sid}" in text for sid in self.sessions)


_DEAD_SESSIONS = _DeadSessionFilter()


def quiet_dead_driver(driver) -> None:
    """A driver whose browser is being killed on purpose: its commands fail at once from now on (no
    connection retries) and without a line per retry. Never raises (it works on Selenium's insides)."""
    if driver is None:
        return
    try:
        sid = str(driver.session_id or "")
        if sid:
            _DEAD_SESSIONS.sessions.add(sid)
            pool_logger = logging.getLogger("urllib3.connectionpool")
            if _DEAD_SESSIONS not in pool_logger.filters:
                pool_logger.addFilter(_DEAD_SESSIONS)
        conn = getattr(driver.command_executor, "_conn", None)
        if conn is not None and hasattr(conn, "connection_pool_kw"):
            conn.connection_pool_kw["retries"] = False
            conn.clear()  # pools made from now on carry retries=False
    except Exception as exc:
        log.debug("could not quiet the dead driver: %s", exc)
