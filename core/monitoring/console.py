"""The console view: a progress bar with counts per status and an ETA, then a summary table.

In the pool modes (their ModeTraits say so: core/modes/base.py) it also shows one line per worker (busy
on which PO, or idle, and for how long), then the queue: POs waiting, busy and done, POs per minute and
the ETA. A download that runs longer than about 2 s shows its bytes, total and speed on its worker's
line (core/download_progress.py), so a 200 MB scan is visibly moving. It only listens (MainApp calls it); nothing in the workflow depends on it, so
tests run without it.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Callable

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from pobatch.core.app import RunSummary
from pobatch.core.events import PoEvent
from pobatch.core.modes.registry import traits_of
from pobatch.core.download_progress import Progress as DownloadProgress, SpeedMeter, describe, parse_progress
from pobatch.core.results import PoOutcome
from pobatch.core.status import Status
from pobatch.corelib.worker_pool.tasks import Event, PoolEvent

STATUS_STYLE = {
    Status.COMPLETED: "green", Status.NO_ATTACHMENTS: "cyan", Status.PO_NOT_FOUND: "yellow",
    Status.PARTIAL: "dark_orange", Status.TIMEOUT: "dark_orange", Status.FAILED: "red",
    Status.LOGIN_REQUIRED: "red", Status.INTERRUPTED: "magenta", Status.PENDING: "dim", Status.RUNNING: "blue",
}


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s" if m else f"{s}s"


class ConsoleView:
    def __init__(self, console: Console | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console or Console(stderr=True)
        self.clock = clock
        self.counts: Counter[Status] = Counter()
        self.workers: dict[str, tuple[str, float]] = {}  # worker -> (PO or "", since)
        # worker -> its running download's last progress and speed (bytes/s, None until a second report)
        self.downloads: dict[str, tuple[DownloadProgress, float | None]] = {}
        self._speed = SpeedMeter()
        self._printed_progress: dict[str, float] = {}  # worker -> when a plain console last printed it
        self.done = 0
        self.total = 0
        self.mode = ""
        self.traits = traits_of("")
        self.started = clock()
        self._live: Live | None = None
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console,
        )
        self._task_id = None

    # -- MainApp callbacks ------------------------------------------------------------------------
    def start(self, run_id: str, total: int, skipped: int, mode: str) -> None:
        self.total, self.mode, self.started = total, mode, self.clock()
        self.traits = traits_of(mode)
        self.console.print(f"[bold]pobatch[/] run {run_id} ({mode}): {total} PO(s) to process"
                           + (f", {skipped} already completed and skipped" if skipped else ""))
        self._task_id = self._progress.add_task("POs", total=total, rate="")
        if self.console.is_terminal:
            self._live = Live(self.render(), console=self.console, refresh_per_second=4, transient=True)
            self._live.start()

    def task_started(self, worker_id: str, po: str) -> None:
        self._busy(worker_id, po)
        self._refresh()

    # Without a live view (output to a file or pipe) one progress line per worker at most this often.
    PLAIN_PROGRESS_EVERY = 10.0

    def event(self, event: Event) -> None:
        if event.action == PoEvent.DOWNLOAD_PROGRESS:
            self._progress_event(event)
        elif event.action in (PoEvent.DOWNLOAD, PoEvent.ATTEMPT_END, PoEvent.ATTEMPT_START):
            self._download_over(event.worker_id)
        if event.action == PoEvent.ATTEMPT_START and event.worker_id:
            self._busy(event.worker_id, event.task_key)
        elif event.action == PoolEvent.WORKER_LOST:
            self.workers.pop(event.worker_id, None)  # a replacement shows up under its own name
            fate = {"requeued": f"; PO {event.task_key} goes back to the queue",
                    "failed": f"; PO {event.task_key} failed"}.get(event.outcome, "")
            self.console.print(f"[red]worker {event.worker_id} died[/] ({event.detail}){fate}")
        self._refresh()

    def _progress_event(self, event: Event) -> None:
        progress = parse_progress(event.detail)
        if progress is None:
            return
        who = event.worker_id or "main"
        speed = self._speed.update(who, progress, event.ts)
        if speed is None and who in self.downloads and self.downloads[who][0].name == progress.name:
            speed = self.downloads[who][1]  # keep the last speed until a new one can be worked out
        self.downloads[who] = (progress, speed)
        if not self.console.is_terminal and not self._live:
            now = self.clock()
            if now - self._printed_progress.get(who, -1e9) >= self.PLAIN_PROGRESS_EVERY:
                self._printed_progress[who] = now
                po = f" PO {event.task_key}" if event.task_key else ""
                self.console.print(f"[dim]{who}{po} downloading {describe(progress, speed)}[/]", highlight=False)

    def _download_over(self, worker_id: str) -> None:
        who = worker_id or "main"
        self.downloads.pop(who, None)
        self._printed_progress.pop(who, None)
        self._speed.forget(who)

    def download_line(self, worker_id: str) -> str:
        """What the worker's running download has done so far, or '' when none is running."""
        current = self.downloads.get(worker_id or "main")
        return describe(*current) if current else ""

    def task_done(self, worker_id: str, outcome: PoOutcome) -> None:
        self._download_over(worker_id)
        self.counts[outcome.status] += 1
        self.done += 1
        if worker_id in self.workers:
            self.workers[worker_id] = ("", self.clock())
        if self._task_id is not None:
            self._progress.update(self._task_id, advance=1, rate=f"{self.rate():.1f} PO/min")
        if not self.console.is_terminal:
            style = STATUS_STYLE.get(outcome.status, "")
            self.console.print(f"[{style}]{outcome.status.value:<15}[/] PO {outcome.po_number} "
                               f"{outcome.attachments_downloaded}/{outcome.attachments_found} file(s)"
                               + (f" {outcome.reason}" if outcome.reason else ""))
        self._refresh()

    def finish(self, summary: RunSummary) -> None:
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
        if summary.report_path:
            self.console.print(f"Report:  {summary.report_path}")
        if getattr(summary, "log_path", None):
            self.console.print(f"Log:     {summary.log_path}  (to send when asking for help: pobatch support)")
        self.console.print(f"Files:   {summary.out_dir}")
        if summary.message:
            self.console.print(f"[bold red]{summary.message}[/]" if summary.exit_code else summary.message)

    # -- what the live view shows -----------------------------------------------------------------
    def _busy(self, worker_id: str, po: str) -> None:
        current = self.workers.get(worker_id)
        if current is None or current[0] != po:  # a retry of the same PO keeps its start time
            self.workers[worker_id] = (po, self.clock())

    def rate(self) -> float:
        """POs finished per minute since the start."""
        minutes = (self.clock() - self.started) / 60
        return self.done / minutes if minutes > 0 else 0.0

    def eta_seconds(self) -> float | None:
        """Time left at the rate so far; None before the first PO is done."""
        rate = self.rate()
        return (self.total - self.done) / rate * 60 if rate > 0 else None

    def queue_line(self) -> str:
        busy = sum(1 for po, _since in self.workers.values() if po)
        waiting = max(0, self.total - self.done - busy)
        eta = self.eta_seconds()
        return (f"Queue: {waiting} waiting, {busy} busy, {self.done} of {self.total} done  "
                f"{self.rate():.1f} PO/min  ETA {_duration(eta) if eta is not None else '--'}")

    def render(self):
        """The live view: progress, counts per status, and with several workers the workers and the queue."""
        counts = "  ".join(f"[{STATUS_STYLE.get(s, '')}]{s.value}: {n}[/]" for s, n in self.counts.items() if n)
        parts = [self._progress, counts or "[dim]waiting for the first result...[/]"]
        if self.traits.worker_lines or len(self.workers) > 1 or any(w != "main" for w in self.workers):
            t = Table(box=None, show_header=False, padding=(0, 1))
            now = self.clock()
            for wid in sorted(self.workers, key=lambda w: (len(w), w)):
                po, since = self.workers[wid]
                t.add_row(wid, "busy" if po else "[dim]idle[/]", f"PO {po}" if po else "", f"{now - since:6.1f}s",
                          self.download_line(wid) if po else "")
            parts.append(t)
            parts.append(self.queue_line())
        else:
            for wid in sorted(self.downloads):
                parts.append(f"[dim]downloading[/] {self.download_line(wid)}")
        return Group(*parts)

    def _refresh(self) -> None:
        if self._live:
            self._live.update(self.render())
