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
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from core.artifacts import attempt_dir, capture_before_kill, capture_failure, drain_console
from core.page_probes import (
    FIND_ATTACHMENTS_JS,
    JS_CLICK,
    PAGE_STATE_JS,
    REQUISITION_JS,
    SCROLL_CENTER_JS,
    SUPPLIER_JS,
)
from core.recorder import SessionRecorder
from core.results import FileRecord, PoOutcome
from core.sites import SiteDefinition, get_site
from core.status import Status
from corelib.browser_session import BrowserSession
from corelib.download_sink import DownloadSink, LocalDownloadSink
from corelib.downloads import DownloadStalled, DownloadTimeout, publish_folder, sha256_file
from corelib.errors import (
    DiskFullError,
    ErrorClass,
    LoginRequiredError,
    PobatchError,
    TransientError,
    classify,
    is_disk_full,
    reason_of,
)
from corelib.polling import Backoff
from corelib.retry import RetryPolicy
from corelib.safe_paths import contained, fit_in_path, safe_component, unique_name
from corelib.tasks import Event
from corelib.tree_removal import remove_tree
from corelib.watchdog import Watchdog, quiet_dead_driver

log = logging.getLogger(__name__)

UNKNOWN_SUPPLIER = "Unknown supplier"
WORK_DIR_NAME = ".pobatch"


@dataclass
class JobConfig:
    """Everything the workflow needs besides a browser; picklable for worker processes."""

    site: str
    base_url: str
    out_dir: str
    page_timeout: float = 60.0  # page load, then readiness probe
    download_timeout: float = 120.0  # one attachment, from click to finished file
    stall_timeout: float = 20.0  # a partial download that stops growing this long has failed
    po_timeout: float = 180.0  # one attempt; past it the browser is killed and the PO retried
    max_attempts: int = 3
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    run_id: str = ""  # names the folder of failure artifacts
    record: bool = False  # --record: rrweb in every window, one recording per attempt

    @property
    def work_dir(self) -> Path:
        return Path(self.out_dir) / WORK_DIR_NAME

    @property
    def staging_root(self) -> Path:
        return self.work_dir / "staging"

    @property
    def journal_dir(self) -> Path:
        return self.work_dir / "journal"

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.backoff_base, self.backoff_max)


@dataclass
class PoTaskPayload:
    """What the MainApp tells a worker about one PO (carried in corelib Task.payload)."""

    po_number: str
    row: int = 0
    folder_levels: tuple[str, ...] = ()
    previous_folders: tuple[str, ...] = ()  # folders of earlier runs, replaced on publish

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PoTaskPayload":
        return cls(
            po_number=str(d["po_number"]),
            row=int(d.get("row", 0)),
            folder_levels=tuple(d.get("folder_levels", ())),
            previous_folders=tuple(d.get("previous_folders", ())),
        )


class _Partial(TransientError):
    """Some attachments did not arrive: worth another attempt; if it is the last, PARTIAL stands."""

    def __init__(self, message: str, outcome_parts: dict[str, Any]) -> None:
        super().__init__(message, reason="DOWNLOAD_FAILED")
        self.parts = outcome_parts


@dataclass
class _Found:
    element: Any
    name: str
    href: str
    target: str


