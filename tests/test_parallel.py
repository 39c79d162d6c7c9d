"""Parallel mode end to end: the real demo portal, real headless Chromium, real worker processes.

One demo portal serves every test its own POs (the bundled sample's too); each test runs them through
pobatch.core.app.MainApp in-process, or through the `pobatch run` command in a subprocess where a process must
be killed or interrupted, and checks the results against the truth the scenario states. The conftest fixture checks after
each test that no browser, driver or worker process and no temporary profile is left.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest

from rich.console import Console

from pobatch.core.app import MainApp, RunOptions, RunSummary
from pobatch.core.exit_codes import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_LOGIN, EXIT_OK
from pobatch.core.monitoring.console import ConsoleView
from pobatch.core.demo_portal import DemoPortal, load_scenario, sample_orders_path, sample_scenario_path
from pobatch.core.commands.login import prepare_demo_profile
from pobatch.core.modes.po_handler import WorkerConfig, make_handler
from pobatch.core.preparation.profiles import seed_profile
from pobatch.core.results import PoOutcome, outcome_from_data
from pobatch.core.status import Status
from pobatch.core.workflow.job_config import JobConfig
from pobatch.corelib.worker_pool.autoscale import auto_workers
from pobatch.corelib.browser.factory import BrowserSpec
from pobatch.corelib.browser.processes import browser_processes
from pobatch.corelib.errors import FatalError
from pobatch.corelib.store import RunStore
from pobatch.corelib.worker_pool.tasks import Event, Task, TaskResult
from pobatch.corelib.worker_pool import WorkerPool, WorkerSpec
from eventually import wait_for
from orders_files import write_orders as write_orders_file

REPO = Path(__file__).resolve().parent.parent
needs_browser = pytest.mark.usefixtures("browser_available")


# ---- one portal and one signed-in profile for the module ------------------------------------------
# Every test orders its own POs (its own id range) from one portal, so the profile signs in once.
# The bundled sample's POs are part of it, with their faults, for the sequential-vs-parallel test.

@pytest.fixture(scope="module", autouse=True)
def private_temp_root():
    """This module's own temp folder, for this process and every worker and browser it starts.

    Other test sessions on the machine share the system temp folder: conftest's leftover checks,
    which look at <temp>/pobatch-profiles, would otherwise see (and kill) their runs, and they ours.
    """
    path = Path(tempfile.mkdtemp(prefix="pbp-"))
    saved_env, saved_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = str(path), str(path)
    try:
        yield path
    finally:
        tempfile.tempdir = saved_tempdir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        shutil.rmtree(path, ignore_errors=True)


def _po(po_id: str, files: int = 1, kind: str = "link", supplier: str = "Acme Office Supplies",
        **extra: Any) -> dict[str, Any]:
    atts = [{"name": f"Doc {po_id}-{i + 1}.pdf", "kind": kind, "size": 6000 + 500 * i} for i in range(files)]
    return {"id": po_id, "supplier": supplier, "attachments": atts, **extra}


def _group(first: int, count: int, files: int = 2) -> list[dict[str, Any]]:
    return [_po(str(first + i), files=1 + (i % files)) for i in range(count)]


GROUPS: dict[str, list[dict[str, Any]]] = {
    "clones": _group(300001, 6),
    "browser_kill": _group(310001, 6, files=3),
    "worker_kill": _group(320001, 12, files=3),  # enough work left for a replacement to start
    "login": _group(330001, 6),
    "main_kill": _group(340001, 10),
    # files of 1.5 s each: pages are judged at once now, and ten quick POs were done before Ctrl+C came
    "ctrl_c": [dict(po, attachments=[dict(a, latency_ms=1500) for a in po["attachments"]])
               for po in _group(350001, 10)],
    "auto": _group(360001, 3),
    "batch": _group(370001, 2),
}


def group_ids(name: str) -> list[str]:
    return [p["id"] for p in GROUPS[name]]


@pytest.fixture(scope="module")
def demo(tmp_path_factory, browser_available_module):
    """(portal, signed-in base profile): the sample's POs plus every test's own, 100-200 ms per page."""
    directory = tmp_path_factory.mktemp("demo")
    data = json.loads(sample_scenario_path().read_text(encoding="utf-8"))
    data["pos"] += [po for group in GROUPS.values() for po in group]
    data["latency"] = {"page_ms": [100, 200], "attachment_ms": [30, 60]}
    (directory / "scenario.json").write_text(json.dumps(data), encoding="utf-8")
    portal = DemoPortal(directory / "scenario.json").start()
    try:
        profile = prepare_demo_profile(directory / "base-profile", portal.base_url)
        yield portal, profile
    finally:
        portal.stop()


write_orders = partial(write_orders_file, prefix="PO")  # these scenarios number POs "PO<n>"


def run_options(orders: Path, out: Path, portal: DemoPortal, profile: Path, tmp_path: Path,
                **kw: Any) -> RunOptions:
    base: dict[str, Any] = dict(site="demo", base_url=portal.base_url, browser="chromium", profile=profile,
                                parallel=True, workers=2, local_only=True, profiles_root=tmp_path / "profiles",
                                po_timeout=60.0, page_timeout=20.0, download_timeout=20.0, stall_timeout=10.0,
                                backoff_base=0.2)
    base.update(kw)
    return RunOptions(orders=orders, out=out, **base)


class RecordingView:
    """A stand-in for ConsoleView: keeps what MainApp reports, and lets a test act on an event."""

    def __init__(self, on_event: Callable[["RecordingView", Event], None] | None = None) -> None:
        self.on_event = on_event
        self.run_id = ""
        self.events: list[tuple[float, Event]] = []
        self.done: list[tuple[str, PoOutcome]] = []
        self.summary: RunSummary | None = None

    def start(self, run_id: str, total: int, skipped: int, mode: str) -> None:
        self.run_id = run_id

    def event(self, event: Event) -> None:
        self.events.append((time.monotonic(), event))
        if self.on_event is not None:
            self.on_event(self, event)

    def task_done(self, worker_id: str, outcome: PoOutcome) -> None:
        self.done.append((worker_id, outcome))

    def finish(self, summary: RunSummary) -> None:
        self.summary = summary

    def actions(self, action: str) -> list[Event]:
        return [e for _t, e in self.events if e.action == action]


# ---- what the results must be -------------------------------------------------------------------

def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def statuses(summary: RunSummary) -> dict[str, tuple[str, str]]:
    return {po: (o.status.value, o.reason) for po, o in summary.outcomes.items()}


def files_on_disk(outcome: PoOutcome) -> dict[str, str]:
    """name -> sha256 of what the PO folder really holds (checked against what the outcome claims)."""
    if not outcome.download_folder:
        return {}
    folder = Path(outcome.download_folder)
    found = {p.name: _sha(p.read_bytes()) for p in folder.iterdir() if p.is_file()}
    assert found == {f.name: f.sha256 for f in outcome.files}, f"PO {outcome.po_number}: folder and record differ"
    return found


def assert_matches_truth(summary: RunSummary, portal: DemoPortal, ids: list[str]) -> None:
    """Exactly these POs, each with the scenario's status and reason and exactly the bytes it serves."""
    expected = portal.expected_outcomes()
    assert set(summary.outcomes) == set(ids)
    assert statuses(summary) == {po: expected[po] for po in ids}
    for po, outcome in summary.outcomes.items():
        want = sorted(_sha(b) for b in portal.expected_files(po).values())
        assert sorted(files_on_disk(outcome).values()) == want, f"PO {po}: wrong bytes"


