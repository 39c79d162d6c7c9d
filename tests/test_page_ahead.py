"""Pages ahead (issue 23): the next PO's page loads in a background tab while this PO's files download.

With the real demo portal and headless Chromium: the pages are used when they prove themselves, every
answer stays the scenario's truth, and a page loaded ahead that is stale (it errored, or the session
changed since it was asked for) is loaded again and gets its true answer. The queue's side (which
worker is told which task comes next) is in tests/test_worker_pool.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pobatch.core.app import MainApp, RunOptions, RunSummary
from pobatch.core.demo_portal import DemoPortal
from pobatch.core.demo_portal.scenario import Scenario
from pobatch.core.events import PoEvent
from pobatch.core.exit_codes import EXIT_OK
from pobatch.core.commands.login import prepare_demo_profile
from pobatch.core.status import Status
from pobatch.core.workflow.job_config import JobConfig
from pobatch.core.workflow.po_job import PoJob
from pobatch.core.workflow.po_task import PoTaskPayload
from pobatch.corelib.browser.factory import BrowserSpec
from pobatch.corelib.browser.local_session import LocalBrowserSession
from pobatch.corelib.store import RunStore
from pobatch.corelib.worker_pool.tasks import Event
from tests.eventually import wait_for
from tests.orders_files import write_orders
from tests.truth import assert_matches_truth

pytestmark = pytest.mark.usefixtures("browser_available")


def att(name: str, kind: str = "link", **kw: Any) -> dict[str, Any]:
    return {"name": name, "kind": kind, "size": 3000, **kw}


def scenario() -> dict[str, Any]:
    """Files slower than pages, so a page has time to load ahead; among them POs whose page errs once,
    does not exist, or errs for ever. An SSO refresh is possible (end_sessions), never automatic."""
    pos: list[dict[str, Any]] = [
        {"id": str(810001 + i), "supplier": f"Supplier {i % 3}",
         "attachments": [att(f"doc{i}-a.pdf"), att(f"doc{i}-b.pdf", "js")]} for i in range(8)]
    pos[3]["faults"] = {"page": ["http500", "ok"]}  # errs once: the page loaded ahead is the error
    pos[5] = {"id": pos[5]["id"], "supplier": "Gone", "missing": True}  # the portal's own answer
    pos[7]["faults"] = {"page": ["http500"]}  # errs every time: FAILED after the attempts
    return {"name": "page-ahead", "seed": 23, "latency": {"page_ms": 50, "attachment_ms": 300},
            "session": {"sso_refresh_every": 100_000, "sso_via": "script"}, "pos": pos}


@pytest.fixture(scope="module")
def portal(browser_available_module):
    with DemoPortal(Scenario.from_dict(scenario())) as p:
        yield p


@pytest.fixture(scope="module")
def profile(portal, tmp_path_factory):
    return prepare_demo_profile(tmp_path_factory.mktemp("profile") / "p", portal.base_url)


def run(portal: DemoPortal, profile: Path, tmp_path: Path, pos: list[str], **kw: Any) -> RunSummary:
    opts = RunOptions(orders=write_orders(tmp_path, pos), out=tmp_path / "out", site="demo",
                      base_url=portal.base_url, browser="chromium", profile=profile, local_only=True,
                      profiles_root=tmp_path / "profiles", po_timeout=60.0, backoff_base=0.05, **kw)
    return MainApp(opts).run()


def timeline(summary: RunSummary) -> list[Event]:
    with RunStore(summary.out_dir / ".pobatch" / "runs.sqlite") as store:
        return store.timeline(summary.run_id)


def loaded_ahead(events: list[Event]) -> set[str]:
    return {e.task_key for e in events if e.action == PoEvent.OPEN and e.detail.startswith("loaded ahead")}


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_pages_load_ahead_and_every_answer_stays_true(mode: str, portal: DemoPortal, profile: Path,
                                                      tmp_path: Path) -> None:
    portal.reset()
    pos = [po.id for po in portal.scenario.pos]
    summary = run(portal, profile, tmp_path, pos, **({"parallel": True, "workers": 2} if mode == "parallel" else {}))
    assert_matches_truth(summary, portal, pos, names=True)
    events = timeline(summary)
    ahead = loaded_ahead(events)
    errs_once, gone, broken = pos[3], pos[5], pos[7]
    if mode == "sequential":
        # Every PO after one that showed its list came from a page loaded ahead, but the one whose
        # page erred: that page was loaded again (below). The first PO and the one after the gone
        # PO (whose page never showed a list) were opened the ordinary way.
        assert ahead == set(pos) - {pos[0], errs_once, pos[6], broken}, sorted(ahead)
        # Not a page more than the answers need: one request per PO, two for the one that erred once
        # (ahead, then again), and the broken one's three attempts plus its page loaded ahead.
        assert {po: portal.page_hits(po) for po in pos} == {**{po: 1 for po in pos}, errs_once: 2, broken: 4}
        assert summary.outcomes[errs_once].attempts == 1, "the error was the page loaded ahead: loaded again"
    else:
        assert len(ahead) >= 3, sorted(ahead)
    # Every page loaded ahead was used or judged stale, but at most one per worker: its PO went to a
    # worker that ran out of work first (the end of the queue).
    asked = [e for e in events if e.action == PoEvent.PAGE_AHEAD]
    stale = [e for e in events if e.action == PoEvent.PAGE_AHEAD_STALE]
    assert len(asked) <= len(ahead) + len(stale) + (2 if mode == "parallel" else 0)
    assert summary.outcomes[gone].status == Status.PO_NOT_FOUND and summary.outcomes[gone].attempts == 1


def test_a_page_loaded_ahead_that_erred_is_loaded_again_and_gets_its_true_answer(portal: DemoPortal, profile: Path,
                                                                                 tmp_path: Path) -> None:
    portal.reset()
    pos = [po.id for po in portal.scenario.pos][2:5]  # the one before, the one that errs once, the one after
    summary = run(portal, profile, tmp_path, pos)
    assert summary.exit_code == EXIT_OK
    assert_matches_truth(summary, portal, pos, names=True)
    errs_once = pos[1]
    stale = [e for e in timeline(summary) if e.action == PoEvent.PAGE_AHEAD_STALE]
    assert [e.task_key for e in stale] == [errs_once]
    assert "server_error" in stale[0].detail and "HTTP 500" in stale[0].detail
    assert portal.page_hits(errs_once) == 2
    assert summary.outcomes[errs_once].attempts == 1 and summary.outcomes[errs_once].status == Status.COMPLETED


def test_a_page_loaded_ahead_before_the_session_changed_is_loaded_again(portal: DemoPortal, profile: Path,
                                                                        tmp_path: Path) -> None:
    """The page of B loads ahead (signed in) while A downloads; then the portal ends every session and
    the browser passes a single-sign-on refresh. B's page is from the old session: loaded again."""
    portal.reset()
    a, b, c = (po.id for po in portal.scenario.pos[:3])
    events: list[Event] = []
    spec = BrowserSpec(user_data_dir=str(profile), download_dir=str(tmp_path / "dl"), local_only=True)
    config = JobConfig(site="demo", base_url=portal.base_url, out_dir=str(tmp_path / "out"), backoff_base=0.05,
                       po_timeout=60)
    with LocalBrowserSession(spec) as session:
        job = PoJob(session, config, emit=events.append)
        first = job.process(PoTaskPayload(a), up_next=PoTaskPayload(b))
        assert first.status == Status.COMPLETED
        assert job.ahead.tabs.pending is not None and portal.page_hits(b) == 1  # asked for while A downloaded
        portal.end_sessions()
        # The browser meets the ended session on another page and passes the refresh by itself.
        probe = job.look(job.site.po_url(portal.base_url, c), job.site.expectation("po", c, portal.base_url))
        assert probe.state == "ready" and any(e.action == PoEvent.SSO_REFRESH for e in events)
        second = job.process(PoTaskPayload(b))
    assert (second.status, second.attempts) == (Status.COMPLETED, 1)
    stale = [e for e in events if e.action == PoEvent.PAGE_AHEAD_STALE]
    assert [e.task_key for e in stale] == [b] and "session was refreshed" in stale[0].detail
    assert portal.page_hits(b) == 2
    assert sorted(f.name for f in second.files) == sorted(portal.expected_files(b))
    assert not any(e.action == PoEvent.OPEN and e.task_key == b and e.detail.startswith("loaded ahead")
                   for e in events)


