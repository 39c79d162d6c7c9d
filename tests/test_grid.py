"""Grid mode end to end: a real Selenium Grid 4.20 standalone, real headless Chromium on its node, the real
demo portal, MainApp in-process.

The Grid is started once for the module (tests/grid_server.py) and its whole process tree is killed and
its temp folder deleted at the end, which the module fixture asserts. The conftest check sees the Grid's
browsers (their --user-data-dir lies under the pytest temp folder) and fails a test that leaves one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import pytest

from pobatch.core.app import MainApp, RunOptions, RunSummary
from pobatch.core.exit_codes import EXIT_LOGIN, EXIT_OK
from pobatch.core.demo_portal import DemoPortal, sample_orders_path, sample_scenario_path, unfamiliar_scenario_path
from pobatch.core.demo_portal.scenario import Scenario, many_attachment_pos
from pobatch.core.modes.grid_login import apply_cookies, read_portal_cookies
from pobatch.core.commands.login import prepare_demo_profile
from pobatch.core.preparation.profiles import seed_profile
from pobatch.core.results import PoOutcome
from pobatch.core.status import Status
from pobatch.corelib.browser.factory import BrowserSpec
from pobatch.corelib.errors import ErrorClass, FatalError, classify
from pobatch.corelib.browser.grid import GridSpec, SlotCount, check_grid, count_slots, free_slots, grid_status
from pobatch.corelib.browser.remote_session import RemoteBrowserSession
from pobatch.corelib.store import RunStore
from eventually import wait_for
from orders_files import write_orders as write_orders_file

try:
    from tests.grid_server import GridServer, free_port, missing_tools
except ImportError:  # pragma: no cover - tests/ itself on sys.path
    from grid_server import GridServer, free_port, missing_tools  # type: ignore[no-redef]

pytestmark = [pytest.mark.timeout(300)]

SLOTS = 2


# ---- the Grid, portals, profiles ----------------------------------------------------------------

@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    missing = missing_tools()
    if missing:
        msg = f"Selenium Grid tests need {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(msg)  # .ci/run installs them: a skip there would hide a broken set-up
        pytest.skip(msg)
    server = GridServer(tmp_path_factory.mktemp("grid"), max_sessions=SLOTS)
    server.start()
    try:
        yield server
    finally:
        java_pid = server.pid
        server.stop()
        assert not server.processes(), f"Grid processes left: {server.processes()}"
        assert not psutil.pid_exists(java_pid) or psutil.Process(java_pid).status() == psutil.STATUS_ZOMBIE
        assert not server.tmp.exists(), f"Grid temp folder left: {server.tmp}"


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """(portal, signed-in profile) for the bundled sample scenario, as `pobatch demo` runs it."""
    directory = tmp_path_factory.mktemp("sample")
    with DemoPortal(sample_scenario_path()).start() as portal:
        yield portal, prepare_demo_profile(directory / "profile", portal.base_url)


SLOW_ATTACHMENT_MS = 8000  # half before the headers, half spread over the body: 4 s of a growing file

CUSTOM_POS: list[dict[str, Any]] = [
    {"id": "700001", "supplier": "Slow Drawings Ltd",
     "attachments": [{"name": "Large drawing.pdf", "kind": "link", "size": 1_500_000}]},
    {"id": "700002", "supplier": "Slow Drawings Ltd",
     "attachments": [{"name": "Growing slowly.pdf", "kind": "download_attr", "size": 600_000}]},
    {"id": "700003", "supplier": "Stuck Transfers AG",
     "attachments": [{"name": "Never finishes.pdf", "kind": "link", "size": 600_000, "faults": ["stall_mid"]}]},
    {"id": "700004", "supplier": "Slow Pages Inc", "faults": {"page": ["stall"]},
     "attachments": [{"name": "Behind a stalled page.pdf", "kind": "link", "size": 5000}]},
    {"id": "700005", "supplier": "Quick Parts", "attachments": [{"name": "Quick 1.pdf", "size": 5000}]},
    {"id": "700006", "supplier": "Quick Parts", "attachments": [{"name": "Quick 2.pdf", "size": 6000}]},
]


@pytest.fixture(scope="module")
def custom(tmp_path_factory):
    """(portal, signed-in profile): slow, stalling and quick POs, one attempt per PO in the truth."""
    directory = tmp_path_factory.mktemp("custom")
    path = directory / "scenario.json"
    path.write_text(json.dumps({"name": "grid", "seed": 5, "stall_seconds": 60, "client_max_attempts": 1,
                                "latency": {"page_ms": 0, "attachment_ms": SLOW_ATTACHMENT_MS},
                                "pos": CUSTOM_POS}), encoding="utf-8")
    with DemoPortal(path).start() as portal:
        yield portal, prepare_demo_profile(directory / "profile", portal.base_url)


@pytest.fixture(scope="module")
def unfamiliar(tmp_path_factory):
    """(portal, signed-in profile) serving pages pobatch has never seen (issue 13's shapes)."""
    directory = tmp_path_factory.mktemp("unfamiliar")
    with DemoPortal(unfamiliar_scenario_path()).start() as portal:
        yield portal, prepare_demo_profile(directory / "profile", portal.base_url)


@pytest.fixture(autouse=True)
def grid_sessions_released(request):
    """After each test every Grid slot is free again: no remote session outlives its run."""
    yield
    if "grid" in request.fixturenames:
        server: GridServer = request.getfixturevalue("grid")
        wait_for(lambda: free_slots(server.url, "chromium").free == SLOTS, 30, "every Grid slot free again")


# ---- helpers ------------------------------------------------------------------------------------

write_orders = partial(write_orders_file, prefix="PO")  # these scenarios number POs "PO<n>"


def options(orders: Path, out: Path, portal: DemoPortal, profile: Path, tmp_path: Path, **kw: Any) -> RunOptions:
    base: dict[str, Any] = dict(site="demo", base_url=portal.base_url, browser="chromium", profile=profile,
                                parallel=True, workers=SLOTS, local_only=True, profiles_root=tmp_path / "profiles",
                                po_timeout=120.0, page_timeout=30.0, download_timeout=60.0, stall_timeout=10.0,
                                backoff_base=0.2)
    base.update(kw)
    return RunOptions(orders=orders, out=out, **base)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def statuses(summary: RunSummary) -> dict[str, tuple[str, str]]:
    return {po: (o.status.value, o.reason) for po, o in summary.outcomes.items()}


def files_on_disk(outcome: PoOutcome) -> dict[str, str]:
    """name -> sha256 of what the PO folder really holds (checked against what the outcome claims)."""
    if not outcome.download_folder:
        return {}
    folder = Path(outcome.download_folder)
    found = {p.name: sha(p.read_bytes()) for p in folder.iterdir() if p.is_file()}
    assert found == {f.name: f.sha256 for f in outcome.files}, f"PO {outcome.po_number}: folder and record differ"
    return found


def worker_ids(summary: RunSummary) -> set[str]:
    with RunStore(summary.out_dir / ".pobatch" / "runs.sqlite") as store:
        return {a["worker_id"] for a in store.attempts(summary.run_id)}


def events(summary: RunSummary, action: str) -> list[Any]:
    with RunStore(summary.out_dir / ".pobatch" / "runs.sqlite") as store:
        return [e for e in store.timeline(summary.run_id) if e.action == action]


# ---- tests --------------------------------------------------------------------------------------

def test_sample_through_the_grid_gets_the_same_statuses_and_bytes_as_local(grid, sample, tmp_path):
    portal, profile = sample
    orders = sample_orders_path()
    t0 = time.monotonic()
    local = MainApp(options(orders, tmp_path / "local", portal, profile, tmp_path)).run()
    t_local = time.monotonic() - t0
    portal.reset()  # the same fault sequences again
    t0 = time.monotonic()
    remote = MainApp(options(orders, tmp_path / "grid", portal, profile, tmp_path, grid=grid.url)).run()
    t_grid = time.monotonic() - t0
    logging.getLogger(__name__).info("sample: local %.1fs, grid %.1fs", t_local, t_grid)

    expected = portal.expected_outcomes()
    assert statuses(local) == expected
    assert statuses(remote) == statuses(local)
    assert remote.exit_code == local.exit_code
    for po in expected:
        local_files = files_on_disk(local.outcomes[po])
        grid_files = files_on_disk(remote.outcomes[po])
        assert grid_files == local_files, f"PO {po}: the Grid run got other files or bytes"
        assert sorted(grid_files.values()) == sorted(sha(b) for b in portal.expected_files(po).values())
    assert worker_ids(remote) == {"w1", "w2"}, "two Grid sessions worked side by side"
    with RunStore(remote.out_dir / ".pobatch" / "runs.sqlite") as store:
        assert store.run(remote.run_id)["mode"] == "grid"
    # No download went through this PC's browser folders: every file came back through the Grid.
    assert not list((tmp_path / "grid" / ".pobatch").glob("staging/incoming-*"))


def test_grid_browser_killed_mid_download_the_po_still_completes(grid, custom, tmp_path):
    portal, profile = custom
    portal.reset()
    killed: list[int] = []
    result: dict[str, RunSummary] = {}
    opts = options(write_orders(tmp_path, ["700001"]), tmp_path / "out", portal, profile, tmp_path,
                   grid=grid.url, workers=1, max_attempts=3)
    runner = threading.Thread(target=lambda: result.setdefault("s", MainApp(opts).run()), daemon=True)
    runner.start()
    # The node is writing the slow attachment: kill its browser (children of the Grid's chromedriver).
    wait_for(grid.partial_downloads, 60, "the slow attachment to be downloading on the node")
    for proc in grid.browser_main_processes():
        killed.append(proc.pid)
        proc.kill()
    assert killed, "found the node's browser"
    runner.join(150)
    assert not runner.is_alive()
    summary = result["s"]
    outcome = summary.outcomes["700001"]
    assert (outcome.status, outcome.reason) == (Status.COMPLETED, "")
    assert outcome.attempts >= 2, "the PO was retried after its browser died"
    assert sorted(files_on_disk(outcome).values()) == sorted(sha(b) for b in portal.expected_files("700001").values())
    assert not set(killed) & {p.pid for p in psutil.process_iter()}
    assert events(summary, "browser_restart"), "the worker started a new Grid session"


def test_grid_downloads_keep_the_local_stall_and_timeout_semantics(grid, custom, tmp_path):
    """A file that grows for longer than stall_timeout is slow, not stalled; one that stops growing is
    reported as stalled after about stall_timeout, long before download_timeout."""
    portal, profile = custom
    portal.reset()
    opts = options(write_orders(tmp_path, ["700002", "700003"]), tmp_path / "out", portal, profile, tmp_path,
                   grid=grid.url, workers=2, max_attempts=1, stall_timeout=2.0, download_timeout=60.0)
    summary = MainApp(opts).run()
    slow, stuck = summary.outcomes["700002"], summary.outcomes["700003"]
    assert (slow.status, slow.reason) == (Status.COMPLETED, "")
    assert sorted(files_on_disk(slow).values()) == sorted(sha(b) for b in portal.expected_files("700002").values())
    assert (stuck.status, stuck.reason) == (Status.PARTIAL, "DOWNLOAD_FAILED")
    assert "stopped growing" in stuck.error_message
    # headers after 4 s, growth for 2 s, stall noticed within ~1.5 x 2 s; a session restart follows
    assert stuck.finished - stuck.started < 30, f"stall noticed only after {stuck.finished - stuck.started:.0f}s"
    assert statuses(summary) == {po: portal.expected_outcomes()[po] for po in ("700002", "700003")}


def test_workers_auto_uses_the_grids_free_slots(grid, sample, tmp_path, caplog):
    portal, profile = sample
    portal.reset()
    spec = BrowserSpec(browser="chromium", local_only=True)
    with RemoteBrowserSession(spec, GridSpec(grid.url)) as other_user:
        assert other_user.started  # someone else holds one of the two slots
        assert free_slots(grid.url, "chromium").free == SLOTS - 1
        caplog.set_level(logging.INFO, logger="pobatch.core.modes.grid")
        opts = options(write_orders(tmp_path, ["100003", "100012"]), tmp_path / "out", portal, profile, tmp_path,
                       grid=grid.url, workers=None)
        summary = MainApp(opts).run()
    assert summary.exit_code == EXIT_OK
    assert f"--workers auto: {SLOTS - 1} (the Grid's free slots: {SLOTS - 1} of {SLOTS})" in caplog.text
    assert worker_ids(summary) == {"w1"}


def test_a_lost_session_is_a_transient_error_and_restart_gives_a_working_one(grid, custom, tmp_path):
    """The watchdog's lever: deleting the session on the Grid frees a thread blocked in a page load."""
    portal, profile = custom
    portal.reset()
    spec = BrowserSpec(browser="chromium", local_only=True, page_load_timeout=60)
    cookies = read_portal_cookies(profile, portal.base_url, spec, "lost", profiles_root=tmp_path / "profiles")
    session = RemoteBrowserSession(spec, GridSpec(grid.url),
                                   on_start=lambda d: apply_cookies(d, portal.base_url, cookies))
    with session:
        driver = session.driver
        first = session.session_id
        threading.Thread(target=lambda: (wait_for(lambda: portal.stalls_in_flight() > 0, 30, "the stalled page"),
                                         session.abort()), daemon=True).start()
        t0 = time.monotonic()
        try:
            driver.get(portal.po_url("700004"))  # the portal holds this page for 60 s
        except Exception as exc:  # returning or raising: either way the call is free again
            assert classify(exc) is ErrorClass.TRANSIENT
        assert time.monotonic() - t0 < 30, "abort() freed the blocked page load"
        with pytest.raises(Exception) as err:
            driver.title
        assert classify(err.value) is ErrorClass.TRANSIENT
        assert not session.is_alive()
        session.restart()
        session.start()
        driver = session.driver
        assert session.session_id != first
        driver.get(portal.po_url("700005"))  # the cookies came along to the new session
        assert "Purchase Order #700005" in driver.title


def test_a_profile_without_a_portal_session_stops_the_run_for_a_login(grid, custom, tmp_path):
    portal, _profile = custom
    portal.reset()
    blank = seed_profile(tmp_path / "blank-profile")
    spec = BrowserSpec(browser="chromium", local_only=True)
    assert read_portal_cookies(blank, portal.base_url, spec, "blank", profiles_root=tmp_path / "profiles") == []
    opts = options(write_orders(tmp_path, ["700005"]), tmp_path / "out", portal, blank, tmp_path,
                   grid=grid.url, workers=1)
    summary = MainApp(opts).run()
    assert summary.exit_code == EXIT_LOGIN
    assert "sign-in" in summary.message
    assert summary.outcomes["700005"].status is Status.PENDING


def test_grid_address_problems_are_fatal_and_clear():
    with pytest.raises(FatalError, match="not a Grid address"):
        GridSpec("gridhost:4444")
    with pytest.raises(FatalError) as err:
        check_grid(f"http://127.0.0.1:{free_port()}", "chromium")  # nothing listens there
    assert err.value.reason == "GRID_UNREACHABLE"
    assert "Start the Grid first" in str(err.value)


def test_slots_without_managed_downloads_do_not_count(grid):
    """Such a slot would keep our request queued until the Grid's timeout: they are counted apart."""
    status = grid_status(grid.url)
    assert count_slots(status, "chrome") == SlotCount(SLOTS, SLOTS, 0)
    assert count_slots(status, "MicrosoftEdge") == SlotCount(0, 0, 0)
    for node in status["nodes"]:
        for slot in node["slots"]:
            del slot["stereotype"]["se:downloadsEnabled"]
    assert count_slots(status, "chrome") == SlotCount(0, 0, SLOTS)


def test_grid_sessions_know_the_http_status_and_the_pages_identity(grid, unfamiliar, tmp_path):
    """Navigation Timing's responseStatus answers through a remote session too: a bare 500, a proxy's
    502 and a 404 without not-found text get their true reasons, a redirect to another PO proves
    nothing, and a list drawn after the page loaded is awaited."""
    portal, profile = unfamiliar
    pos = ["300002", "300005", "300006", "300010", "300012", "300020"]
    opts = options(write_orders(tmp_path, pos), tmp_path / "out", portal, profile, tmp_path, grid=grid.url,
                   backoff_base=0.1)
    summary = MainApp(opts).run()
    expected = portal.expected_outcomes()
    assert statuses(summary) == {po: tuple(expected[po]) for po in pos}
    for po in ("300002", "300020"):
        assert sorted(files_on_disk(summary.outcomes[po]).values()) == \
            sorted(sha(b) for b in portal.expected_files(po).values())
    opened = [e for e in events(summary, "open") if e.task_key == "300006"]
    assert opened and all("HTTP 502" in e.detail for e in opened)


# ---- issue 21: many attachments, a web page instead of a file, single-sign-on refreshes ---------

def shapes_portal(tmp_path_factory, name: str, scenario: dict[str, Any]):
    directory = tmp_path_factory.mktemp(name)
    portal = DemoPortal(Scenario.from_dict(scenario)).start()
    try:
        return portal, prepare_demo_profile(directory / "profile", portal.base_url)
    except BaseException:
        portal.stop()
        raise


def test_the_grid_completes_many_attachments_and_says_partial_for_a_page_instead_of_a_file(grid, tmp_path_factory,
                                                                                         tmp_path):
    """50 files of every kind and 12 links one click at a time; a missing file answered with a page is
    PARTIAL with the reason (not TIMEOUT); a click a page ignores is known in seconds and made again."""
    many = [po for po in many_attachment_pos((12,), mixed=(50,), first_id=710001)]
    scenario = {"name": "grid-many", "seed": 4, "latency": {"page_ms": 20, "attachment_ms": 5},
                "pos": [{"id": po.id, "supplier": po.supplier,
                         "attachments": [{"name": a.name, "kind": a.kind, "size": a.size} for a in po.attachments]}
                        for po in many]
                + [{"id": "710009", "supplier": "Missing Files BV",
                    "attachments": [{"name": "here.pdf", "size": 3000},
                                    {"name": "gone.pdf", "size": 3000, "faults": ["html200"]}]},
                   {"id": "710010", "supplier": "Trusted Clicks Ltd",
                    "attachments": [{"name": "needs a real click.pdf", "kind": "trusted_js", "size": 3000}]}]}
    portal, profile = shapes_portal(tmp_path_factory, "grid-many", scenario)
    with portal:
        pos = [po["id"] for po in scenario["pos"]]
        opts = options(write_orders(tmp_path, pos), tmp_path / "out", portal, profile, tmp_path, grid=grid.url,
                       po_timeout=30.0, max_attempts=2)
        summary = MainApp(opts).run()
        expected = portal.expected_outcomes()
        assert statuses(summary) == {po: tuple(expected[po]) for po in pos}, \
            {po: o.error_message for po, o in summary.outcomes.items()}
        assert sorted(len(summary.outcomes[po].files) for po in pos) == [1, 1, 12, 50]
        retried = [e for e in events(summary, "download_not_begun") if e.task_key == "710010"]
        assert [e.outcome for e in retried] == ["retry"] and "pointer click" in retried[0].detail
        partial = summary.outcomes["710009"]
        assert (partial.status, partial.reason) == (Status.PARTIAL, "DOWNLOAD_FAILED")
        assert "web page, not a file" in partial.error_message


def test_sso_refreshes_pass_on_the_grid(grid, tmp_path_factory, tmp_path):
    scenario = {"name": "grid-sso", "seed": 6, "latency": {"page_ms": 20, "attachment_ms": 5},
                "session": {"sso_refresh_every": 3, "sso_via": "post_form"},
                "pos": [{"id": str(720001 + i), "supplier": "Federated Ltd",
                         "attachments": [{"name": f"sso{i}.pdf", "size": 2500}]} for i in range(8)]}
    portal, profile = shapes_portal(tmp_path_factory, "grid-sso", scenario)
    with portal:
        pos = [po["id"] for po in scenario["pos"]]
        opts = options(write_orders(tmp_path, pos), tmp_path / "out", portal, profile, tmp_path, grid=grid.url)
        summary = MainApp(opts).run()
        assert summary.exit_code == 0, {po: o.error_message for po, o in summary.outcomes.items()}
        assert {o.status for o in summary.outcomes.values()} == {Status.COMPLETED}
        assert portal.sso_refreshes() >= 2 and events(summary, "sso_refresh")


# ---- issue 22: a refresh on the Grid ---------------------------------------------------------------

def test_a_refresh_on_the_grid_fetches_exactly_what_is_new(grid, tmp_path_factory, tmp_path):
    """The same run, portal change and refresh as tests/test_refresh.py, the files one click at a time
    through the Grid node's folder: the same answer."""
    from tests.test_refresh import ALL, REFRESH, assert_refreshed

    portal, profile = shapes_portal(tmp_path_factory, "grid-refresh", REFRESH)
    with portal:
        orders = write_orders(tmp_path, ALL)
        first = MainApp(options(orders, tmp_path / "out", portal, profile, tmp_path, grid=grid.url)).run()
        assert first.exit_code == 0, {po: o.error_message for po, o in first.outcomes.items()}
        before = {po: portal.downloads_of(po) for po in ALL}
        pages_before = portal.page_hits("700008")
        (Path(first.outcomes["700006"].download_folder) / "delete-me.pdf").unlink()
        portal.revise(1)
        refreshed = MainApp(options(orders, tmp_path / "out", portal, profile, tmp_path, grid=grid.url,
                                    refresh=True)).run()
        assert_refreshed(portal, before, pages_before, refreshed)
