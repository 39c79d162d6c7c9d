"""Backoff policy: the error class, not the call site, decides whether to try again."""
from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

from pobatch.corelib.errors import ErrorClass


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    base_delay: float = 1.0
    max_delay: float = 30.0
    jitter: float = 0.25

    def should_retry(self, error_class: ErrorClass, attempt: int) -> bool:
        """attempt is the 1-based number of the attempt that just failed."""
        return error_class is ErrorClass.TRANSIENT and attempt < self.max_attempts

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Exponential backoff with jitter, so parallel workers do not retry in lockstep."""
        base = min(self.max_delay, self.base_delay * (2 ** max(0, attempt - 1)))
        spread = base * self.jitter
        return max(0.0, base + (rng or random).uniform(-spread, spread))


def jitter_rng(key: str, attempt: int) -> random.Random:
    """The same jitter for the same item and attempt in every process and run: hash() of a str is
    salted per process (PYTHONHASHSEED), so it would make retries unreproducible."""
    return random.Random(zlib.crc32(f"{key}\x00{attempt}".encode("utf-8")))
