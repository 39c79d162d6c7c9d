"""Where a click's download lands and how the workflow gets it: a local folder, or a Grid node's.

The workflow clicks one attachment at a time and asks its sink three things: wait until exactly the
new finished file is there (nothing partial), fetch it to a path of its choosing, and forget
everything (before an attempt, after a failure). fetch() removes the file from the sink, so the sink
is empty again before the next click and every file belongs to one click.

Local: the browser's own download folder (corelib.downloads.DownloadFolder), as before.
Grid: the node's managed-downloads folder, seen only through the session: `get_downloadable_files()`
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
from pathlib import Path
from typing import Any, Callable, Protocol

from corelib.downloads import DownloadFolder, DownloadStalled, DownloadTimeout, is_partial
from corelib.errors import TransientError
from corelib.polling import Backoff, Throttle

log = logging.getLogger(__name__)


class DownloadSink(Protocol):
    def clear(self) -> None:
        """Forget every file, finished or partial: what an earlier attempt left is not this click's."""

    def wait_for_new(self, count: int = 1, timeout: float = 60.0, stall_timeout: float = 20.0,
                     on_poll: Callable[[], None] | None = None) -> list[str]:
        """Block until `count` finished files exist and none is partial; DownloadStalled when a partial
        file stops growing for stall_timeout, DownloadTimeout when nothing finishes within timeout."""

    def fetch(self, name: str, target: Path) -> Path:
        """Put the finished file `name` at `target` and remove it from the sink."""


class LocalDownloadSink:
    """The browser's download folder on this PC: files are moved, not copied."""

    def __init__(self, folder: DownloadFolder | Path | str) -> None:
        self.folder = folder if isinstance(folder, DownloadFolder) else DownloadFolder(Path(folder))

    @property
    def path(self) -> Path:
        return self.folder.path

    def clear(self) -> None:
        self.folder.clear()

    def wait_for_new(self, count: int = 1, timeout: float = 60.0, stall_timeout: float = 20.0,
                     on_poll: Callable[[], None] | None = None) -> list[str]:
        return self.folder.wait_for_new(set(), count, timeout=timeout, stall_timeout=stall_timeout,
                                        on_poll=on_poll)

    def fetch(self, name: str, target: Path) -> Path:
        os.replace(self.folder.path / name, target)
        return target


class GridDownloadSink:
    """A Grid node's managed-downloads folder, reached through the current remote session.

    `driver_of` returns the live driver (a restarted session gives a new one, with an empty folder).
    The file list carries names only, so "still growing" is judged by the size of the partial file:
    once the list has not changed for a while, the partial file is fetched and its size compared
    (every stall_timeout/4 at most, so a stall is reported within about 1.5 x stall_timeout).
    """

    def __init__(self, driver_of: Callable[[], Any], poll: float = 0.1) -> None:
        self._driver_of = driver_of
        self.poll = poll

    @property
    def driver(self):
        return self._driver_of()

    def names(self) -> list[str]:
        return list(self.driver.get_downloadable_files())

    def clear(self) -> None:
        self.driver.delete_downloadable_files()

    def wait_for_new(self, count: int = 1, timeout: float = 60.0, stall_timeout: float = 20.0,
                     on_poll: Callable[[], None] | None = None, stable_for: float = 0.0) -> list[str]:
        """As DownloadSink.wait_for_new. stable_for defaults to 0: the node gives no sizes to watch
        settle, and Chromium renames `.crdownload` to the final name only once the file is complete."""
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
