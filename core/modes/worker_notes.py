"""What a PO worker tells the parent so the parent can clean up after it if it dies.

Written by the worker factories (core/modes/po_handler.py, through ctx.note) and read by the pool modes'
exit handler (core/modes/parallel.py, `_reap`): a typed record, so writer and reader cannot drift apart on a key.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BrowserWorkerNotes:
    """Picklable: crosses from the worker process to the parent. Empty string: nothing to clean."""

    profile_dir: str = ""  # the worker's clone of the base profile (pobatch made it: killed and removed)
    download_dir: str = ""  # its browser's own download folder
    grid_url: str = ""  # grid mode: the Grid holding its remote session...
    grid_session: str = ""  # ...and that session's id (deleted, or the Grid keeps it until its timeout)
