"""Sequential mode end to end: real demo portal, real headless Chromium, real files on disk."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import openpyxl
import pytest

from pobatch.core.app import MainApp, RunOptions
from pobatch.core.exit_codes import EXIT_INCOMPLETE, EXIT_LOGIN, EXIT_OK
from pobatch.core.demo_portal import DemoPortal, sample_orders_path
from pobatch.core.commands.login import prepare_demo_profile
from pobatch.core.status import FINAL_STATUSES, Status

pytestmark = pytest.mark.usefixtures("browser_available")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_app(portal: DemoPortal, orders: Path, out: Path, profile: Path, **kw):
    opts = RunOptions(orders=orders, out=out, site="demo", base_url=portal.base_url, browser="chromium",
                      profile=profile, local_only=True, backoff_base=0.1, stall_timeout=5,
                      profiles_root=out.parent / "clones", **kw)
    return MainApp(opts).run()


def write_scenario(path: Path, pos: list[dict], latency: dict | None = None) -> Path:
    path.write_text(json.dumps({"name": "t", "seed": 3, "stall_seconds": 20,
                                "latency": latency or {"page_ms": 20, "attachment_ms": 10}, "pos": pos}))
    return path


@pytest.fixture(scope="module")
def sample_portal():
    with DemoPortal() as portal:
        yield portal


@pytest.fixture(scope="module")
def sample_profile(sample_portal, tmp_path_factory):
    return prepare_demo_profile(tmp_path_factory.mktemp("profile") / "p", sample_portal.base_url)


@pytest.fixture(scope="module")
def sample_run(sample_portal, sample_profile, tmp_path_factory):
    base = tmp_path_factory.mktemp("run")
    orders = base / "orders.csv"
    orders.write_bytes(sample_orders_path().read_bytes())
    before = orders.read_bytes()
    summary = run_app(sample_portal, orders, base / "out", sample_profile)
    return summary, orders, before


def test_every_po_gets_the_status_the_scenario_says_is_true(sample_portal, sample_run):
    summary, _, _ = sample_run
    expected = sample_portal.expected_outcomes()
    got = {po: (o.status.value, o.reason) for po, o in summary.outcomes.items()}
    assert got == {po: tuple(v) for po, v in expected.items()}
    # one PO fails for good in the sample (a permanent HTTP 500): exit code 1, not 0
    assert summary.exit_code == EXIT_INCOMPLETE


def test_every_downloaded_file_equals_the_portals_bytes(sample_portal, sample_run):
    summary, _, _ = sample_run
    for po, outcome in summary.outcomes.items():
        folder = Path(outcome.download_folder)
        if outcome.status in (Status.COMPLETED, Status.PARTIAL):
            on_disk = Counter(sha(p.read_bytes()) for p in folder.iterdir())
            assert on_disk == Counter(sha(b) for b in sample_portal.expected_files(po).values()), po
            assert {f.sha256 for f in outcome.files} == set(on_disk)
        # no file ever leaves its PO folder; Windows-safe names only
        for p in folder.rglob("*"):
            assert p.parent == folder
            assert not any(c in p.name for c in '<>:"/\\|?*')
            assert p.name.split(".")[0].upper() not in {"CON", "PRN", "AUX", "NUL"}


def test_folders_are_supplier_then_po_and_status(sample_run):
    summary, _, _ = sample_run
    out = summary.out_dir
    o = summary.outcomes["100002"]
    assert Path(o.download_folder) == out / "Müller & Söhne_ GmbH" / "100002_COMPLETED"
    assert Path(summary.outcomes["100007"].download_folder).name == "100007_PO_NOT_FOUND"
    assert Path(summary.outcomes["100006"].download_folder).name == "100006_NO_ATTACHMENTS"
    # nothing half-done left in the work folder
    assert not list((out / ".pobatch" / "staging").glob("*-a*"))
    assert not list((out / ".pobatch" / "journal").glob("*.json"))


def test_transient_errors_are_retried_and_business_outcomes_are_not(sample_portal, sample_run):
    summary, _, _ = sample_run
    assert summary.outcomes["100008"].attempts == 2  # one HTTP 500, then fine
    assert summary.outcomes["100010"].attempts == 3  # permanent 500: bounded
    assert summary.outcomes["100007"].attempts == 1  # not found is an answer
    assert sample_portal.page_hits("100007") == 1


def test_run_store_and_results_workbook(sample_run):
    summary, orders, before = sample_run
    assert orders.read_bytes() == before  # the input file is never modified
    db = sqlite3.connect(summary.out_dir / ".pobatch" / "runs.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = dict(db.execute("SELECT key, status FROM tasks").fetchall())
    assert rows["100001"] == "COMPLETED" and rows["100010"] == "FAILED"
    n_files, = db.execute("SELECT COUNT(*) FROM files WHERE key='100001'").fetchone()
    assert n_files == 3
    db.close()
    wb = openpyxl.load_workbook(summary.results_path)
    ws = wb["Results"]
    header = [c.value for c in ws[1]]
    for col in ("STATUS", "SUPPLIER", "ATTACHMENTS_FOUND", "ATTACHMENTS_DOWNLOADED", "ATTACHMENT_NAMES",
                "DOWNLOAD_FOLDER", "PO_URL", "ERROR_MESSAGE", "LAST_PROCESSED"):
        assert col in header
    statuses = [r[header.index("STATUS")] for r in ws.iter_rows(min_row=2, values_only=True)]
    assert statuses.count("COMPLETED") >= 8
    assert "Summary" in wb.sheetnames


def test_rerun_skips_completed_pos_and_downloads_nothing_twice(sample_portal, sample_profile, sample_run):
    summary, orders, _ = sample_run
    counts_before = sample_portal.download_counts()
    again = run_app(sample_portal, orders, summary.out_dir, sample_profile)
    # every final answer is kept: the completed POs and the not-found/no-attachment answers
    assert again.skipped == sum(o.status in FINAL_STATUSES for o in summary.outcomes.values()) > 8
    assert sample_portal.download_counts() == counts_before
    assert {po: o.status for po, o in again.outcomes.items()} == {po: o.status for po, o in summary.outcomes.items()}


def test_login_required_stops_the_run_with_one_message(sample_portal, tmp_path):
    # a profile that never signed in: the first PO meets the login page
    from pobatch.core.preparation.profiles import seed_profile

    profile = seed_profile(tmp_path / "fresh")
    orders = tmp_path / "o.csv"
    orders.write_text("PO_NUMBER\n100001\n100002\n100003\n")
    summary = run_app(sample_portal, orders, tmp_path / "out", profile)
    assert summary.exit_code == EXIT_LOGIN
    assert "sign in" in summary.message.lower()
    statuses = Counter(o.status for o in summary.outcomes.values())
    assert statuses[Status.LOGIN_REQUIRED] == 0 and statuses[Status.FAILED] == 0
    assert summary.counts["PENDING"] == 3  # all wait for the next run


def test_partial_and_requisition_outcomes(tmp_path):
    scenario = write_scenario(tmp_path / "s.json", [
        {"id": "300001", "supplier": "ACME", "attachments": [
            {"name": "a.pdf", "kind": "link", "size": 4000},
            {"name": "b.pdf", "kind": "link", "size": 4000, "faults": ["http500"]}]},
        {"id": "300002", "supplier": "ACME", "attachments": [
            {"name": "c.pdf", "kind": "popup", "size": 4000, "faults": ["http500", "ok"]}]},
    ])
    orders = tmp_path / "o.csv"
    orders.write_text("PO\n300001\n300002\n")
    with DemoPortal(scenario) as portal:
        profile = prepare_demo_profile(tmp_path / "p", portal.base_url)
        summary = run_app(portal, orders, tmp_path / "out", profile)
        assert {po: (o.status.value, o.reason) for po, o in summary.outcomes.items()} == \
            {po: tuple(v) for po, v in portal.expected_outcomes().items()}
        partial = summary.outcomes["300001"]
        assert partial.attachments_found == 2 and partial.attachments_downloaded == 1
        assert Path(partial.download_folder).name == "300001_PARTIAL"
        assert summary.exit_code == EXIT_INCOMPLETE


def _completed(store: Path) -> set[str]:
    if not store.exists():
        return set()
    try:
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1)
        try:
            return {k for (k,) in db.execute("SELECT key FROM tasks WHERE status='COMPLETED'")}
        finally:
            db.close()
    except sqlite3.Error:
        return set()


def test_sigkill_half_way_then_rerun_loses_nothing_and_downloads_nothing_twice(tmp_path):
    pos = [{"id": str(400000 + i), "supplier": f"Supplier {i % 3}",
            "attachments": [{"name": f"doc{i}.pdf", "kind": "link", "size": 30000},
                            {"name": f"att{i}.docx", "kind": "js", "size": 20000}]} for i in range(1, 13)]
    scenario = write_scenario(tmp_path / "s.json", pos, latency={"page_ms": 250, "attachment_ms": 150})
    orders = tmp_path / "orders.csv"
    orders.write_text("PO_NUMBER\n" + "\n".join(p["id"] for p in pos) + "\n")
    out = tmp_path / "out"
    clones = tmp_path / "clones"
    with DemoPortal(scenario) as portal:
        profile = prepare_demo_profile(tmp_path / "p", portal.base_url)
        cmd = [sys.executable, "-m", "pobatch.core", "run", str(orders), "--site", "demo", "--base-url", portal.base_url,
               "--browser", "chromium", "--profile", str(profile), "--out", str(out)]
        env = dict(os.environ, POBATCH_PROFILES_ROOT=str(clones))
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        store = out / ".pobatch" / "runs.sqlite"
        deadline = time.monotonic() + 120
        while len(_completed(store)) < 4:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the run never got half-way"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stderr.close()
        done_before = _completed(store)
        counts_before = portal.download_counts()

        rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == EXIT_OK, rerun.stderr[-3000:]
        assert _completed(store) == {p["id"] for p in pos}
        counts_after = portal.download_counts()
        for po in done_before:  # finished before the kill: never fetched again
            for name in (f"doc{int(po) - 400000}.pdf", f"att{int(po) - 400000}.docx"):
                assert counts_after[f"{po}/{name}"] == counts_before[f"{po}/{name}"] == 1
        for p in pos:  # every PO's files on disk, exactly its bytes
            folder = out / p["supplier"] / f"{p['id']}_COMPLETED"
            assert Counter(sha(x.read_bytes()) for x in folder.iterdir()) == \
                Counter(sha(b) for b in portal.expected_files(p["id"]).values())
        # the killed run's browser and clone were swept by the rerun
        assert not list(clones.glob("run-*"))


def test_bad_input_gets_one_clear_message_and_exit_code_2(tmp_path):
    out = tmp_path / "out"
    missing = subprocess.run([sys.executable, "-m", "pobatch.core", "run", str(tmp_path / "nope.csv"), "--site", "demo",
                              "--base-url", "http://127.0.0.1:9", "--out", str(out)],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2
    assert "nope.csv" in missing.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("Vendor;Amount\nACME;12\n", encoding="utf-8")
    nocol = subprocess.run([sys.executable, "-m", "pobatch.core", "run", str(bad), "--site", "demo",
                            "--base-url", "http://127.0.0.1:9", "--out", str(out)],
                           capture_output=True, text=True, timeout=60)
    assert nocol.returncode == 2
    assert "bad.csv" in nocol.stderr and "PO" in nocol.stderr
    assert len(nocol.stderr.strip().splitlines()) <= 3
    assert not out.exists()  # nothing written
    noturl = subprocess.run([sys.executable, "-m", "pobatch.core", "run", str(bad), "--base-url", "yourcompany"],
                            capture_output=True, text=True, timeout=60)
    assert noturl.returncode == 2
