"""The long soak (issue 23): `python -m benchmarks.long_soak [--pos 10000] [--modes parallel-4,single-session-4] [--out BENCHMARKS.md] [--quick]`.

A batch of 10,000 POs must run like a batch of 100, only longer. Per mode (4 parallel workers; one
browser with 4 windows, `--strategy single-session`) this runs one such batch and shows: memory flat
after warm-up (at most 10% growth), POs/min in each tenth of the run within 10% of the first tenth,
the results workbook and the HTML report written within 10 s of the last PO's result, no PO lost and
none fetched twice, and every PO its scenario's truth. The figures, with "within" or "beyond" for
each target, go between the `long-soak` markers of BENCHMARKS.md. Not in CI: a full run takes an
estimated 35 to 55 minutes per mode on the 2-core reference machine (from a 300-PO run at about 190
POs/min on a busy machine); `--quick` (40 POs, a sample a second) keeps it working
(tests/test_benchmarks_quick.py), its numbers mean nothing.

The scenario (long_soak_scenario): generated like the other benchmarks' (generate_scenario), with low
latency so that pobatch, not the portal, sets the pace: 40 ms pages, 15 ms files, 1 to 3 files of
2-12 KB per PO, every attachment kind; one PO in 50 has no attachments and one in 80 does not exist,
so the answers vary. No faults: nothing needs a second download. The demo portal serves it from this
process; pobatch runs as its own process (`python -m pobatch.core run`, as cpu_per_po.py starts it),
so the portal's work is not in what is sampled.

How each figure is measured:
* memory: the RSS of every process of pobatch's tree (benchmarks/process_tree.py: its Python, a
  parallel run's workers, the drivers, the browsers and all their children), summed, every
  --sample-s seconds (10; 1 with --quick), with the number of processes. RSS counts a page that
  Chromium's processes share once per process, so the sum overstates what is used, but it moves with
  it; its growth is what is judged (the issue's figure). The PSS sum (each shared page counted once,
  from /proc's smaps_rollup) is sampled beside it and shown, not judged.
* progress: from the run store, read-only (sqlite `mode=ro`; pobatch is its only writer). Each sample
  counts the POs answered so far (for the progress line); the figures use the `finished` time stored
  with each PO's result, which is exact whatever the sampling. The store, not the run log: it is the
  run's own record, in a schema, where the log is text for people.
* "the run" is the time from the first PO's result to the last's (browser starts before, the
  workbook after, are not in it). Its tenths are ten equal slices of that time; a tenth's POs/min is
  the POs answered after its start up to its end, over its length (the first result is the start).
  Deviation: the largest |tenth / first tenth - 1| of tenths 2 to 10.
* warm-up is the first tenth. Memory after warm-up: the samples of tenths 2 to 10, min / median /
  max; growth: the median of the last tenth's samples over the median of the second tenth's, minus 1
  (not measured when a tenth holds no sample: a run shorter than ten sampling intervals).
* the end: the workbook and the report are each written to a temporary file and renamed into place,
  so their mtime is the moment they were complete. Each is shown as seconds after the last PO's
  result (its `finished`, taken by the worker on this machine's clock), and so is the moment pobatch
  exited. The target is judged on the later of workbook and report.
* lost: a PO of the input with no answer in the store (no row, or PENDING, RUNNING, INTERRUPTED,
  LOGIN_REQUIRED), or with no row and status in the results workbook. Duplicated: an attachment the
  portal served whole more than once (DemoPortal.download_counts(); with no faults nothing needs a
  second download), or a PO with two rows in the workbook.
* truth: every PO's status, reason and the bytes in its folder against the scenario
  (benchmarks/soak.py check_truth).

Exit status: 1 when a run went wrong (exit code, truth, lost, duplicated), 2 when all were right but a
target was beyond (never for --quick), else 0.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import closing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from benchmarks.machine import current_load, load1, machine_info, wait_for_quiet
from benchmarks.process_tree import PeriodicTreeSampler, kind_of, tree_of
from benchmarks.report import machine_words, section_head, write_between_markers
from benchmarks.soak import check_truth
from pobatch.core.demo_portal import DemoPortal, generate_scenario
from pobatch.core.demo_portal.scenario import Scenario
from pobatch.core.commands.login import prepare_demo_profile
from pobatch.core.reports.report_data import report_path
from pobatch.core.results import PoOutcome, outcome_from_data
from pobatch.core.status import Status
from pobatch.core.workspace import Workspace
from pobatch.corelib.browser.process_reaper import kill_and_wait

log = logging.getLogger("benchmarks.long_soak")

LONG_SOAK_MARKERS = ("<!-- benchmark:long-soak:begin (generated by python -m benchmarks.long_soak; edit outside "
                     "these markers) -->", "<!-- benchmark:long-soak:end -->")
MODES: dict[str, list[str]] = {
    "parallel-4": ["--parallel", "--workers", "4"],
    "single-session-4": ["--strategy", "single-session", "--windows", "4"],
}
# The scenario: low latency, small files, a few answers other than COMPLETED.
PAGE_MS, FILE_MS = 40, 15
FILES_PER_PO, FILE_SIZE = (1, 3), (2_000, 12_000)
NO_ATTACHMENTS_EVERY, NOT_FOUND_EVERY = 50, 80
# The targets of issue 23.
MAX_GROWTH, MAX_RATE_DEVIATION, MAX_END_S = 0.10, 0.10, 10.0
SAMPLE_S, QUICK_SAMPLE_S, QUICK_POS = 10.0, 1.0, 40
TENTHS = 10
UNANSWERED = {Status.PENDING.value, Status.RUNNING.value, Status.INTERRUPTED.value, Status.LOGIN_REQUIRED.value}
MB = 1024 * 1024
PROGRESS_EVERY_S = 60.0


def long_soak_scenario(pos: int, seed: int = 1) -> Scenario:
    """`pos` POs (ids 200001...): 1-3 small files each at low latency; every NO_ATTACHMENTS_EVERY-th PO has
    no attachments and every NOT_FOUND_EVERY-th does not exist (the first of each within the first 20)."""
    base = generate_scenario(pos, seed, attachments_per_po=FILES_PER_PO, page_ms=PAGE_MS, attachment_ms=FILE_MS,
                             size=FILE_SIZE)
    specs = []
    for n, po in enumerate(base.pos):
        if n % NOT_FOUND_EVERY == 13:
            po = replace(po, attachments=(), missing=True)
        elif n % NO_ATTACHMENTS_EVERY == 7:
            po = replace(po, attachments=())
        specs.append(po)
    return replace(base, pos=tuple(specs), name=f"long-soak-{pos}-{seed}",
                   description="long soak (benchmarks/long_soak.py): low latency, small files, a few POs "
                               "without attachments or not found")


# -- while it runs ----------------------------------------------------------------------------------
@dataclass
class Sample:
    ts: float  # time.time()
    rss: int  # bytes, the whole tree
    pss: int  # the same as PSS: a shared page counted once in all (0 where the system does not say)
    processes: int
    by_kind: dict[str, int]  # RSS by kind_of()
    answered: int | None  # POs with an answer in the store (None: the store is not there yet)
    load1: float  # the machine's 1-minute load: did something else compete?


def _read_only(store: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    db.row_factory = sqlite3.Row
    return db


def answered_count(store: Path) -> int | None:
    if not store.exists():
        return None
    marks = ",".join("?" * len(UNANSWERED))
    try:
        with closing(_read_only(store)) as db:
            return db.execute(f"SELECT COUNT(*) FROM tasks WHERE status NOT IN ({marks})",
                              sorted(UNANSWERED)).fetchone()[0]
    except sqlite3.Error:  # not created yet, or busy: the next sample will tell
        return None


class SoakSampler(PeriodicTreeSampler):
    """Every `interval` s: the tree's RSS (in total and by kind) and the POs answered so far."""

    def __init__(self, root: int, interval: float, store: Path, label: str, total: int) -> None:
        super().__init__(root, interval)
        self.store, self.label, self.total = store, label, total
        self.samples: list[Sample] = []
        self._kinds: dict[tuple[int, float], str] = {}
        self._logged = time.monotonic()

    def sample(self, procs: list[psutil.Process]) -> None:
        by_kind: dict[str, int] = {}
        count = pss = 0
        for p in procs:
            try:
                key = (p.pid, p.create_time())
                if key not in self._kinds:
                    self._kinds[key] = kind_of(p)
                mem = p.memory_full_info()
            except psutil.Error:
                continue
            by_kind[self._kinds[key]] = by_kind.get(self._kinds[key], 0) + mem.rss
            pss += getattr(mem, "pss", 0)
            count += 1
        if not count:  # pobatch has exited
            return
        s = Sample(time.time(), sum(by_kind.values()), pss, count, by_kind, answered_count(self.store), load1())
        self.samples.append(s)
        if time.monotonic() - self._logged >= PROGRESS_EVERY_S:
            self._logged = time.monotonic()
            log.info("%s: %s of %d POs answered, RSS %.0f MB in %d processes, load %.2f", self.label,
                     "?" if s.answered is None else f"{s.answered:,}", self.total, s.rss / MB, s.processes, s.load1)


