"""Clone time of a large profile that is mostly cache, as a browser profile used for months is.

The profile is written with real bytes (no sparse files): the signed-in demo profile, plus History,
Favicons, IndexedDB, Local Storage and Web Data (copied by a clone: they may carry the login), plus
Cache, Code Cache, GPUCache and Service Worker/CacheStorage (skipped by a clone without being walked).
ProfileManager.clone is timed against a plain full copy of the same folder.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from pobatch.corelib.browser.profile_manager import ProfileManager

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# Where the non-cache bytes of a long-used profile go (shares of the kept part).
_KEPT = (("Default/History", 0.30), ("Default/Favicons", 0.08), ("Default/Web Data", 0.07),
         ("Default/IndexedDB/http_portal_0.indexeddb.leveldb/000003.log", 0.25),
         ("Default/IndexedDB/http_portal_0.indexeddb.leveldb/000005.ldb", 0.10),
         ("Default/Local Storage/leveldb/000003.log", 0.12), ("Default/Sessions/Session_1", 0.04),
         ("Default/Service Worker/Database/000003.log", 0.04))
# Where the cache bytes go: (folder, share, files of roughly what size).
_CACHES = (("Default/Cache/Cache_Data", 0.70, 256 * 1024), ("Default/Code Cache/js", 0.18, 96 * 1024),
           ("Default/Service Worker/CacheStorage/3f2a9c", 0.08, 512 * 1024), ("Default/GPUCache", 0.02, 64 * 1024),
           ("GrShaderCache", 0.02, 32 * 1024))


@dataclass
class ProfileLayout:
    path: Path
    total_bytes: int
    cache_bytes: int
    kept_bytes: int
    files: int


@dataclass
class CloneMeasurement:
    layout: ProfileLayout
    clone_seconds: list[float]  # ProfileManager.clone, whole call
    bytes_copied: int
    files_copied: int
    full_copy_seconds: list[float]  # shutil.copytree of everything, for comparison

    @property
    def clone_median(self) -> float:
        return statistics.median(self.clone_seconds)

    @property
    def full_copy_median(self) -> float:
        return statistics.median(self.full_copy_seconds) if self.full_copy_seconds else 0.0


def _write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            n = min(left, 4 * MiB)
            fh.write(os.urandom(n))
            left -= n


def make_cache_heavy_profile(dest: Path, total_bytes: int, seed_profile: Path | None = None,
                             cache_share: float = 0.94, seed: int = 1) -> ProfileLayout:
    """Write a profile of about total_bytes, cache_share of it in cache folders."""
    if seed_profile is not None:
        shutil.copytree(seed_profile, dest, symlinks=True,
                        ignore=shutil.ignore_patterns("Singleton*", "lockfile", "DevToolsActivePort"))
    dest.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    cache_total = int(total_bytes * cache_share)
    kept_total = total_bytes - cache_total
    files = 0
    for rel, share in _KEPT:
        _write(dest / rel, int(kept_total * share))
        files += 1
    for rel, share, typical in _CACHES:
        budget = int(cache_total * share)
        folder = dest / rel
        n = 0
        while budget > 0:
            size = min(budget, max(512, int(rng.lognormvariate(0, 1.0) * typical)))
            _write(folder / f"f_{n:06x}", size)
            budget -= size
            n += 1
        files += n
    for name in ("index", "data_0", "data_1", "data_2", "data_3"):
        _write(dest / "Default/Cache/Cache_Data" / name, 8192)
        files += 1
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file() and not f.is_symlink())
    return ProfileLayout(dest, size, cache_total, size - cache_total, files)


def measure_clone(profile: ProfileLayout, work_root: Path, repeats: int, full_copy: bool = True) -> CloneMeasurement:
    """Median-able timings of ProfileManager.clone (and of a full copy) of the same profile."""
    clone_s: list[float] = []
    full_s: list[float] = []
    copied = files = 0
    for i in range(repeats):
        manager = ProfileManager(profile.path, f"bench-clone-{os.getpid()}-{i}", work_root=work_root)
        try:
            t0 = time.perf_counter()
            path = manager.clone("w1")
            clone_s.append(time.perf_counter() - t0)
            info = manager.info(path)
            copied, files = info.bytes_copied, info.files_copied
        finally:
            manager.cleanup()
        if full_copy:
            target = work_root / f"full-copy-{i}"
            t0 = time.perf_counter()
            shutil.copytree(profile.path, target, symlinks=True)
            full_s.append(time.perf_counter() - t0)
            shutil.rmtree(target)
    return CloneMeasurement(profile, clone_s, copied, files, full_s)
