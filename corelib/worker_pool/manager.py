"""The parent's books on its worker processes, and every decision about them.

WorkerPool (pool.py) is what callers use: it checks their input, holds the lock, and runs the wait
loop of results() and stop(). Each pass of that loop hands what woke it to this manager, which:
- dispatches: an idle worker gets exactly one task on its own pipe, or STOP;
- reads each worker's messages (ready, started, done, events, log records, notes);
- notices a death through the process sentinel, applies what settle_exit (exits.py) decides about
  its task, tells the app (on_worker_exit), and starts a replacement or gives up (PoolStopped);
- kills a worker whose task went task_timeout + abort_grace without an event, or that never got ready.

A little over 400 lines: what is left here all reads and writes the same books (the queue, the live
workers, the output, the failure count); one process's input and output (handle.py) and the verdict
on a worker's end (exits.py) are already apart. Not thread-safe on its own: the pool holds its lock
around every call.
"""
from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Callable

from pobatch.corelib.errors import classify
# the wire to the workers
from pobatch.corelib.worker_pool.task_queue import STOP, EventMessage, TaskDone, TaskQueue, TaskStarted
from pobatch.corelib.worker_pool.task_queue import WorkerLog, WorkerNote, WorkerReady, WorkerStartFailed
from pobatch.corelib.worker_pool.tasks import Event, PoolEvent, Task, TaskResult
from pobatch.corelib.worker_pool.exits import settle_exit
from pobatch.corelib.worker_pool.handle import KillReason, WorkerHandle
from pobatch.corelib.worker_pool.types import PoolStopped, WorkerInfo, WorkerLost, WorkerSpec, WorkerState

log = logging.getLogger(__name__)

_MAX_WAIT = 1.0  # upper bound of one wait(): keeps Ctrl+C prompt on Windows; deaths still wake us at once

Output = TaskResult | Event | WorkerLost  # what results() yields


def _copy(info: WorkerInfo) -> WorkerInfo:
    """What leaves the books is a copy: callers keep it while the pool goes on updating its own."""
    return dataclasses.replace(info)  # its notes are frozen: shared, not copied


@dataclass(frozen=True)
class _KillDeadline:
    """When a worker is overdue (monotonic `at`), counted from `since`, and the reason it is killed for."""

    since: float
    at: float
    reason: KillReason


@dataclass(frozen=True)
class PoolLimits:
    """How many workers, and how long and how often the pool tolerates trouble before it acts."""

    workers: int
    task_timeout: float | None = None  # a task this long without an event is aborted inside the worker; None: no limit
    abort_grace: float = 30.0  # after task_timeout, before the parent kills the worker
    max_task_requeues: int = 2  # a task whose worker died is tried again this many times
    max_restarts: int = 10  # replacements over the pool's life
    max_consecutive_failures: int = 3  # workers in a row dying before a task finishes: give up

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.task_timeout is not None and self.task_timeout <= 0:
            raise ValueError("task_timeout must be positive or None")
        if (self.abort_grace < 0 or self.max_task_requeues < 0 or self.max_restarts < 0
                or self.max_consecutive_failures < 1):
            raise ValueError("abort_grace, max_task_requeues and max_restarts must be >= 0, "
                             "max_consecutive_failures >= 1")


