"""The run log (issue 25): `<out>/.pobatch/logs/<run id>.log`, one plain line per thing that happened.

Real runs against the demo portal with real headless Chromium (one browser at a time) in the modes
that run on one PC: every PO's steps and every retry with its reason are in the log. A main process
killed with SIGKILL leaves a log readable up to the kill. Pruning keeps the limits. The console's
download progress is fed the events the workflow sends (core/events.py, DOWNLOAD_PROGRESS).
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from pobatch.core.app import MainApp, RunOptions
from pobatch.core.monitoring.console import ConsoleView
from pobatch.core.demo_portal import DemoPortal
from pobatch.core.events import PoEvent
from pobatch.core.commands.login import prepare_demo_profile
from pobatch.core.monitoring.run_log import RunLog, prune_logs
from pobatch.core.workspace import Workspace
from pobatch.corelib.browser.session import sweep_driver_temp
from pobatch.corelib.browser.profile_manager import ProfileManager
from pobatch.corelib.worker_pool.tasks import Event

LINE = re.compile(r"^(#.*|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}  \S+\s+(-|PO \S+( a\d+)?)\s+\S+\s+(-|\d+\.\d\ds)\s+\S+.*)$")


def _scenario(path: Path) -> Path:
    pdf = [{"name": "Invoice 1.pdf", "kind": "link", "size": 5000}]
    path.write_text(json.dumps({"name": "runlog", "seed": 5, "latency": {"page_ms": 20, "attachment_ms": 10},
                                "pos": [
                                    {"id": "1", "supplier": "Plain Ltd", "attachments": pdf},
                                    {"id": "2", "supplier": "Retry Ltd", "attachments": pdf,
                                     "faults": {"page": ["http500", "ok"]}},
                                    {"id": "3", "supplier": "Broken Ltd", "attachments": pdf,
                                     "faults": {"page": ["http500"]}},
                                    {"id": "4", "missing": True}]}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    with DemoPortal(_scenario(tmp_path_factory.mktemp("scenario") / "s.json")) as p:
        yield p


@pytest.fixture(scope="module")
def profile(portal, tmp_path_factory, browser_available_module):
    return prepare_demo_profile(tmp_path_factory.mktemp("profile") / "p", portal.base_url)


def _step(line: str) -> str:
    """The step column of an event line."""
    parts = line.split()
    return parts[6] if parts[3] == "PO" and re.fullmatch(r"a\d+", parts[5]) else parts[5 if parts[3] == "PO" else 4]


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _po_lines(lines: list[str], po: str) -> list[str]:
    return [ln for ln in lines if f"  PO {po} " in ln or f"  PO {po}  " in ln]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["sequential", "parallel", "single-session"])
def test_a_run_log_holds_every_pos_steps_and_every_retry_with_its_reason(tmp_path, portal, profile, mode):
    portal.reset()  # the seeded faults start again: PO 2 fails once in every mode
    orders = tmp_path / "orders.csv"
    orders.write_text("PO_NUMBER\n1\n2\n3\n4\n", encoding="utf-8")
    extra = {"sequential": {}, "parallel": {"parallel": True, "workers": 1},
             "single-session": {"strategy": "single-session", "windows": 2}}[mode]
    opts = RunOptions(orders=orders, out=tmp_path / "out", site="demo", base_url=portal.base_url, profile=profile,
                      local_only=True, max_attempts=2, backoff_base=0.05, po_timeout=90,
                      profiles_root=tmp_path / "clones", **extra,
                      page_ahead=False)  # PO 2's one page error costs an attempt in every mode (not absorbed ahead)
    root_level = logging.getLogger().level
    summary = MainApp(opts).run()
    assert logging.getLogger().level == root_level  # the run log put the levels back

    path = summary.log_path
    assert path == Workspace(tmp_path / "out").run_log(summary.run_id) and path.is_file()
    lines = _lines(path)
    bad = [ln for ln in lines if not LINE.match(ln)]
    assert not bad, bad[:5]
    assert lines[0].startswith(f"# pobatch run {summary.run_id}")
    assert any(ln.startswith("# orders: ") for ln in lines) and any("# mode: " in ln for ln in lines)

    statuses = {"1": "COMPLETED", "2": "COMPLETED", "3": "FAILED", "4": "PO_NOT_FOUND"}
    for po, status in statuses.items():
        mine = _po_lines(lines, po)
        steps = [_step(ln) for ln in mine]
        assert "attempt_start" in steps and "open" in steps and "attempt_end" in steps, (po, mine)
        results = [ln for ln in mine if "  result  " in ln]
        assert len(results) == 1 and f" {status} " in results[0], (po, results)
    # Every page state with its evidence, every download with its time, and the file's size in the result.
    opens = [ln for ln in _po_lines(lines, "1") if "  open  " in ln]
    assert opens and " ready " in opens[0] and "| " in opens[0]
    assert any("  download  " in ln and " in " in ln for ln in _po_lines(lines, "1"))
    assert "Invoice 1.pdf (4.9 KB)" in [ln for ln in _po_lines(lines, "1") if "  result  " in ln][0]
    # Every retry and why: the failed attempt's reason, the wait, then the second attempt.
    two = _po_lines(lines, "2")
    failed = [ln for ln in two if " a1 " in ln and "attempt_end" in ln]
    assert failed and " error " in failed[0] and "HTTP_500" in failed[0]
    assert any("retry_wait" in ln for ln in two) or mode == "single-session"
    assert any(" a2 " in ln and "attempt_start" in ln for ln in two)
    assert sum(1 for ln in _po_lines(lines, "3") if "attempt_end" in ln and "HTTP_500" in ln) == 2
    # Durations: an attempt's end says how long the attempt took.
    assert all(re.search(r"\d+\.\d\ds", ln) for ln in lines if "attempt_end" in ln)
    if mode == "parallel":  # the workers' own records came through the pool, tagged with the worker
        assert any(re.search(r"worker w\d+ started", ln) for ln in lines)
        assert any(re.search(r"worker w\d+ .*exited", ln) for ln in lines)
        assert all(ln.split()[2].startswith("w") for ln in lines if "attempt_start" in ln)
    assert _step(lines[-1]) == "run_end" and "exit 1" in lines[-1]
    # The report points to the log.
    report = summary.report_path.read_text(encoding="utf-8")
    assert "logs/" + path.name in report


@pytest.mark.timeout(300)
def test_sigkill_of_the_main_process_leaves_a_log_readable_up_to_the_kill(tmp_path, browser_available):
    pos = [{"id": str(700000 + i), "supplier": "Slow Ltd",
            "attachments": [{"name": f"doc{i}.pdf", "kind": "link", "size": 20000}]} for i in range(1, 11)]
    scenario = tmp_path / "s.json"
    scenario.write_text(json.dumps({"name": "slow", "seed": 1, "latency": {"page_ms": 300, "attachment_ms": 100},
                                    "pos": pos}), encoding="utf-8")
    orders = tmp_path / "orders.csv"
    orders.write_text("PO_NUMBER\n" + "\n".join(p["id"] for p in pos) + "\n", encoding="utf-8")
    out, clones = tmp_path / "out", tmp_path / "clones"
    with DemoPortal(scenario) as portal:
        profile = prepare_demo_profile(tmp_path / "p", portal.base_url)
        cmd = [sys.executable, "-m", "pobatch.core", "run", str(orders), "--site", "demo", "--base-url",
               portal.base_url, "--browser", "chromium", "--profile", str(profile), "--out", str(out)]
        proc = subprocess.Popen(cmd, env=dict(os.environ, POBATCH_PROFILES_ROOT=str(clones)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            logs = out / ".pobatch" / "logs"
            while True:
                found = list(logs.glob("*.log")) if logs.is_dir() else []
                if found and sum("  result  " in ln for ln in _lines(found[0])) >= 3:
                    break
                assert proc.poll() is None, "the run ended before it could be killed"
                assert time.monotonic() < deadline, "the run never got three POs done"
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            ProfileManager.sweep_orphans(clones)  # the killed run's browser and clone
            sweep_driver_temp()
    raw = found[0].read_bytes()
    assert raw.endswith(b"\n")  # the last line is whole: every line was flushed as it was written
    lines = raw.decode("utf-8").splitlines()
    assert all(LINE.match(ln) for ln in lines)
    assert sum("  result  " in ln for ln in lines) >= 3
    assert not any("run_end" in ln for ln in lines)


def test_pruning_keeps_the_last_runs_or_the_byte_limit_whichever_is_smaller(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    now = time.time()
    for i in range(40):
        p = folder / f"run-{i:02d}.log"
        p.write_bytes(b"x" * 1000)
        os.utime(p, (now - 1000 + i, now - 1000 + i))  # run-39 is the newest
    current = folder / "run-39.log"
    removed = prune_logs(folder, keep_runs=30, keep_bytes=10**9, keep=current)
    assert len(removed) == 10 and sorted(p.name for p in folder.iterdir())[0] == "run-10.log"
    removed = prune_logs(folder, keep_runs=30, keep_bytes=5500, keep=current)  # bytes now the smaller limit
    assert sorted(p.name for p in folder.iterdir()) == [f"run-{i}.log" for i in range(35, 40)]
    current.write_bytes(b"x" * 10_000)  # the log being written always stays, even over the limit
    prune_logs(folder, keep_runs=30, keep_bytes=5500, keep=current)
    assert [p.name for p in folder.iterdir()] == ["run-39.log"]


def test_a_new_run_log_prunes_old_ones_and_writes_what_was_logged_before_it_opened(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    for i in range(31):
        (folder / f"old-{i:02d}.log").write_text("old\n")
        os.utime(folder / f"old-{i:02d}.log", (time.time() - 100 + i,) * 2)
    run_log = RunLog.begin()
    try:
        logging.getLogger("pobatch.test").info("before the file: %s", "kept")
        logging.getLogger("pobatch.test").debug("below the log's level")
        run_log.open(folder / "new.log", "new", {"orders": "o.csv"})
        run_log.event(Event(action=PoEvent.OPEN, task_key="9", worker_id="w1", attempt=1, outcome="ready",
                            url="https://p.example/order_headers/9?auth_token=SECRET1234", detail="id in h1"))
    finally:
        run_log.close()
    text = (folder / "new.log").read_text(encoding="utf-8")
    assert "before the file: kept" in text and "below the log's level" not in text
    assert "SECRET1234" not in text and "auth_token=[REDACTED]" in text
    assert len(list(folder.glob("*.log"))) == 30 and not (folder / "old-00.log").exists()


def _progress(worker: str, received: int, total: int, ts: float, name: str = "scan.pdf") -> Event:
    return Event(action=PoEvent.DOWNLOAD_PROGRESS, task_key="500001", worker_id=worker, attempt=1,
                 detail=f"{received}/{total} {name}", ts=ts)


def test_the_live_console_shows_bytes_total_and_speed_per_worker():
    buf = io.StringIO()
    view = ConsoleView(Console(file=buf, force_terminal=True, width=160), clock=lambda: 100.0)
    view.start("r1", total=2, skipped=0, mode="parallel")
    try:
        view.event(Event(action=PoEvent.ATTEMPT_START, task_key="500001", worker_id="w1", attempt=1))
        view.event(Event(action=PoEvent.ATTEMPT_START, task_key="500002", worker_id="w2", attempt=1))
        mb = 1024 * 1024
        view.event(_progress("w1", 4 * mb, 50 * mb, 10.0))
        view.event(_progress("w1", 8 * mb, 50 * mb, 12.0))
        view.event(_progress("w2", 3 * mb, 0, 10.0, "big.zip"))
        assert view.download_line("w1") == "8.0 MB of 50.0 MB (16%), 2.0 MB/s, scan.pdf"
        assert view.download_line("w2") == "3.0 MB, big.zip"  # no total from the portal: bytes only
        shown = Console(file=io.StringIO(), width=160)
        shown.print(view.render())
        text = shown.file.getvalue()
        assert "8.0 MB of 50.0 MB (16%), 2.0 MB/s, scan.pdf" in text and "3.0 MB, big.zip" in text
        view.event(Event(action=PoEvent.DOWNLOAD, task_key="500001", worker_id="w1", attempt=1, outcome="ok",
                         detail="scan.pdf via click in 25.00s"))
        assert view.download_line("w1") == "" and view.download_line("w2")
    finally:
        view._live and view._live.stop()


def test_a_plain_console_prints_progress_at_most_every_ten_seconds():
    buf = io.StringIO()
    now = [0.0]
    view = ConsoleView(Console(file=buf, force_terminal=False, width=160), clock=lambda: now[0])
    view.start("r1", total=1, skipped=0, mode="sequential")
    for i in range(10):
        now[0] = 2.0 * i
        view.event(_progress("main", (i + 1) * 1024 * 1024, 20 * 1024 * 1024, 2.0 * i))
    printed = [ln for ln in buf.getvalue().splitlines() if "downloading" in ln]
    assert len(printed) == 2 and "6.0 MB of 20.0 MB (30%), 512.0 KB/s" in printed[-1]


@pytest.mark.timeout(300)
def test_a_slow_big_file_shows_its_progress_in_the_log_and_the_timeline(tmp_path, browser_available):
    """A 3 MB file that takes about 6 s (issue 25): the workflow tells its bytes while it runs, the run log
    says bytes, total and speed, and the attempt's limit (shorter than the download) follows them."""
    from pobatch.core.demo_portal.scenario import Scenario
    from pobatch.corelib.store import RunStore

    size = 3_000_000
    scenario = Scenario.from_dict({"name": "bigfile", "seed": 2, "latency": {"page_ms": 10, "attachment_ms": 0},
                                   "pos": [{"id": "9", "supplier": "Big Scans Ltd", "attachments": [
                                       {"name": "scan.pdf", "kind": "link", "size": size, "latency_ms": 6000}]}]})
    with DemoPortal(scenario) as portal:
        profile = prepare_demo_profile(tmp_path / "profile", portal.base_url)
        orders = tmp_path / "orders.csv"
        orders.write_text("PO_NUMBER\n9\n", encoding="utf-8")
        opts = RunOptions(orders=orders, out=tmp_path / "out", site="demo", base_url=portal.base_url,
                          browser="chromium", profile=profile, local_only=True, profiles_root=tmp_path / "profiles",
                          po_timeout=5.0, max_attempts=1)
        summary = MainApp(opts).run()
    assert summary.outcomes["9"].status.value == "COMPLETED", summary.outcomes["9"].error_message
    with RunStore(summary.out_dir / ".pobatch" / "runs.sqlite") as store:
        told = [e for e in store.timeline(summary.run_id) if e.action == PoEvent.DOWNLOAD_PROGRESS]
    assert told, "a download running longer than 2 s tells its bytes"
    received, total = (int(x) for x in told[0].detail.split(" ", 1)[0].split("/"))
    assert 0 < received < total == size
    logged = [ln for ln in _lines(summary.log_path) if " download_progress " in ln]
    assert logged and all(LINE.match(ln) for ln in logged)
    assert all("MB of 2.9 MB" in ln and "scan.pdf" in ln for ln in logged), logged
    # the speed needs two reports of the same file
    assert len(logged) == 1 or any("/s" in ln for ln in logged[1:]), logged
