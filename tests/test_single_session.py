"""The single-session strategy end to end: the real demo portal, one real headless Chromium.

One browser, one WebDriver session, N windows fed from one task queue, each running the ordinary
per-PO workflow. What must hold: every file reaches the PO whose window downloaded it (two windows
downloading files of the same name at the same moment included), a window that crashes or stalls is
replaced and its PO retried, and a portal that rotates its session token on every response is
completed here, while parallel mode stops at once with one message that points here.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pobatch.core.app import MainApp, RunOptions, RunSummary
from pobatch.core.exit_codes import EXIT_LOGIN, EXIT_OK
from pobatch.core.cli import main as cli_main
from pobatch.core.demo_portal import DemoPortal
from pobatch.core.commands.login import prepare_demo_profile
from pobatch.core.status import Status
from pobatch.corelib.browser.devtools import DevToolsError, DevToolsLink, browser_websocket_url
from pobatch.corelib.store import RunStore
from pobatch.core.modes.single_session.window_pool import SessionHealth
from orders_files import write_orders
from truth import assert_matches_truth, sha

needs_browser = pytest.mark.usefixtures("browser_available")


def same_name_po(po_id: str) -> dict[str, Any]:
    """Four attachments under two names, by every route a file can take (link, download attribute,
    popup window, script); every PO of the group serves the same names with different bytes."""
    return {"id": po_id, "supplier": "Acme Office Supplies", "attachments": [
        {"name": "invoice.pdf", "kind": "link", "size": 40_000},
        {"name": "invoice.pdf", "kind": "download_attr", "size": 30_000},
        {"name": "scan.pdf", "kind": "popup", "size": 20_000},
        {"name": "scan.pdf", "kind": "js", "size": 25_000}]}


def plain_po(po_id: str, files: int = 2, first_faults: list[str] | None = None) -> dict[str, Any]:
    atts = [{"name": f"Doc {po_id}-{i}.pdf", "kind": "link", "size": 9_000 + i} for i in range(files)]
    if first_faults:
        atts[0]["faults"] = first_faults
    return {"id": po_id, "supplier": "Nordic Parts AB", "attachments": atts}


GROUPS: dict[str, list[dict[str, Any]]] = {
    "same_name": [same_name_po(str(400001 + i)) for i in range(6)],
    "stall": [plain_po("410001", first_faults=["stall_mid", "ok"]), plain_po("410002"), plain_po("410003")],
    "crash": [plain_po("420001", files=4), plain_po("420002"), plain_po("420003")],
    "kill": [plain_po(str(440001 + i), files=3) for i in range(4)],
}


def ids(group: str) -> list[str]:
    return [p["id"] for p in GROUPS[group]]


@pytest.fixture(scope="module")
def portal(tmp_path_factory, browser_available_module):
    """(portal, signed-in profile): slow downloads, quick pages, so windows download at the same time."""
    directory = tmp_path_factory.mktemp("ss-portal")
    scenario = {"name": "single-session", "seed": 11, "stall_seconds": 30,
                "latency": {"page_ms": 60, "attachment_ms": 500},
                "pos": [po for group in GROUPS.values() for po in group]}
    (directory / "scenario.json").write_text(json.dumps(scenario), encoding="utf-8")
    with DemoPortal(directory / "scenario.json") as p:
        yield p, prepare_demo_profile(directory / "profile", p.base_url)


def run_single(tmp_path: Path, portal: DemoPortal, profile: Path, po_ids: list[str], windows: int = 3,
               **kw: Any) -> RunSummary:
    settings: dict[str, Any] = dict(po_timeout=90.0, page_timeout=20.0, download_timeout=30.0, stall_timeout=10.0,
                                    backoff_base=0.2)
    settings.update(kw)
    opts = RunOptions(orders=write_orders(tmp_path, po_ids), out=tmp_path / "out", site="demo",
                      base_url=portal.base_url, browser="chromium", profile=profile, local_only=True,
                      profiles_root=tmp_path / "profiles", strategy="single-session", windows=windows, **settings)
    return MainApp(opts).run()


def timeline(summary: RunSummary) -> list[Any]:
    with RunStore(summary.out_dir / ".pobatch" / "runs.sqlite") as store:
        return store.timeline(summary.run_id)


def strategy_stats(summary: RunSummary) -> dict[str, Any]:
    found = [e for e in timeline(summary) if e.action == "single_session_stats"]
    assert len(found) == 1
    return json.loads(found[0].detail)


# ---- attribution ---------------------------------------------------------------------------------

@needs_browser
def test_same_name_downloads_at_the_same_moment_reach_their_own_po(tmp_path, portal):
    p, profile = portal
    po_ids = ids("same_name")
    summary = run_single(tmp_path, p, profile, po_ids, windows=3)

    assert_matches_truth(summary, p, po_ids)
    assert summary.exit_code == EXIT_OK
    stats = strategy_stats(summary)
    # The risk was real: files of one name were in flight in two windows at once ...
    assert stats["peak_same_name"] >= 2, stats
    # ... and every file the browser finished went to a PO: none kept back, none lost.
    assert stats["delivered"] == 4 * len(po_ids) and stats["unclaimed"] == 0, stats
    assert stats["browser_starts"] == 1 and stats["windows"] == 3
    # the same contracts as the other modes: one browser session served three windows' POs,
    # the run store knows the mode, and the workbook and the report are written
    assert {summary.outcomes[po].attempts for po in po_ids} == {1}
    assert len({e.worker_id for e in timeline(summary) if e.action == "attempt_start"}) == 3
    with RunStore(summary.out_dir / ".pobatch" / "runs.sqlite") as store:
        assert store.run(summary.run_id)["mode"] == "single-session"
    assert summary.results_path and summary.results_path.is_file()
    assert not list((summary.out_dir / ".pobatch" / "staging").glob("*"))


# ---- windows that fail -----------------------------------------------------------------------------

@needs_browser
def test_a_stalled_download_is_cancelled_by_its_guid_and_its_po_is_retried(tmp_path, portal):
    p, profile = portal
    po_ids = ids("stall")
    summary = run_single(tmp_path, p, profile, po_ids, windows=2, stall_timeout=3.0)

    assert_matches_truth(summary, p, po_ids)
    assert summary.exit_code == EXIT_OK
    assert summary.outcomes["410001"].attempts == 2
    events = timeline(summary)
    worker = next(e.worker_id for e in events if e.action == "attempt_start" and e.task_key == "410001")
    opened = [e.detail for e in events if e.action == "window_open" and e.worker_id == worker]
    # the stalled download was cancelled by its GUID: the window itself did not need replacing
    assert opened and all("instance 1" in d for d in opened), opened
    stats = strategy_stats(summary)
    assert stats["browser_starts"] == 1 and stats["cancelled"] >= 1, stats  # the stalled download was cancelled


class _Crasher(threading.Thread):
    """Crashes the renderer of the window that shows `po_id` once its first download has begun,
    through the browser's own DevTools port (the one ChromeDriver uses too)."""

    def __init__(self, portal: DemoPortal, profiles_root: Path, po_id: str, deadline: float = 60.0) -> None:
        super().__init__(daemon=True)
        self.portal, self.profiles_root, self.po_id = portal, profiles_root, po_id
        self.deadline = time.monotonic() + deadline
        self.crashed = threading.Event()
        self.stop = threading.Event()

    def _downloading(self) -> bool:
        return any(key.startswith(f"{self.po_id}/") for key in self.portal.attachment_requests())

    def run(self) -> None:
        link = None
        try:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                time.sleep(0.05)
                if not self._downloading():
                    continue
                ports = list(self.profiles_root.rglob("DevToolsActivePort"))
                if link is None and ports:
                    link = DevToolsLink(browser_websocket_url("127.0.0.1:" + ports[0].read_text().split()[0]))
                if link is None:
                    continue
                for t in link.call("Target.getTargets")["targetInfos"]:
                    if t["type"] == "page" and t["url"].endswith(f"/order_headers/{self.po_id}"):
                        session = link.call("Target.attachToTarget",
                                            {"targetId": t["targetId"], "flatten": True})["sessionId"]
                        try:
                            link.call("Page.crash", session_id=session, timeout=2)
                        except DevToolsError as exc:
                            if "pending navigations" in str(exc):  # a download is starting: not now
                                link.call("Target.detachFromTarget", {"sessionId": session})
                                continue
                            # otherwise the renderer was gone before it could answer: crashed
                        self.crashed.set()
                        return
        finally:
            if link is not None:
                link.close()


