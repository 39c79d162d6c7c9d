"""Walk away and come back to a finished batch (issue 21), with the real demo portal and Chromium.

Three page behaviours each cost an unattended run hours or stopped it: more than ten attachments on
one page, a single-sign-on refresh through an identity provider on another host, and a sub-resource
that never finishes loading. Each must get its true outcome in sequential, parallel and
single-session mode (the Grid's cases are in tests/test_grid.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pobatch.core.app import MainApp, RunOptions, RunSummary
from pobatch.core.demo_portal import DemoPortal
from pobatch.core.demo_portal.scenario import Scenario, many_attachments_scenario_path
from pobatch.core.events import PoEvent
from pobatch.core.exit_codes import EXIT_LOGIN, EXIT_OK
from pobatch.core.commands.login import prepare_demo_profile
from pobatch.core.status import Status
from pobatch.corelib.store import RunStore
from tests.orders_files import write_orders
from tests.truth import assert_matches_truth

pytestmark = pytest.mark.usefixtures("browser_available")

MODES = {
    "sequential": {},
    "parallel": {"parallel": True, "workers": 2},
    "single-session": {"strategy": "single-session", "windows": 2},
}


def run(portal: DemoPortal, profile: Path, tmp_path: Path, pos: list[str], **kw: Any) -> RunSummary:
    settings: dict[str, Any] = dict(po_timeout=60.0, page_timeout=30.0, download_timeout=60.0, stall_timeout=20.0,
                                    backoff_base=0.1)
    settings.update(kw)
    opts = RunOptions(orders=write_orders(tmp_path, pos), out=tmp_path / "out", site="demo",
                      base_url=portal.base_url, browser="chromium", profile=profile, local_only=True,
                      profiles_root=tmp_path / "profiles", **settings)
    return MainApp(opts).run()


def timeline(summary: RunSummary) -> list:
    with RunStore(summary.out_dir / ".pobatch" / "runs.sqlite") as store:
        return store.timeline(summary.run_id)


def attempts(summary: RunSummary) -> list[tuple[str, float]]:
    """(PO, seconds) of every attempt, from the run's timeline."""
    events = timeline(summary)
    out = []
    for start in (e for e in events if e.action == PoEvent.ATTEMPT_START):
        end = next(e for e in events if e.action == PoEvent.ATTEMPT_END and e.task_key == start.task_key
                   and e.attempt == start.attempt and e.worker_id == start.worker_id)
        out.append((start.task_key, end.ts - start.ts))
    return out


def portal_and_profile(scenario: dict, tmp_path_factory: pytest.TempPathFactory, name: str):
    portal = DemoPortal(Scenario.from_dict(scenario)).start()
    try:
        profile = prepare_demo_profile(tmp_path_factory.mktemp(name) / "profile", portal.base_url, timeout=60)
    except BaseException:
        portal.stop()
        raise
    return portal, profile


def portal_fixture(scenario: dict, name: str):
    """A module fixture: (the demo portal serving `scenario`, a profile signed in to it)."""

    @pytest.fixture(scope="module")
    def fixture(browser_available_module, tmp_path_factory):
        portal, profile = portal_and_profile(scenario, tmp_path_factory, name)
        with portal:
            yield portal, profile

    return fixture


# ------------------------------------------------------------------------------ many attachments

# The bundled scenario's POs of 12, 50 and 300 links and 50 of every kind, and one whose middle file
# only a real click starts.
MANY = json.loads(many_attachments_scenario_path().read_text(encoding="utf-8"))
MANY["pos"] += [{"id": "420001", "supplier": "Trusted Clicks Ltd",
            "attachments": [{"name": "plain.pdf", "kind": "link", "size": 3000},
                            {"name": "needs a real click.pdf", "kind": "trusted_js", "size": 4000},
                            {"name": "after.pdf", "kind": "download_attr", "size": 2000}]},
                {"id": "420002", "supplier": "Missing Files BV",
                 "attachments": [{"name": "here.pdf", "kind": "link", "size": 3000},
                                 {"name": "gone by link.pdf", "kind": "link", "size": 3000, "faults": ["html200"]},
                                 {"name": "gone by script.pdf", "kind": "js", "size": 3000, "faults": ["html200"]}]}]


many = portal_fixture(MANY, "many")


