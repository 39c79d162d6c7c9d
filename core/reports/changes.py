"""What one run changed in the archive, in words both the workbook's "New" sheet and the HTML report use.

A change is a run store files row (corelib/store.RunStore.file_changes): a file the run brought, one it
fetched again because the local copy was missing or changed, or one it found gone from the portal.
"""
from __future__ import annotations

from typing import Any, Mapping

# The words for each kind of change (the "New" sheet's CHANGE column, the report's list).
CHANGE_WORDS = {"new": "new", "refetched": "fetched again (missing or changed here)",
                "removed": "gone from the portal (kept here)"}


def change_kind(change: Mapping[str, Any], run_id: str) -> str:
    """What run `run_id` did to this file: "new", "refetched" or "removed" (a key of CHANGE_WORDS)."""
    if change.get("brought_by") == run_id:
        return "refetched" if change.get("refetched") else "new"
    return "removed"
