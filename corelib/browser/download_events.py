"""A browser's downloads as the browser itself reports them: one record per download, keyed by its GUID.

`Browser.setDownloadBehavior(allowAndName, eventsEnabled)` makes Chromium save every download in one
spool folder under a fresh GUID instead of its suggested name, and report it:
`Browser.downloadWillBegin` (guid, url, suggestedFilename, frameId) when the response headers are in,
then `Browser.downloadProgress` (receivedBytes, totalBytes, state) about twice a second and at the end,
with state `completed` or `canceled` (Chromium reports an interrupted download, one it gave up
resuming, or one answered with an HTTP error, as `canceled`).

What that buys over watching a folder (docs/design.md, "Downloads in Chromium"):
- two downloads of the same name never meet, whatever their order;
- a name too long for the file system is no obstacle: the file on disk is named by its GUID;
- a download cut off for good is known when the browser gives up, not after a timeout, and a
  stalled one is seen by its byte count, which the browser reports even while nothing arrives.

One tracker serves one browser (one DevTools link). Workflows read it through
pobatch.corelib.browser.download_sink.EventDownloadSink and its batches; the single-session strategy adds its window
ownership on top through subscribe().
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable

from pobatch.corelib.browser.devtools import DevToolsError, DevToolsLink

log = logging.getLogger(__name__)


class DownloadState(str, Enum):
    IN_PROGRESS = "inProgress"
    COMPLETED = "completed"
    CANCELED = "canceled"


@dataclass
class BrowserDownload:
    """One download, as the browser reported it so far."""

    guid: str
    url: str
    suggested: str  # the browser's suggested file name (Content-Disposition, download attribute, URL)
    frame_id: str  # the frame that started it: a window's target id for its top frame
    seq: int  # begin order within this tracker
    state: DownloadState = DownloadState.IN_PROGRESS
    received: int = 0
    total: int = 0
    began: float = field(default_factory=time.monotonic)
    last_growth: float = field(default_factory=time.monotonic)  # when received last changed
    file_path: str = ""  # where the browser put the finished file (spool/<guid>)
    announced: bool = False  # every begin handler has seen it (an owner filter can judge it now)

    @property
    def finished(self) -> bool:
        return self.state is not DownloadState.IN_PROGRESS


BeginHandler = Callable[[BrowserDownload], None]
ProgressHandler = Callable[[BrowserDownload], None]


class DownloadTracker:
    """The downloads of one browser, from its own events; thread-safe, waitable."""

    def __init__(self, link: DevToolsLink, spool: Path | str) -> None:
        self.link = link
        self.spool = Path(spool)
        self.spool.mkdir(parents=True, exist_ok=True)
        self._cond = threading.Condition()
        self._downloads: dict[str, BrowserDownload] = {}
        self._seq = 0
        self.version = 0  # counts recorded events: wait_change(version) cannot miss one
        self._on_begin: list[BeginHandler] = []
        self._on_progress: list[ProgressHandler] = []
        link.on("Browser.downloadWillBegin", self._begin)
        link.on("Browser.downloadProgress", self._progress)
        link.call("Browser.setDownloadBehavior",
                  {"behavior": "allowAndName", "downloadPath": os.path.abspath(self.spool), "eventsEnabled": True})

    @classmethod
    def for_driver(cls, driver, spool: Path | str) -> "DownloadTracker":
        """A tracker on a new DevTools link to the browser this local driver started."""
        link = DevToolsLink.to_driver_browser(driver)
        try:
            return cls(link, spool)
        except BaseException:
            link.close()
            raise

    @property
    def alive(self) -> bool:
        return not self.link.closed

    def subscribe(self, on_begin: BeginHandler | None = None, on_progress: ProgressHandler | None = None) -> None:
        """Run handlers on the link's event thread, after the tracker has recorded the event."""
        if on_begin:
            self._on_begin.append(on_begin)
        if on_progress:
            self._on_progress.append(on_progress)

    # -- reading ----------------------------------------------------------------------------------
    def get(self, guid: str) -> BrowserDownload | None:
        with self._cond:
            return self._downloads.get(guid)

    def since(self, seq: int) -> list[BrowserDownload]:
        """Downloads that began after the begin number `seq`, in begin order."""
        with self._cond:
            return sorted((d for d in self._downloads.values() if d.seq > seq), key=lambda d: d.seq)

    @property
    def last_seq(self) -> int:
        with self._cond:
            return self._seq

    def wait_change(self, version: int, timeout: float) -> None:
        """Block until an event after `version` (a value read earlier) is recorded, or timeout."""
        with self._cond:
            self._cond.wait_for(lambda: self.version != version or self.link.closed, timeout)

    def settle(self, timeout: float = 5.0) -> None:
        """Return once every event the browser sent before now is recorded (a click's download that
        has already begun is then known)."""
        try:
            self.link.fence(timeout=timeout)
        except DevToolsError as exc:
            log.debug("download events did not settle: %s", exc)

    # -- acting -----------------------------------------------------------------------------------
    def cancel(self, guid: str) -> None:
        """Stop a download still running (its partial bytes are removed by the browser)."""
        d = self.get(guid)
        if d is None or d.finished:
            return
        try:
            self.link.call("Browser.cancelDownload", {"guid": guid}, timeout=5)
        except DevToolsError as exc:
            log.debug("cancel %s: %s", guid, exc)

    def forget(self, guid: str) -> None:
        """Cancel if running, remove its spooled file, and drop the record."""
        self.cancel(guid)
        with self._cond:
            d = self._downloads.pop(guid, None)
        if d is not None:
            _unlink(self.path_of(d))

    def path_of(self, d: BrowserDownload) -> Path:
        return Path(d.file_path) if d.file_path else self.spool / d.guid

    def close(self) -> None:
        self.link.close()
        with self._cond:
            self._cond.notify_all()

    # -- events (the link's dispatcher thread) ----------------------------------------------------
    def _begin(self, params: dict, _session: str | None) -> None:
        with self._cond:
            self._seq += 1
            d = BrowserDownload(guid=str(params.get("guid", "")), url=str(params.get("url", "")),
                                suggested=str(params.get("suggestedFilename") or ""),
                                frame_id=str(params.get("frameId", "")), seq=self._seq)
            self._downloads[d.guid] = d
            self.version += 1
            self._cond.notify_all()
        log.debug("download %s began: %s (%s) from frame %s", d.guid, d.suggested, d.url, d.frame_id)
        for handler in self._on_begin:
            handler(d)
        with self._cond:
            d.announced = True
            self.version += 1
            self._cond.notify_all()

    def _progress(self, params: dict, _session: str | None) -> None:
        guid = str(params.get("guid", ""))
        with self._cond:
            d = self._downloads.get(guid)
            if d is None:
                return
            received = int(params.get("receivedBytes") or 0)
            if received != d.received:
                d.received, d.last_growth = received, time.monotonic()
            d.total = int(params.get("totalBytes") or d.total)
            try:
                d.state = DownloadState(params.get("state", "inProgress"))
            except ValueError:
                d.state = DownloadState.CANCELED
            if params.get("filePath"):
                d.file_path = str(params["filePath"])
            self.version += 1
            self._cond.notify_all()
        if d.finished:
            log.debug("download %s %s (%d bytes)", guid, d.state.value, d.received)
        for handler in self._on_progress:
            handler(d)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
