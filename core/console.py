"""The console view: a progress bar with counts per status and an ETA, then a summary table.

It only listens (MainApp calls it); nothing in the workflow depends on it, so tests run without it.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.console import Group

from core.results import PoOutcome
from core.status import Status
from corelib.tasks import Event

if TYPE_CHECKING:
    from core.app import RunSummary

STATUS_STYLE = {
    Status.COMPLETED: "green", Status.NO_ATTACHMENTS: "cyan", Status.PO_NOT_FOUND: "yellow",
    Status.PARTIAL: "dark_orange", Status.TIMEOUT: "dark_orange", Status.FAILED: "red",
    Status.LOGIN_REQUIRED: "red", Status.INTERRUPTED: "magenta", Status.PENDING: "dim", Status.RUNNING: "blue",
}


class ConsoleView:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.counts: Counter[Status] = Counter()
        self.workers: dict[str, tuple[str, float]] = {}  # worker -> (PO or "", since)
        self.done = 0
        self.total = 0
        self.started = time.monotonic()
        self._live: Live | None = None
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console,
        )
        self._task_id = None

    # -- MainApp callbacks ------------------------------------------------------------------------
    def start(self, run_id: str, total: int, skipped: int, mode: str) -> None:
        self.total, self.started = total, time.monotonic()
        self.console.print(f"[bold]pobatch[/] run {run_id} ({mode}): {total} PO(s) to process"
                           + (f", {skipped} already completed and skipped" if skipped else ""))
        self._task_id = self._progress.add_task("POs", total=total, rate="")
        if self.console.is_terminal:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=True)
            self._live.start()

    def task_started(self, worker_id: str, po: str) -> None:
        self.workers[worker_id] = (po, time.monotonic())
        self._refresh()

    def event(self, event: Event) -> None:
        if event.action == "attempt_start" and event.worker_id:
            self.workers[event.worker_id] = (event.task_key, time.monotonic())
        elif event.action == "worker_lost":
            self.console.print(f"[red]worker {event.worker_id} died[/] ({event.detail}); its PO was requeued")
        self._refresh()

    def task_done(self, worker_id: str, outcome: PoOutcome) -> None:
        self.counts[outcome.status] += 1
        self.done += 1
        if worker_id in self.workers:
            self.workers[worker_id] = ("", time.monotonic())
        if self._task_id is not None:
            minutes = max(1e-9, (time.monotonic() - self.started) / 60)
            self._progress.update(self._task_id, advance=1, rate=f"{self.done / minutes:.1f} PO/min")
        if not self.console.is_terminal:
            style = STATUS_STYLE.get(outcome.status, "")
            self.console.print(f"[{style}]{outcome.status.value:<15}[/] PO {outcome.po_number} "
                               f"{outcome.attachments_downloaded}/{outcome.attachments_found} file(s)"
                               + (f" {outcome.reason}" if outcome.reason else ""))
        self._refresh()

    def finish(self, summary: "RunSummary") -> None:
        if self._live:
            self._live.stop()
            self._live = None
        table = Table(title=f"Run {summary.run_id}", show_lines=False)
        table.add_column("Status")
        table.add_column("POs", justify="right")
        for status in Status:
            n = summary.counts.get(status.value, 0)
            if n:
                table.add_row(f"[{STATUS_STYLE.get(status, '')}]{status.value}[/]", str(n))
        self.console.print(table)
        if summary.results_path:
            self.console.print(f"Results: {summary.results_path}")
        self.console.print(f"Files:   {summary.out_dir}")
        if summary.message:
            self.console.print(f"[bold red]{summary.message}[/]" if summary.exit_code else summary.message)

    # -- rendering --------------------------------------------------------------------------------
    def _render(self):
        counts = "  ".join(f"[{STATUS_STYLE.get(s, '')}]{s.value}: {n}[/]" for s, n in self.counts.items() if n)
        parts = [self._progress, counts or "[dim]waiting for the first result...[/]"]
        if len(self.workers) > 1 or any(w != "main" for w in self.workers):
            t = Table(box=None, show_header=False, padding=(0, 1))
            now = time.monotonic()
            for wid in sorted(self.workers):
                po, since = self.workers[wid]
                t.add_row(wid, f"busy PO {po}" if po else "[dim]idle[/]", f"{now - since:5.1f}s")
            parts.append(t)
        return Group(*parts)

    def _refresh(self) -> None:
        if self._live:
            self._live.update(self._render())
