"""Find and kill exactly the browser processes that belong to one profile directory.

A worker that dies hard (SIGKILL, TerminateProcess, a crash) orphans its chromedriver and every
Chromium process, and leaves the profile's lock files behind. The only reliable handle on those
processes is the `--user-data-dir` that every Chromium process carries on its command line
(chromedriver does not carry it, but it is the parent of the main browser process). Matching on
that directory, and nothing else, guarantees we never touch the user's own browser windows, which
use other directories.
"""
from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator, Literal

import psutil

log = logging.getLogger(__name__)

_IS_WINDOWS = sys.platform == "win32"
# Linux Chromium rewrites its helpers' process titles (argv joined by spaces, no NULs).
_TITLES_REWRITTEN = sys.platform.startswith("linux")

# Process-name prefixes (lower case, without ".exe") of Chromium-family browsers, their helpers included.
_BROWSER_NAME_PREFIXES = (
    "chromium",
    "chrome",  # chrome, chrome-headless-shell, chrome_crashpad_handler...
    "google-chrome",
    "google chrome",  # macOS: "Google Chrome Helper (Renderer)"
    "headless_shell",
    "msedge",
    "microsoft-edge",
    "microsoft edge",
)
_DRIVER_NAMES = frozenset({"chromedriver", "msedgedriver"})

# The folder a SingletonSocket symlink points to, when Chromium created it in the temp dir.
SOCKET_DIR_PATTERNS = (
    "org.chromium.Chromium.*",
    "com.google.Chrome.*",
    "com.microsoft.Edge.*",
    "scoped_dir*",
)
_SINGLETON_NAMES = ("SingletonLock", "SingletonSocket", "SingletonCookie")
_USER_DATA_DIR_FLAG = "--user-data-dir"


# ---------------------------------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------------------------------


def _norm(path: str) -> str:
    """Comparable form of a path: absolute, normalised, case-folded on Windows, no trailing separator."""
    path = path.strip().strip('"').strip("'")
    return os.path.normcase(os.path.normpath(os.path.abspath(path)))


def _target_forms(user_data_dir: str | os.PathLike) -> frozenset[str]:
    """The directory as written and with symlinks resolved (/tmp vs /private/tmp on macOS)."""
    raw = os.fspath(user_data_dir)
    forms = {_norm(raw), os.path.normcase(os.path.realpath(os.path.abspath(raw)))}
    if os.path.isabs(raw):
        forms.add(os.path.normcase(raw.rstrip("/\\")) or raw)  # as written, for the text search
    return frozenset(forms)


def _stem(name: str | None) -> str:
    name = (name or "").lower()
    return name[:-4] if name.endswith(".exe") else name


def _process_name(name: str | None, cmdline: list[str] | None) -> str:
    """Lower-case program name; falls back on argv[0] because Linux truncates names to 15 chars."""
    stem = _stem(name)
    if cmdline:
        first = cmdline[0]
        # Rewritten titles ("chromium --type=renderer ...") arrive as one string split on spaces.
        argv0 = _stem(os.path.basename(first.replace("\\", "/")))
        if len(argv0) > len(stem) and argv0.startswith(stem):
            return argv0
    return stem


def _is_browser_name(name: str) -> bool:
    return name not in _DRIVER_NAMES and name.startswith(_BROWSER_NAME_PREFIXES)


def _is_driver_name(name: str) -> bool:
    return name in _DRIVER_NAMES


def _user_data_dir_values(cmdline: list[str]) -> Iterator[str]:
    """Every value given to --user-data-dir, in both "--flag=X" and "--flag X" forms."""
    prefix = _USER_DATA_DIR_FLAG + "="
    for i, arg in enumerate(cmdline):
        if arg.startswith(prefix):
            yield arg[len(prefix):]
        elif arg == _USER_DATA_DIR_FLAG and i + 1 < len(cmdline):
            yield cmdline[i + 1]


def _carries_dir(cmdline: list[str] | None, forms: frozenset[str], proc: psutil.Process | None = None) -> bool:
    """True if the command line names one of `forms` as its --user-data-dir."""
    if not cmdline:
        return False
    if _TITLES_REWRITTEN and any(arg.startswith("--type=") for arg in cmdline):
        # Chromium's helper processes rewrite their title on Linux and psutil then splits that one
        # string on spaces, cutting a directory that has a space in it ("/tmp/a b" -> "/tmp/a", "b").
        # Parsed values are unreliable there: look for the flag in the joined text instead.
        joined = " ".join(cmdline)
        return any(
            _followed_by_boundary(joined, flag + form)
            for form in forms
            for flag in (_USER_DATA_DIR_FLAG + "=", _USER_DATA_DIR_FLAG + " ")
        )
    for value in _user_data_dir_values(cmdline):
        value = value.strip().strip('"').strip("'")
        if not value:
            continue
        if not os.path.isabs(value) and proc is not None:
            # A relative dir is relative to the browser's working directory, not ours.
            try:
                value = os.path.join(proc.cwd(), value)
            except (psutil.Error, OSError):
                pass
        if _norm(value) in forms:
            return True
    return False


