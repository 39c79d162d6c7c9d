"""Handlers for tests/test_worker_pool.py. A module of its own so spawned workers can import it.

Each task's payload says what to do ("do": ok | sleep | raise | kill | kill_once | hang | hang_ignore),
so one handler covers every scenario without a browser.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from pobatch.corelib.errors import ErrorClass, PobatchError
from pobatch.corelib.worker_pool.tasks import Event, Task, TaskResult



class ItemNotFound(PobatchError):
    """A true answer about the item, as an application's handler raises one: business, never retried."""

    error_class = ErrorClass.BUSINESS


_factory_calls = 0  # per worker process: must stay 1, the state is built once


@dataclass(frozen=True)
class ScriptedNotes:
    """What the scripted worker notes for the parent (ctx.note), as an application's own record."""

    pid: int
    factory_calls: int
    profile_dir: str

_EXCEPTIONS: dict[str, type[Exception]] = {
    "TimeoutError": TimeoutError,
    "ValueError": ValueError,
    "ItemNotFound": ItemNotFound,
}


def _kill_myself() -> None:
    """What SIGKILL / TerminateProcess / the OOM killer do: no cleanup, no goodbye."""
    psutil.Process().kill()
    time.sleep(60)  # never reached


class ScriptedHandler:
    def __init__(self, ctx: Any, config: dict[str, Any]) -> None:
        self.ctx = ctx
        self.config = config
        self.aborted = threading.Event()

    def run(self, task: Task) -> TaskResult:
        payload = task.payload
        action = payload.get("do", "ok")
        self.ctx.emit(Event(action="running", task_key=task.key))
        if action == "sleep":
            time.sleep(payload["seconds"])
        elif action == "raise":
            exc_type = _EXCEPTIONS[payload["exc"]]
            if exc_type is ItemNotFound:
                raise ItemNotFound(payload.get("message", "boom"), reason=payload.get("reason", ""))
            raise exc_type(payload.get("message", "boom"))
        elif action == "kill":
            _kill_myself()
        elif action == "kill_once":
            marker = Path(payload["marker"])
            if not marker.exists():
                marker.write_text(repr(time.time()), encoding="utf-8")
                _kill_myself()
        elif action == "hang":  # blocks like a stuck WebDriver call until abort() "kills the browser"
            if not self.aborted.wait(payload.get("max", 30)):
                return TaskResult(task.key, "COMPLETED", data={"aborted": False})
            self.aborted.clear()
            if payload.get("raise_after_abort"):
                raise ConnectionError("browser went away")
            return TaskResult(task.key, "TIMEOUT", data={"aborted": True})
        elif action == "hang_ignore":  # a handler whose abort() does not help
            time.sleep(payload.get("max", 60))
        return TaskResult(task.key, "COMPLETED", data={
            "pid": os.getpid(), "factory_calls": _factory_calls, "prior_attempts": task.prior_attempts,
            "up_next": task.up_next.key if task.up_next is not None else None})

    def abort(self) -> None:
        self.ctx.emit(Event(action="handler_abort"))
        self.aborted.set()

    def close(self) -> None:
        close_dir = self.config.get("close_dir")
        if close_dir:
            Path(close_dir, f"closed-{self.ctx.worker_id}").write_text(str(os.getpid()), encoding="utf-8")


def make_handler(ctx: Any, config: dict[str, Any]) -> ScriptedHandler:
    global _factory_calls
    _factory_calls += 1
    ctx.note(ScriptedNotes(pid=os.getpid(), factory_calls=_factory_calls, profile_dir=f"profile-{ctx.worker_id}"))
    ctx.emit(Event(action="factory_called"))
    return ScriptedHandler(ctx, config)


def failing_factory(ctx: Any, config: dict[str, Any]) -> ScriptedHandler:
    raise RuntimeError("no browser for you")
