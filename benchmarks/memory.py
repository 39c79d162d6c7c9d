"""Peak memory of each browser tree during a run, and how busy the rest of the machine was meanwhile.

A worker's browser is found the way the process reaper finds it: every Chromium process carries its
`--user-data-dir`, and each worker has its own (a clone of the base profile). So one scan of the
process table groups the browsers by that directory; the main browser process is the one whose
parent is not in its group, its parent is the chromedriver, and the driver's parent is the worker's
Python process. USS (memory only this process holds) and PSS (its share of shared pages) are summed
per group; the sampler keeps the peak of each sum.

The same scan reads the CPU use of every process that is not ours, so a benchmark can say whether
another program (another helper's browser tests) competed for the two cores while it ran.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

MB = 1024 * 1024
_UDD_RE = re.compile(r"--user-data-dir=(\S+)")
_DRIVER_NAMES = ("chromedriver", "msedgedriver")


@dataclass
class TreePeak:
    """Peak memory of one worker: its browser processes, and the Python process that drives them."""

    user_data_dir: str
    browser_uss: int = 0
    browser_pss: int = 0
    browser_processes: int = 0
    worker_uss: int = 0
    worker_pss: int = 0
    driver_uss: int = 0
    worker_pid: int = 0


@dataclass
class _Proc:
    pid: int
    ppid: int
    name: str
    cmd: str


@dataclass
class SamplerReport:
    trees: list[TreePeak] = field(default_factory=list)
    samples: int = 0
    foreign_cpu_mean: float = 0.0  # percent of ONE core used by processes not ours, averaged over samples
    foreign_cpu_max: float = 0.0
    own_cpu_mean: float = 0.0  # the same for the benchmark's own processes (portal, workers, browsers)
    top_foreign: list[str] = field(default_factory=list)  # the busiest foreign processes seen
    # Peak over samples of the sum over every browser (all workers, or the one shared browser): what the
    # run costs the machine at once. RSS counts a shared page once per process, PSS splits it.
    all_browsers_rss: int = 0
    all_browsers_pss: int = 0


class MemorySampler:
    """Sample every `interval` seconds in a thread, from start() to stop()."""

    def __init__(self, roots: list[Path], interval: float = 1.0) -> None:
        self.roots = [os.path.realpath(r) for r in roots]
        self.interval = interval
        self._peaks: dict[str, TreePeak] = {}
        self._all_rss = self._all_pss = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._samples = 0
        self._foreign: list[float] = []
        self._own: list[float] = []
        self._foreign_by_name: dict[str, float] = {}
        self._cpu_procs: dict[int, psutil.Process] = {}
        self._me = os.getpid()

    def start(self) -> "MemorySampler":
        self._sample_cpu_only()  # primes cpu_percent() so the first real sample has a baseline
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> SamplerReport:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        trees = sorted(self._peaks.values(), key=lambda t: t.user_data_dir)
        top = sorted(self._foreign_by_name.items(), key=lambda kv: -kv[1])[:3]
        n = len(self._foreign)
        return SamplerReport(
            trees=trees, samples=self._samples,
            foreign_cpu_mean=sum(self._foreign) / n if n else 0.0,
            foreign_cpu_max=max(self._foreign) if n else 0.0,
            own_cpu_mean=sum(self._own) / len(self._own) if self._own else 0.0,
            top_foreign=[f"{name} ({pct / max(n, 1):.0f}%)" for name, pct in top if pct / max(n, 1) >= 1.0],
            all_browsers_rss=self._all_rss, all_browsers_pss=self._all_pss,
        )

    # -- sampling ---------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._sample()
            except Exception:  # a sampler must never take the benchmark down
                log.debug("memory sample failed", exc_info=True)

    def _table(self) -> dict[int, _Proc]:
        table: dict[int, _Proc] = {}
        for p in psutil.process_iter(["pid", "ppid", "name", "cmdline"]):
            info = p.info
            table[info["pid"]] = _Proc(info["pid"], info["ppid"] or 0, (info["name"] or "").lower(),
                                       " ".join(info["cmdline"] or []))
        return table

    def _ours(self, table: dict[int, _Proc]) -> set[int]:
        """This process, its descendants, and anything whose --user-data-dir lies under our roots."""
        children: dict[int, list[int]] = {}
        for proc in table.values():
            children.setdefault(proc.ppid, []).append(proc.pid)
        ours, todo = set(), [self._me]
        while todo:
            pid = todo.pop()
            if pid in ours:
                continue
            ours.add(pid)
            todo.extend(children.get(pid, []))
        for proc in table.values():
            m = _UDD_RE.search(proc.cmd)
            if m and self._under_root(m.group(1)):
                ours.add(proc.pid)
        return ours

    def _under_root(self, path: str) -> bool:
        real = os.path.realpath(path)
        return any(real == r or real.startswith(r + os.sep) for r in self.roots)

    def _cpu(self, table: dict[int, _Proc], ours: set[int]) -> None:
        foreign = own = 0.0
        seen: set[int] = set()
        for pid, proc in table.items():
            if pid == 0:
                continue
            seen.add(pid)
            handle = self._cpu_procs.get(pid)
            try:
                if handle is None:
                    handle = self._cpu_procs[pid] = psutil.Process(pid)
                    handle.cpu_percent(None)  # first call only sets the baseline
                    continue
                pct = handle.cpu_percent(None)
            except psutil.Error:
                continue
            if pid in ours:
                own += pct
                continue
            foreign += pct
            if pct:
                key = proc.name or str(pid)
                self._foreign_by_name[key] = self._foreign_by_name.get(key, 0.0) + pct
        for pid in set(self._cpu_procs) - seen:
            del self._cpu_procs[pid]
        self._foreign.append(foreign)
        self._own.append(own)

    def _sample_cpu_only(self) -> None:
        table = self._table()
        for pid in table:
            if pid not in self._cpu_procs:
                try:
                    self._cpu_procs[pid] = psutil.Process(pid)
                    self._cpu_procs[pid].cpu_percent(None)
                except psutil.Error:
                    pass

    def _sample(self) -> None:
        table = self._table()
        ours = self._ours(table)
        self._cpu(table, ours)
        groups: dict[str, set[int]] = {}
        for proc in table.values():
            if proc.name.startswith(_DRIVER_NAMES):
                continue
            m = _UDD_RE.search(proc.cmd)
            if m and self._under_root(m.group(1)):
                groups.setdefault(os.path.realpath(m.group(1)), set()).add(proc.pid)
        children: dict[int, list[int]] = {}
        for proc in table.values():
            children.setdefault(proc.ppid, []).append(proc.pid)
        sample_rss = sample_pss = 0
        for udd, pids in groups.items():
            # Helpers a browser spawned belong to it even if their title hides the directory.
            todo = list(pids)
            while todo:
                for child in children.get(todo.pop(), []):
                    if child not in pids and not table[child].name.startswith(_DRIVER_NAMES):
                        pids.add(child)
                        todo.append(child)
            uss = pss = 0
            for pid in pids:
                u, p = _uss_pss(pid)
                uss += u
                pss += p
                sample_rss += _rss(pid)
            sample_pss += pss
            mains = [pid for pid in pids if table[pid].ppid not in pids]
            driver = table.get(table[mains[0]].ppid) if mains else None
            worker_uss = worker_pss = driver_uss = worker_pid = 0
            if driver is not None and driver.name.startswith(_DRIVER_NAMES):
                driver_uss = _uss_pss(driver.pid)[0]
                worker = table.get(driver.ppid)
                if worker is not None:
                    worker_pid = worker.pid
                    worker_uss, worker_pss = _uss_pss(worker.pid)
            peak = self._peaks.setdefault(udd, TreePeak(user_data_dir=udd))
            peak.browser_uss = max(peak.browser_uss, uss)
            peak.browser_pss = max(peak.browser_pss, pss)
            peak.browser_processes = max(peak.browser_processes, len(pids))
            peak.worker_uss = max(peak.worker_uss, worker_uss)
            peak.worker_pss = max(peak.worker_pss, worker_pss)
            peak.driver_uss = max(peak.driver_uss, driver_uss)
            peak.worker_pid = peak.worker_pid or worker_pid
        self._all_rss = max(self._all_rss, sample_rss)
        self._all_pss = max(self._all_pss, sample_pss)
        self._samples += 1


def _rss(pid: int) -> int:
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def _uss_pss(pid: int) -> tuple[int, int]:
    try:
        info = psutil.Process(pid).memory_full_info()
        return int(info.uss), int(getattr(info, "pss", 0))
    except psutil.Error:
        return 0, 0

