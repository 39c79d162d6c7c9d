"""How the engine waits for something it can only poll: short intervals first, then a ceiling.

Most waits here end within a few milliseconds of starting (a download lands right after the click
that returned, a page is ready as soon as `get` returns), so a fixed 50 ms poll rounded almost every
wait up to 50 ms: about 45 ms per file (BENCHMARKS.md). Backing off from a 2 ms first interval to the
ceiling costs a handful of cheap checks in the fast case and nothing more than the ceiling in a long
wait. Checks that cost a browser round trip get their own, slower rate through `Throttle`.
"""
from __future__ import annotations

import time
from typing import Callable


class Backoff:
    """Successive poll intervals: `first`, then growing by `factor`, never above `ceiling`."""

    def __init__(self, first: float = 0.002, ceiling: float = 0.05, factor: float = 1.6) -> None:
        if not 0 < first <= ceiling or factor < 1:
            raise ValueError(f"Backoff needs 0 < first <= ceiling and factor >= 1 (got {first}, {ceiling}, {factor})")
        self.ceiling = ceiling
        self.factor = factor
        self._next = first

    def next_interval(self) -> float:
        interval = self._next
        self._next = min(self._next * self.factor, self.ceiling)
        return interval

    def sleep(self) -> None:
        time.sleep(self.next_interval())


class Throttle:
    """Calls `fn` at most once per `every` seconds, the first time `every` seconds after creation.

    For a check that is expensive (WebDriver round trips) and only needed if a wait goes on: a wait
    that ends within `every` never pays for it.
    """

    def __init__(self, fn: Callable[[], None] | None, every: float) -> None:
        self._fn = fn
        self.every = every
        self._due = time.monotonic() + every

    def __call__(self) -> None:
        if self._fn is None:
            return
        now = time.monotonic()
        if now >= self._due:
            self._due = now + self.every
            self._fn()
