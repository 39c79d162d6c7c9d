"""MainApp: plans a run, owns the run store, runs the chosen mode, and turns results into reports.

Data flows one way: orders file -> tasks (a RunPlan) -> the mode's stream (core/modes/: one in-process
worker, a pool of spawned workers, ...) -> results -> run store -> workbook. Only this module writes the
run store. The options checked and the plan built (every check before any browser, the POs to process,
the configs the mode and its workers get) are core/preparation/planner.py; what the stream is watched
for (a sign-in page, a portal gone away) is core/monitoring/stream_watch.py.
"""
from __future__ import annotations

import gc
import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from pobatch.core.events import PoEvent
from pobatch.core.exit_codes import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_LOGIN, EXIT_OK, EXIT_STOPPED
from pobatch.core.modes.base import RunPlan
from pobatch.core.modes.registry import get_mode, traits_of
from pobatch.core.monitoring.run_log import RunLog, RunLogView, run_facts
from pobatch.core.monitoring.stream_watch import CircuitBreaker, PortalUnreachable, SignInWatch
from pobatch.core.preparation import planner
from pobatch.core.preparation.orders import OrdersFile
from pobatch.core.preparation.preflight import run_process_alive, sweep_leftovers
from pobatch.core.reports.activity_log import ActivityLog
from pobatch.core.reports.report import write_report
from pobatch.core.reports.report_data import report_path
from pobatch.core.reports.workbook import write_results
from pobatch.core.results import PoOutcome, outcome_from_data, outcome_from_result, outcome_to_result
from pobatch.core.run_options import RunOptions
from pobatch.core.status import FINAL_STATUSES, Status
from pobatch.core.workflow.journal import read_journal, restore_replaced
from pobatch.core.workflow.job_config import JobConfig
from pobatch.core.workflow.recorder import is_recording, store_recording
from pobatch.core.workspace import Workspace
from pobatch.corelib.errors import ErrorClass, fatal_error, is_disk_full
from pobatch.corelib.store import Heartbeat, RunStore
from pobatch.corelib.worker_pool.tasks import Event, Task, TaskResult

log = logging.getLogger(__name__)


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
    report_path: Path | None = None
    log_path: Path | None = None  # the run's plain log (core/monitoring/run_log.py)
    checked: int = 0  # POs looked at again by --refresh
    new_files: int = 0  # files that arrived in this run (first downloads and a refresh's new ones)
    new_file_pos: int = 0  # POs those files belong to
    refetched_files: int = 0  # of the new files: fetched again because the local copy was missing or changed
    removed_files: int = 0  # files this run found gone from the portal (kept in their folders)


