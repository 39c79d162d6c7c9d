"""Download completion, verification and atomic publication, judged from the file system.

Chromium writes a download as a hidden `.org.chromium.Chromium.XXXXXX`, then `<name>.crdownload`, then
`<name>`. "Done" therefore means: the expected number of new finished files, no partial entry, and sizes
that have stopped changing. An empty folder right after a click is not done, and a partial file that
stops growing is a failed download, not a slow one, once it has been still for `stall_timeout`.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pobatch.corelib.errors import TransientError
from pobatch.corelib.polling import Backoff, Throttle

log = logging.getLogger(__name__)

_PARTIAL_SUFFIXES = (".crdownload", ".part", ".partial", ".tmp", ".download")
_PARTIAL_PREFIXES = (".org.chromium.", ".com.google.chrome.", ".com.microsoft.edge.", "unconfirmed ")


def is_partial(name: str) -> bool:
    low = name.lower()
    return low.endswith(_PARTIAL_SUFFIXES) or low.startswith(_PARTIAL_PREFIXES)


class DownloadTimeout(TransientError):
    def __init__(self, message: str) -> None:
        super().__init__(message, reason="DOWNLOAD_TIMEOUT")


class DownloadStalled(TransientError):
    def __init__(self, message: str) -> None:
        super().__init__(message, reason="DOWNLOAD_FAILED")


class DownloadInterrupted(TransientError):
    """The browser itself ended the download without a file: cut off (after its own resume attempts),
    cancelled, or answered with an HTTP error. Known the moment it happens, not after a timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="DOWNLOAD_FAILED")


@dataclass(frozen=True)
class VerifiedFile:
    path: Path
    size: int
    sha256: str


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                return h.hexdigest()
            h.update(block)


class DownloadFolder:
    """One browser's download directory for one PO attempt."""

    def __init__(self, path: Path, poll: float = 0.01, callback_every: float = 0.2) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        # The longest interval between two looks at the folder: a look is one scandir of a folder
        # holding a file or two (tens of microseconds), so looking often costs nothing measurable,
        # while every millisecond between the rename and our look is a millisecond per file.
        self.poll = poll
        self.callback_every = callback_every  # on_poll's rate: it usually costs browser round trips

    def _scan(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        try:
            with os.scandir(self.path) as it:
                for entry in it:
                    try:
                        if entry.is_file(follow_symlinks=False):
                            sizes[entry.name] = entry.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:  # renamed between listing and stat: in flight
                        sizes[entry.name + ".crdownload"] = 0
        except FileNotFoundError:
            pass
        return sizes

    def finished(self) -> set[str]:
        return {n for n in self._scan() if not is_partial(n)}

    def wait_for_new(
        self,
        before: set[str],
        count: int = 1,
        timeout: float = 60.0,
        stall_timeout: float = 20.0,
        stable_for: float = 0.0,
        on_poll: Callable[[], None] | None = None,
    ) -> list[str]:
        """Block until `count` new finished files exist, nothing is partial, and (with stable_for > 0)
        sizes have not changed for stable_for seconds.

        No wait by default: Chromium gives a download its final name only once every byte is written
        (one atomic rename), and waiting 0.1 s on top cost about 150 ms per file (BENCHMARKS.md).

        Raises DownloadStalled when a partial file stops growing for stall_timeout (Chromium keeps an
        interrupted download's .crdownload), DownloadTimeout when nothing finishes within timeout.
        on_poll lets the caller do work while the wait goes on (notice a popup or an error page); it
        runs every callback_every seconds, never in a wait that ends sooner.
        """
        backoff = Backoff(ceiling=self.poll)
        callback = Throttle(on_poll, self.callback_every)
        start = time.monotonic()
        last_sizes: dict[str, int] = {}
        last_change = start
        stable_since: float | None = None
        while True:
            now = time.monotonic()
            sizes = self._scan()
            if sizes != last_sizes:
                last_sizes = sizes
                last_change = now
                stable_since = None
            new_done = [n for n in sizes if not is_partial(n) and n not in before]
            partial = [n for n in sizes if is_partial(n)]
            if len(new_done) >= count and not partial:
                stable_since = stable_since or now
                if now - stable_since >= stable_for:
                    return sorted(new_done)
            if partial and now - last_change > stall_timeout:
                raise DownloadStalled(
                    f"download stopped growing for {stall_timeout:.0f}s: {', '.join(partial)} in {self.path}"
                )
            if now - start > timeout:
                raise DownloadTimeout(
                    f"{len(new_done)} of {count} download(s) finished within {timeout:.0f}s"
                    + (f"; still partial: {', '.join(partial)}" if partial else "")
                )
            callback()
            backoff.sleep()

    def clear(self) -> None:
        """Empty the folder: what an earlier attempt left must not be taken for this one's file."""
        for name in list(self._scan()):
            try:
                (self.path / name).unlink()
            except OSError:
                pass

    def clear_partials(self) -> None:
        """Remove leftovers of a failed download so the next try starts from a clean slate."""
        for name in list(self._scan()):
            if is_partial(name):
                try:
                    (self.path / name).unlink()
                except OSError:
                    pass


def publish_folder(staged: Path, dest: Path, replace: list[Path] | None = None) -> Path:
    """Move a fully prepared folder into place in one rename; older versions are removed after.

    A reader (or a crash) sees either no folder, the old folder, or the complete new one, never a
    half-filled folder: the rename is atomic on one file system.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    doomed: list[Path] = []
    for old in [*(replace or []), dest]:
        if old.exists() and old != staged:
            trash = old.with_name(f".{old.name}.old-{os.getpid()}-{time.monotonic_ns()}")
            os.replace(old, trash)
            doomed.append(trash)
    os.replace(staged, dest)
    for trash in doomed:
        shutil.rmtree(trash, ignore_errors=True)
    return dest