def _followed_by_boundary(text: str, needle: str) -> bool:
    """True if `needle` ends where the directory value ends: at the end, a quote, or before the next
    flag (" -"). So ".../w" matches neither ".../w2", ".../w/sub" nor ".../w 2" (a dir with a space)."""
    start = text.find(needle)
    while start != -1:
        rest = text[start + len(needle):]
        if rest[:1] in ("/", os.sep):
            rest = rest[1:]  # a trailing separator
        if rest == "" or rest[0] in "\"'" or rest.startswith(" -"):
            return True
        start = text.find(needle, start + 1)
    return False


def _scan() -> Iterator[tuple[psutil.Process, str, list[str]]]:
    """Every process we may read, with its lower-case name and command line."""
    for proc in psutil.process_iter(["name", "cmdline"]):
        info = proc.info
        cmdline = info.get("cmdline") or []
        yield proc, _process_name(info.get("name"), cmdline), cmdline


def _matching_browsers(user_data_dir: str | os.PathLike) -> list[psutil.Process]:
    forms = _target_forms(user_data_dir)
    found: list[psutil.Process] = []
    for proc, name, cmdline in _scan():
        if proc.pid == os.getpid() or not _is_browser_name(name):
            continue
        if _carries_dir(cmdline, forms, proc):
            found.append(proc)
    return found


def _parent(proc: psutil.Process) -> psutil.Process | None:
    try:
        return proc.parent()
    except psutil.Error:
        return None


def _main_processes(procs: list[psutil.Process]) -> list[psutil.Process]:
    """The processes of the set whose parent is outside the set: one per browser instance."""
    pids = {p.pid for p in procs}
    mains = []
    for proc in procs:
        try:
            ppid = proc.ppid()
        except psutil.Error:
            continue
        if ppid not in pids:
            mains.append(proc)
    return mains


def browser_processes(user_data_dir: str | Path) -> list[psutil.Process]:
    """Our browser's processes on this profile dir, plus the driver that launched it.

    Browser processes whose command line names this exact directory; the browser processes a
    matched main process spawned (their titles may hide the dir); the chromedriver/msedgedriver that
    is the parent of a main browser process, and a launcher wrapper in between if it carries the
    same directory. Never anything else: the user's own browsers use other directories.
    """
    forms = _target_forms(user_data_dir)
    browsers = _matching_browsers(user_data_dir)
    result = list(browsers)
    seen = {p.pid for p in result}
    mains = _main_processes(browsers)
    for main in mains:
        # Helpers the browser spawned are ours even if their title hides the dir.
        try:
            descendants = main.children(recursive=True)
        except psutil.Error:
            descendants = []
        for child in descendants:
            if child.pid in seen:
                continue
            try:
                if _is_browser_name(_process_name(child.name(), child.cmdline())):
                    result.append(child)
                    seen.add(child.pid)
            except psutil.Error:
                continue
    for main in mains:
        parent = _parent(main)
        hops = 0
        while parent is not None and parent.pid not in seen and hops < 3:
            hops += 1
            try:
                pname = _process_name(parent.name(), parent.cmdline())
                pcmd = parent.cmdline()
            except psutil.Error:
                break
            if _is_driver_name(pname):
                result.append(parent)
                seen.add(parent.pid)
                break
            if _carries_dir(pcmd, forms, parent):
                # A wrapper script that did not exec (e.g. a distribution's launcher).
                result.append(parent)
                seen.add(parent.pid)
                parent = _parent(parent)
                continue
            break
    return result


# ---------------------------------------------------------------------------------------------------
# Killing
# ---------------------------------------------------------------------------------------------------


