"""What both ways of downloading a page's attachments share: the attachments found, the files
staged, the page's window, and the clean-up of the popups a click opens.

The two ways are `pobatch.core.workflow.download_batch.BatchCollector` (a local browser: several files at
once, told apart by the browser's own download events) and
`pobatch.core.workflow.download_one_by_one.OneByOneCollector` (a Grid node's folder: one click, one file).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pobatch.core.events import PoEvent
from pobatch.core.sites import SiteDefinition
from pobatch.core.workflow.held_files import attachment_identity
from pobatch.core.workflow.job_config import JobConfig
from pobatch.core.workflow.page_probes import FIND_ATTACHMENTS_JS, JS_CLICK, SUPPLIER_JS
from pobatch.core.workflow.page_reader import PageReader
from pobatch.corelib.browser.session import BrowserSession
from pobatch.corelib.browser.download_sink import DownloadSink, EventDownloadSink
from pobatch.corelib.errors import TransientError

log = logging.getLogger(__name__)

# A click's download must begin within this long, or it started none (see docs/design.md,
# "Downloads in Chromium"): a file's headers usually arrive in well under a second, 10 s leaves room
# for a busy PC and a slow portal; a click that was only slow costs a second click, whose copy is dropped.
BEGIN_TIMEOUT_S = 10.0


@dataclass
class Attachment:
    """One attachment as the page shows it: its element (for the click) and what the page says of it."""

    element: Any
    name: str
    href: str
    target: str
    identity: str = ""  # its name on the portal across visits (core/workflow/held_files.py)


@dataclass
class StagedFile:
    """A downloaded attachment in the attempt's staging folder, before it is named and published."""

    staged: Path
    hint: str  # the attachment's label on the page (its download attribute, title or text)
    source: str
    url: str = ""  # the attachment's link, or the URL the browser downloaded from
    suggested: str = ""  # the browser's suggested file name, in full (before any shortening)
    attribution: str = ""  # how the file was matched to its attachment: frame, url, order ('' one by one)
    identity: str = ""  # the attachment's identity on the page


@dataclass(frozen=True)
class PageWindow:
    """The PO page's window as it stands between downloads: read once per page, not once per click
    (three WebDriver round trips per file saved)."""

    main: str
    handles: frozenset[str]
    url: str

    @classmethod
    def of(cls, driver: Any) -> "PageWindow":
        return cls(driver.current_window_handle, frozenset(driver.window_handles), driver.current_url)


@dataclass
class PageResult:
    """What one page (the PO's, or its requisition's) gave: the answer's facts before it is published."""

    supplier: str = ""
    found: int = 0
    downloaded: list[StagedFile] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    source: str = "po"
    reason: str = ""
    held: list[str] = field(default_factory=list)  # those a refresh already holds: not downloaded again

    @property
    def fetching(self) -> int:
        """Attachments this page downloads: all it shows but the held ones."""
        return self.found - len(self.held)


def usable_link(href: str) -> bool:
    """An attachment's href that names what it downloads (not a script hook or an in-page anchor)."""
    href = (href or "").strip().lower()
    return bool(href) and not href.startswith(("javascript:", "#"))


def pointer_click(driver: Any, element: Any) -> str:
    """A trusted click, for portals whose handlers ignore script clicks; an element that a floating
    toolbar covers gets the script click instead. Returns how it was clicked."""
    from selenium.common.exceptions import ElementClickInterceptedException, ElementNotInteractableException

    try:
        element.click()
        return "click"
    except (ElementClickInterceptedException, ElementNotInteractableException):
        driver.execute_script(JS_CLICK, element)
        return "js-click"


class Collector:
    """Downloads every attachment on the open page into an attempt's files folder. It works on the
    pages its PageReader opened, and tells the same timeline and recorder."""

    def __init__(self, session: BrowserSession, sink: DownloadSink | EventDownloadSink, config: "JobConfig",
                 pages: PageReader) -> None:
        self.session = session
        self.sink = sink
        self.config = config
        self.pages = pages
        self.site: SiteDefinition = pages.site
        self.event = pages.event
        self.recorder = pages.recorder
        self.progress = pages.progress
        self.held: frozenset[str] = frozenset()  # identities a refresh holds intact: skipped on the page
        self._source = "po"

        self.seen: dict[str, list[str]] = {}  # this attempt's pages that were read: source -> identities

    def hold(self, identities: frozenset[str]) -> None:
        """A new attempt; these attachments need no download (a refresh holds them intact)."""
        self.held = identities
        self.seen = {}

    def collect(self, url: str, files_dir: Path, source: str) -> PageResult:
        raise NotImplementedError

    def find(self, driver: Any) -> list[Attachment]:
        """The attachments to download on the open page, in page order: every one but the held ones."""
        return [a for a in self._find_all(driver) if a.identity not in self.held]

    def find_again(self, driver: Any, result: PageResult, when: str = "while downloading") -> list[Attachment]:
        """The attachments again, with fresh handles: the page re-rendered (a stale element) or was opened
        again. Another count is another list, which the files taken so far may not match: PAGE_CHANGED,
        transient, so the next attempt reads the page from the start."""
        items = self.find(driver)
        if len(items) != result.fetching:
            raise TransientError(f"the attachment list changed {when}", reason="PAGE_CHANGED")
        return items

    def _find_all(self, driver: Any) -> list[Attachment]:
        return [Attachment(el, meta["name"], meta["href"], meta["target"],
                           attachment_identity(self._source, meta.get("ref", ""), meta["name"]))
                for el, meta in driver.execute_script(FIND_ATTACHMENTS_JS, list(self.site.attachment_selectors))]

    def read_page(self, driver: Any, url: str, source: str) -> tuple[PageResult, list[Attachment]]:
        """The supplier and the attachments the open page shows, announced; the held ones are counted
        and left out of the list to download."""
        self._source = source
        supplier = driver.execute_script(SUPPLIER_JS, list(self.site.supplier_selectors)) or ""
        every = self._find_all(driver)
        items = [a for a in every if a.identity not in self.held]
        held = [a.identity for a in every if a.identity in self.held]
        self.seen[source] = [a.identity for a in every]
        detail = f"{len(every)} on {source} page" + (f", {len(held)} already held" if held else "")
        self.event(PoEvent.ATTACHMENTS_FOUND, url=url, detail=detail)
        return PageResult(supplier=supplier, found=len(every), source=source, held=held), items

    def close_windows(self, driver: Any, main: str, handles: list[str]) -> None:
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

    def reset_windows(self, driver: Any, main: str | None = None) -> None:
        """Leave exactly one window: what an earlier PO or a failure left open goes."""
        handles = driver.window_handles
        keep = main if main in handles else handles[0]
        self.close_windows(driver, keep, [h for h in handles if h != keep])