def user_data_dirs_under(root: Path) -> set[str]:
    """--user-data-dir values of running processes that lie under root."""
    root_s = os.path.realpath(root)
    found = set()
    for proc in psutil.process_iter(["cmdline"]):
        for arg in proc.info.get("cmdline") or []:
            if arg.startswith("--user-data-dir="):
                value = os.path.realpath(arg.split("=", 1)[1])
                if value.startswith(root_s + os.sep):
                    found.add(value)
    return found


class DirWatcher:
    """Notes, while a run goes on, every browser profile dir in use under a root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            self.seen |= user_data_dirs_under(self.root)

    def __enter__(self) -> "DirWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def clone_dir(opts: RunOptions, run_id: str, worker_id: str) -> Path:
    return Path(opts.profiles_root) / f"run-{run_id}" / worker_id


def _is_driver(proc: psutil.Process) -> bool:
    try:
        return "chromedriver" in proc.name()
    except psutil.Error:
        return False


def _cmdline(proc: psutil.Process) -> str:
    """A process's command line, "" once it is gone (browser helpers come and go)."""
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# ---- 1. N workers, N clones, each signed in --------------------------------------------------------

@needs_browser
def test_each_worker_runs_its_own_signed_in_clone(tmp_path, demo):
    portal, profile = demo
    ids = group_ids("clones")
    sessions_before = len(portal.state()["sessions"])
    view = RecordingView()
    opts = run_options(write_orders(tmp_path, ids), tmp_path / "out", portal, profile, tmp_path, workers=3)
    with DirWatcher(tmp_path) as watcher:
        summary = MainApp(opts, view=view).run()

    assert summary.exit_code == EXIT_OK, summary.message
    assert_matches_truth(summary, portal, ids)
    # Three browsers, each on its own clone in this run's folder; never on the base profile itself.
    run_dir = os.path.realpath(opts.profiles_root / f"run-{summary.run_id}")
    assert watcher.seen == {os.path.join(run_dir, w) for w in ("w1", "w2", "w3")}
    # Each clone carried the login: nobody met a login page, and nobody signed in again.
    assert len(portal.state()["sessions"]) == sessions_before
    # One shared queue: every PO ran exactly once, on some worker of this pool.
    starts = view.actions("attempt_start")
    assert sorted(e.task_key for e in starts) == sorted(ids)
    assert {e.worker_id for e in starts} <= {"w1", "w2", "w3"}
    assert not (opts.profiles_root / f"run-{summary.run_id}").exists()
    assert (Path(profile) / "Default").is_dir()  # the base profile is the user's: never touched


