"""Parallel mode: the PO handler in N spawned workers fed by one shared queue.

MainApp consumes this stream exactly as it consumes the sequential one; the pool owns the processes,
this module owns the PO-specific decisions: how many workers, and how to clean up after one dies.
With a Grid (cfg.grid), each worker holds a remote session and `auto` means the Grid's free slots.
"""
from __future__ import annotations

import functools
import logging
import tempfile
import time
from pathlib import Path
from typing import Iterator

from pobatch.core.po_worker import WorkerConfig
from pobatch.core.worker_notes import BrowserWorkerNotes
from pobatch.core.workspace import Workspace
from pobatch.corelib.autoscale import auto_workers
from pobatch.corelib.tree_removal import remove_tree
from pobatch.corelib.errors import FatalError
from pobatch.corelib.grid import delete_session
from pobatch.corelib.profile_manager import ProfileManager, profile_in_use_warning
from pobatch.corelib.process_reaper import kill_browser_tree
from pobatch.corelib.tasks import Event, PoolEvent, Task, TaskResult
from pobatch.corelib.worker_pool import PoolStopped, WorkerInfo, WorkerLost, WorkerPool, WorkerSpec

log = logging.getLogger(__name__)

# Room for every attempt, its backoff, and a browser restart, before the pool kills a stuck worker.
def pool_task_timeout(cfg: WorkerConfig) -> float:
    job = cfg.job
    return job.max_attempts * (job.po_timeout + 15.0) + job.backoff_max * job.max_attempts


def _reap(info: WorkerInfo, workspace: Workspace | None = None) -> None:
    """A worker exited (or died): its browser processes, profile clone, download folder, attempt
    staging folders and driver scratch folder would otherwise outlive it (until the next run)."""
    notes = info.notes if isinstance(info.notes, BrowserWorkerNotes) else BrowserWorkerNotes()
    if notes.grid_session:
        # Its last remote session, which the Grid would otherwise keep until its session timeout
        # (a worker that closed it cleanly gets a harmless "no such session").
        delete_session(notes.grid_url, notes.grid_session)
    profile = notes.profile_dir
    if profile:
        n = kill_browser_tree(profile, owned=True)  # the clone the worker noted: pobatch made it
        try:
            remove_tree(Path(profile))
        except OSError as exc:
            log.warning("could not remove %s: %s", profile, exc)
        log.info("worker %s exited; killed %d leftover browser process(es), removed %s", info.worker_id, n, profile)
    leftovers: list[Path] = []
    if notes.download_dir:
        leftovers.append(Path(notes.download_dir))
    if workspace is not None and workspace.staging_root.is_dir():
        # Its attempts' staging folders: half-done downloads.
        leftovers += [p for p in workspace.staging_root.iterdir() if workspace.is_staging_of(p, info.worker_id)]
    if info.pid:
        # Its driver's TMPDIR (pobatch.corelib.browser_session names it after the worker's pid).
        from pobatch.corelib.browser_session import TEMP_PREFIX

        leftovers += list(Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}{info.pid}-*"))
    for path in leftovers:
        try:
            remove_tree(path)
        except OSError as exc:
            log.warning("could not remove %s: %s", path, exc)


def run_parallel(cfg: WorkerConfig, tasks: list[Task], workers: int | None) -> Iterator[TaskResult | Event]:
    warning = profile_in_use_warning(cfg.base_profile)
    if warning:
        log.warning(warning)
    if cfg.grid is not None:
        from pobatch.corelib.grid import check_grid

        slots = check_grid(cfg.grid.url, cfg.browser.browser)
        if workers is None:
            workers = max(1, slots.free)
            log.info("--workers auto: %d (the Grid's free slots: %d of %d)", workers, slots.free, slots.total)
    elif workers is None:
        workers, why = auto_workers(len(tasks))
        log.info("--workers auto: %d (%s)", workers, why)
    workers = max(1, min(workers, len(tasks) or 1))
    factory = "pobatch.core.po_worker:make_grid_handler" if cfg.grid is not None else "pobatch.core.po_worker:make_handler"
    spec = WorkerSpec(factory, {"worker": cfg})
    pool = WorkerPool(spec, workers, task_timeout=pool_task_timeout(cfg),
                      on_worker_exit=functools.partial(_reap, workspace=cfg.job.workspace))
    for t in tasks:
        pool.submit(t)
    pool.start()
    try:
        try:
            for item in pool.results():
                yield _as_event(item)
        except KeyboardInterrupt:
            # Ctrl+C: the workers (which ignore it) finish the POs in hand; their results are recorded
            # before the run says it stopped, so a PO done meanwhile is COMPLETED, not INTERRUPTED.
            log.warning("Stopping: the POs in progress finish first (Ctrl+C again stops at once)")
            try:
                pool.stop(cancel_pending=True)
            except KeyboardInterrupt:
                pool.terminate()  # their browsers and clones are reaped by _reap
                raise
            for item in pool.results():
                yield _as_event(item)
            raise
        except PoolStopped as exc:
            raise FatalError(f"The run stopped because the browser workers keep failing: {exc}. Finished POs "
                             "are kept; fix the cause and run the same command again.",
                             reason="WORKERS_FAILED") from exc
    finally:
        pool.stop(cancel_pending=True)
        # Every worker is gone now; one killed mid-start or mid-cleanup left its owner record (and
        # maybe more) in this run's profile folder: remove what no live process claims.
        for path in ProfileManager.sweep_orphans(cfg.profiles_root):
            log.info("removed what a worker could not: %s", path)


def _as_event(item: TaskResult | Event | WorkerLost) -> TaskResult | Event:
    """A lost worker becomes a timeline event for the app; everything else passes through."""
    if not isinstance(item, WorkerLost):
        return item
    outcome = "requeued" if item.requeued else "failed" if item.task_key else ""
    return Event(action=PoolEvent.WORKER_LOST, worker_id=item.worker_id, task_key=item.task_key, outcome=outcome,
                 detail=f"pid {item.pid} exit code {item.exitcode}", ts=time.time())
