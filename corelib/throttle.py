"""A pause that every worker honours: a portal that answers 429 slows the whole run, not one worker.

The pause is a tiny file holding the epoch time before which no worker opens a new page. A file,
because workers may be spawned processes, windows of one browser or Grid sessions, and each of them
already shares the output folder; reading it costs one stat per page. Writing it is atomic, and a
later deadline never shortens an earlier one.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

MAX_PAUSE_S = 600.0  # a Retry-After larger than this is capped: the run must not look hung for hours


class SharedThrottle:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.path = path
        self._clock = clock
        self._sleep = sleep

    def hold(self, seconds: float) -> float:
        """Ask every worker to wait `seconds` from now; returns the deadline in force."""
        seconds = max(0.0, min(float(seconds), MAX_PAUSE_S))
        until = max(self._clock() + seconds, self.until())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(f"{until:.3f}", encoding="ascii")
        os.replace(tmp, self.path)
        return until

    def until(self) -> float:
        try:
            return float(self.path.read_text(encoding="ascii").strip() or 0)
        except (OSError, ValueError):
            return 0.0

    def wait(self) -> float:
        """Sleep until the pause in force is over (at most MAX_PAUSE_S); returns the seconds waited.
        A timed pause is what a 429 asks for, so this is a deadline, not a guess at an event."""
        left = min(self.until() - self._clock(), MAX_PAUSE_S)
        if left <= 0:
            return 0.0
        log.info("the portal asked to slow down: waiting %.1fs before the next page", left)
        self._sleep(left)
        return left


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
