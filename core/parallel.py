"""Parallel mode: the PO handler in N spawned workers fed by one shared queue.

MainApp consumes this stream exactly as it consumes the sequential one; the pool owns the processes,
this module owns the PO-specific decisions: how many workers, and how to clean up after one dies.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterator

from core.po_worker import WorkerConfig
from corelib.autoscale import auto_workers
from corelib.downloads import remove_tree
from corelib.profile_manager import profile_in_use_warning
from corelib.process_reaper import kill_browser_tree
from corelib.tasks import Event, Task, TaskResult
from corelib.worker_pool import WorkerInfo, WorkerLost, WorkerPool, WorkerSpec

log = logging.getLogger(__name__)

# Room for every attempt, its backoff, and a browser restart, before the pool kills a stuck worker.
def pool_task_timeout(cfg: WorkerConfig) -> float:
    job = cfg.job
    return job.max_attempts * (job.po_timeout + 15.0) + job.backoff_max * job.max_attempts


def _reap(info: WorkerInfo) -> None:
    """A worker died: its browser processes and profile clone would otherwise outlive it."""
    profile = info.info.get("profile_dir")
    if profile:
        n = kill_browser_tree(profile)
        try:
            remove_tree(Path(profile))
        except OSError as exc:
            log.warning("could not remove %s: %s", profile, exc)
        log.info("worker %s exited; killed %d leftover browser process(es), removed %s", info.worker_id, n, profile)


def run_parallel(cfg: WorkerConfig, tasks: list[Task], workers: int | None) -> Iterator[TaskResult | Event]:
    warning = profile_in_use_warning(cfg.base_profile)
    if warning:
        log.warning(warning)
    if workers is None:
        workers, why = auto_workers(len(tasks))
        log.info("--workers auto: %d (%s)", workers, why)
    workers = max(1, min(workers, len(tasks) or 1))
    spec = WorkerSpec("core.po_worker:make_handler", {"worker": cfg})
    pool = WorkerPool(spec, workers, task_timeout=pool_task_timeout(cfg), on_worker_exit=_reap)
    for t in tasks:
        pool.submit(t)
    pool.start()
    try:
        for item in pool.results():
            if isinstance(item, WorkerLost):
                yield Event(action="worker_lost", worker_id=item.worker_id, task_key=item.task_key,
                            outcome="requeued" if item.requeued else "failed",
                            detail=f"pid {item.pid} exit code {item.exitcode}", ts=time.time())
                continue
            yield item
    finally:
        pool.stop(cancel_pending=True)
