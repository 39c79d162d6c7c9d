"""Clicks that start downloads, paced so that Chromium never drops one (docs/design.md, "Downloads in Chromium").

Blink throttles the download requests one frame makes (`LocalFrame::ShouldThrottleDownload`): the
first ten of a burst pass, and every further request is dropped, with no event and no error, until
one arrives more than a second after the burst began. An `<a download>` clicked by script, or a
download a page's script starts itself, is such a request (a plain link that navigates is not). A
PO with more than ten attachments therefore lost its eleventh file and waited for it until the PO's
timeout. The pacer keeps the browser's rule from ever applying: a click may go once the tenth click
before it lies more than a second (plus a margin) in the past.

Why that is enough: the browser drops a request only when ten requests of the current burst came
within the second before it, and then the ten requests before it all lie within that second. The
pacer measures from the moment the earlier click's script call returned (the click happened before
that) to the moment the next call is sent (the click happens after that), so the browser's own
clock can only see a longer gap.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Callable

# Blink's kBurstDownloadLimit and its reset interval, as in Chromium 156 (third_party/blink, LocalFrame).
BURST_LIMIT = 10
BURST_WINDOW_S = 1.0


class BurstPacer:
    """Spaces clicks so that no `limit + 1` of them fall within `window` seconds."""

    def __init__(self, limit: int = BURST_LIMIT, window: float = BURST_WINDOW_S, margin: float = 0.05,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.margin = margin
        self._clock = clock
        self._returned: deque[float] = deque(maxlen=limit)  # when each of the last clicks' calls returned

    def delay(self) -> float:
        """Seconds to wait before the next click may be sent (0: now)."""
        if len(self._returned) < self.limit:
            return 0.0
        return max(0.0, self._returned[0] + self.window + self.margin - self._clock())

    def clicked(self, returned: float | None = None) -> None:
        """Record a click whose script call has just returned."""
        self._returned.append(self._clock() if returned is None else returned)

    def wait(self, sleep: Callable[[float], None] = time.sleep) -> float:
        """Block until the next click may go; returns how long it waited."""
        pause = self.delay()
        if pause > 0:
            sleep(pause)
        return pause