@pytest.mark.parametrize("mode", list(MODES))
def test_any_number_of_attachments_completes_in_every_mode(mode: str, many, tmp_path: Path) -> None:
    """12, 50 and 300 links and 50 of every kind on one page: every file, byte for byte, first try,
    with a --po-timeout shorter than the 300-file PO takes (the limit follows progress)."""
    portal, profile = many
    pos = [po.id for po in portal.scenario.pos if len(po.attachments) >= 12]
    summary = run(portal, profile, tmp_path, pos, po_timeout=20.0, max_attempts=1, **MODES[mode])
    assert summary.exit_code == EXIT_OK, {po: o.error_message for po, o in summary.outcomes.items()}
    assert_matches_truth(summary, portal, pos, names=True)
    assert sorted(len(summary.outcomes[po].files) for po in pos) == [12, 50, 50, 300]
    assert all(n == 1 for n in (summary.outcomes[po].attempts for po in pos))


def test_a_click_that_starts_no_download_is_known_within_seconds_and_the_next_route_taken(many, tmp_path: Path):
    """A handler that ignores script clicks: no download begins, which is known within the bounded
    wait (not the PO's timeout), and the attachment is clicked again alone, by a real pointer click."""
    portal, profile = many
    summary = run(portal, profile, tmp_path, ["420001"], max_attempts=1)
    outcome = summary.outcomes["420001"]
    assert (outcome.status, outcome.attempts) == (Status.COMPLETED, 1), outcome.error_message
    assert_matches_truth(summary, portal, ["420001"], names=True)
    events = timeline(summary)
    start = next(e for e in events if e.action == PoEvent.ATTEMPT_START)
    not_begun = [e for e in events if e.action == PoEvent.DOWNLOAD_NOT_BEGUN]
    assert [e.outcome for e in not_begun] == ["retry"] and "needs a real click.pdf" in not_begun[0].detail
    assert "pointer click" in not_begun[0].detail
    assert not_begun[0].ts - start.ts < 30, "known by its bounded wait, not by the PO's timeout (60 s here)"


# ------------------------------------------------------------------------- single-sign-on refresh

def sso_scenario(via: str, every: int = 3, pos: int = 8, attachment_ms: int = 5) -> dict:
    return {"name": f"sso-{via}", "seed": 5, "latency": {"page_ms": 20, "attachment_ms": attachment_ms},
            "session": {"sso_refresh_every": every, "sso_via": via},
            "pos": [{"id": str(430001 + i), "supplier": f"Supplier {i % 3}",
                     "attachments": [{"name": f"doc{i}-{j}.pdf", "kind": ("link", "js", "popup")[j], "size": 2500}
                                     for j in range(2)]} for i in range(pos)]}


@pytest.mark.parametrize("via", ["post_form", "script", "meta", "redirect_chain"])
def test_sso_refreshes_pass_without_a_person(via: str, tmp_path_factory, tmp_path: Path) -> None:
    portal, profile = portal_and_profile(sso_scenario(via), tmp_path_factory, f"sso-{via}")
    with portal:
        pos = [po.id for po in portal.scenario.pos]
        summary = run(portal, profile, tmp_path, pos)
        assert summary.exit_code == EXIT_OK, {po: o.error_message for po, o in summary.outcomes.items()}
        assert_matches_truth(summary, portal, pos, names=True)
        assert portal.sso_refreshes() >= 2, "the portal's session really ended and came back"
        refreshes = [e for e in timeline(summary) if e.action == PoEvent.SSO_REFRESH]
        if via == "redirect_chain":
            # HTTP redirects alone happen inside one page load: the page cannot tell (README).
            assert refreshes == []
        else:
            assert len(refreshes) == portal.sso_refreshes()
            assert all(portal.sso_host in e.detail for e in refreshes), [e.detail for e in refreshes]
        assert all(o.attempts == 1 for o in summary.outcomes.values()), "a refresh carries on in the same attempt"


@pytest.mark.parametrize("mode", ["parallel", "single-session"])
def test_sso_refreshes_pass_in_the_other_local_modes(mode: str, tmp_path_factory, tmp_path: Path) -> None:
    """Here one browser's PO page ends every session while the others download (files take 400 ms): a
    download then meets the refresh, which takes the page's frame to the provider and ends in the file."""
    portal, profile = portal_and_profile(sso_scenario("post_form", every=3, pos=12, attachment_ms=400),
                                         tmp_path_factory, f"sso-{mode}")
    with portal:
        pos = [po.id for po in portal.scenario.pos]
        summary = run(portal, profile, tmp_path, pos, **MODES[mode])
        assert summary.exit_code == EXIT_OK, {po: o.error_message for po, o in summary.outcomes.items()}
        assert_matches_truth(summary, portal, pos)
        assert any(e.action == PoEvent.SSO_REFRESH for e in timeline(summary))