# -- the figures ------------------------------------------------------------------------------------
def tenth_of(ts: float, first: float, last: float) -> int | None:
    """Which tenth of the run from `first` to `last` `ts` falls in, each tenth from just after its start up
    to its end, `first` itself in the first one (None: outside the run)."""
    if ts < first or ts > last or last <= first:
        return None
    return min(TENTHS - 1, max(0, math.ceil((ts - first) / (last - first) * TENTHS) - 1))


def tenth_rates(finished: list[float]) -> list[float]:
    """POs/min in each tenth of the time from the first result to the last ([] for fewer than 2 results).
    The first result is the run's start, not counted: a tenth's POs are those answered after its start
    up to its end, so a steady run gives ten equal rates."""
    if len(finished) < 2 or max(finished) <= min(finished):
        return []
    ordered = sorted(finished)
    first, last = ordered[0], ordered[-1]
    counts = Counter(tenth_of(t, first, last) for t in ordered[1:])
    minutes = (last - first) / TENTHS / 60
    return [counts.get(i, 0) / minutes for i in range(TENTHS)]


def rate_deviation(rates: list[float]) -> float | None:
    """The largest |tenth / first tenth - 1| over tenths 2..10."""
    if len(rates) < 2 or rates[0] <= 0:
        return None
    return max(abs(r / rates[0] - 1) for r in rates[1:])


