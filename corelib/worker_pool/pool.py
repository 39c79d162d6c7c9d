"""The parent's side: WorkerPool, which callers use, and its books on every worker process.

Only the parent keeps books; workers just run tasks and report (worker.py).
"""
from __future__ import annotations

import dataclasses
import enum
import logging
import multiprocessing
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Callable, Iterator

from corelib.errors import ErrorClass, classify
from corelib.task_queue import (
    STOP,
    EventMessage,
    Outbox,
    TaskDone,
    TaskQueue,
    TaskStarted,
    WorkerLog,
    WorkerNote,
    WorkerReady,
    WorkerStartFailed,
)
from corelib.tasks import Event, Task, TaskResult
from corelib.worker_pool.types import (
    PoolStopped,
    WorkerInfo,
    WorkerLost,
    WorkerSpec,
    WorkerState,
    resolve_factory,
)
from corelib.worker_pool.worker import _worker_main

log = logging.getLogger(__name__)

_MAX_WAIT = 1.0  # upper bound of one wait(): keeps Ctrl+C prompt on Windows; deaths still wake us at once


class KillReason(str, enum.Enum):
    """Why the parent killed a worker process; decides what becomes of the task it held."""

    TIMEOUT = "timeout"  # its task ran past task_timeout + abort_grace
    START_TIMEOUT = "start_timeout"  # not ready within task_timeout + abort_grace
    PROTOCOL = "protocol"  # its pipe broke, or it sent what the parent cannot read
    STOP = "stop"  # still running when stop() timed out
    TERMINATE = "terminate"  # terminate()

    def __str__(self) -> str:  # the bare word in log lines and error texts
        return self.value


@dataclass(eq=False)
class _Worker:
    """The parent's books on one worker process."""

    info: WorkerInfo
    process: BaseProcess
    tasks_out: Connection  # parent -> worker
    messages_in: Connection  # worker -> parent
    spawned: float  # monotonic
    ready: bool = False
    task: Task | None = None
    task_started: bool = False  # the worker confirmed it began run() on `task`
    since: float = 0.0  # monotonic: when `task` was handed over / started
    stop_sent: bool = False
    eof: bool = False
    kill_reason: KillReason | None = None  # set when the parent kills it
    start_error: str = ""
    start_failure_reported: bool = False

    @property
    def idle(self) -> bool:
        return self.ready and self.task is None and not self.stop_sent and not self.kill_reason


