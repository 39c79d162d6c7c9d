"""What the run report shows, read back from the run store after the run (core/reports/report.py draws it)."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pobatch.core.events import PoEvent
from pobatch.core.reports.activity_log import activities_from_events
from pobatch.core.results import FileRecord, PoOutcome, outcome_from_data
from pobatch.core.status import Status
from pobatch.core.workspace import read_manifest
from pobatch.core.workspace import Workspace
from pobatch.corelib.store import RunStore
from pobatch.corelib.worker_pool.tasks import Event, PoolEvent

MARKER_ACTIONS = (PoEvent.BROWSER_RESTART, PoolEvent.WORKER_LOST)  # drawn as triangles on the timeline
FAILED_OUTCOMES = frozenset({"error", "worker_lost"})  # attempt outcomes whose bars link to artifacts


@dataclass
class AttemptBar:
    key: str
    attempt: int
    worker_id: str
    started: float
    finished: float
    outcome: str
    detail: str = ""
    artifacts: Path | None = None
    artifact_files: list[str] = field(default_factory=list)
    recorded: bool = False

    @property
    def failed(self) -> bool:
        return self.outcome in FAILED_OUTCOMES


@dataclass
class ReportData:
    run_id: str
    run: dict[str, Any]
    out_dir: Path
    rows: list[PoOutcome]  # one per PO of the run, as the run store holds it
    bars: list[AttemptBar]
    markers: list[Event]
    events: list[Event]
    counts: dict[str, int]
    changes: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # RunStore.file_changes of this run


def report_path(out_dir: Path, orders: str | Path | None, run_id: str | None = None) -> Path:
    """`<out>/<orders stem>_report.html` (with the run id when it is not the run's newest report)."""
    stem = Path(orders).stem if orders else "pobatch"
    suffix = f"_{run_id}" if run_id else ""
    return Path(out_dir) / f"{stem}_report{suffix}.html"


def load_report_data(store: RunStore, run_id: str, out_dir: Path) -> ReportData:
    run = store.run(run_id)
    if run is None:
        raise KeyError(f"no run {run_id} in {store.path}")
    workspace = Workspace(out_dir)
    tasks = store.tasks()
    results = {a["key"]: a for a in store.attempts(run_id)}  # one row per PO result in this run
    keys = {k for k, t in tasks.items() if t.get("run_id") == run_id} | set(results)
    rows = [_po_row(k, tasks.get(k), results.get(k), run_id) for k in sorted(keys, key=natural_order)]
    events = store.timeline(run_id)
    acts = store.activities(run_id) or activities_from_events(events)
    recorded = {(r["key"], r["attempt"]) for r in store.recordings(run_id)}
    bars = []
    for a in acts:
        folder = workspace.artifacts(run_id, a["key"], a["attempt"])
        has = folder.is_dir()
        bars.append(AttemptBar(
            key=a["key"], attempt=int(a["attempt"]), worker_id=a["worker_id"] or "main",
            started=float(a["started"]), finished=float(a["finished"] if a["finished"] is not None else a["started"]),
            outcome=a["outcome"] or "", detail=a["detail"] or "", artifacts=folder if has else None,
            artifact_files=list(read_manifest(folder).get("files", [])) if has else [],
            recorded=(a["key"], int(a["attempt"])) in recorded))
    markers = [e for e in events if e.action in MARKER_ACTIONS]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    return ReportData(run_id, run, Path(out_dir), rows, bars, markers, events, counts,
                      changes=store.file_changes(run_id))


_FILE_FIELDS = {f.name for f in dataclasses.fields(FileRecord)}


def _po_row(key: str, task: dict[str, Any] | None, result: dict[str, Any] | None, run_id: str) -> PoOutcome:
    """The PO as the run store holds it: its row if this run last wrote it, else this run's last result."""
    if task and task.get("run_id") == run_id:
        data = task.get("data") or {}
        # A row written by hand or by an older pobatch may lack a file's fields: shown with what it has.
        files = [{"name": "", "size": 0, "sha256": "", **{k: v for k, v in f.items() if k in _FILE_FIELDS}}
                 for f in data.get("files", []) if isinstance(f, dict)]
        row = outcome_from_data({**data, "po_number": key, "files": files})
        return dataclasses.replace(row, status=Status(task["status"]), reason=task.get("reason") or row.reason,
                                   error_message=task.get("error") or row.error_message,
                                   attempts=int(task.get("attempts") or 0))
    r = result or {}
    return PoOutcome(po_number=key, status=Status(r.get("status") or Status.PENDING.value), reason=r.get("reason") or "",
                     error_message=r.get("error") or "", attempts=int(r.get("attempt") or 0))


def natural_order(key: str) -> list[Any]:
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", key)]