def test_a_tab_that_showed_another_pos_not_found_page_never_answers_for_the_next(tmp_path_factory,
                                                                                 tmp_path: Path) -> None:
    """Two tabs take turns: the one asked for the next page may still show another PO's page (here the
    portal's "not found") while the next one is on its way. That page is never judged as the next PO's."""
    pos = [{"id": "830001", "supplier": "S", "attachments": [att("a.pdf")]},
           {"id": "830002", "supplier": "Gone", "missing": True},
           {"id": "830003", "supplier": "S", "attachments": [att("c.pdf")], "faults": {"page": ["stall"]}}]
    slow = Scenario.from_dict({"name": "left-behind", "seed": 4, "stall_seconds": 3,
                               "latency": {"page_ms": 20, "attachment_ms": 20}, "pos": pos})
    with DemoPortal(slow) as portal:
        profile = prepare_demo_profile(tmp_path_factory.mktemp("left") / "p", portal.base_url)
        first, gone, stalled = (po["id"] for po in pos)
        events: list[Event] = []
        spec = BrowserSpec(user_data_dir=str(profile), download_dir=str(tmp_path / "dl"), local_only=True)
        config = JobConfig(site="demo", base_url=portal.base_url, out_dir=str(tmp_path / "out"), po_timeout=60)
        with LocalBrowserSession(spec) as session:
            job = PoJob(session, config, emit=events.append)
            assert job.process(PoTaskPayload(first), up_next=PoTaskPayload(gone)).status == Status.COMPLETED
            driver = session.driver
            wait_for(lambda: portal.page_hits(gone) == 1, 30, "the page ahead of the gone PO")
            # Another PO came instead: the tab that loaded the "not found" page loads the next page.
            assert job.ahead.tabs.take(driver, "another") is None
            job.ahead.start(driver, job.site.po_url(portal.base_url, stalled), stalled)
            probe = job.ahead.open(driver, job.site.po_url(portal.base_url, stalled),
                                   job.site.expectation("po", stalled, portal.base_url), key=stalled)
        assert probe.state == "ready", probe
        assert portal.page_hits(stalled) == 1, "the page that took 3 s was the one judged, not loaded twice"