class MainApp:
    def __init__(self, options: RunOptions, view=None) -> None:
        self.opts = options
        self.view = view
        self.workspace = Workspace(options.out_dir().resolve())  # where the run store and journal live
        self.store: RunStore | None = None
        self.run_id = ""
        self.activities: ActivityLog | None = None
        # POs whose stored outcome (store row, folder, workbook row) stands until a new result replaces
        # it: the store never says PENDING/RUNNING about them in between.
        self._standing: set[str] = set()
        self.base_url = ""
        self.mode = ""  # the registry name of the mode the options chose (core/modes/registry.py)
        self.run_log: RunLog | None = None
        self.checked = 0  # answered POs a --refresh looks at again

    # -- the run ----------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        """Validate and plan, run the chosen mode's stream into the store, then the workbook and report."""
        self.run_log = RunLog.begin()  # every record from here on; the file opens once the run has its id
        try:
            orders, plan, skipped = self._prepare()  # every bad input is one line here, before any browser
            self.run_log.open(self.workspace.run_log(self.run_id), self.run_id,
                              run_facts(self.opts, plan.mode, self.base_url))
        except BaseException:
            self.run_log.close()
            raise
        self.view = view = RunLogView(self.run_log, self.view)  # every event and result reaches the log too
        try:
            summary = self._run(orders, plan, skipped)
        except BaseException as exc:
            self.run_log.crash(exc)  # the file only: the console says it its own way
            self.run_log.close()
            raise
        finally:
            self.view = view.inner
        self.run_log.close(summary)
        return summary

    def _run(self, orders: OrdersFile, plan: RunPlan, skipped: int) -> RunSummary:
        exit_code, message, stream = EXIT_OK, "", None
        if self.view:
            self.view.start(self.run_id, len(plan.tasks), skipped, plan.mode)
        heartbeat = Heartbeat(self.store.path, self.run_id).__enter__()
        try:
            stream = get_mode(plan.mode).stream(plan)
            exit_code, message = self._consume(stream)
        except (KeyboardInterrupt, Exception) as exc:
            if stream is not None:
                stream.close()  # its workers and browsers stop now, before the user is told why
            exit_code, message = self._stopped(exc, plan.worker.job)  # re-raises what is not a stop
        finally:
            heartbeat.__exit__(None, None, None)
            self._close_run(plan, exit_code)
        return self._finish(orders, Path(plan.worker.job.out_dir), exit_code, message, skipped)

    def _prepare(self) -> tuple[OrdersFile, RunPlan, int]:
        """Everything before the first browser, planned by core/preparation/planner.py: the options
        checked (FatalError/OrdersError, nothing written), then the store opened, what crashed runs
        left recovered, and the POs to process planned."""
        opts = self.opts
        inputs = planner.check_inputs(opts, self.workspace)
        self.base_url, self.mode = inputs.base_url, inputs.mode
        self.store = RunStore(self.workspace.store_path)
        for dead in self.store.interrupt_dead_runs(run_process_alive):
            log.info("run %s stopped without a word (killed?): marked INTERRUPTED", dead)
        self.run_id = self.store.begin_run(inputs.mode, {
            "orders": str(opts.orders), "site": inputs.site_name, "site_file": str(inputs.site_file or ""),
            "base_url": inputs.base_url})
        self.activities = ActivityLog.into_store(self.store, self.run_id)
        job = planner.job_config(opts, inputs, self.run_id)
        # First the leftovers of runs that died (their orphaned workers may still be writing), then
        # what they left in this output folder.
        sweep_leftovers(opts.profiles_root)
        self._recover(job)
        chosen = planner.select_tasks(inputs.orders, self.store, opts)
        self._standing |= chosen.standing
        for po in chosen.pending:
            self.store.mark_status(self.run_id, po, Status.PENDING.value)
        self.checked = chosen.checked
        log.info("run %s: %d PO(s) to process, %d already completed, output %s", self.run_id, len(chosen.tasks),
                 chosen.skipped, inputs.out)
        return inputs.orders, planner.run_plan(opts, inputs, job, chosen.tasks), chosen.skipped

    def _stopped(self, exc: BaseException, job: JobConfig) -> tuple[int, str]:
        """The exit code and message of a run its stream did not finish (the stream is closed); an
        error that is not a reason to stop (a bug, a fatal error) is raised again."""
        if isinstance(exc, KeyboardInterrupt):
            return EXIT_INTERRUPTED, "Stopped by the user; run the same command again to finish."
        if isinstance(exc, PortalUnreachable):
            self._forget_unanswered(exc.results, job)
            return EXIT_STOPPED, str(exc)
        if not is_disk_full(exc):
            raise exc
        # A full disk under the output folder or the run store: every further PO would fail alike.
        log.debug("disk full", exc_info=exc)
        return EXIT_STOPPED, (
            f"The run stopped: the disk is full (DISK_FULL), no room left to write in {job.out_dir}. Free some "
            "space, then run the same command again: finished POs are kept, the rest are PENDING.")

    def _close_run(self, plan: RunPlan, exit_code: int) -> None:
        """The store's last words on this run; with a full disk these writes may fail too: what they
        would say, a rerun finds anyway."""
        assert self.store is not None and self.activities is not None
        _unless_disk_full(self._mark_unfinished, plan.tasks, exit_code)
        _unless_disk_full(self._drop_unpublished_journals, plan.worker.job)
        _unless_disk_full(self.activities.close_all)
        _unless_disk_full(self.store.finish_run, self.run_id,
                          {EXIT_OK: "DONE", EXIT_INCOMPLETE: "DONE"}.get(exit_code, "STOPPED"))

    def _recover(self, job: JobConfig) -> None:
        """Finish what a crashed run left: adopt published folders, drop half-done staging."""
        assert self.store is not None
        for entry in read_journal(job.workspace):
            outcome = entry.outcome
            if outcome is not None and entry.published:
                prev = self.store.task(outcome.po_number)
                if not prev or prev["status"] != outcome.status.value or prev["finished"] != outcome.finished:
                    log.info("PO %s: adopting %s published before the last run stopped", outcome.po_number,
                             outcome.download_folder)
                    self._record(outcome_to_result(outcome, "recovered"), notify=False)
            elif outcome is not None:
                self._put_back_replaced(outcome)
            entry.drop()
        shutil.rmtree(job.workspace.staging_root, ignore_errors=True)
        for key in self.store.keys_with_status([Status.RUNNING.value]):
            self.store.mark_status(self.run_id, key, Status.INTERRUPTED.value, reason="RUN_STOPPED")

    def _put_back_replaced(self, outcome: PoOutcome) -> None:
        """A publish that did not finish: the folder it was replacing goes back where the store says."""
        assert self.store is not None
        prev = self.store.task(outcome.po_number)
        for folder in {outcome.download_folder, (prev or {}).get("data", {}).get("download_folder", "")} - {""}:
            if restore_replaced(folder):
                log.info("PO %s: %s put back (a publish stopped while replacing it)", outcome.po_number, folder)

    def _drop_unpublished_journals(self, job: JobConfig) -> None:
        """A journal whose folder never appeared (the publish failed) promises nothing: drop it now, and
        put back the folder it was replacing."""
        for entry in read_journal(job.workspace):
            if entry.outcome is not None and not entry.published:
                self._put_back_replaced(entry.outcome)
                entry.drop()

    def _consume(self, stream: Iterable[TaskResult | Event]) -> tuple[int, str]:
        """Write every result and event to the store; stop the stream when a login is needed."""
        assert self.store is not None
        # Browsers that may sign each other out (profile clones sharing one session cookie): the mode says.
        watch = SignInWatch(one_session_possible=traits_of(self.mode).may_sign_each_other_out(self.opts.workers))
        breaker = CircuitBreaker(self.base_url)
        for item in stream:
            watch.observe(item)
            if isinstance(item, Event):
                if is_recording(item):  # a session recording has its own table, not the timeline
                    self._store_recording(item)
                    continue
                self.store.record_events(self.run_id, [item])
                if self.activities:
                    self.activities.observe(item)
                if item.action == PoEvent.ATTEMPT_START and item.task_key not in self._standing:
                    self.store.mark_status(self.run_id, item.task_key, Status.RUNNING.value,
                                           worker_id=item.worker_id, started=item.ts)
                if self.view:
                    self.view.event(item)
            else:
                if item.error_class == ErrorClass.FATAL.value:
                    # An error that escaped the workflow (a broken site file, a full disk): in
                    # sequential mode it stops the run, and a worker's must too, or every further
                    # PO fails the same way. Its PO stays PENDING.
                    raise fatal_error(item.reason, item.error)
                if breaker.hold(item):  # maybe the portal is gone: decided by the next results
                    continue
                for held in breaker.release():
                    self._record(held)
                # One "sign in" answer on screen, however many workers meet the sign-in page.
                self._record(item, notify=item is watch.login or item.status != Status.LOGIN_REQUIRED.value)
            if watch.login is not None and watch.verdict() is not None:
                close = getattr(stream, "close", None)
                if close:
                    close()
                for held in breaker.release():  # single connection failures before the sign-in page
                    self._record(held)
                return EXIT_LOGIN, watch.message()
        for held in breaker.release():
            self._record(held)
        if watch.login is not None:
            return EXIT_LOGIN, watch.message()
        return EXIT_OK, ""

    def _forget_unanswered(self, results: list[TaskResult], job: JobConfig) -> None:
        """POs the portal never answered when it went away stay PENDING: their empty failure folders go
        (those of results held back, and of results still on their way when the stream closed: their
        journals name them), unless an earlier outcome of the PO stands, which the new folder replaced."""
        unanswered = [outcome_from_result(r) for r in results if r.key not in self._standing]
        for result in results:
            if result.key in self._standing:
                self._record(result, notify=False)
        for entry in read_journal(job.workspace):
            outcome = entry.outcome
            if (outcome is not None and outcome.reason == CircuitBreaker.REASON
                    and outcome.po_number not in self._standing):
                unanswered.append(outcome)
                entry.drop()
        out = Path(job.out_dir)
        for outcome in unanswered:
            folder = Path(outcome.download_folder) if outcome.download_folder else None
            while folder and out in folder.parents and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()  # and a supplier folder it leaves empty
                folder = folder.parent

    def _store_recording(self, event: Event) -> None:
        try:
            store_recording(self.store, self.run_id, event)
        except Exception as exc:  # a damaged recording must not stop the run
            log.warning("recording of PO %s attempt %d not stored: %s", event.task_key, event.attempt, exc)

    def _record(self, result: TaskResult, notify: bool = True) -> None:
        assert self.store is not None
        outcome = outcome_from_result(result)
        if outcome.status is Status.LOGIN_REQUIRED:
            # Not an answer about this PO: it waits for the next run like the others (an outcome it
            # already had stands).
            if result.key not in self._standing:
                self.store.mark_status(self.run_id, result.key, Status.PENDING.value, reason="LOGIN_REQUIRED")
        else:
            self.store.record_result(self.run_id, result, [asdict(f) for f in outcome.files])
            self._standing.discard(result.key)
        self.store.record_attempt(self.run_id, result.key, result.attempts, result.worker_id, result.started,
                                  result.finished, result.status, result.reason, result.error[:500])
        self.workspace.journal(result.key).unlink(missing_ok=True)
        if self.view and notify:
            self.view.task_done(result.worker_id, outcome)

    def _mark_unfinished(self, tasks: list[Task], exit_code: int = EXIT_INTERRUPTED) -> None:
        if self.store is None:
            return
        keys = [t.key for t in tasks]
        running = self.store.keys_with_status([Status.RUNNING.value]) & set(keys)
        # A PO cut short by a login pause, or by a run that stopped itself (full disk, portal gone), waits
        # for the next run like the rest: not one answer per worker.
        status, reason = ((Status.PENDING.value, "LOGIN_REQUIRED") if exit_code == EXIT_LOGIN
                          else (Status.PENDING.value, "RUN_STOPPED") if exit_code == EXIT_STOPPED
                          else (Status.INTERRUPTED.value, "RUN_STOPPED"))
        for key in running:
            self.store.mark_status(self.run_id, key, status, reason=reason)

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
        changes = [c for c in self.store.file_changes(self.run_id) if c["key"] in outcomes]
        arrived = [c for c in changes if c["brought_by"] == self.run_id]
        report = self._write_report(out, orders)
        results_path = _unless_disk_full(write_results,
            out / f"{orders.path.stem}_results.xlsx", orders, outcomes, report_link=str(report) if report else None,
            run_id=self.run_id, changes=changes,
            run_info={"run id": self.run_id, "orders file": str(orders.path), "output folder": str(out),
                      "mode": self.mode, "site": self.opts.site,
                      "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "skipped (already completed)": skipped})
        self.store.close()
        if results_path is None:
            log.warning("the results workbook could not be written: the disk is full")
        summary = RunSummary(self.run_id, exit_code, counts, outcomes, results_path, out, message, skipped,
                             report_path=report, log_path=self.run_log.path if self.run_log else None,
                             checked=self.checked, new_files=len(arrived),
                             new_file_pos=len({c["key"] for c in arrived}),
                             refetched_files=sum(1 for c in arrived if c["refetched"]),
                             removed_files=sum(1 for c in changes if c["removed_on_portal"] == self.run_id))
        if self.view:
            self.view.finish(summary)
        return summary


    def _write_report(self, out: Path, orders: OrdersFile) -> Path | None:
        """The HTML run report; a report that cannot be written costs a warning, never the run."""
        assert self.store is not None
        try:
            return write_report(self.store, self.run_id, out, report_path(out, orders.path))
        except Exception as exc:
            log.warning("the run report could not be written: %s", exc)
            return None


def _unless_disk_full(action, *args, **kw):
    """Run `action`; a full disk makes it a warning (and None) instead of an error. A half-written file
    object that fails again when it is collected (openpyxl's zip file) stays quiet too: no traceback."""
    previous = sys.unraisablehook
    sys.unraisablehook = lambda u: log.debug("while collecting a half-written file: %s", u.exc_value)
    try:
        try:
            return action(*args, **kw)
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            log.warning("%s skipped: the disk is full (%s)", getattr(action, "__name__", "a write"), exc)
            return None
    finally:
        gc.collect()
        sys.unraisablehook = previous
