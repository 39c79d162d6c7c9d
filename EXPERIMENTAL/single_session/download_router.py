"""Every download of the one browser goes to the window that started it, on the browser's own word.

N windows share one browser, and Chromium 156 has one download directory per browser context:
DevTools `Page.setDownloadBehavior` is not per window (measured: the last call wins for every
window, and a second file of an existing name is dropped). So attribution cannot come from folders.
It comes from the browser instead:

- `Browser.setDownloadBehavior(allowAndName, eventsEnabled)` saves every download in one spool folder
  under a fresh GUID (two windows downloading `invoice.pdf` at the same moment never meet), and
  reports `downloadWillBegin` with the frame that started it and `downloadProgress` until done;
- the frame is a window's own page, or a popup whose opener chain (`Target.targetInfo.openerId`)
  leads to one window, or an iframe found in a window's frame tree;
- the window is a registered *window instance*: a replaced window gets a new handle and a new folder,
  so a late download of the old instance can never land where the new one looks.

While a download runs, the owner's folder holds `<guid>.crdownload` grown to the bytes received, so
the workflow's usual completion and stall checks apply unchanged; when it completes, the file moves
in under its suggested name (one rename) and the placeholder goes. A download whose frame belongs to
no live window, or whose URL ends on the portal's sign-in page, is never delivered to anyone.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from corelib.safe_paths import safe_component, unique_name
from corelib.devtools import DevToolsError, DevToolsLink

log = logging.getLogger(__name__)

PLACEHOLDER_SUFFIX = ".crdownload"


@dataclass
class _Window:
    handle: str
    folder: Path
    retired: bool = False
    login_seen: str = ""  # a download or a popup of this window ended on the sign-in page (its URL)


@dataclass
class _Download:
    guid: str
    owner: str | None  # window handle, None when nobody may have it
    name: str
    url: str
    received: int = 0
    state: str = "inProgress"


@dataclass
class RouterStats:
    delivered: int = 0
    unclaimed: int = 0  # no live window's: unknown frame, disowned, or a sign-in page saved as a file
    discarded: int = 0  # finished for a window instance that was replaced meanwhile
    cancelled: int = 0
    by_window: dict[str, int] = field(default_factory=dict)
    peak_in_flight: int = 0  # downloads running at one moment, any window
    peak_same_name: int = 0  # downloads of one name running at one moment (the attribution risk)


class DownloadRouter:
    def __init__(self, link: DevToolsLink, spool: Path, is_login_url: Callable[[str], bool] | None = None) -> None:
        self.link = link
        self.spool = Path(spool)
        self.spool.mkdir(parents=True, exist_ok=True)
        self._is_login_url = is_login_url or (lambda url: False)
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._openers: dict[str, str | None] = {}  # target id -> opener target id
        self._downloads: dict[str, _Download] = {}
        self._crashed: set[str] = set()
        self.stats = RouterStats()
        link.on("Target.targetCreated", self._on_target)
        link.on("Target.targetInfoChanged", self._on_target)
        link.on("Target.targetCrashed", self._on_crash)
        link.on("Browser.downloadWillBegin", self._on_begin)
        link.on("Browser.downloadProgress", self._on_progress)
        link.call("Target.setDiscoverTargets", {"discover": True})
        link.call("Browser.setDownloadBehavior",
                  {"behavior": "allowAndName", "downloadPath": str(self.spool.resolve()), "eventsEnabled": True})

    # -- windows ----------------------------------------------------------------------------------
    def register(self, handle: str, folder: Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._windows[handle] = _Window(handle, Path(folder))

    def retire(self, handle: str) -> None:
        """The window instance is gone: cancel what it still downloads, never deliver to it again."""
        with self._lock:
            w = self._windows.get(handle)
            if w:
                w.retired = True
        self.disown(handle)

    def disown(self, handle: str, clear_folder: bool = False) -> None:
        """Nothing this window has in flight may reach it any more: called when an attempt starts
        (clear_folder: what arrived since the workflow emptied it is stale too) and after each click's
        file arrived. A download that finishes late then belongs to no click of ours and is dropped."""
        try:
            self.link.fence(timeout=5)  # a download that began before now is known before we look
        except DevToolsError as exc:
            log.debug("fence: %s", exc)
        with self._lock:
            w = self._windows.get(handle)
            running = [d for d in self._downloads.values() if d.owner == handle and d.state == "inProgress"]
            for d in running:
                d.owner = None
                if w:
                    _unlink(w.folder / f"{d.guid}{PLACEHOLDER_SUFFIX}")
            if w and clear_folder:
                w.login_seen = ""
                if w.folder.is_dir():
                    for p in w.folder.iterdir():
                        _unlink(p)
        for d in running:
            try:
                self.link.call("Browser.cancelDownload", {"guid": d.guid}, timeout=5)
                self.stats.cancelled += 1
            except DevToolsError as exc:
                log.debug("cancel %s: %s", d.guid, exc)

    def take_login_seen(self, handle: str) -> str:
        """The sign-in URL a download or popup of this window ended on, reported once; else ''."""
        with self._lock:
            w = self._windows.get(handle)
            if not w or not w.login_seen:
                return ""
            url, w.login_seen = w.login_seen, ""
            return url

    def note_login(self, handle: str, url: str) -> None:
        with self._lock:
            w = self._windows.get(handle)
            if w and not w.retired:
                w.login_seen = url

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
            return sum(1 for d in self._downloads.values() if d.owner == handle and d.state == "inProgress")

    # -- events (dispatcher thread) ---------------------------------------------------------------
    def _on_target(self, params: dict, _session: str | None) -> None:
        info = params.get("targetInfo") or {}
        tid = info.get("targetId")
        if not tid or info.get("type") != "page":
            return
        with self._lock:
            self._openers[tid] = info.get("openerId") or None
        owner = None
        url = info.get("url") or ""
        if url and self._is_login_url(url):
            owner = self.owner_of(tid)
            if owner and owner != tid:  # a popup of that window was sent to sign in
                self.note_login(owner, url)

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

    def _on_begin(self, params: dict, _session: str | None) -> None:
        guid = params.get("guid", "")
        url = params.get("url", "")
        owner = self.owner_of(params.get("frameId", ""))
        name = safe_component(params.get("suggestedFilename") or "", fallback="download", basename=True)
        with self._lock:
            w = self._windows.get(owner) if owner else None
            if w is None or w.retired:
                owner = None
            self._downloads[guid] = _Download(guid, owner, name, url)
            running = [d for d in self._downloads.values() if d.state == "inProgress"]
            self.stats.peak_in_flight = max(self.stats.peak_in_flight, len(running))
            self.stats.peak_same_name = max(self.stats.peak_same_name, sum(1 for d in running if d.name == name))
        if owner is None:
            log.warning("a download nobody may have (frame %s, %s): kept out of every PO", params.get("frameId"), url)
            return
        if self._is_login_url(url):
            self.note_login(owner, url)
            with self._lock:
                self._downloads[guid].owner = None  # the sign-in page, saved as a file: never an attachment
            return
        self._placeholder(guid, 0)

    def _on_progress(self, params: dict, _session: str | None) -> None:
        guid = params.get("guid", "")
        state = params.get("state", "inProgress")
        with self._lock:
            d = self._downloads.get(guid)
            w = self._windows.get(d.owner) if d and d.owner else None
            if w is not None and w.retired:
                w = None
        if d is None:
            return
        if state == "inProgress":
            received = int(params.get("receivedBytes") or 0)
            if w is not None and received != d.received:
                d.received = received
                self._placeholder(guid, received)
            return
        d.state = state
        if state != "completed":
            # canceled: a placeholder of an owned download stays and stops growing, as Chromium's own
            # .crdownload does, so the workflow reports a stalled download and retries.
            with self._lock:
                self._downloads.pop(guid, None)
            return
        spooled = Path(params.get("filePath") or self.spool / guid)
        if self._deliver(d, spooled):
            return
        with self._lock:
            self._downloads.pop(guid, None)
            if d.owner is None:
                self.stats.unclaimed += 1
            else:
                self.stats.discarded += 1
        _unlink(spooled)

    def _deliver(self, d: _Download, spooled: Path) -> bool:
        """Move a finished file to its window, under the lock: a disown() cannot slip in between the
        ownership check and the rename."""
        with self._lock:
            w = self._windows.get(d.owner) if d.owner else None
            if w is None or w.retired:
                return False
            taken = {p.name for p in w.folder.iterdir()} if w.folder.is_dir() else set()
            name = unique_name(w.folder, d.name, taken)
            try:
                os.replace(spooled, w.folder / name)
            except OSError as exc:  # the folder went away (the window closed meanwhile)
                log.debug("could not deliver %s to %s: %s", d.guid, w.folder, exc)
                return False
            _unlink(w.folder / f"{d.guid}{PLACEHOLDER_SUFFIX}")
            self.stats.delivered += 1
            self.stats.by_window[w.handle] = self.stats.by_window.get(w.handle, 0) + 1
            self._downloads.pop(d.guid, None)
            return True

    def _placeholder(self, guid: str, size: int) -> None:
        """A partial file the workflow can watch grow (sparse: no bytes are written), for an owned download."""
        with self._lock:
            d = self._downloads.get(guid)
            w = self._windows.get(d.owner) if d and d.owner else None
            if w is None or w.retired:
                return
            path = w.folder / f"{guid}{PLACEHOLDER_SUFFIX}"
            try:
                with open(path, "ab") as fh:
                    fh.truncate(size)
            except OSError as exc:
                log.debug("placeholder %s: %s", path, exc)


def _tree_has(tree: dict, frame_id: str) -> bool:
    if (tree.get("frame") or {}).get("id") == frame_id:
        return True
    return any(_tree_has(child, frame_id) for child in tree.get("childFrames") or ())


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
