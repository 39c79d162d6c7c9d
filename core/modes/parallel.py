"""Parallel mode: the PO handler in N spawned workers fed by one shared queue (core/modes/grid.py runs
the same pool with remote sessions).

MainApp consumes this stream exactly as it consumes the sequential one; the pool owns the processes,
this module owns the PO-specific decisions: how many workers, and how to clean up after one dies.
"""
from __future__ import annotations

import functools
import logging
import tempfile
import time
from pathlib import Path
from typing import Iterator

from pobatch.core.modes.base import ModeTraits, RunPlan, attempt_budget
from pobatch.core.modes.po_handler import HandlerFactory, make_handler
from pobatch.core.modes.worker_notes import BrowserWorkerNotes
from pobatch.core.workspace import Workspace
from pobatch.corelib.worker_pool.autoscale import auto_workers, windows_instead
from pobatch.corelib.browser.session import TEMP_PREFIX
from pobatch.corelib.errors import FatalError
from pobatch.corelib.browser.grid import delete_session
from pobatch.corelib.browser.process_reaper import kill_browser_tree
from pobatch.corelib.browser.profile_manager import ProfileManager, warn_if_profile_in_use
from pobatch.corelib.worker_pool.tasks import Event, PoolEvent, TaskResult
from pobatch.corelib.tree_removal import remove_tree
from pobatch.corelib.worker_pool import PoolStopped, WorkerInfo, WorkerLost, WorkerPool, WorkerSpec

log = logging.getLogger(__name__)


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
        # Its driver's TMPDIR (pobatch.corelib.browser.session names it after the worker's pid).
        leftovers += list(Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}{info.pid}-*"))
    for path in leftovers:
        try:
            remove_tree(path)
        except OSError as exc:
            log.warning("could not remove %s: %s", path, exc)


class ParallelMode:
    name = "parallel"
    traits = ModeTraits(worker_lines=True, clones_share_a_session=True)

    def stream(self, plan: RunPlan) -> Iterator[TaskResult | Event]:
        workers = plan.options.workers
        if workers is None:
            workers, why = auto_workers(len(plan.tasks))
            log.info("--workers auto: %d (%s)", workers, why)
            instead = windows_instead(len(plan.tasks))
            if instead is not None:
                windows, reason = instead
                log.warning("Memory, not the CPU, limits this run to %d browser(s): %s. '--strategy single-session "
                            "--windows %d' would work on %d POs at once in one browser.", workers, reason, windows,
                            windows)
        yield from run_pool(plan, workers, make_handler)


def run_pool(plan: RunPlan, workers: int, factory: HandlerFactory) -> Iterator[TaskResult | Event]:
    """The PO handler `factory` builds (a module-level function: spawn pickles it by name) in at most
    `workers` spawned workers, one per task at most."""
    cfg, tasks = plan.worker, plan.tasks
    warn_if_profile_in_use(cfg.base_profile)  # the workers start from it: a clone each, or (Grid) its cookies
    workers = max(1, min(workers, len(tasks) or 1))
    spec = WorkerSpec(factory, cfg)
    pool = WorkerPool(spec, workers, task_timeout=attempt_budget(cfg.job),
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
