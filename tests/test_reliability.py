"""Issue 14: pobatch under hostile conditions (final answers on resume, dead runs, unwritable folders,
dead portals, a live profile, demo options, session messages, failure capture, killed workers).

Real demo portal, real headless Chromium, real files; each test failed before its fix."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import openpyxl
import pytest

from pobatch.core.app import MainApp, RunOptions
from pobatch.core.exit_codes import EXIT_LOGIN, EXIT_OK, EXIT_STOPPED
from pobatch.core.demo_portal import DemoPortal
from pobatch.core.commands.login import prepare_demo_profile
from tests.eventually import wait_for
from tests.orders_files import write_orders

pytestmark = pytest.mark.usefixtures("browser_available")


def write_scenario(path: Path, pos: list[dict], **extra) -> Path:
    data = {"name": "t", "seed": 3, "stall_seconds": 20, "latency": {"page_ms": 10, "attachment_ms": 5},
            "pos": pos}
    data.update(extra)
    path.write_text(json.dumps(data))
    return path


def run_app(portal: DemoPortal, orders: Path, out: Path, profile: Path, view=None, **kw):
    kw.setdefault("backoff_base", 0.1)
    kw.setdefault("profiles_root", out.parent / "clones")
    opts = RunOptions(orders=orders, out=out, site="demo", base_url=portal.base_url, browser="chromium",
                      profile=profile, local_only=True, stall_timeout=5, **kw)
    return MainApp(opts, view=view).run()


def store_statuses(out: Path) -> dict[str, str]:
    db = sqlite3.connect(f"file:{out / '.pobatch' / 'runs.sqlite'}?mode=ro", uri=True, timeout=5)
    try:
        return dict(db.execute("SELECT key, status FROM tasks").fetchall())
    finally:
        db.close()


def workbook_statuses(path: Path) -> dict[str, str]:
    ws = openpyxl.load_workbook(path)["Results"]
    header = [c.value for c in ws[1]]
    return {str(r[header.index("PO_NUMBER")]): r[header.index("STATUS")]
            for r in ws.iter_rows(min_row=2, values_only=True)}


class StoreWatcher:
    """A console view that reads the run store (from outside, as a user would) whenever the run speaks."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.seen: list[dict[str, str]] = []

    def _look(self) -> None:
        self.seen.append(store_statuses(self.out))

    def start(self, *a) -> None:
        self._look()

    def event(self, _e) -> None:
        self._look()

    def task_done(self, *a) -> None:
        self._look()

    def finish(self, _s) -> None:
        pass


# -- item 3: final answers are kept on resume ---------------------------------------------------------
ANSWERS = [
    {"id": "510001", "supplier": "Acme", "attachments": [{"name": "a.pdf", "kind": "link", "size": 3000}]},
    {"id": "510002", "supplier": "Acme", "missing": True},
    {"id": "510003", "supplier": "Beta"},
]


def test_final_answers_are_kept_and_only_force_or_recheck_redo_them(tmp_path):
    scenario = write_scenario(tmp_path / "s.json", ANSWERS)
    orders = write_orders(tmp_path, [p["id"] for p in ANSWERS])
    out = tmp_path / "out"
    with DemoPortal(scenario) as portal:
        profile = prepare_demo_profile(tmp_path / "p", portal.base_url)
        first = run_app(portal, orders, out, profile)
        truth = {"510001": "COMPLETED", "510002": "PO_NOT_FOUND", "510003": "NO_ATTACHMENTS"}
        assert {po: o.status.value for po, o in first.outcomes.items()} == truth
        hits = {po: portal.page_hits(po) for po in truth}

        again = run_app(portal, orders, out, profile)
        assert again.exit_code == EXIT_OK and again.skipped == 3
        assert {po: portal.page_hits(po) for po in truth} == hits  # nothing redone

        watcher = StoreWatcher(out)
        recheck = run_app(portal, orders, out, profile, view=watcher, recheck=True)
        assert recheck.skipped == 1
        assert portal.page_hits("510001") == hits["510001"]
        assert portal.page_hits("510002") == hits["510002"] + 1
        assert portal.page_hits("510003") == hits["510003"] + 1
        # a stored answer never went back to PENDING (or anything else) before it was replaced
        for snapshot in watcher.seen:
            assert snapshot == truth, snapshot
        assert workbook_statuses(recheck.results_path) == truth

        forced = run_app(portal, orders, out, profile, force=True)
        assert forced.skipped == 2
        assert portal.page_hits("510001") == hits["510001"] + 1
        assert portal.page_hits("510002") == hits["510002"] + 1
        assert {po: o.status.value for po, o in forced.outcomes.items()} == truth
        assert store_statuses(out) == truth