class PoolManager:
    """Pending tasks, live workers, what each holds, and the output results() yields."""

    def __init__(self, spec: WorkerSpec, limits: PoolLimits,
                 on_worker_exit: Callable[[WorkerInfo], None] | None, start_method: str) -> None:
        self._spec = spec
        self._size = limits.workers
        self._task_timeout = limits.task_timeout
        self._abort_grace = limits.abort_grace
        self._max_task_requeues = limits.max_task_requeues
        self._max_restarts = limits.max_restarts
        self._max_consecutive_failures = limits.max_consecutive_failures
        self._on_worker_exit = on_worker_exit
        self._ctx = multiprocessing.get_context(start_method)

        self._pending = TaskQueue()
        self._unresolved: set[str] = set()
        self._output: deque[Output] = deque()
        self.live: list[WorkerHandle] = []
        self._all: list[WorkerHandle] = []
        self._next_id = 1
        self._spawned = 0
        self._restarts = 0
        self._consecutive_failures = 0
        self._last_failure = ""
        self.started = False
        self.stopping = False
        self._cancel_pending = True
        self.closed = False
        self.error: PoolStopped | None = None
        self._log_level = logging.WARNING
        self._wake_r: Connection | None = None
        self._wake_w: Connection | None = None
        self._wake_pending = False

    # -- what the pool asks --

    def start(self, log_level: int) -> None:
        """Start all workers at once; they build their state in parallel."""
        if self.closed or self.stopping:
            raise RuntimeError("the pool was stopped")
        if self.started:
            return
        self.started = True
        self._log_level = log_level
        self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
        for _ in range(self._size):
            self._spawn()

    def add(self, task: Task) -> None:
        """Queue a task; hand it to an idle worker at once if the pool runs."""
        if self.stopping or self.closed:
            raise RuntimeError("the pool is stopping: no new tasks")
        if task.key in self._unresolved:
            raise ValueError(f"task {task.key!r} was already submitted and has no result yet")
        self._unresolved.add(task.key)
        self._pending.put(task)
        if self.started:
            self._dispatch_idle()
            self._wake()

    @property
    def settled(self) -> bool:
        """Nothing more will come: every task has its result, or the pool is closed."""
        return self.closed or not self._unresolved

    def next_output(self) -> Output | None:
        """The next item for results(), or None while there is none yet. Raises the pool's PoolStopped."""
        while True:
            if self._output:
                return self._output.popleft()
            if self.error is not None:
                raise self.error
            if self.settled:
                return None
            self._check_health()
            if self.error is None and not self._output:
                return None

    def pump(self, ready: list[Any]) -> None:
        """One pass of the wait loop: act on what woke it, then on the clock."""
        if self.closed:
            return
        self._handle_ready(ready)
        self._enforce_timeouts()
        self._dispatch_idle()

    def begin_stop(self, cancel_pending: bool) -> list[Task]:
        """Workers finish their current task (and, unless cancel_pending, the queue); returns the cancelled."""
        cancelled: list[Task] = []
        if self.stopping:
            return cancelled
        self.stopping = True
        self._cancel_pending = cancel_pending
        if cancel_pending:
            cancelled = self.take_pending()
        log.info("stopping the pool: %d worker(s), %d task(s) %s", len(self.live),
                 len(cancelled) if cancel_pending else len(self._pending),
                 "cancelled" if cancel_pending else "left to finish")
        self._dispatch_idle()
        return cancelled

    def terminate(self) -> None:
        """Kill every worker now; tasks they were running get an INTERRUPTED result."""
        if self.closed:
            return
        self.stopping = True
        if self.live:
            log.warning("terminating %d worker(s)", len(self.live))
        self.kill_all(KillReason.TERMINATE)
        self.close()

    def worker_infos(self) -> list[WorkerInfo]:
        """Every worker started, live or exited, oldest first (copies)."""
        return [_copy(w.info) for w in self._all]

    def wait_objects(self) -> list[Any]:
        """What the wait loop sleeps on: the wake pipe, every live worker's messages and sentinel."""
        objects: list[Any] = [self._wake_r] if self._wake_r is not None else []
        for worker in self.live:
            objects += worker.wait_objects()
        return objects

    def wait_timeout(self) -> float:
        """How long the wait loop may sleep: until the next deadline, and never past _MAX_WAIT."""
        timeout = _MAX_WAIT
        now = time.monotonic()
        for worker in self.live:
            deadline = self._kill_deadline(worker)
            if deadline is not None:
                timeout = min(timeout, deadline.at - now)
        return max(0.0, timeout)

    def kill_all(self, reason: KillReason) -> None:
        """Kill every live worker, then settle each one's end as its sentinel would have."""
        for worker in self.live:
            worker.kill(reason)
        for worker in list(self.live):
            worker.process.join(10.0)
            self._handle_exit(worker)

    def take_pending(self) -> list[Task]:
        """Empty the queue: these tasks will get no result, the caller gets them back."""
        tasks = self._pending.drain()
        for task in tasks:
            self._unresolved.discard(task.key)
        return tasks

    def close(self) -> None:
        """The pool is done: close the wake pipe and every pipe to a worker."""
        self.closed = True
        for conn in (self._wake_r, self._wake_w):
            if conn is not None:
                conn.close()
        self._wake_r = self._wake_w = None
        for worker in self._all:
            worker.close_pipes()

    # -- workers --

    def _spawn(self) -> None:
        worker_id = f"w{self._next_id}"
        self._next_id += 1
        self._spawned += 1
        try:
            worker = WorkerHandle.spawn(self._ctx, worker_id, self._spec, self._task_timeout, self._log_level)
        except Exception as exc:
            log.error("worker %s could not be started: %s", worker_id, exc)
            self._output.append(Event(action=PoolEvent.WORKER_START_FAILED, worker_id=worker_id,
                                      outcome=classify(exc).value, detail=f"{type(exc).__name__}: {exc}"))
            self._note_failure(f"worker {worker_id} could not be started: {exc}")
            return
        self.live.append(worker)
        self._all.append(worker)
        log.debug("worker %s spawned (pid %s)", worker_id, worker.process.pid)

    def _dispatch_idle(self) -> None:
        for worker in list(self.live):
            if not self._pending and not self.stopping:
                return
            self._dispatch(worker)

    def _dispatch(self, worker: WorkerHandle) -> None:
        """Hand an idle worker its next task, or tell it to stop."""
        if not worker.idle:
            return
        if self.stopping and (self._cancel_pending or not self._pending):
            worker.stop_sent = True
            worker.send(STOP)
            return
        # Each worker is told which task will probably come next (Task.up_next: it loads that page
        # ahead) and is given it when it is free, unless another worker ran out of work first.
        spoken_for = {w.expects for w in self.live if w is not worker and w.expects}
        task = self._pending.pop(worker.expects, spoken_for)
        if task is None:
            return
        following = self._pending.peek_free(spoken_for)
        sent = dataclasses.replace(task, up_next=dataclasses.replace(following, up_next=None)) if following else task
        if not worker.send(sent):
            self._pending.put_front(task)
            return
        worker.expects = following.key if following else None
        worker.task, worker.task_started, worker.since = task, False, time.monotonic()
        worker.last_progress = 0.0
        worker.info.state, worker.info.task_key, worker.info.busy_since = WorkerState.BUSY, task.key, time.time()

    # -- the event loop --

    def _wake(self) -> None:
        """Wake a results() loop blocked in wait() (e.g. a submit() from another thread)."""
        if self._wake_w is not None and not self._wake_pending:
            self._wake_pending = True
            try:
                self._wake_w.send_bytes(b"\0")
            except (OSError, ValueError):
                pass

    def _handle_ready(self, ready: list[Any]) -> None:
        ready_set = set(ready)
        if self._wake_r is not None and self._wake_r in ready_set:
            try:
                while self._wake_r.poll(0):
                    self._wake_r.recv_bytes()
            except (OSError, EOFError):
                pass
            self._wake_pending = False
        for worker in list(self.live):
            if worker.messages_in in ready_set:
                self._drain(worker)
        for worker in list(self.live):
            if worker.process.sentinel in ready_set:
                self._handle_exit(worker)
        self._dispatch_idle()

    def _drain(self, worker: WorkerHandle) -> None:
        for message in worker.messages():
            self._on_message(worker, message)

    def _on_message(self, worker: WorkerHandle, message: object) -> None:
        wid = worker.info.worker_id
        if isinstance(message, EventMessage):
            if worker.task is not None and message.event.task_key == worker.task.key:
                worker.last_progress = time.monotonic()
            self._output.append(message.event)
        elif isinstance(message, WorkerLog):
            worker.relog(message.record)
        elif isinstance(message, WorkerNote):
            worker.info.notes = message.notes
        elif isinstance(message, TaskStarted):
            if worker.task is not None and worker.task.key == message.task_key:
                worker.task_started, worker.since = True, time.monotonic()
                worker.info.busy_since = message.ts
        elif isinstance(message, TaskDone):
            result = message.result
            if worker.task is None or worker.task.key != result.key:
                log.warning("worker %s sent a result for %r, which it was not running: ignored", wid, result.key)
                return
            worker.task, worker.task_started = None, False
            worker.info.state, worker.info.task_key, worker.info.busy_since = WorkerState.IDLE, "", 0.0
            worker.info.done += 1
            self._consecutive_failures = 0
            self._finish(result)
            self._dispatch(worker)
        elif isinstance(message, WorkerReady):
            worker.ready = True
            worker.info.state = WorkerState.IDLE
            log.info("worker %s started (pid %d, ready in %.2f s)", wid, message.pid, message.start_seconds)
            self._dispatch(worker)
        elif isinstance(message, WorkerStartFailed):
            worker.start_error = message.error
            worker.start_failure_reported = True
            self._output.append(Event(action=PoolEvent.WORKER_START_FAILED, worker_id=wid,
                                      outcome=message.error_class, detail=message.error))
        else:
            log.warning("worker %s sent an unknown message %r: ignored", wid, type(message).__name__)

    def _finish(self, result: TaskResult) -> None:
        self._unresolved.discard(result.key)
        self._output.append(result)

    @property
    def _kill_limit(self) -> float | None:
        """How long a worker may go without an event on its task, or unready, before the parent kills
        it: the in-worker abort (at task_timeout) gets abort_grace to bring it back first."""
        return None if self._task_timeout is None else self._task_timeout + self._abort_grace

    def _kill_deadline(self, worker: WorkerHandle) -> _KillDeadline | None:
        """When the parent kills this worker unless it is heard from, and why; None when nothing is due
        (no task_timeout, already killed, or ready and idle). The one rule the wait and the kill share."""
        limit = self._kill_limit
        if limit is None or worker.kill_reason:
            return None
        if worker.task is not None:
            return _KillDeadline(worker.progress_since, worker.progress_since + limit, KillReason.TIMEOUT)
        if not worker.ready:
            return _KillDeadline(worker.spawned, worker.spawned + limit, KillReason.START_TIMEOUT)
        return None

    def _enforce_timeouts(self) -> None:
        """In-worker abort did not bring the worker back (or it never got ready): kill it."""
        now = time.monotonic()
        for worker in self.live:
            deadline = self._kill_deadline(worker)
            if deadline is None or now <= deadline.at:
                continue
            if deadline.reason is KillReason.TIMEOUT:
                log.warning("worker %s (pid %d) made no progress on task %s for %.1f s (task_timeout %g s + "
                            "abort_grace %g s): killing it", worker.info.worker_id, worker.info.pid,
                            worker.task.key if worker.task else "", now - deadline.since, self._task_timeout,
                            self._abort_grace)
            else:
                log.warning("worker %s (pid %d) not ready after %.1f s: killing it",
                            worker.info.worker_id, worker.info.pid, now - deadline.since)
            worker.kill(deadline.reason)

    def _handle_exit(self, worker: WorkerHandle) -> None:
        """The worker process is gone: settle its task, tell the app, count the failure."""
        self._drain(worker)  # what it sent before dying is still in the pipe
        exitcode = worker.reap()
        self.live.remove(worker)
        task, worker.task = worker.task, None
        end = settle_exit(worker, task, exitcode, max_task_requeues=self._max_task_requeues,
                          start_limit=self._kill_limit)
        worker.info.state = end.state
        if end.put_back is not None:
            self._pending.put_front(end.put_back)
        if end.retry is not None:
            self._pending.put(end.retry)
        if end.told is not None:
            self._output.append(end.told)
        if end.result is not None:
            self._finish(end.result)
        if end.failure:
            self._note_failure(end.failure)
        self._call_exit_hook(worker)

    def _call_exit_hook(self, worker: WorkerHandle) -> None:
        if self._on_worker_exit is None:
            return
        try:
            self._on_worker_exit(_copy(worker.info))
        except Exception:
            log.exception("on_worker_exit failed for worker %s", worker.info.worker_id)

    def _note_failure(self, what: str) -> None:
        self._consecutive_failures += 1
        self._last_failure = what

    def _check_health(self) -> None:
        """Give up on repeated deaths; otherwise start replacements while tasks wait."""
        if self.error is not None or self.stopping or self.closed:
            return
        work_left = bool(self._pending) or any(w.task is not None for w in self.live)
        if not work_left:
            return
        if self._consecutive_failures >= self._max_consecutive_failures:
            self._give_up(f"{self._consecutive_failures} workers in a row died before finishing a task; "
                          f"last error: {self._last_failure}")
            return
        while len(self.live) < self._size and self._pending and self._spawned < self._size + self._max_restarts:
            self._restarts += 1
            log.info("starting replacement worker w%d (restart %d of %d)", self._next_id, self._restarts,
                     self._max_restarts)
            self._spawn()
            if self._consecutive_failures >= self._max_consecutive_failures:
                return  # spawning itself failed repeatedly: the next pass gives up
        if not self.live and self._pending:
            self._give_up(f"no worker left and the restart limit ({self._max_restarts}) is reached; "
                          f"last error: {self._last_failure}")
        self._dispatch_idle()

    def _give_up(self, message: str) -> None:
        log.error("worker pool stopped: %s", message)
        self.terminate()
        self.error = PoolStopped(message, self._pending.snapshot())
