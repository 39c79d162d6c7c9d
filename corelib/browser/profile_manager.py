"""Private copies of the user's browser profile, one per browser, that never outlive their run.

Two browsers cannot share a --user-data-dir, so each parallel worker gets a clone of the base
profile (which carries the user's portal login: cookies, Local State with the cookie key, Local
Storage). Clones are cheap because caches are skipped without being walked, and safe because lock
files are skipped (a copied SingletonLock makes the clone unusable).

Every run keeps its clones in its own folder with an owner.json naming the owning process (and
owner-*.json for each further process, e.g. each parallel worker, that clones into the same run).
A run that dies hard leaves that folder and orphaned browsers behind; sweep_orphans() finds such
folders by their dead owners, kills the browsers by profile dir, and deletes them. A worker's record
also names the run's owner (the app that started the workers): once that process is gone the run is
dead, and a worker still running on it is an orphan that the sweep stops first.

One file, over 400 lines, on purpose: a clone's whole life (the copy, the owner records, the release,
the sweep of dead runs) turns on one owner-record format, and the sweep must read exactly what a clone
wrote.

Over 400 lines on purpose: clones, their owner records and the sweep of dead runs' clones are one
life cycle (a clone never outlives its run, even when its process was killed); the copy, owner and
sweep helpers above ProfileManager have no other user.
"""
from __future__ import annotations

import fnmatch
import getpass
import itertools
import json
import logging
import os
import shutil
import stat
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from pobatch.corelib.errors import FatalError
from pobatch.corelib.browser.process_reaper import kill_browser_tree
from pobatch.corelib.browser.profile_lock import live_browsers_on, profile_lock_held
from pobatch.corelib.tree_removal import remove_tree

log = logging.getLogger(__name__)

_IS_WINDOWS = sys.platform == "win32"

# Names (or globs) never copied into a clone, at any depth. Entries with a "/" match the end of the
# relative path. Lock symlinks make a clone unusable; caches are large, rebuilt on demand, and
# carry no login. LevelDB "LOCK" files are small regular files and are copied on purpose.
CLONE_SKIP: frozenset[str] = frozenset(
    {
        # process-singleton locks (POSIX symlinks; Windows "lockfile") and a stale DevTools port
        "SingletonLock",
        "SingletonSocket",
        "SingletonCookie",
        "lockfile",
        "DevToolsActivePort",
        # caches
        "Cache",
        "Code Cache",
        "GPUCache",
        "GPUPersistentCache",
        "DawnCache",
        "DawnGraphiteCache",
        "DawnWebGPUCache",
        "GraphiteDawnCache",
        "GrShaderCache",
        "ShaderCache",
        "Media Cache",
        "Service Worker/CacheStorage",
        "Crashpad",
        "component_crx_cache",
        "optimization_guide*",
        "BrowserMetrics*",
        "CrashpadMetrics*",
        "Safe Browsing",
        "*.tmp",
    }
)

OWNER_FILE = "owner.json"
RUN_PREFIX = "run-"
# A run folder without owner.json older than this is debris from a run that died while starting.
ORPHAN_WITHOUT_OWNER_AGE = 3600.0
_CREATE_TIME_TOLERANCE = 1.0

_SIMPLE_SKIPS = frozenset(
    os.path.normcase(p) for p in CLONE_SKIP if "/" not in p and not any(c in p for c in "*?[")
)
_GLOB_SKIPS = tuple(os.path.normcase(p) for p in CLONE_SKIP if "/" not in p and any(c in p for c in "*?["))
_PATH_SKIPS = tuple(tuple(os.path.normcase(part) for part in p.split("/")) for p in CLONE_SKIP if "/" in p)


@dataclass(frozen=True)
class CloneInfo:
    """One clone of the base profile; the counters say what the copy cost."""

    path: Path
    run_id: str
    owner_pid: int
    name: str
    bytes_copied: int = 0
    files_copied: int = 0
    seconds: float = 0.0
    unreadable: tuple[str, ...] = ()  # files the copy could not read (locked by a running browser)


def default_work_root() -> Path:
    """Where runs keep their clones: POBATCH_PROFILES_ROOT, else the per-user temp folder (with a
    private fallback on a shared /tmp)."""
    if os.environ.get("POBATCH_PROFILES_ROOT"):
        return Path(os.environ["POBATCH_PROFILES_ROOT"])
    root = Path(tempfile.gettempdir()) / "pobatch-profiles"
    if not _IS_WINDOWS and hasattr(os, "getuid"):
        try:
            st = os.lstat(root)
        except FileNotFoundError:
            return root
        if stat.S_ISLNK(st.st_mode) or st.st_uid != os.getuid():
            # Someone else's folder in a shared /tmp: never put our profiles (and cookies) in it.
            return Path(tempfile.gettempdir()) / f"pobatch-profiles-{os.getuid()}"
    return root