# ---- 2. the same answers as sequential mode ------------------------------------------------------

@needs_browser
def test_parallel_gives_the_same_results_and_bytes_as_sequential(tmp_path, demo):
    portal, profile = demo
    ids = sorted(load_scenario(sample_scenario_path()).expected_outcomes())
    results = {}
    for mode in ("sequential", "parallel"):
        portal.reset()  # the sample's faults start over: both runs meet the same portal
        opts = run_options(sample_orders_path(), tmp_path / mode, portal, profile, tmp_path,
                           parallel=mode == "parallel")
        summary = MainApp(opts).run()
        assert summary.exit_code == EXIT_INCOMPLETE, summary.message  # PO 100010 fails by design
        assert_matches_truth(summary, portal, ids)
        results[mode] = {po: (o.status.value, o.reason, o.supplier, files_on_disk(o))
                         for po, o in summary.outcomes.items()}
    assert results["parallel"] == results["sequential"]
    assert {s for s, *_ in results["parallel"].values()} >= {"COMPLETED", "FAILED", "PO_NOT_FOUND", "NO_ATTACHMENTS"}


# ---- 3. a browser killed mid-PO ------------------------------------------------------------------

@needs_browser
def test_a_killed_browser_is_restarted_and_its_po_retried(tmp_path, demo):
    portal, profile = demo
    ids = group_ids("browser_kill")
    target = ids[2]
    killed: list[psutil.Process] = []

    def kill_browser(view: RecordingView, event: Event) -> None:
        if event.action == "attempt_start" and event.task_key == target and not killed:
            procs = browser_processes(clone_dir(opts, view.run_id, event.worker_id))
            browsers = [p for p in procs if not _is_driver(p)]
            assert browsers, "the worker's browser should be running"
            for p in browsers:  # the browser crashes; its driver stays
                p.kill()
            psutil.wait_procs(browsers, timeout=10)
            killed.extend(browsers)

    view = RecordingView(kill_browser)
    opts = run_options(write_orders(tmp_path, ids), tmp_path / "out", portal, profile, tmp_path)
    summary = MainApp(opts, view=view).run()

    assert killed, "the test never saw the target PO start"
    assert summary.exit_code == EXIT_OK, summary.message
    assert_matches_truth(summary, portal, ids)
    assert summary.outcomes[target].attempts == 2
    assert [e for e in view.actions("browser_restart") if e.task_key == target], "no browser restart"
    assert not view.actions("worker_lost")  # the worker itself lived on


