"""The per-PO workflow: the same code in sequential, parallel and grid modes.

One attempt: open the PO page, recognise what it is, find every attachment, download them one at a
time into a per-attempt staging folder, fall back to the requisition when the PO has none, verify,
and publish the folder `<Supplier>/<PO>_<STATUS>` in one rename. The attempt loop around it lets the
error class decide: transient errors are retried with backoff (a dead browser is restarted first),
business outcomes are answers, a login page stops the whole run.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urljoin

from pobatch.core.artifacts import capture_before_kill, capture_failure, drain_console
from pobatch.core.events import PoEvent
from pobatch.core.page_probes import (
    BAD_SELECTORS_JS,
    FIND_ATTACHMENTS_JS,
    JS_CLICK,
    PAGE_STATE_JS,
    PREPARE_CLICK_JS,
    REQUISITION_JS,
    RETRY_AFTER_JS,
    SCROLL_CENTER_JS,
    SETTLE_JS,
    SUPPLIER_JS,
    PageProbe,
    PageState,
    Settle,
)
from pobatch.core.po_task import PoTaskPayload  # noqa: F401 - re-exported: its importers read it here
from pobatch.core.recorder import SessionRecorder
from pobatch.core.results import FileRecord, PoOutcome
from pobatch.core.sites import SiteDefinition, resolve_site
from pobatch.core.sites.site_file import describe_selector
from pobatch.core.status import Status
from pobatch.core.workspace import Workspace
from pobatch.corelib.browser_session import BrowserSession
from pobatch.corelib.devtools import DevToolsError
from pobatch.corelib.download_sink import DownloadBatch, DownloadSink, EventDownloadSink, Slot
from pobatch.corelib.downloads import DownloadStalled, DownloadTimeout, publish_folder, sha256_file
from pobatch.corelib.errors import (
    DiskFullError,
    ErrorClass,
    FatalError,
    LoginRequiredError,
    PobatchError,
    TransientError,
    classify,
    is_disk_full,
    reason_of,
)
from pobatch.corelib.polling import Backoff
from pobatch.corelib.retry import RetryPolicy, jitter_rng
from pobatch.corelib.safe_paths import contained, fit_in_path, name_from_page, safe_component, unique_name
from pobatch.corelib.tasks import Event
from pobatch.corelib.throttle import SharedThrottle, parse_retry_after
from pobatch.corelib.tree_removal import remove_tree
from pobatch.corelib.watchdog import Watchdog, quiet_dead_driver

log = logging.getLogger(__name__)

UNKNOWN_SUPPLIER = "Unknown supplier"
# A complete page that proves nothing may still be drawing itself: look again for this long before
# calling it unrecognised (only such pages pay it).
UNRECOGNISED_GRACE_S = 3.0
DEFAULT_RETRY_AFTER_S = 30.0  # a 429 that does not say how long to wait


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

    @property
    def workspace(self) -> Workspace:
        return Workspace(Path(self.out_dir))

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.backoff_base, self.backoff_max)


class _Partial(TransientError):
    """Some attachments did not arrive: worth another attempt; if it is the last, PARTIAL stands."""

    def __init__(self, message: str, outcome_parts: dict[str, Any]) -> None:
        super().__init__(message, reason="DOWNLOAD_FAILED")
        self.parts = outcome_parts


_ERROR_STATES = (PageState.SERVER_ERROR, PageState.NOT_FOUND, PageState.NOT_AUTHORIZED, PageState.CONNECTION_ERROR,
                 PageState.ERROR_PAGE, PageState.RATE_LIMITED)


def _a_web_page(slot: Slot, item: "_Found") -> bool:
    """The browser named the download as an HTML page while the attachment's label does not say so."""
    pages = (".html", ".htm")
    suggested = (slot.download.suggested if slot.download else "").lower()
    return suggested.endswith(pages) and not (item.name or "").lower().strip().endswith(pages)


def _pointer_click(driver, element) -> str:
    """A trusted click, for portals whose handlers ignore script clicks; an element that a floating
    toolbar covers gets the script click instead. Returns how it was clicked."""
    from selenium.common.exceptions import ElementClickInterceptedException, ElementNotInteractableException

    try:
        element.click()
        return "click"
    except (ElementClickInterceptedException, ElementNotInteractableException):
        driver.execute_script(JS_CLICK, element)
        return "js-click"


def _usable_link(href: str) -> bool:
    """An attachment's href that names what it downloads (not a script hook or an in-page anchor)."""
    href = (href or "").strip().lower()
    return bool(href) and not href.startswith(("javascript:", "#"))


@dataclass
class _Found:
    element: Any
    name: str
    href: str
    target: str


@dataclass
class _Downloaded:
    staged: Path
    hint: str  # the attachment's label on the page (its download attribute, title or text)
    source: str
    url: str = ""  # the attachment's link, or the URL the browser downloaded from
    suggested: str = ""  # the browser's suggested file name, in full (before any shortening)
    attribution: str = ""  # how the file was matched to its attachment: frame, url, order ('' one by one)


