"""A page's attachments downloaded together, on a local browser (docs/design.md, "Downloads in Chromium").

Up to `files_at_once` downloads run at one time. Each is matched to its click by the browser's own
download events: by the popup that started it, by its URL, or by click order. Popups are watched and
closed over DevTools while the batch is awaited; a popup on the sign-in page stops the run, and an
error page in place of the PO page fails the click that navigated there.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urljoin, urlsplit

from pobatch.core.download_progress import format_progress
from pobatch.core.events import PoEvent
from pobatch.core.workflow.attachments import (
    BEGIN_TIMEOUT_S,
    Attachment,
    Collector,
    PageResult,
    PageWindow,
    StagedFile,
    pointer_click,
    usable_link,
)
from pobatch.core.workflow.page_probes import PREPARE_CLICK_JS, PageState
from pobatch.core.workflow.page_reader import same_document
from pobatch.core.workflow.progress import Waiting
from pobatch.corelib.browser.click_pacer import BurstPacer
from pobatch.corelib.browser.devtools import DevToolsError
from pobatch.corelib.browser.download_sink import DownloadBatch, EventDownloadSink, Slot
from pobatch.corelib.browser.downloads import DownloadNotBegun
from pobatch.corelib.errors import LoginRequiredError, TransientError
from pobatch.corelib.polling import Backoff
from pobatch.corelib.safe_paths import safe_component, unique_name

log = logging.getLogger(__name__)


def _on_page(driver, window: PageWindow) -> bool:
    """The frame still shows the PO page."""
    return same_document(driver.current_url, window.url)


def _a_web_page(slot: Slot, item: Attachment) -> bool:
    """The browser named the download as an HTML page while the attachment's label does not say so."""
    pages = (".html", ".htm")
    suggested = (slot.download.suggested if slot.download else "").lower()
    return suggested.endswith(pages) and not (item.name or "").lower().strip().endswith(pages)


PROGRESS_EVERY_S = 2.0  # a running download tells its bytes at most this often, after this long


@dataclass
class _Click:
    """One attachment's turn: which attachment, and which route (1: with the others; 2: alone, the
    other click kind, after route 1 started no download)."""

    index: int
    route: int = 1


@dataclass
class _Running:
    slot: Slot
    item: Attachment
    click: _Click
    told: float = 0.0  # when its progress was last told
    begun: bool = False  # its download's beginning was counted as progress


@dataclass
class _PageRun:
    """One page's downloads under way: what the steps of BatchCollector.collect share."""

    driver: Any
    items: list[Attachment]  # found again when the page re-renders
    result: PageResult
    window: PageWindow
    batch: DownloadBatch
    files_dir: Path
    limit: int  # files at once
    pending: list[_Click]
    popups: dict[str, Slot | None] = field(default_factory=dict)  # popup handle -> the click that opened it
    active: list[_Running] = field(default_factory=list)
    taken: dict[int, int] = field(default_factory=dict)  # downloaded file -> the attachment's place on the page

    def room(self, pacer: BurstPacer) -> bool:
        """Another click of the first route may go now: a slot free and the pacer's turn."""
        return bool(self.pending) and self.pending[0].route == 1 and len(self.active) < self.limit \
            and pacer.delay() <= 0


