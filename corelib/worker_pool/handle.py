"""The parent's handle on one worker process: its two pipes, its sentinel, and the task it holds.

Only input and output with that one process live here (start it, send it a task, read what it sent,
kill it, reap it); what to do about any of it is the manager's (manager.py).
"""
from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any, Iterator

from pobatch.corelib.worker_pool.tasks import Task
from pobatch.corelib.worker_pool.types import WorkerInfo, WorkerSpec
from pobatch.corelib.worker_pool.worker import _worker_main

log = logging.getLogger(__name__)


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
class WorkerHandle:
    """One worker process as the parent sees it; `info` is what callers get a copy of."""

    info: WorkerInfo
    process: BaseProcess
    tasks_out: Connection  # parent -> worker
    messages_in: Connection  # worker -> parent
    spawned: float  # monotonic
    ready: bool = False
    task: Task | None = None
    expects: str | None = None  # the key of the task it was told comes next (Task.up_next)
    task_started: bool = False  # the worker confirmed it began run() on `task`
    since: float = 0.0  # monotonic: when `task` was handed over / started
    last_progress: float = 0.0  # monotonic: the running task's last event (its limit counts from it)
    stop_sent: bool = False
    eof: bool = False
    kill_reason: KillReason | None = None  # set when the parent kills it
    start_error: str = ""
    start_failure_reported: bool = False

    @property
    def progress_since(self) -> float:
        """Where the running task's time limit counts from: its start, or its last event."""
        return max(self.since, self.last_progress)

    @classmethod
    def spawn(cls, mp_context: BaseContext, worker_id: str, spec: WorkerSpec, task_timeout: float | None,
              log_level: int) -> WorkerHandle:
        """Start the process on _worker_main (spawned children import it by its module path).

        Raises what Process.start() raises, with every pipe closed.
        """
        tasks_in, tasks_out = mp_context.Pipe(duplex=False)
        messages_in, messages_out = mp_context.Pipe(duplex=False)
        process = mp_context.Process(
            target=_worker_main, name=f"pool-{worker_id}", daemon=True,
            args=(worker_id, spec, tasks_in, messages_out, task_timeout, log_level))
        try:
            process.start()
        except Exception:
            for conn in (tasks_out, messages_in):
                conn.close()
            raise
        finally:
            # The child holds its own copies now; ours would keep its pipes open after it dies.
            tasks_in.close()
            messages_out.close()
        return cls(WorkerInfo(worker_id, process.pid or 0), process, tasks_out, messages_in,
                   spawned=time.monotonic())

    @property
    def worker_id(self) -> str:
        return self.info.worker_id

    @property
    def idle(self) -> bool:
        return self.ready and self.task is None and not self.stop_sent and not self.kill_reason

    def wait_objects(self) -> list[Any]:
        """What wakes the parent for this worker: a message on its pipe, or its death."""
        return ([] if self.eof else [self.messages_in]) + [self.process.sentinel]

    def send(self, message: Task | None) -> bool:
        """Hand it a task (or STOP); False when its pipe is broken, and then it is killed."""
        try:
            self.tasks_out.send(message)
            return True
        except (OSError, ValueError) as exc:
            # Its pipe is broken: it is dying. Make sure, and let its sentinel report it.
            log.debug("worker %s: cannot send (%s)", self.worker_id, exc)
            self.kill(KillReason.PROTOCOL)
            return False

    def kill(self, reason: KillReason | None = None) -> None:
        """Kill the process; the first reason given is the one that counts."""
        self.kill_reason = self.kill_reason or reason
        try:
            self.process.kill()
        except (OSError, ValueError, AttributeError):
            pass  # already gone

    def messages(self) -> Iterator[object]:
        """What it has sent so far, in order, without blocking; marks eof when its end is closed."""
        while not self.eof:
            try:
                if not self.messages_in.poll(0):
                    return
                message = self.messages_in.recv()
            except (EOFError, OSError):
                self.eof = True
                return
            except Exception as exc:  # a message we cannot unpickle: the stream cannot be trusted
                log.error("worker %s sent a message the pool cannot read (%s): killing it", self.worker_id, exc)
                self.eof = True
                self.kill(KillReason.PROTOCOL)
                return
            yield message

    def relog(self, record: dict[str, Any]) -> None:
        """A log record from the worker goes to the parent's handlers, tagged with its id."""
        rec = logging.makeLogRecord(record)
        logger = logging.getLogger(rec.name)
        if logger.isEnabledFor(rec.levelno):
            rec.msg = f"[{self.worker_id}] {rec.msg}"
            logger.handle(rec)

    def reap(self) -> int | None:
        """The process has exited (its sentinel said so): collect it, close our pipes; its exit code."""
        self.process.join(5.0)
        if self.process.exitcode is None:  # not expected: the sentinel said it exited
            self.kill()
            self.process.join(5.0)
        self.close_pipes()
        return self.process.exitcode

    def close_pipes(self) -> None:
        for conn in (self.tasks_out, self.messages_in):
            conn.close()
