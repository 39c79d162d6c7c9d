"""Kill exactly the browser processes that belong to one profile directory, and what they leave.

A worker that dies hard (SIGKILL, TerminateProcess, a crash) orphans its chromedriver and every
Chromium process, and leaves the profile's lock files behind. Which processes are "its" is decided
by corelib/browser/processes.py (the --user-data-dir on their command lines); whether the folder is
still held, by corelib/browser/profile_lock.py.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Iterable

import psutil

from pobatch.corelib.browser.processes import is_gone, matching_browsers, browser_processes
from pobatch.corelib.browser.profile_lock import lock_held_by_live_process, owned_socket_dir, remove_singletons

log = logging.getLogger(__name__)


def kill_and_wait(procs: Iterable[psutil.Process], deadline: float) -> int:
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
        alive = [p for p in alive if not is_gone(p)]
        if time.monotonic() >= deadline:
            break
    for proc in alive:
        log.warning("Process %s still alive after kill", proc.pid)
    return len(signalled)


def _started_here(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Only the processes this process started (its driver, and the browser the driver launched)."""
    try:
        mine = {p.pid for p in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return []
    return [p for p in procs if p.pid in mine]


def kill_scratch_users(temp_dir: str | Path, timeout: float = 5.0) -> int:
    """Kill this process's own children that still use `temp_dir` as their temp folder (TMPDIR/TEMP):
    a driver whose start was cut short (no browser yet, so no profile dir names it) lives on and
    writes its scratch folders there after the folder is removed. Only descendants are looked at."""
    target = str(Path(temp_dir))
    users = []
    for child in psutil.Process().children(recursive=True):
        try:
            env = child.environ()
        except (psutil.Error, OSError):
            continue
        if target in (env.get("TMPDIR"), env.get("TEMP"), env.get("TMP")):
            users.append(child)
    return kill_and_wait(users, time.monotonic() + timeout) if users else 0


def kill_browser_tree(user_data_dir: str | Path, timeout: float = 5.0, *, owned: bool = False) -> int:
    """Kill the browser processes on this profile dir and their driver; return how many were killed.

    `owned=True` only for a folder pobatch created (a profile clone): then every browser on it goes,
    orphans of a dead worker included. Otherwise (a profile the user may have open, e.g. for `login`)
    only the browser this process started is killed, never one the user started on the same folder.
    Also removes the socket folder that the dir's SingletonSocket points to (when Chromium made it
    in our temp dir) and stale lock symlinks, so the dir can be deleted or reused straight away.
    """
    deadline = time.monotonic() + timeout
    socket_dir = owned_socket_dir(user_data_dir)
    killed = 0

    def targets() -> list[psutil.Process]:
        procs = browser_processes(user_data_dir)
        return procs if owned else _started_here(procs)

    # A browser that is still starting can spawn a child between scan and kill: rescan a few times.
    for _ in range(3):
        procs = targets()
        if not procs:
            break
        killed += kill_and_wait(procs, deadline)
        if time.monotonic() >= deadline:
            break
    remaining = matching_browsers(user_data_dir) if owned else _started_here(matching_browsers(user_data_dir))
    if remaining:
        log.warning("%d browser process(es) on %s survived the kill", len(remaining), user_data_dir)
    elif not lock_held_by_live_process(user_data_dir):
        # Only once no browser holds the dir: a live browser's socket folder is its lifeline.
        if socket_dir is not None:
            shutil.rmtree(socket_dir, ignore_errors=True)
        remove_singletons(user_data_dir)
    if killed:
        log.info("Killed %d browser process(es) on %s", killed, user_data_dir)
    return killed
