"""Events -> activities while the run goes: one row per PO attempt (start, end, outcome) in the run
store, which the report's timeline draws as bars."""
from __future__ import annotations

from typing import Any, Callable, Iterable

from pobatch.core.events import PoEvent
from pobatch.corelib.store import RunStore
from pobatch.corelib.worker_pool.tasks import Event, PoolEvent


class ActivityLog:
    """One activity (start, end, outcome) per attempt, from the events every worker sends.

    An attempt starts at its first event and ends at its `attempt_end`; events that follow it with
    the same attempt number (a restart, the retry wait) belong to the gap, not to the attempt."""

    def __init__(self, record: Callable[[dict[str, Any]], None]) -> None:
        self._record = record
        self._open: dict[tuple[str, str, int], list[float]] = {}  # -> [first ts, last ts]
        self._closed: set[tuple[str, str, int]] = set()

    @classmethod
    def into_store(cls, store: RunStore, run_id: str) -> "ActivityLog":
        return cls(lambda a: store.record_activity(run_id, a["key"], a["attempt"], a["worker_id"], a["started"],
                                                   a["finished"], a["outcome"], a["detail"]))

    def observe(self, event: Event) -> None:
        if event.action == PoolEvent.WORKER_LOST:
            for k in [k for k in self._open if k[0] == event.worker_id]:
                self._close(k, event.ts, "worker_lost", event.detail)
            return
        if not event.task_key or event.attempt <= 0:
            return
        k = (event.worker_id, event.task_key, event.attempt)
        if k in self._closed:
            return
        span = self._open.setdefault(k, [event.ts, event.ts])
        span[0], span[1] = min(span[0], event.ts), max(span[1], event.ts)
        if event.action == PoEvent.ATTEMPT_END:
            self._close(k, event.ts, event.outcome or "error", event.detail)

    def close_all(self, outcome: str = "interrupted") -> None:
        """The run ends: attempts that never ended end at their last event."""
        for k in list(self._open):
            self._close(k, self._open[k][1], outcome, "")

    def _close(self, k: tuple[str, str, int], finished: float, outcome: str, detail: str) -> None:
        first, _last = self._open.pop(k)
        self._closed.add(k)
        worker_id, key, attempt = k
        self._record({"key": key, "attempt": attempt, "worker_id": worker_id, "started": first,
                      "finished": max(first, finished), "outcome": outcome, "detail": detail or ""})


def activities_from_events(events: Iterable[Event]) -> list[dict[str, Any]]:
    """The activities of a run whose store has none (recorded before the activities table existed)."""
    out: list[dict[str, Any]] = []
    tracker = ActivityLog(out.append)
    for e in events:
        tracker.observe(e)
    tracker.close_all()
    return out