def memory_tenths(samples: list[Sample], first: float, last: float, what: str = "rss") -> list[list[int]]:
    """The memory samples (`what`: "rss" or "pss") of each tenth of the run."""
    out: list[list[int]] = [[] for _ in range(TENTHS)]
    for s in samples:
        i = tenth_of(s.ts, first, last)
        if i is not None:
            out[i].append(getattr(s, what))
    return out


def growth(tenths: list[list[int]]) -> float | None:
    """Median of the last tenth over the median of the second, minus 1 (None: either holds no sample)."""
    if len(tenths) < TENTHS or not tenths[1] or not tenths[-1]:
        return None
    return statistics.median(tenths[-1]) / statistics.median(tenths[1]) - 1


def workbook_rows(path: Path) -> Counter[str]:
    """PO number -> rows of the results workbook's Results sheet that have it and a status."""
    from openpyxl import load_workbook

    from pobatch.core.reports.workbook import RESULTS_SHEET

    rows: Counter[str] = Counter()
    wb = load_workbook(path, read_only=True)
    try:
        it = wb[RESULTS_SHEET].iter_rows(values_only=True)
        header = [str(c or "").strip() for c in next(it)]
        po_col, status_col = header.index("PO_NUMBER"), header.index("STATUS")
        for row in it:
            po = str(row[po_col] or "").strip() if po_col < len(row) else ""
            status = str(row[status_col] or "").strip() if status_col < len(row) else ""
            if po and status:
                rows[po] += 1
    finally:
        wb.close()
    return rows


