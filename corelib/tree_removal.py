"""Removing a folder tree on every platform, including Windows' late file handles.

On Windows a file the browser (or an antivirus scanner) held a moment ago stays locked for a while
after the process ends, and some profile files are read-only: a plain rmtree fails on both. One
function serves profiles, staging folders and download folders alike.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import sys
import time
from pathlib import Path

from pobatch.corelib.polling import Backoff

log = logging.getLogger(__name__)


def _rmtree_onexc(func, path, exc) -> None:
    """Make read-only entries writable and try again (Windows marks some profile files read-only)."""
    if isinstance(exc, FileNotFoundError):
        return
    if isinstance(exc, PermissionError):
        try:
            os.chmod(path, stat.S_IWRITE | stat.S_IREAD | (stat.S_IEXEC if os.path.isdir(path) else 0))
            func(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            pass
    raise exc


def remove_tree(path: Path, deadline_seconds: float = 10.0) -> None:
    """rmtree that waits out Windows' late file handles (PermissionError) with a bounded backoff."""
    deadline = time.monotonic() + deadline_seconds
    backoff = Backoff(first=0.05, ceiling=1.0, factor=2.0)
    while True:
        try:
            if path.is_symlink():
                path.unlink()
            elif sys.version_info >= (3, 12):
                shutil.rmtree(path, onexc=_rmtree_onexc)
            else:
                shutil.rmtree(path, onerror=lambda func, p, info: _rmtree_onexc(func, p, info[1]))
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            retryable = isinstance(exc, PermissionError) or exc.errno in (errno.ENOTEMPTY, errno.EBUSY)
            delay = backoff.next_interval()
            if not retryable or time.monotonic() + delay > deadline:
                raise
            log.debug("Retrying removal of %s after %s", path, exc)
            time.sleep(delay)
