"""Browser flags against renderer memory: `python -m benchmarks.flags [--count N] [--rounds R]`.

One worker's browser (sequential mode's PoJob on a signed-in profile) runs the same generated POs
under each set of extra Chromium flags, the sets interleaved round by round; for each it reports the
peak PSS and USS of the browser's processes (benchmarks.memory), how many processes it ran, the wall
time, and whether every file arrived with the portal's bytes. A flag that saves memory but costs
correctness or much time is no gain. Numbers from a busy machine are only a shape.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.machine import current_load
from benchmarks.memory import MB, MemorySampler
from pobatch.core.demo_portal import DemoPortal, generate_scenario
from pobatch.core.commands.login import prepare_demo_profile
from pobatch.core.workflow.job_config import JobConfig
from pobatch.core.workflow.po_job import PoJob
from pobatch.core.workflow.po_task import PoTaskPayload
from pobatch.corelib.browser.factory import BrowserSpec
from pobatch.corelib.browser.local_session import LocalBrowserSession

log = logging.getLogger("benchmarks.flags")

FLAG_SETS: dict[str, tuple[str, ...]] = {
    "default": (),
    "renderer-limit-1": ("--renderer-process-limit=1",),
    "no-site-isolation": ("--disable-site-isolation-trials", "--disable-features=IsolateOrigins,site-per-process"),
    "limit-1+no-isolation": ("--renderer-process-limit=1", "--disable-site-isolation-trials",
                             "--disable-features=IsolateOrigins,site-per-process"),
    "small-js-heap": ("--js-flags=--max-old-space-size=128",),
    "no-extensions+spare": ("--disable-extensions", "--disable-features=SpareRendererForSitePerProcess"),
    "in-process-gpu": ("--in-process-gpu", "--disable-software-rasterizer"),
    "low-end-device": ("--enable-low-end-device-mode",),
}
# Chromium keeps only the last --disable-features; pobatch.corelib.browser.factory merges a set's own with BASE_ARGS'
# (merge_list_switches), so a set adds to Translate, MediaRouter, OptimizationHints, BackForwardCache.


def run_one(portal, scenario, profile: Path, work: Path, flags: tuple[str, ...]) -> dict:

    out = work / "out"
    spec = BrowserSpec(user_data_dir=str(profile), download_dir=str(out / "dl"), local_only=True, extra_args=flags)
    config = JobConfig(site="demo", base_url=portal.base_url, out_dir=str(out))
    sampler = MemorySampler([profile.parent], interval=0.5).start()
    wrong = 0
    t0 = time.perf_counter()
    try:
        with LocalBrowserSession(spec) as session:
            job = PoJob(session, config)
            for po in scenario.pos:
                outcome = job.process(PoTaskPayload(po.id))
                want = sorted(hashlib.sha256(b).hexdigest() for b in scenario.expected_files(po.id).values())
                if sorted(f.sha256 for f in outcome.files) != want:
                    wrong += 1
    finally:
        wall = time.perf_counter() - t0
        report = sampler.stop()
        shutil.rmtree(out, ignore_errors=True)
    tree = max(report.trees, key=lambda t: t.browser_pss) if report.trees else None
    return {"wall": wall, "wrong": wrong, "pss": tree.browser_pss / MB if tree else 0.0,
            "uss": tree.browser_uss / MB if tree else 0.0, "processes": tree.browser_processes if tree else 0}


def main(argv: list[str] | None = None) -> int:

    p = argparse.ArgumentParser(prog="python -m benchmarks.flags", description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=12, help="POs per run")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--only", help="comma-separated flag sets: " + ", ".join(FLAG_SETS))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("selenium", "urllib3", "pobatch"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    sets = [s.strip() for s in args.only.split(",")] if args.only else list(FLAG_SETS)
    scenario = generate_scenario(count=args.count, seed=5, page_ms=100, attachment_ms=100)
    load = current_load()
    work = Path(tempfile.mkdtemp(prefix="pobatch-flags-"))
    results: dict[str, list[dict]] = {s: [] for s in sets}
    try:
        with DemoPortal(scenario).start() as portal:
            profile = prepare_demo_profile(work / "profile" / "p", portal.base_url)
            for rnd in range(args.rounds):
                for name in sets:
                    res = run_one(portal, scenario, profile, work, FLAG_SETS[name])
                    log.info("round %d %s: %.1f s, PSS %.0f MB, USS %.0f MB, %d processes, %d wrong", rnd + 1, name,
                             res["wall"], res["pss"], res["uss"], res["processes"], res["wrong"])
                    results[name].append(res)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nLoad at start: 1-minute load {load.load1:.2f}, CPU {load.cpu_percent:.0f} %; {args.count} POs, "
          f"{len(scenario.all_entries())} files; medians of {args.rounds} interleaved round(s).\n")
    print("| Flags | Peak browser PSS MB | Peak browser USS MB | Processes | Wall s | Wrong POs |")
    print("|---|---|---|---|---|---|")
    for name in sets:
        rs = results[name]
        med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
        print(f"| {name} (`{' '.join(FLAG_SETS[name]) or '–'}`) | {med('pss'):.0f} | {med('uss'):.0f} | "
              f"{med('processes'):.0f} | {med('wall'):.1f} | {sum(r['wrong'] for r in rs)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
