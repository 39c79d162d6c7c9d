"""Publishing a PO's answer: its files named, hashed and moved, its journal written, its folder in place.

The folder `<levels>/<Supplier>/<PO>_<STATUS>` is built aside in the attempt's staging and appears in
one rename (pobatch.corelib.downloads.publish_folder), so the user never sees half a folder. The
journal is written first: a rerun can adopt a folder whose result never reached the run store.
"""
from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

from pobatch.core.events import PoEvent
from pobatch.core.journal import write_journal
from pobatch.core.results import FileRecord, PoOutcome
from pobatch.core.status import Status
from pobatch.core.workflow.attachments import PageResult
from pobatch.core.workflow.job_config import JobConfig
from pobatch.core.workflow.po_task import PoTaskPayload
from pobatch.corelib.downloads import publish_folder, sha256_file
from pobatch.corelib.errors import TransientError
from pobatch.corelib.safe_paths import contained, fit_in_path, name_from_page, safe_component, unique_name
from pobatch.corelib.tree_removal import remove_tree

UNKNOWN_SUPPLIER = "Unknown supplier"


class Publisher:
    def __init__(self, config: "JobConfig", event: Callable[..., None]) -> None:
        self.config = config
        self.event = event

    def publish(self, payload: "PoTaskPayload", status: Status, page: PageResult, po_url: str, staged: Path,
                attempt: int, started: float, error: str = "") -> PoOutcome:
        """Name, hash and move the files into `staged`; write the journal; one rename makes the folder appear."""
        dest = self.destination(payload, page.supplier, status)
        remove_tree(staged)
        staged.mkdir(parents=True)
        taken: set[str] = set()
        records: list[FileRecord] = []
        for d in page.downloaded:
            # The name the file should have in full: the server's, or the page's label when the
            # browser only made one up from the URL; shortened and made unique below.
            wanted = name_from_page(d.suggested or d.staged.name, d.hint, d.url)
            name = safe_component(wanted, fallback="attachment", basename=True)
            name = unique_name(staged, fit_in_path(dest, name), taken)
            target = staged / name
            if not contained(staged, target):
                raise TransientError(f"refusing a file name that leaves its folder: {d.staged.name!r}",
                                     reason="UNSAFE_NAME")
            os.replace(d.staged, target)
            taken.add(name)
            records.append(FileRecord(name=name, size=target.stat().st_size, sha256=sha256_file(target),
                                      source=d.source, original_name=wanted if wanted != name else ""))
        outcome = PoOutcome(
            po_number=payload.po_number, status=status, reason=page.reason, supplier=page.supplier,
            attachments_found=page.found, attachments_downloaded=len(records), files=records,
            download_folder=str(dest), po_url=po_url, error_message=error, attempts=attempt,
            started=started, finished=time.time(), last_processed=datetime.now().isoformat(timespec="seconds"),
        )
        self._write_journal(outcome)
        publish_folder(staged, dest, replace=[Path(p) for p in payload.previous_folders if Path(p) != dest])
        self.event(PoEvent.PUBLISHED, outcome=status.value, detail=str(dest))
        return outcome

    def destination(self, payload: "PoTaskPayload", supplier: str, status: Status) -> Path:
        out = Path(self.config.out_dir)
        levels = [safe_component(v, fallback="_") for v in payload.folder_levels if str(v).strip()]
        supplier_dir = safe_component(supplier, fallback=UNKNOWN_SUPPLIER) if supplier else UNKNOWN_SUPPLIER
        po_dir = safe_component(f"{payload.po_number}_{status.value}")
        return out.joinpath(*levels, supplier_dir, po_dir)

    def _write_journal(self, outcome: PoOutcome) -> None:
        """What the folder should hold, written before the rename (core/journal.py)."""
        write_journal(self.config.workspace, outcome)