# ---- 4. a worker process killed mid-PO -----------------------------------------------------------

@needs_browser
def test_a_killed_worker_is_replaced_and_its_po_requeued(tmp_path, demo):
    portal, profile = demo
    ids = group_ids("worker_kill")
    target = ids[2]
    killed: dict[str, Any] = {}

    def on_event(view: RecordingView, event: Event) -> None:
        if event.action == "attempt_start" and event.task_key == target and not killed:
            clone = clone_dir(opts, view.run_id, event.worker_id)
            drivers = [p for p in browser_processes(clone) if _is_driver(p)]
            assert len(drivers) == 1, "the worker's driver should be running"
            worker = drivers[0].parent()
            assert "spawn_main" in _cmdline(worker)
            worker.kill()  # SIGKILL: no cleanup, no goodbye
            killed.update(worker_id=event.worker_id, pid=worker.pid, clone=clone, at=time.monotonic())
        elif event.action == "worker_lost":
            # By the time the app hears of it, the pool has reaped the dead worker's browsers and clone.
            killed.update(lost=event, lost_at=time.monotonic(), browsers_left=browser_processes(killed["clone"]),
                          clone_left=killed["clone"].exists())

    view = RecordingView(on_event)
    opts = run_options(write_orders(tmp_path, ids), tmp_path / "out", portal, profile, tmp_path)
    summary = MainApp(opts, view=view).run()

    assert killed.get("pid"), "the test never saw the target PO start"
    assert "lost" in killed, "the pool never reported the dead worker"
    lost: Event = killed["lost"]
    assert (lost.worker_id, lost.task_key, lost.outcome) == (killed["worker_id"], target, "requeued")
    # At once (its sentinel), not after the pool's task timeout (minutes); generous for a loaded machine.
    assert killed["lost_at"] - killed["at"] < 10.0, "a dead worker is noticed at once"
    assert killed["browsers_left"] == [] and not killed["clone_left"]

    assert summary.exit_code == EXIT_OK, summary.message
    assert_matches_truth(summary, portal, ids)
    assert summary.outcomes[target].attempts == 2
    assert "w3" in {e.worker_id for e in view.actions("attempt_start")}, "no replacement worker ran"


# ---- 6. a login page pauses the whole run --------------------------------------------------------

@needs_browser
def test_a_login_page_pauses_the_whole_run_once(tmp_path, demo):
    portal, _profile = demo
    ids = group_ids("login")
    profile = seed_profile(tmp_path / "never-signed-in")
    view = RecordingView()
    opts = run_options(write_orders(tmp_path, ids), tmp_path / "out", portal, profile, tmp_path)
    summary = MainApp(opts, view=view).run()

    assert summary.exit_code == EXIT_LOGIN
    assert "sign" in summary.message.lower() and portal.base_url in summary.message
    assert {k: v for k, v in summary.counts.items() if v} == {"PENDING": len(ids)}
    assert len(view.done) <= 1  # one PO said "sign in"; the others were not turned into N answers
    assert not any(key.split("/")[0] in ids for key in portal.download_counts())
    store = RunStore(Path(summary.out_dir) / ".pobatch" / "runs.sqlite")
    try:
        assert {row["status"] for row in store.tasks().values()} == {"PENDING"}
    finally:
        store.close()


# ---- 5 and 7. the command line, killed or interrupted --------------------------------------------

