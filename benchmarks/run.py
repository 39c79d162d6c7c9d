"""Run the benchmarks and write their table: `python -m benchmarks.run [--quick] [--out BENCHMARKS.md]`.

Against the bundled demo portal with a generated fixed-latency scenario (so the portal's own share of
the time is known exactly), on a signed-in profile, this runs pobatch sequential, pobatch parallel
with 1, 2 and 4 workers and auto, the naive baseline and the leanest Selenium loop (lean_loop.py);
each configuration `--runs` times, the rounds interleaved so that a slow minute of the machine
hits every configuration alike. It also times a worker start on its own (profile clone + browser
start), the browser's floor (the lean loop with no latency) and the clone of a large, cache-heavy
profile. Then it compares everything with the ideal: the portal's time divided by N,
plus one worker start.

--quick is a tiny version (a few POs, short latencies, one run) that CI runs to keep this working;
its numbers mean nothing. A full run first waits for a quiet machine (other programs' browsers
would spoil the timings) and says in the output how quiet it was.

The benchmarks with a section of their own in BENCHMARKS.md are their own modules, reached from here
too, so that this stays the one entry: `python -m benchmarks.run SECTION [its options]` is
`python -m benchmarks.<module> [its options]` (SECTIONS below; `--help` after the name lists them).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.clone_time import (
    CloneMeasurement,
    make_cache_heavy_profile,
    measure_clone,
)
from benchmarks.lean_loop import loop_overhead, run_lean_loop
from benchmarks.machine import QuietCheck, current_load, machine_info, wait_for_quiet
from benchmarks.memory import MemorySampler, TreePeak
from benchmarks.naive_baseline import run_naive
from benchmarks.report import render_markdown, write_between_markers
from benchmarks.steps import overlap_seconds, pipelined_seconds, portal_seconds, read_timeline, step_timings
from pobatch.core.app import MainApp, RunOptions
from pobatch.core.demo_portal import DemoPortal, generate_scenario
from pobatch.core.commands.login import prepare_demo_profile
from pobatch.core.modes.po_handler import incoming_dir
from pobatch.core.workflow.job_config import JobConfig
from pobatch.corelib.worker_pool.autoscale import auto_workers
from pobatch.corelib.browser.factory import BrowserSpec
from pobatch.corelib.browser.local_session import LocalBrowserSession
from pobatch.corelib.browser.profile_manager import ProfileManager

log = logging.getLogger("benchmarks")

REPO = Path(__file__).resolve().parent.parent
# "-f1": the same with --files-at-once 1 (a PO's files one after another, as before issue 15).
# "-np": the same with --no-page-ahead (each PO's page loaded after the last PO's files, as before issue 23).
# "single-session-N": --strategy single-session --windows N.
POBATCH_CONFIGS = ("sequential", "sequential-np", "sequential-f1", "parallel-1", "parallel-2", "parallel-2-np",
                   "parallel-2-f1", "parallel-4", "parallel-4-np", "parallel-4-f1", "parallel-auto",
                   "single-session-4")
BASELINES = ("naive", "lean")
ALL_CONFIGS = (*POBATCH_CONFIGS, *BASELINES)


@dataclass(frozen=True)
class Settings:
    name: str = "benchmark"  # which scenario: "benchmark" or "slow-files" (own section of BENCHMARKS.md)
    count: int = 40
    seed: int = 5
    attachments_per_po: tuple[int, int] = (2, 3)
    page_ms: int = 400
    attachment_ms: int = 150
    runs: int = 3
    configs: tuple[str, ...] = ALL_CONFIGS
    naive_sleep: float = 2.0
    clone_bytes: int = 1024**3
    clone_repeats: int = 5
    quick: bool = False
    extras: bool = True  # the browser floor and the large profile clone (the main scenario only)


QUICK = Settings(count=4, attachments_per_po=(1, 2), page_ms=100, attachment_ms=50, runs=1,
                 configs=("sequential", "sequential-f1", "sequential-np", "parallel-2", "naive", "lean"), naive_sleep=0.5,
                 clone_bytes=32 * 1024**2, clone_repeats=1, quick=True)
# Where real tenants hurt (issue 15): few POs, several slow files each (object storage behind a redirect).
SLOW_FILES = Settings(name="slow-files", count=20, attachments_per_po=(4, 4), page_ms=400, attachment_ms=1000,
                      configs=("sequential", "sequential-f1", "parallel-2", "parallel-2-f1", "parallel-4",
                               "parallel-4-f1"), extras=False)
# Issue 23 on the benchmark scenario: pages ahead against none, and one browser of 4 windows against 4
# browsers, in one interleaved run of their own (the full table takes half an hour on 2 cores).
PAGES_AHEAD = Settings(name="pages-ahead", configs=("sequential", "sequential-np", "parallel-2", "parallel-2-np",
                                                    "parallel-4", "parallel-4-np", "single-session-4"), extras=False)
SCENARIOS = {"benchmark": Settings(), "slow-files": SLOW_FILES, "pages-ahead": PAGES_AHEAD}
# The sections other modules write (each between its own markers): `benchmarks.run NAME ...` runs that module.
SECTIONS = {"soak": "benchmarks.soak", "refresh": "benchmarks.refresh", "cpu-per-po": "benchmarks.cpu_per_po",
            "long-soak": "benchmarks.long_soak"}


@dataclass
class RunResult:
    config: str
    round: int
    wall: float
    workers: int
    correct: bool
    problems: list[str] = field(default_factory=list)
    ready_seconds: list[float] = field(default_factory=list)  # per worker: run start -> its first PO
    trees: list[TreePeak] = field(default_factory=list)
    all_browsers_rss: int = 0  # peak sum over every browser of the run (SamplerReport)
    all_browsers_pss: int = 0
    foreign_cpu: float = 0.0  # mean % of one core used by other programs during the run
    own_cpu: float = 0.0  # the same for the benchmark's own processes
    foreign_top: list[str] = field(default_factory=list)
    steps_ms_per_po: dict[str, float] = field(default_factory=dict)
    attempt_overhead_ms: float = 0.0  # median over POs: attempt time minus the portal's time
    file_overhead_ms: float = 0.0  # median over files: the download step minus the file's latency
    retries: int = 0
    files: int = 0
    expected_files: int = 0


@dataclass
class WorkerStart:
    clone_seconds: list[float]
    browser_seconds: list[float]

    @property
    def total(self) -> float:
        return statistics.median(c + b for c, b in zip(self.clone_seconds, self.browser_seconds))


@dataclass
class Context:
    settings: Settings
    work: Path
    scenario: object
    portal: object
    profile: Path
    orders: Path

    @property
    def po_ids(self) -> list[str]:
        return [po.id for po in self.scenario.pos]

    @property
    def expected_files(self) -> int:
        return sum(len(self.scenario.expected_files(p)) for p in self.po_ids)


# -- one run of each kind ---------------------------------------------------------------------------
def options_of(config: str) -> dict[str, Any]:
    """The RunOptions fields a configuration name sets (see POBATCH_CONFIGS)."""
    opts: dict[str, Any] = {"files_at_once": 1 if config.endswith("-f1") else 4,
                            "page_ahead": not config.endswith("-np")}
    base = config.removesuffix("-f1").removesuffix("-np")
    if base.startswith("single-session-"):
        return {**opts, "strategy": "single-session", "windows": int(base.rsplit("-", 1)[1])}
    if base == "sequential":
        return opts
    n = base.split("-", 1)[1]
    return {**opts, "parallel": True, "workers": None if n == "auto" else int(n)}


def run_pobatch(ctx: Context, config: str, rnd: int) -> RunResult:
    shape = options_of(config)
    files_at_once = shape["files_at_once"]
    out = ctx.work / "out" / f"{config}-{rnd}"
    opts = RunOptions(orders=ctx.orders, out=out, site="demo", base_url=ctx.portal.base_url, browser="chromium",
                      profile=ctx.profile, local_only=True, profiles_root=ctx.work / "profiles", po_timeout=120.0,
                      **shape)
    ctx.portal.reset()
    sampler = MemorySampler([ctx.work]).start()
    started_wall = time.time()
    t0 = time.perf_counter()
    try:
        summary = MainApp(opts).run()
    finally:
        wall = time.perf_counter() - t0
        sampled = sampler.stop()
    problems = _check(ctx, summary)
    steps = step_timings(read_timeline(out, summary.run_id), ctx.scenario, files_at_once)
    n = len(ctx.po_ids)
    result = RunResult(
        config=config, round=rnd, wall=wall, workers=steps.workers, correct=not problems, problems=problems,
        ready_seconds=sorted(ts - started_wall for ts in steps.first_start.values()), trees=sampled.trees,
        foreign_cpu=sampled.foreign_cpu_mean, foreign_top=sampled.top_foreign, own_cpu=sampled.own_cpu_mean,
        all_browsers_rss=sampled.all_browsers_rss, all_browsers_pss=sampled.all_browsers_pss,
        steps_ms_per_po={s: steps.per_po_mean(s, n) for s in steps.samples},
        file_overhead_ms=steps.median("downloads"),
        attempt_overhead_ms=statistics.median(steps.attempt_overhead_ms) if steps.attempt_overhead_ms else 0.0,
        retries=steps.retries, files=sum(len(o.files) for o in summary.outcomes.values()),
        expected_files=ctx.expected_files,
    )
    shutil.rmtree(out, ignore_errors=True)
    return result


def _check(ctx: Context, summary) -> list[str]:
    """Every PO got the status the scenario expects and exactly the expected bytes."""
    problems = []
    expected = ctx.portal.expected_outcomes()
    for po in ctx.po_ids:
        outcome = summary.outcomes.get(po)
        if outcome is None:
            problems.append(f"PO {po}: no result")
            continue
        if (outcome.status.value, outcome.reason) != tuple(expected[po]):
            problems.append(f"PO {po}: {outcome.status.value} {outcome.reason}, expected {expected[po]}")
            continue
        want = {name: hashlib.sha256(data).hexdigest() for name, data in ctx.scenario.expected_files(po).items()}
        got = {f.name: f.sha256 for f in outcome.files}
        if got != want:
            problems.append(f"PO {po}: files differ from the scenario's")
    return problems


def run_naive_once(ctx: Context, rnd: int) -> RunResult:
    downloads = ctx.work / "out" / f"naive-{rnd}"
    ctx.portal.reset()
    sampler = MemorySampler([ctx.work]).start()
    try:
        res = run_naive(ctx.portal.base_url, ctx.po_ids, ctx.profile, downloads, ctx.settings.naive_sleep)
    finally:
        sampled = sampler.stop()
    expected = ctx.expected_files
    problems = [] if res.files == expected and not res.partial else [
        f"{res.files} of {expected} files, {res.partial} still partial"]
    shutil.rmtree(downloads, ignore_errors=True)
    return RunResult(config="naive", round=rnd, wall=res.wall, workers=1, correct=not problems, problems=problems,
                     ready_seconds=[res.browser_start], trees=sampled.trees, foreign_cpu=sampled.foreign_cpu_mean,
                     foreign_top=sampled.top_foreign, own_cpu=sampled.own_cpu_mean, files=res.files,
                     expected_files=expected)


def run_lean_once(ctx: Context, rnd: int) -> RunResult:
    downloads = ctx.work / "out" / f"lean-{rnd}"
    ctx.portal.reset()
    sampler = MemorySampler([ctx.work]).start()
    try:
        times = run_lean_loop(ctx.portal.base_url, ctx.po_ids, ctx.profile, downloads)
    finally:
        sampled = sampler.stop()
    shutil.rmtree(downloads, ignore_errors=True)
    expected = ctx.expected_files
    problems = [] if times.file_count == expected else [f"{times.file_count} of {expected} files"]
    over = loop_overhead(times, ctx.scenario)
    return RunResult(config="lean", round=rnd, wall=times.wall, workers=1, correct=not problems, problems=problems,
                     ready_seconds=[times.browser_start], trees=sampled.trees, foreign_cpu=sampled.foreign_cpu_mean,
                     foreign_top=sampled.top_foreign, own_cpu=sampled.own_cpu_mean, files=times.file_count,
                     expected_files=expected, steps_ms_per_po=over.steps_ms_per_po, file_overhead_ms=over.file_ms,
                     attempt_overhead_ms=over.po_ms_median)


def measure_worker_start(ctx: Context, repeats: int) -> WorkerStart:
    """What one parallel worker pays before its first PO: clone the profile, start its browser."""

    clone_s, browser_s = [], []
    job = JobConfig(site="demo", base_url=ctx.portal.base_url, out_dir=str(ctx.work / "out" / "start"))
    for i in range(repeats):
        manager = ProfileManager(ctx.profile, f"bench-start-{os.getpid()}-{i}", work_root=ctx.work / "profiles")
        try:
            t0 = time.perf_counter()
            clone = manager.clone("w1")
            clone_s.append(time.perf_counter() - t0)
            spec = BrowserSpec(browser="chromium", headless=True, user_data_dir=str(clone), local_only=True,
                               download_dir=str(incoming_dir(job, "w1")))
            session = LocalBrowserSession(spec)  # not `with`: entering it would start the browser before t0
            try:
                t0 = time.perf_counter()
                session.start()
                browser_s.append(time.perf_counter() - t0)
            finally:
                session.close()
        finally:
            manager.cleanup()
    shutil.rmtree(ctx.work / "out" / "start", ignore_errors=True)
    return WorkerStart(clone_s, browser_s)


def measure_browser_floor(ctx: Context, repeats: int) -> dict:
    """The same POs served without latency, fetched by the lean loop: what Chromium itself needs."""

    s = ctx.settings
    zero = generate_scenario(count=s.count, seed=s.seed, attachments_per_po=s.attachments_per_po, page_ms=0,
                             attachment_ms=0)
    runs = []
    try:
        with DemoPortal(zero).start() as portal:
            profile = prepare_demo_profile(ctx.work / "floor-profile", portal.base_url)
            for i in range(repeats):
                times = run_lean_loop(portal.base_url, ctx.po_ids, profile, ctx.work / "out" / f"floor-{i}",
                                      warm_up=True)
                runs.append(dataclasses.asdict(loop_overhead(times, zero)))
    finally:
        shutil.rmtree(ctx.work / "floor-profile", ignore_errors=True)
        shutil.rmtree(ctx.work / "out", ignore_errors=True)
    steps = {k: statistics.median(r["steps_ms_per_po"][k] for r in runs) for k in runs[0]["steps_ms_per_po"]}
    return {"steps_ms_per_po": steps,
            **{k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "steps_ms_per_po"}}


def measure_big_clone(ctx: Context) -> CloneMeasurement:
    s = ctx.settings
    big = ctx.work / "big-profile"
    layout = make_cache_heavy_profile(big, s.clone_bytes, seed_profile=ctx.profile)
    try:
        return measure_clone(layout, ctx.work / "clones", s.clone_repeats)
    finally:
        shutil.rmtree(big, ignore_errors=True)
        shutil.rmtree(ctx.work / "clones", ignore_errors=True)


# -- the whole benchmark ----------------------------------------------------------------------------
def benchmark(settings: Settings, work: Path, quiet: QuietCheck) -> dict:

    scenario = generate_scenario(count=settings.count, seed=settings.seed,
                                 attachments_per_po=settings.attachments_per_po, page_ms=settings.page_ms,
                                 attachment_ms=settings.attachment_ms)
    orders = work / "orders.csv"
    orders.write_text("PO_NUMBER\n" + "".join(f"{po.id}\n" for po in scenario.pos), encoding="utf-8")
    results: dict[str, list[RunResult]] = {c: [] for c in settings.configs}
    with DemoPortal(scenario).start() as portal:
        profile = prepare_demo_profile(work / "profile", portal.base_url)
        ctx = Context(settings, work, scenario, portal, profile, orders)
        log.info("worker start: %d repeat(s)", settings.runs)
        start = measure_worker_start(ctx, settings.runs)
        for rnd in range(settings.runs):
            for config in settings.configs:
                log.info("round %d/%d: %s", rnd + 1, settings.runs, config)
                run = {"naive": run_naive_once, "lean": run_lean_once}.get(config)
                res = run(ctx, rnd) if run else run_pobatch(ctx, config, rnd)
                log.info("  %s: %.1f s, %d worker(s)%s", config, res.wall, res.workers,
                         "" if res.correct else f", WRONG: {'; '.join(res.problems[:3])}")
                results[config].append(res)
    floor = clone = None
    if settings.extras:
        log.info("browser floor: %d repeat(s)", settings.runs)
        floor = measure_browser_floor(ctx, settings.runs)
        log.info("clone of a %.0f MiB cache-heavy profile: %d repeat(s)", settings.clone_bytes / 2**20,
                 settings.clone_repeats)
        clone = measure_big_clone(ctx)
    entries = scenario.all_entries()
    return {
        "settings": dataclasses.asdict(settings),
        "machine": machine_info().as_dict(),
        "quiet": dataclasses.asdict(quiet),
        "scenario": {
            "pos": len(scenario.pos), "files": len(entries),
            "popups": sum(e.spec.kind == "popup" for e in entries),
            "kinds": sorted({e.spec.kind for e in entries}),
            "portal_seconds": sum(portal_seconds(scenario, p.id) for p in scenario.pos),
            "overlap_seconds": sum(overlap_seconds(scenario, p.id) for p in scenario.pos),
            "pipelined_seconds": pipelined_seconds(scenario),
        },
        "auto_workers": list(auto_workers(len(scenario.pos))),
        "worker_start": {"clone_seconds": start.clone_seconds, "browser_seconds": start.browser_seconds,
                         "median_total": start.total},
        "browser_floor": floor,
        "clone": None if clone is None else {
            "total_bytes": clone.layout.total_bytes, "cache_bytes": clone.layout.cache_bytes,
            "kept_bytes": clone.layout.kept_bytes, "files": clone.layout.files,
            "clone_seconds": clone.clone_seconds, "clone_median": clone.clone_median,
            "bytes_copied": clone.bytes_copied, "files_copied": clone.files_copied,
            "full_copy_seconds": clone.full_copy_seconds, "full_copy_median": clone.full_copy_median,
        },
        "runs": {c: [dataclasses.asdict(r) for r in rs] for c, rs in results.items()},
    }


def _settings(args: argparse.Namespace) -> Settings:
    s = QUICK if args.quick else SCENARIOS[args.scenario]
    changes = {}
    for name in ("runs", "count", "seed", "naive_sleep"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    if args.only:
        wanted = tuple(c.strip() for c in args.only.split(",") if c.strip())
        unknown = [c for c in wanted if c not in ALL_CONFIGS]
        if unknown:
            raise SystemExit(f"--only: unknown configuration(s) {unknown}; expected some of {list(ALL_CONFIGS)}")
        changes["configs"] = wanted
    if args.clone_mib is not None:
        changes["clone_bytes"] = args.clone_mib * 1024**2
    return dataclasses.replace(s, **changes)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SECTIONS:  # another section's benchmark, with its own options
        return importlib.import_module(SECTIONS[argv[0]]).main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="sections of their own, each with its own options:\n  python -m benchmarks.run "
                                + "{" + ",".join(SECTIONS) + "} ...  (e.g. long-soak --help)")
    p.add_argument("--quick", action="store_true", help="a tiny version for CI (seconds, numbers meaningless)")
    p.add_argument("--out", type=Path, help="Markdown file whose generated section is (re)written "
                   "(default: BENCHMARKS.md for a full run, none for --quick)")
    p.add_argument("--json", type=Path, help="also write every measurement as JSON here")
    p.add_argument("--work-dir", type=Path, help="scratch folder (default: a new temporary folder, removed after)")
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="benchmark",
                   help="benchmark: 40 POs of 2-3 files at 150 ms; slow-files: 20 POs of 4 files at 1 s; "
                   "pages-ahead: the benchmark scenario, pages ahead against none and single-session at 4 "
                   "(each has its own section in BENCHMARKS.md)")
    p.add_argument("--runs", type=int, help="runs per configuration (median reported); full default 3")
    p.add_argument("--count", type=int, help="POs in the generated scenario; full default 40")
    p.add_argument("--seed", type=int, help="scenario seed")
    p.add_argument("--naive-sleep", type=float, help="the naive script's sleep per file, seconds")
    p.add_argument("--clone-mib", type=int, help="size of the cache-heavy profile to clone, MiB")
    p.add_argument("--only", help="comma-separated configurations to run, e.g. sequential,parallel-2")
    p.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    p.add_argument("--max-wait", type=float, default=2400.0, help="seconds to wait for a quiet machine")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("selenium", "urllib3", "pobatch"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose and noisy != "urllib3" else logging.WARNING)
    settings = _settings(args)
    if settings.runs < 1 or settings.count < 1:
        raise SystemExit("--runs and --count must be at least 1")
    out = args.out if args.out else (None if settings.quick else REPO / "BENCHMARKS.md")

    quiet = current_load() if settings.quick or args.no_wait else wait_for_quiet(args.max_wait)
    own_work = args.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="pobatch-bench-")) if own_work else args.work_dir.resolve()
    if " " in str(work):
        raise SystemExit(f"--work-dir: {work} holds a space; the memory sampler reads browser command lines "
                         "split on spaces, so pick a folder without one")
    work.mkdir(parents=True, exist_ok=True)
    try:
        data = benchmark(settings, work, quiet)
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
        else:
            for sub in ("out", "profiles", "profile", "floor-profile", "clones", "big-profile", "orders.csv"):
                target = work / sub
                if target.is_dir():
                    shutil.rmtree(target, ignore_errors=True)
                elif target.exists():
                    target.unlink()
    markdown = render_markdown(data)
    print(markdown)
    if out:
        write_between_markers(out, markdown, settings.name)
        log.info("wrote the results into %s", out)
    if args.json:
        args.json.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    wrong = [f"{c} round {r['round'] + 1}: {'; '.join(r['problems'][:3])}"
             for c, rs in data["runs"].items() if c not in BASELINES for r in rs if not r["correct"]]
    if wrong:
        log.error("pobatch got wrong results in %d run(s):\n  %s", len(wrong), "\n  ".join(wrong))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