def test_a_portal_that_renews_its_token_on_every_answer_still_completes(tmp_path_factory, tmp_path: Path) -> None:
    """A page request beside downloads races the token there: the sign-in page it causes is not
    believed; pages ahead stop for that browser and the PO is tried again."""
    pos = [{"id": str(820001 + i), "supplier": "Rotating", "attachments": [att(f"r{i}-{j}.pdf", ("link", "js")[j % 2])
                                                                           for j in range(3)]} for i in range(8)]
    rotating = Scenario.from_dict({"name": "rotating", "seed": 3, "latency": {"page_ms": 50, "attachment_ms": 200},
                                   "session": {"rotate_token": True}, "pos": pos})
    with DemoPortal(rotating) as portal:
        profile = prepare_demo_profile(tmp_path_factory.mktemp("rotating") / "p", portal.base_url)
        ids = [po["id"] for po in pos]
        summary = run(portal, profile, tmp_path, ids)
        assert summary.exit_code == EXIT_OK, {po: o.error_message for po, o in summary.outcomes.items()}
        assert_matches_truth(summary, portal, ids, names=True)
        events = timeline(summary)
        off = [e for e in events if e.action == PoEvent.PAGE_AHEAD_OFF]
        retried = [po for po in ids if summary.outcomes[po].attempts > 1]
        assert len(off) <= 1 and len(retried) <= 1
        if retried:  # the race happened: it cost one more attempt of one PO, and no page ahead after it
            assert off and off[0].task_key == retried[0]
            assert not [e for e in events if e.action == PoEvent.PAGE_AHEAD and e.ts > off[0].ts]


def test_no_page_ahead_loads_each_page_after_the_last_file(portal: DemoPortal, profile: Path, tmp_path: Path) -> None:
    portal.reset()
    pos = [po.id for po in portal.scenario.pos][:3]
    summary = run(portal, profile, tmp_path, pos, page_ahead=False)
    assert_matches_truth(summary, portal, pos)
    events = timeline(summary)
    assert not loaded_ahead(events) and not any(e.action == PoEvent.PAGE_AHEAD for e in events)
