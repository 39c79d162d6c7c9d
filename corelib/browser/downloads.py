"""What every download path shares: partial names, download errors, hashing and atomic publication.

Chromium writes a download as a hidden `.org.chromium.Chromium.XXXXXX`, then `<name>.crdownload`, then
`<name>`: a name of the first two kinds is never a finished file. A partial file that stops growing is
a failed download, not a slow one, once it has been still for `stall_timeout`. Completion itself is
judged by the sinks (pobatch.corelib.browser.download_sink): the browser's own download events, or a Grid
node's folder.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from pathlib import Path

from pobatch.corelib.errors import TransientError

log = logging.getLogger(__name__)

_PARTIAL_SUFFIXES = (".crdownload", ".part", ".partial", ".tmp", ".download")
_PARTIAL_PREFIXES = (".org.chromium.", ".com.google.chrome.", ".com.microsoft.edge.", "unconfirmed ")


def is_partial(name: str) -> bool:
    low = name.lower()
    return low.endswith(_PARTIAL_SUFFIXES) or low.startswith(_PARTIAL_PREFIXES)


class DownloadTimeout(TransientError):
    def __init__(self, message: str) -> None:
        super().__init__(message, reason="DOWNLOAD_TIMEOUT")


class DownloadNotBegun(TransientError):
    """A click started no download within its bounded wait: the browser dropped it, or the page's
    handler did nothing. Known within seconds, so the workflow can take another route."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="DOWNLOAD_NOT_BEGUN")


class DownloadStalled(TransientError):
    def __init__(self, message: str) -> None:
        super().__init__(message, reason="DOWNLOAD_FAILED")


class DownloadInterrupted(TransientError):
    """The browser itself ended the download without a file: cut off (after its own resume attempts),
    cancelled, or answered with an HTTP error. Known the moment it happens, not after a timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="DOWNLOAD_FAILED")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                return h.hexdigest()
            h.update(block)


def link_or_copy(src: Path, dst: Path) -> None:
    """`dst` becomes the same file as `src`: a hard link where the file system has them (instant, no
    second copy), else a copy with its times, so a size-and-time check still knows it."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


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