def read_tasks(store: Path) -> dict[str, dict[str, Any]]:
    """The store's task rows (read-only): key -> status, reason, finished, data."""
    if not store.exists():
        return {}
    with closing(_read_only(store)) as db:
        return {r["key"]: {"status": r["status"], "reason": r["reason"] or "", "finished": r["finished"],
                           "data": json.loads(r["data"] or "{}")}
                for r in db.execute("SELECT key, status, reason, finished, data FROM tasks")}


def outcome_of(key: str, row: dict[str, Any]) -> PoOutcome:
    """A store row as the PoOutcome MainApp would make of it (MainApp._finish)."""
    if row["data"].get("po_number"):
        return outcome_from_data(row["data"])
    return PoOutcome(po_number=key, status=Status(row["status"]), reason=row["reason"])


@dataclass
class LongSoakRun:
    mode: str
    pos: int
    exit_code: int
    wall_s: float
    started: float  # time.time() when pobatch was started
    exited: float  # ... and when it had exited
    answered: int = 0
    first_result: float | None = None
    last_result: float | None = None
    rates: list[float] = field(default_factory=list)  # POs/min per tenth
    deviation: float | None = None
    rss_after_warmup_mb: list[float] = field(default_factory=list)  # min, median, max
    rss_tenths_mb: list[float | None] = field(default_factory=list)  # median per tenth
    load_tenths: list[float | None] = field(default_factory=list)  # mean 1-minute load per tenth
    growth: float | None = None
    pss_tenths_mb: list[float | None] = field(default_factory=list)
    pss_growth: float | None = None  # shown beside the RSS growth, not judged
    processes: list[int] = field(default_factory=list)  # min, max after warm-up
    workbook_s: float | None = None  # seconds after the last result
    report_s: float | None = None
    exit_s: float | None = None
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    right: int = 0
    wrong: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    console_tail: str = ""  # pobatch's last words when it did not exit 0
    quiet: dict[str, Any] = field(default_factory=dict)  # the machine's load before the run (QuietCheck)

    @property
    def pos_per_min(self) -> float:
        return self.pos / self.wall_s * 60 if self.wall_s else 0.0

    @property
    def end_s(self) -> float | None:
        """When the later of workbook and report was complete, after the last result."""
        if self.workbook_s is None or self.report_s is None:
            return None
        return max(self.workbook_s, self.report_s)

    @property
    def correct(self) -> bool:
        return self.exit_code == 0 and not self.wrong and not self.lost and not self.duplicated and self.right == self.pos

    def verdicts(self) -> list[tuple[str, str, bool]]:
        """(target, measured, within) for each target of issue 23."""
        g, d, e = self.growth, self.deviation, self.end_s
        return [
            (f"memory after warm-up grows at most {MAX_GROWTH:.0%}",
             "not measured (too few samples)" if g is None else f"{g:+.1%}", g is not None and g <= MAX_GROWTH),
            (f"POs/min of each tenth within {MAX_RATE_DEVIATION:.0%} of the first tenth's",
             "not measured" if d is None else f"{d:.1%} at most", d is not None and d <= MAX_RATE_DEVIATION),
            (f"workbook and report written within {MAX_END_S:.0f} s of the last result",
             "not written" if e is None else f"{e:.1f} s", e is not None and e <= MAX_END_S),
            ("0 lost, 0 duplicated", f"{len(self.lost)} lost, {len(self.duplicated)} duplicated",
             not self.lost and not self.duplicated),
        ]


