"""A page's attachments downloaded one click and one file at a time (a Grid node's folder).

The sink (pobatch.corelib.browser.download_sink.DownloadSink) is emptied after every file, so every file
belongs to one click. A failed download restarts the browser before going on: only that kills a
download still in flight, which could otherwise land during the next click.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from pobatch.core.events import PoEvent
from pobatch.core.workflow.attachments import BEGIN_TIMEOUT_S, Attachment, Collector, PageResult, PageWindow, \
    StagedFile, pointer_click
from pobatch.core.workflow.page_probes import JS_CLICK, SCROLL_CENTER_JS
from pobatch.core.workflow.page_reader import same_document
from pobatch.core.workflow.progress import Waiting
from pobatch.corelib.browser.download_sink import DownloadSink
from pobatch.corelib.browser.downloads import DownloadNotBegun, DownloadStalled, DownloadTimeout
from pobatch.corelib.errors import LoginRequiredError, TransientError
from pobatch.corelib.safe_paths import unique_name

log = logging.getLogger(__name__)


class OneByOneCollector(Collector):
    """Downloads a page's attachments one click and one file at a time."""

    sink: DownloadSink

    def collect(self, url: str, files_dir: Path, source: str) -> PageResult:
        """Download every attachment on the open page, one click and one file at a time.

        A failed download restarts the browser before going on: only that kills a download still in
        flight, which could otherwise land during the next click and be taken for the wrong file.
        """
        from selenium.common.exceptions import StaleElementReferenceException

        driver = self.session.driver
        result, items = self.read_page(driver, url, source)
        window = PageWindow.of(driver) if items else None
        idx = 0
        while idx < len(items):
            item = items[idx]
            try:
                name = self._download_one(driver, item, window)
                target = files_dir / unique_name(files_dir, name, set())
                self.sink.fetch(name, target)
                result.downloaded.append(StagedFile(target, item.name, source, url=item.href, suggested=name,
                                                     identity=item.identity))
                idx += 1
            except StaleElementReferenceException:
                items = self.find_again(driver, result)
            except TransientError as exc:
                failure = f"{item.name or item.href}: {exc}"
                result.failures.append(failure)
                self.event(PoEvent.DOWNLOAD, outcome="failed", detail=failure[:300])
                if isinstance(exc, (DownloadTimeout, DownloadStalled)):
                    self.event(PoEvent.BROWSER_RESTART, detail="clear in-flight downloads")
                    self.session.restart()
                self.session.start()
                self.sink.clear()
                driver = self.session.driver
                self.pages.open(driver, url)
                self.pages.stop_loading(driver)
                items = self.find_again(driver, result, when="after a restart")
                window = PageWindow.of(driver)
                idx += 1
        return result

    def _download_one(self, driver, item: Attachment, window: PageWindow) -> str:
        """Click one attachment and wait for exactly one new finished file; close any popup it opened.

        `window` is the page as the previous download left it: every popup is closed before this
        returns, so the handles and the URL still hold for the next click."""
        main, handles, page_url = window.main, window.handles, window.url
        how = self._click(driver, item, pointer=self.site.pointer_clicks)
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
                    raise LoginRequiredError(f"The portal asked for a sign-in in a window the download opened "
                                             f"({seen}).")
            if check_page and driver.current_url != page_url:
                # A link that answers with an error page replaces the PO page instead of downloading:
                # say so now rather than after the download timeout.
                seen = self.pages.error_page_after_click(driver, page_url, lambda: bool(self.sink.names()))
                if seen is not None and not self.sink.names():
                    raise TransientError(self.pages.describe_click_answer(seen), reason="DOWNLOAD_FAILED")

        t0 = time.monotonic()
        self.progress.wait_for(Waiting.DOWNLOAD_BEGIN)
        try:
            try:
                names = self.sink.wait_for_new(1, timeout=self.config.download_timeout,
                                               stall_timeout=self.config.stall_timeout, on_poll=watch_popups,
                                               begin_timeout=BEGIN_TIMEOUT_S)
            except DownloadNotBegun as exc:
                # The next route: the other click kind (a handler may ignore script clicks), once.
                self.event(PoEvent.DOWNLOAD_NOT_BEGUN, outcome="retry",
                           detail=f"{item.name or item.href}: {exc}; clicking it again, "
                                  f"{'a script click' if self.site.pointer_clicks else 'a pointer click'}"[:300])
                how = self._click(driver, item, pointer=not self.site.pointer_clicks)
                names = self.sink.wait_for_new(1, timeout=self.config.download_timeout,
                                               stall_timeout=self.config.stall_timeout, on_poll=watch_popups)
        finally:
            watch_popups(check_page=False)  # the file is in (or the wait failed): only popups matter now
            if popups:  # no new window: focus never left the main one, two round trips saved
                self.close_windows(driver, main, popups)
        if not same_document(driver.current_url, page_url):
            # The file came through a sign-in refresh, which left the frame on its last page: the PO
            # page again for the next click (whose element is then found again).
            self.pages.open(driver, page_url)
            self.pages.stop_loading(driver)
        if len(names) != 1:
            raise TransientError(f"one click brought {len(names)} files: {names}", reason="UNEXPECTED_FILES")
        self.event(PoEvent.DOWNLOAD, outcome="ok", detail=f"{names[0]} via {how} in {time.monotonic() - t0:.2f}s")
        return names[0]

    def _click(self, driver, item: Attachment, pointer: bool) -> str:
        """A pointer click (scrolled clear of floating bars) or a script click; returns which it was."""
        if pointer:
            driver.execute_script(SCROLL_CENTER_JS, item.element)
            return pointer_click(driver, item.element)
        driver.execute_script(JS_CLICK, item.element)
        return "script"

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