@pytest.fixture
def short_tmp():
    """TMPDIR for a pobatch subprocess: its clones, driver scratch and browser sockets land here, so a
    test can check nothing is left (short: a browser's socket path must stay under 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="pbt-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def pobatch_run(orders: Path, out: Path, portal: DemoPortal, profile: Path, tmp: Path, log: Path,
                **popen: Any) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pobatch.core", "run", str(orders), "--site", "demo", "--base-url", portal.base_url,
           "--parallel", "--workers", "2", "--profile", str(profile), "--out", str(out), "-v"]
    env = dict(os.environ, TMPDIR=str(tmp), TEMP=str(tmp), TMP=str(tmp), PYTHONUNBUFFERED="1")
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True, **popen)


def store_rows(out: Path) -> dict[str, dict[str, Any]]:
    """The run store as another process sees it (read-only; empty before the run created it)."""
    path = out / ".pobatch" / "runs.sqlite"
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        db.row_factory = sqlite3.Row
        return {r["key"]: dict(r, data=json.loads(r["data"] or "{}")) for r in db.execute("SELECT * FROM tasks")}
    except sqlite3.OperationalError:  # the schema is being created right now
        return {}
    finally:
        db.close()


def with_status(out: Path, *wanted: str) -> set[str]:
    return {k for k, r in store_rows(out).items() if r["status"] in wanted}


def family_of(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def left_in_tmp(tmp: Path) -> list[str]:
    """What a run left in its TMPDIR: clones, driver scratch folders, browser socket folders."""
    found = [str(p.relative_to(tmp)) for p in tmp.iterdir() if p.name != "pobatch-profiles"]
    profiles = tmp / "pobatch-profiles"
    if profiles.is_dir():
        found += [str(p.relative_to(tmp)) for p in profiles.iterdir()]
    return found


def assert_store_matches_truth(out: Path, portal: DemoPortal, ids: list[str]) -> None:
    rows = store_rows(out)
    expected = portal.expected_outcomes()
    assert {k: (rows[k]["status"], rows[k]["reason"]) for k in ids} == {k: expected[k] for k in ids}
    for po in ids:
        outcome = outcome_from_data(rows[po]["data"])
        want = sorted(_sha(b) for b in portal.expected_files(po).values())
        assert sorted(files_on_disk(outcome).values()) == want, f"PO {po}: wrong bytes"


def assert_downloaded_once(portal: DemoPortal, pos: set[str]) -> None:
    counts = portal.download_counts()
    for po in pos:
        for entry in portal.scenario.entries(po):
            assert counts.get(entry.counter_key) == 1, f"{entry.counter_key} downloaded {counts.get(entry.counter_key)}x"


@needs_browser
def test_after_the_main_process_is_killed_a_rerun_loses_nothing_and_leaves_nothing(tmp_path, demo, short_tmp):
    portal, profile = demo
    ids = group_ids("main_kill")
    orders, out, log = write_orders(tmp_path, ids), tmp_path / "out", tmp_path / "pobatch.log"
    first = pobatch_run(orders, out, portal, profile, short_tmp, log)
    try:
        wait_for(lambda: len(with_status(out, "COMPLETED")) >= 2, 120, "two COMPLETED POs in the run store")
        family = family_of(first.pid)
        os.kill(first.pid, signal.SIGKILL)  # the main process only: its workers and browsers are orphaned
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    completed_before = with_status(out, "COMPLETED")
    assert completed_before < set(ids), "the run finished before the kill: make it longer"
    workers = [p for p in family if "spawn_main" in _cmdline(p)]
    assert len(workers) == 2 and any("--user-data-dir=" in _cmdline(p) for p in family)
    # The orphaned workers notice their parent is gone, abort their PO, and take their browsers and
    # clones with them (what they might miss, the rerun's sweep removes: see the test above).
    try:
        wait_for(lambda: not [p for p in family if _alive(p)], 45, "the orphans to exit by themselves",
                 interval=0.1)
    finally:
        for p in family:
            if _alive(p):
                p.kill()

    rerun = pobatch_run(orders, out, portal, profile, short_tmp, log)
    assert rerun.wait(180) == 0, log.read_text(errors="replace")[-3000:]

    assert_store_matches_truth(out, portal, ids)  # nothing lost
    assert_downloaded_once(portal, completed_before)  # nothing redone
    assert user_data_dirs_under(short_tmp) == set()
    assert left_in_tmp(short_tmp) == []
    assert not any((out / ".pobatch" / "staging").glob("*"))


@needs_browser
def test_ctrl_c_stops_gracefully_and_a_rerun_finishes(tmp_path, demo, short_tmp):
    portal, profile = demo
    ids = group_ids("ctrl_c")
    orders, out, log = write_orders(tmp_path, ids), tmp_path / "out", tmp_path / "pobatch.log"
    first = pobatch_run(orders, out, portal, profile, short_tmp, log)
    try:
        in_flight = wait_for(lambda: len(with_status(out, "COMPLETED")) >= 2 and with_status(out, "RUNNING"),
                             120, "two COMPLETED POs and one in flight")
        family = family_of(first.pid)
        os.killpg(first.pid, signal.SIGINT)  # what Ctrl+C in a terminal does: the whole process group
        code = first.wait(60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    assert code == EXIT_INTERRUPTED, log.read_text(errors="replace")[-3000:]
    wait_for(lambda: not [p for p in family if _alive(p)], 30, "every worker and browser to exit", interval=0.2)
    assert user_data_dirs_under(short_tmp) == set()
    assert left_in_tmp(short_tmp) == []

    rows = store_rows(out)
    expected = portal.expected_outcomes()
    done = {k for k, r in rows.items() if r["status"] == "COMPLETED"}
    assert {r["status"] for r in rows.values()} <= {"COMPLETED", "INTERRUPTED", "PENDING"}
    assert in_flight and {rows[k]["status"] for k in in_flight} <= {"COMPLETED", "INTERRUPTED"}
    assert len(done) < len(ids)
    for po in ids:
        if po in done:
            assert (rows[po]["status"], rows[po]["reason"]) == expected[po]
        else:  # not finished: no published folder claims otherwise
            assert not list(out.glob(f"*/{po}_*")), f"PO {po} is {rows[po]['status']} but has a folder"

    assert not any((out / ".pobatch" / "staging").glob("*"))

    rerun = pobatch_run(orders, out, portal, profile, short_tmp, log)
    assert rerun.wait(180) == 0, log.read_text(errors="replace")[-3000:]
    assert_store_matches_truth(out, portal, ids)
    assert_downloaded_once(portal, done)
    assert left_in_tmp(short_tmp) == []


# A pool whose parent is killed while both workers are busy (toy handlers from tests/pool_handlers.py).
_ORPHANED_POOL = """
import sys
from pobatch.corelib.worker_pool.tasks import Task
from pobatch.corelib.worker_pool import WorkerPool, WorkerSpec
from tests.pool_handlers import make_handler
if __name__ == "__main__":
    pool = WorkerPool(WorkerSpec(make_handler, {"close_dir": sys.argv[1]}), 2)
    for key in ("a", "b"):
        pool.submit(Task(key, {"do": "sleep", "seconds": 120}))
    for item in pool.results():
        if getattr(item, "action", "") == "running":
            print("running", item.worker_id, flush=True)
