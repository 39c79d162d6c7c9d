"""Publishing a PO's answer: its files named, hashed and moved, its journal written, its folder in place.

The folder `<levels>/<Supplier>/<PO>_<STATUS>` is built aside in the attempt's staging and appears in
one rename (pobatch.corelib.browser.downloads.publish_folder), so the user never sees half a folder. The
journal is written first: a rerun can adopt a folder whose result never reached the run store.
"""
from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

from pobatch.core.events import PoEvent
from pobatch.core.workflow.journal import write_journal
from pobatch.core.results import FileRecord, PoOutcome
from pobatch.core.status import Status
from pobatch.core.workflow.attachments import PageResult
from pobatch.core.workflow.held_files import HeldFile
from pobatch.core.workflow.job_config import JobConfig
from pobatch.core.workflow.po_task import PoTaskPayload
from pobatch.corelib.browser.downloads import link_or_copy, publish_folder, sha256_file
from pobatch.corelib.errors import TransientError
from pobatch.corelib.safe_paths import contained, fit_in_path, name_from_page, safe_component, unique_name
from pobatch.corelib.tree_removal import remove_tree

UNKNOWN_SUPPLIER = "Unknown supplier"


class Publisher:
    def __init__(self, config: "JobConfig", event: Callable[..., None]) -> None:
        self.config = config
        self.event = event

    def publish(self, payload: "PoTaskPayload", status: Status, page: PageResult, po_url: str, staged: Path,
                attempt: int, started: float, error: str = "",
                seen: dict[str, list[str]] | None = None) -> PoOutcome:
        """Name, hash and move the files into `staged`; write the journal; one rename makes the folder appear.

        A refresh (payload.held) carries every held file into the new folder beside the new ones;
        `seen` (the identities on each page that was read, by source) says which held files are gone
        from the portal. When nothing arrived and the folder keeps its name, nothing on disk changes."""
        dest = self.destination(payload, page.supplier, status)
        held = [HeldFile.from_dict(h) for h in payload.held]
        current = Path(payload.previous_folders[0]) if payload.previous_folders else None
        remove_tree(staged)
        staged.mkdir(parents=True)
        taken: set[str] = {h.name for h in held if h.intact}
        refetch = {h.identity: h for h in held if not h.intact and h.identity}
        by_sha = {(h.source, h.sha256): h for h in held if h.intact}
        relabel: dict[str, str] = {}  # held file name -> its identity now (its link changed, its bytes did not)
        records: list[FileRecord] = []
        for d in page.downloaded:
            again = refetch.pop(d.identity, None) if d.identity else None
            if again is not None:  # the local copy was missing or changed: the portal's takes its name
                wanted = name = again.name
            else:
                # The name the file should have in full: the server's, or the page's label when the
                # browser only made one up from the URL; shortened and made unique below.
                wanted = name_from_page(d.suggested or d.staged.name, d.hint, d.url)
                name = safe_component(wanted, fallback="attachment", basename=True)
                name = unique_name(staged, fit_in_path(dest, name), taken)
            target = staged / name
            if not contained(staged, target):
                raise TransientError(f"refusing a file name that leaves its folder: {d.staged.name!r}",
                                     reason="UNSAFE_NAME")
            sha = sha256_file(d.staged)
            if held and again is None:
                same = by_sha.get((d.source, sha))
                if same is not None:  # a held file under a new identity (or one recorded without any)
                    relabel[same.name] = d.identity
                    d.staged.unlink()
                    continue
            os.replace(d.staged, target)
            taken.add(name)
            st = target.stat()
            records.append(FileRecord(name=name, size=st.st_size, sha256=sha, source=d.source,
                                      original_name=wanted if wanted != name else "", identity=d.identity,
                                      brought_by=self.config.run_id, mtime_ns=st.st_mtime_ns,
                                      refetched=again is not None))
        for lost in refetch.values():  # missing here and not on the page either: nothing to keep
            self.event(PoEvent.HELD_FILE_LOST, detail=f"{lost.name}: missing locally and gone from the portal")
        kept = [self._held_record(h, relabel.get(h.name, h.identity), seen or {}) for h in held if h.intact]
        outcome = PoOutcome(
            po_number=payload.po_number, status=status, reason=page.reason, supplier=page.supplier,
            attachments_found=page.found, attachments_downloaded=len(records) + len(page.held) + len(relabel),
            files=sorted(kept + records, key=lambda f: f.name.lower()), download_folder=str(dest),
            po_url=po_url, error_message=error, attempts=attempt,
            started=started, finished=time.time(), last_processed=datetime.now().isoformat(timespec="seconds"),
        )
        if not records and current is not None and current == dest and dest.is_dir():
            remove_tree(staged)  # nothing new and the same name: the folder stands as it is
            self.event(PoEvent.PUBLISHED, outcome=status.value, detail=f"{dest} (unchanged)")
            return outcome
        for h in held:
            if h.intact and current is not None:
                link_or_copy(current / h.name, staged / h.name)
        self._write_journal(outcome)
        publish_folder(staged, dest, replace=[Path(p) for p in payload.previous_folders if Path(p) != dest])
        self.event(PoEvent.PUBLISHED, outcome=status.value, detail=str(dest))
        return outcome

    def _held_record(self, h: HeldFile, identity: str, seen: dict[str, list[str]]) -> FileRecord:
        """A held file as the new outcome lists it: gone from the portal when the page it came from was
        read and no longer shows it (a file without a known identity is never called gone)."""
        removed = h.removed_on_portal
        if identity and h.source in seen:
            removed = "" if identity in seen[h.source] else (removed or self.config.run_id)
        return FileRecord(name=h.name, size=h.size, sha256=h.sha256, source=h.source, identity=identity,
                          brought_by=h.brought_by, mtime_ns=h.mtime_ns, removed_on_portal=removed)

    def destination(self, payload: "PoTaskPayload", supplier: str, status: Status) -> Path:
        out = Path(self.config.out_dir)
        levels = [safe_component(v, fallback="_") for v in payload.folder_levels if str(v).strip()]
        supplier_dir = safe_component(supplier, fallback=UNKNOWN_SUPPLIER) if supplier else UNKNOWN_SUPPLIER
        po_dir = safe_component(f"{payload.po_number}_{status.value}")
        return out.joinpath(*levels, supplier_dir, po_dir)

    def _write_journal(self, outcome: PoOutcome) -> None:
        """What the folder should hold, written before the rename (core/workflow/journal.py)."""
        write_journal(self.config.workspace, outcome)
