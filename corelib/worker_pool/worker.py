"""The half of the pool that runs inside each spawned worker process.

_worker_main is the process's entry point (spawned children import it by its module path, so it stays a
module-level function). It builds the handler once through the spec's factory, then runs one task at a
time as the parent hands them over, and reports back through an Outbox. Around the handler it keeps:
a watchdog that aborts a task that went task_timeout without progress (no event of its own), log forwarding to the parent, and an exit
guard that turns SIGTERM or the parent's death into an orderly stop that closes the handler.
"""
from __future__ import annotations

import _thread
import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

import psutil

from pobatch.corelib.errors import ErrorClass, classify, reason_of
from pobatch.corelib.worker_pool.task_queue import (
    STOP,
    EventMessage,
    Outbox,
    TaskDone,
    TaskStarted,
    WorkerLog,
    WorkerNote,
    WorkerReady,
    WorkerStartFailed,
)
from pobatch.corelib.worker_pool.tasks import Event, PoolEvent, Task, TaskResult
from pobatch.corelib.worker_pool.types import Handler, WorkerSpec, result_from_exception

log = logging.getLogger(__name__)


class WorkerContext:
    """Handed to the factory inside the worker: its id, and the way to talk to the parent."""

    def __init__(self, worker_id: str, outbox: Outbox) -> None:
        self.worker_id = worker_id
        self._outbox = outbox
        self.on_progress: Callable[[str], None] = lambda key: None  # the watchdog's, once it exists

    def emit(self, event: Event) -> None:
        """Send a timeline/progress event to the parent; never blocks the task. An event of the running
        task is its progress: the task's time limit counts from the last one."""
        event.worker_id = self.worker_id
        if event.task_key:
            self.on_progress(event.task_key)
        try:
            self._outbox.put(EventMessage(event))
        except Exception as exc:  # an unpicklable field must not fail the task
            log.warning("event %r dropped: cannot be sent to the parent (%s)", event.action, exc)

    def note(self, notes: Any) -> None:
        """Tell the parent facts it needs to clean up after this worker dies (e.g. its profile dir).

        `notes` is a frozen, picklable dataclass the application defines; each note replaces the last,
        so note the whole picture (dataclasses.replace of the previous one to add a fact)."""
        self._outbox.put(WorkerNote(self.worker_id, notes))  # unpicklable: raise, cleanup depends on it


class _Watchdog:
    """Calls handler.abort() from its own thread once a task has gone task_timeout without progress
    (an event of its own): a PO with 300 files may run long, a stuck one is still cut off.

    abort() runs under the lock, so end() returns only after an abort in progress has finished:
    the next task never starts while the previous one's browser is still being killed.
    """

    def __init__(self, abort: Callable[[], None] | None, timeout: float, ctx: WorkerContext) -> None:
        self._abort = abort
        self._timeout = timeout
        self._ctx = ctx
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._key = ""
        self._fired = False
        self._closed = False
        self._thread = threading.Thread(target=self._watch, name="pool-watchdog", daemon=True)
        self._thread.start()

    def begin(self, key: str) -> None:
        with self._cond:
            self._key, self._fired = key, False
            self._deadline = time.monotonic() + self._timeout
            self._cond.notify()

    def touch(self, key: str) -> None:
        """The task `key` made progress: its limit counts from now."""
        with self._cond:
            if self._deadline is not None and key == self._key:
                self._deadline = time.monotonic() + self._timeout

    def end(self) -> bool:
        """Stop watching; True when this task was aborted."""
        with self._cond:
            self._deadline = None
            fired, self._fired = self._fired, False
            return fired

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(5.0)

    def _watch(self) -> None:
        with self._cond:
            while not self._closed:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                self._deadline, self._fired = None, True
                log.warning("task %s made no progress for %g s: aborting it", self._key, self._timeout)
                self._ctx.emit(Event(action=PoolEvent.TASK_TIMEOUT, task_key=self._key, outcome="aborted",
                                     detail=f"no progress for {self._timeout:g} s"))
                if self._abort is not None:
                    try:
                        self._abort()
                    except Exception:
                        log.exception("handler.abort() failed")