def test_an_identity_provider_that_asks_for_a_password_stops_the_run(tmp_path_factory, tmp_path: Path) -> None:
    portal, profile = portal_and_profile(sso_scenario("password_form", every=3, pos=6), tmp_path_factory, "sso-pw")
    with portal:
        pos = [po.id for po in portal.scenario.pos]
        summary = run(portal, profile, tmp_path, pos)
        assert summary.exit_code == EXIT_LOGIN
        assert "password field" in summary.message, summary.message
        # The wall comes with the fourth PO page asked for. That is the fourth PO's own page, or, when it
        # loads ahead while the third PO's files download, those files meet the wall: the third is then
        # kept for the next run too (its sign-in page is looked at twice: pages ahead stop and it is
        # tried again, to tell a token race from a session that ended).
        done = [po for po in pos if summary.outcomes[po].status is Status.COMPLETED]
        assert done in (pos[:2], pos[:3]), done
        # the PO that met the wall is kept for the next run, as every PO after it
        assert {summary.outcomes[po].status for po in pos[len(done):]} == {Status.PENDING}
        assert summary.outcomes[pos[len(done)]].reason == "LOGIN_REQUIRED"


# -------------------------------------------------------------------- sub-resources that never load

HANGS = {"name": "hangs", "seed": 9, "latency": {"page_ms": 30, "attachment_ms": 5},
         "pos": [{"id": str(440001 + i), "supplier": "Pixel Corp", "hang": hang,
                  "attachments": [{"name": f"h{i}-{j}.pdf", "kind": "link", "size": 2000} for j in range(2)]}
                 for i, hang in enumerate(["image", "async_script", "iframe", "longpoll",
                                           ["image", "iframe", "longpoll", "async_script"]])]
         + [{"id": str(440006 + i), "supplier": "Widget Corp", "hang": hang,
             "attachments": [{"name": f"w{i}-{k}.pdf", "kind": k, "size": 2000}
                             for k in ("js", "span", "inline_pdf", "popup", "download_attr")]}
            for i, hang in enumerate(["iframe", "async_script", "image"])]
         + [{"id": "440009", "supplier": "Plain Corp", "attachments": [{"name": "plain.pdf", "size": 2000}]},
            {"id": "440010", "supplier": "Pixel Corp", "hang": "image", "attachments": []}]}


hangs = portal_fixture(HANGS, "hangs")


@pytest.mark.parametrize("mode", list(MODES))
def test_a_page_whose_load_event_never_comes_completes_in_a_normal_time(mode: str, hangs, tmp_path: Path) -> None:
    portal, profile = hangs
    pos = [po.id for po in portal.scenario.pos]
    summary = run(portal, profile, tmp_path, pos, page_timeout=30.0, max_attempts=1, **MODES[mode])
    assert summary.exit_code == EXIT_OK, {po: o.error_message for po, o in summary.outcomes.items()}
    assert_matches_truth(summary, portal, pos, names=True)
    assert summary.outcomes["440010"].status is Status.NO_ATTACHMENTS
    assert sum(portal.hang_requests().values()) >= 5, "the pages really held sub-resources open"
    # The page-load timeout here is 30 s: an attempt that had waited for the load event would show it.
    slow = [(po, round(s, 1)) for po, s in attempts(summary) if s > 15]
    assert not slow, slow


def test_a_link_answered_with_a_web_page_is_partial_with_the_reason_at_once(many, tmp_path: Path) -> None:
    """A missing file answered with 200 and a page: the attachment fails as soon as the page is seen,
    whether the link was marked as a download or navigated, and the PO says PARTIAL with why."""
    portal, profile = many
    summary = run(portal, profile, tmp_path, ["420002"], max_attempts=1)
    outcome = summary.outcomes["420002"]
    assert (outcome.status, outcome.reason) == (Status.PARTIAL, "DOWNLOAD_FAILED"), outcome.error_message
    assert_matches_truth(summary, portal, ["420002"])
    assert outcome.error_message.count("web page, not a file") == 2, outcome.error_message
    assert [po for po, s in attempts(summary) if s > 20] == [], "known within one poll, not by a timeout"