def _skipped(name: str, rel_parts: tuple[str, ...]) -> bool:
    """True if an entry (name, and its relative path parts) is in CLONE_SKIP."""
    key = os.path.normcase(name)
    if key in _SIMPLE_SKIPS:
        return True
    if any(fnmatch.fnmatchcase(key, pattern) for pattern in _GLOB_SKIPS):
        return True
    if _PATH_SKIPS:
        parts = tuple(os.path.normcase(p) for p in rel_parts)
        for pattern in _PATH_SKIPS:
            n = len(pattern)
            if len(parts) >= n and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts[-n:], pattern)):
                return True
    return False


def _is_link_like(entry: os.DirEntry) -> bool:
    """Symlinks, and on Windows junctions and other reparse points: never followed or copied."""
    if entry.is_symlink():
        return True
    if _IS_WINDOWS:
        try:
            attrs = entry.stat(follow_symlinks=False).st_file_attributes  # type: ignore[attr-defined]
        except OSError:
            return True
        return bool(attrs & stat.FILE_ATTRIBUTE_REPARSE_POINT)
    return False


def _make_private_dir(path: Path) -> None:
    """mkdir readable by the user alone (POSIX); on Windows the per-user temp folder protects it."""
    os.mkdir(path, 0o700)
    if not _IS_WINDOWS:
        os.chmod(path, 0o700)  # the umask cannot widen it, but a weird umask could narrow it


@dataclass
class _CopyStats:
    bytes_copied: int = 0
    files_copied: int = 0
    skipped: int = 0


def _copy_tree(
    src: Path,
    dst: Path,
    rel: tuple[str, ...],
    stats: _CopyStats,
    unreadable: list[str],
    never_copy: frozenset[str] = frozenset(),
) -> None:
    """Copy src into the existing dir dst, skipping CLONE_SKIP entries without descending into them.

    never_copy holds real paths of folders to leave out (our own work root, when it lies inside
    the base profile, would otherwise be copied into itself)."""
    try:
        entries = list(os.scandir(src))
    except OSError as exc:
        unreadable.append("/".join(rel) or ".")
        log.warning("Cannot list %s while cloning: %s", src, exc)
        return
    for entry in entries:
        parts = rel + (entry.name,)
        if _skipped(entry.name, parts) or _is_link_like(entry):
            stats.skipped += 1
            continue
        target = dst / entry.name
        try:
            if entry.is_dir(follow_symlinks=False):
                if never_copy and os.path.normcase(os.path.realpath(entry.path)) in never_copy:
                    stats.skipped += 1
                    continue
                _make_private_dir(target)
                _copy_tree(Path(entry.path), target, parts, stats, unreadable, never_copy)
            elif entry.is_file(follow_symlinks=False):
                shutil.copy2(entry.path, target, follow_symlinks=False)
                stats.bytes_copied += entry.stat(follow_symlinks=False).st_size
                stats.files_copied += 1
            # sockets, fifos, devices: nothing a profile needs
        except OSError as exc:
            # On Windows a running browser holds some files (Cookies, LevelDB LOCK) exclusively.
            unreadable.append("/".join(parts))
            log.warning("Cannot copy %s while cloning: %s", entry.path, exc)


