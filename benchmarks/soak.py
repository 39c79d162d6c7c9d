"""The unattended soak (issue 21): `python -m benchmarks.soak [--pos 2000] [--modes sequential,parallel-4] [--out BENCHMARKS.md]`.

A generated scenario of at least 2,000 POs that mixes what an overnight run meets (benchmarks/
soak_scenario.py): POs with 50 files, a single-sign-on refresh every 100 PO pages, 5% of pages with a
sub-resource that never loads, 2% of files cut off mid-way, 1% of pages answering 429. Each mode runs
it and the same POs without the faults, the two interleaved, and the soak must show: every PO its
scenario's truth (status and bytes), exit 0, no stop for a sign-in, and the wall time within 1.2x of
the run without the faults. The figures go between the `soak` markers of BENCHMARKS.md.

Not in CI (it takes about an hour on the reference machine); `--quick` is a tiny version that
tests/test_benchmarks_quick.py runs to keep it working (its numbers mean nothing).
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.machine import machine_info, wait_for_quiet
from benchmarks.report import markers, write_between_markers
from benchmarks.soak_scenario import soak_scenario
from pobatch.core.app import MainApp, RunOptions, RunSummary
from pobatch.core.demo_portal import DemoPortal
from pobatch.core.events import PoEvent
from pobatch.core.login import prepare_demo_profile
from pobatch.corelib.store import RunStore

log = logging.getLogger("benchmarks.soak")

MODES: dict[str, dict[str, Any]] = {
    "sequential": {},
    "parallel-4": {"parallel": True, "workers": 4},
    "parallel-2": {"parallel": True, "workers": 2},
    "single-session-4": {"strategy": "single-session", "windows": 4},
}
TARGET_RATIO = 1.2


@dataclass
class SoakRun:
    mode: str
    faults: bool
    seconds: float
    exit_code: int
    pos: int
    right: int  # POs whose status, reason and bytes are the scenario's truth
    wrong: list[str] = field(default_factory=list)
    sso_refreshes: int = 0  # the portal's count of sessions renewed through the identity provider
    sso_events: int = 0  # refreshes the run's timeline recorded
    hang_requests: int = 0
    attempts: int = 0
    max_attempt_s: float = 0.0
    message: str = ""  # the run's own last words (a stop for a sign-in names its evidence)


def check_truth(summary: RunSummary, portal: DemoPortal) -> tuple[int, list[str]]:
    """How many POs got their truth (status, reason, every file's bytes), and which did not."""
    import hashlib
    from collections import Counter

    expected = portal.expected_outcomes()
    wrong = []
    for po, (status, reason) in expected.items():
        got = summary.outcomes.get(po)
        if got is None or (got.status.value, got.reason) != (status, reason):
            wrong.append(f"{po}: {got.status.value if got else '-'} {got.reason if got else ''} != {status} {reason}")
            continue
        if got.download_folder:
            disk = Counter(hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(got.download_folder).iterdir())
            want = Counter(hashlib.sha256(b).hexdigest() for b in portal.expected_files(po).values())
            if disk != want:
                wrong.append(f"{po}: files differ")
    return len(expected) - len(wrong), wrong


def run_once(mode: str, faults: bool, pos: int, seed: int, work: Path, sso_every: int = 100,
             keep: bool = False) -> SoakRun:
    """One soak run in a scratch folder under `work`, removed afterwards unless `keep` (to look into)."""
    scenario = soak_scenario(pos, seed, faults=faults, sso_every=sso_every)
    folder = Path(tempfile.mkdtemp(prefix=f"soak-{mode}-{'f' if faults else 'c'}-", dir=work))
    try:
        with DemoPortal(scenario).start() as portal:
            profile = prepare_demo_profile(folder / "profile", portal.base_url, timeout=60)
            orders = folder / "orders.csv"
            orders.write_text("PO_NUMBER\n" + "\n".join(p.id for p in scenario.pos) + "\n", encoding="utf-8")
            opts = RunOptions(orders=orders, out=folder / "out", site="demo", base_url=portal.base_url,
                              browser="chromium", profile=profile, local_only=True, profiles_root=folder / "profiles",
                              **MODES[mode])
            t0 = time.monotonic()
            summary = MainApp(opts).run()
            seconds = time.monotonic() - t0
            right, wrong = check_truth(summary, portal)
            with RunStore(summary.out_dir / ".pobatch" / "runs.sqlite") as store:
                timeline = store.timeline(summary.run_id)
            starts = {(e.task_key, e.attempt, e.worker_id): e.ts for e in timeline if e.action == PoEvent.ATTEMPT_START}
            spans = [e.ts - starts[(e.task_key, e.attempt, e.worker_id)] for e in timeline
                     if e.action == PoEvent.ATTEMPT_END and (e.task_key, e.attempt, e.worker_id) in starts]
            return SoakRun(mode, faults, seconds, int(summary.exit_code), len(scenario.pos), right, wrong[:20],
                           portal.sso_refreshes(), sum(e.action == PoEvent.SSO_REFRESH for e in timeline),
                           sum(portal.hang_requests().values()), len(spans), max(spans, default=0.0),
                           summary.message)
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def render(runs: list[SoakRun], info: dict[str, Any], pos: int, quick: bool) -> str:
    begin, end = markers("soak")
    lines = [begin, "## Unattended soak (issue 21)", ""]
    if quick:
        lines += ["**QUICK MODE**: a tiny soak to keep the script working; its numbers mean nothing.", ""]
    lines += [f"`python -m benchmarks.soak --pos {pos}`: {pos:,} POs generated by benchmarks/soak_scenario.py "
              "(POs with 50 files, an SSO refresh every 100 PO pages, 5% hanging sub-resources, 2% mid-file "
              "resets, 1% 429s), each mode run with and without the faults, interleaved. Machine: "
              f"{info.get('cpu_model', '?')}, {info.get('logical_cpus', '?')} CPUs, {info.get('ram_gib', '?')} GiB, "
              f"{info.get('os', '?')}, Chromium {info.get('chromium', '?')}, {info.get('date', '')}.", "",
              "| mode | faults | wall s (median) | ratio to no faults | exit | POs right | SSO refreshes (portal / timeline) "
              "| hanging requests | attempts | longest attempt s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for mode in dict.fromkeys(r.mode for r in runs):
        clean = [r.seconds for r in runs if r.mode == mode and not r.faults]
        for faults in (False, True):
            group = [r for r in runs if r.mode == mode and r.faults == faults]
            if not group:
                continue
            med = statistics.median(r.seconds for r in group)
            ratio = f"{med / statistics.median(clean):.2f}x" if faults and clean else ""
            last = group[-1]
            lines.append(f"| {mode} | {'yes' if faults else 'no'} | {med:.1f} | {ratio} | "
                         f"{', '.join(str(r.exit_code) for r in group)} | {last.right:,} of {last.pos:,} | "
                         f"{last.sso_refreshes} / {last.sso_events} | {last.hang_requests} | {last.attempts:,} | "
                         f"{last.max_attempt_s:.1f} |")
    wrong = [w for r in runs for w in r.wrong]
    lines += ["", "Every PO got its truth." if not wrong else "Wrong: " + "; ".join(wrong[:10]),
              "Refreshes made only of HTTP redirects pass within one page load and are not in the timeline "
              "(README, 'Single sign-on'); the soak's refreshes are auto-submitting forms.", end]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--pos", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--modes", default="sequential,parallel-4",
                        help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--runs", type=int, default=1, help="rounds of (faults, no faults) per mode")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--json", type=Path, help="also write every run as JSON here")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--quick", action="store_true", help="30 POs, sequential only: keeps the script working")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)
    modes = ["sequential"] if args.quick else [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"--modes: unknown {', '.join(unknown)}; expected some of {', '.join(MODES)}")
    pos = 30 if args.quick else args.pos
    if not args.quick:
        wait_for_quiet(120)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    runs: list[SoakRun] = []
    for _ in range(max(1, args.runs)):
        for mode in modes:
            for faults in (True, False):  # interleaved: a slow stretch of the machine hits both alike
                # a quick soak meets a refresh too: every 10 PO pages instead of 100
                run = run_once(mode, faults, pos, args.seed, args.work_dir, sso_every=10 if args.quick else 100)
                log.info("%s faults=%s: %.1fs exit %d, %d of %d right", mode, faults, run.seconds, run.exit_code,
                         run.right, run.pos)
                runs.append(run)
    info = machine_info().as_dict()
    write_between_markers(args.out, render(runs, info, pos, args.quick), name="soak")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=1), encoding="utf-8")
    ok = all(r.exit_code == 0 and not r.wrong for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