class BatchCollector(Collector):
    """Downloads a page's attachments together, tracked by the browser's own download events."""

    sink: EventDownloadSink

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # One per browser, across pages: Chromium drops a frame's 11th download request within a second.
        self.pacer = BurstPacer()
        self._begun_on_page = 0

    def collect(self, url: str, files_dir: Path, source: str) -> PageResult:
        """Start up to `files_at_once` attachments, await them together, start the next as one ends.

        Each download is matched to its click by the popup that started it, by its URL, or by click
        order (docs/design.md, "Downloads in Chromium"). Clicks that navigate the page's own frame (a plain link the
        browser may show as a page, a script that follows a link) are made one at a time, each once its
        download has begun: Chromium runs one navigation per frame anyway, and click order then is
        begin order. Same-origin plain links are marked as downloads first (the `download`
        attribute), so they need no frame and run together. Clicks are paced (BurstPacer) so the
        browser never drops one; a click that still starts no download within BEGIN_TIMEOUT_S is
        made again alone with the other click kind. A failed download is cancelled by its GUID;
        nothing else is disturbed, so no browser restart is needed.
        """
        driver = self.session.driver
        result, items = self.read_page(driver, url, source)
        if not items:
            return result
        t0 = time.monotonic()
        page = self._begin_page(driver, items, result, files_dir)
        try:
            while page.pending or page.active:
                self._one_round(page, source)
            if not _on_page(driver, page.window):  # the last file came through a sign-in refresh
                self._restore_page(driver, page.window)
        finally:
            self._end_page(page)
        result.downloaded.sort(key=lambda d: page.taken[id(d)])  # the page's order, whatever order they finished in
        log.debug("%d of %d file(s) of the %s page in %.2fs", len(result.downloaded), result.found, source,
                  time.monotonic() - t0)
        return result

    def _begin_page(self, driver, items: list[Attachment], result: PageResult, files_dir: Path) -> _PageRun:
        """A batch on the open page, its clicks in the order they may go: those that can run together
        first; those that navigate the page's own frame (no usable link: a script follows one) wait for
        each other's download to begin, so they go last."""
        self._begun_on_page = 0  # downloads begun while the frame was last seen on the PO page
        batch = self.sink.batch(self.config.download_timeout, self.config.stall_timeout,
                                is_login_url=lambda u: self.site.is_login_url(self.config.base_url, u),
                                begin_timeout=BEGIN_TIMEOUT_S)
        order = sorted(range(len(items)), key=lambda i: not (items[i].target or usable_link(items[i].href)))
        return _PageRun(driver, items, result, PageWindow.of(driver), batch, files_dir,
                        limit=max(1, self.config.files_at_once), pending=[_Click(i) for i in order])

    def _one_round(self, page: _PageRun, source: str) -> None:
        """Click while there is room, wait until a download ends or another click may go, then take
        what ended."""
        self._start_turns(page)
        if not page.active:
            return
        self._await_batch(page, lambda: any(r.slot.done for r in page.active) or page.room(self.pacer))
        for running in [r for r in page.active if r.slot.done]:
            page.active.remove(running)
            staged = self._settle_turn(page, running, source)
            if staged is not None:
                page.result.downloaded.append(staged)
                page.taken[id(staged)] = running.click.index
        self._fail_strangers(page)

    def _fail_strangers(self, page: _PageRun) -> None:
        """A download no click accounts for is not taken for an attachment: it fails the page's answer."""
        if page.batch.extra:
            extra, page.batch.extra = page.batch.extra, []
            page.result.failures += [f"a download no attachment accounts for: {d.suggested}" for d in extra]
            self.event(PoEvent.DOWNLOAD, outcome="failed", detail=f"{len(extra)} unexpected download(s)")

    def _end_page(self, page: _PageRun) -> None:
        """However the page ended: its batch closed (a download not taken is cancelled) and its popups gone."""
        page.batch.close()
        left = [h for h in page.popups if h != page.window.main]
        try:
            if left:
                self.close_windows(page.driver, page.window.main, left)
        except Exception as exc:  # a dead browser: the error that got us here is the one to report
            log.debug("closing popups after the downloads failed: %s", exc)

    def _start_turns(self, page: _PageRun) -> None:
        """Click pending attachments while there is room: up to `limit` at once on route 1, alone on
        route 2. A stale element (the page re-rendered meanwhile) finds the attachments again."""
        from selenium.common.exceptions import StaleElementReferenceException

        driver, pending, active = page.driver, page.pending, page.active
        while pending and len(active) < (1 if pending[0].route > 1 else page.limit):
            if pending[0].route > 1 and active:
                break  # the second route goes alone
            if self.pacer.delay() > 0:
                if active:
                    return  # the running downloads are awaited meanwhile (and the pacer's turn)
                self.pacer.wait()
            turn = pending.pop(0)
            try:
                slot, mode = self._start_download(driver, page.items[turn.index], page.window, page.batch,
                                                  page.popups, convert=page.limit > 1 and turn.route == 1,
                                                  pointer=self.site.pointer_clicks or turn.route > 1)
            except StaleElementReferenceException:
                if not _on_page(driver, page.window):
                    # The frame left the PO page: a click's sign-in refresh on the way to its file. The
                    # batch follows it and brings the page back (look() in _await_batch).
                    self._await_batch(page, lambda: _on_page(driver, page.window))
                page.items = self.find_again(driver, page.result)
                pending.insert(0, turn)
                continue
            active.append(_Running(slot, page.items[turn.index], turn))
            if mode == "navigate" or turn.route > 1:
                self._await_batch(page, lambda: slot.done or slot.download is not None or bool(slot.frames))

    def _settle_turn(self, page: _PageRun, running: _Running, source: str) -> StagedFile | None:
        """A finished slot: its file staged, or its failure recorded, or (no download began on route 1)
        the attachment queued again for route 2."""
        slot, item = running.slot, running.item
        if slot.ok and slot.converted and _a_web_page(slot, item):
            # A plain link we marked as a download answered with an HTML page (a viewer, a notice):
            # the browser saved the page; it is not the attachment.
            slot.error = TransientError(f"the link answered with a web page, not a file "
                                        f"({slot.download.suggested})", reason="DOWNLOAD_FAILED")
        if slot.ok and slot.error is None:
            try:
                return self._take(page.batch, slot, item, page.files_dir, source)
            except TransientError as exc:  # its bytes are not what the browser reported
                slot.error = exc
        if isinstance(slot.error, DownloadNotBegun) and running.click.route == 1:
            slot.retried = True
            page.pending.insert(0, _Click(running.click.index, route=2))
            self.event(PoEvent.DOWNLOAD_NOT_BEGUN, outcome="retry",
                       detail=f"{item.name or item.href}: {slot.error}; clicking it again alone, "
                              f"{'a plain link' if slot.converted else 'a pointer click'}"[:300])
            return None
        failure = f"{item.name or item.href}: {slot.error}"
        if isinstance(slot.error, DownloadNotBegun):
            failure += " (also when clicked again alone)"
            self.event(PoEvent.DOWNLOAD_NOT_BEGUN, outcome="failed", detail=failure[:300])
        page.result.failures.append(failure)
        self.event(PoEvent.DOWNLOAD, outcome="failed", detail=failure[:300])
        return None

    def _start_download(self, driver, item: Attachment, window: PageWindow, batch: DownloadBatch,
                        popups: dict[str, Slot | None], convert: bool, pointer: bool) -> tuple[Slot, str]:
        """Click one attachment and record the click in the batch; returns its slot and how the click
        behaves: "download"/"converted" (the browser downloads at once), "popup" (it opened a window,
        bound to the slot) or "navigate" (it navigates the page's own frame first)."""
        mode = driver.execute_script(PREPARE_CLICK_JS, item.element, convert, pointer, not pointer)
        link = urljoin(window.url, item.href.strip()) if usable_link(item.href) else ""
        how = pointer_click(driver, item.element) if pointer else "script"
        self.pacer.clicked()
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
        self.progress.made()
        log.debug("clicked %s (%s, %s)", item.name or item.href, how, mode)
        return slot, mode

    def _await_batch(self, page: _PageRun, until: Callable[[], bool]) -> None:
        """Wait for `until`, looking at popups and at the page meanwhile. A popup is closed as soon as
        its download has begun; one on the sign-in page, or a download that is the sign-in page, stops
        the run; an error page in place of the PO page fails the click that navigated there. Running
        downloads tell their bytes (the attempt's progress, and the console's)."""

        def look() -> None:
            self._tell_progress(page.active)
            self._watch_popups(page)
            if _on_page(page.driver, page.window):
                self._begun_on_page = page.batch.begun
            else:
                self._frame_left(page.driver, page.window, page.batch, page.active)

        page.batch.wait(until, on_poll=look, wake_in=self.pacer.delay)

    def _watch_popups(self, page: _PageRun) -> None:
        """A new window belongs to the newest click still without a download or a window of its own. An
        open popup on the sign-in page stops the run; one whose download began (or whose click ended) is
        closed, unless a recording runs: it collects a popup's events as the page's end closes it."""
        handles = page.driver.window_handles
        for h in handles:
            if h not in page.window.handles and h not in page.popups:
                owner = next((r.slot for r in reversed(page.active)
                              if not r.slot.done and r.slot.download is None and not r.slot.frames), None)
                page.popups[h] = owner
                if owner is not None:
                    owner.frames.add(h)
                self.event(PoEvent.POPUP_OPENED, window=f"popup-{len(page.popups)}")
        open_popups = [h for h in page.popups if h in handles]
        if not open_popups:
            return
        # Their URLs from DevTools: asking WebDriver means switching to each, which waits for its page to load.
        urls = self._target_urls(page.batch)
        seen = next((urls[h] for h in open_popups if self.site.is_login_url(self.config.base_url, urls.get(h, ""))), "")
        if seen:
            raise LoginRequiredError(f"The portal asked for a sign-in in a window the download opened ({seen}).")
        begun = {d.frame_id for d in (s.download for s in page.batch.slots) if d}
        ready = [h for h in open_popups if h in begun or (page.popups[h] is not None and page.popups[h].done)]
        if ready and not self.recorder:
            for h in ready:
                self._close_target(page.batch, h)
                page.popups.pop(h, None)

    def _frame_left(self, driver, window: PageWindow, batch: DownloadBatch, active: list[_Running]) -> None:
        """The PO page's own frame shows another page after a click. While a click still waits for its
        file, the page is judged: an error page or a web page fails that click; a sign-in refresh on
        the way is followed (a marked link redirected to another host navigates the frame) until it
        ends in the download. Once no click waits, the frame was left on a page on the way: the PO
        page comes back for the next click."""
        waiting = [r.slot for r in active if not r.slot.done and r.slot.download is None]

        def began() -> bool:
            """A download began since the frame was last seen on the PO page: the click that left it
            got its file (through a sign-in refresh, which leaves the frame on the last page it passed)."""
            batch.update()
            return batch.begun > self._begun_on_page

        if waiting and not began():
            # The click that navigated the frame (made one at a time), else the newest still waiting.
            culprit = next((s for s in reversed(waiting) if s.navigates), waiting[-1])
            seen = self.pages.error_page_after_click(driver, window.url, began)
            if seen is None and not began():
                return  # nothing to judge yet: look again at the next poll
            if seen is not None and not began():
                culprit.error = TransientError(self.pages.describe_click_answer(seen), reason="DOWNLOAD_FAILED")
                self._restore_page(driver, window)
                return
        passed = urlsplit(driver.current_url).netloc.lower()
        if passed != self.site.host_of(self.config.base_url):
            self.event(PoEvent.SSO_REFRESH, url=driver.current_url, outcome="download",
                       detail=f"through {passed}, on the way to a file")
        self._restore_page(driver, window)

    def _restore_page(self, driver, window: PageWindow) -> None:
        """The PO page again in its frame, held to what it proved before (its elements are new:
        the next click finds them again); downloads under way go on in the browser. A sign-in wall
        met on the way back stops the run, as on any page."""
        driver.back()
        if not _on_page(driver, window):
            driver.get(window.url)
        probe = self.pages.arrive(driver, window.url, self.pages.expected(window.url))
        if probe.state == PageState.LOGIN:
            raise LoginRequiredError(f"The portal asked for a sign-in while downloading ({probe.evidence}).")
        self.pages.stop_loading(driver)

    def _tell_progress(self, active: list[_Running]) -> None:
        """What the attempt is waiting for, and the bytes of downloads running longer than PROGRESS_EVERY_S
        (at most that often each): an event the console shows and the attempt's watchdog counts."""
        now = time.monotonic()
        begun = [r for r in active if r.slot.download is not None and not r.slot.done]
        self.progress.wait_for(Waiting.DOWNLOAD_BYTES if begun else Waiting.DOWNLOAD_BEGIN)
        for r in begun:
            if not r.begun:  # a file begun is progress too
                r.begun = True
                self.progress.made()
            d = r.slot.download
            if now - d.began >= PROGRESS_EVERY_S and now - r.told >= PROGRESS_EVERY_S and d.received:
                r.told = now
                self.event(PoEvent.DOWNLOAD_PROGRESS, detail=format_progress(d.received, d.total,
                                                                             d.suggested or r.item.name))

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

    def _take(self, batch: DownloadBatch, slot: Slot, item: Attachment, files_dir: Path, source: str) -> StagedFile:
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
        return StagedFile(target, item.name, source, url=d.url or slot.url, suggested=d.suggested,
                           attribution=slot.how.value, identity=item.identity)
