"""The evidence for graduating the single-session strategy (EXPERIMENTAL/README.md, its graduation), reproducible here.

A benchmark, not product code: it runs whole batches through MainApp against the demo portal, so it
sits above core/ with the other benchmarks.

    python -m benchmarks.single_session_proving soak  [--runs 20] [--windows 3]
    python -m benchmarks.single_session_proving bench [--count 20] [--runs 3] [--page-ms 400] [--attachment-ms 150]

soak: seeded runs of the bundled sample scenario (every attachment kind, tricky names, transient and
permanent faults, a requisition fallback) plus POs whose attachments share names but not bytes, every
other run with a session token that rotates on every response. Each run is checked against the
scenario's truth: every status, and per PO folder exactly the expected bytes; a file holding another
PO's bytes is counted as misattributed, a missing one as lost.

bench: a generated fixed-latency scenario on a rotating-token portal (the portal this strategy is
for), sequential mode against single-session with 1, 2, 3 and 4 windows, rounds interleaved, medians.
It first waits (up to --quiet-wait seconds) for a 1-minute load below 1.0 and reports the load.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pobatch.core.app import MainApp
from pobatch.core.run_options import RunOptions
from pobatch.core.demo_portal import DemoPortal, sample_scenario_path
from pobatch.core.demo_portal.scenario import SessionOptions, generate_scenario
from pobatch.core.commands.login import prepare_demo_profile

log = logging.getLogger(__name__)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclasses.dataclass
class Check:
    wrong_status: list[str] = dataclasses.field(default_factory=list)
    misattributed: int = 0
    lost: int = 0
    extra: int = 0

    @property
    def ok(self) -> bool:
        return not (self.wrong_status or self.misattributed or self.lost or self.extra)


def check_run(summary: Any, portal: Any, po_ids: list[str]) -> Check:
    """Statuses against the scenario; per PO folder, the bytes against that PO's expected files."""
    expected = portal.expected_outcomes()
    wanted = {po: Counter(_sha(b) for b in portal.expected_files(po).values()) for po in po_ids}
    owner_of = {sha: po for po, shas in wanted.items() for sha in shas}
    check = Check()
    for po in po_ids:
        outcome = summary.outcomes.get(po)
        if outcome is None or (outcome.status.value, outcome.reason) != tuple(expected[po]):
            got = f"{outcome.status.value} {outcome.reason}".strip() if outcome else "no result"
            check.wrong_status.append(f"{po}: {got}, expected {' '.join(expected[po]).strip()}")
            continue
        folder = Path(outcome.download_folder) if outcome.download_folder else None
        have = Counter(_sha(p.read_bytes()) for p in folder.iterdir()) if folder and folder.is_dir() else Counter()
        for sha, n in have.items():
            surplus = n - wanted[po].get(sha, 0)
            if surplus > 0:
                if owner_of.get(sha, po) != po:
                    check.misattributed += surplus
                else:
                    check.extra += surplus
        check.lost += sum((wanted[po] - have).values())
    return check


def _same_name_pos(first: int, count: int) -> list[dict[str, Any]]:
    kinds = ("link", "download_attr", "popup", "js", "span", "inline_pdf")
    return [{"id": str(first + i), "supplier": "Acme Office Supplies", "attachments": [
        {"name": "invoice.pdf", "kind": kinds[(i + j) % len(kinds)], "size": 20_000 + 1_000 * j} for j in range(3)]}
        for i in range(count)]


def _run_app(portal: Any, work: Path, po_ids: list[str], strategy: str | None, windows: int, tag: str) -> Any:

    # A rotating token is used up by a run (the base profile keeps the first one): sign in every time.
    profile = prepare_demo_profile(work / f"profile-{tag}", portal.base_url)
    orders = work / f"orders-{tag}.csv"
    orders.write_text("PO_NUMBER\n" + "".join(f"{p}\n" for p in po_ids), encoding="utf-8")
    opts = RunOptions(orders=orders, out=work / f"out-{tag}", site="demo", base_url=portal.base_url,
                      browser="chromium", profile=profile, local_only=True, profiles_root=work / "profiles",
                      strategy=strategy, windows=windows, po_timeout=120.0, backoff_base=0.2, stall_timeout=10.0)
    return MainApp(opts).run()


# -- soak ------------------------------------------------------------------------------------------
def soak(runs: int, windows: int, work: Path) -> dict[str, Any]:

    base = json.loads(sample_scenario_path().read_text(encoding="utf-8"))
    totals = Counter()
    failures: list[str] = []
    for seed in range(1, runs + 1):
        data = dict(base, seed=seed, pos=base["pos"] + _same_name_pos(490001, 6))
        data["session"] = {"rotate_token": seed % 2 == 0}
        path = work / f"soak-{seed}.json"
        path.write_text(json.dumps(data), encoding="utf-8")
        with DemoPortal(path) as portal:
            po_ids = [po.id for po in portal.scenario.pos]
            t0 = time.monotonic()
            summary = _run_app(portal, work, po_ids, "single-session", windows, f"soak-{seed}")
            check = check_run(summary, portal, po_ids)
        totals.update(runs=1, ok=int(check.ok), misattributed=check.misattributed, lost=check.lost,
                      extra=check.extra, wrong_status=len(check.wrong_status),
                      files=sum(len(o.files) for o in summary.outcomes.values()))
        line = (f"seed {seed} ({'rotating' if seed % 2 == 0 else 'fixed'} token): "
                f"{'ok' if check.ok else 'FAILED'} in {time.monotonic() - t0:.1f}s, exit {summary.exit_code}")
        if not check.ok:
            line += f": {check.wrong_status} misattributed={check.misattributed} lost={check.lost} extra={check.extra}"
            failures.append(line)
        print(line, flush=True)
        shutil.rmtree(work / f"out-soak-{seed}", ignore_errors=True)
        shutil.rmtree(work / f"profile-soak-{seed}", ignore_errors=True)
    return {"totals": dict(totals), "failures": failures}