def _process_create_time(pid: int) -> float | None:
    """Create time of a live (non-zombie) process, None if it is gone."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except psutil.Error:
        return None


def _current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no USER/LOGNAME and no pwd entry: still a valid run
        return ""


def _is_owner_record(name: str) -> bool:
    return name == OWNER_FILE or (name.startswith("owner-") and name.endswith(".json"))


def _owner_records(run_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every readable owner record of a run: owner.json (its creator) and owner-*.json (joiners)."""
    records = []
    try:
        entries = list(os.scandir(run_dir))
    except OSError:
        return records
    for entry in entries:
        if not _is_owner_record(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            with open(entry.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            records.append((Path(entry.path), data))
    return records


def _owner_alive(owner: dict[str, Any]) -> bool:
    """True if the process named in a record still runs, and is the same process (not a reused pid)."""
    try:
        pid = int(owner["pid"])
        recorded = float(owner["pid_create_time"])
    except (KeyError, TypeError, ValueError):
        return False
    actual = _process_create_time(pid)
    return actual is not None and abs(actual - recorded) <= _CREATE_TIME_TOLERANCE


def _record_alive(record: dict[str, Any]) -> bool:
    """A record keeps its run alive while its process runs and, if it names one, its run owner too."""
    if not _owner_alive(record):
        return False
    run_owner = record.get("run_owner")
    return not isinstance(run_owner, dict) or _owner_alive(run_owner)


def _stop_orphans(records: list[dict[str, Any]], timeout: float = 5.0) -> None:
    """Stop the processes of a dead run that still run (workers whose app was killed).

    Each is the very process its record names (pid and create time), so nothing else is touched.
    SIGTERM first: a pool worker then closes its browser and its clone itself.
    """
    procs = []
    for record in records:
        if not _owner_alive(record) or record.get("pid") == os.getpid():
            continue
        try:
            proc = psutil.Process(int(record["pid"]))
            proc.terminate()
            procs.append(proc)
        except (psutil.Error, KeyError, TypeError, ValueError):
            continue
    if not procs:
        return
    _gone, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=timeout)
    log.info("Stopped %d orphaned process(es) of a dead run: %s", len(procs), ", ".join(str(p.pid) for p in procs))


def _destroy_run_dir(run_dir: Path) -> None:
    """Kill the browsers on every clone of a run, then delete the run folder."""
    if run_dir.is_symlink():
        run_dir.unlink()
        return
    try:
        entries = list(os.scandir(run_dir))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            kill_browser_tree(entry.path, owned=True)  # a clone of a dead run: ours
    remove_tree(run_dir)


class ProfileManager:
    """Clones of one base profile for one run; everything it made is removed by cleanup().

    Several managers may share a run folder (each parallel worker process makes its own with the
    same run_id): the first writes owner.json, the others owner-<pid>-<n>.json. Each record lists
    the clones its manager claimed. A run is alive while any record names a live process; the last
    manager to clean up removes the folder.
    """

    _instances = itertools.count(1)

    def __init__(self, base_profile: str | Path, run_id: str, work_root: str | Path | None = None,
                 run_owner_pid: int | None = None) -> None:
        """run_owner_pid: the process this run lives and dies with, when it is not this one (a parallel
        worker passes the app's main process): the sweep treats the run as dead once that is gone."""
        self.base_profile = Path(base_profile)
        if not self.base_profile.is_dir():
            raise FatalError(f"Browser profile folder not found: {self.base_profile}", reason="BAD_CONFIG")
        if not run_id or any(c in run_id for c in '<>:"/\\|?*') or run_id in (".", ".."):
            raise ValueError(f"run_id must be a plain folder-name fragment, got {run_id!r}")
        self.run_id = run_id
        self.work_root = Path(work_root) if work_root is not None else default_work_root()
        self.run_dir = self.work_root / f"{RUN_PREFIX}{run_id}"
        self._clones: dict[Path, CloneInfo] = {}
        self._claimed: set[str] = set()  # clone names in our record (claimed before they exist)
        me = psutil.Process()
        self._owner: dict[str, Any] = {
            "run_id": run_id,
            "pid": me.pid,
            "pid_create_time": me.create_time(),
            "user": _current_user(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if run_owner_pid is not None and run_owner_pid != me.pid:
            self._owner["run_owner"] = {"pid": run_owner_pid,
                                        "pid_create_time": _process_create_time(run_owner_pid) or 0.0}
        self._record_path = self._open_run_dir()

    # -- run folder and owner records --------------------------------------------------------------

    def _open_run_dir(self) -> Path:
        """Create the run folder (we own it: owner.json) or join the existing one (owner-*.json)."""
        if not self.work_root.is_dir():
            self.work_root.mkdir(parents=True, exist_ok=True)
            if not _IS_WINDOWS:
                os.chmod(self.work_root, 0o700)  # ours to set: we just made it
        for _ in range(3):
            try:
                _make_private_dir(self.run_dir)
                record = self.run_dir / OWNER_FILE
            except FileExistsError:
                if self.run_dir.is_symlink() or not self.run_dir.is_dir():
                    raise FatalError(f"{self.run_dir} exists and is not a folder", reason="BAD_CONFIG")
                record = self.run_dir / f"owner-{self._owner['pid']}-{next(self._instances)}.json"
            try:
                self._write_record(record)
                return record
            except FileNotFoundError:
                continue  # a sweep removed a dead run folder of this name meanwhile: start again
        raise FatalError(f"Could not set up the run folder {self.run_dir}", reason="PROFILE_RUN_DIR")

    def _write_record(self, record: Path | None = None) -> None:
        record = record or self._record_path
        data = dict(self._owner, clones=sorted(self._claimed))
        tmp = record.with_name(record.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
        os.replace(tmp, record)

    def _others_live_records(self) -> list[dict[str, Any]]:
        return [
            data for path, data in _owner_records(self.run_dir) if path != self._record_path and _owner_alive(data)
        ]

    # -- clones -------------------------------------------------------------------------------------

    def clone(self, name: str) -> Path:
        """Copy the base profile into run_dir/name and return that path (the new --user-data-dir).

        A folder of that name left by a dead manager of this run is replaced; one that a live
        manager claimed is refused (FileExistsError).
        """
        if (
            not name
            or name in (".", "..")
            or _is_owner_record(name)
            or any(c in name for c in '<>:"/\\|?*')
            or name != name.strip()
        ):
            raise ValueError(f"Clone name must be a plain folder name, got {name!r}")
        if not self.run_dir.is_dir() or not self._record_path.exists():
            raise RuntimeError(f"ProfileManager for run {self.run_id} is already cleaned up")
        path = self.run_dir / name
        if name in self._claimed or any(name in r.get("clones", ()) for r in self._others_live_records()):
            raise FileExistsError(f"A clone named {name!r} already exists in {self.run_dir}")
        if path.exists() or path.is_symlink():
            # Nobody alive claims it: a dead worker's clone (a browser may still run on it).
            log.info("Replacing clone %s left by a dead process", path)
            kill_browser_tree(path, owned=True)  # a clone a dead worker left: ours
            remove_tree(path)
        # Claim the name before the folder exists, so a peer never mistakes it for a dead one.
        self._claimed.add(name)
        self._write_record()
        started = time.perf_counter()
        try:
            _make_private_dir(path)
        except FileExistsError:
            self._claimed.discard(name)
            self._write_record()
            raise FileExistsError(f"A clone named {name!r} already exists in {self.run_dir}") from None
        stats = _CopyStats()
        unreadable: list[str] = []
        try:
            _copy_tree(self.base_profile, path, (), stats, unreadable, self._never_copy())
        except BaseException:
            remove_tree(path)
            self._claimed.discard(name)
            self._write_record()
            raise
        seconds = time.perf_counter() - started
        info = CloneInfo(
            path=path,
            run_id=self.run_id,
            owner_pid=os.getpid(),
            name=name,
            bytes_copied=stats.bytes_copied,
            files_copied=stats.files_copied,
            seconds=seconds,
            unreadable=tuple(unreadable),
        )
        self._clones[path] = info
        log.debug(
            "Cloned %s to %s in %.3f s: %d files, %d bytes copied, %d entries skipped",
            self.base_profile, path, seconds, stats.files_copied, stats.bytes_copied, stats.skipped,
        )
        if unreadable:
            log.warning(
                "Clone %s misses %d file(s) the running browser keeps locked (%s): close that browser "
                "if the portal asks to log in", name, len(unreadable), ", ".join(unreadable[:5]),
            )
        return path

    def _never_copy(self) -> frozenset[str]:
        """Our work root, if it lies inside the base profile (a base profile in the temp folder)."""
        base = os.path.normcase(os.path.realpath(self.base_profile))
        root = os.path.normcase(os.path.realpath(self.work_root))
        inside = os.path.commonpath([base, root]) == base
        return frozenset({root}) if inside else frozenset()

    def info(self, path: str | Path) -> CloneInfo:
        """What clone() recorded about this clone."""
        return self._clones[self._own_clone_path(path)]

    @property
    def clones(self) -> list[CloneInfo]:
        return list(self._clones.values())

    def _own_clone_path(self, path: str | Path) -> Path:
        """The clone path, verified to be directly inside our run folder (we delete it)."""
        candidate = Path(path)
        if not candidate.is_absolute():
            candidate = self.run_dir / candidate
        if os.path.normcase(os.path.abspath(candidate.parent)) != os.path.normcase(os.path.abspath(self.run_dir)):
            raise ValueError(f"{path} is not a clone of run {self.run_id}")
        if candidate.name in ("", ".", "..") or _is_owner_record(candidate.name) or candidate.name.endswith(".tmp"):
            raise ValueError(f"{path} is not a clone of run {self.run_id}")
        return candidate

    def release(self, path: str | Path) -> None:
        """Kill any browser still on the clone, then delete the clone."""
        clone_path = self._own_clone_path(path)
        kill_browser_tree(clone_path, owned=True)  # our clone
        remove_tree(clone_path)
        self._clones.pop(clone_path, None)
        if clone_path.name in self._claimed:
            self._claimed.discard(clone_path.name)
            if self._record_path.exists():
                self._write_record()
        log.debug("Released clone %s", clone_path)

    def cleanup(self) -> None:
        """Release our clones and our record; the last live manager of the run removes the folder.

        Safe to call twice. What cannot be deleted now stays listed in our record, so that
        sweep_orphans() finishes the job once this process is gone.
        """
        if not self.run_dir.exists():
            self._clones.clear()
            self._claimed.clear()
            return
        failures: list[str] = []
        for name in sorted(self._claimed | {p.name for p in self._clones}):
            try:
                self.release(self.run_dir / name)
            except OSError as exc:
                failures.append(f"{name}: {exc}")
        if failures:
            log.warning("Could not delete clone(s) of run %s: %s", self.run_id, "; ".join(failures))
            return
        try:
            self._record_path.unlink()
        except FileNotFoundError:
            pass
        if self._others_live_records():
            return  # other workers of this run still work in it
        try:
            _destroy_run_dir(self.run_dir)  # with whatever dead peers left behind
        except OSError as exc:
            log.warning("Could not delete run folder %s: %s", self.run_dir, exc)

    def __enter__(self) -> "ProfileManager":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    # -- crash recovery -----------------------------------------------------------------------------

    @staticmethod
    def sweep_orphans(work_root: str | Path | None = None) -> list[Path]:
        """Remove the run folders of dead runs (and their orphaned browsers); return what was removed.

        A run is dead when no owner record names a live process (a pid that no longer runs, or runs
        with another create time: the pid was reused) whose run owner, if recorded, lives too; the
        orphans of a dead run are stopped first. A folder without any record counts as dead once it
        is an hour old. A live run is never touched, nor one recorded for another user.
        """
        root = Path(work_root) if work_root is not None else default_work_root()
        removed: list[Path] = []
        try:
            entries = list(os.scandir(root))
        except FileNotFoundError:
            return removed
        me = _current_user()
        for entry in entries:
            if not entry.name.startswith(RUN_PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            run_dir = Path(entry.path)
            records = [data for _path, data in _owner_records(run_dir)]
            if not records:
                try:
                    age = time.time() - entry.stat(follow_symlinks=False).st_mtime
                except OSError:
                    continue
                if age < ORPHAN_WITHOUT_OWNER_AGE:
                    continue  # possibly a run that is creating its folder right now
            else:
                if me and any(r.get("user") and r.get("user") != me for r in records):
                    continue
                if any(_record_alive(r) for r in records):
                    continue
                _stop_orphans(records)
            try:
                _destroy_run_dir(run_dir)
            except OSError as exc:
                log.warning("Could not remove orphaned run folder %s: %s", run_dir, exc)
                continue
            log.info("Removed orphaned run folder %s", run_dir)
            removed.append(run_dir)
        return removed


def profile_in_use_error(profile: str | Path) -> str | None:
    """One line for the user when a running browser holds this profile (its lock, or a browser on it),
    else None. Checked before pobatch starts any browser: two browsers cannot share one profile, and
    pobatch never closes a browser it did not start."""
    procs = live_browsers_on(profile)
    if not procs and not profile_lock_held(profile):
        return None
    pids = f" (pid {', '.join(str(p.pid) for p in procs)})" if procs else ""
    return (f"the browser profile {profile} is open in a running browser{pids}; close that browser "
            "(every window), then run pobatch again")


def profile_in_use_warning(base_profile: str | Path) -> str | None:
    """One sentence for the user when a running browser holds the base profile, else None."""
    procs = live_browsers_on(base_profile)
    if not procs:
        return None
    pids = ", ".join(str(p.pid) for p in procs)
    return (
        f"The browser profile {base_profile} is open in a running browser (pid {pids}). "
        "Close it first: a copy taken now can miss your newest login."
    )


def warn_if_profile_in_use(base_profile: str | Path) -> None:
    """Log the one warning every mode gives before it clones the base profile (profile_in_use_warning)."""
    warning = profile_in_use_warning(base_profile)
    if warning:
        log.warning(warning)


def open_run_profiles(base_profile: str | Path, run_id: str, work_root: str | Path | None = None) -> ProfileManager:
    """The set-up every in-process mode does before its clone: the in-use warning, then the run's
    ProfileManager (a pool worker builds its own, owned by the app's pid: core/modes/po_handler.make_handler)."""
    warn_if_profile_in_use(base_profile)
    return ProfileManager(base_profile, run_id, work_root=work_root)