class _ForwardLogs(logging.Handler):
    """Spawned workers start with no logging config: send records to the parent's handlers instead."""

    def __init__(self, outbox: Outbox, worker_id: str) -> None:
        super().__init__()
        self._outbox = outbox
        self._worker_id = worker_id
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = {k: v for k, v in record.__dict__.items() if isinstance(v, (str, int, float, bool, type(None)))}
            data["msg"] = record.getMessage()
            data["args"] = None
            if record.exc_info and not record.exc_text:
                data["exc_text"] = self._formatter.formatException(record.exc_info)
            self._outbox.put(WorkerLog(self._worker_id, data))
        except Exception:
            self.handleError(record)


class _WorkerExit(BaseException):
    """Raised in a worker's main thread when it must stop now (its parent died, or SIGTERM).

    A BaseException, so no `except Exception` in a handler swallows it: the task unwinds through its
    finally clauses and the worker closes its handler on the way out.
    """


class _ExitGuard:
    """Turns SIGTERM, and the death of the parent, into one _WorkerExit in the main thread.

    Never during the final cleanup (closing=True): a second signal there would leave a browser or a
    profile clone behind, which is what the exit is for.
    """

    def __init__(self) -> None:
        self.closing = False
        self._fired = False
        self._reason = "SIGTERM"
        self._main_ident = threading.main_thread().ident

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.closing or self._fired:
            return
        self._fired = True
        raise _WorkerExit(self._reason)

    def interrupt_main(self, reason: str) -> None:
        """From another thread: raise _WorkerExit in the main thread, even inside a blocking call."""
        if self.closing or self._fired:
            return
        self._reason = reason
        if hasattr(signal, "pthread_kill") and self._main_ident is not None:
            signal.pthread_kill(self._main_ident, signal.SIGTERM)  # a real signal: wakes sleep(), recv()
        else:  # Windows: simulated; a WebDriver call blocked on a dead browser returns after abort()
            _thread.interrupt_main(signal.SIGTERM)


