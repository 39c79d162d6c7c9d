"""What the per-PO workflow needs besides a browser: picklable, so every worker process gets the same."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pobatch.core.workspace import Workspace
from pobatch.corelib.retry import RetryPolicy


@dataclass
class JobConfig:
    """Everything the workflow needs besides a browser; picklable for worker processes."""

    site: str
    base_url: str
    out_dir: str
    site_file: str = ""  # a site file that extends or replaces the built-in definition
    page_timeout: float = 60.0  # page load, then readiness probe
    download_timeout: float = 120.0  # one attachment, from click to finished file
    stall_timeout: float = 20.0  # a partial download that stops growing this long has failed
    files_at_once: int = 4  # --files-at-once: a page's attachments downloading at one time (1: one by one)
    po_timeout: float = 180.0  # one attempt; past it the browser is killed and the PO retried
    max_attempts: int = 3
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    run_id: str = ""  # names the folder of failure artifacts
    record: bool = False  # --record: rrweb in every window, one recording per attempt
    page_ahead: bool = True  # --page-ahead: the next PO's page loads while this PO's files download

    @property
    def workspace(self) -> Workspace:
        return Workspace(Path(self.out_dir))

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.backoff_base, self.backoff_max)