# -- item 9: a killed run is marked INTERRUPTED with the time it was last seen ---------------------------
def _run_status(out: Path) -> list[dict]:
    db = sqlite3.connect(f"file:{out / '.pobatch' / 'runs.sqlite'}?mode=ro", uri=True, timeout=5)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY started")]
    finally:
        db.close()


def _completed(out: Path) -> int:
    try:
        return sum(1 for s in store_statuses(out).values() if s == "COMPLETED")
    except sqlite3.Error:
        return 0


def cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pobatch.core", *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


def slow_pos(n: int, base: int = 520000) -> list[dict]:
    return [{"id": str(base + i), "supplier": f"S{i % 2}",
             "attachments": [{"name": f"d{i}.pdf", "kind": "link", "size": 4000}]} for i in range(1, n + 1)]


def test_a_killed_run_is_marked_interrupted_at_the_time_it_was_last_seen(tmp_path):
    pos = slow_pos(8)
    scenario = write_scenario(tmp_path / "s.json", pos, latency={"page_ms": 400, "attachment_ms": 100})
    orders = write_orders(tmp_path, [p["id"] for p in pos])
    out = tmp_path / "out"
    env = {"POBATCH_PROFILES_ROOT": str(tmp_path / "clones")}
    with DemoPortal(scenario) as portal:
        profile = prepare_demo_profile(tmp_path / "p", portal.base_url)
        cmd = [sys.executable, "-m", "pobatch.core", "run", str(orders), "--site", "demo", "--base-url", portal.base_url,
               "--browser", "chromium", "--profile", str(profile), "--out", str(out)]
        proc = subprocess.Popen(cmd, env=dict(os.environ, **env), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_for(lambda: _completed(out) >= 2 or proc.poll() is not None, 120, "two POs done")
        assert proc.poll() is None
        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        [dead] = _run_status(out)
        assert dead["status"] == "RUNNING"

        rerun = subprocess.run(cmd, env=dict(os.environ, **env), capture_output=True, text=True, timeout=300)
        assert rerun.returncode == EXIT_OK, rerun.stderr[-2000:]
    first, second = _run_status(out)
    assert first["status"] == "INTERRUPTED"
    # the time it was last seen alive: a heartbeat, not the start nor the time the next run noticed
    assert killed_at - 15 <= first["finished"] <= killed_at + 1
    assert second["status"] == "DONE"
    shown = cli("report", first["run_id"], "--out", str(out))
    assert shown.returncode == 0, shown.stderr
    page = Path(shown.stdout.strip()).read_text(encoding="utf-8")
    assert "INTERRUPTED" in page and "Last seen" in page


# -- item 5: an unwritable output folder (conftest's read_only_dir), a full disk ---------------------------

@pytest.mark.parametrize("where", ["folder", "parent"])
def test_a_read_only_output_folder_gets_one_line_and_exit_2_before_any_browser(tmp_path, read_only_dir, where):
    orders = write_orders(tmp_path, ["600001", "600002"])
    out = read_only_dir if where == "folder" else read_only_dir / "out" / "deeper"
    clones = tmp_path / "clones"
    with DemoPortal() as portal:
        res = cli("run", str(orders), "--site", "demo", "--base-url", portal.base_url, "--browser", "chromium",
                  "--out", str(out), env={"POBATCH_PROFILES_ROOT": str(clones)}, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    named = read_only_dir if where == "folder" else read_only_dir / "out"
    assert str(named) in lines[0] or str(read_only_dir) in lines[0]
    assert not clones.exists() or not any(clones.iterdir())  # no browser profile was ever made


def test_a_full_disk_mid_run_stops_cleanly_and_leaves_the_po_pending(tmp_path, monkeypatch):
    import errno

    import pobatch.core.workflow.publish

    pos = slow_pos(4, base=610000)
    scenario = write_scenario(tmp_path / "s.json", pos)
    orders = write_orders(tmp_path, [p["id"] for p in pos])
    out = tmp_path / "out"
    real_publish = pobatch.core.workflow.publish.publish_folder
    calls = []

    def publish_then_fill_the_disk(staged, dest, **kw):
        calls.append(dest)
        if len(calls) >= 2:  # the disk is full from the second PO on
            raise OSError(errno.ENOSPC, "No space left on device", str(dest))
        return real_publish(staged, dest, **kw)

    with DemoPortal(scenario) as portal:
        profile = prepare_demo_profile(tmp_path / "p", portal.base_url)
        monkeypatch.setattr(pobatch.core.workflow.publish, "publish_folder", publish_then_fill_the_disk)
        summary = run_app(portal, orders, out, profile)
        assert summary.exit_code == EXIT_STOPPED
        assert "DISK_FULL" in summary.message or "disk" in summary.message.lower()
        assert str(out) in summary.message
        assert len(calls) == 2  # stopped at once: no retry, no further PO
        statuses = store_statuses(out)
        assert statuses[pos[0]["id"]] == "COMPLETED"
        assert [statuses.get(p["id"]) for p in pos[1:]] == ["PENDING"] * 3
        # nothing half-written published: no folder, no journal, no staging for the PO in progress
        assert not list(out.rglob(f"{pos[1]['id']}_*"))
        assert not list((out / ".pobatch" / "journal").glob("*.json"))
        assert not [p for p in (out / ".pobatch" / "staging").glob("*") if not p.name.startswith("incoming")]
        assert workbook_statuses(summary.results_path)[pos[1]["id"]] == "PENDING"

        monkeypatch.setattr(pobatch.core.workflow.publish, "publish_folder", real_publish)
        rerun = run_app(portal, orders, out, profile)
        assert rerun.exit_code == EXIT_OK
        assert set(store_statuses(out).values()) == {"COMPLETED"}


def test_a_full_disk_under_the_run_store_stops_cleanly(tmp_path, monkeypatch):
    from pobatch.corelib.store import RunStore

    pos = slow_pos(3, base=620000)
    scenario = write_scenario(tmp_path / "s.json", pos)
    orders = write_orders(tmp_path, [p["id"] for p in pos])
    out = tmp_path / "out"
    real_record = RunStore.record_result

    def full_on_second(self, run_id, result, files=()):
        if result.key == pos[1]["id"]:
            raise sqlite3.OperationalError("database or disk is full")
        return real_record(self, run_id, result, files)

    with DemoPortal(scenario) as portal:
        profile = prepare_demo_profile(tmp_path / "p", portal.base_url)
        monkeypatch.setattr(RunStore, "record_result", full_on_second)
        summary = run_app(portal, orders, out, profile)
        assert summary.exit_code == EXIT_STOPPED and "disk" in summary.message.lower()
        assert store_statuses(out)[pos[2]["id"]] == "PENDING"
        monkeypatch.setattr(RunStore, "record_result", real_record)
        counts = portal.download_counts()
        rerun = run_app(portal, orders, out, profile)
        assert rerun.exit_code == EXIT_OK
        # the second PO's folder was published before the store filled up: adopted, not downloaded again
        assert portal.download_counts()[f"{pos[1]['id']}/d2.pdf"] == counts[f"{pos[1]['id']}/d2.pdf"]


# -- item 4: a portal that cannot be reached ---------------------------------------------------------------
def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens once it is closed


def test_an_unreachable_portal_is_one_line_and_exit_2_before_any_browser(tmp_path):
    orders = write_orders(tmp_path, [str(630000 + i) for i in range(12)])
    out = tmp_path / "out"
    clones = tmp_path / "clones"
    url = f"http://127.0.0.1:{closed_port()}"
    t0 = time.monotonic()
    res = cli("run", str(orders), "--site", "demo", "--base-url", url, "--browser", "chromium", "--out", str(out),
              env={"POBATCH_PROFILES_ROOT": str(clones)}, timeout=120)
    took = time.monotonic() - t0
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and url in lines[0], res.stderr
    assert took < 30  # one request, not 12 POs times their attempts
    assert not out.exists()  # nothing written, no _FAILED folder
    assert not clones.exists() or not any(clones.iterdir())


class StopPortalAfter:
    """A console view that stops the portal once `n` POs have finished: the portal dies mid-run."""

    def __init__(self, portal: DemoPortal, n: int) -> None:
        self.portal, self.n, self.done = portal, n, 0

    def start(self, *a) -> None:
        pass

    def event(self, _e) -> None:
        pass

    def task_done(self, _w, outcome) -> None:
        self.done += 1
        if self.done == self.n:
            self.portal.stop()

    def finish(self, _s) -> None:
        pass


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
def test_a_portal_that_dies_mid_run_trips_the_circuit_breaker(tmp_path, parallel):
    pos = slow_pos(12, base=640000)
    scenario = write_scenario(tmp_path / "s.json", pos, latency={"page_ms": 150, "attachment_ms": 20})
    orders = write_orders(tmp_path, [p["id"] for p in pos])
    out = tmp_path / "out"
    portal = DemoPortal(scenario).start()
    try:
        profile = prepare_demo_profile(tmp_path / "p", portal.base_url)
        kw = {"parallel": True, "workers": 2} if parallel else {}
        t0 = time.monotonic()
        summary = run_app(portal, orders, out, profile, view=StopPortalAfter(portal, 2), **kw)
        took = time.monotonic() - t0
    finally:
        portal.stop()
    assert summary.exit_code == EXIT_STOPPED, summary.message
    assert "CONNECTION_FAILED" in summary.message and portal.base_url in summary.message
    assert took < 90
    statuses = store_statuses(out)
    done = [k for k, v in statuses.items() if v == "COMPLETED"]
    assert len(done) >= 2
    assert {v for k, v in statuses.items() if k not in done} == {"PENDING"}
    assert len(statuses) + 0 <= len(pos)
    assert not list(out.rglob("*_FAILED")), "empty _FAILED folders for POs the portal never answered"

    with DemoPortal(scenario) as again:  # the portal is back
        profile = prepare_demo_profile(tmp_path / "p2", again.base_url)
        rerun = run_app(again, orders, out, profile, **kw)
    assert rerun.exit_code == EXIT_OK
    assert set(store_statuses(out).values()) == {"COMPLETED"}


# -- item 2: a profile open in the user's own browser ------------------------------------------------------
@pytest.fixture
def users_browser(tmp_path):
    """A separate Chromium, started as the user would, on a profile folder pobatch did not create."""
    import psutil

    from tests.conftest import CHROMIUM

    profile = tmp_path / "users-profile"
    profile.mkdir()
    proc = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(lambda: os.path.islink(profile / "SingletonLock") and len(psutil.Process(proc.pid).children()) >= 2,
             30, "the user's browser to start")
    time.sleep(0.5)  # let its helpers settle: the pid set is compared afterwards

    def pids() -> set[int]:
        try:
            root = psutil.Process(proc.pid)
            return {root.pid} | {c.pid for c in root.children(recursive=True)}
        except psutil.NoSuchProcess:
            return set()

    try:
        yield profile, pids
    finally:
        for p in [psutil.Process(pid) for pid in pids() if psutil.pid_exists(pid)]:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait(timeout=10)


def _refused(res: subprocess.CompletedProcess, profile: Path) -> None:
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    lines = [line for line in res.stderr.strip().splitlines() if not line.startswith("Demo portal running")]
    assert len(lines) == 1, res.stderr
    assert str(profile) in lines[0] and "close" in lines[0].lower()


@pytest.mark.parametrize("command", ["login", "demo", "run"])
def test_a_profile_open_in_the_users_browser_is_refused_and_the_browser_survives(tmp_path, users_browser, command):
    profile, pids = users_browser
    before = pids()
    env = {"POBATCH_PROFILES_ROOT": str(tmp_path / "clones")}
    if command == "login":
        with DemoPortal() as portal:
            res = cli("login", "--site", "demo", "--base-url", portal.base_url, "--browser", "chromium",
                      "--profile", str(profile), env=env, timeout=120)
    elif command == "demo":
        res = cli("demo", "--browser", "chromium", "--profile", str(profile), "--out", str(tmp_path / "demo"),
                  env=env, timeout=300)
    else:
        orders = write_orders(tmp_path, ["100001", "100002"])
        with DemoPortal() as portal:
            res = cli("run", str(orders), "--site", "demo", "--base-url", portal.base_url, "--browser", "chromium",
                      "--profile", str(profile), "--out", str(tmp_path / "out"), env=env, timeout=300)
    # every process of the user's browser is still there (it may have started helpers meanwhile)
    assert before <= pids(), "pobatch killed processes of a browser it did not start"
    _refused(res, profile)


# -- item 11: the demo runs the scenario's POs, with the run options -----------------------------------------
def test_demo_runs_the_scenarios_own_pos_with_the_run_options(tmp_path):
    pos = [{"id": "700001", "supplier": "Own", "attachments": [{"name": "own.pdf", "kind": "link", "size": 2000}]},
           {"id": "700002", "supplier": "Own", "attachments": [{"name": "x.pdf", "kind": "link", "size": 2000}],
            "faults": {"page": ["http500", "http500", "ok"]}}]
    # one attempt per PO: the portal's truth for 700002 is then FAILED HTTP_500 (twice: a page loaded
    # ahead that errs is loaded again within the attempt)
    scenario = write_scenario(tmp_path / "s.json", pos, client_max_attempts=1)
    out = tmp_path / "demo"
    res = cli("demo", "--scenario", str(scenario), "--out", str(out), "--browser", "chromium",
              "--po-timeout", "60", "--max-attempts", "1", env={"POBATCH_PROFILES_ROOT": str(tmp_path / "clones")})
    assert res.returncode == 0, res.stderr[-3000:]
    assert store_statuses(out) == {"700001": "COMPLETED", "700002": "FAILED"}


# -- item 10: the parallel sign-in message says what was seen ------------------------------------------------
def test_a_session_that_simply_expires_in_parallel_mode_does_not_blame_parallel_sessions(tmp_path):
    pos = slow_pos(10, base=710000)
    # the one sign-in dies after 8 requests, whoever makes them: every worker is refused alike
    scenario = write_scenario(tmp_path / "s.json", pos, latency={"page_ms": 100, "attachment_ms": 20},
                              session={"expire_after_requests": 8, "rotate_token": False})
    orders = write_orders(tmp_path, [p["id"] for p in pos])
    with DemoPortal(scenario) as portal:
        profile = prepare_demo_profile(tmp_path / "p", portal.base_url)
        summary = run_app(portal, orders, tmp_path / "out", profile, parallel=True, workers=2, po_timeout=60.0,
                          page_timeout=20.0, download_timeout=20.0, backoff_base=0.2)
    assert summary.exit_code == EXIT_LOGIN
    assert "single-session" not in summary.message and "one live session" not in summary.message
    assert "sign in" in summary.message.lower()
    assert summary.counts["COMPLETED"] >= 1  # the sign-in worked at first


# -- item 7: a timed-out attempt keeps what the browser showed, quietly --------------------------------------
@pytest.mark.parametrize("mode", [[], ["--parallel", "--workers", "1"]], ids=["sequential", "parallel"])
def test_a_timed_out_attempt_is_captured_before_its_browser_is_killed(tmp_path, mode):
    pos = [{"id": "720001", "supplier": "Slow", "attachments": [{"name": "a.pdf", "kind": "link", "size": 2000}],
            "faults": {"page": ["stall"]}},
           {"id": "720002", "supplier": "Slow", "attachments": [{"name": "b.pdf", "kind": "link", "size": 2000}]}]
    scenario = write_scenario(tmp_path / "s.json", pos, stall_seconds=120)
    orders = write_orders(tmp_path, ["720002", "720001"])  # a page is open when the stalled one starts
    out = tmp_path / "out"
    with DemoPortal(scenario) as portal:
        profile = prepare_demo_profile(tmp_path / "p", portal.base_url)
        res = cli("run", str(orders), "--site", "demo", "--base-url", portal.base_url, "--browser", "chromium",
                  "--profile", str(profile), "--out", str(out), "--po-timeout", "10", "--max-attempts", "1", *mode,
                  env={"POBATCH_PROFILES_ROOT": str(tmp_path / "clones")})
    assert res.returncode == 1, res.stderr[-3000:]
    assert store_statuses(out) == {"720001": "TIMEOUT", "720002": "COMPLETED"}
    [folder] = (out / ".pobatch" / "artifacts").glob("*/720001-a1")
    manifest = json.loads((folder / "capture.json").read_text())
    for name in ("screenshot.png", "page.html", "console.log"):
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, (name, json.dumps(manifest))
    assert (folder / "screenshot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    said = res.stdout + res.stderr  # the console's log lines go to stdout
    assert "Retrying" not in said and "Connection refused" not in said, said[-3000:]


# -- item 8: a killed worker's scratch folders go when the pool reaps it ------------------------------------
def test_a_killed_workers_staging_and_driver_temp_are_removed_when_it_is_reaped(tmp_path):
    import tempfile

    import psutil

    from pobatch.corelib.browser.processes import browser_processes

    pos = slow_pos(6, base=730000)
    scenario = write_scenario(tmp_path / "s.json", pos, latency={"page_ms": 300, "attachment_ms": 1500})
    orders = write_orders(tmp_path, [p["id"] for p in pos])
    out = tmp_path / "out"
    staging = out / ".pobatch" / "staging"
    seen: dict = {}

    class KillOnce(StopPortalAfter):
        def __init__(self) -> None:
            pass

        def start(self, run_id, *a) -> None:
            seen["run_id"] = run_id

        def event(self, e) -> None:
            if e.action == "attempt_start" and e.task_key == pos[2]["id"] and "pid" not in seen:
                clone = tmp_path / "clones" / f"run-{seen['run_id']}" / e.worker_id
                [driver] = [p for p in browser_processes(clone) if "chromedriver" in p.name()]
                worker = driver.parent()
                seen.update(worker_id=e.worker_id, pid=worker.pid,
                            staging=[p for p in staging.iterdir() if f"-{e.worker_id}-a" in p.name],
                            temp=list(Path(tempfile.gettempdir()).glob(f"pobatch-drv-{worker.pid}-*")))
                assert seen["staging"] and seen["temp"], seen  # there is something to clean up
                worker.kill()
            elif e.action == "worker_lost" and "pid" in seen and "lost" not in seen:
                # by the time the app hears of it, the pool has reaped the worker
                seen.update(lost=True, staging_left=[p for p in seen["staging"] if p.exists()],
                            temp_left=[p for p in seen["temp"] if p.exists()])

        def task_done(self, *a) -> None:
            pass

    with DemoPortal(scenario) as portal:
        profile = prepare_demo_profile(tmp_path / "p", portal.base_url)
        summary = run_app(portal, orders, out, profile, view=KillOnce(), parallel=True, workers=2)
    assert seen.get("lost"), seen
    assert seen["staging_left"] == [] and seen["temp_left"] == [], seen
    assert not psutil.pid_exists(seen["pid"]) or psutil.Process(seen["pid"]).status() == psutil.STATUS_ZOMBIE
    assert summary.exit_code == EXIT_OK


@pytest.fixture
def small_disk(tmp_path):
    """A real 600 KiB file system (tmpfs; needs root, as CI runs): a disk that fills up."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        pytest.skip("a small file system of its own needs root (mount)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(disk)], capture_output=True)
    if not os.path.ismount(disk):
        pytest.skip("not allowed to mount a small file system here")
    try:
        yield disk
    finally:
        import gc

        gc.collect()  # a file object of the run's that failed to close must not keep the mount busy
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_real_full_disk_stops_the_run_quietly_and_a_rerun_finishes(tmp_path, small_disk, capsys):
    pos = [{"id": str(740000 + i), "supplier": "S", "attachments": [{"name": f"f{i}.pdf", "kind": "link",
                                                                     "size": 150_000}]} for i in range(4)]
    scenario = write_scenario(tmp_path / "s.json", pos)
    orders = write_orders(tmp_path, [p["id"] for p in pos])
    out = small_disk / "out"
    with DemoPortal(scenario) as portal:
        profile = prepare_demo_profile(tmp_path / "p", portal.base_url)
        # the browser's profile copy lives elsewhere: only the output folder's disk fills up
        summary = run_app(portal, orders, out, profile, download_timeout=20, max_attempts=2,
                          profiles_root=tmp_path / "clones")
        said = capsys.readouterr()
        assert summary.exit_code == EXIT_STOPPED, summary.message
        assert "DISK_FULL" in summary.message and str(out) in summary.message
        assert "Traceback" not in said.err + said.out
        statuses = store_statuses(out)
        done = {k for k, v in statuses.items() if v == "COMPLETED"}
        assert done and set(statuses.values()) == {"COMPLETED", "PENDING"}, statuses
        journals = {p.stem for p in (out / ".pobatch" / "journal").glob("*.json")}
        adopted = set()
        for po in set(statuses) - done:
            # nothing half-written published: a folder of a PENDING PO is one whose publish completed
            # and only the store could not say so; its journal makes the rerun adopt it
            folders = list(out.rglob(f"{po}_*"))
            if folders:
                assert po in journals and [f.name for f in folders] == [f"{po}_COMPLETED"], (po, folders)
                assert {p.name for p in folders[0].iterdir()} == {f"f{int(po) - 740000}.pdf"}
                adopted.add(po)
        counts = portal.download_counts()
        subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)  # space freed
        rerun = run_app(portal, orders, out, profile, profiles_root=tmp_path / "clones")
        assert rerun.exit_code == EXIT_OK, rerun.message
        assert set(store_statuses(out).values()) == {"COMPLETED"}
        for po in adopted:  # adopted, not downloaded again
            key = f"{po}/f{int(po) - 740000}.pdf"
            assert portal.download_counts()[key] == counts[key]
