"""Opening a portal page and proving what it is, before the workflow acts on it.

A page is opened, then polled with one probe per round trip until it shows a known state; only a
page whose identity is proven counts (docs/design.md, "Evidence before answers"). What each URL of
an attempt must prove is remembered, so a reload (after a failed download) is held to the same
expectation. The attachment list is awaited until it can be counted, and confirmed once the
downloads are done. Every state that is not an answer is raised here as the error class it is.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable
from urllib.parse import urldefrag, urlsplit

from pobatch.core.events import PoEvent
from pobatch.core.workflow.page_probes import BAD_SELECTORS_JS, PAGE_STATE_JS, RETRY_AFTER_JS, SETTLE_JS, \
    STOP_LOADING_JS, PageProbe, PageState, Settle
from pobatch.core.sites import SiteDefinition
from pobatch.core.sites.site_file import describe_selector
from pobatch.core.workflow import sign_in_bounce
from pobatch.core.workflow.progress import AttemptProgress, Waiting
from pobatch.core.workflow.recorder import SessionRecorder
from pobatch.corelib.errors import FatalError, LoginRequiredError, TransientError
from pobatch.corelib.polling import Backoff
from pobatch.corelib.throttle import SharedThrottle, parse_retry_after

log = logging.getLogger(__name__)

# A complete page that proves nothing may still be drawing itself: look again for this long before
# calling it unrecognised (only such pages pay it).
UNRECOGNISED_GRACE_S = 3.0
DEFAULT_RETRY_AFTER_S = 30.0  # a 429 that does not say how long to wait

def same_document(url: str, other: str) -> bool:
    """Two URLs of one document: a change of the #fragment alone is no other page."""
    return urldefrag(url)[0] == urldefrag(other)[0]


ERROR_STATES = (PageState.SERVER_ERROR, PageState.NOT_FOUND, PageState.NOT_AUTHORIZED, PageState.CONNECTION_ERROR,
                PageState.ERROR_PAGE, PageState.RATE_LIMITED)