"""


def test_workers_whose_parent_dies_stop_at_once_and_close_their_handler(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", _ORPHANED_POOL, str(tmp_path)], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, start_new_session=True)
    try:
        running: set[str] = set()
        deadline = time.monotonic() + 60
        while len(running) < 2:
            assert time.monotonic() < deadline, "the workers never started their tasks"
            if select.select([parent.stdout], [], [], 1.0)[0]:
                line = parent.stdout.readline()
                assert line, "the pool's parent ended early"
                running.add(line.split()[1])
        workers = [p for p in family_of(parent.pid) if "spawn_main" in _cmdline(p)]
        assert len(workers) == 2
        parent.kill()
        parent.wait(10)
        killed_at = time.monotonic()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        parent.stdout.close()
    # Mid-task (a 120 s sleep), yet each worker notices within seconds, closes its handler and exits.
    try:
        wait_for(lambda: not [p for p in workers if _alive(p)], 30, "the orphaned workers to exit", interval=0.1)
    finally:
        for p in workers:
            if _alive(p):
                p.kill()
    assert time.monotonic() - killed_at < 30  # their tasks would have run for 120 s
    assert sorted(p.name for p in tmp_path.glob("closed-*")) == ["closed-w1", "closed-w2"]


# A worker's profile manager, as make_handler builds it, under a stand-in for the app's main process.
_ORPHANED_WORKER = """
import sys, time
from pobatch.corelib.browser.profile_manager import ProfileManager
base, root, app_pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
manager = ProfileManager(base, "orphaned", work_root=root, run_owner_pid=app_pid)
manager.clone("w1")
print("ready", flush=True)
time.sleep(120)
"""


def test_the_sweep_stops_the_live_orphans_of_a_run_whose_app_died(tmp_path):
    from pobatch.corelib.browser.profile_manager import ProfileManager

    base, root = tmp_path / "base", tmp_path / "profiles"
    (base / "Default").mkdir(parents=True)
    (base / "Default" / "Preferences").write_text("{}", encoding="utf-8")
    app = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    worker = subprocess.Popen([sys.executable, "-c", _ORPHANED_WORKER, str(base), str(root), str(app.pid)],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline().strip() == "ready"
        run_dir = root / "run-orphaned"
        assert (run_dir / "w1").is_dir()
        assert ProfileManager.sweep_orphans(root) == []  # app and worker alive: a live run
        app.kill()
        app.wait(10)
        assert worker.poll() is None  # the worker runs on: an orphan
        assert ProfileManager.sweep_orphans(root) == [run_dir]
        assert worker.wait(10) is not None  # stopped by the sweep
        assert not run_dir.exists()
    finally:
        for proc in (app, worker):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        worker.stdout.close()


# ---- workers that keep failing stop the run --------------------------------------------------------

@needs_browser
def test_workers_that_cannot_start_stop_the_run_with_one_clear_message(tmp_path, demo):
    portal, profile = demo
    ids = group_ids("auto")
    # A "browser" that exits at once: every worker fails to start, and so would every replacement.
    opts = run_options(write_orders(tmp_path, ids), tmp_path / "out", portal, profile, tmp_path,
                       browser_binary=shutil.which("false"))
    started = time.monotonic()
    with pytest.raises(FatalError) as failure:
        MainApp(opts).run()
    assert time.monotonic() - started < 60, "bounded: no restart loop"
    message = str(failure.value)
    assert "workers keep failing" in message and "Could not start chromium" in message, message
    assert failure.value.reason == "WORKERS_FAILED"
    assert {r["status"] for r in store_rows(tmp_path / "out").values()} == {"PENDING"}
    assert not list((tmp_path / "profiles").glob("run-*/*"))


# ---- 8. --workers auto -----------------------------------------------------------------------------

@needs_browser
def test_workers_auto_explains_its_choice_in_one_line_and_runs(tmp_path, demo, caplog):
    portal, profile = demo
    ids = group_ids("auto")
    opts = run_options(write_orders(tmp_path, ids), tmp_path / "out", portal, profile, tmp_path, workers=None)
    with caplog.at_level(logging.INFO, logger="pobatch.core.modes.parallel"), DirWatcher(tmp_path) as watcher:
        summary = MainApp(opts).run()
    assert summary.exit_code == EXIT_OK, summary.message
    assert_matches_truth(summary, portal, ids)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("--workers auto")]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    # "--workers auto: 3 (21.7 GiB free allows 37 at 300 MB each (...); 2 CPU(s) allow 4; cap 8; 3 PO(s))"
    m = re.fullmatch(r"--workers auto: (\d+) \((.*GiB free allows \d+ .*; \d+ CPU\(s\) allow \d+; cap \d+; "
                     r"3 PO\(s\))\)", lines[0])
    assert m, lines[0]
    n = int(m.group(1))
    assert n == auto_workers(len(ids))[0] and 1 <= n <= len(ids)
    assert len(watcher.seen) == n  # and that many browsers ran


# ---- 9. the engine as a library ----------------------------------------------------------------------

@needs_browser
def test_the_pool_with_the_po_handler_gives_one_result_per_item(tmp_path, demo):
    portal, profile = demo
    ids = group_ids("batch")
    job = JobConfig(site="demo", base_url=portal.base_url, out_dir=str(tmp_path / "out"), page_timeout=20,
                    download_timeout=20, po_timeout=60, backoff_base=0.2)
    cfg = WorkerConfig(job=job, browser=BrowserSpec(browser="chromium", local_only=True), base_profile=str(profile),
                       run_id="batch", profiles_root=str(tmp_path / "profiles"))
    tasks = [Task(key=po, payload={"po_number": po}) for po in ids] + [Task(key="broken", payload={})]
    with WorkerPool(WorkerSpec(make_handler, cfg), 1) as pool:
        for task in tasks:
            pool.submit(task)
        results = [r for r in pool.results() if isinstance(r, TaskResult)]  # one worker: in input order
    assert [r.key for r in results] == ids + ["broken"]
    expected = portal.expected_outcomes()
    assert [(r.status, r.reason) for r in results[:-1]] == [expected[po] for po in ids]
    assert (results[-1].status, results[-1].reason) == ("FAILED", "KEYERROR")  # captured, not raised
    assert not (tmp_path / "profiles" / "run-batch").exists()


# ---- the live console in parallel mode (no browser: fake events, a fake clock) ---------------------

def test_the_console_shows_each_worker_the_queue_the_rate_and_the_eta():
    now = [1000.0]
    console = Console(record=True, width=120)
    view = ConsoleView(console, clock=lambda: now[0])

    def at(t: float) -> None:
        now[0] = 1000.0 + t

    def start(worker: str, po: str, t: float) -> None:
        at(t)
        view.event(Event("attempt_start", task_key=po, worker_id=worker))

    def done(worker: str, po: str, t: float) -> None:
        at(t)
        view.task_done(worker, PoOutcome(po_number=po, status=Status.COMPLETED))

    view.start("run-1", total=10, skipped=0, mode="parallel")
    start("w1", "300001", 1), start("w2", "300002", 1), start("w3", "300003", 2)
    done("w1", "300001", 20), start("w1", "300004", 20)
    done("w2", "300002", 30), done("w3", "300003", 40), done("w1", "300004", 52)
    start("w1", "300005", 52), start("w3", "300006", 55)
    start("w3", "300006", 57)  # a retry of the same PO keeps its start time
    at(60)
    console.print(view.render())
    text = console.export_text()
    assert re.search(r"w1\s+busy\s+PO 300005\s+8\.0s", text), text
    assert re.search(r"w2\s+idle\s+30\.0s", text), text
    assert re.search(r"w3\s+busy\s+PO 300006\s+5\.0s", text), text
    # 4 done in one minute: 4.0 PO/min, 6 left: 1m 30s; 10 - 4 done - 2 busy = 4 waiting
    assert "Queue: 4 waiting, 2 busy, 4 of 10 done  4.0 PO/min  ETA 1m 30s" in text, text

    at(61)
    view.event(Event("worker_lost", task_key="300006", worker_id="w3", outcome="requeued",
                     detail="pid 4242 exit code -9"))
    console.print(view.render())
    text = console.export_text()
    assert "worker w3 died (pid 4242 exit code -9); PO 300006 goes back to the queue" in text
    assert not re.search(r"w3\s+(busy|idle)", text), text
    assert "Queue: 5 waiting, 1 busy, 4 of 10 done" in text, text

    quiet = Console(record=True, width=120)
    sequential = ConsoleView(quiet, clock=lambda: now[0])
    sequential.start("run-2", total=3, skipped=0, mode="sequential")
    sequential.event(Event("attempt_start", task_key="300001", worker_id="main"))
    quiet.print(sequential.render())
    assert "Queue:" not in quiet.export_text()  # one browser: no worker table
