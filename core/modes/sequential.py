"""Sequential mode: one in-process handler, one PO after another."""
from __future__ import annotations

import dataclasses
from typing import Iterator

from pobatch.core.modes.base import ModeTraits, RunPlan
from pobatch.core.modes.po_handler import sequential_handler
from pobatch.corelib.worker_pool.tasks import Event, TaskResult


class SequentialMode:
    name = "sequential"
    traits = ModeTraits()  # one local browser

    def stream(self, plan: RunPlan) -> Iterator[TaskResult | Event]:
        """Each PO's events, then its result; the browser closes when the stream does."""
        events: list[Event] = []
        handler = sequential_handler(plan.worker, events.append)
        try:
            for task, following in zip(plan.tasks, [*plan.tasks[1:], None]):
                # The PO after this one is known: its page loads while this one's files download.
                result = handler.run(dataclasses.replace(task, up_next=following) if following else task)
                yield from events
                events.clear()
                yield result
        finally:
            handler.close()
