"""The per-PO result row that the workflow produces and the reports read."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pobatch.core.status import Status
from pobatch.corelib.errors import ErrorClass
from pobatch.corelib.worker_pool.tasks import TaskResult


@dataclass
class FileRecord:
    name: str  # name inside the PO folder
    size: int
    sha256: str
    source: str = "po"  # "po" or "requisition"
    original_name: str = ""  # the name the portal served, in full, when `name` had to differ from it
    identity: str = ""  # the attachment's identity on the page (core/workflow/held_files.py)
    brought_by: str = ""  # the run that downloaded it
    mtime_ns: int = 0  # its modification time when published: a refresh checks size and time first
    removed_on_portal: str = ""  # the run that found it gone from the portal (it stays in the folder)
    refetched: bool = False  # fetched again because the local copy was missing or changed


@dataclass
class PoOutcome:
    """Everything the results workbook and the run store say about one PO."""

    po_number: str
    status: Status
    reason: str = ""
    supplier: str = ""
    attachments_found: int = 0
    attachments_downloaded: int = 0
    files: list[FileRecord] = field(default_factory=list)
    download_folder: str = ""
    po_url: str = ""
    error_message: str = ""
    attempts: int = 0
    started: float = 0.0
    finished: float = 0.0
    last_processed: str = ""  # ISO 8601 local time


def outcome_to_result(outcome: PoOutcome, worker_id: str = "") -> TaskResult:
    """A PoOutcome as the engine's generic TaskResult (what crosses processes and enters the store)."""
    data = asdict(outcome)
    data["status"] = outcome.status.value
    err_class = ""
    if outcome.status in (Status.FAILED, Status.TIMEOUT, Status.PARTIAL):
        err_class = ErrorClass.TRANSIENT.value
    elif outcome.status is Status.LOGIN_REQUIRED:
        err_class = ErrorClass.LOGIN.value
    return TaskResult(
        key=outcome.po_number, status=outcome.status.value, reason=outcome.reason, error=outcome.error_message,
        error_class=err_class, attempts=outcome.attempts, started=outcome.started, finished=outcome.finished,
        worker_id=worker_id, data=data,
    )


def outcome_from_data(data: dict[str, Any]) -> PoOutcome:
    """Rebuild a PoOutcome from TaskResult.data, a store row's data, or a journal file."""
    known = {f.name for f in fields(PoOutcome)}
    d = {k: v for k, v in data.items() if k in known}
    d["status"] = Status(d.get("status", Status.FAILED.value))
    d["files"] = [f if isinstance(f, FileRecord) else FileRecord(**f) for f in d.get("files", [])]
    return PoOutcome(**d)


def outcome_from_result(result: TaskResult) -> PoOutcome:
    """The engine's result back as a PoOutcome; a result without PO data (a worker that died) too."""
    if result.data.get("po_number"):
        return outcome_from_data(result.data)
    try:
        status = Status(result.status)
    except ValueError:
        status = Status.FAILED
    return PoOutcome(po_number=result.key, status=status, reason=result.reason, error_message=result.error,
                     attempts=result.attempts, started=result.started, finished=result.finished)