@dataclass
class _Downloaded:
    staged: Path
    hint: str
    source: str


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
        # The browser's own download folder (set at its start), or a Grid node's: emptied after every
        # download, so a second file of the same name never meets the first and every file belongs
        # to one click.
        self.sink: DownloadSink = sink or LocalDownloadSink(Path(session.spec.download_dir))
        self.config = config
        self.site = site or get_site(config.site)
        self._emit = emit or (lambda e: None)
        self.worker_id = worker_id
        self._sleep = sleep
        self._probe_cfg = self.site.page_probe_config(config.base_url)
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
                self.event("attempt_end", outcome=outcome.status.value, detail=outcome.reason)
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
                self.event("attempt_end", outcome="error", detail=f"{reason}: {exc}"[:500])
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
                    self.event("browser_restart", detail=reason)
                    self.session.restart()
                if policy.should_retry(err_class, attempt):
                    delay = policy.delay(attempt, random.Random(hash((payload.po_number, attempt))))
                    self.event("retry_wait", detail=f"{delay:.1f}s")
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
        self.event("attempt_start", url=url)
        state = self._open(driver, url)
        if state in ("not_found", "not_authorized"):
            reason = "NOT_AUTHORIZED" if state == "not_authorized" else ""
            return self._publish_outcome(payload, Status.PO_NOT_FOUND, {"reason": reason, "po_url": url}, attempt, 0)
        page = self._collect(url, files_dir, source="po")
        if page.found == 0:
            req_url = self.session.driver.execute_script(REQUISITION_JS, self.site.requisition_selector) or ""
            if req_url:
                self.event("requisition_fallback", url=req_url)
                self._open(self.session.driver, req_url)
                req = self._collect(req_url, files_dir, source="requisition")
                req.supplier = page.supplier or req.supplier
                req.reason = "REQUISITION_FALLBACK" if req.found else ""
                page = req
        parts = {"supplier": page.supplier, "found": page.found, "downloaded": page.downloaded,
                 "reason": page.reason, "po_url": url}
        if page.failures:
            raise _Partial(f"{len(page.failures)} of {page.found} attachment(s) failed: "
                           + "; ".join(page.failures)[:400], parts)
        status = Status.COMPLETED if page.found else Status.NO_ATTACHMENTS
        return self._publish_outcome(payload, status, parts, attempt, 0)

    def _open(self, driver, url: str) -> str:
        """Navigate and classify the page; raise for login, server errors and unknown pages."""
        from selenium.common.exceptions import TimeoutException

        if self.recorder:
            self.recorder.before_navigation(driver)  # a navigation ends the page's recording buffer
        try:
            driver.get(url)
        except TimeoutException as exc:
            self.event("open", url=url, outcome="timeout")
            try:
                driver.execute_script("window.stop();")
            except Exception:
                pass
            raise TransientError(f"page did not load within {self.config.page_timeout:.0f}s: {url}",
                                 reason="TIMEOUT") from exc
        state, detail = self._wait_state(driver)
        self.event("open", url=url, outcome=state, detail=str(detail)[:200])
        if state == "login":
            raise LoginRequiredError(
                f"The portal asked for a sign-in ({detail}). Open {self.config.base_url} once in your own "
                "browser profile, sign in, close the browser, then run pobatch again: finished POs are kept."
            )
        if state == "server_error":
            raise TransientError(f"the portal answered with a server error page at {url}", reason="HTTP_500")
        if state == "connection_error":
            raise TransientError(f"the connection to {url} failed ({detail})", reason="CONNECTION_FAILED")
        if state == "error_page":
            raise TransientError(f"the portal showed an error at {url}: {detail}", reason="PORTAL_ERROR")
        return state

    def _wait_state(self, driver) -> tuple[str, str]:
        deadline = time.monotonic() + self.config.page_timeout
        backoff = Backoff(first=0.005)
        while True:
            state, detail = driver.execute_script(PAGE_STATE_JS, self._probe_cfg)
            if state != "loading":
                return state, detail
            if time.monotonic() > deadline:
                raise TransientError(f"the page never showed a known shape ({detail})", reason="TIMEOUT")
            backoff.sleep()

    def _find(self, driver) -> list[_Found]:
        return [_Found(el, meta["name"], meta["href"], meta["target"])
                for el, meta in driver.execute_script(FIND_ATTACHMENTS_JS, list(self.site.attachment_selectors))]

    def _collect(self, url: str, files_dir: Path, source: str) -> _PageResult:
        """Download every attachment on the open page, one click and one file at a time.

        A failed download restarts the browser before going on: only that kills a download still in
        flight, which could otherwise land during the next click and be taken for the wrong file.
        """
        from selenium.common.exceptions import StaleElementReferenceException

        driver = self.session.driver
        supplier = driver.execute_script(SUPPLIER_JS, list(self.site.supplier_selectors)) or ""
        items = self._find(driver)
        result = _PageResult(supplier=supplier, found=len(items), source=source)
        self.event("attachments_found", url=url, detail=f"{len(items)} on {source} page")
        window = _Window.of(driver) if items else None
        idx = 0
        while idx < len(items):
            item = items[idx]
            try:
                name = self._download_one(driver, item, window)
                target = files_dir / unique_name(files_dir, name, set())
                self.sink.fetch(name, target)
                result.downloaded.append(_Downloaded(target, item.name, source))
                idx += 1
            except StaleElementReferenceException:
                items = self._find(driver)  # the page re-rendered: same attachments, fresh handles
                if len(items) != result.found:
                    raise TransientError("the attachment list changed while downloading", reason="PAGE_CHANGED")
            except TransientError as exc:
                failure = f"{item.name or item.href}: {exc}"
                result.failures.append(failure)
                self.event("download", outcome="failed", detail=failure[:300])
                if isinstance(exc, (DownloadTimeout, DownloadStalled)):
                    self.event("browser_restart", detail="clear in-flight downloads")
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
        from selenium.common.exceptions import ElementClickInterceptedException, ElementNotInteractableException

        main, handles, page_url = window.main, window.handles, window.url
        if self.site.pointer_clicks:
            driver.execute_script(SCROLL_CENTER_JS, item.element)
            try:
                item.element.click()
                how = "click"
            except (ElementClickInterceptedException, ElementNotInteractableException):
                driver.execute_script(JS_CLICK, item.element)  # a floating toolbar covers it
                how = "js-click"
        else:
            driver.execute_script(JS_CLICK, item.element)
            how = "script"
        popups: list[str] = []

        def watch_popups(check_page: bool = True) -> None:
            for h in driver.window_handles:
                if h not in handles and h not in popups:
                    popups.append(h)
                    self.event("popup_opened", window=f"popup-{len(popups)}", detail=item.name[:100])
            if check_page and popups:
                # A popup that lands on the sign-in page never downloads: say so now, not after the
                # download timeout (and not once per attempt).
                seen = self._popup_on_sign_in(driver, main, popups)
                if seen:
                    raise LoginRequiredError(f"The portal asked for a sign-in in a window the download opened ({seen}).")
            if check_page and driver.current_url != page_url:
                # A link that answers with an error page replaces the PO page instead of downloading:
                # say so now rather than after the download timeout.
                state, detail = driver.execute_script(PAGE_STATE_JS, self._probe_cfg)
                if state == "login":
                    raise LoginRequiredError(f"The portal asked for a sign-in while downloading ({detail}).")
                if state in ("server_error", "not_found", "not_authorized", "connection_error", "error_page"):
                    raise TransientError(f"the attachment link showed an error page ({state}: {detail})",
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
        self.event("download", outcome="ok", detail=f"{names[0]} via {how} in {time.monotonic() - t0:.2f}s")
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
                self.event("popup_closed", window=f"popup-{i}")
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
            name = safe_component(d.staged.name, fallback="attachment", basename=True)
            name = unique_name(staged, fit_in_path(dest, name), taken)
            target = staged / name
            if not contained(staged, target):
                raise TransientError(f"refusing a file name that leaves its folder: {d.staged.name!r}",
                                     reason="UNSAFE_NAME")
            os.replace(d.staged, target)
            taken.add(name)
            records.append(FileRecord(name=name, size=target.stat().st_size, sha256=sha256_file(target),
                                      source=d.source))
        outcome = PoOutcome(
            po_number=payload.po_number, status=status, reason=parts.get("reason", ""), supplier=supplier,
            attachments_found=int(parts.get("found", 0)), attachments_downloaded=len(records), files=records,
            download_folder=str(dest), po_url=parts.get("po_url", ""), error_message=error, attempts=attempt,
            started=started, finished=time.time(), last_processed=datetime.now().isoformat(timespec="seconds"),
        )
        self._write_journal(outcome)
        publish_folder(staged, dest, replace=[Path(p) for p in payload.previous_folders if Path(p) != dest])
        self.event("published", outcome=status.value, detail=str(dest))
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
        self.config.journal_dir.mkdir(parents=True, exist_ok=True)
        path = self.config.journal_dir / f"{outcome.po_number}.json"
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
            self.session, attempt_dir(self.config.work_dir, self.config.run_id, po, attempt), started=started)
        quiet_dead_driver(self.session.driver if self.session.started else None)
        self.session.abort()

    def _capture_failure(self, po: str, attempt: int, exc: BaseException, reason: str, started: float) -> None:
        """Screenshot, page HTML and console log of a failed attempt, for the report; never raises."""
        captured, self._captured = self._captured, None
        folder = capture_failure(self.session, attempt_dir(self.config.work_dir, self.config.run_id, po, attempt),
                                 key=po, attempt=attempt, error=exc, reason=reason, worker_id=self.worker_id,
                                 started=started, captured=captured)
        if folder:
            self.event("failure_captured", detail=str(folder))

    # -- plumbing ---------------------------------------------------------------------------------
    def _url(self, payload: PoTaskPayload) -> str:
        return self.site.po_url(self.config.base_url, payload.po_number)

    def _attempt_dir(self, po: str, attempt: int) -> Path:
        return self.config.staging_root / f"{po}-{self.worker_id}-a{attempt}"

    def _cleanup_attempt(self, po: str, attempt: int) -> None:
        remove_tree(self._attempt_dir(po, attempt))

    def event(self, action: str, **kw: Any) -> None:
        kw.setdefault("window", "main")
        self._emit(Event(action=action, task_key=self._po, worker_id=self.worker_id, attempt=self._attempt_no, **kw))