@needs_browser
def test_a_crashed_window_is_replaced_and_only_its_po_is_retried(tmp_path, portal):
    p, profile = portal
    po_ids = ids("crash")
    crasher = _Crasher(p, tmp_path / "profiles", "420001")
    crasher.start()
    try:
        summary = run_single(tmp_path, p, profile, po_ids, windows=2)
    finally:
        crasher.stop.set()
        crasher.join(10)

    assert crasher.crashed.is_set()
    assert_matches_truth(summary, p, po_ids)
    assert summary.exit_code == EXIT_OK
    assert summary.outcomes["420001"].attempts == 2
    assert {summary.outcomes[po].attempts for po in ("420002", "420003")} == {1}  # the other window went on
    stats = strategy_stats(summary)
    assert stats["browser_starts"] == 1 and stats["window_instances"] == 3, stats


@needs_browser
def test_a_killed_browser_is_started_again_once_for_every_window(tmp_path, portal):
    from pobatch.corelib.browser.process_reaper import kill_browser_tree

    p, profile = portal
    po_ids = ids("kill")
    killed: list[int] = []

    def kill_once_downloading() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(k.startswith("440002/") for k in p.attachment_requests()):
            time.sleep(0.05)
        for port_file in (tmp_path / "profiles").rglob("DevToolsActivePort"):
            killed.append(kill_browser_tree(port_file.parent))

    killer = threading.Thread(target=kill_once_downloading, daemon=True)
    killer.start()
    summary = run_single(tmp_path, p, profile, po_ids, windows=2)
    killer.join(10)

    assert killed and killed[0] > 0
    assert_matches_truth(summary, p, po_ids)
    assert summary.exit_code == EXIT_OK
    assert summary.outcomes["440002"].attempts == 2
    stats = strategy_stats(summary)
    assert stats["browser_starts"] == 2, stats  # one new browser, not one per window


