"""MainApp: plans a run, owns the run store, picks the executor, and turns results into reports.

Data flows one way: orders file -> tasks -> executor (one in-process worker, or a pool of spawned
workers) -> results -> run store -> workbook. Only this module writes the run store.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import urlsplit

from core.orders import OrdersError, OrdersFile, describe_problems, read_orders
from core.po_job import WORK_DIR_NAME, JobConfig
from core.po_worker import WorkerConfig, sequential_handler
from core.profiles import resolve_base_profile
from core.results import PoOutcome, outcome_from_data, outcome_from_result, outcome_to_result
from core.sites import get_site
from core.status import FINAL_STATUSES, Status
from core.workbook import write_results
from corelib.browser import BrowserSpec, default_browser
from corelib.downloads import sha256_file
from corelib.errors import FatalError
from corelib.store import RunStore
from corelib.tasks import Event, Task, TaskResult

log = logging.getLogger(__name__)

EXIT_OK, EXIT_INCOMPLETE, EXIT_BAD_INPUT, EXIT_LOGIN, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


@dataclass
class RunOptions:
    orders: Path
    out: Path | None = None
    site: str = "coupa"
    base_url: str | None = None
    browser: str = field(default_factory=default_browser)
    profile: Path | None = None
    headless: bool = True
    driver: str | None = None
    browser_binary: str | None = None
    sheet: str | None = None
    force: bool = False
    parallel: bool = False
    workers: int | None = None  # None = auto
    po_timeout: float = 180.0
    page_timeout: float = 60.0
    download_timeout: float = 120.0
    stall_timeout: float = 20.0
    max_attempts: int = 3
    backoff_base: float = 1.0
    local_only: bool = False
    profiles_root: Path | None = None  # where temporary profile clones go (default: system temp)

    def out_dir(self) -> Path:
        return Path(self.out) if self.out else self.orders.parent / f"{self.orders.stem}_downloads"


@dataclass
class RunSummary:
    run_id: str
    exit_code: int
    counts: dict[str, int]
    outcomes: dict[str, PoOutcome]
    results_path: Path | None
    out_dir: Path
    message: str = ""
    skipped: int = 0


class MainApp:
    def __init__(self, options: RunOptions, view=None) -> None:
        self.opts = options
        self.view = view
        self.store: RunStore | None = None
        self.run_id = ""

    # -- the run ----------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        opts = self.opts
        orders = read_orders(opts.orders, sheet=opts.sheet)  # OrdersError: nothing written yet
        site = get_site(opts.site)
        base_url = (opts.base_url or site.default_base_url).rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise FatalError(
                f"--base-url: '{opts.base_url or ''}' is not a portal address; expected e.g. "
                "https://yourcompany.coupahost.com", reason="BAD_CONFIG")
        out = opts.out_dir().resolve()
        base_profile = resolve_base_profile(opts.profile, opts.browser)
        self._problems(orders)
        out.mkdir(parents=True, exist_ok=True)
        work = out / WORK_DIR_NAME
        work.mkdir(exist_ok=True)
        self.store = RunStore(work / "runs.sqlite")
        mode = "parallel" if opts.parallel else "sequential"
        self.run_id = self.store.begin_run(mode, {"orders": str(opts.orders), "site": opts.site, "base_url": base_url})
        job = JobConfig(site=site.name, base_url=base_url, out_dir=str(out), page_timeout=opts.page_timeout,
                        download_timeout=opts.download_timeout, stall_timeout=opts.stall_timeout,
                        max_attempts=opts.max_attempts, backoff_base=opts.backoff_base, po_timeout=opts.po_timeout)
        self._recover(job)
        sweep_leftovers(opts.profiles_root)
        tasks, skipped = self._plan(orders)
        # A portal on this machine (the demo) needs no name resolution at all: stop every lookup.
        local_only = opts.local_only or urlsplit(base_url).hostname in ("127.0.0.1", "localhost", "::1")
        spec = BrowserSpec(browser=opts.browser, headless=opts.headless, binary=opts.browser_binary,
                           driver=opts.driver, page_load_timeout=opts.page_timeout, local_only=local_only)
        wcfg = WorkerConfig(job=job, browser=spec, base_profile=str(base_profile), run_id=self.run_id,
                            profiles_root=str(opts.profiles_root) if opts.profiles_root else None)
        log.info("run %s: %d PO(s) to process, %d already completed, output %s", self.run_id, len(tasks),
                 skipped, out)
        exit_code, message = EXIT_OK, ""
        if self.view:
            self.view.start(self.run_id, len(tasks), skipped, mode)
        try:
            if opts.parallel:
                from core.parallel import run_parallel

                stream = run_parallel(wcfg, tasks, opts.workers)
            else:
                stream = self._run_sequential(wcfg, tasks)
            exit_code, message = self._consume(stream)
        except KeyboardInterrupt:
            exit_code, message = EXIT_INTERRUPTED, "Stopped by the user; run the same command again to finish."
        finally:
            self._mark_unfinished(tasks)
            self.store.finish_run(self.run_id, {EXIT_OK: "DONE", EXIT_INCOMPLETE: "DONE"}.get(exit_code, "STOPPED"))
        summary = self._finish(orders, out, exit_code, message, skipped)
        return summary

    def _problems(self, orders: OrdersFile) -> None:
        for line in describe_problems(orders):
            log.warning("%s: %s", orders.path.name, line)
        if not orders.tasks:
            raise OrdersError(f"{orders.path}: no valid PO number found in column '{orders.po_column}'; "
                              "expected at least one row with a PO number such as 100001 or PO100001")

    def _recover(self, job: JobConfig) -> None:
        """Finish what a crashed run left: adopt published folders, drop half-done staging."""
        assert self.store is not None
        for jpath in sorted(job.journal_dir.glob("*.json")) if job.journal_dir.exists() else []:
            try:
                outcome = outcome_from_data(json.loads(jpath.read_text(encoding="utf-8")))
            except (ValueError, TypeError, KeyError):
                jpath.unlink(missing_ok=True)
                continue
            folder = Path(outcome.download_folder)
            if _folder_matches(folder, outcome):
                prev = self.store.task(outcome.po_number)
                if not prev or prev["status"] != outcome.status.value or prev["finished"] != outcome.finished:
                    log.info("PO %s: adopting %s published before the last run stopped", outcome.po_number, folder)
                    self._record(outcome_to_result(outcome, "recovered"), notify=False)
            jpath.unlink(missing_ok=True)
        if job.staging_root.exists():
            shutil.rmtree(job.staging_root, ignore_errors=True)
        for key in self.store.keys_with_status([Status.RUNNING.value]):
            self.store.mark_status(self.run_id, key, Status.INTERRUPTED.value, reason="RUN_STOPPED")

    def _plan(self, orders: OrdersFile) -> tuple[list[Task], int]:
        assert self.store is not None
        known = self.store.tasks()
        tasks: list[Task] = []
        skipped = 0
        for t in orders.tasks:
            prev = known.get(t.po_number)
            if prev and prev["status"] == Status.COMPLETED.value and not self.opts.force:
                skipped += 1
                continue
            previous = [prev["data"].get("download_folder")] if prev and prev["data"].get("download_folder") else []
            tasks.append(Task(key=t.po_number, payload={
                "po_number": t.po_number, "row": t.row, "folder_levels": list(t.folder_levels),
                "previous_folders": previous}))
            self.store.mark_status(self.run_id, t.po_number, Status.PENDING.value)
        return tasks, skipped

    def _run_sequential(self, wcfg: WorkerConfig, tasks: list[Task]) -> Iterator[TaskResult | Event]:
        events: list[Event] = []
        handler = sequential_handler(wcfg, events.append)
        try:
            for task in tasks:
                result = handler.run(task)
                yield from events
                events.clear()
                yield result
        finally:
            handler.close()

    def _consume(self, stream: Iterable[TaskResult | Event]) -> tuple[int, str]:
        """Write every result and event to the store; stop the stream when a login is needed."""
        assert self.store is not None
        for item in stream:
            if isinstance(item, Event):
                self.store.record_events(self.run_id, [item])
                if item.action == "attempt_start":
                    self.store.mark_status(self.run_id, item.task_key, Status.RUNNING.value,
                                           worker_id=item.worker_id, started=item.ts)
                if self.view:
                    self.view.event(item)
                continue
            self._record(item)
            if item.status == Status.LOGIN_REQUIRED.value:
                close = getattr(stream, "close", None)
                if close:
                    close()
                return EXIT_LOGIN, item.error
        return EXIT_OK, ""

    def _record(self, result: TaskResult, notify: bool = True) -> None:
        assert self.store is not None
        outcome = outcome_from_result(result)
        if outcome.status is Status.LOGIN_REQUIRED:
            # Not an answer about this PO: it waits for the next run like the others.
            self.store.mark_status(self.run_id, result.key, Status.PENDING.value, reason="LOGIN_REQUIRED")
        else:
            self.store.record_result(self.run_id, result, [
                {"name": f.name, "size": f.size, "sha256": f.sha256, "source": f.source} for f in outcome.files])
        self.store.record_attempt(self.run_id, result.key, result.attempts, result.worker_id, result.started,
                                  result.finished, result.status, result.reason, result.error[:500])
        journal = Path(self.opts.out_dir()).resolve() / WORK_DIR_NAME / "journal" / f"{result.key}.json"
        journal.unlink(missing_ok=True)
        if self.view and notify:
            self.view.task_done(result.worker_id, outcome)

    def _mark_unfinished(self, tasks: list[Task]) -> None:
        if self.store is None:
            return
        keys = [t.key for t in tasks]
        running = self.store.keys_with_status([Status.RUNNING.value]) & set(keys)
        for key in running:
            self.store.mark_status(self.run_id, key, Status.INTERRUPTED.value, reason="RUN_STOPPED")

    def _finish(self, orders: OrdersFile, out: Path, exit_code: int, message: str, skipped: int) -> RunSummary:
        assert self.store is not None
        rows = self.store.tasks()
        outcomes: dict[str, PoOutcome] = {}
        for t in orders.tasks:
            row = rows.get(t.po_number)
            if row and row["data"].get("po_number"):
                outcomes[t.po_number] = outcome_from_data(row["data"])
            elif row:
                outcomes[t.po_number] = PoOutcome(po_number=t.po_number, status=Status(row["status"]),
                                                  reason=row["reason"] or "")
        counts: dict[str, int] = {s.value: 0 for s in Status}
        for o in outcomes.values():
            counts[o.status.value] += 1
        counts[Status.PENDING.value] += len(orders.tasks) - len(outcomes)
        if exit_code == EXIT_OK and any(o.status not in FINAL_STATUSES for o in outcomes.values()):
            exit_code = EXIT_INCOMPLETE
        if exit_code == EXIT_OK and len(outcomes) < len(orders.tasks):
            exit_code = EXIT_INCOMPLETE
        results_path = write_results(
            out / f"{orders.path.stem}_results.xlsx", orders, outcomes,
            run_info={"run id": self.run_id, "orders file": str(orders.path), "output folder": str(out),
                      "mode": "parallel" if self.opts.parallel else "sequential", "site": self.opts.site,
                      "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "skipped (already completed)": skipped})
        self.store.close()
        summary = RunSummary(self.run_id, exit_code, counts, outcomes, results_path, out, message, skipped)
        if self.view:
            self.view.finish(summary)
        return summary


def _folder_matches(folder: Path, outcome: PoOutcome) -> bool:
    """Every file the journal promised is there with its bytes: the publish completed."""
    if not folder.is_dir():
        return False
    return all((folder / f.name).is_file() and sha256_file(folder / f.name) == f.sha256 for f in outcome.files)


def sweep_leftovers(root: Path | None) -> None:
    """Profiles, browsers and scratch folders of runs whose process died (a crash, a SIGKILL)."""
    from corelib.browser_session import sweep_driver_temp
    from corelib.profile_manager import ProfileManager

    for path in ProfileManager.sweep_orphans(root) + sweep_driver_temp():
        log.info("removed what a run that died left behind: %s", path)
