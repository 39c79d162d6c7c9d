"""What MainApp tells a worker about one PO: the typed payload carried in a corelib Task.

Its own module so the planner (core/preparation/planner.py), every run mode and the workflow
(core/workflow/po_job.py) share one definition without the planner importing the workflow. corelib's
Task carries a plain dict (the pool is generic and pickles it): `to_dict()` and `from_dict()` are the only two places that know its keys.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class PoTaskPayload:
    """What the MainApp tells a worker about one PO (carried in corelib Task.payload)."""

    po_number: str
    row: int = 0
    folder_levels: tuple[str, ...] = ()
    previous_folders: tuple[str, ...] = ()  # folders of earlier runs, replaced on publish
    refresh: bool = False  # --refresh: an answered PO looked at again for what is new
    held: tuple[dict[str, Any], ...] = ()  # its files so far (HeldFile.to_dict()), kept and not fetched again

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PoTaskPayload":
        return cls(
            po_number=str(d["po_number"]),
            row=int(d.get("row", 0)),
            folder_levels=tuple(d.get("folder_levels", ())),
            previous_folders=tuple(d.get("previous_folders", ())),
            refresh=bool(d.get("refresh", False)),
            held=tuple(dict(h) for h in d.get("held", ())),
        )

    def to_dict(self) -> dict[str, Any]:
        """The Task.payload form: plain lists and strings, picklable for spawned workers."""
        return {"po_number": self.po_number, "row": self.row, "folder_levels": list(self.folder_levels),
                "previous_folders": list(self.previous_folders), "refresh": self.refresh,
                "held": [dict(h) for h in self.held]}
