"""How many browsers this PC can run at once, decided from what it has and what a browser costs."""
from __future__ import annotations

import os

import psutil

# Measured on the reference machine (docs/design.md "Measured costs", BENCHMARKS.md): a headless worker's browser tree
# takes about 300 MB PSS; past 2 per core the CPU, not the portal, limits throughput.
WORKER_MB = 300
# One more window in one shared browser (the single-session strategy): its renderer and its share of the
# browser process. Measured at 4 windows (BENCHMARKS.md, issue 23): the browser's PSS was 0.75 GiB where
# 4 browsers took 1.12 GiB, 100 to 160 MB per window beyond the first depending on what one counts as
# the first window's browser.
WINDOW_MB = 120
WORKERS_PER_CPU = 2
MAX_WORKERS = 8
MEMORY_SHARE = 0.5  # leave half of what is free to the user's own programs


def auto_workers(tasks: int, available_bytes: int | None = None, cpus: int | None = None) -> tuple[int, str]:
    """Return (workers, one-line reasoning)."""
    avail = available_bytes if available_bytes is not None else psutil.virtual_memory().available
    cpus = cpus or psutil.cpu_count(logical=True) or os.cpu_count() or 1
    by_memory = int(avail * MEMORY_SHARE // (WORKER_MB * 1024 * 1024))
    by_cpu = cpus * WORKERS_PER_CPU
    n = max(1, min(by_memory, by_cpu, MAX_WORKERS, max(1, tasks)))
    why = (f"{avail / 2**30:.1f} GiB free allows {by_memory} at {WORKER_MB} MB each (half of free memory); "
           f"{cpus} CPU(s) allow {by_cpu}; cap {MAX_WORKERS}; {tasks} PO(s)")
    return n, why


def windows_instead(tasks: int, available_bytes: int | None = None, cpus: int | None = None) -> tuple[int, str] | None:
    """When memory, not the CPU, is what limits how many browsers run at once: how many windows of one
    browser would fit instead (the single-session strategy), and why; None when memory is not the limit
    or windows would not do more."""
    avail = available_bytes if available_bytes is not None else psutil.virtual_memory().available
    cpus = cpus or psutil.cpu_count(logical=True) or os.cpu_count() or 1
    browsers, _ = auto_workers(tasks, avail, cpus)
    wanted = min(cpus * WORKERS_PER_CPU, MAX_WORKERS, max(1, tasks))
    budget = avail * MEMORY_SHARE / (1024 * 1024)
    if browsers >= wanted:
        return None
    windows = max(1, min(wanted, int((budget - WORKER_MB) // WINDOW_MB) + 1))
    if windows <= browsers:
        return None
    return windows, (f"{avail / 2**30:.1f} GiB free holds {browsers} browser(s) of about {WORKER_MB} MB with room "
                     f"to spare, and {windows} windows of about {WINDOW_MB} MB in one browser")
