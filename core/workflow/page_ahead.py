"""The next PO's page, loading while this PO's files download (docs/design.md, "Pages loaded ahead").

A PO costs its page plus its files; done one after the other, the next page waits for the last file.
So once a PO's page has been judged and its downloads begin, the page of the PO that comes next
(`Task.up_next`) starts loading in a background tab (corelib/browser/background_tab.py): one page request in
flight beside this PO's downloads, which keeps sequential mode gentle on the portal.

A page loaded ahead is judged, when its PO's turn comes, exactly as a page just opened: the tab becomes
the window and the same probes look at it against the same expectation. Only the page's own answers
are kept: the PO's page proving its identity (READY), or the portal saying the PO does not exist or is
not the user's (NOT_FOUND, NOT_AUTHORIZED), from a request made seconds ago with the same session.
Anything else (a sign-in or error page, a 429, a page that is not the expected one, a load still
unfinished within the page timeout) is stale and simply loaded again in the ordinary way, as is any
page asked for before the browser passed a single-sign-on refresh (the session it was asked with has
changed since).

A portal that renews its session token on every answer cannot take a page request beside downloads:
whichever answer comes second renews a token the other request still carries, and that request meets
the sign-in page. So a sign-in page met in an attempt that asked for a page ahead is not believed at
once: pages ahead stop for this browser and the PO is tried again (`SIGN_IN_RACE`); a session that
really ended shows its sign-in page again and stops the run as always.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from pobatch.core.events import PoEvent
from pobatch.core.workflow.page_probes import PageProbe, PageState

# What a page loaded ahead may answer by itself; every other state is loaded again.
ANSWERS = (PageState.READY, PageState.NOT_FOUND, PageState.NOT_AUTHORIZED)
from pobatch.core.workflow.page_reader import PageReader
from pobatch.corelib.browser.background_tab import STILL_THE_PAGE_BEFORE_JS, BackgroundTab
from pobatch.corelib.browser.devtools import DevToolsLink
from pobatch.corelib.errors import TransientError
from pobatch.corelib.polling import Backoff

log = logging.getLogger(__name__)


class PageAhead:
    """Loads the next PO's page ahead for one workflow; opens a PO's page from it when it proves itself."""

    def __init__(self, pages: PageReader, link_of: Callable[[], DevToolsLink | None], enabled: bool) -> None:
        self.pages = pages
        self._link_of = link_of  # the browser's DevTools link (the download tracker's), or None
        self.enabled = enabled
        self.tabs = BackgroundTab()
        self.asked_in_attempt = False  # a page ahead was asked for during the current attempt

    def start(self, driver: Any, url: str, key: str) -> None:
        """Begin loading the page of the PO `key` at `url` in a background tab (at most one at a time);
        not while the portal has asked every worker to slow down."""
        if not self.enabled or self.pages.throttle.until() > time.time():
            return
        link = self._link()
        if link is None:
            return
        if self.tabs.start(driver, link, url, key, generation=self.pages.sign_ins) is not None:
            self.asked_in_attempt = True
            self.pages.event(PoEvent.PAGE_AHEAD, url=url, detail=f"PO {key}")

    def new_attempt(self) -> None:
        self.asked_in_attempt = False

    def sign_in_may_be_a_race(self, driver: Any) -> bool:
        """A sign-in page met in this attempt: True (and pages ahead stop for this browser) when a page
        ahead was asked for meanwhile, so the page may be the token race, not a session that ended."""
        if not (self.enabled and self.asked_in_attempt):
            return False
        self.enabled = False
        try:
            self.discard(driver)
        except Exception as exc:  # the browser is going anyway: nothing to close
            log.debug("closing the page ahead: %s", exc)
        self.pages.event(PoEvent.PAGE_AHEAD_OFF, detail="a sign-in page while a page loaded ahead: the portal may "
                         "renew its session on every answer")
        log.warning("The portal showed a sign-in page while the next PO's page was loading ahead: it may renew "
                    "its session on every answer. Pages are no longer loaded ahead in this browser; the PO is "
                    "tried again.")
        return True

    def open(self, driver: Any, url: str, expect: dict[str, Any] | None, key: str) -> PageProbe:
        """The PO's page: the one loaded ahead when it proves itself, else opened as usual."""
        link = self._link() if self.enabled else None
        tab = self.tabs.take(driver, key) if self.enabled else None
        if tab is None:
            return self.pages.open(driver, url, expect)
        try:
            self.tabs.adopt(driver, link, tab)  # the window is now the loaded-ahead page, whatever it shows
        except Exception as exc:  # the tab went away (closed, crashed): nothing changed, load as usual
            self.pages.event(PoEvent.PAGE_AHEAD_STALE, url=url, detail=f"the tab loaded ahead is gone: {exc}"[:300])
            return self.pages.open(driver, url, expect)
        probe, why = self._judge(driver, url, expect, tab.started, tab.generation)
        if probe is not None and not why:
            self.pages.event(PoEvent.OPEN, url=url, outcome=probe.state, detail=f"loaded ahead; {probe.evidence}"[:200])
            return probe
        self.pages.event(PoEvent.PAGE_AHEAD_STALE, url=url, detail=why[:300])
        log.debug("page loaded ahead for %s not used (%s): loading it again", key, why)
        return self.pages.open(driver, url, expect)

    def discard(self, driver: Any) -> None:
        self.tabs.discard(driver, self._link())

    def _judge(self, driver: Any, url: str, expect: dict[str, Any] | None, started: float,
               generation: int) -> tuple[PageProbe | None, str]:
        """The adopted page's probe and '' when it is an answer; else why it is loaded again. Its time
        counts from when it was asked for: it has had most of it already. One deadline serves both
        steps (arriving, then showing a known state), so a stale tab costs at most one page timeout
        (or a second, when it is already spent) before the page is loaded again."""
        if generation != self.pages.sign_ins:
            return None, "the portal session was refreshed after this page was asked for"
        deadline = max(started + self.pages.page_timeout, time.monotonic() + 1.0)
        try:
            if not self._new_page_arrived(driver, deadline=deadline):
                return None, "the page asked for had not replaced the tab's page before within the page timeout"
            probe = self.pages.judge_adopted(driver, url, expect, timeout=max(deadline - time.monotonic(), 0.0))
        except TransientError as exc:
            return None, str(exc)
        if probe.state not in ANSWERS:
            return probe, f"it showed {probe.state} ({probe.evidence[:200]})"
        return probe, ""

    @staticmethod
    def _new_page_arrived(driver: Any, deadline: float) -> bool:
        """Whether the tab shows the page asked for, not the one it showed before (another PO's page:
        a probe must never judge it; the tab marked it before asking, corelib/browser/background_tab.py)."""
        backoff = Backoff(first=0.01, ceiling=0.1)
        while True:
            try:
                if driver.execute_script(STILL_THE_PAGE_BEFORE_JS) is not True:
                    return True
            except Exception as exc:  # the old document is going away under the script: look again
                log.debug("while the page ahead arrives: %s", str(exc).splitlines()[0] if str(exc) else exc)
            if time.monotonic() > deadline:
                return False
            backoff.sleep()

    def _link(self) -> DevToolsLink | None:
        try:
            return self._link_of()
        except Exception as exc:  # no DevTools link to this browser: load pages the ordinary way
            log.debug("no DevTools link for pages ahead: %s", exc)
            return None
