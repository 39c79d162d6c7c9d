"""Which processes are the browsers of one profile directory: the matching half of cleaning up.

The only reliable handle on a browser's processes (orphans of a killed worker included) is the
`--user-data-dir` every Chromium process carries on its command line; chromedriver does not carry
it, but it is the parent of the main browser process. Matching on that directory, and nothing else,
guarantees the user's own browser windows, which use other directories, are never touched.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import psutil

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
_USER_DATA_DIR_FLAG = "--user-data-dir"


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


def process_name(name: str | None, cmdline: list[str] | None) -> str:
    """Lower-case program name; falls back on argv[0] because Linux truncates names to 15 chars."""
    stem = _stem(name)
    if cmdline:
        first = cmdline[0]
        # Rewritten titles ("chromium --type=renderer ...") arrive as one string split on spaces.
        argv0 = _stem(os.path.basename(first.replace("\\", "/")))
        if len(argv0) > len(stem) and argv0.startswith(stem):
            return argv0
    return stem


def is_browser_name(name: str) -> bool:
    return name not in _DRIVER_NAMES and name.startswith(_BROWSER_NAME_PREFIXES)


def _is_driver_name(name: str) -> bool:
    return name in _DRIVER_NAMES


def user_data_dir_values(cmdline: list[str]) -> Iterator[str]:
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
    for value in user_data_dir_values(cmdline):
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


def scan() -> Iterator[tuple[psutil.Process, str, list[str]]]:
    """Every process we may read, with its lower-case name and command line."""
    for proc in psutil.process_iter(["name", "cmdline"]):
        info = proc.info
        cmdline = info.get("cmdline") or []
        yield proc, process_name(info.get("name"), cmdline), cmdline


def matching_browsers(user_data_dir: str | os.PathLike) -> list[psutil.Process]:
    forms = _target_forms(user_data_dir)
    found: list[psutil.Process] = []
    for proc, name, cmdline in scan():
        if proc.pid == os.getpid() or not is_browser_name(name):
            continue
        if _carries_dir(cmdline, forms, proc):
            found.append(proc)
    return found


def _parent(proc: psutil.Process) -> psutil.Process | None:
    try:
        return proc.parent()
    except psutil.Error:
        return None


def main_processes(procs: list[psutil.Process]) -> list[psutil.Process]:
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
    browsers = matching_browsers(user_data_dir)
    result = list(browsers)
    seen = {p.pid for p in result}
    mains = main_processes(browsers)
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
                if is_browser_name(process_name(child.name(), child.cmdline())):
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
                pname = process_name(parent.name(), parent.cmdline())
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


def is_gone(proc: psutil.Process) -> bool:
    """Dead, or a zombie waiting for a parent that may never reap it (PID 1 in some containers)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True
