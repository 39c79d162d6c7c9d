"""The publish journal: a PO's outcome, written by the worker just before the rename that publishes its
folder, and read by the MainApp, the only writer of the run store.

A journal whose folder is in place with every promised file (same sha256) is a published answer the
store may not hold yet (the process died in between): the next run adopts it instead of downloading
again. A journal whose folder never appeared promises nothing and goes (docs/design.md, "Output layout").
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from pobatch.core.results import PoOutcome, outcome_from_data
from pobatch.core.workspace import Workspace
from pobatch.corelib.browser.downloads import sha256_file


@dataclass(frozen=True)
class JournalEntry:
    path: Path
    outcome: PoOutcome | None  # None: unreadable (cut off by a crash, or not ours)

    @property
    def published(self) -> bool:
        """Every file the journal promised is there with its bytes: the publish completed."""
        if self.outcome is None:
            return False
        folder = Path(self.outcome.download_folder)
        return folder.is_dir() and all(
            (folder / f.name).is_file() and sha256_file(folder / f.name) == f.sha256 for f in self.outcome.files)

    def drop(self) -> None:
        self.path.unlink(missing_ok=True)


def restore_replaced(folder: str | Path) -> bool:
    """Undo a publish cut short between its two renames (pobatch.corelib.browser.downloads.publish_folder): the
    folder it was replacing went aside as `.<name>.old-*` and the new one never came. Put the old one
    back, so the files the run store lists are where it says. A leftover beside a folder that is in place
    is the old copy a finished publish was removing: it goes. True when a folder was put back."""
    folder = Path(folder)
    if not folder.parent.is_dir():
        return False
    aside = sorted(folder.parent.glob(f".{glob_escape(folder.name)}.old-*"), key=lambda p: p.stat().st_mtime_ns)
    restored = False
    if aside and not folder.exists():
        os.replace(aside.pop(), folder)
        restored = True
    for old in aside:
        shutil.rmtree(old, ignore_errors=True)
    return restored


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def write_journal(workspace: Workspace, outcome: PoOutcome) -> None:
    """Atomically: a reader sees the whole entry or none."""
    path = workspace.journal(outcome.po_number)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    data = asdict(outcome)
    data["status"] = outcome.status.value
    tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def read_journal(workspace: Workspace) -> Iterator[JournalEntry]:
    """Every entry, oldest name first."""
    if not workspace.journal_dir.is_dir():
        return
    for path in sorted(workspace.journal_dir.glob("*.json")):
        try:
            outcome: PoOutcome | None = outcome_from_data(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError, KeyError, OSError):
            outcome = None
        yield JournalEntry(path, outcome)
