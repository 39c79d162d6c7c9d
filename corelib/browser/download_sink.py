"""Where a click's download lands and how the workflow gets it: the browser's own events, or a Grid node's folder.

Local browsers (every local mode, the single-session strategy too): EventDownloadSink. Files land
under their GUID in a spool folder, each is matched to the click that started it, and a page's files
are awaited together (DownloadBatch).

A Selenium Grid keeps the one-click-at-a-time sink (DownloadSink), because the node's DevTools
endpoint may be out of reach: the workflow clicks one attachment at a time and asks its sink three
things: wait until exactly the new finished file is there (nothing partial), fetch it to a path of its
choosing, and forget everything (before an attempt, after a failure). fetch() removes the file from
the sink, so the sink is empty again before the next click and every file belongs to one click.
The node's managed-downloads folder is seen only through the session: `get_downloadable_files()`
is a snapshot of names (it does not wait, and it lists partial files too), the bytes come back
zipped and base64-encoded, and `delete_downloadable_files()` empties it.
"""
from __future__ import annotations

import base64
import io
import logging
import os
import time
import zipfile
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Protocol

from pobatch.corelib.browser.session import BrowserSession
from pobatch.corelib.browser.download_events import BrowserDownload, DownloadState, DownloadTracker
from pobatch.corelib.browser.downloads import DownloadInterrupted, DownloadNotBegun, DownloadStalled, DownloadTimeout, \
    is_partial
from pobatch.corelib.errors import LoginRequiredError, TransientError
from pobatch.corelib.polling import Backoff, Throttle

log = logging.getLogger(__name__)


class DownloadSink(Protocol):
    def names(self) -> list[str]:
        """The files in the sink now, finished or partial (a click's download has begun once one is)."""

    def clear(self) -> None:
        """Forget every file, finished or partial: what an earlier attempt left is not this click's."""

    def wait_for_new(self, count: int = 1, timeout: float = 60.0, stall_timeout: float = 20.0,
                     on_poll: Callable[[], None] | None = None) -> list[str]:
        """Block until `count` finished files exist and none is partial; DownloadStalled when a partial
        file stops growing for stall_timeout, DownloadTimeout when nothing finishes within timeout."""

    def fetch(self, name: str, target: Path) -> Path:
        """Put the finished file `name` at `target` and remove it from the sink."""


