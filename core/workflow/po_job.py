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


@dataclasses.dataclass(frozen=True)
class _Failure:
    """A failed attempt, classified once: the error to report, its class (which decides what follows)
    and its reason."""

    exc: Exception
    err_class: ErrorClass
    reason: str


def _stop_if_disk_full(po: str, exc: BaseException) -> None:
    """No room to write: no capture, no retry, no failure folder (the attempt's staging goes anyway);
    the run stops and this PO stays PENDING."""
    if is_disk_full(exc):
        raise DiskFullError(f"PO {po}: no space left to write: {exc}") from exc


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
        self._up_next = up_next
        started = time.time()
        attempt = prior_attempts
        while True:
            attempt += 1
            outcome = self._run_attempt(payload, attempt, started)
            if outcome is not None:
                return outcome

    def _run_attempt(self, payload: PoTaskPayload, attempt: int, started: float) -> PoOutcome | None:
        """One attempt under its watchdog: its outcome, or None when it failed and waited for the next."""
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
            return self._after_failure(payload, attempt, started, t0, self._classify(payload.po_number, exc, watchdog))
        finally:
            self._end_attempt(payload.po_number, attempt, t0)

    def _after_failure(self, payload: PoTaskPayload, attempt: int, started: float, t0: float,
                       failure: _Failure) -> PoOutcome | None:
        """The class alone decides what a failed attempt leads to (docs/design.md, "Errors and retries"):
        a sign-in page stops the run, an unexpected bug fails only this PO, a fatal error stops the run,
        and anything else is tried again while the policy allows, then answered by the PO's folder.
        None: wait over, try again."""
        self._record_failure(payload.po_number, attempt, failure, t0)
        failure = self._sign_in_race(failure, attempt)
        if failure.err_class is ErrorClass.LOGIN:
            return self._final(payload, Status.LOGIN_REQUIRED, failure.reason, str(failure.exc), attempt, started)
        if failure.err_class is ErrorClass.FATAL and not isinstance(failure.exc, PobatchError):
            # An unexpected bug in one PO must not end the batch: record it and go on.
            return self._final(payload, Status.FAILED, failure.reason,
                               f"{type(failure.exc).__name__}: {failure.exc}", attempt, started)
        if failure.err_class is ErrorClass.FATAL:
            raise failure.exc
        self._restart_if_dead(failure.reason)
        if self.config.retry.should_retry(failure.err_class, attempt):
            self._wait_before_retry(payload.po_number, attempt, failure.exc)
            return None
        return self._publish_failure(payload, failure, attempt, started)

    def _classify(self, po: str, exc: Exception, watchdog: Watchdog) -> _Failure:
        """The attempt's error with its class and reason. When the watchdog killed the browser, the
        error the kill caused says nothing: the attempt timed out, waiting for what its progress says."""
        _stop_if_disk_full(po, exc)
        if watchdog.expired:
            reason = self.progress.timeout_reason
            return _Failure(TransientError(f"no progress for {self.config.po_timeout:.0f}s while waiting for "
                                           f"{self.progress.waiting.value}", reason=reason),
                            ErrorClass.TRANSIENT, reason)
        return _Failure(exc, classify(exc), reason_of(exc))

    def _record_failure(self, po: str, attempt: int, failure: _Failure, started: float) -> None:
        """Every failed attempt, retried or not, leaves its artifacts, its ATTEMPT_END and a log line."""
        exc, reason = failure.exc, failure.reason
        self._capture_failure(po, attempt, exc, reason, started)
        self.event(PoEvent.ATTEMPT_END, outcome="error", detail=f"{reason}: {exc}"[:500])
        log.info("PO %s attempt %d failed (%s, %s): %s", po, attempt, failure.err_class.value,
                 reason, str(exc).splitlines()[0] if str(exc) else "")

    def _sign_in_race(self, failure: _Failure, attempt: int) -> _Failure:
        """A sign-in page while the next page loaded ahead may be the portal renewing its session on
        every answer, not a session that ended: transient (SIGN_IN_RACE) while an attempt is left."""
        if failure.err_class is ErrorClass.LOGIN and self.config.retry.should_retry(ErrorClass.TRANSIENT, attempt) \
                and self.session.started and self.ahead.sign_in_may_be_a_race(self.session.driver):
            return _Failure(failure.exc, ErrorClass.TRANSIENT, "SIGN_IN_RACE")
        return failure

    def _restart_if_dead(self, reason: str) -> None:
        """A dead browser is restarted before anything else uses it: the next attempt, or the folder."""
        if not self.session.is_alive():
            self.event(PoEvent.BROWSER_RESTART, detail=reason)
            self.session.restart()

    def _wait_before_retry(self, po: str, attempt: int, exc: BaseException) -> None:
        """The policy's backoff with this PO's own jitter, or longer when the portal asked (retry_after)."""
        delay = self.config.retry.delay(attempt, jitter_rng(po, attempt))
        delay = max(delay, getattr(exc, "retry_after", 0.0))
        self.event(PoEvent.RETRY_WAIT, detail=f"{delay:.1f}s")
        time.sleep(delay)

    def _publish_failure(self, payload: PoTaskPayload, failure: _Failure, attempt: int,
                         started: float) -> PoOutcome:
        """No attempt left: PARTIAL (some files arrived), TIMEOUT or FAILED, in a folder like any answer,
        so the user sees it where they look. A folder that cannot be written (a path too long for
        Windows) still leaves an answer: FAILED, PUBLISH_FAILED."""
        exc, reason = failure.exc, failure.reason
        if isinstance(exc, _Partial):
            status, po_url = Status.PARTIAL, exc.po_url
            page = dataclasses.replace(exc.page, reason=exc.page.reason or exc.reason)
        else:
            status = Status.TIMEOUT if reason in TIMEOUT_REASONS.values() else Status.FAILED
            page, po_url = PageResult(reason=reason), self._url(payload)
        message = str(exc).splitlines()[0][:500] if str(exc) else reason
        try:
            return self._publish(payload, status, page, po_url, attempt, started, error=message)
        except Exception as pub_exc:
            _stop_if_disk_full(payload.po_number, pub_exc)
            return self._final(payload, Status.FAILED, "PUBLISH_FAILED", f"{message}; {pub_exc}", attempt, started)

    def _end_attempt(self, po: str, attempt: int, t0: float) -> None:
        """However the attempt ended: its recording kept, its staging folder gone."""
        if self.recorder:
            self.recorder.finish(self.session.driver if self.session.started else None)
        self._cleanup_attempt(po, attempt)
        log.debug("PO %s attempt %d took %.2fs", po, attempt, time.time() - t0)

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