class WorkerPool:
    """N spawned workers, each with its own long-lived handler, fed one task at a time.

    Single consumer: results() drives everything; submit() may be called from any thread.
    Every submitted task ends up either with exactly one TaskResult from results(), or in the
    list stop() returns (never started).
    """

    def __init__(self, spec: WorkerSpec, workers: int, *, task_timeout: float | None = None,
                 abort_grace: float = 30.0, max_task_requeues: int = 2, max_restarts: int = 10,
                 max_consecutive_failures: int = 3,
                 on_worker_exit: Callable[[WorkerInfo], None] | None = None,
                 start_method: str = "spawn") -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if task_timeout is not None and task_timeout <= 0:
            raise ValueError("task_timeout must be positive or None")
        if abort_grace < 0 or max_task_requeues < 0 or max_restarts < 0 or max_consecutive_failures < 1:
            raise ValueError("abort_grace, max_task_requeues and max_restarts must be >= 0, "
                             "max_consecutive_failures >= 1")
        resolve_factory(spec.factory)  # a typo fails here, not as N worker start failures
        try:
            Outbox.encode(spec)
        except Exception as exc:
            raise TypeError(f"WorkerSpec must be picklable: {exc}") from exc
        self._spec = spec
        self._size = workers
        self._task_timeout = task_timeout
        self._abort_grace = abort_grace
        self._max_task_requeues = max_task_requeues
        self._max_restarts = max_restarts
        self._max_consecutive_failures = max_consecutive_failures
        self._on_worker_exit = on_worker_exit
        self._ctx = multiprocessing.get_context(start_method)

        self._lock = threading.RLock()
        self._pending = TaskQueue()
        self._unresolved: set[str] = set()
        self._outbox: deque[TaskResult | Event | WorkerLost] = deque()
        self._live: list[_Worker] = []
        self._all: list[_Worker] = []
        self._next_id = 1
        self._spawned = 0
        self._restarts = 0
        self._consecutive_failures = 0
        self._last_failure = ""
        self._started = False
        self._stopping = False
        self._cancel_pending = True
        self._closed = False
        self._error: PoolStopped | None = None
        self._log_level = logging.WARNING
        self._wake_r: Connection | None = None
        self._wake_w: Connection | None = None
        self._wake_pending = False

    # -- public API --

    def start(self) -> None:
        """Start all workers at once; they build their state in parallel."""
        with self._lock:
            if self._closed or self._stopping:
                raise RuntimeError("the pool was stopped")
            if self._started:
                return
            self._started = True
            self._log_level = logging.getLogger().getEffectiveLevel()
            self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
            for _ in range(self._size):
                self._spawn()

    def submit(self, task: Task) -> None:
        if not isinstance(task, Task):
            raise TypeError(f"submit() takes a Task, not {type(task).__name__}")
        try:
            Outbox.encode(task)
        except Exception as exc:
            raise TypeError(f"task {task.key!r} is not picklable: {exc}") from exc
        with self._lock:
            if self._stopping or self._closed:
                raise RuntimeError("the pool is stopping: no new tasks")
            if task.key in self._unresolved:
                raise ValueError(f"task {task.key!r} was already submitted and has no result yet")
            self._unresolved.add(task.key)
            self._pending.put(task)
            if self._started:
                self._dispatch_idle()
                self._wake()

    def results(self) -> Iterator[TaskResult | Event | WorkerLost]:
        """Yield results, events and lost workers until every submitted task has its result."""
        with self._lock:
            if not self._started and not self._closed:
                self.start()
        while True:
            with self._lock:
                item = self._outbox.popleft() if self._outbox else None
                if item is None:
                    if self._error is not None:
                        raise self._error
                    if self._closed or not self._unresolved:
                        return
                    self._check_health()
                    if self._error is not None or self._outbox:
                        continue
                    objects, timeout = self._wait_objects(), self._wait_timeout()
            if item is not None:
                yield item
                continue
            try:
                ready = wait(objects, timeout)
            except (OSError, ValueError):  # another thread closed the pool under us
                ready = []
            with self._lock:
                if not self._closed:
                    self._handle_ready(ready)
                    self._enforce_timeouts()

    def workers(self) -> list[WorkerInfo]:
        """Every worker this pool started, live or exited, oldest first (copies)."""
        with self._lock:
            return [dataclasses.replace(w.info, info=dict(w.info.info)) for w in self._all]

    def stop(self, *, cancel_pending: bool = True, timeout: float = 30.0) -> list[Task]:
        """Graceful: workers finish their current task (and, without cancel_pending, the queue) and exit.

        Returns the tasks that never started; workers still running after `timeout` are killed and
        their tasks get an INTERRUPTED result. Idempotent: a second call returns what is left (usually []).
        """
        cancelled: list[Task] = []
        with self._lock:
            if self._closed or not self._started:
                self._closed = True
                return self._take_pending()
            if not self._stopping:
                self._stopping = True
                self._cancel_pending = cancel_pending
                if cancel_pending:
                    cancelled = self._take_pending()
                log.info("stopping the pool: %d worker(s), %d task(s) %s", len(self._live),
                         len(cancelled) if cancel_pending else len(self._pending),
                         "cancelled" if cancel_pending else "left to finish")
                self._dispatch_idle()
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                remaining = deadline - time.monotonic()
                if not self._live or remaining <= 0 or self._closed:
                    break
                objects = self._wait_objects()
                wait_for = min(remaining, self._wait_timeout())
            try:
                ready = wait(objects, wait_for)
            except (OSError, ValueError):
                ready = []
            with self._lock:
                if not self._closed:
                    self._handle_ready(ready)
                    self._enforce_timeouts()
                    self._dispatch_idle()
        with self._lock:
            if self._live:
                log.warning("%d worker(s) did not stop within %g s: killing them", len(self._live), timeout)
                self._kill_all(KillReason.STOP)
            self._close()
            return cancelled + self._take_pending()

    def terminate(self) -> None:
        """Kill every worker now. Tasks they were running get an INTERRUPTED result; stop() returns the rest."""
        with self._lock:
            if self._closed:
                return
            self._stopping = True
            if self._live:
                log.warning("terminating %d worker(s)", len(self._live))
            self._kill_all(KillReason.TERMINATE)
            self._close()

    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.stop()
        else:
            self.terminate()

    # -- workers --

    def _spawn(self) -> None:
        worker_id = f"w{self._next_id}"
        self._next_id += 1
        self._spawned += 1
        tasks_in, tasks_out = self._ctx.Pipe(duplex=False)
        messages_in, messages_out = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=_worker_main, name=f"pool-{worker_id}", daemon=True,
            args=(worker_id, self._spec, tasks_in, messages_out, self._task_timeout, self._log_level))
        try:
            process.start()
        except Exception as exc:
            for conn in (tasks_in, tasks_out, messages_in, messages_out):
                conn.close()
            log.error("worker %s could not be started: %s", worker_id, exc)
            self._outbox.append(Event(action="worker_start_failed", worker_id=worker_id,
                                      outcome=classify(exc).value, detail=f"{type(exc).__name__}: {exc}"))
            self._note_failure(f"worker {worker_id} could not be started: {exc}")
            return
        finally:
            # The child holds its own copies now; ours would keep its pipes open after it dies.
            tasks_in.close()
            messages_out.close()
        worker = _Worker(WorkerInfo(worker_id, process.pid or 0), process, tasks_out, messages_in,
                         spawned=time.monotonic())
        self._live.append(worker)
        self._all.append(worker)
        log.debug("worker %s spawned (pid %s)", worker_id, process.pid)

    def _dispatch_idle(self) -> None:
        for worker in list(self._live):
            if not self._pending and not self._stopping:
                return
            self._dispatch(worker)

    def _dispatch(self, worker: _Worker) -> None:
        """Hand an idle worker its next task, or tell it to stop."""
        if not worker.idle:
            return
        if self._stopping and (self._cancel_pending or not self._pending):
            worker.stop_sent = True
            self._send(worker, STOP)
            return
        task = self._pending.pop()
        if task is None:
            return
        if not self._send(worker, task):
            self._pending.put_front(task)
            return
        worker.task, worker.task_started, worker.since = task, False, time.monotonic()
        worker.info.state, worker.info.task_key, worker.info.busy_since = WorkerState.BUSY, task.key, time.time()

    def _send(self, worker: _Worker, message: Task | None) -> bool:
        try:
            worker.tasks_out.send(message)
            return True
        except (OSError, ValueError) as exc:
            # Its pipe is broken: it is dying. Make sure, and let its sentinel report it.
            log.debug("worker %s: cannot send (%s)", worker.info.worker_id, exc)
            worker.kill_reason = worker.kill_reason or KillReason.PROTOCOL
            self._kill(worker)
            return False

    @staticmethod
    def _kill(worker: _Worker) -> None:
        try:
            worker.process.kill()
        except (OSError, ValueError, AttributeError):
            pass  # already gone

    def _kill_all(self, reason: KillReason) -> None:
        for worker in self._live:
            worker.kill_reason = worker.kill_reason or reason
            self._kill(worker)
        for worker in list(self._live):
            worker.process.join(10.0)
            self._handle_exit(worker)

    # -- the event loop --

    def _wait_objects(self) -> list[Any]:
        objects: list[Any] = [self._wake_r] if self._wake_r is not None else []
        for worker in self._live:
            if not worker.eof:
                objects.append(worker.messages_in)
            objects.append(worker.process.sentinel)
        return objects

    def _wait_timeout(self) -> float:
        timeout = _MAX_WAIT
        if self._task_timeout is not None:
            limit = self._task_timeout + self._abort_grace
            now = time.monotonic()
            for worker in self._live:
                if worker.kill_reason:
                    continue
                if worker.task is not None:
                    timeout = min(timeout, worker.since + limit - now)
                elif not worker.ready:
                    timeout = min(timeout, worker.spawned + limit - now)
        return max(0.0, timeout)

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
        for worker in list(self._live):
            if worker.messages_in in ready_set:
                self._drain(worker)
        for worker in list(self._live):
            if worker.process.sentinel in ready_set:
                self._handle_exit(worker)
        self._dispatch_idle()

    def _drain(self, worker: _Worker) -> None:
        while not worker.eof:
            try:
                if not worker.messages_in.poll(0):
                    return
                message = worker.messages_in.recv()
            except (EOFError, OSError):
                worker.eof = True
                return
            except Exception as exc:  # a message we cannot unpickle: the stream cannot be trusted
                log.error("worker %s sent a message the pool cannot read (%s): killing it",
                          worker.info.worker_id, exc)
                worker.eof = True
                worker.kill_reason = worker.kill_reason or KillReason.PROTOCOL
                self._kill(worker)
                return
            self._on_message(worker, message)

    def _on_message(self, worker: _Worker, message: object) -> None:
        wid = worker.info.worker_id
        if isinstance(message, EventMessage):
            self._outbox.append(message.event)
        elif isinstance(message, WorkerLog):
            self._relog(worker, message.record)
        elif isinstance(message, WorkerNote):
            worker.info.info.update(message.info)
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
            self._outbox.append(Event(action="worker_start_failed", worker_id=wid,
                                      outcome=message.error_class, detail=message.error))
        else:
            log.warning("worker %s sent an unknown message %r: ignored", wid, type(message).__name__)

    @staticmethod
    def _relog(worker: _Worker, record: dict[str, Any]) -> None:
        rec = logging.makeLogRecord(record)
        logger = logging.getLogger(rec.name)
        if logger.isEnabledFor(rec.levelno):
            rec.msg = f"[{worker.info.worker_id}] {rec.msg}"
            logger.handle(rec)

    def _finish(self, result: TaskResult) -> None:
        self._unresolved.discard(result.key)
        self._outbox.append(result)

    def _enforce_timeouts(self) -> None:
        """In-worker abort did not bring the worker back (or it never got ready): kill it."""
        if self._task_timeout is None:
            return
        limit = self._task_timeout + self._abort_grace
        now = time.monotonic()
        for worker in self._live:
            if worker.kill_reason:
                continue
            if worker.task is not None and now - worker.since > limit:
                log.warning("worker %s (pid %d) still busy on task %s after %.1f s (task_timeout %g s + "
                            "abort_grace %g s): killing it", worker.info.worker_id, worker.info.pid,
                            worker.task.key, now - worker.since, self._task_timeout, self._abort_grace)
                worker.kill_reason = KillReason.TIMEOUT
                self._kill(worker)
            elif not worker.ready and now - worker.spawned > limit:
                log.warning("worker %s (pid %d) not ready after %.1f s: killing it",
                            worker.info.worker_id, worker.info.pid, now - worker.spawned)
                worker.kill_reason = KillReason.START_TIMEOUT
                self._kill(worker)

    def _handle_exit(self, worker: _Worker) -> None:
        """The worker process is gone: settle its task, tell the app, count the failure."""
        self._drain(worker)  # what it sent before dying is still in the pipe
        worker.process.join(5.0)
        if worker.process.exitcode is None:  # not expected: the sentinel said it exited
            self._kill(worker)
            worker.process.join(5.0)
        exitcode = worker.process.exitcode
        for conn in (worker.tasks_out, worker.messages_in):
            conn.close()
        self._live.remove(worker)
        wid, pid, task = worker.info.worker_id, worker.info.pid, worker.task
        worker.task = None
        now = time.time()

        if worker.kill_reason in (KillReason.STOP, KillReason.TERMINATE):
            worker.info.state = WorkerState.STOPPED
            if task is not None and worker.task_started:
                self._finish(TaskResult(
                    key=task.key, status="INTERRUPTED",
                    reason="STOPPED" if worker.kill_reason is KillReason.STOP else "TERMINATED",
                    error=f"worker {wid} was killed by {worker.kill_reason}() while running this task",
                    error_class=ErrorClass.TRANSIENT.value, attempts=task.prior_attempts + 1,
                    started=worker.info.busy_since, finished=now, worker_id=wid))
            elif task is not None:
                self._pending.put_front(task)
            log.info("worker %s (pid %d) killed by %s() (exit code %s)%s", wid, pid, worker.kill_reason, exitcode,
                     f" while running task {task.key}" if task is not None else "")
        elif worker.stop_sent and task is None and not worker.kill_reason:
            worker.info.state = WorkerState.STOPPED
            log.info("worker %s (pid %d) exited (exit code %s) after %d task(s)", wid, pid, exitcode, worker.info.done)
        elif not worker.ready:
            worker.info.state = WorkerState.DEAD
            error = worker.start_error or (
                f"not ready within {self._task_timeout + self._abort_grace:g} s"  # type: ignore[operator]
                if worker.kill_reason is KillReason.START_TIMEOUT
                else f"exited with code {exitcode} before it was ready")
            if not worker.start_failure_reported:
                self._outbox.append(Event(action="worker_start_failed", worker_id=wid,
                                          outcome=ErrorClass.TRANSIENT.value, detail=error))
            log.error("worker %s (pid %d) failed to start: %s", wid, pid, error)
            self._note_failure(f"worker {wid} failed to start: {error}")
        else:
            worker.info.state = WorkerState.DEAD
            cause = (f"was killed after running task {task.key} longer than task_timeout + abort_grace"
                     if worker.kill_reason is KillReason.TIMEOUT and task is not None
                     else f"died with exit code {exitcode}")
            requeued, outcome, final = False, "", None
            if task is not None and not worker.task_started:
                self._pending.put_front(task)  # handed over but never begun: no attempt spent
                requeued, outcome = True, f"; task {task.key} had not started: requeued"
            elif task is not None and task.prior_attempts + 1 <= self._max_task_requeues:
                self._pending.put(dataclasses.replace(task, prior_attempts=task.prior_attempts + 1))
                requeued = True
                outcome = (f" while running task {task.key}; requeued "
                           f"(attempt {task.prior_attempts + 2} of {self._max_task_requeues + 1})")
            elif task is not None:
                reason = "TIMEOUT" if worker.kill_reason is KillReason.TIMEOUT else "WORKER_DIED"
                final = TaskResult(
                    key=task.key, status="FAILED", reason=reason,
                    error=f"worker {wid} (pid {pid}) {cause}; attempt {task.prior_attempts + 1}, no requeue left",
                    error_class=ErrorClass.TRANSIENT.value, attempts=task.prior_attempts + 1,
                    started=worker.info.busy_since, finished=now, worker_id=wid)
                outcome = f" while running task {task.key}; task failed ({reason})"
            self._outbox.append(WorkerLost(wid, pid, exitcode, task.key if task else "", requeued,
                                           dict(worker.info.info)))
            if final is not None:
                self._finish(final)
            log.warning("worker %s (pid %d) %s%s", wid, pid, cause, outcome)
            self._note_failure(f"worker {wid} (pid {pid}) {cause}")
        self._call_exit_hook(worker)

    def _call_exit_hook(self, worker: _Worker) -> None:
        if self._on_worker_exit is None:
            return
        try:
            self._on_worker_exit(dataclasses.replace(worker.info, info=dict(worker.info.info)))
        except Exception:
            log.exception("on_worker_exit failed for worker %s", worker.info.worker_id)

    def _note_failure(self, what: str) -> None:
        self._consecutive_failures += 1
        self._last_failure = what

    def _check_health(self) -> None:
        """Give up on repeated deaths; otherwise start replacements while tasks wait."""
        if self._error is not None or self._stopping or self._closed:
            return
        work_left = bool(self._pending) or any(w.task is not None for w in self._live)
        if not work_left:
            return
        if self._consecutive_failures >= self._max_consecutive_failures:
            self._give_up(f"{self._consecutive_failures} workers in a row died before finishing a task; "
                          f"last error: {self._last_failure}")
            return
        while len(self._live) < self._size and self._pending and self._spawned < self._size + self._max_restarts:
            self._restarts += 1
            log.info("starting replacement worker w%d (restart %d of %d)", self._next_id, self._restarts,
                     self._max_restarts)
            self._spawn()
            if self._consecutive_failures >= self._max_consecutive_failures:
                return  # spawning itself failed repeatedly: the next pass gives up
        if not self._live and self._pending:
            self._give_up(f"no worker left and the restart limit ({self._max_restarts}) is reached; "
                          f"last error: {self._last_failure}")
        self._dispatch_idle()

    def _give_up(self, message: str) -> None:
        log.error("worker pool stopped: %s", message)
        self.terminate()
        self._error = PoolStopped(message, self._pending.snapshot())

    def _take_pending(self) -> list[Task]:
        tasks = self._pending.drain()
        for task in tasks:
            self._unresolved.discard(task.key)
        return tasks

    def _close(self) -> None:
        self._closed = True
        for conn in (self._wake_r, self._wake_w):
            if conn is not None:
                conn.close()
        self._wake_r = self._wake_w = None
        for worker in self._all:
            for conn in (worker.tasks_out, worker.messages_in):
                conn.close()

