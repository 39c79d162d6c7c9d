"""Every download of the one browser belongs to the window that started it, on the browser's own word.

N windows share one browser, and Chromium has one download directory per browser context:
DevTools `Page.setDownloadBehavior` is not per window (measured: the last call wins for every
window, and a second file of an existing name is dropped). So attribution cannot come from folders.
It comes from the browser's download events instead, which pobatch.corelib.browser.download_events records for every
local mode (files spooled under their GUID, one record per download); this router adds what only a
browser shared by several windows needs:

- the frame that started a download is a window's own page, or a popup whose opener chain
  (`Target.targetInfo.openerId`) leads to one window, or an iframe found in a window's frame tree;
- the window is a registered *window instance*: a replaced window gets a new handle, so a late
  download of the old instance can never be taken by the new one;
- a download whose frame belongs to no live window is cancelled at once and kept out of every PO.

Each window's workflow then reads the tracker through pobatch.corelib.browser.download_sink.EventDownloadSink with
`owns=router.owns(handle)`: the same batches, matching and checks as a browser of its own.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable

from pobatch.corelib.browser.devtools import DevToolsError, DevToolsLink
from pobatch.corelib.browser.download_events import BrowserDownload, DownloadTracker

log = logging.getLogger(__name__)


@dataclass
class _RegisteredWindow:
    """What the router knows of a window it routes downloads for (one window instance)."""

    handle: str
    retired: bool = False


@dataclass
class RouterStats:
    delivered: int = 0  # finished downloads of a live window
    unclaimed: int = 0  # no live window's: unknown frame, or a window instance replaced meanwhile
    cancelled: int = 0
    by_window: dict[str, int] = field(default_factory=dict)
    peak_in_flight: int = 0  # downloads running at one moment, any window
    peak_same_name: int = 0  # downloads of one name running at one moment (the attribution risk)


class DownloadRouter:
    def __init__(self, link: DevToolsLink, tracker: DownloadTracker) -> None:
        self.link = link
        self.tracker = tracker
        self._lock = threading.Lock()
        self._windows: dict[str, _RegisteredWindow] = {}
        self._openers: dict[str, str | None] = {}  # target id -> opener target id
        self._owner: dict[str, str | None] = {}  # download guid -> window handle (None: nobody's)
        self._running: dict[str, BrowserDownload] = {}
        self._crashed: set[str] = set()
        self.stats = RouterStats()
        link.on("Target.targetCreated", self._on_target)
        link.on("Target.targetInfoChanged", self._on_target)
        link.on("Target.targetCrashed", self._on_crash)
        tracker.subscribe(self._on_begin, self._on_progress)
        link.call("Target.setDiscoverTargets", {"discover": True})

    # -- windows ----------------------------------------------------------------------------------
    def register(self, handle: str) -> None:
        with self._lock:
            self._windows[handle] = _RegisteredWindow(handle)

    def retire(self, handle: str) -> None:
        """The window instance is gone: cancel what it still downloads, never give it anything again."""
        with self._lock:
            w = self._windows.get(handle)
            if w:
                w.retired = True
            running = [g for g, owner in self._owner.items() if owner == handle and g in self._running]
            for guid in running:
                self._owner[guid] = None
        for guid in running:
            self.tracker.forget(guid)
            self.stats.cancelled += 1

    def owns(self, handle: str) -> Callable[[BrowserDownload], bool]:
        """The filter of this window's sink: downloads its page or its popups started."""
        def mine(d: BrowserDownload) -> bool:
            with self._lock:
                return self._owner.get(d.guid) == handle
        return mine

    def owner_of(self, target_id: str) -> str | None:
        """The registered window a page or popup belongs to (following openers), or None."""
        seen: set[str] = set()
        current: str | None = target_id
        while current and current not in seen:
            seen.add(current)
            with self._lock:
                if current in self._windows:
                    return current
                known = current in self._openers
                opener = self._openers.get(current)
            if not known:
                opener = self._ask_opener(current)
            current = opener
        return None

    def crashed(self, target_id: str) -> bool:
        """The browser said this page's renderer crashed (a crashed page answers no DevTools call)."""
        with self._lock:
            return target_id in self._crashed

    def in_flight(self, handle: str) -> int:
        with self._lock:
            return sum(1 for g in self._running if self._owner.get(g) == handle)

    # -- events (dispatcher thread) ---------------------------------------------------------------
    def _on_target(self, params: dict, _session: str | None) -> None:
        info = params.get("targetInfo") or {}
        tid = info.get("targetId")
        if not tid or info.get("type") != "page":
            return
        with self._lock:
            self._openers[tid] = info.get("openerId") or None

    def _on_crash(self, params: dict, _session: str | None) -> None:
        with self._lock:
            self._crashed.add(params.get("targetId", ""))

    def _ask_opener(self, target_id: str) -> str | None:
        try:
            info = self.link.call("Target.getTargetInfo", {"targetId": target_id}, timeout=5).get("targetInfo", {})
        except DevToolsError:
            opener = self._frame_owner(target_id)
        else:
            opener = info.get("openerId") or None
        with self._lock:
            self._openers[target_id] = opener
        return opener

    def _frame_owner(self, frame_id: str) -> str | None:
        """A frame that is no target of its own (an iframe): search the windows' frame trees."""
        with self._lock:
            handles = [w.handle for w in self._windows.values() if not w.retired]
        for handle in handles:
            session = None
            try:
                session = self.link.call("Target.attachToTarget", {"targetId": handle, "flatten": True},
                                         timeout=5)["sessionId"]
                tree = self.link.call("Page.getFrameTree", session_id=session, timeout=5)["frameTree"]
                if _tree_has(tree, frame_id):
                    return handle
            except (DevToolsError, KeyError):
                continue
            finally:
                if session:
                    try:
                        self.link.call("Target.detachFromTarget", {"sessionId": session}, timeout=5)
                    except DevToolsError:
                        pass
        return None

    def _on_begin(self, d: BrowserDownload) -> None:
        owner = self.owner_of(d.frame_id)
        with self._lock:
            w = self._windows.get(owner) if owner else None
            if w is None or w.retired:
                owner = None
            self._owner[d.guid] = owner
            self._running[d.guid] = d
            self.stats.peak_in_flight = max(self.stats.peak_in_flight, len(self._running))
            self.stats.peak_same_name = max(self.stats.peak_same_name,
                                            sum(1 for r in self._running.values() if r.suggested == d.suggested))
        if owner is None:
            log.warning("a download nobody may have (frame %s, %s): kept out of every PO", d.frame_id, d.url)
            self.stats.unclaimed += 1
            self.tracker.forget(d.guid)

    def _on_progress(self, d: BrowserDownload) -> None:
        if not d.finished:
            return
        with self._lock:
            self._running.pop(d.guid, None)
            owner = self._owner.get(d.guid)
            if owner and d.state.value == "completed":
                self.stats.delivered += 1
                self.stats.by_window[owner] = self.stats.by_window.get(owner, 0) + 1
            elif owner:
                self.stats.cancelled += 1  # cut off, refused, or cancelled by its window's workflow


def _tree_has(tree: dict, frame_id: str) -> bool:
    if (tree.get("frame") or {}).get("id") == frame_id:
        return True
    return any(_tree_has(child, frame_id) for child in tree.get("childFrames") or ())

