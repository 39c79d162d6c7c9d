"""`--workers auto` on this PC's memory and CPUs, and the single-session advice when memory is what
limits it (issue 23). Pure logic: the free memory and CPU count are given."""
from __future__ import annotations

from pobatch.corelib.worker_pool.autoscale import MAX_WORKERS, WINDOW_MB, WORKER_MB, auto_workers, windows_instead

GIB = 2**30


def test_plenty_of_memory_needs_no_advice() -> None:
    assert auto_workers(100, 16 * GIB, 4)[0] == MAX_WORKERS
    assert windows_instead(100, 16 * GIB, 4) is None


def test_short_memory_suggests_windows_in_one_browser() -> None:
    browsers, why = auto_workers(100, int(1.5 * GIB), 4)
    assert browsers == 2 and "1.5 GiB free" in why
    windows, reason = windows_instead(100, int(1.5 * GIB), 4)
    # Half of 1.5 GiB: one browser of WORKER_MB, then windows of WINDOW_MB each.
    assert windows == min(8, int((0.75 * 1024 - WORKER_MB) // WINDOW_MB) + 1) > browsers
    assert f"{browsers} browser(s)" in reason and f"{windows} windows" in reason


def test_no_advice_when_the_cpu_or_the_batch_is_the_limit() -> None:
    assert windows_instead(100, int(1.5 * GIB), 1) is None  # one CPU: two browsers are all it takes
    assert windows_instead(2, int(1.5 * GIB), 4) is None  # two POs: two browsers do them at once