# ---- one live session per user ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def rotating(tmp_path_factory, browser_available_module):
    """A portal that renews its session token on every response: copies of one sign-in log each other out."""
    directory = tmp_path_factory.mktemp("ss-rotating")
    scenario = {"name": "rotating", "seed": 12, "latency": {"page_ms": 150, "attachment_ms": 80},
                "session": {"rotate_token": True},
                "pos": [plain_po(str(430001 + i), files=1 + i % 3) for i in range(8)]}
    (directory / "scenario.json").write_text(json.dumps(scenario), encoding="utf-8")
    with DemoPortal(directory / "scenario.json") as p:
        yield p, directory


@pytest.fixture
def own_tempdir(monkeypatch):
    """The command line puts profile clones under the system temp dir, where other test sessions'
    leak checks look too: give this test a temp dir of its own (short: browser socket paths)."""
    path = Path(tempfile.mkdtemp(prefix="pbss-"))
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@needs_browser
def test_a_rotating_session_token_completes_in_one_session_from_the_command_line(tmp_path, rotating, own_tempdir):
    p, directory = rotating
    po_ids = [po.id for po in p.scenario.pos]
    profile = prepare_demo_profile(tmp_path / "profile", p.base_url)  # each sign-in is used up by one run
    out = tmp_path / "out"
    result = CliRunner().invoke(cli_main, [
        "run", str(write_orders(tmp_path, po_ids)), "--site", "demo", "--base-url", p.base_url,
        "--profile", str(profile), "--out", str(out), "--strategy", "single-session", "--windows", "3"])

    with RunStore(out / ".pobatch" / "runs.sqlite") as store:
        rows = store.tasks()
        story = [f"{e.worker_id} {e.task_key} a{e.attempt} {e.action} {e.outcome} {e.detail[:120]}"
                 for e in store.timeline(store.last_run_id()) if e.action in ("open", "attempt_end", "login_recheck")]
    assert result.exit_code == EXIT_OK, "\n".join([result.output[-2000:], *story])
    assert {po: rows[po]["status"] for po in po_ids} == {po: Status.COMPLETED.value for po in po_ids}
    for po in po_ids:
        folder = Path(rows[po]["data"]["download_folder"])
        assert Counter(sha(f.read_bytes()) for f in folder.iterdir()) == \
            Counter(sha(b) for b in p.expected_files(po).values())


@needs_browser
def test_parallel_mode_on_a_rotating_token_stops_at_once_and_names_single_session(tmp_path, rotating):
    p, _ = rotating
    po_ids = [po.id for po in p.scenario.pos]
    profile = prepare_demo_profile(tmp_path / "profile", p.base_url)
    done: list[str] = []

    class View:
        def start(self, *a: Any) -> None: ...
        def event(self, e: Any) -> None: ...
        def finish(self, s: Any) -> None: ...
        def task_done(self, worker: str, outcome: Any) -> None:
            done.append(outcome.status.value)

    opts = RunOptions(orders=write_orders(tmp_path, po_ids), out=tmp_path / "out", site="demo",
                      base_url=p.base_url, browser="chromium", profile=profile, local_only=True,
                      profiles_root=tmp_path / "profiles", parallel=True, workers=2, po_timeout=60.0,
                      page_timeout=20.0, download_timeout=20.0, backoff_base=0.2)
    t0 = time.monotonic()
    summary = MainApp(opts, view=View()).run()

    assert summary.exit_code == EXIT_LOGIN
    assert "--strategy single-session" in summary.message and "one live session" in summary.message
    assert done.count(Status.LOGIN_REQUIRED.value) == 1  # one message, not one per worker
    assert summary.counts[Status.LOGIN_REQUIRED.value] == 0  # the sign-in is not an answer about any PO
    assert summary.counts[Status.PENDING.value] >= len(po_ids) - 4  # it stopped early
    assert time.monotonic() - t0 < 90


def test_a_sign_in_page_between_signed_in_pages_is_given_a_second_look():
    health = SessionHealth(windows=3)
    assert health.login_page("A")  # the token race: try again
    health.signed_in_page()
    assert health.login_page("A")
    assert not health.login_page("A")  # the same PO a third time: a real sign-in page
    health.signed_in_page()
    # sign-in pages with no signed-in page in between, in every window: the session has ended
    assert [health.login_page(k) for k in "BCDEF"] == [True, True, True, True, False]


def test_single_session_and_parallel_exclude_each_other(tmp_path):
    orders = write_orders(tmp_path, ["100001"])
    result = CliRunner().invoke(cli_main, ["run", str(orders), "--site", "demo", "--base-url", "http://127.0.0.1:9",
                                           "--strategy", "single-session", "--parallel"])
    assert result.exit_code == 2 and "--parallel" in result.output