def _is_gone(proc: psutil.Process) -> bool:
    """Dead, or a zombie waiting for a parent that may never reap it (PID 1 in some containers)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _kill_and_wait(procs: Iterable[psutil.Process], deadline: float) -> int:
    """SIGKILL/TerminateProcess each one, then wait until all are gone or the deadline passes."""
    signalled: list[psutil.Process] = []
    for proc in procs:
        try:
            proc.kill()
            signalled.append(proc)
        except psutil.NoSuchProcess:  # ZombieProcess is a subclass: already dead
            pass
        except psutil.AccessDenied:
            log.warning("Not allowed to kill process %s; it stays", proc.pid)
    alive = list(signalled)
    while alive:
        # wait_procs reaps those that are our own children; the zombie check covers the others.
        _, alive = psutil.wait_procs(alive, timeout=max(0.0, min(0.1, deadline - time.monotonic())))
        alive = [p for p in alive if not _is_gone(p)]
        if time.monotonic() >= deadline:
            break
    for proc in alive:
        log.warning("Process %s still alive after kill", proc.pid)
    return len(signalled)


def _read_link(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except (OSError, ValueError, NotImplementedError):
        return None


def _owned_socket_dir(user_data_dir: str | os.PathLike) -> Path | None:
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
        return None if _is_gone(proc) else proc
    except psutil.Error:
        return None


def _lock_held_by_live_process(user_data_dir: str | os.PathLike) -> bool:
    """True unless SingletonLock is absent or names a dead process on this host.

    A lock from another host counts as held: not ours to judge.
    """
    return _lock_holder(user_data_dir) is not None


def _remove_singletons(user_data_dir: str | os.PathLike) -> None:
    """Drop the lock symlinks of a dead browser, so the same dir can host a new browser at once."""
    for name in _SINGLETON_NAMES:
        link = Path(user_data_dir) / name
        if link.is_symlink():
            try:
                link.unlink()
            except OSError as exc:
                log.debug("Could not remove stale %s: %s", link, exc)


def _started_here(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Only the processes this process started (its driver, and the browser the driver launched)."""
    try:
        mine = {p.pid for p in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return []
    return [p for p in procs if p.pid in mine]


def kill_browser_tree(user_data_dir: str | Path, timeout: float = 5.0, *, owned: bool = False) -> int:
    """Kill the browser processes on this profile dir and their driver; return how many were killed.

    `owned=True` only for a folder pobatch created (a profile clone): then every browser on it goes,
    orphans of a dead worker included. Otherwise (a profile the user may have open, e.g. for `login`)
    only the browser this process started is killed, never one the user started on the same folder.
    Also removes the socket folder that the dir's SingletonSocket points to (when Chromium made it
    in our temp dir) and stale lock symlinks, so the dir can be deleted or reused straight away.
    """
    deadline = time.monotonic() + timeout
    socket_dir = _owned_socket_dir(user_data_dir)
    killed = 0

    def targets() -> list[psutil.Process]:
        procs = browser_processes(user_data_dir)
        return procs if owned else _started_here(procs)

    # A browser that is still starting can spawn a child between scan and kill: rescan a few times.
    for _ in range(3):
        procs = targets()
        if not procs:
            break
        killed += _kill_and_wait(procs, deadline)
        if time.monotonic() >= deadline:
            break
    remaining = _matching_browsers(user_data_dir) if owned else _started_here(_matching_browsers(user_data_dir))
    if remaining:
        log.warning("%d browser process(es) on %s survived the kill", len(remaining), user_data_dir)
    elif not _lock_held_by_live_process(user_data_dir):
        # Only once no browser holds the dir: a live browser's socket folder is its lifeline.
        if socket_dir is not None:
            shutil.rmtree(socket_dir, ignore_errors=True)
        _remove_singletons(user_data_dir)
    if killed:
        log.info("Killed %d browser process(es) on %s", killed, user_data_dir)
    return killed


# ---------------------------------------------------------------------------------------------------
# Detection of a browser that holds a profile
# ---------------------------------------------------------------------------------------------------


def _lock_process(user_data_dir: str | os.PathLike) -> psutil.Process | None:
    """The live browser that SingletonLock names, if it is on this host (POSIX)."""
    proc = _lock_holder(user_data_dir)
    if not isinstance(proc, psutil.Process):
        return None
    try:
        # A stale lock whose pid was reused by an unrelated program is not a browser.
        return proc if _is_browser_name(_process_name(proc.name(), proc.cmdline())) else None
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
    for proc, name, cmdline in _scan():
        if not _is_browser_name(name) or (vendor and not name.startswith(vendor)):
            continue
        if any(arg.startswith("--type=") for arg in cmdline):
            continue  # a helper, not the main browser process
        if any(True for _ in _user_data_dir_values(cmdline)):
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
    owner = _lock_owner(user_data_dir)
    if owner is None:
        return False
    if owner[0] != socket.gethostname():
        return True  # Chromium itself refuses a profile locked by another computer
    return _lock_process(user_data_dir) is not None


def live_browsers_on(user_data_dir: str | Path) -> list[psutil.Process]:
    """The main process of each running browser that uses this profile dir.

    Command-line match first; on POSIX also the process SingletonLock names (a browser started
    without --user-data-dir on its default dir); on Windows the `lockfile` heuristic.
    """
    mains = _main_processes(_matching_browsers(user_data_dir))
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
