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

    @property
    def is_final(self) -> bool:
        """Final means a rerun has nothing more to learn about this PO without --force."""
        return self in FINAL_STATUSES

    def __str__(self) -> str:  # shows as the bare word in tables and folder names
        return self.value


FINAL_STATUSES = frozenset(
    {Status.COMPLETED, Status.NO_ATTACHMENTS, Status.PO_NOT_FOUND}
)