class PageReader:
    """Opens and reads pages for one workflow (one browser); remembers what each URL must prove."""

    def __init__(self, site: SiteDefinition, base_url: str, page_timeout: float, throttle: SharedThrottle,
                 event: Callable[..., None], recorder: SessionRecorder | None = None,
                 progress: AttemptProgress | None = None) -> None:
        self.site = site
        self.progress = progress or AttemptProgress()
        self.base_url = base_url
        self.page_timeout = page_timeout
        self.throttle = throttle
        self.event = event
        self.recorder = recorder
        self._probe_cfg = site.page_probe_config(base_url)
        self._expects: dict[str, dict[str, Any]] = {}  # URL -> what its page must prove
        self._selectors_checked = False
        self.sign_ins = 0  # single-sign-on refreshes this browser has passed: a page asked for before is stale

    def new_attempt(self) -> None:
        """What each page of an attempt must prove is the attempt's own (reloads within it reuse it)."""
        self._expects.clear()

    def expected(self, url: str) -> dict[str, Any] | None:
        return self._expects.get(url)

    def open(self, driver: Any, url: str, expect: dict[str, Any] | None = None) -> PageProbe:
        """Navigate and classify the page; raise for login, server errors and pages that prove nothing.
        `expect` is what the page must prove; a reload of a page already opened reuses it."""
        from selenium.common.exceptions import TimeoutException

        expect = self._remember(url, expect)
        if self.recorder:
            self.recorder.before_navigation(driver)  # a navigation ends the page's recording buffer
        self.progress.wait_for(Waiting.PAGE)
        try:
            driver.get(url)
        except TimeoutException as exc:
            self.event(PoEvent.OPEN, url=url, outcome="timeout")
            try:
                driver.execute_script("window.stop();")
            except Exception:
                pass
            raise TransientError(f"page did not load within {self.page_timeout:.0f}s: {url}",
                                 reason="TIMEOUT") from exc
        probe = self.arrive(driver, url, expect)
        self.event(PoEvent.OPEN, url=url, outcome=probe.state, detail=probe.evidence[:200])
        state, evidence = probe.state, probe.evidence
        if state == PageState.LOGIN:
            raise LoginRequiredError(
                f"The portal asked for a sign-in ({evidence}). Sign in to {self.base_url} once "
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

    def _remember(self, url: str, expect: dict[str, Any] | None) -> dict[str, Any] | None:
        return self._expects.setdefault(url, expect) if expect is not None else self._expects.get(url)

    def judge_adopted(self, driver: Any, url: str, expect: dict[str, Any] | None, timeout: float) -> PageProbe:
        """The state of the page a background tab loaded for `url`, now the driver's window, polled as
        a page just opened is (core/workflow/page_ahead.py decides whether it can be used)."""
        expect = self._remember(url, expect)
        self.progress.wait_for(Waiting.PAGE)
        probe = self.wait_state(driver, expect, timeout=timeout)
        if not probe.may_pass_through:
            self._note_refresh_within_load(probe)
        return probe

    def arrive(self, driver: Any, url: str, expect: dict[str, Any] | None) -> PageProbe:
        """The state of the page just opened; a single-sign-on refresh on the way is followed back
        (core/workflow/sign_in_bounce.py), and the page is opened once more if the portal came back
        to another of its pages."""
        probe = self.wait_state(driver, expect)
        if not probe.may_pass_through:
            self._note_refresh_within_load(probe)
            return probe
        self.progress.wait_for(Waiting.SIGN_IN_REDIRECT)
        bounce = sign_in_bounce.follow(driver, probe, lambda: self.wait_state(driver, expect),
                                       self.site.host_of(self.base_url))
        probe = bounce.probe
        if not bounce.came_back:
            return probe
        self.sign_ins += 1
        if expect is not None and probe.state == PageState.UNRECOGNISED and not probe.identity.get("url_ok", True):
            # Back from the identity provider on the portal's home page, not on this one: once more.
            driver.get(url)
            probe = self.wait_state(driver, expect)
        self.event(PoEvent.SSO_REFRESH, url=probe.url, outcome=probe.state,
                   detail=f"through {', '.join(bounce.hosts) or 'the sign-in path'} in {bounce.seconds:.2f}s")
        log.info("single-sign-on refresh through %s passed in %.2fs", ", ".join(bounce.hosts) or "the sign-in path",
                 bounce.seconds)
        self.progress.wait_for(Waiting.PAGE)
        return probe

    def _note_refresh_within_load(self, probe: PageProbe) -> None:
        """A refresh that passed inside the navigation (the browser's own redirects and forms): only
        the page it came from tells."""
        passed = urlsplit(probe.referrer).netloc.lower()
        if passed and passed != self.site.host_of(self.base_url):
            self.sign_ins += 1
            self.event(PoEvent.SSO_REFRESH, url=probe.url, outcome=probe.state,
                       detail=f"through {passed}, within the page load")

    def look(self, driver: Any, url: str, expect: dict[str, Any] | None) -> PageProbe:
        """Open a page and say what it shows, acting on nothing (pobatch check)."""
        driver.get(url)
        probe = self.arrive(driver, url, expect)
        if probe.state == PageState.READY:
            self.check_selectors(driver)
        return probe

    def error_page_after_click(self, driver: Any, page_url: str = "",
                               download_began: Callable[[], bool] = lambda: False) -> PageProbe | None:
        """The page a click left in place of the PO page, when it is an error page or any other web
        page (a link that answered with a page instead of a file: a download never replaces the
        document, so a new document that has arrived is the click's whole answer); a sign-in page
        raises. None: nothing to judge yet (or a refresh on the way ended in the click's download:
        `download_began`; the caller then restores its page)."""
        seen = self._probe(driver, None)
        if seen.may_pass_through:  # perhaps a refresh on the way to the file: follow it
            bounce = sign_in_bounce.follow(driver, seen, lambda: self._probe(driver, None),
                                           self.site.host_of(self.base_url), ended_in_download=download_began)
            seen, self.sign_ins = bounce.probe, self.sign_ins + bounce.came_back
        if seen.state == PageState.LOGIN:
            raise LoginRequiredError(f"The portal asked for a sign-in while downloading ({seen.evidence}).")
        if seen.state in ERROR_STATES:
            return seen
        if seen.state == PageState.UNRECOGNISED and (seen.http >= 400 or not same_document(seen.url, page_url)):
            return seen  # another document (a page changing only its #fragment is still the PO page)
        return None

    @staticmethod
    def describe_click_answer(seen: PageProbe) -> str:
        """What a click's page was, in the words of a failed attachment."""
        if seen.state == PageState.UNRECOGNISED and seen.http < 400:
            return f"the attachment link answered with a web page, not a file ({seen.url or seen.evidence})"
        return f"the attachment link showed an error page ({seen.state}: {seen.evidence})"

    def _probe(self, driver: Any, expect: dict[str, Any] | None) -> PageProbe:
        """One look; a document replaced under the script (a redirect by script or form) is still loading."""
        from selenium.common.exceptions import JavascriptException

        try:
            return PageProbe.of(driver.execute_script(PAGE_STATE_JS, self._probe_cfg, expect))
        except JavascriptException as exc:
            log.debug("probe during a navigation: %s", exc)
            return PageProbe(PageState.LOADING, f"the page was being replaced ({str(exc).splitlines()[0][:100]})")

    def wait_state(self, driver: Any, expect: dict[str, Any] | None, timeout: float | None = None) -> PageProbe:
        """Poll the page until it shows a known state. A page that proves nothing is looked at again
        for a short grace (a script may still be drawing it) before it counts as unrecognised."""
        deadline = time.monotonic() + (self.page_timeout if timeout is None else timeout)
        grace_end = 0.0
        backoff = Backoff(first=0.005)
        while True:
            probe = self._probe(driver, expect)
            now = time.monotonic()
            if probe.state == PageState.UNRECOGNISED:
                grace_end = grace_end or now + min(UNRECOGNISED_GRACE_S, self.page_timeout)
                if now >= grace_end:
                    return probe
            elif probe.state != PageState.LOADING:
                return probe
            if now > deadline:
                raise TransientError(f"the page never showed a known shape ({probe.evidence})", reason="TIMEOUT")
            backoff.sleep()

    def _retry_after(self, driver: Any) -> float:
        """Seconds a 429 asked for (its Retry-After header), or a default when it did not say."""
        try:
            value = driver.execute_async_script(RETRY_AFTER_JS)
        except Exception as exc:  # the page went away meanwhile: fall back to the default
            log.debug("Retry-After not readable: %s", exc)
            value = None
        seconds = parse_retry_after(value)
        return DEFAULT_RETRY_AFTER_S if seconds is None else seconds

    def check_selectors(self, driver: Any) -> None:
        """Once per browser: a selector the browser rejects is a broken site file, not a PO's fault."""
        if self._selectors_checked:
            return
        bad = driver.execute_script(BAD_SELECTORS_JS, {k: list(v) for k, v in self.site.selector_fields().items()})
        self._selectors_checked = not bad  # a broken file fails every PO that meets it, never only the first
        if bad:
            field_name, selector = bad[0]
            raise FatalError(describe_selector(self.site, field_name, selector,
                                               "the browser rejects this CSS selector"), reason="BAD_SITE_FILE")

    def _settle(self, driver: Any) -> Settle:
        return Settle.of(driver.execute_script(SETTLE_JS, self._probe_cfg))

    def await_attachments(self, driver: Any, probe: PageProbe) -> Settle:
        """Wait, with a bound, until the attachment area can be counted: no loading marker, the
        loaded marker present if the site has one, and either attachments in view or an area that
        has been present, empty and quiet for `empty_quiet_ms` (NO_ATTACHMENTS needs that evidence).
        A list a script draws after the page loaded is therefore awaited, not missed."""
        site = self.site
        settle = probe.settle
        self.progress.wait_for(Waiting.ATTACHMENT_LIST)
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

    def stop_loading(self, driver: Any) -> None:
        """Stop what the judged page still loads (a tracking pixel, a widget's iframe, a script that
        never arrives): the workflow needs none of it, and ChromeDriver would wait for it, up to the
        page-load timeout, after every click that navigates the page's frame (docs/design.md, "Pages
        judged by their content"). A page whose load event came is left alone."""
        stopped = driver.execute_script(STOP_LOADING_JS)
        if stopped:
            log.debug("the page was still loading (%s): stopped", stopped)

    def confirm_settled(self, driver: Any, found: int) -> None:
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