def figures(run: LongSoakRun, samples: list[Sample], tasks: dict[str, dict[str, Any]]) -> None:
    """Fill in the throughput and memory figures of `run` from its samples and the store's rows."""
    finished = sorted(r["finished"] for r in tasks.values() if r["status"] not in UNANSWERED and r["finished"])
    run.answered = len(finished)
    run.samples = [asdict(s) for s in samples]
    if not finished:
        return
    first, last = run.first_result, run.last_result = finished[0], finished[-1]
    run.rates = tenth_rates(finished)
    run.deviation = rate_deviation(run.rates)
    tenths = memory_tenths(samples, first, last)
    run.rss_tenths_mb = [statistics.median(t) / MB if t else None for t in tenths]
    loads: list[list[float]] = [[] for _ in range(TENTHS)]
    for s in samples:
        i = tenth_of(s.ts, first, last)
        if i is not None:
            loads[i].append(s.load1)
    run.load_tenths = [statistics.mean(x) if x else None for x in loads]
    run.growth = growth(tenths)
    pss = memory_tenths(samples, first, last, "pss")
    if any(v for t in pss for v in t):
        run.pss_tenths_mb = [statistics.median(t) / MB if t else None for t in pss]
        run.pss_growth = growth(pss)
    after = [s for s in samples if tenth_of(s.ts, first, last) in range(1, TENTHS)]  # past the warm-up
    if after:
        rss = [s.rss / MB for s in after]
        run.rss_after_warmup_mb = [min(rss), statistics.median(rss), max(rss)]
        run.processes = [min(s.processes for s in after), max(s.processes for s in after)]


# -- one run ----------------------------------------------------------------------------------------
def _stop(proc: subprocess.Popen) -> None:
    """When the benchmark stops early (Ctrl-C): pobatch, in a session of its own so that the terminal's
    Ctrl-C reaches only this process, is asked once to stop as a Ctrl-C would (it closes its browsers),
    and killed with its whole tree if it has not within a minute."""
    if proc.poll() is not None:
        return
    family = tree_of(proc.pid)
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        log.warning("pobatch did not stop within 60 s of a Ctrl-C: killing its %d processes", len(family))
        kill_and_wait([*family, *tree_of(proc.pid)], time.monotonic() + 15)


def run_mode(mode: str, scenario: Scenario, portal: DemoPortal, profile: Path, orders: Path, work: Path,
             sample_s: float, keep: bool = False) -> LongSoakRun:
    out = work / f"out-{mode}"
    cmd = [sys.executable, "-m", "pobatch.core", "run", str(orders), "--site", "demo", "--base-url", portal.base_url,
           "--browser", "chromium", "--profile", str(profile), "--out", str(out), *MODES[mode]]
    env = dict(os.environ, POBATCH_PROFILES_ROOT=str(work / "profiles"))
    console = work / f"console-{mode}.txt"
    store = Workspace(out).store_path
    portal.reset()  # the download counts are this run's
    log.info("%s: %d POs", mode, len(scenario.pos))
    started, t0 = time.time(), time.monotonic()
    with open(console, "wb") as sink:
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            with SoakSampler(proc.pid, sample_s, store, mode, len(scenario.pos)) as sampler:
                proc.wait()
        finally:
            _stop(proc)
    wall, exited = time.monotonic() - t0, time.time()
    run = LongSoakRun(mode, len(scenario.pos), proc.returncode, wall, started, exited)
    tasks = read_tasks(store)
    figures(run, sampler.samples, tasks)
    run.right, wrong = check_truth({k: outcome_of(k, r) for k, r in tasks.items()}, portal)
    run.wrong = wrong[:20]
    ids = [po.id for po in scenario.pos]
    run.lost = [f"{po}: no answer in the store" for po in ids
                if po not in tasks or tasks[po]["status"] in UNANSWERED]
    run.duplicated = [f"{key}: served whole {n} times" for key, n in sorted(portal.download_counts().items()) if n > 1]
    workbook = out / f"{orders.stem}_results.xlsx"
    report = report_path(out, orders)
    if workbook.exists():
        rows = workbook_rows(workbook)
        run.lost += [f"{po}: no row in the workbook" for po in ids if not rows[po]]
        run.duplicated += [f"{po}: {n} rows in the workbook" for po, n in sorted(rows.items()) if n > 1]
    else:
        run.lost.append("the workbook was not written")
    if run.last_result is not None:
        run.exit_s = exited - run.last_result
        if workbook.exists():
            run.workbook_s = workbook.stat().st_mtime - run.last_result
        if report.exists():
            run.report_s = report.stat().st_mtime - run.last_result
    if run.exit_code != 0:
        run.console_tail = console.read_text(encoding="utf-8", errors="replace")[-3000:]
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return run