# -- bench -----------------------------------------------------------------------------------------
def wait_for_quiet(max_wait: float, below: float = 1.0) -> tuple[float, float, bool]:
    """Poll the 1-minute load until it is below `below`; (load, seconds waited, quiet?)."""
    t0 = time.monotonic()
    while True:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        waited = time.monotonic() - t0
        if load < below or waited >= max_wait:
            return load, waited, load < below
        print(f"waiting for a quiet machine: load {load:.2f} after {waited:.0f}s", flush=True)
        time.sleep(30)


def bench(count: int, runs: int, page_ms: int, attachment_ms: int, windows: list[int], quiet_wait: float,
          work: Path, seed: int = 5) -> dict[str, Any]:

    scenario = generate_scenario(count, seed, page_ms=page_ms, attachment_ms=attachment_ms)
    scenario = dataclasses.replace(scenario, session=SessionOptions(None, True))
    configs = ["sequential"] + [f"windows-{n}" for n in windows]
    load_before, waited, quiet = wait_for_quiet(quiet_wait)
    times: dict[str, list[float]] = {c: [] for c in configs}
    loads: list[float] = []
    problems: list[str] = []
    with DemoPortal(scenario) as portal:
        po_ids = [po.id for po in scenario.pos]
        for rnd in range(1, runs + 1):
            for config in configs:
                portal.reset()
                strategy, n = (None, 1) if config == "sequential" else ("single-session", int(config.split("-")[1]))
                loads.append(os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0)
                t0 = time.perf_counter()
                summary = _run_app(portal, work, po_ids, strategy, n, f"{config}-{rnd}")
                wall = time.perf_counter() - t0
                check = check_run(summary, portal, po_ids)
                if not check.ok or summary.exit_code != 0:
                    problems.append(f"{config} round {rnd}: exit {summary.exit_code} {check}")
                times[config].append(wall)
                print(f"round {rnd} {config}: {wall:.1f}s {'ok' if check.ok else 'WRONG'}", flush=True)
                shutil.rmtree(work / f"out-{config}-{rnd}", ignore_errors=True)
                shutil.rmtree(work / f"profile-{config}-{rnd}", ignore_errors=True)
    medians = {c: statistics.median(v) for c, v in times.items()}
    return {"count": count, "runs": runs, "page_ms": page_ms, "attachment_ms": attachment_ms,
            "attachments": sum(len(po.attachments) for po in scenario.pos),
            "load_before": round(load_before, 2), "waited_s": round(waited), "quiet": quiet,
            "load_during_median": round(statistics.median(loads), 2), "times": times, "medians": medians,
            "speedup": {c: medians["sequential"] / m for c, m in medians.items()}, "problems": problems}


def table(result: dict[str, Any]) -> str:
    rows = ["| configuration | median wall (s) | runs (s) | speedup vs sequential |", "|---|---|---|---|"]
    for config, med in result["medians"].items():
        runs = ", ".join(f"{t:.1f}" for t in result["times"][config])
        rows.append(f"| {config} | {med:.1f} | {runs} | {result['speedup'][config]:.2f}x |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.single_session_proving")
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("soak")
    s.add_argument("--runs", type=int, default=20)
    s.add_argument("--windows", type=int, default=3)
    b = sub.add_parser("bench")
    b.add_argument("--count", type=int, default=20)
    b.add_argument("--runs", type=int, default=3)
    b.add_argument("--page-ms", type=int, default=400)
    b.add_argument("--attachment-ms", type=int, default=150)
    b.add_argument("--windows", default="1,2,3,4")
    b.add_argument("--quiet-wait", type=float, default=1200.0)
    parser.add_argument("--json", type=Path, help="Also write the result as JSON here.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    work = Path(tempfile.mkdtemp(prefix="pobatch-proving-"))
    try:
        if args.what == "soak":
            result = soak(args.runs, args.windows, work)
            print(json.dumps(result["totals"]))
            ok = not result["failures"]
        else:
            result = bench(args.count, args.runs, args.page_ms, args.attachment_ms,
                           [int(n) for n in args.windows.split(",")], args.quiet_wait, work)
            print(table(result))
            print(json.dumps({k: v for k, v in result.items() if k not in ("times",)}, indent=1))
            ok = not result["problems"]
        if args.json:
            args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
