"""Where a run keeps what is not a PO folder: one object computes every path under `<out>/.pobatch/`.

    <out>/
      <Supplier>/<PO>_<STATUS>/          the answers (published by the workflow, never here)
      .pobatch/
        runs.sqlite                      the run store (only the MainApp writes it)
        journal/<PO>.json                a published PO's outcome until the store has it
        staging/<PO>-<worker>-a<n>/      one attempt's downloads before they are published
        staging/incoming-<worker>/       one browser's own download folder, fixed for its life
        staging/<scratch>/               a strategy's own scratch (e.g. single-session)
        throttle                         the portal's last "slow down", shared by every worker
        artifacts/<run>/<PO>-a<n>/       a failed attempt's screenshot, HTML and console
        replays/<run>/<PO>.html          rrweb replays written by `pobatch replay`
        logs/<run>.log                   the run's plain text log (core/monitoring/run_log.py), the last 30 runs
        demo-profile/                    the demo's own signed-in profile

It is built from the output folder alone, so a worker process, the report and the CLI agree on it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pobatch.corelib.safe_paths import safe_component

WORK_DIR_NAME = ".pobatch"

# One failed attempt's artifacts folder (Workspace.artifacts): written by core/workflow/artifacts.py,
# read by the report. Its layout lives here, with the other paths, so neither reaches into the other.
SCREENSHOT = "screenshot.png"
PAGE_HTML = "page.html"
CONSOLE_LOG = "console.log"
ERROR_TXT = "error.txt"
MANIFEST = "capture.json"

# rrweb, vendored under core/vendor/rrweb (package data): the recorder injects RECORD_JS into pages,
# `pobatch replay` writes the player into a replay page.
RRWEB_DIR = Path(__file__).resolve().parent / "vendor" / "rrweb"
RECORD_JS = RRWEB_DIR / "record.min.js"
PLAYER_JS = RRWEB_DIR / "rrweb-player.min.js"
PLAYER_CSS = RRWEB_DIR / "style.min.css"


def read_manifest(folder: Path) -> dict[str, Any]:
    """The capture note of an artifacts folder, or what the folder holds when the note is missing."""
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        files = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        return {"files": files, "failed": {}}


@dataclass(frozen=True)
class Workspace:
    out_dir: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", Path(self.out_dir))

    @property
    def work_dir(self) -> Path:
        return self.out_dir / WORK_DIR_NAME

    @property
    def store_path(self) -> Path:
        return self.work_dir / "runs.sqlite"

    @property
    def journal_dir(self) -> Path:
        return self.work_dir / "journal"

    def journal(self, po: str) -> Path:
        return self.journal_dir / f"{po}.json"

    @property
    def staging_root(self) -> Path:
        return self.work_dir / "staging"

    def attempt_staging(self, po: str, worker_id: str, attempt: int) -> Path:
        """Unique per PO, worker and attempt: a killed worker's leftovers are told apart by name."""
        return self.staging_root / f"{po}-{worker_id}-a{attempt}"

    def is_staging_of(self, path: Path, worker_id: str) -> bool:
        return f"-{worker_id}-a" in path.name

    def incoming(self, worker_id: str) -> Path:
        """A browser's own download folder (docs/design.md, "Downloads in Chromium")."""
        return self.staging_root / f"incoming-{worker_id}"

    def scratch(self, name: str) -> Path:
        return self.staging_root / name

    @property
    def throttle_path(self) -> Path:
        return self.work_dir / "throttle"

    def artifacts(self, run_id: str, po: str, attempt: int) -> Path:
        """One attempt's failure artifacts: unique per run, PO and attempt (attempts count across workers)."""
        run = safe_component(run_id or "no-run", fallback="no-run")
        return self.work_dir / "artifacts" / run / f"{safe_component(po, fallback='po')}-a{int(attempt)}"

    def replay(self, run_id: str, po: str) -> Path:
        return (self.work_dir / "replays" / safe_component(run_id, fallback="run")
                / f"{safe_component(po, fallback='po')}.html")

    @property
    def logs_dir(self) -> Path:
        return self.work_dir / "logs"

    def run_log(self, run_id: str) -> Path:
        """The plain log of one run, the file a user sends when something went wrong."""
        return self.logs_dir / f"{safe_component(run_id or 'no-run', fallback='no-run')}.log"

    @property
    def demo_profile(self) -> Path:
        return self.work_dir / "demo-profile"