# -- the section --------------------------------------------------------------------------------------
def _mb(v: float | None) -> str:
    return "–" if v is None else f"{v:.0f}"


def _s(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def render(runs: list[LongSoakRun], info: dict[str, Any], pos: int, sample_s: float, quick: bool) -> str:
    begin, end = LONG_SOAK_MARKERS
    lines = section_head(begin, f"## Long soak: {pos:,} POs (issue 23)", quick, "soak")
    command = "python -m benchmarks.long_soak " + ("--quick" if quick else f"--pos {pos}")
    modes = list(dict.fromkeys(r.mode for r in runs))
    if modes != list(MODES):
        command += f" --modes {','.join(modes)}"
    if sample_s != (QUICK_SAMPLE_S if quick else SAMPLE_S):
        command += f" --sample-s {sample_s:g}"
    lines += [f"`{command}`: {pos:,} POs generated by benchmarks/long_soak.py "
              f"({PAGE_MS} ms pages, {FILE_MS} ms files, {FILES_PER_PO[0]}-{FILES_PER_PO[1]} files of "
              f"{FILE_SIZE[0] // 1000}-{FILE_SIZE[1] // 1000} KB per PO, every kind; 1 PO in {NO_ATTACHMENTS_EVERY} "
              f"without attachments, 1 in {NOT_FOUND_EVERY} not found), one run per mode, pobatch as its own process, "
              f"the memory of its whole process tree sampled every {sample_s:g} s. " + machine_words(info)]
    busy = [f"{r.mode} (1-minute load {r.quiet['load1']:.2f})" for r in runs
            if r.quiet.get("checked") and not r.quiet.get("quiet")]
    if busy:
        lines[-1] += " The machine was not quiet before " + ", ".join(busy) + "."
    lines += ["", "| mode | POs | wall s | POs/min | POs/min per tenth: max deviation from the first | "
              "RSS after warm-up MB (min / median / max) | RSS growth | PSS growth | processes | "
              "workbook / report / exit, s after the last result | lost | duplicated | POs right | exit |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        rss = " / ".join(_mb(v) for v in r.rss_after_warmup_mb) or "–"
        procs = "–" if not r.processes else f"{r.processes[0]}–{r.processes[1]}"
        lines.append(
            f"| {r.mode} | {r.pos:,} | {r.wall_s:.0f} | {r.pos_per_min:.0f} | "
            f"{'–' if r.deviation is None else f'{r.deviation:.1%}'} | {rss} | "
            f"{'–' if r.growth is None else f'{r.growth:+.1%}'} | "
            f"{'–' if r.pss_growth is None else f'{r.pss_growth:+.1%}'} | {procs} | "
            f"{_s(r.workbook_s)} / {_s(r.report_s)} / {_s(r.exit_s)} | {len(r.lost)} | {len(r.duplicated)} | "
            f"{r.right:,} of {r.pos:,} | {r.exit_code} |")
    lines += ["", "| mode | target (issue 23) | measured | verdict |", "|---|---|---|---|"]
    for r in runs:
        for target, measured, within in r.verdicts():
            lines.append(f"| {r.mode} | {target} | {measured} | {'within' if within else 'beyond'} |")
    lines += ["", "Each tenth of the run (the time from the first PO's result to the last's):", "",
              "| mode | per tenth | " + " | ".join(str(i + 1) for i in range(TENTHS)) + " |",
              "|---|---|" + "---|" * TENTHS]
    for r in runs:
        if r.rates:
            lines.append(f"| {r.mode} | POs/min | " + " | ".join(f"{v:.0f}" for v in r.rates) + " |")
        if r.rss_tenths_mb:
            lines.append(f"| {r.mode} | RSS MB (median) | " + " | ".join(_mb(v) for v in r.rss_tenths_mb) + " |")
        if r.pss_tenths_mb:
            lines.append(f"| {r.mode} | PSS MB (median) | " + " | ".join(_mb(v) for v in r.pss_tenths_mb) + " |")
        if r.load_tenths:
            lines.append(f"| {r.mode} | 1-minute load | "
                         + " | ".join("–" if v is None else f"{v:.1f}" for v in r.load_tenths) + " |")
    problems = [f"{r.mode}: {w}" for r in runs for w in (r.wrong + r.lost + r.duplicated)[:10]]
    problems += [f"{r.mode}: exit {r.exit_code}" for r in runs if r.exit_code != 0]
    lines += ["", "Every PO got its truth (status, reason and bytes), none lost, none fetched twice." if not problems
              else "Problems: " + "; ".join(problems[:20]),
              "Warm-up is the first tenth; growth is the last tenth's median RSS over the second tenth's. RSS is "
              "summed over pobatch's Python, its workers, the drivers and every browser process (a page shared "
              "by several counts in each), so growth, not the level, is the figure; PSS (each shared page "
              "counted once) is shown beside it, not judged. The workbook and report "
              "times are their files' mtimes (each is renamed into place once complete).", end]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.long_soak", description=__doc__.splitlines()[0])
    parser.add_argument("--pos", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--sample-s", type=float, help=f"seconds between memory samples (default {SAMPLE_S:g})")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--json", type=Path, help="also write every run, samples included, as JSON here")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the scratch folder goes (removed after, unless --keep)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the scratch folder: each run's output folder and pobatch's console output")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_POS} POs, a sample every {QUICK_SAMPLE_S:g} s: keeps the script working")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        parser.error(f"--modes: unknown {', '.join(unknown) or '(none given)'}; expected some of {', '.join(MODES)}")
    pos = QUICK_POS if args.quick else args.pos
    sample_s = args.sample_s or (QUICK_SAMPLE_S if args.quick else SAMPLE_S)
    if pos < 1 or sample_s <= 0:
        parser.error("--pos and --sample-s must be positive")
    scenario = long_soak_scenario(pos, args.seed)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="long-soak-", dir=args.work_dir))
    runs: list[LongSoakRun] = []
    try:
        orders = work / "orders.csv"
        orders.write_text("PO_NUMBER\n" + "\n".join(p.id for p in scenario.pos) + "\n", encoding="utf-8")
        with DemoPortal(scenario).start() as portal:
            profile = prepare_demo_profile(work / "profile", portal.base_url, timeout=60)
            for mode in modes:
                quiet = current_load() if args.quick or args.no_wait else wait_for_quiet(120)
                run = run_mode(mode, scenario, portal, profile, orders, work, sample_s, keep=args.keep)
                run.quiet = asdict(quiet)
                log.info("%s: %.0f s, exit %d, %d of %d right, %d lost, %d duplicated, growth %s, deviation %s, "
                         "end %s s", mode, run.wall_s, run.exit_code, run.right, run.pos, len(run.lost),
                         len(run.duplicated), "–" if run.growth is None else f"{run.growth:+.1%}",
                         "–" if run.deviation is None else f"{run.deviation:.1%}", _s(run.end_s))
                if run.console_tail:
                    log.warning("%s: pobatch's last words:\n%s", mode, run.console_tail)
                runs.append(run)
    finally:
        if args.keep:
            log.info("kept every run's output folder and console in %s", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    write_between_markers(args.out, render(runs, machine_info().as_dict(), pos, sample_s, args.quick),
                          bounds=LONG_SOAK_MARKERS)
    if args.json:
        args.json.write_text(json.dumps([{**asdict(r), "pos_per_min": r.pos_per_min, "end_s": r.end_s,
                                          "verdicts": r.verdicts()} for r in runs], indent=1), encoding="utf-8")
    if not all(r.correct for r in runs):
        return 1
    if not args.quick and not all(within for r in runs for _t, _m, within in r.verdicts()):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
