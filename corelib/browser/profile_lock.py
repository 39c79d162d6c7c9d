"""Whether a browser holds a profile directory, from the lock files Chromium keeps in it.

SingletonLock ("<host>-<pid>") and SingletonSocket on Linux and macOS, `lockfile` (held open with
delete-on-close) on Windows. Used before pobatch starts a browser on a folder the user may have open,
and by the reaper to know when a dead browser's lock files may go.
"""
from __future__ import annotations

import fnmatch
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Literal

import psutil

from pobatch.corelib.browser.processes import (
    is_browser_name,
    is_gone,
    main_processes,
    matching_browsers,
    process_name,
    scan,
    user_data_dir_values,
)

log = logging.getLogger(__name__)

_IS_WINDOWS = sys.platform == "win32"
# The folder a SingletonSocket symlink points to, when Chromium created it in the temp dir.
SOCKET_DIR_PATTERNS = (
    "org.chromium.Chromium.*",
    "com.google.Chrome.*",
    "com.microsoft.Edge.*",
    "scoped_dir*",
)
_SINGLETON_NAMES = ("SingletonLock", "SingletonSocket", "SingletonCookie")


def _read_link(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except (OSError, ValueError, NotImplementedError):
        return None


def owned_socket_dir(user_data_dir: str | os.PathLike) -> Path | None:
    """The temp folder SingletonSocket points to, if it is one Chromium made in our temp dir."""
    target = _read_link(Path(user_data_dir) / "SingletonSocket")
    if not target or not os.path.isabs(target):
        return None
    folder = Path(target).parent
    try:
        if folder.is_symlink() or not folder.is_dir():
            return None
    except OSError:
        return None
    tmp_root = os.path.normcase(os.path.realpath(tempfile.gettempdir()))
    if os.path.normcase(os.path.realpath(folder.parent)) != tmp_root:
        return None
    if not any(fnmatch.fnmatchcase(folder.name, pattern) for pattern in SOCKET_DIR_PATTERNS):
        return None
    return folder


def _lock_owner(user_data_dir: str | os.PathLike) -> tuple[str, int] | None:
    """(host, pid) from a SingletonLock symlink "<host>-<pid>" (Linux, macOS)."""
    target = _read_link(Path(user_data_dir) / "SingletonLock")
    if not target or "-" not in target:
        return None
    host, _, pid_text = target.rpartition("-")
    if not pid_text.isdigit():
        return None
    return host, int(pid_text)


def _lock_holder(user_data_dir: str | os.PathLike) -> psutil.Process | Literal["elsewhere"] | None:
    """The live process SingletonLock names on this host, "elsewhere" for a lock taken on another host
    (a profile on a shared drive), or None: no lock, or its process is gone."""
    owner = _lock_owner(user_data_dir)
    if owner is None:
        return None
    host, pid = owner
    if host != socket.gethostname():
        return "elsewhere"
    try:
        proc = psutil.Process(pid)
        return None if is_gone(proc) else proc
    except psutil.Error:
        return None


def lock_held_by_live_process(user_data_dir: str | os.PathLike) -> bool:
    """True unless SingletonLock is absent or names a dead process on this host.

    A lock from another host counts as held: not ours to judge.
    """
    return _lock_holder(user_data_dir) is not None


def remove_singletons(user_data_dir: str | os.PathLike) -> None:
    """Drop the lock symlinks of a dead browser, so the same dir can host a new browser at once."""
    for name in _SINGLETON_NAMES:
        link = Path(user_data_dir) / name
        if link.is_symlink():
            try:
                link.unlink()
            except OSError as exc:
                log.debug("Could not remove stale %s: %s", link, exc)


def _lock_process(user_data_dir: str | os.PathLike) -> psutil.Process | None:
    """The live browser that SingletonLock names, if it is on this host (POSIX)."""
    return _as_browser(_lock_holder(user_data_dir))


def _as_browser(proc: psutil.Process | str | None) -> psutil.Process | None:
    """The lock holder if it is a browser on this host."""
    if not isinstance(proc, psutil.Process):
        return None
    try:
        # A stale lock whose pid was reused by an unrelated program is not a browser.
        return proc if is_browser_name(process_name(proc.name(), proc.cmdline())) else None
    except psutil.Error:
        return None


def _windows_default_dir_browsers(user_data_dir: str | os.PathLike) -> list[psutil.Process]:
    """Browsers started without --user-data-dir while this dir's `lockfile` exists (Windows).

    Chromium holds `lockfile` open with delete-on-close, so it exists only while a browser runs.
    A browser started from the Start menu has no --user-data-dir on its command line: it uses
    its default dir, which is the usual base profile (e.g. ...\\Microsoft\\Edge\\User Data).
    """
    if not (Path(user_data_dir) / "lockfile").exists():
        return []
    lowered = os.path.normcase(os.path.abspath(user_data_dir))
    vendor = "msedge" if "microsoft\\edge" in lowered else "chrome" if "google\\chrome" in lowered else ""
    found = []
    for proc, name, cmdline in scan():
        if not is_browser_name(name) or (vendor and not name.startswith(vendor)):
            continue
        if any(arg.startswith("--type=") for arg in cmdline):
            continue  # a helper, not the main browser process
        if any(True for _ in user_data_dir_values(cmdline)):
            continue
        found.append(proc)
    return found


def profile_lock_held(user_data_dir: str | Path) -> bool:
    """Whether a browser holds this profile: a SingletonLock naming a live browser on this host or
    any process on another host (POSIX), or a `lockfile` that cannot be removed because a running
    browser holds it open (Windows)."""
    if _IS_WINDOWS:
        lockfile = Path(user_data_dir) / "lockfile"
        if not lockfile.exists():
            return False
        try:
            lockfile.unlink()  # a stale one (the browser died) goes; a held one cannot
            return False
        except PermissionError:
            return True
        except OSError:
            return False
    holder = _lock_holder(user_data_dir)
    if isinstance(holder, str):
        return True  # "elsewhere": Chromium itself refuses a profile locked by another computer
    return _as_browser(holder) is not None


def live_browsers_on(user_data_dir: str | Path) -> list[psutil.Process]:
    """The main process of each running browser that uses this profile dir.

    Command-line match first; on POSIX also the process SingletonLock names (a browser started
    without --user-data-dir on its default dir); on Windows the `lockfile` heuristic.
    """
    mains = main_processes(matching_browsers(user_data_dir))
    pids = {p.pid for p in mains}
    extra: list[psutil.Process] = []
    if _IS_WINDOWS:
        extra = _windows_default_dir_browsers(user_data_dir)
    else:
        locked = _lock_process(user_data_dir)
        if locked is not None:
            extra = [locked]
    for proc in extra:
        if proc.pid not in pids:
            mains.append(proc)
            pids.add(proc.pid)
    return mains
