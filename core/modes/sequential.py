"""Sequential mode: one in-process handler, one PO after another."""
from __future__ import annotations

from typing import Iterator

from pobatch.core.modes.base import RunPlan
from pobatch.core.po_worker import sequential_handler
from pobatch.corelib.tasks import Event, TaskResult


class SequentialMode:
    name = "sequential"

    def stream(self, plan: RunPlan) -> Iterator[TaskResult | Event]:
        """Each PO's events, then its result; the browser closes when the stream does."""
        events: list[Event] = []
        handler = sequential_handler(plan.worker, events.append)
        try:
            for task in plan.tasks:
                result = handler.run(task)
                yield from events
                events.clear()
                yield result
        finally:
            handler.close()