class GridDownloadSink:
    """A Grid node's managed-downloads folder, reached through the current remote session.

    `session` holds the live driver (a restarted session gives a new one, with an empty folder).
    The file list carries names only, so "still growing" is judged by the size of the partial file:
    once the list has not changed for a while, the partial file is fetched and its size compared
    (every stall_timeout/4 at most, so a stall is reported within about 1.5 x stall_timeout).
    """

    def __init__(self, session: BrowserSession, poll: float = 0.1) -> None:
        self.session = session
        self.poll = poll

    @property
    def driver(self) -> Any:
        return self.session.driver

    def names(self) -> list[str]:
        return list(self.driver.get_downloadable_files())

    def clear(self) -> None:
        self.driver.delete_downloadable_files()

    def wait_for_new(self, count: int = 1, timeout: float = 60.0, stall_timeout: float = 20.0,
                     on_poll: Callable[[], None] | None = None, stable_for: float = 0.0,
                     begin_timeout: float | None = None) -> list[str]:
        """As DownloadSink.wait_for_new. stable_for defaults to 0: the node gives no sizes to watch
        settle, and Chromium renames `.crdownload` to the final name only once the file is complete.
        DownloadNotBegun when no file at all, partial or finished, has appeared within begin_timeout."""
        start = time.monotonic()
        last_names: set[str] | None = None
        last_change = start  # the list changed, or a partial file grew
        last_probe = start
        probed: dict[str, int] = {}
        stable_since: float | None = None
        probe_every = max(stall_timeout / 4, self.poll)
        backoff = Backoff(first=min(0.01, self.poll), ceiling=self.poll)
        callback = Throttle(on_poll, self.poll)
        while True:
            now = time.monotonic()
            names = set(self.names())
            if names != last_names:
                last_names, last_change, stable_since = names, now, None
            done = sorted(n for n in names if not is_partial(n))
            partial = sorted(n for n in names if is_partial(n))
            if len(done) >= count and not partial:
                stable_since = stable_since or now
                if now - stable_since >= stable_for:
                    return done
            if partial and now - last_change >= probe_every and now - last_probe >= probe_every:
                sizes = {n: self._size(n) for n in partial}
                last_probe = time.monotonic()
                if sizes != probed:
                    probed, last_change = sizes, last_probe
                elif last_probe - last_change >= stall_timeout:
                    raise DownloadStalled(f"download stopped growing for {stall_timeout:.0f}s: "
                                          + ", ".join(f"{n} ({s} bytes)" for n, s in sizes.items())
                                          + " on the Grid node")
            if begin_timeout is not None and not names and now - start > begin_timeout:
                raise DownloadNotBegun(f"no download began within {begin_timeout:.0f}s of the click on the Grid node")
            if now - start > timeout:
                raise DownloadTimeout(
                    f"{len(done)} of {count} download(s) finished within {timeout:.0f}s on the Grid node"
                    + (f"; still partial: {', '.join(partial)}" if partial else ""))
            callback()
            backoff.sleep()

    def _contents(self, name: str) -> zipfile.ZipFile:
        from selenium.webdriver.remote.command import Command

        value = self.driver.execute(Command.DOWNLOAD_FILE, {"name": name})["value"]
        return zipfile.ZipFile(io.BytesIO(base64.b64decode(value["contents"])))

    def _size(self, name: str) -> int:
        """Current size of a (partial) file on the node; -1 once it is gone (renamed: it moved on)."""
        from selenium.common.exceptions import WebDriverException

        try:
            with self._contents(name) as zf:
                return sum(i.file_size for i in zf.infolist())
        except WebDriverException:
            return -1

    def fetch(self, name: str, target: Path) -> Path:
        """Download the file's bytes to target (written aside, then renamed), then empty the node's folder.

        Unzipped here rather than with driver.download_file(): that one writes `<name>.zip` into a
        temp folder, which fails for names near the file system's 255-byte limit."""
        with self._contents(name) as zf:
            members = [i for i in zf.infolist() if not i.is_dir()]
            if len(members) != 1:
                raise TransientError(f"the Grid sent {len(members)} files for {name!r}", reason="DOWNLOAD_FAILED")
            part = target.with_name(".pobatch-fetch.part")  # never near the name-length limit
            with zf.open(members[0]) as src, open(part, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
        os.replace(part, target)
        self.clear()
        return target


class Attribution(str, Enum):
    """How a download was matched to the click that started it (recorded with the file)."""

    FRAME = "frame"  # it began in a popup that this click opened
    URL = "url"  # its URL is the attachment's own link
    ORDER = "order"  # neither: the oldest click still waiting (clicks that navigate the page's own
    # frame are made one at a time, so for them click order is begin order)


@dataclass
class Slot:
    """One click in a batch and, once known, the download it started."""

    index: int
    label: str
    url: str  # the attachment's absolute link, '' when it has none
    click: str = ""  # how it was clicked (for the record)
    converted: bool = False  # a plain link the workflow marked as a download (it may answer with a page)
    navigates: bool = False  # the click navigates the page's own frame first (its URL may not be the file's)
    clicked: float = field(default_factory=time.monotonic)
    frames: set[str] = field(default_factory=set)  # popups (target ids) this click opened
    download: BrowserDownload | None = None
    how: Attribution | None = None
    error: TransientError | None = None
    retried: bool = False  # given up on (no download began) and clicked again in another slot

    @property
    def done(self) -> bool:
        return self.error is not None or (self.download is not None and self.download.finished)

    @property
    def ok(self) -> bool:
        return self.error is None and self.download is not None and self.download.state is DownloadState.COMPLETED


class DownloadBatch:
    """The downloads of one page's clicks, awaited together and each matched to its click.

    Only downloads that begin after the batch was opened and that `owns` accepts take part, so a
    late download of an earlier page or PO can never be taken for one of this page's files. Every
    download that is not fetched is cancelled and its spooled file removed when the batch closes.
    """

    def __init__(self, tracker: DownloadTracker, owns: Callable[[BrowserDownload], bool],
                 download_timeout: float, stall_timeout: float,
                 is_login_url: Callable[[str], bool] = lambda url: False,
                 begin_timeout: float | None = None) -> None:
        self.tracker = tracker
        self._owns = owns
        self.download_timeout = download_timeout
        self.stall_timeout = stall_timeout
        # A click whose download has not begun by then started none (DownloadNotBegun): the browser
        # dropped it or the page ignored it, and waiting the whole download_timeout would not help.
        self.begin_timeout = min(begin_timeout or download_timeout, download_timeout)
        self._is_login_url = is_login_url
        tracker.settle()
        self._seen = tracker.last_seq
        self.slots: list[Slot] = []
        self.extra: list[BrowserDownload] = []  # downloads no click of this batch accounts for
        self._fetched: set[str] = set()

    @property
    def begun(self) -> int:
        """How many of this batch's clicks have their download by now."""
        return sum(1 for s in self.slots if s.download is not None)

    def expect(self, label: str, url: str = "", navigates: bool = False) -> Slot:
        """Record a click, right after it was made."""
        slot = Slot(len(self.slots), label, url, navigates=navigates)
        self.slots.append(slot)
        return slot

    def update(self) -> None:
        """Match newly begun downloads to clicks and judge every slot still open.

        Raises LoginRequiredError when a download turns out to be the portal's sign-in page."""
        for d in self.tracker.since(self._seen):
            if not d.announced:  # its owner is not decided yet: look again at the next update
                break
            self._seen = d.seq
            if not self._owns(d):
                continue
            if self._is_login_url(d.url):
                self.tracker.cancel(d.guid)
                raise LoginRequiredError(f"The portal asked for a sign-in instead of a file ({d.url}).")
            self._attribute(d)
        now = time.monotonic()
        for s in self.slots:
            if s.done:
                continue
            d = s.download
            if d is None:
                if now - s.clicked > self.begin_timeout:
                    s.error = DownloadNotBegun(f"no download began within {self.begin_timeout:.0f}s of the click")
            elif now - d.last_growth > self.stall_timeout:
                self.tracker.cancel(d.guid)
                s.error = DownloadStalled(f"download stopped growing for {self.stall_timeout:.0f}s at {d.received}"
                                          f" of {d.total or '?'} bytes: {d.suggested}")
            elif now - s.clicked > self.download_timeout:
                self.tracker.cancel(d.guid)
                s.error = DownloadTimeout(f"download not finished within {self.download_timeout:.0f}s"
                                          f" ({d.received} of {d.total or '?'} bytes): {d.suggested}")
        for s in self.slots:
            d = s.download
            if s.error is None and d is not None and d.state is DownloadState.CANCELED:
                s.error = DownloadInterrupted(f"the browser ended the download after {d.received} of "
                                              f"{d.total or '?'} bytes (cut off, refused or cancelled): "
                                              f"{d.suggested}")

    def _attribute(self, d: BrowserDownload) -> None:
        waiting = [s for s in self.slots if s.download is None and s.error is None]
        match = next(((s, Attribution.FRAME) for s in waiting if d.frame_id in s.frames), None)
        match = match or next(((s, Attribution.URL) for s in waiting if s.url and s.url == d.url), None)
        # By order: first a click that navigates its frame (no URL to go by; such clicks are made one
        # at a time), then one whose URL did not match (a redirect), never a popup's (its frame would).
        match = match or next(((s, Attribution.ORDER) for s in waiting if s.navigates), None)
        match = match or next(((s, Attribution.ORDER) for s in waiting if not s.frames), None)
        match = match or next(((s, Attribution.ORDER) for s in waiting), None)
        if match is None and d.url and any(s.url == d.url and s.retried for s in self.slots):
            # A late download of a click that was given up on and clicked again: the file is already
            # another click's (or will be); the second copy is not a stranger, only surplus.
            log.debug("a second download of %s (%s): dropped", d.suggested, d.url)
            self.tracker.forget(d.guid)
            return
        if match is None:
            log.warning("a download no click accounts for: %s (%s)", d.suggested, d.url)
            self.extra.append(d)
            self.tracker.cancel(d.guid)
            return
        match[0].download, match[0].how = d, match[1]
        log.debug("download %s (%s) is click %d's, by %s", d.guid, d.suggested, match[0].index, match[1].value)

    def wait(self, until: Callable[[], bool], on_poll: Callable[[], None] | None = None,
             poll: float = 0.2, wake_in: Callable[[], float] | None = None) -> None:
        """Update until `until()` holds; on_poll runs at most every `poll` seconds while waiting.
        `wake_in` says when a time-based part of `until` may next hold (seconds; 0 or less: not timed),
        so the wait wakes then instead of a poll later."""
        callback = Throttle(on_poll, poll)
        while True:
            version = self.tracker.version
            self.update()
            if until():
                return
            callback()
            if not self.tracker.alive:
                raise TransientError("the browser's DevTools link closed during the downloads",
                                     reason="BROWSER_CRASHED")
            sleep = min(poll, 0.5)
            if wake_in is not None and (due := wake_in()) > 0:
                sleep = min(sleep, due)
            self.tracker.wait_change(version, sleep)

    def fetch(self, slot: Slot, target: Path) -> Path:
        """Move a completed download's file from the spool to target, once its size is the one the
        browser reported (TransientError DOWNLOAD_FAILED otherwise: the file is not taken)."""
        assert slot.download is not None and slot.ok
        d = slot.download
        path = self.tracker.path_of(d)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise TransientError(f"the browser finished {d.suggested!r} but its file is missing: {exc}",
                                 reason="DOWNLOAD_FAILED") from exc
        if size != d.received or (d.total and size != d.total):
            raise TransientError(f"{d.suggested!r}: {size} bytes on disk, the browser reported {d.received} of "
                                 f"{d.total or '?'}", reason="DOWNLOAD_FAILED")
        os.replace(path, target)
        self._fetched.add(slot.download.guid)
        self.tracker.forget(slot.download.guid)
        return target

    def close(self) -> None:
        """Cancel and remove every download of this batch that was not fetched."""
        self.update_quietly()
        for d in [s.download for s in self.slots if s.download] + self.extra:
            if d.guid not in self._fetched:
                self.tracker.forget(d.guid)

    def update_quietly(self) -> None:
        try:
            self.update()
        except LoginRequiredError:
            pass


class EventDownloadSink:
    """The downloads of a local browser, tracked by the browser's own events (pobatch.corelib.browser.download_events).

    `session` holds the live driver: a restarted browser gets a new tracker on its new DevTools
    endpoint, with the same spool folder (emptied). `owns` narrows the browser's downloads to this
    sink's (the single-session strategy: one window's); by default every download is this sink's.
    """

    def __init__(self, session: BrowserSession, spool: Path | str,
                 owns: Callable[[BrowserDownload], bool] | None = None,
                 tracker_of: Callable[[], DownloadTracker] | None = None) -> None:
        self.session = session
        self.spool = Path(spool)
        self._owns = owns or (lambda d: True)
        self._tracker_of = tracker_of
        self._tracker: DownloadTracker | None = None
        self._driver_id: int | None = None

    @property
    def tracker(self) -> DownloadTracker:
        if self._tracker_of is not None:
            return self._tracker_of()
        driver = self.session.driver
        if self._tracker is None or id(driver) != self._driver_id or not self._tracker.alive:
            if self._tracker is not None:
                self._tracker.close()
            self._empty_spool()
            try:
                self._tracker = DownloadTracker.for_driver(driver, self.spool)
            except Exception as exc:
                raise TransientError(f"could not reach the browser's DevTools endpoint: {exc}",
                                     reason="BROWSER_CRASHED") from exc
            self._driver_id = id(driver)
        return self._tracker

    def batch(self, download_timeout: float, stall_timeout: float,
              is_login_url: Callable[[str], bool] = lambda url: False,
              begin_timeout: float | None = None) -> DownloadBatch:
        return DownloadBatch(self.tracker, self._owns, download_timeout, stall_timeout, is_login_url,
                             begin_timeout)

    def clear(self) -> None:
        """Cancel and forget every download of ours still known: what an earlier attempt left is not
        this one's (a batch already ignores downloads that began before it)."""
        tracker = self.tracker
        for d in tracker.since(0):
            if self._owns(d):
                tracker.forget(d.guid)
        if self._tracker_of is None:
            self._empty_spool(keep={d.guid for d in tracker.since(0)})

    def _empty_spool(self, keep: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.spool.mkdir(parents=True, exist_ok=True)
        for p in self.spool.iterdir():
            if p.name not in keep:
                try:
                    p.unlink()
                except OSError:
                    pass

    def close(self) -> None:
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None
