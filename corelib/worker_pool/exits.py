"""How the end of a worker process is settled: one decision for every way a worker can end.

The manager calls settle_exit() once per worker, after the sentinel said the process is gone and its
last messages were read. The answer says what becomes of the task it held (back to the queue, tried
again, or a final result), what the caller is told, and whether the end counts toward giving up.
Apart from logging, it changes nothing: the manager applies it to its books.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

from pobatch.corelib.errors import ErrorClass
from pobatch.corelib.worker_pool.tasks import Event, PoolEvent, Task, TaskResult
from pobatch.corelib.worker_pool.handle import KillReason, WorkerHandle
from pobatch.corelib.worker_pool.types import WorkerLost, WorkerState

log = logging.getLogger(__name__)


@dataclass
class ExitSettlement:
    """What the manager does about one worker's end, in this order."""

    state: WorkerState
    put_back: Task | None = None  # never begun: back to the front of the queue, no attempt spent
    retry: Task | None = None  # an attempt was spent: to the back of the queue, prior_attempts + 1
    told: Event | WorkerLost | None = None  # for results(): a start failure, or a lost worker
    result: TaskResult | None = None  # the task's final result (INTERRUPTED, or FAILED: no retry left)
    failure: str = ""  # counts toward max_consecutive_failures


def settle_exit(worker: WorkerHandle, task: Task | None, exitcode: int | None, *,
                max_task_requeues: int, start_limit: float | None) -> ExitSettlement:
    """The worker has exited holding `task` (None: nothing in hand); start_limit is for the messages."""
    wid, pid = worker.worker_id, worker.info.pid
    if worker.kill_reason in (KillReason.STOP, KillReason.TERMINATE):
        return _killed_by_the_pool(worker, task, exitcode)
    if worker.stop_sent and task is None and not worker.kill_reason:
        log.info("worker %s (pid %d) exited (exit code %s) after %d task(s)", wid, pid, exitcode, worker.info.done)
        return ExitSettlement(WorkerState.STOPPED)
    if not worker.ready:
        return _never_ready(worker, exitcode, start_limit)
    return _died(worker, task, exitcode, max_task_requeues)


def _killed_by_the_pool(worker: WorkerHandle, task: Task | None, exitcode: int | None) -> ExitSettlement:
    """stop() timed out, or terminate(): a task in progress is INTERRUPTED, one not yet begun goes back."""
    wid, pid = worker.worker_id, worker.info.pid
    log.info("worker %s (pid %d) killed by %s() (exit code %s)%s", wid, pid, worker.kill_reason, exitcode,
             f" while running task {task.key}" if task is not None else "")
    if task is None:
        return ExitSettlement(WorkerState.STOPPED)
    if not worker.task_started:
        return ExitSettlement(WorkerState.STOPPED, put_back=task)
    return ExitSettlement(WorkerState.STOPPED, result=TaskResult(
        key=task.key, status="INTERRUPTED",
        reason="STOPPED" if worker.kill_reason is KillReason.STOP else "TERMINATED",
        error=f"worker {wid} was killed by {worker.kill_reason}() while running this task",
        error_class=ErrorClass.TRANSIENT.value, attempts=task.prior_attempts + 1,
        started=worker.info.busy_since, finished=time.time(), worker_id=wid))


def _never_ready(worker: WorkerHandle, exitcode: int | None, start_limit: float | None) -> ExitSettlement:
    """Its factory failed, or it never got ready in time: a start failure, told once."""
    wid, pid = worker.worker_id, worker.info.pid
    error = worker.start_error or (
        f"not ready within {start_limit:g} s"
        if worker.kill_reason is KillReason.START_TIMEOUT and start_limit is not None
        else f"exited with code {exitcode} before it was ready")
    told = None
    if not worker.start_failure_reported:  # WorkerStartFailed already told results()
        told = Event(action=PoolEvent.WORKER_START_FAILED, worker_id=wid, outcome=ErrorClass.TRANSIENT.value, detail=error)
    log.error("worker %s (pid %d) failed to start: %s", wid, pid, error)
    return ExitSettlement(WorkerState.DEAD, told=told, failure=f"worker {wid} failed to start: {error}")


def _died(worker: WorkerHandle, task: Task | None, exitcode: int | None, max_task_requeues: int) -> ExitSettlement:
    """It died on its own, or was killed for overrunning: its task is put back, retried, or failed."""
    wid, pid = worker.worker_id, worker.info.pid
    cause = (f"was killed after running task {task.key} longer than task_timeout + abort_grace"
             if worker.kill_reason is KillReason.TIMEOUT and task is not None
             else f"died with exit code {exitcode}")
    end = ExitSettlement(WorkerState.DEAD, failure=f"worker {wid} (pid {pid}) {cause}")
    outcome = ""
    if task is not None and not worker.task_started:
        end.put_back = task  # handed over but never begun: no attempt spent
        outcome = f"; task {task.key} had not started: requeued"
    elif task is not None and task.prior_attempts + 1 <= max_task_requeues:
        end.retry = dataclasses.replace(task, prior_attempts=task.prior_attempts + 1)
        outcome = (f" while running task {task.key}; requeued "
                   f"(attempt {task.prior_attempts + 2} of {max_task_requeues + 1})")
    elif task is not None:
        reason = "TIMEOUT" if worker.kill_reason is KillReason.TIMEOUT else "WORKER_DIED"
        end.result = TaskResult(
            key=task.key, status="FAILED", reason=reason,
            error=f"worker {wid} (pid {pid}) {cause}; attempt {task.prior_attempts + 1}, no requeue left",
            error_class=ErrorClass.TRANSIENT.value, attempts=task.prior_attempts + 1,
            started=worker.info.busy_since, finished=time.time(), worker_id=wid)
        outcome = f" while running task {task.key}; task failed ({reason})"
    requeued = end.put_back is not None or end.retry is not None
    end.told = WorkerLost(wid, pid, exitcode, task.key if task else "", requeued, worker.info.notes)
    log.warning("worker %s (pid %d) %s%s", wid, pid, cause, outcome)
    return end