@dataclass(frozen=True)
class _Window:
    """The PO page's window as it stands between downloads: read once per page, not once per click
    (three WebDriver round trips per file saved)."""

    main: str
    handles: frozenset[str]
    url: str

    @classmethod
    def of(cls, driver) -> "_Window":
        return cls(driver.current_window_handle, frozenset(driver.window_handles), driver.current_url)


@dataclass
class _PageResult:
    supplier: str = ""
    found: int = 0
    downloaded: list[_Downloaded] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    source: str = "po"
    reason: str = ""


class PoJob:
    """Runs POs on one BrowserSession; emits events; returns a PoOutcome, never raises for a PO."""

    def __init__(
        self,
        session: BrowserSession,
        config: JobConfig,
        emit: Callable[[Event], None] | None = None,
        worker_id: str = "main",
        site: SiteDefinition | None = None,
        sleep: Callable[[float], None] = time.sleep,
        sink: DownloadSink | None = None,
    ) -> None:
        if sink is None and not session.spec.download_dir:
            raise ValueError("PoJob needs a browser started with its own download_dir, or a download sink")
        self.session = session
        # A local browser: its own download events, files spooled under their GUIDs in its download
        # folder. A Grid node's folder otherwise: emptied after every download, so every file belongs
        # to one click.
        self.sink: DownloadSink | EventDownloadSink = sink or EventDownloadSink(
            lambda: session.driver, Path(session.spec.download_dir))
        self.config = config
        self.site = site or resolve_site(config.site, config.site_file or None)
        self._emit = emit or (lambda e: None)
        self.worker_id = worker_id
        self._sleep = sleep
        self._probe_cfg = self.site.page_probe_config(config.base_url)
        self._expects: dict[str, dict[str, Any]] = {}  # URL -> what its page must prove
        self._selectors_checked = False
        self.throttle = SharedThrottle(config.workspace.throttle_path, sleep=sleep)
        self._po = ""
        self._attempt_no = 0
        self._captured: dict[str, Any] | None = None  # taken from a timed-out attempt's browser before the kill
        self.recorder = SessionRecorder(self._emit, worker_id) if config.record else None

    # -- the attempt loop -------------------------------------------------------------------------
    def process(self, payload: PoTaskPayload, prior_attempts: int = 0) -> PoOutcome:
        policy = self.config.retry
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
                if watchdog.expired:  # the browser was killed on purpose: say why
                    err_class, reason = ErrorClass.TRANSIENT, "TIMEOUT"
                    exc = TransientError(f"attempt ran past {self.config.po_timeout:.0f}s", reason="TIMEOUT")
                self._capture_failure(payload.po_number, attempt, exc, reason, t0)
                self.event(PoEvent.ATTEMPT_END, outcome="error", detail=f"{reason}: {exc}"[:500])
                log.info("PO %s attempt %d failed (%s, %s): %s", payload.po_number, attempt, err_class.value,
                         reason, str(exc).splitlines()[0] if str(exc) else "")
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
                    self._sleep(delay)
                    continue
                if isinstance(exc, _Partial):
                    status, parts = Status.PARTIAL, dict(exc.parts, reason=exc.parts.get("reason") or exc.reason)
                else:
                    status = Status.TIMEOUT if reason in ("TIMEOUT", "DOWNLOAD_TIMEOUT") else Status.FAILED
                    parts = {"reason": reason, "po_url": self._url(payload)}
                message = str(exc).splitlines()[0][:500] if str(exc) else reason
                try:
                    # Every PO gets its folder, a failed one too, so the user sees it where they look.
                    return self._publish_outcome(payload, status, parts, attempt, started, error=message)
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
        self.sink.clear()
        driver = self.session.driver
        drain_console(driver)  # the console log of a failure is then this attempt's own
        self._reset_windows(driver)
        files_dir = self._attempt_dir(payload.po_number, attempt) / "files"
        files_dir.mkdir(parents=True, exist_ok=True)
        url = self._url(payload)
        self.event(PoEvent.ATTEMPT_START, url=url)
        self._expects.clear()  # what each page of this attempt must prove, by URL (reloads reuse it)
        self.throttle.wait()  # another worker may have been told to slow down
        probe = self._open(driver, url, self.site.expectation("po", self.site.po_id(payload.po_number),
                                                              self.config.base_url))
        if probe.state in (PageState.NOT_FOUND, PageState.NOT_AUTHORIZED):
            reason = "NOT_AUTHORIZED" if probe.state == PageState.NOT_AUTHORIZED else ""
            return self._publish_outcome(payload, Status.PO_NOT_FOUND, {"reason": reason, "po_url": url}, attempt, 0)
        self._check_selectors(driver)
        self.await_attachments(driver, probe)
        page = self._collect(url, files_dir, source="po")
        self._confirm_settled(self.session.driver, page.found)
        if page.found == 0:
            req = self._requisition_fallback(files_dir)
            if req is not None:
                req.supplier = page.supplier or req.supplier
                page = req
        parts = {"supplier": page.supplier, "found": page.found, "downloaded": page.downloaded,
                 "reason": page.reason, "po_url": url}
        if page.failures:
            raise _Partial(f"{len(page.failures)} of {page.found} attachment(s) failed: "
                           + "; ".join(page.failures)[:400], parts)
        status = Status.COMPLETED if page.found else Status.NO_ATTACHMENTS
        return self._publish_outcome(payload, status, parts, attempt, 0)

    def _requisition_fallback(self, files_dir: Path) -> _PageResult | None:
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
        probe = self._open(driver, req_url, self.site.expectation("requisition", rid, self.config.base_url))
        if probe.state in (PageState.NOT_FOUND, PageState.NOT_AUTHORIZED):
            # The PO's own answer stands (it has no attachments); say why its requisition added none.
            return _PageResult(source="requisition", reason=f"REQUISITION_{probe.state.upper()}")
        self.await_attachments(driver, probe)
        req = self._collect(req_url, files_dir, source="requisition")
        self._confirm_settled(self.session.driver, req.found)
        req.reason = "REQUISITION_FALLBACK" if req.found else ""
        return req

    def _open(self, driver, url: str, expect: dict[str, Any] | None = None) -> PageProbe:
        """Navigate and classify the page; raise for login, server errors and pages that prove nothing.
        `expect` is what the page must prove; a reload of a page already opened reuses it."""
        from selenium.common.exceptions import TimeoutException

        expect = self._expects.setdefault(url, expect) if expect is not None else self._expects.get(url)

        if self.recorder:
            self.recorder.before_navigation(driver)  # a navigation ends the page's recording buffer
        try:
            driver.get(url)
        except TimeoutException as exc:
            self.event(PoEvent.OPEN, url=url, outcome="timeout")
            try:
                driver.execute_script("window.stop();")
            except Exception:
                pass
            raise TransientError(f"page did not load within {self.config.page_timeout:.0f}s: {url}",
                                 reason="TIMEOUT") from exc
        probe = self._wait_state(driver, expect)
        self.event(PoEvent.OPEN, url=url, outcome=probe.state, detail=probe.evidence[:200])
        state, evidence = probe.state, probe.evidence
        if state == PageState.LOGIN:
            raise LoginRequiredError(
                f"The portal asked for a sign-in ({evidence}). Sign in to {self.config.base_url} once "
                "('pobatch login', or run with --sign-in-if-needed), then run pobatch again: finished POs are kept."
            )
        if state == PageState.RATE_LIMITED:
            pause = self._retry_after(driver)
            self.throttle.hold(pause)
            self.event(PoEvent.RATE_LIMITED, url=url, detail=f"{pause:.1f}s")
            raise TransientError(f"the portal asked to slow down (HTTP 429) at {url}; every worker waits "
                                 f"{pause:.0f}s", reason="HTTP_429", retry_after=pause)
        if state == PageState.SERVER_ERROR:
            reason = f"HTTP_{probe.http}" if probe.http >= 500 else "HTTP_500"
            raise TransientError(f"the portal answered with a server error page at {url} ({evidence})", reason=reason)
        if state == PageState.CONNECTION_ERROR:
            raise TransientError(f"the connection to {url} failed ({evidence})", reason="CONNECTION_FAILED")
        if state == PageState.ERROR_PAGE:
            raise TransientError(f"the portal showed an error at {url}: {evidence}", reason="PORTAL_ERROR")
        if state == PageState.UNRECOGNISED:
            raise TransientError(f"the page at {url} is not the page pobatch expected ({evidence}); "
                                 "run 'pobatch check' to see what it shows", reason="UNRECOGNISED_PAGE")
        return probe

    def look(self, url: str, expect: dict[str, Any] | None) -> PageProbe:
        """Open a page and say what it shows, acting on nothing (pobatch check)."""
        driver = self.session.driver
        driver.get(url)
        probe = self._wait_state(driver, expect)
        if probe.state == PageState.READY:
            self._check_selectors(driver)
        return probe

    def _error_page_after_click(self, driver) -> PageProbe | None:
        """The page a click left in place of the PO page, when it is an error page (a link that answered
        with one instead of a file); a sign-in page raises. None: not an error page."""
        seen = self._probe(driver, None)
        if seen.state == PageState.LOGIN:
            raise LoginRequiredError(f"The portal asked for a sign-in while downloading ({seen.evidence}).")
        if seen.state in _ERROR_STATES or (seen.state == PageState.UNRECOGNISED and seen.http >= 400):
            return seen
        return None

    def _probe(self, driver, expect: dict[str, Any] | None) -> PageProbe:
        return PageProbe.of(driver.execute_script(PAGE_STATE_JS, self._probe_cfg, expect))

    def _wait_state(self, driver, expect: dict[str, Any] | None) -> PageProbe:
        """Poll the page until it shows a known state. A page that proves nothing is looked at again
        for a short grace (a script may still be drawing it) before it counts as unrecognised."""
        deadline = time.monotonic() + self.config.page_timeout
        grace_end = 0.0
        backoff = Backoff(first=0.005)
        while True:
            probe = self._probe(driver, expect)
            now = time.monotonic()
            if probe.state == PageState.UNRECOGNISED:
                grace_end = grace_end or now + min(UNRECOGNISED_GRACE_S, self.config.page_timeout)
                if now >= grace_end:
                    return probe
            elif probe.state != PageState.LOADING:
                return probe
            if now > deadline:
                raise TransientError(f"the page never showed a known shape ({probe.evidence})", reason="TIMEOUT")
            backoff.sleep()

    def _retry_after(self, driver) -> float:
        """Seconds a 429 asked for (its Retry-After header), or a default when it did not say."""
        try:
            value = driver.execute_async_script(RETRY_AFTER_JS)
        except Exception as exc:  # the page went away meanwhile: fall back to the default
            log.debug("Retry-After not readable: %s", exc)
            value = None
        seconds = parse_retry_after(value)
        return DEFAULT_RETRY_AFTER_S if seconds is None else seconds

    def _check_selectors(self, driver) -> None:
        """Once per browser: a selector the browser rejects is a broken site file, not a PO's fault."""
        if self._selectors_checked:
            return
        bad = driver.execute_script(BAD_SELECTORS_JS, {k: list(v) for k, v in self.site.selector_fields().items()})
        self._selectors_checked = not bad  # a broken file fails every PO that meets it, never only the first
        if bad:
            field_name, selector = bad[0]
            raise FatalError(describe_selector(self.site, field_name, selector,
                                               "the browser rejects this CSS selector"), reason="BAD_SITE_FILE")

    def _settle(self, driver) -> Settle:
        return Settle.of(driver.execute_script(SETTLE_JS, self._probe_cfg))

    def await_attachments(self, driver, probe: PageProbe) -> Settle:
        """Wait, with a bound, until the attachment area can be counted: no loading marker, the
        loaded marker present if the site has one, and either attachments in view or an area that
        has been present, empty and quiet for `empty_quiet_ms` (NO_ATTACHMENTS needs that evidence).
        A list a script draws after the page loaded is therefore awaited, not missed."""
        site = self.site
        settle = probe.settle
        deadline = time.monotonic() + site.settle_timeout_s
        backoff = Backoff(first=0.01, ceiling=0.1)
        while True:
            drawn = not settle.loading and (bool(settle.loaded) or not site.loaded_selectors)
            if drawn and settle.count > 0:
                return settle
            if drawn and settle.area and settle.quiet_ms >= site.empty_quiet_ms:
                return settle
            if time.monotonic() > deadline:
                break
            backoff.sleep()
            settle = self._settle(driver)
        if settle.loading or (site.loaded_selectors and not settle.loaded):
            what = f"the loading marker {settle.loading} never went away" if settle.loading else \
                "none of the loaded markers appeared"
            raise TransientError(f"the attachment list did not settle within {site.settle_timeout_s:.0f}s: {what}",
                                 reason="ATTACHMENTS_NOT_SETTLED")
        if not settle.area:
            raise TransientError("the page shows no attachments and none of the attachment areas "
                                 f"({', '.join(site.attachment_area_selectors)}), so it cannot say there are none",
                                 reason="UNRECOGNISED_PAGE")
        raise TransientError(f"the attachment area never stayed quiet for {site.empty_quiet_ms} ms",
                             reason="ATTACHMENTS_NOT_SETTLED")

    def _confirm_settled(self, driver, found: int) -> None:
        """After the downloads: the list counted must still be the whole list. The DOM must have been
        quiet for `quiet_ms` (usually long over while files downloaded, so this costs one round trip)
        and show as many attachments as were counted; a list that grew meanwhile is retried."""
        deadline = time.monotonic() + self.site.settle_timeout_s
        backoff = Backoff(first=0.01, ceiling=0.1)
        while True:
            settle = self._settle(driver)
            if settle.quiet_ms >= self.site.quiet_ms and not settle.loading:
                break
            if time.monotonic() > deadline:
                raise TransientError("the attachment list kept changing", reason="ATTACHMENTS_NOT_SETTLED")
            backoff.sleep()
        if settle.count != found:
            raise TransientError(f"the page showed {settle.count} attachment(s) after {found} were counted",
                                 reason="PAGE_CHANGED")

    def _find(self, driver) -> list[_Found]:
        return [_Found(el, meta["name"], meta["href"], meta["target"])
                for el, meta in driver.execute_script(FIND_ATTACHMENTS_JS, list(self.site.attachment_selectors))]

    def _collect(self, url: str, files_dir: Path, source: str) -> _PageResult:
        """Download every attachment on the open page: together, tracked by the browser's own download
        events (a local browser), or one click and one file at a time (a Grid node's folder)."""
        if isinstance(self.sink, EventDownloadSink):
            return self._collect_at_once(url, files_dir, source)
        return self._collect_one_by_one(url, files_dir, source)

    def _collect_at_once(self, url: str, files_dir: Path, source: str) -> _PageResult:
        """Start up to `files_at_once` attachments, await them together, start the next as one ends.

        Each download is matched to its click by the popup that started it, by its URL, or by click
        order (docs/design.md, downloads). Clicks that navigate the page's own frame (a plain link the
        browser may show as a page, a script that follows a link) are made one at a time, each once its
        download has begun: Chromium runs one navigation per frame anyway, and click order then is
        begin order. Same-origin plain links are marked as downloads first (the `download`
        attribute), so they need no frame and run together. A failed download is cancelled by its
        GUID; nothing else is disturbed, so no browser restart is needed.
        """
        from selenium.common.exceptions import StaleElementReferenceException

        assert isinstance(self.sink, EventDownloadSink)
        driver = self.session.driver
        supplier = driver.execute_script(SUPPLIER_JS, list(self.site.supplier_selectors)) or ""
        items = self._find(driver)
        result = _PageResult(supplier=supplier, found=len(items), source=source)
        self.event(PoEvent.ATTACHMENTS_FOUND, url=url, detail=f"{len(items)} on {source} page")
        if not items:
            return result
        limit = max(1, self.config.files_at_once)
        batch = self.sink.batch(self.config.download_timeout, self.config.stall_timeout,
                                is_login_url=lambda u: self.site.is_login_url(self.config.base_url, u))
        window = _Window.of(driver)
        popups: dict[str, Slot | None] = {}  # popup handle -> the click that opened it (None: not known)
        active: list[tuple[Slot, _Found]] = []
        # Clicks that can run together first; those that navigate the page's own frame (no usable link:
        # a script follows one) wait for each other's download to begin, so they go last.
        pending = sorted(range(len(items)), key=lambda i: not (items[i].target or _usable_link(items[i].href)))
        page_order: dict[int, int] = {}  # slot -> the attachment's place on the page
        taken: dict[int, int] = {}  # downloaded file -> the same
        t0 = time.monotonic()
        try:
            while pending or active:
                while pending and len(active) < limit:
                    idx = pending.pop(0)
                    try:
                        slot, mode = self._start_download(driver, items[idx], window, batch, popups, convert=limit > 1)
                    except StaleElementReferenceException:
                        items = self._find(driver)  # the page re-rendered: same attachments, fresh handles
                        if len(items) != result.found:
                            raise TransientError("the attachment list changed while downloading", reason="PAGE_CHANGED")
                        pending.insert(0, idx)
                        continue
                    active.append((slot, items[idx]))
                    page_order[id(slot)] = idx
                    if mode == "navigate":
                        self._await_batch(driver, window, batch, popups, active,
                                          lambda: slot.done or slot.download is not None or bool(slot.frames))
                if not active:
                    continue
                self._await_batch(driver, window, batch, popups, active, lambda: any(s.done for s, _ in active))
                for slot, item in [a for a in active if a[0].done]:
                    active.remove((slot, item))
                    if slot.ok and slot.converted and _a_web_page(slot, item):
                        # A plain link we marked as a download answered with an HTML page (a viewer,
                        # a notice): the browser saved the page; it is not the attachment.
                        slot.error = TransientError(f"the link answered with a web page, not a file "
                                                    f"({slot.download.suggested})", reason="DOWNLOAD_FAILED")
                    if slot.ok and slot.error is None:
                        try:
                            result.downloaded.append(self._take(batch, slot, item, files_dir, source))
                            taken[id(result.downloaded[-1])] = page_order[id(slot)]
                            continue
                        except TransientError as exc:  # its bytes are not what the browser reported
                            slot.error = exc
                    if slot.error is not None:
                        failure = f"{item.name or item.href}: {slot.error}"
                        result.failures.append(failure)
                        self.event(PoEvent.DOWNLOAD, outcome="failed", detail=failure[:300])
                if batch.extra:
                    extra, batch.extra = batch.extra, []
                    result.failures += [f"a download no attachment accounts for: {d.suggested}" for d in extra]
                    self.event(PoEvent.DOWNLOAD, outcome="failed", detail=f"{len(extra)} unexpected download(s)")
        finally:
            batch.close()
            left = [h for h in popups if h != window.main]
            try:
                if left:
                    self._close_windows(driver, window.main, left)
            except Exception as exc:  # a dead browser: the error that got us here is the one to report
                log.debug("closing popups after the downloads failed: %s", exc)
        result.downloaded.sort(key=lambda d: taken[id(d)])  # the page's order, whatever order they finished in
        log.debug("%d of %d file(s) of the %s page in %.2fs", len(result.downloaded), result.found, source,
                  time.monotonic() - t0)
        return result

    def _start_download(self, driver, item: _Found, window: _Window, batch: DownloadBatch,
                        popups: dict[str, Slot | None], convert: bool) -> tuple[Slot, str]:
        """Click one attachment and record the click in the batch; returns its slot and how the click
        behaves: "download"/"converted" (the browser downloads at once), "popup" (it opened a window,
        bound to the slot) or "navigate" (it navigates the page's own frame first)."""
        pointer = self.site.pointer_clicks
        mode = driver.execute_script(PREPARE_CLICK_JS, item.element, convert, pointer, not pointer)
        link = urljoin(window.url, item.href.strip()) if _usable_link(item.href) else ""
        how = _pointer_click(driver, item.element) if pointer else "script"
        slot = batch.expect(item.name or item.href, link, navigates=mode == "navigate")
        slot.converted = mode == "converted"
        if mode == "popup":
            # The window opens as the click is handled; its handle is its DevTools target id, which
            # the download's frame id then names.
            backoff, deadline = Backoff(first=0.005, ceiling=0.05), time.monotonic() + 5.0
            while time.monotonic() < deadline:
                new = [h for h in driver.window_handles if h not in window.handles and h not in popups]
                if new:
                    for h in new:
                        popups[h] = slot
                        slot.frames.add(h)
                        self.event(PoEvent.POPUP_OPENED, window=f"popup-{len(popups)}", detail=item.name[:100])
                    break
                backoff.sleep()
        slot.click = how
        log.debug("clicked %s (%s, %s)", item.name or item.href, how, mode)
        return slot, mode

    def _await_batch(self, driver, window: _Window, batch: DownloadBatch, popups: dict[str, Slot | None],
                     active: list[tuple[Slot, _Found]], until: Callable[[], bool]) -> None:
        """Wait for `until`, looking at popups and at the page meanwhile. A popup is closed as soon as
        its download has begun; one on the sign-in page, or a download that is the sign-in page, stops
        the run; an error page in place of the PO page fails the click that navigated there."""

        def look() -> None:
            handles = driver.window_handles
            for h in handles:
                if h not in window.handles and h not in popups:
                    owner = next((s for s, _ in reversed(active)
                                  if not s.done and s.download is None and not s.frames), None)
                    popups[h] = owner
                    if owner is not None:
                        owner.frames.add(h)
                    self.event(PoEvent.POPUP_OPENED, window=f"popup-{len(popups)}")
            open_popups = [h for h in popups if h in handles]
            if open_popups:
                # Their URLs from DevTools: asking WebDriver means switching to each, which waits for
                # its page to load.
                urls = self._target_urls(batch)
                seen = next((urls[h] for h in open_popups
                             if self.site.is_login_url(self.config.base_url, urls.get(h, ""))), "")
                if seen:
                    raise LoginRequiredError(f"The portal asked for a sign-in in a window the download opened ({seen}).")
                begun = {d.frame_id for d in (s.download for s in batch.slots) if d}
                ready = [h for h in open_popups if h in begun or (popups[h] is not None and popups[h].done)]
                if ready and not self.recorder:
                    for h in ready:
                        self._close_target(batch, h)
                        popups.pop(h, None)
            if driver.current_url != window.url:
                seen = self._error_page_after_click(driver)
                if seen is not None:
                    state, detail = seen.state, seen.evidence
                    # The click that navigated the page's own frame found an error page, not a file.
                    culprit = next((s for s, _ in reversed(active) if not s.done and s.download is None), None)
                    if culprit is None:
                        raise TransientError(f"the PO page was replaced by an error page ({state}: {detail})",
                                             reason="DOWNLOAD_FAILED")
                    culprit.error = TransientError(f"the attachment link showed an error page ({state}: {detail})",
                                                   reason="DOWNLOAD_FAILED")
                    driver.back()
                    self._wait_state(driver, self._expects.get(window.url))

        batch.wait(until, on_poll=look)

    @staticmethod
    def _target_urls(batch: DownloadBatch) -> dict[str, str]:
        """Every page's URL by its target id (= its window handle), in one DevTools call."""
        try:
            infos = batch.tracker.link.call("Target.getTargets", timeout=5).get("targetInfos", [])
        except DevToolsError as exc:
            log.debug("Target.getTargets: %s", exc)
            return {}
        return {i.get("targetId", ""): i.get("url", "") for i in infos if i.get("type") == "page"}

    def _close_target(self, batch: DownloadBatch, handle: str) -> None:
        """Close a popup without switching to it (WebDriver would wait for its page); the download it
        started goes on in the browser."""
        try:
            batch.tracker.link.call("Target.closeTarget", {"targetId": handle}, timeout=5)
            self.event(PoEvent.POPUP_CLOSED, window=handle[:8])
        except DevToolsError as exc:  # it closed itself meanwhile
            log.debug("popup %s already gone: %s", handle, exc)

    def _take(self, batch: DownloadBatch, slot: Slot, item: _Found, files_dir: Path, source: str) -> _Downloaded:
        """Move a finished download from the spool into the attempt's files under a safe, unique name
        (the browser's suggested name, shortened to fit a file system if need be)."""
        d = slot.download
        assert d is not None and slot.how is not None
        name = safe_component(d.suggested or item.name, fallback="attachment", basename=True)
        target = files_dir / unique_name(files_dir, name, set())
        batch.fetch(slot, target)
        self.event(PoEvent.DOWNLOAD, outcome="ok",
                   detail=f"{target.name} via {slot.click} in {time.monotonic() - slot.clicked:.2f}s, "
                          f"from attachment {item.name!r} by {slot.how.value}")
        return _Downloaded(target, item.name, source, url=d.url or slot.url, suggested=d.suggested,
                           attribution=slot.how.value)

    def _collect_one_by_one(self, url: str, files_dir: Path, source: str) -> _PageResult:
        """Download every attachment on the open page, one click and one file at a time.

        A failed download restarts the browser before going on: only that kills a download still in
        flight, which could otherwise land during the next click and be taken for the wrong file.
        """
        from selenium.common.exceptions import StaleElementReferenceException

        driver = self.session.driver
        supplier = driver.execute_script(SUPPLIER_JS, list(self.site.supplier_selectors)) or ""
        items = self._find(driver)
        result = _PageResult(supplier=supplier, found=len(items), source=source)
        self.event(PoEvent.ATTACHMENTS_FOUND, url=url, detail=f"{len(items)} on {source} page")
        window = _Window.of(driver) if items else None
        idx = 0
        while idx < len(items):
            item = items[idx]
            try:
                name = self._download_one(driver, item, window)
                target = files_dir / unique_name(files_dir, name, set())
                self.sink.fetch(name, target)
                result.downloaded.append(_Downloaded(target, item.name, source, url=item.href, suggested=name))
                idx += 1
            except StaleElementReferenceException:
                items = self._find(driver)  # the page re-rendered: same attachments, fresh handles
                if len(items) != result.found:
                    raise TransientError("the attachment list changed while downloading", reason="PAGE_CHANGED")
            except TransientError as exc:
                failure = f"{item.name or item.href}: {exc}"
                result.failures.append(failure)
                self.event(PoEvent.DOWNLOAD, outcome="failed", detail=failure[:300])
                if isinstance(exc, (DownloadTimeout, DownloadStalled)):
                    self.event(PoEvent.BROWSER_RESTART, detail="clear in-flight downloads")
                    self.session.restart()
                self.sink.clear()
                driver = self.session.driver
                self._open(driver, url)
                items = self._find(driver)
                if len(items) != result.found:
                    raise TransientError("the attachment list changed after a restart", reason="PAGE_CHANGED")
                window = _Window.of(driver)
                idx += 1
        return result

    def _download_one(self, driver, item: _Found, window: _Window) -> str:
        """Click one attachment and wait for exactly one new finished file; close any popup it opened.

        `window` is the page as the previous download left it: every popup is closed before this
        returns, so the handles and the URL still hold for the next click."""
        main, handles, page_url = window.main, window.handles, window.url
        if self.site.pointer_clicks:
            driver.execute_script(SCROLL_CENTER_JS, item.element)
            how = _pointer_click(driver, item.element)
        else:
            driver.execute_script(JS_CLICK, item.element)
            how = "script"
        popups: list[str] = []

        def watch_popups(check_page: bool = True) -> None:
            for h in driver.window_handles:
                if h not in handles and h not in popups:
                    popups.append(h)
                    self.event(PoEvent.POPUP_OPENED, window=f"popup-{len(popups)}", detail=item.name[:100])
            if check_page and popups:
                # A popup that lands on the sign-in page never downloads: say so now, not after the
                # download timeout (and not once per attempt).
                seen = self._popup_on_sign_in(driver, main, popups)
                if seen:
                    raise LoginRequiredError(f"The portal asked for a sign-in in a window the download opened ({seen}).")
            if check_page and driver.current_url != page_url:
                # A link that answers with an error page replaces the PO page instead of downloading:
                # say so now rather than after the download timeout.
                seen = self._error_page_after_click(driver)
                if seen is not None:
                    raise TransientError(f"the attachment link showed an error page ({seen.state}: {seen.evidence})",
                                         reason="DOWNLOAD_FAILED")

        t0 = time.monotonic()
        try:
            names = self.sink.wait_for_new(1, timeout=self.config.download_timeout,
                                           stall_timeout=self.config.stall_timeout, on_poll=watch_popups)
        finally:
            watch_popups(check_page=False)  # the file is in (or the wait failed): only popups matter now
            if popups:  # no new window: focus never left the main one, two round trips saved
                self._close_windows(driver, main, popups)
        if len(names) != 1:
            raise TransientError(f"one click brought {len(names)} files: {names}", reason="UNEXPECTED_FILES")
        self.event(PoEvent.DOWNLOAD, outcome="ok", detail=f"{names[0]} via {how} in {time.monotonic() - t0:.2f}s")
        return names[0]

    # -- windows ----------------------------------------------------------------------------------
    def _popup_on_sign_in(self, driver, main: str, popups: list[str]) -> str:
        """The sign-in URL one of these popups shows, else ''. Looking means switching to it and back,
        so this runs only while a download is awaited longer than usual."""
        from selenium.common.exceptions import NoSuchWindowException

        try:
            for h in popups:
                try:
                    driver.switch_to.window(h)
                    url = driver.current_url
                except NoSuchWindowException:  # it closed itself meanwhile
                    continue
                if self.site.is_login_url(self.config.base_url, url):
                    return url
            return ""
        finally:
            driver.switch_to.window(main)

    def _close_windows(self, driver, main: str, handles: list[str]) -> None:
        """Close popups that are still open, never the main window (closing the last one ends the session)."""
        open_now = set(driver.window_handles)
        for i, h in enumerate(handles, 1):
            if h == main or h not in open_now:
                continue
            try:
                driver.switch_to.window(h)
                if self.recorder:
                    self.recorder.collect(driver, popup=True)
                driver.close()
                self.event(PoEvent.POPUP_CLOSED, window=f"popup-{i}")
            except Exception as exc:  # it closed itself meanwhile
                log.debug("popup %s already gone: %s", h, exc)
        driver.switch_to.window(main)

    def _reset_windows(self, driver, main: str | None = None) -> None:
        """Leave exactly one window: what an earlier PO or a failure left open goes."""
        handles = driver.window_handles
        keep = main if main in handles else handles[0]
        self._close_windows(driver, keep, [h for h in handles if h != keep])

    # -- publishing -------------------------------------------------------------------------------
    def _publish_outcome(self, payload: PoTaskPayload, status: Status, parts: dict[str, Any], attempt: int,
                         started: float, error: str = "") -> PoOutcome:
        """Name, hash and move the files; write the journal; one rename makes the folder appear."""
        supplier = parts.get("supplier") or ""
        downloaded: list[_Downloaded] = parts.get("downloaded") or []
        dest = self.destination(payload, supplier, status)
        staged = self._attempt_dir(payload.po_number, attempt) / "publish"
        remove_tree(staged)
        staged.mkdir(parents=True)
        taken: set[str] = set()
        records: list[FileRecord] = []
        for d in downloaded:
            # The name the file should have in full: the server's, or the page's label when the
            # browser only made one up from the URL; shortened and made unique below.
            wanted = name_from_page(d.suggested or d.staged.name, d.hint, d.url)
            name = safe_component(wanted, fallback="attachment", basename=True)
            name = unique_name(staged, fit_in_path(dest, name), taken)
            target = staged / name
            if not contained(staged, target):
                raise TransientError(f"refusing a file name that leaves its folder: {d.staged.name!r}",
                                     reason="UNSAFE_NAME")
            os.replace(d.staged, target)
            taken.add(name)
            records.append(FileRecord(name=name, size=target.stat().st_size, sha256=sha256_file(target),
                                      source=d.source, original_name=wanted if wanted != name else ""))
        outcome = PoOutcome(
            po_number=payload.po_number, status=status, reason=parts.get("reason", ""), supplier=supplier,
            attachments_found=int(parts.get("found", 0)), attachments_downloaded=len(records), files=records,
            download_folder=str(dest), po_url=parts.get("po_url", ""), error_message=error, attempts=attempt,
            started=started, finished=time.time(), last_processed=datetime.now().isoformat(timespec="seconds"),
        )
        self._write_journal(outcome)
        publish_folder(staged, dest, replace=[Path(p) for p in payload.previous_folders if Path(p) != dest])
        self.event(PoEvent.PUBLISHED, outcome=status.value, detail=str(dest))
        return outcome

    def destination(self, payload: PoTaskPayload, supplier: str, status: Status) -> Path:
        out = Path(self.config.out_dir)
        levels = [safe_component(v, fallback="_") for v in payload.folder_levels if str(v).strip()]
        supplier_dir = safe_component(supplier, fallback=UNKNOWN_SUPPLIER) if supplier else UNKNOWN_SUPPLIER
        po_dir = safe_component(f"{payload.po_number}_{status.value}")
        return out.joinpath(*levels, supplier_dir, po_dir)

    def _write_journal(self, outcome: PoOutcome) -> None:
        """What the folder should hold, written before the rename: a rerun can adopt a folder whose
        result never reached the run store (the process died in between) instead of downloading again."""
        path = self.config.workspace.journal(outcome.po_number)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        data = asdict(outcome)
        data["status"] = outcome.status.value
        tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)

    def _final(self, payload: PoTaskPayload, status: Status, reason: str, error: str, attempt: int,
               started: float) -> PoOutcome:
        """An outcome without a folder: login stops and failures are not answers about the PO."""
        return PoOutcome(
            po_number=payload.po_number, status=status, reason=reason, error_message=error, attempts=attempt,
            po_url=self._url(payload), started=started,
            finished=time.time(), last_processed=datetime.now().isoformat(timespec="seconds"),
        )

    def _capture_then_abort(self, po: str, attempt: int, started: float) -> None:
        """The watchdog's lever: what the browser shows first (within a short deadline), then the kill,
        with the killed driver's retries silenced."""
        self._captured = capture_before_kill(
            self.session, self.config.workspace.artifacts(self.config.run_id, po, attempt), started=started)
        quiet_dead_driver(self.session.driver if self.session.started else None)
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
        kw.setdefault("window", "main")
        self._emit(Event(action=action, task_key=self._po, worker_id=self.worker_id, attempt=self._attempt_no, **kw))
