"""The protocol between the worker pool (parent) and its workers: the task queue and the messages.

Why not one multiprocessing.Queue that every worker reads: its reader holds a lock shared by all
workers while it blocks in get(). A worker killed while waiting there (OOM killer, a user, a crash)
never releases that lock, and every other worker then waits forever. And a task a worker has taken
from such a queue but not yet announced is lost with the worker, invisibly. So the queue lives in
the parent (TaskQueue) and workers *pull*: a worker says it is idle (WorkerReady, then each
TaskDone), the parent hands it exactly one task on that worker's own pipe. Distribution stays
dynamic (whoever is free gets the next task), and the parent always knows which worker holds which
task, so a dead worker's task is never lost and never doubled.

Wire format: parent -> worker: a Task, or STOP (None). Worker -> parent: the message dataclasses
below, in order, through the worker's Outbox.
"""
from __future__ import annotations

import collections
import itertools
import queue
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any, Collection

from pobatch.corelib.worker_pool.tasks import Event, Task, TaskResult

STOP = None  # parent -> worker: finish, close the handler, exit


# ---- worker -> parent messages ------------------------------------------------------------------

@dataclass(frozen=True)
class WorkerMessage:
    """What every message from a worker carries: who sent it (the parent routes by it)."""

    worker_id: str


@dataclass(frozen=True)
class WorkerReady(WorkerMessage):
    """The factory returned: the worker holds its long-lived state and wants its first task."""

    pid: int
    start_seconds: float


@dataclass(frozen=True)
class WorkerStartFailed(WorkerMessage):
    """The factory raised; the worker exits right after sending this."""

    pid: int
    error: str
    error_class: str
    reason: str


@dataclass(frozen=True)
class TaskStarted(WorkerMessage):
    """Sent, and flushed, before run(): if the worker dies later, this task had an attempt."""

    task_key: str
    ts: float


@dataclass(frozen=True)
class TaskDone(WorkerMessage):
    """The result of the current task; also means "idle, send the next one"."""

    result: TaskResult


@dataclass(frozen=True)
class EventMessage:
    event: Event


@dataclass(frozen=True)
class WorkerNote(WorkerMessage):
    """Facts about the worker the parent needs after a crash (e.g. its profile dir): the whole picture,
    which replaces the previous note."""

    notes: Any


@dataclass(frozen=True)
class WorkerLog(WorkerMessage):
    """A log record from the worker, re-logged in the parent: spawned children have no handlers."""

    record: dict[str, Any]


# ---- parent side: the queue of tasks waiting for an idle worker ----------------------------------

class TaskQueue:
    """FIFO of tasks not yet handed to a worker. Owned by the parent alone, so it can be drained."""

    def __init__(self) -> None:
        self._tasks: collections.deque[Task] = collections.deque()

    def put(self, task: Task) -> None:
        """New and requeued tasks go to the back, so a poison task does not starve the rest."""
        self._tasks.append(task)

    def put_front(self, task: Task) -> None:
        """A task handed to a worker that never started it goes back where it was."""
        self._tasks.appendleft(task)

    def pop(self, expected: str | None = None, spoken_for: Collection[str] = ()) -> Task | None:
        """The next task for a worker: the one it was told comes next if that is still waiting, else
        the first that no other worker was told comes next, else the first."""
        if not self._tasks:
            return None
        for key in (expected,) if expected else ():
            for i, task in enumerate(itertools.islice(self._tasks, len(spoken_for) + 8)):
                if task.key == key:
                    del self._tasks[i]
                    return task
        free = self._first_free(spoken_for)
        if free is not None:
            self._tasks.remove(free)
            return free
        return self._tasks.popleft()

    def peek_free(self, spoken_for: Collection[str] = ()) -> Task | None:
        """The first waiting task no worker was told comes next: what a worker may expect after its own."""
        return self._first_free(spoken_for)

    def _first_free(self, spoken_for: Collection[str]) -> Task | None:
        # Spoken-for tasks sit at the front (each worker expects one), so the scan is short.
        return next((t for t in self._tasks if t.key not in spoken_for), None)

    def snapshot(self) -> list[Task]:
        return list(self._tasks)

    def drain(self) -> list[Task]:
        tasks = list(self._tasks)
        self._tasks.clear()
        return tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def __bool__(self) -> bool:
        return bool(self._tasks)


# ---- worker side: one ordered, non-blocking way out ----------------------------------------------

class Outbox:
    """Everything a worker sends goes through here, in order, written by one thread.

    put() never blocks the caller (events come from the task thread and the watchdog thread);
    put_and_wait() returns once the bytes are in the pipe, where they survive the worker's death.
    Messages are pickled in the caller's thread so an unpicklable one fails where it was made.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._queue: queue.SimpleQueue[tuple[bytes, threading.Event | None] | None] = queue.SimpleQueue()
        self._broken = False
        self._thread = threading.Thread(target=self._pump, name="pool-outbox", daemon=True)
        self._thread.start()

    @staticmethod
    def encode(message: object) -> bytes:
        return bytes(ForkingPickler.dumps(message))

    def put(self, message: object) -> None:
        self._queue.put((self.encode(message), None))

    def put_and_wait(self, message: object, timeout: float | None = None) -> bool:
        done = threading.Event()
        self._queue.put((self.encode(message), done))
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued (bounded: a parent that stopped reading must not hold us forever)."""
        self._queue.put(None)
        self._thread.join(timeout)
        try:
            self._conn.close()
        except OSError:
            pass

    def _pump(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            data, done = item
            try:
                if not self._broken:
                    self._conn.send_bytes(data)
            except (OSError, ValueError):
                # The parent is gone. Nothing to tell it; the task loop notices on its next recv().
                self._broken = True
            finally:
                if done is not None:
                    done.set()
