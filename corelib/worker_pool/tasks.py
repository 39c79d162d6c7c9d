"""What crosses a process boundary: plain, picklable dataclasses."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class PoolEvent(str, Enum):
    """What the engine itself puts on the timeline (the application names its own events)."""

    TASK_TIMEOUT = "task_timeout"  # a task ran past its time: the pool aborted it
    WORKER_START_FAILED = "worker_start_failed"  # a worker could not build its handler
    WORKER_LOST = "worker_lost"  # a worker died with a task in hand


@dataclass(frozen=True)
class Task:
    """One unit of work. key is unique within a batch; payload is the application's."""

    key: str
    payload: dict[str, Any] = field(default_factory=dict)
    prior_attempts: int = 0  # attempts already spent (e.g. on a worker that died)
    # Advisory: the task this worker will most likely be given next, so it can prepare (load its page
    # ahead). It may still go to another worker; the worker that gets it runs it all the same.
    up_next: Task | None = None


@dataclass
class TaskResult:
    """What a worker hands back for one task, success or not. Never raised."""

    key: str
    status: str
    reason: str = ""
    error: str = ""
    error_class: str = ""  # ErrorClass value, or "" when the task succeeded
    attempts: int = 1
    started: float = 0.0
    finished: float = 0.0
    worker_id: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return max(0.0, self.finished - self.started)


@dataclass
class Event:
    """A timeline entry: what one worker did in one window at one moment."""

    action: str  # an event-name enum's value (PoolEvent, or the application's): given as the member
    task_key: str = ""
    worker_id: str = ""
    window: str = "main"
    url: str = ""
    outcome: str = ""
    detail: str = ""
    attempt: int = 0
    ts: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        # Kept as the plain value: it is pickled, stored and shown, and compares equal to its member.
        if isinstance(self.action, Enum):
            self.action = self.action.value
