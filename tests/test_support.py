"""`pobatch support` (issue 25): one zip with the run's log, report, store export, failure artifacts, check
snapshots, the doctor's output and the options; never cookies, Authorization headers, the profile or
the downloaded files, and the workbook only with --with-results.

A real demo run (sequential, one headless Chromium) with a PO that always fails gives real artifacts;
the session cookie's values are the demo portal's own live tokens.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pobatch.core.app import MainApp, RunOptions
from pobatch.core.demo_portal import DemoPortal
from pobatch.core.commands.login import prepare_demo_profile
from pobatch.core.sites.demo import DEMO_PASSWORD

PDF = [{"name": "Invoice 1.pdf", "kind": "link", "size": 6000}, {"name": "Scan.docx", "kind": "js", "size": 9000}]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, browser_available_module):
    tmp = tmp_path_factory.mktemp("support")
    scenario = tmp / "s.json"
    scenario.write_text(json.dumps({"name": "support", "seed": 9, "latency": {"page_ms": 20, "attachment_ms": 10},
                                    "pos": [{"id": "1", "supplier": "Good Ltd", "attachments": PDF},
                                            {"id": "2", "supplier": "Broken Ltd", "attachments": PDF,
                                             "faults": {"page": ["http500"]}}]}), encoding="utf-8")
    orders = tmp / "orders.csv"
    orders.write_text("PO_NUMBER\n1\n2\n", encoding="utf-8")
    with DemoPortal(scenario) as portal:
        profile = prepare_demo_profile(tmp / "profile", portal.base_url)
        opts = RunOptions(orders=orders, out=tmp / "out", site="demo", base_url=portal.base_url, profile=profile,
                          local_only=True, max_attempts=2, backoff_base=0.05, profiles_root=tmp / "clones")
        summary = MainApp(opts).run()
        tokens = list(portal._sessions)  # the live session cookie values (test-only look inside)
        files = {po: portal.expected_files(po) for po in ("1", "2")}
    out = tmp / "out"
    # A `pobatch check` snapshot left in the output folder, with secrets a page might have carried.
    (out / "pobatch-check-20260101-120000.json").write_text(json.dumps({
        "base_url": "http://127.0.0.1", "headers": {"Cookie": f"_coupa_session={tokens[0]}",
                                                    "Authorization": "Bearer abcdefghijklmnopqrstuvwxyz"},
        "url": "http://127.0.0.1/order_headers/2?auth_token=TOPSECRET42&po=2"}), encoding="utf-8")
    return summary, out, tokens, files


def support(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pobatch.core", "support", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


@pytest.mark.timeout(240)
def test_the_support_zip_holds_the_parts_and_no_secret_and_no_downloaded_file(finished_run):
    summary, out, tokens, files = finished_run
    assert {po: o.status.value for po, o in summary.outcomes.items()} == {"1": "COMPLETED", "2": "FAILED"}
    res = support(out)
    assert res.returncode == 0, res.stderr
    zip_path = out / f"pobatch-support-{summary.run_id}.zip"
    members = _members(zip_path)
    names = set(members)
    assert {f"log/{summary.run_id}.log", "report.html", "store/events.csv", "store/attempts.csv", "store/run.json",
            "store/pos.json", "checks/pobatch-check-20260101-120000.json", "doctor.txt", "options.json",
            "README.txt"} <= names
    artifacts = sorted(n for n in names if n.startswith("artifacts/"))
    assert {"artifacts/2-a1/screenshot.png", "artifacts/2-a1/page.html", "artifacts/2-a2/error.txt"} <= set(artifacts)
    assert not any(n.startswith("artifacts/1-") for n in names)  # a PO with its answer needs no help
    assert not any(n.startswith("results/") for n in names)  # the workbook only when asked
    # What the store says, as CSV a helper opens in Excel.
    events = members["store/events.csv"].decode()
    assert events.splitlines()[0].startswith("ts,time,worker_id") and "attempt_end" in events
    assert "HTTP_500" in members["store/attempts.csv"].decode()
    options = json.loads(members["options.json"])
    assert options["run"]["mode"] == "sequential" and options["options"]["max_attempts"] == "2"
    doctor = members["doctor.txt"].decode()
    assert doctor.startswith("ok    python") and "skip  signed in" in doctor
    # Nothing secret, nothing downloaded, no profile.
    everything = b"\n".join(members.values())
    for token in tokens:
        assert token.encode() not in everything
    assert b"TOPSECRET42" not in everything and b"abcdefghijklmnopqrstuvwxyz" not in everything
    assert b"[REDACTED]" in members["checks/pobatch-check-20260101-120000.json"]
    assert f'value="{DEMO_PASSWORD}"'.encode() not in everything and b"user[password]=" not in everything
    for po_files in files.values():
        for content in po_files.values():
            middle = content[len(content) // 2: len(content) // 2 + 64]
            assert middle not in everything
    assert not any(n.lower().endswith((".pdf", ".docx", ".sqlite", "cookies")) for n in names)
    assert not any("profile" in n.lower() for n in names)
    # It says what is inside and how big it is.
    said = res.stdout
    assert f"Support bundle: {zip_path}" in said and "run log: 1 file(s)" in said and "failure artifacts:" in said
    assert "never inside: cookies" in said and "--with-results" in said


@pytest.mark.timeout(120)
def test_with_results_adds_the_workbook(finished_run):
    summary, out, _tokens, _files = finished_run
    res = support(out, "--run", summary.run_id[:15], "--with-results")
    assert res.returncode == 0, res.stderr
    names = set(_members(out / f"pobatch-support-{summary.run_id}.zip"))
    assert "results/orders_results.xlsx" in names and "results workbook: 1 file(s)" in res.stdout


@pytest.mark.parametrize("case", ["no run here", "unknown run"])
def test_bad_input_gets_one_line_and_exit_2(tmp_path, finished_run, case):
    _summary, out, _tokens, _files = finished_run
    res = support(tmp_path) if case == "no run here" else support(out, "--run", "19990101-nope")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert ("no pobatch run in" if case == "no run here" else "run '19990101-nope' is not in") in res.stderr
