"""The browser-session contract every run mode's PO workflow is written against.

A session is one long-lived browser (or one window of a shared browser) that can be started,
restarted, or killed from another thread without leaks. `PoJob`, the handlers, the failure capture
and the download sinks see only this Protocol; the implementations are
`pobatch.corelib.browser.local_session.LocalBrowserSession` (a browser on this machine),
`pobatch.corelib.browser.remote_session.RemoteBrowserSession` (a browser on a Selenium Grid) and, in
EXPERIMENTAL, `WindowSession` (one window of a shared browser).

Starting is explicit: `start()` starts the browser (a started session returns at once) and `driver`
on a session that is not started raises SessionNotStarted; it never starts a browser as a side
effect. Entering a session's `with` block starts it; leaving it closes it.
"""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import psutil

TEMP_PREFIX = "pobatch-drv-"  # driver scratch folders of local browsers: pobatch-drv-<pid>-<random>


class BrowserSession(Protocol):
    """One browser the workflow drives, whatever holds it. Not runtime_checkable on purpose: an
    isinstance check would read `driver`, which raises on a session that is not started."""

    @property
    def driver(self) -> Any:
        """The live WebDriver; SessionNotStarted before start() (and after close/restart)."""

    @property
    def started(self) -> bool:
        """Whether a browser is held now (it may have died meanwhile: see is_alive)."""

    @property
    def download_dir(self) -> Path | None:
        """The local folder this browser saves downloads into; None when it saves them elsewhere (a
        Grid node), so a download sink must fetch them."""

    def start(self) -> None:
        """Start the browser; a started session returns at once."""

    def is_alive(self) -> bool:
        """A cheap round trip to the browser; False when not started."""

    def restart(self) -> None:
        """Let the current browser go; the next start() makes a fresh one."""

    def abort(self) -> None:
        """Kill the browser from any thread; a thread blocked in WebDriver gets an error soon."""

    def close(self) -> None:
        """Quit and leave nothing behind; the session may be started again."""


class SessionNotStarted(RuntimeError):
    """`driver` was read before start(): a caller bug, said plainly instead of starting a browser."""


class SessionLifecycle:
    """The lifecycle every session shares, written once: start under a lock, a driver that refuses
    before start, restart = close (the next start makes a fresh browser), a context manager.
    Subclasses give `_open()` (make and return a driver) and `_release(driver)` (after it is dropped)."""

    def __init__(self) -> None:
        self._driver: Any = None
        self._lock = threading.Lock()
        self.starts = 0
        self.start_seconds = 0.0

    def _open(self) -> Any:
        raise NotImplementedError

    def _release(self, driver: Any) -> None:
        raise NotImplementedError

    def start(self) -> None:
        with self._lock:
            if self._driver is not None:
                return
            t0 = time.monotonic()
            self._driver = self._open()
            self.start_seconds = time.monotonic() - t0
            self.starts += 1

    @property
    def driver(self) -> Any:
        d = self._driver
        if d is None:
            raise SessionNotStarted(f"{type(self).__name__}: no browser is running; call start() first")
        return d

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

    def close(self) -> None:
        with self._lock:
            d, self._driver = self._driver, None
        self._release(d)

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