def _parent_identity() -> tuple[Any, float] | None:
    """(the parent as multiprocessing knows it, its create time); None outside a spawned worker."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return None
    try:
        return parent, psutil.Process(parent.pid).create_time()
    except psutil.Error:
        return parent, 0.0


def _parent_alive(pid: int, create_time: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.create_time() == create_time and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _watch_parent(guard: _ExitGuard, get_abort: Callable[[], Callable[[], None] | None]) -> None:
    """Thread body: wait for the parent to die, then stop the worker: kill the browser, exit.

    An orphaned worker would go on working on a task nobody will record, holding a browser and a
    profile clone, possibly while a rerun of the same batch starts. The parent's sentinel wakes us
    at once; on POSIX it is a pipe that also reads as closed if the parent merely dropped its copy,
    so the death is confirmed by pid and create time, and polled from then on.
    """
    identity = _parent_identity()
    if identity is None:
        return
    parent, created = identity
    try:
        wait([parent.sentinel])
    except (OSError, ValueError):
        pass
    while _parent_alive(parent.pid, created):
        time.sleep(1.0)
    if guard.closing:
        return
    abort = get_abort()
    if abort is not None:
        try:
            abort()  # a WebDriver call blocked on the browser returns now
        except Exception:
            pass
    guard.interrupt_main(f"the parent process (pid {parent.pid}) is gone")


def _run_task(handler: Handler, task: Task, ctx: WorkerContext, watchdog: _Watchdog | None,
              task_timeout: float | None) -> TaskResult:
    started = time.time()
    aborted = False
    try:
        if watchdog is not None:
            watchdog.begin(task.key)
        try:
            result = handler.run(task)
        finally:
            if watchdog is not None:
                aborted = watchdog.end()
    except Exception as exc:
        log.info("task %s failed: %s: %s", task.key, type(exc).__name__, exc)
        log.debug("task %s traceback", task.key, exc_info=True)
        result = result_from_exception(task, exc, worker_id=ctx.worker_id, started=started)
        if aborted:
            result.reason = "TIMEOUT"
            result.error_class = ErrorClass.TRANSIENT.value
            result.error = f"made no progress for {task_timeout:g} s and was aborted: {result.error}"
        return result
    if not isinstance(result, TaskResult):
        return TaskResult(key=task.key, status="FAILED", reason="BAD_HANDLER_RESULT",
                          error=f"handler returned {type(result).__name__}, not a TaskResult",
                          error_class=ErrorClass.FATAL.value, attempts=task.prior_attempts + 1,
                          started=started, finished=time.time(), worker_id=ctx.worker_id)
    if result.key != task.key:
        log.warning("handler returned a result for %r while running %r: key corrected", result.key, task.key)
        result.key = task.key
    result.worker_id = result.worker_id or ctx.worker_id
    result.started = result.started or started
    result.finished = result.finished or time.time()
    return result


def _worker_main(worker_id: str, spec: WorkerSpec, tasks_in: Connection, messages_out: Connection,
                 task_timeout: float | None, log_level: int) -> None:
    """Entry point of a worker process: build the handler once, then run tasks until told to stop."""
    # Ctrl+C reaches the whole console/process group: the parent alone decides how to stop. On POSIX
    # the worker also leaves the group, so the terminal's Ctrl+C does not kill the browsers it starts
    # in the middle of a task either (Windows: the parent stops them through the pool).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(os, "setpgid"):
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
    guard = _ExitGuard()
    guard.install()
    outbox = Outbox(messages_out)
    root = logging.getLogger()
    root.handlers.clear()
    root.addHandler(_ForwardLogs(outbox, worker_id))
    root.setLevel(log_level)
    ctx = WorkerContext(worker_id, outbox)
    handler: Any = None
    threading.Thread(target=_watch_parent, args=(guard, lambda: getattr(handler, "abort", None)),
                     name="pool-parent-watch", daemon=True).start()

    t0 = time.monotonic()
    try:
        handler = spec.factory(ctx, spec.config)
    except BaseException as exc:
        guard.closing = True
        # One line for the person at the console; the traceback only where a developer looks.
        log.error("the worker could not start: %s", str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)
        log.debug("factory %s failed", getattr(spec.factory, "__qualname__", spec.factory), exc_info=True)
        outbox.put_and_wait(WorkerStartFailed(worker_id, os.getpid(), f"{type(exc).__name__}: {exc}",
                                              classify(exc).value, reason_of(exc)), timeout=10.0)
        outbox.close()
        tasks_in.close()
        raise SystemExit(1) from None

    watchdog: _Watchdog | None = None
    try:  # from here on, every way out closes the handler
        outbox.put(WorkerReady(worker_id, os.getpid(), time.monotonic() - t0))
        watchdog = _Watchdog(getattr(handler, "abort", None), task_timeout, ctx) if task_timeout else None
        if watchdog is not None:
            ctx.on_progress = watchdog.touch
        while True:
            try:
                task = tasks_in.recv()
            except (EOFError, OSError):
                log.warning("lost the connection to the parent: exiting")
                break
            if task is STOP:
                break
            # Flushed before run(): if this process dies from here on, the parent counts an attempt.
            outbox.put_and_wait(TaskStarted(worker_id, task.key, time.time()))
            result = _run_task(handler, task, ctx, watchdog, task_timeout)
            try:
                outbox.put(TaskDone(worker_id, result))
            except Exception as exc:
                outbox.put(TaskDone(worker_id, TaskResult(
                    key=task.key, status="FAILED", reason="UNPICKLABLE_RESULT",
                    error=f"result cannot be sent to the parent: {exc}", error_class=ErrorClass.FATAL.value,
                    attempts=result.attempts, started=result.started, finished=result.finished,
                    worker_id=worker_id)))
    except _WorkerExit as exc:
        log.warning("stopping at once: %s", exc)
    finally:
        guard.closing = True
        if watchdog is not None:
            watchdog.close()
        close = getattr(handler, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                log.exception("handler.close() failed")
        outbox.close()
        tasks_in.close()
