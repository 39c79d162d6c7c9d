"""Chaos: the main process SIGKILLed at random (seeded) points of a parallel batch, again and again.

After every round of kills, one run to the end must leave every PO in its true state (the demo
scenario's truth), each PO in exactly one folder holding each of its files exactly once, a PO that
was COMPLETED before a kill never downloaded again, no process of ours alive, and no scratch folder
left (staging, journals, profile clones, driver temp folders).

CI runs a small size; `pytest -m chaos tests/test_chaos.py` runs the full size (>= 20 runs).
The kill points are the experiment (random delays from a seeded generator), not waits for an event.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from pobatch.core.demo_portal import DemoPortal
from pobatch.core.commands.login import prepare_demo_profile
from tests.eventually import wait_for
from tests.orders_files import write_orders

pytestmark = pytest.mark.usefixtures("browser_available")

SEED = 1414


# The portal a week later, for the refresh rounds: files added, one removed, an empty PO gains one.
CHAOS_REVISION = {"label": "a week later", "pos": {
    "810001": {"add": [{"name": "po1 amendment.pdf", "kind": "js", "size": 15000}]},
    "810002": {"add": [{"name": "po2.pdf", "kind": "link", "size": 11000}]},  # a second po2.pdf
    "810003": {"remove": ["extra3.docx"]},
    "810009": {"add": [{"name": "first.pdf", "kind": "link", "size": 8000}]},
}}


def chaos_scenario(path: Path) -> Path:
    pos = []
    for i in range(1, 7):
        atts = [{"name": f"po{i}.pdf", "kind": "link", "size": 20000}]
        if i % 2:
            atts.append({"name": f"extra{i}.docx", "kind": "js", "size": 12000})
        pos.append({"id": str(810000 + i), "supplier": f"Supplier {i % 3}", "attachments": atts})
    pos += [{"id": "810007", "supplier": "Gone", "missing": True},
            {"id": "810008", "supplier": "Secret", "forbidden": True},
            {"id": "810009", "supplier": "Empty"},
            {"id": "810010", "supplier": "Via requisition",
             "requisition": {"id": "9010", "attachments": [{"name": "req.pdf", "kind": "link", "size": 9000}]}}]
    path.write_text(json.dumps({"name": "chaos", "seed": SEED, "stall_seconds": 20,
                                "latency": {"page_ms": [100, 250], "attachment_ms": [50, 200]}, "pos": pos,
                                "revisions": [CHAOS_REVISION]}))
    return path


def _store_rows(store: Path, since: str = "") -> dict[str, tuple[str, str]]:
    """key -> (status, reason); with `since`, only the rows a later run than that one wrote."""
    if not store.exists():
        return {}
    try:
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=2)
        try:
            return {k: (s, r or "") for k, s, r, run in db.execute("SELECT key, status, reason, run_id FROM tasks")
                    if not since or (run or "") > since}
        finally:
            db.close()
    except sqlite3.Error:
        return {}


def _ours(marker: str) -> list[psutil.Process]:
    """Every process (workers, drivers, browsers; orphans included) started with our private TMPDIR."""
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.pid != os.getpid() and p.environ().get("TMPDIR") == marker and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _last_run(store: Path) -> str:
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=2)
    try:
        return db.execute("SELECT run_id FROM runs ORDER BY started DESC LIMIT 1").fetchone()[0]
    finally:
        db.close()


@dataclass
class ChaosFigures:
    runs: int = 0
    kills: int = 0
    pos: int = 0
    files: int = 0
    losses: int = 0
    duplicates: int = 0
    orphans: int = 0
    leftovers: int = 0
    refetched: int = 0
    problems: list[str] = field(default_factory=list)


def run_chaos(tmp_path: Path, rounds: int, max_kills: int, refresh: bool = False) -> ChaosFigures:
    """Rounds of killed runs and one run to the end. With `refresh`, each round first runs the batch
    to the end at revision 0, then the kills hit `--refresh` runs at revision 1: nothing held may be
    fetched again, and every folder must end with the files of both revisions, each once."""
    rng = random.Random(SEED + refresh)
    figures = ChaosFigures()
    scenario = chaos_scenario(tmp_path / "chaos.json")
    private_tmp = tempfile.mkdtemp(prefix="pbch-")  # short: browser socket paths; ours alone: the orphan check
    clones = tmp_path / "clones"
    try:
        with DemoPortal(scenario) as portal:
            truth = {po: tuple(v) for po, v in portal.scenario.at_revision(int(refresh)).expected_outcomes().items()}
            orders = write_orders(tmp_path, sorted(truth))
            profile = prepare_demo_profile(tmp_path / "profile", portal.base_url)
            env = dict(os.environ, TMPDIR=private_tmp, POBATCH_PROFILES_ROOT=str(clones))
            for round_no in range(rounds):
                out = tmp_path / f"out{round_no}"
                store = out / ".pobatch" / "runs.sqlite"
                cmd = [sys.executable, "-m", "pobatch.core", "run", str(orders), "--site", "demo", "--base-url",
                       portal.base_url, "--browser", "chromium", "--profile", str(profile), "--out", str(out),
                       "--parallel", "--workers", "2", "--po-timeout", "60"]
                portal.reset()
                completed_before: set[str] = set()
                counts_at_kill: dict[str, int] = {}
                held_counts: dict[str, int] = {}
                first_run = ""
                if refresh:
                    portal.revise(0)
                    subprocess.run(cmd, env=env, capture_output=True, timeout=600, check=True)
                    figures.runs += 1
                    held_counts = portal.download_counts()  # every file held before the refresh
                    first_run = _last_run(store)
                    portal.revise(1)
                    cmd = [*cmd, "--refresh"]
                for _ in range(rng.randint(1, max_kills)):
                    delay = rng.uniform(0.3, 5.0)  # a whole run takes about 4-8 s here
                    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    figures.runs += 1
                    try:
                        proc.wait(timeout=delay)
                    except subprocess.TimeoutExpired:
                        proc.send_signal(signal.SIGKILL)
                        proc.wait(timeout=30)
                        figures.kills += 1
                    done = {k for k, (s, _r) in _store_rows(store, since=first_run).items() if s == "COMPLETED"}
                    completed_before |= done
                    counts_at_kill = portal.download_counts()
                final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
                figures.runs += 1
                rows = _store_rows(store)
                figures.pos += len(truth)
                if final.returncode != 0:
                    figures.problems.append(f"round {round_no}: exit {final.returncode}: {final.stderr[-500:]}")
                for po, want in truth.items():
                    if rows.get(po) != want:
                        figures.losses += 1
                        figures.problems.append(f"round {round_no}: PO {po} is {rows.get(po)}, truly {want}")
                    folders = [p for p in out.rglob(f"{po}_*") if p.is_dir() and not p.name.startswith(".")]
                    if len(folders) != 1 or folders[0].name != f"{po}_{want[0]}":
                        figures.duplicates += max(0, len(folders) - 1)
                        figures.problems.append(f"round {round_no}: PO {po} folders {folders}")
                        continue
                    on_disk = Counter(hashlib.sha256(f.read_bytes()).hexdigest() for f in folders[0].iterdir())
                    expected = Counter(hashlib.sha256(b).hexdigest()
                                       for b in portal.expected_files(po, 0 if refresh else None).values())
                    figures.files += sum(on_disk.values())
                    if on_disk != expected:
                        figures.duplicates += max(0, sum(on_disk.values()) - sum(expected.values()))
                        figures.problems.append(f"round {round_no}: PO {po} files differ")
                counts = portal.download_counts()
                for key, n in held_counts.items():
                    if counts.get(key, 0) != n:
                        figures.refetched += 1
                        figures.problems.append(f"round {round_no}: {key} held, fetched again by a refresh")
                for key, n in counts.items():
                    if key.split("/", 1)[0] in completed_before and n != counts_at_kill.get(key, n):
                        figures.refetched += 1
                        figures.problems.append(f"round {round_no}: {key} fetched again after COMPLETED")
                try:
                    wait_for(lambda: not _ours(private_tmp), 30, "every process of the batch to exit")
                except AssertionError:
                    left = _ours(private_tmp)
                    figures.orphans += len(left)
                    figures.problems.append(f"round {round_no}: orphans {[(p.pid, p.name()) for p in left]}")
                    for p in left:
                        p.kill()
                work = out / ".pobatch"
                left_over = [p for p in (work / "staging").glob("*")] if (work / "staging").exists() else []
                left_over += list((work / "journal").glob("*")) if (work / "journal").exists() else []
                left_over += list(work.glob(".write-test-*"))
                left_over += list(clones.glob("run-*")) + list(Path(private_tmp).glob("*"))
                if left_over:
                    figures.leftovers += len(left_over)
                    figures.problems.append(f"round {round_no}: leftovers {left_over}")
    finally:
        for p in _ours(private_tmp):
            p.kill()
        shutil.rmtree(private_tmp, ignore_errors=True)
    return figures


def _assert_clean(f: ChaosFigures) -> None:
    assert (f.losses, f.duplicates, f.orphans, f.leftovers, f.refetched) == (0, 0, 0, 0, 0), "\n".join(f.problems)
    assert not f.problems, "\n".join(f.problems)


def test_chaos_kills_of_the_main_process_lose_nothing(tmp_path):
    """CI size: a few rounds (about a minute and a half here)."""
    figures = run_chaos(tmp_path, rounds=4, max_kills=3)
    print(f"chaos (CI size): {figures}")
    assert figures.kills >= 1
    _assert_clean(figures)


def test_chaos_kills_of_refresh_runs_lose_nothing_and_fetch_nothing_held(tmp_path):
    """CI size: each round runs the batch to the end, changes the portal, then kills --refresh runs."""
    figures = run_chaos(tmp_path, rounds=3, max_kills=3, refresh=True)
    print(f"refresh chaos (CI size): {figures}")
    assert figures.kills >= 1
    _assert_clean(figures)


@pytest.mark.chaos
@pytest.mark.timeout(3600)
def test_chaos_refresh_full_size(tmp_path):
    """Full size, on demand (`-m chaos`): at least 20 runs of refreshes, most of them killed."""
    figures = run_chaos(tmp_path, rounds=10, max_kills=3, refresh=True)
    print(f"refresh chaos (full size): {figures}")
    assert figures.runs >= 20 and figures.kills >= 10
    _assert_clean(figures)


@pytest.mark.chaos
@pytest.mark.timeout(3600)
def test_chaos_full_size(tmp_path):
    """Full size, on demand (`-m chaos`): at least 20 runs of the parallel batch, most of them killed."""
    figures = run_chaos(tmp_path, rounds=10, max_kills=3)
    print(f"chaos (full size): {figures}")
    assert figures.runs >= 20 and figures.kills >= 10
    _assert_clean(figures)
