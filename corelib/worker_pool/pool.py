"""WorkerPool: what callers use. It checks their input, holds the lock, and runs the wait loop.

The books on every worker and the decisions about them (dispatch, deaths, requeues, restarts) are
the manager's (manager.py); the processes' own side is worker.py.
"""
from __future__ import annotations

import logging
import threading
import time
from multiprocessing.connection import wait
from typing import Any, Callable, Iterator

from pobatch.corelib.worker_pool.task_queue import Outbox
from pobatch.corelib.worker_pool.tasks import Task
from pobatch.corelib.worker_pool.handle import KillReason
from pobatch.corelib.worker_pool.manager import Output, PoolLimits, PoolManager
from pobatch.corelib.worker_pool.types import WorkerInfo, WorkerSpec

log = logging.getLogger(__name__)


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
        limits = PoolLimits(workers, task_timeout, abort_grace, max_task_requeues, max_restarts,
                            max_consecutive_failures)
        _check_factory(spec.factory)  # fails here, not as N worker start failures
        try:
            Outbox.encode(spec)
        except Exception as exc:
            raise TypeError(f"WorkerSpec must be picklable: {exc}") from exc
        self._lock = threading.RLock()
        self._manager = PoolManager(spec, limits, on_worker_exit, start_method)

    def start(self) -> None:
        """Start all workers at once; they build their state in parallel."""
        with self._lock:
            self._manager.start(logging.getLogger().getEffectiveLevel())

    def submit(self, task: Task) -> None:
        if not isinstance(task, Task):
            raise TypeError(f"submit() takes a Task, not {type(task).__name__}")
        try:
            Outbox.encode(task)
        except Exception as exc:
            raise TypeError(f"task {task.key!r} is not picklable: {exc}") from exc
        with self._lock:
            self._manager.add(task)

    def results(self) -> Iterator[Output]:
        """Yield results, events and lost workers until every submitted task has its result."""
        manager = self._manager
        with self._lock:
            if not manager.started and not manager.closed:
                self.start()
        while True:
            with self._lock:
                item = manager.next_output()  # raises PoolStopped when the pool gave up
                if item is None:
                    if manager.settled:
                        return
                    objects, timeout = manager.wait_objects(), manager.wait_timeout()
            if item is not None:
                yield item
                continue
            self._wait_and_pump(objects, timeout)

    def workers(self) -> list[WorkerInfo]:
        """Every worker this pool started, live or exited, oldest first (copies)."""
        with self._lock:
            return self._manager.worker_infos()

    def stop(self, *, cancel_pending: bool = True, timeout: float = 30.0) -> list[Task]:
        """Graceful: workers finish their current task (and, without cancel_pending, the queue) and exit.

        Returns the tasks that never started; workers still running after `timeout` are killed and
        their tasks get an INTERRUPTED result. Idempotent: a second call returns what is left (usually []).
        """
        manager = self._manager
        with self._lock:
            if manager.closed or not manager.started:
                manager.closed = True
                return manager.take_pending()
            cancelled = manager.begin_stop(cancel_pending)
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                remaining = deadline - time.monotonic()
                if not manager.live or remaining <= 0 or manager.closed:
                    break
                objects = manager.wait_objects()
                wait_for = min(remaining, manager.wait_timeout())
            self._wait_and_pump(objects, wait_for)
        with self._lock:
            if manager.live:
                log.warning("%d worker(s) did not stop within %g s: killing them", len(manager.live), timeout)
                manager.kill_all(KillReason.STOP)
            manager.close()
            return cancelled + manager.take_pending()

    def terminate(self) -> None:
        """Kill every worker now. Tasks they were running get an INTERRUPTED result; stop() returns the rest."""
        with self._lock:
            self._manager.terminate()

    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.stop()
        else:
            self.terminate()

    def _wait_and_pump(self, objects: list[Any], timeout: float) -> None:
        """Sleep, without the lock, until a worker writes or dies, submit() wakes us, or `timeout`."""
        try:
            ready = wait(objects, timeout)
        except (OSError, ValueError):  # another thread closed the pool under us
            ready = []
        with self._lock:
            self._manager.pump(ready)


def _check_factory(factory: object) -> None:
    """A factory every worker can build its handler with: a function defined at module level (spawn
    pickles a function by its module and name; a lambda or a nested function reaches no worker)."""
    if not callable(factory):
        raise TypeError(f"WorkerSpec.factory must be a function, not {type(factory).__name__}")
    name = getattr(factory, "__qualname__", "")
    if "<" in name:
        raise ValueError(f"WorkerSpec.factory {name} is not defined at module level; expected a function a "
                         "worker process can import by name")
