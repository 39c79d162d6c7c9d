"""The per-PO workflow: the same code in sequential, parallel, Grid and single-session modes.

One attempt: open the PO page, recognise what it is (core/workflow/page_reader.py), download every attachment
into a per-attempt staging folder (core/workflow/download_batch.py on a local browser, several at once;
core/workflow/download_one_by_one.py on a Grid node), fall back to the requisition when the PO has none,
verify, and publish the folder `<Supplier>/<PO>_<STATUS>` in one rename (core/workflow/publish.py). The
attempt loop around it lets the error class decide: transient errors are retried with backoff (a
dead browser is restarted first), business outcomes are answers, a login page stops the whole run.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from pobatch.core.events import PoEvent
from pobatch.core.results import PoOutcome
from pobatch.core.sites import SiteDefinition, resolve_site
from pobatch.core.status import Status
from pobatch.core.workflow.artifacts import capture_before_kill, capture_failure, drain_console
from pobatch.core.workflow.attachments import Collector, PageResult
from pobatch.core.workflow.download_batch import BatchCollector
from pobatch.core.workflow.download_one_by_one import OneByOneCollector
from pobatch.core.workflow.job_config import JobConfig
from pobatch.core.workflow.page_ahead import PageAhead
from pobatch.core.workflow.page_probes import REQUISITION_JS, PageProbe, PageState, Settle
from pobatch.core.workflow.page_reader import PageReader
from pobatch.core.workflow.po_task import PoTaskPayload
from pobatch.core.workflow.progress import TIMEOUT_REASONS, AttemptProgress
from pobatch.core.workflow.publish import Publisher
from pobatch.core.workflow.recorder import SessionRecorder
from pobatch.corelib.browser.session import BrowserSession
from pobatch.corelib.browser.download_sink import DownloadSink, EventDownloadSink
from pobatch.corelib.errors import (
    DiskFullError,
    ErrorClass,
    PobatchError,
    TransientError,
    classify,
    is_disk_full,
    reason_of,
)
from pobatch.corelib.retry import jitter_rng
from pobatch.corelib.worker_pool.tasks import Event
from pobatch.corelib.throttle import SharedThrottle
from pobatch.corelib.tree_removal import remove_tree
from pobatch.corelib.watchdog import Watchdog

log = logging.getLogger(__name__)


class _Partial(TransientError):
    """Some attachments did not arrive: worth another attempt; if it is the last, PARTIAL stands."""

    def __init__(self, message: str, page: PageResult, po_url: str) -> None:
        super().__init__(message, reason="DOWNLOAD_FAILED")
        self.page = page
        self.po_url = po_url


class PoJob:
    """Runs POs on one BrowserSession; emits events; returns a PoOutcome, never raises for a PO."""

    def __init__(
        self,
        session: BrowserSession,
        config: JobConfig,
        emit: Callable[[Event], None] | None = None,
        worker_id: str = "main",
        site: SiteDefinition | None = None,
        sink: DownloadSink | None = None,
    ) -> None:
        self.session = session
        # A local browser: its own download events, files spooled under their GUIDs in its download
        # folder. A Grid node's folder otherwise: emptied after every download, so every file belongs
        # to one click.
        self.sink: DownloadSink | EventDownloadSink
        if sink is not None:
            self.sink = sink
        elif session.download_dir is not None:
            self.sink = EventDownloadSink(session, session.download_dir)
        else:
            raise ValueError("PoJob needs a browser started with its own download_dir, or a download sink")
        self.config = config
        self.site = site or resolve_site(config.site, config.site_file or None)
        self._emit = emit or (lambda e: None)
        self.worker_id = worker_id
        self._po = ""
        self._attempt_no = 0
        self._captured: dict[str, Any] | None = None  # taken from a timed-out attempt's browser before the kill
        self.recorder = SessionRecorder(self._emit, worker_id) if config.record else None
        self.throttle = SharedThrottle(config.workspace.throttle_path)
        self.progress = AttemptProgress()
        self.pages = PageReader(self.site, config.base_url, config.page_timeout, self.throttle, self.event,
                                self.recorder, self.progress)
        # Several files at once on a browser whose download events we see; one by one otherwise.
        self.collector: Collector
        if isinstance(self.sink, EventDownloadSink):
            self.collector = BatchCollector(session, self.sink, config, self.pages)
        else:
            self.collector = OneByOneCollector(session, self.sink, config, self.pages)
        self.publisher = Publisher(config, self.event)
        # The next PO's page loads ahead where this browser's DevTools link is ours (a local browser);
        # a recording needs every page opened in its window (BiDi preload scripts), so not then.
        local = isinstance(self.sink, EventDownloadSink)
        self.ahead = PageAhead(self.pages, lambda: self.sink.tracker.link,
                               enabled=config.page_ahead and not config.record and local)
        self._up_next: PoTaskPayload | None = None

    # -- the attempt loop -------------------------------------------------------------------------
    def process(self, payload: PoTaskPayload, prior_attempts: int = 0,
                up_next: PoTaskPayload | None = None) -> PoOutcome:
        """Every attempt at one PO until it has an answer; `up_next` is the PO that will probably come
        next, whose page loads ahead while this one's files download."""
        policy = self.config.retry
        self._up_next = up_next
        started = time.time()
        attempt = prior_attempts
        while True:
            attempt += 1
            self._po, self._attempt_no = payload.po_number, attempt
            t0 = time.time()
            if self.recorder:
                self.recorder.begin(payload.po_number, attempt)
            watchdog = Watchdog(self.config.po_timeout, lambda po=payload.po_number, a=attempt, t=t0:
                                self._capture_then_abort(po, a, t), f"PO {payload.po_number}")
            self.progress.begin(watchdog.touch)
            try:
                with watchdog:
                    outcome = self._attempt(payload, attempt)
                outcome.attempts, outcome.started, outcome.finished = attempt, started, time.time()
                self.event(PoEvent.ATTEMPT_END, outcome=outcome.status.value, detail=outcome.reason)
                return outcome
            except Exception as exc:  # classified once, here
                if is_disk_full(exc):
                    # No room to write: no capture, no retry, no failure folder (the attempt's staging
                    # goes below); the run stops and this PO stays PENDING.
                    raise DiskFullError(f"PO {payload.po_number}: no space left to write: {exc}") from exc
                err_class = classify(exc)
                reason = reason_of(exc)
                if watchdog.expired:  # the browser was killed on purpose: say why, and what it waited for
                    err_class, reason = ErrorClass.TRANSIENT, self.progress.timeout_reason
                    exc = TransientError(f"no progress for {self.config.po_timeout:.0f}s while waiting for "
                                         f"{self.progress.waiting.value}", reason=reason)
                self._capture_failure(payload.po_number, attempt, exc, reason, t0)
                self.event(PoEvent.ATTEMPT_END, outcome="error", detail=f"{reason}: {exc}"[:500])
                log.info("PO %s attempt %d failed (%s, %s): %s", payload.po_number, attempt, err_class.value,
                         reason, str(exc).splitlines()[0] if str(exc) else "")
                if err_class is ErrorClass.LOGIN and policy.should_retry(ErrorClass.TRANSIENT, attempt) and \
                        self.session.started and self.ahead.sign_in_may_be_a_race(self.session.driver):
                    err_class, reason = ErrorClass.TRANSIENT, "SIGN_IN_RACE"
                if err_class is ErrorClass.LOGIN:
                    return self._final(payload, Status.LOGIN_REQUIRED, reason, str(exc), attempt, started)
                if err_class is ErrorClass.FATAL and not isinstance(exc, PobatchError):
                    # An unexpected bug in one PO must not end the batch: record it and go on.
                    return self._final(payload, Status.FAILED, reason, f"{type(exc).__name__}: {exc}", attempt, started)
                if err_class is ErrorClass.FATAL:
                    raise
                if not self.session.is_alive():
                    self.event(PoEvent.BROWSER_RESTART, detail=reason)
                    self.session.restart()
                if policy.should_retry(err_class, attempt):
                    delay = policy.delay(attempt, jitter_rng(payload.po_number, attempt))
                    delay = max(delay, getattr(exc, "retry_after", 0.0))
                    self.event(PoEvent.RETRY_WAIT, detail=f"{delay:.1f}s")
                    time.sleep(delay)
                    continue
                if isinstance(exc, _Partial):
                    status, po_url = Status.PARTIAL, exc.po_url
                    page = dataclasses.replace(exc.page, reason=exc.page.reason or exc.reason)
                else:
                    status = Status.TIMEOUT if reason in TIMEOUT_REASONS.values() else Status.FAILED
                    page, po_url = PageResult(reason=reason), self._url(payload)
                message = str(exc).splitlines()[0][:500] if str(exc) else reason
                try:
                    # Every PO gets its folder, a failed one too, so the user sees it where they look.
                    return self._publish(payload, status, page, po_url, attempt, started, error=message)
                except Exception as pub_exc:  # e.g. a path too long for Windows: still an answer
                    if is_disk_full(pub_exc):
                        raise DiskFullError(f"PO {payload.po_number}: no space left to write: {pub_exc}") from pub_exc
                    return self._final(payload, Status.FAILED, "PUBLISH_FAILED", f"{message}; {pub_exc}",
                                       attempt, started)
            finally:
                if self.recorder:
                    self.recorder.finish(self.session.driver if self.session.started else None)
                self._cleanup_attempt(payload.po_number, attempt)
                log.debug("PO %s attempt %d took %.2fs", payload.po_number, attempt, time.time() - t0)

    # -- one attempt ------------------------------------------------------------------------------
    def _attempt(self, payload: PoTaskPayload, attempt: int) -> PoOutcome:
        self.session.start()
        self.sink.clear()
        driver = self.session.driver
        drain_console(driver)  # the console log of a failure is then this attempt's own
        self.collector.reset_windows(driver)
        files_dir = self._attempt_dir(payload.po_number, attempt) / "files"
        files_dir.mkdir(parents=True, exist_ok=True)
        url = self._url(payload)
        self.event(PoEvent.ATTEMPT_START, url=url)
        self.pages.new_attempt()
        self.ahead.new_attempt()
        self.collector.hold(frozenset(h["identity"] for h in payload.held if h.get("intact") and h.get("identity")))
        self.throttle.wait()  # another worker may have been told to slow down
        probe = self.ahead.open(driver, url, self.site.expectation("po", self.site.po_id(payload.po_number),
                                                                   self.config.base_url), key=payload.po_number)
        if probe.state in (PageState.NOT_FOUND, PageState.NOT_AUTHORIZED):
            reason = "NOT_AUTHORIZED" if probe.state == PageState.NOT_AUTHORIZED else ""
            return self._publish(payload, Status.PO_NOT_FOUND, PageResult(reason=reason), url, attempt, 0)
        self.pages.check_selectors(driver)
        self.pages.await_attachments(driver, probe)
        self.pages.stop_loading(driver)
        if self._up_next is not None:  # judged: from here on the page is only clicked
            self.ahead.start(driver, self._url(self._up_next), self._up_next.po_number)
        page = self.collector.collect(url, files_dir, source="po")
        self.pages.confirm_settled(self.session.driver, page.found)
        if page.found == 0:
            req = self._requisition_fallback(files_dir)
            if req is not None:
                req.supplier = page.supplier or req.supplier
                page = req
        if page.failures:
            raise _Partial(f"{len(page.failures)} of {page.found} attachment(s) failed: "
                           + "; ".join(page.failures)[:400], page, url)
        status = Status.COMPLETED if page.found else Status.NO_ATTACHMENTS
        return self._publish(payload, status, page, url, attempt, 0)

    def _requisition_fallback(self, files_dir: Path) -> PageResult | None:
        """The PO has no attachments of its own: its requisition's, if it links one. The requisition
        page must prove its identity as a PO page does, or the answer would rest on a guess."""
        driver = self.session.driver
        if not self.site.requisition_selector or not self.site.requisition_path:
            return None
        req_url = driver.execute_script(REQUISITION_JS, self.site.requisition_selector) or ""
        if not req_url:
            return None
        rid = self.site.requisition_id(req_url)
        if not rid:
            raise TransientError(f"the requisition link {req_url} does not match the site's requisition path "
                                 f"{self.site.requisition_path}", reason="UNRECOGNISED_PAGE")
        self.event(PoEvent.REQUISITION_FALLBACK, url=req_url)
        probe = self.pages.open(driver, req_url, self.site.expectation("requisition", rid, self.config.base_url))
        if probe.state in (PageState.NOT_FOUND, PageState.NOT_AUTHORIZED):
            # The PO's own answer stands (it has no attachments); say why its requisition added none.
            return PageResult(source="requisition", reason=f"REQUISITION_{probe.state.upper()}")
        self.pages.await_attachments(driver, probe)
        self.pages.stop_loading(driver)
        req = self.collector.collect(req_url, files_dir, source="requisition")
        self.pages.confirm_settled(self.session.driver, req.found)
        req.reason = "REQUISITION_FALLBACK" if req.found else ""
        return req

    def look(self, url: str, expect: dict[str, Any] | None) -> PageProbe:
        """Open a page and say what it shows, acting on nothing (pobatch check)."""
        self.session.start()
        return self.pages.look(self.session.driver, url, expect)

    def await_attachments(self, driver: Any, probe: PageProbe) -> Settle:
        """Wait until the open page's attachment list can be counted (pobatch check)."""
        return self.pages.await_attachments(driver, probe)

    def _publish(self, payload: PoTaskPayload, status: Status, page: PageResult, po_url: str, attempt: int,
                 started: float, error: str = "") -> PoOutcome:
        staged = self._attempt_dir(payload.po_number, attempt) / "publish"
        return self.publisher.publish(payload, status, page, po_url, staged, attempt, started, error=error,
                                      seen=self.collector.seen)

    def _final(self, payload: PoTaskPayload, status: Status, reason: str, error: str, attempt: int,
               started: float) -> PoOutcome:
        """An outcome without a folder: login stops and failures are not answers about the PO."""
        return PoOutcome(
            po_number=payload.po_number, status=status, reason=reason, error_message=error, attempts=attempt,
            po_url=self._url(payload), started=started,
            finished=time.time(), last_processed=datetime.now().isoformat(timespec="seconds"),
        )

    def _capture_then_abort(self, po: str, attempt: int, started: float) -> None:
        """The watchdog's lever: what the browser shows first (within a short deadline), then the kill."""
        self._captured = capture_before_kill(
            self.session, self.config.workspace.artifacts(self.config.run_id, po, attempt), started=started)
        self.session.abort()

    def _capture_failure(self, po: str, attempt: int, exc: BaseException, reason: str, started: float) -> None:
        """Screenshot, page HTML and console log of a failed attempt, for the report; never raises."""
        captured, self._captured = self._captured, None
        folder = capture_failure(self.session, self.config.workspace.artifacts(self.config.run_id, po, attempt),
                                 key=po, attempt=attempt, error=exc, reason=reason, worker_id=self.worker_id,
                                 started=started, captured=captured)
        if folder:
            self.event(PoEvent.FAILURE_CAPTURED, detail=str(folder))

    # -- plumbing ---------------------------------------------------------------------------------
    def _url(self, payload: PoTaskPayload) -> str:
        return self.site.po_url(self.config.base_url, payload.po_number)

    def _attempt_dir(self, po: str, attempt: int) -> Path:
        return self.config.workspace.attempt_staging(po, self.worker_id, attempt)

    def _cleanup_attempt(self, po: str, attempt: int) -> None:
        remove_tree(self._attempt_dir(po, attempt))

    def event(self, action: str, **kw: Any) -> None:
        """Put a step on the timeline; every step is also the attempt's progress (its watchdog)."""
        self.progress.made()
        kw.setdefault("window", "main")
        self._emit(Event(action=action, task_key=self._po, worker_id=self.worker_id, attempt=self._attempt_no, **kw))
