"""Pages pobatch has never seen get their true status in every mode, and never a false final answer.

The demo portal's unfamiliar scenario (core/demo_portal/data/unfamiliar_scenario.json) serves what a
real tenant throws at a client: lists drawn by script after the page loaded (with and without a
spinner), bare and proxy error pages, a 429 with Retry-After, a maintenance page served with 200,
redirects to another PO and to the dashboard, a 404 with no not-found text, and an inline file named
only by its label. Each PO carries its truth; every mode must reach it.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pobatch.core.app import MainApp, RunOptions, RunSummary
from pobatch.core.demo_portal import DemoPortal, unfamiliar_scenario_path, variant_scenario_path, variant_site_path
from pobatch.core.commands.login import prepare_demo_profile
from pobatch.core.status import Status
from pobatch.corelib.store import RunStore
from tests.orders_files import write_orders
from tests.truth import assert_matches_truth, sha

pytestmark = pytest.mark.usefixtures("browser_available")

FINAL = {Status.COMPLETED, Status.PARTIAL, Status.NO_ATTACHMENTS}
MODES = {
    "sequential": {},
    "parallel": {"parallel": True, "workers": 2},
    "single-session": {"strategy": "single-session", "windows": 2},
}


@pytest.fixture(scope="module")
def portal(browser_available_module):
    with DemoPortal(unfamiliar_scenario_path()) as p:
        yield p


@pytest.fixture(scope="module")
def profile(portal: DemoPortal, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_demo_profile(tmp_path_factory.mktemp("unfamiliar") / "profile", portal.base_url, timeout=60)


def run(portal: DemoPortal, profile: Path, tmp_path: Path, pos: list[str], site_file: Path | None = None,
        **kw: Any) -> RunSummary:
    settings: dict[str, Any] = dict(po_timeout=90.0, page_timeout=20.0, download_timeout=30.0, stall_timeout=10.0,
                                    backoff_base=0.1)
    settings.update(kw)
    opts = RunOptions(orders=write_orders(tmp_path, pos), out=tmp_path / "out", site="demo",
                      base_url=portal.base_url, browser="chromium", profile=profile, local_only=True,
                      profiles_root=tmp_path / "profiles", site_file=site_file, **settings)
    return MainApp(opts).run()


def page_faults(portal: DemoPortal) -> dict[str, tuple[str, ...]]:
    return {po.id: tuple(po.page_faults) for po in portal.scenario.pos}


@pytest.mark.parametrize("mode", list(MODES))
def test_every_unfamiliar_shape_gets_its_true_status_in_every_mode(mode: str, portal: DemoPortal, profile: Path,
                                                                   tmp_path: Path) -> None:
    pos = [po.id for po in portal.scenario.pos]
    summary = run(portal, profile, tmp_path, pos, **MODES[mode])
    assert_matches_truth(summary, portal, pos, names=True)
    # The sweep: a page that never proved it is this PO's page never gave a final answer.
    for po, faults in page_faults(portal).items():
        if faults and faults[-1] != "ok":
            assert summary.outcomes[po].status not in FINAL, (po, faults, summary.outcomes[po])
    if mode == "parallel":
        assert_a_429_paused_every_worker(summary)
    # the file served without Content-Disposition is named from its label on the page, not its URL
    labelled = [po.id for po in portal.scenario.pos if any(a.kind == "inline_labeled" for a in po.attachments)]
    for po in labelled:
        names = [f.name for f in summary.outcomes[po].files]
        assert names and all(not n.startswith("attachment_file") for n in names), names


def assert_a_429_paused_every_worker(summary: RunSummary) -> None:
    """Causal, not a timing: a page that any worker began to open while a 429's pause was in force
    was opened only after the pause ended."""
    with RunStore(summary.out_dir / ".pobatch" / "runs.sqlite") as store:
        timeline = store.timeline(summary.run_id)
    pauses = [(e.ts, e.ts + float(e.detail.rstrip("s"))) for e in timeline if e.action == "rate_limited"]
    assert pauses, "the scenario's 429 pages should have asked for a pause"
    others = {e.worker_id for e in timeline if e.action == "attempt_start"}
    assert len(others) > 1, "two workers should have shared the work"
    for start in (e for e in timeline if e.action == "attempt_start"):
        opened = next((e for e in timeline if e.action == "open" and e.worker_id == start.worker_id
                       and e.task_key == start.task_key and e.attempt == start.attempt), None)
        for begin, end in pauses:
            if opened is not None and begin <= start.ts < end:
                assert opened.ts >= end - 0.05, (start, opened, (begin, end))


def test_a_redirect_to_another_po_never_files_that_pos_documents(portal: DemoPortal, profile: Path,
                                                                 tmp_path: Path) -> None:
    redirected = [po for po in portal.scenario.pos if po.page_faults == ("redirect_other_po",)]
    assert redirected, "the scenario should redirect one PO to another for good"
    po = redirected[0]
    summary = run(portal, profile, tmp_path, [po.id], max_attempts=2)
    outcome = summary.outcomes[po.id]
    assert (outcome.status, outcome.reason) == (Status.FAILED, "UNRECOGNISED_PAGE")
    assert outcome.files == []
    assert "/order_headers/" in outcome.error_message and "not the page pobatch expected" in outcome.error_message
    # its failure is documented: a screenshot and the page it was shown instead
    artifacts = list((tmp_path / "out" / ".pobatch").rglob("page.html"))
    assert artifacts, "a FAILED PO keeps the page it saw"


def test_the_sso_interstitial_on_another_host_stops_the_run_for_sign_in(profile: Path, tmp_path: Path,
                                                                        browser_available_module) -> None:
    scenario = json.loads(unfamiliar_scenario_path().read_text(encoding="utf-8"))
    scenario["pos"] = [{"id": "310001", "supplier": "Acme", "attachments": [{"name": "a.pdf", "kind": "link"}],
                        "faults": {"page": ["sso_interstitial"]}}]
    path = tmp_path / "sso.json"
    path.write_text(json.dumps(scenario), encoding="utf-8")
    with DemoPortal(path) as sso_portal:
        prof = prepare_demo_profile(tmp_path / "p", sso_portal.base_url, timeout=60)
        summary = run(sso_portal, prof, tmp_path, ["310001"])
        # a sign-in stops the run; the PO stays PENDING for the rerun after signing in
        outcome = summary.outcomes["310001"]
        assert (outcome.status, outcome.reason) == (Status.PENDING, "LOGIN_REQUIRED")
        assert summary.exit_code == 3
        assert sso_portal.sso_hits() >= 1


@pytest.fixture(scope="module")
def normal_portal(browser_available_module):
    with DemoPortal() as p:
        yield p


@pytest.fixture(scope="module")
def variant(normal_portal: DemoPortal):
    # The variant shares the normal portal's sessions: a profile signed in there is signed in here
    # (cookies are per host, not per port), as on a tenant whose markup changed overnight.
    with DemoPortal(variant_scenario_path(), share_sessions_with=normal_portal) as p:
        yield p


@pytest.fixture(scope="module")
def variant_profile(normal_portal: DemoPortal, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_demo_profile(tmp_path_factory.mktemp("variant") / "profile", normal_portal.base_url, timeout=60)


def test_the_builtin_definition_is_told_apart_on_other_markup(variant: DemoPortal, variant_profile: Path,
                                                              tmp_path: Path) -> None:
    pos = [po.id for po in variant.scenario.pos]
    summary = run(variant, variant_profile, tmp_path, pos, max_attempts=1)
    wrong = {po: (o.status.value, o.reason) for po, o in summary.outcomes.items() if o.status in FINAL}
    assert not wrong, f"a page the definition does not understand gave a final answer: {wrong}"
    reasons = Counter(o.reason for o in summary.outcomes.values() if o.status is Status.FAILED)
    assert reasons["UNRECOGNISED_PAGE"] >= len(pos) // 2, reasons


def test_a_site_file_for_the_variant_passes_the_whole_scenario(variant: DemoPortal, variant_profile: Path,
                                                               tmp_path: Path) -> None:
    pos = [po.id for po in variant.scenario.pos]
    summary = run(variant, variant_profile, tmp_path, pos, site_file=variant_site_path())
    expected = variant.expected_outcomes()
    got = {po: (o.status.value, o.reason) for po, o in summary.outcomes.items()}
    assert got == {po: tuple(v) for po, v in expected.items()}, \
        {po: summary.outcomes[po].error_message for po in pos if got[po] != tuple(expected[po])}
    for po in pos:
        o = summary.outcomes[po]
        if o.status in (Status.COMPLETED, Status.PARTIAL):
            on_disk = Counter(sha(p.read_bytes()) for p in Path(o.download_folder).iterdir())
            assert on_disk == Counter(sha(b) for b in variant.expected_files(po).values()), po


def test_check_tells_the_variant_apart_and_passes_with_its_site_file(variant: DemoPortal, variant_profile: Path,
                                                                   tmp_path: Path) -> None:
    from click.testing import CliRunner

    from pobatch.core.cli import main
    from tests.conftest import CHROMEDRIVER, CHROMIUM

    pos = [po.id for po in variant.scenario.pos if not po.missing and not po.forbidden][:2]

    def check(*extra: str):
        return CliRunner().invoke(main, ["check", "--site", "demo", "--base-url", variant.base_url, "--headless",
                                         "--profile", str(variant_profile), "--browser", "chromium",
                                         "--driver", CHROMEDRIVER, "--browser-binary", CHROMIUM,
                                         "--snapshot", str(tmp_path / "snap.json"), *extra, *pos])

    builtin = check()
    assert builtin.exit_code == 1, builtin.output
    assert "UNRECOGNISED" in builtin.output and "[identity] po_number_selectors" in builtin.output
    fitted = check("--site-file", str(variant_site_path()))
    assert fitted.exit_code == 0, fitted.output
    assert "matched a.doc-link" in fitted.output or "matched button.doc-action" in fitted.output
