"""The worker pool's public types, shared by both sides: the parent (pool, manager) and the workers (worker).

Callers build a WorkerSpec, write a Handler, and read WorkerInfo, WorkerLost and PoolStopped.
result_from_exception is here because every mode (the pool's workers, and the EXPERIMENTAL
single-session mode) must turn an exception into a result the same way.
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from pobatch.corelib.errors import classify, reason_of
from pobatch.corelib.worker_pool.tasks import Task, TaskResult


@dataclass(frozen=True)
class WorkerSpec:
    """How to build a worker's handler: `factory(ctx: WorkerContext, config) -> Handler`, called once
    inside each worker process. Both travel pickled (spawn): the factory must be a module-level
    function (pickled by its name, imported again in the worker), the config any picklable object,
    typed by the application (pobatch: core.modes.po_handler.WorkerConfig)."""

    factory: Callable[[Any, Any], Handler]
    config: Any = None


class Handler(Protocol):
    """What a factory returns. run() may raise: the pool turns the exception into a FAILED result.

    An optional `abort(self) -> None` is called from a watchdog thread in the worker when the
    current task exceeds task_timeout; it must make the blocked run() return soon (kill the browser).
    """

    def run(self, task: Task) -> TaskResult: ...

    def close(self) -> None: ...


class WorkerState(str, enum.Enum):
    """Where a worker process is in its life. A str, so it compares equal to the bare word."""

    STARTING = "starting"  # spawned; its factory is building the handler
    IDLE = "idle"  # ready, waiting for a task
    BUSY = "busy"  # holds a task
    STOPPED = "stopped"  # exited because the pool stopped it (STOP, stop() or terminate())
    DEAD = "dead"  # exited without being asked to: crashed, killed from outside, or never got ready

    def __str__(self) -> str:  # the bare word in log lines and f-strings
        return self.value


@dataclass
class WorkerInfo:
    """What the pool knows of one worker process: handed out by workers() and on_worker_exit."""

    worker_id: str
    pid: int
    state: WorkerState = WorkerState.STARTING
    task_key: str = ""  # current task; for an exited worker, the task it held when it went
    busy_since: float = 0.0  # wall clock
    done: int = 0
    # The last thing the worker noted (ctx.note): a frozen, picklable dataclass its application defines
    # (pobatch: core.worker_notes.BrowserWorkerNotes), None until it notes one.
    notes: Any = None


@dataclass
class WorkerLost:
    """Yielded by results() when a worker process died without being asked to stop."""

    worker_id: str
    pid: int
    exitcode: int | None
    task_key: str
    requeued: bool
    notes: Any = None  # the worker's last note, as in WorkerInfo


class PoolStopped(Exception):
    """results() gave up: workers keep dying. Everything was terminated; the message says why.

    unfinished: tasks that never got a result (stop() returns the same tasks).
    """

    def __init__(self, message: str, unfinished: list[Task] | None = None) -> None:
        super().__init__(message)
        self.unfinished = list(unfinished or [])


def result_from_exception(task: Task, exc: BaseException, *, worker_id: str = "",
                          started: float = 0.0) -> TaskResult:
    """The one way an exception becomes a result, so every mode reports failures alike."""
    return TaskResult(
        key=task.key,
        status="FAILED",
        reason=reason_of(exc),
        error=str(exc) or type(exc).__name__,
        error_class=classify(exc).value,
        attempts=task.prior_attempts + 1,
        started=started,
        finished=time.time(),
        worker_id=worker_id,
    )
