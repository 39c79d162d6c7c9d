"""The status vocabulary shared by every mode, store row and report."""
from __future__ import annotations

import enum


class Status(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    PARTIAL = "PARTIAL"
    NO_ATTACHMENTS = "NO_ATTACHMENTS"
    PO_NOT_FOUND = "PO_NOT_FOUND"
    LOGIN_REQUIRED = "LOGIN_REQUIRED"
    TIMEOUT = "TIMEOUT"
    FAILED = "FAILED"
    INTERRUPTED = "INTERRUPTED"

    def __str__(self) -> str:  # shows as the bare word in tables and folder names
        return self.value


# Final: a rerun has nothing more to learn about the PO (unless --force or --recheck asks again).
FINAL_STATUSES = frozenset(
    {Status.COMPLETED, Status.NO_ATTACHMENTS, Status.PO_NOT_FOUND}
)
