"""Keeping an archive current (issue 22), with the real demo portal and Chromium, in every local mode.

A run, then the portal a week later (files added to a PO, removed from another, a NO_ATTACHMENTS PO
that gains one, a third "invoice.pdf" beside two, a file deleted here by hand), then `--refresh`:
exactly the new files arrive, held files are not requested again (the portal's counters), the gone
one is reported and kept, the deleted one is fetched again, statuses and folders are right, and the
"New" sheet lists exactly what changed. A second refresh with nothing new downloads nothing and
touches no folder. The Grid's case is in tests/test_grid.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from pobatch.core.app import MainApp, RunOptions, RunSummary
from pobatch.core.demo_portal import DemoPortal
from pobatch.core.demo_portal.scenario import Scenario
from pobatch.core.exit_codes import EXIT_OK
from pobatch.core.commands.login import prepare_demo_profile
from pobatch.core.reports.changes import CHANGE_WORDS
from pobatch.core.reports.workbook import NEW_SHEET, RESULTS_SHEET
from tests.orders_files import write_orders
from tests.truth import assert_matches_truth

pytestmark = pytest.mark.usefixtures("browser_available")

MODES = {
    "sequential": {},
    "parallel": {"parallel": True, "workers": 2},
    "single-session": {"strategy": "single-session", "windows": 2},
}


def _att(name: str, kind: str = "link", size: int = 4000) -> dict[str, Any]:
    return {"name": name, "kind": kind, "size": size}


REFRESH = {
    "name": "refresh", "seed": 22, "latency": {"page_ms": 40, "attachment_ms": 20},
    "pos": [
        {"id": "700001", "supplier": "Grows", "attachments": [_att("contract.pdf"), _att("terms.docx", "js")]},
        {"id": "700002", "supplier": "Shrinks", "attachments": [_att("a.pdf"), _att("b.pdf", "download_attr"),
                                                                 _att("c.pdf", "popup")]},
        {"id": "700003", "supplier": "First File"},
        {"id": "700004", "supplier": "Steady", "attachments": [_att("steady.pdf", "popup"), _att("spec.xlsx", "span")]},
        {"id": "700005", "supplier": "Same Names", "attachments": [_att("invoice.pdf"), _att("invoice.pdf", "js")]},
        {"id": "700006", "supplier": "Deleted Here", "attachments": [_att("keep.pdf"), _att("delete-me.pdf")]},
        {"id": "700007", "supplier": "Via Requisition",
         "requisition": {"id": "7007", "attachments": [_att("req.pdf")]}},
        {"id": "700008", "supplier": "Gone", "missing": True},
    ],
    "revisions": [{"label": "a week later", "pos": {
        "700001": {"add": [_att("amendment 1.pdf", "js")]},
        "700002": {"remove": ["b.pdf"]},
        "700003": {"add": [_att("first.pdf")]},
        "700005": {"add": [_att("invoice.pdf", "download_attr")]},
    }}],
}
ALL = [po["id"] for po in REFRESH["pos"]]


@pytest.fixture(scope="module")
def refresh_portal(browser_available_module, tmp_path_factory):
    portal = DemoPortal(Scenario.from_dict(REFRESH)).start()
    try:
        profile = prepare_demo_profile(tmp_path_factory.mktemp("refresh") / "profile", portal.base_url, timeout=60)
        yield portal, profile
    finally:
        portal.stop()


def run(portal: DemoPortal, profile: Path, tmp_path: Path, **kw: Any) -> RunSummary:
    settings: dict[str, Any] = dict(po_timeout=60.0, page_timeout=30.0, download_timeout=60.0, backoff_base=0.1)
    settings.update(kw)
    opts = RunOptions(orders=write_orders(tmp_path, ALL), out=tmp_path / "out", site="demo", base_url=portal.base_url,
                      browser="chromium", profile=profile, local_only=True, profiles_root=tmp_path / "profiles",
                      **settings)
    return MainApp(opts).run()


def new_sheet(summary: RunSummary) -> list[tuple[str, str, str]]:
    ws = load_workbook(summary.results_path, read_only=True)[NEW_SHEET]
    rows = list(ws.iter_rows(values_only=True))
    head = rows[0]
    return sorted((str(r[head.index("PO_NUMBER")]), r[head.index("FILE")], r[head.index("CHANGE")]) for r in rows[1:]
                  if r[head.index("FILE")])


def folder_state(summary: RunSummary) -> dict[str, tuple[int, int]]:
    """Every published file's (inode, mtime): what a refresh that changes nothing must leave as it was."""
    out = {}
    for o in summary.outcomes.values():
        if o.download_folder and Path(o.download_folder).is_dir():
            for p in Path(o.download_folder).iterdir():
                st = p.stat()
                out[str(p)] = (st.st_ino, st.st_mtime_ns)
    return out


def assert_refreshed(portal: DemoPortal, before: dict[str, dict[str, int]], pages_before: int,
                     refreshed: RunSummary) -> dict[str, dict[str, int]]:
    """What a refresh of REFRESH from revision 0 to 1 must show (after "delete-me.pdf" of 700006 was
    deleted here); returns the portal's download counts after it."""
    delta = portal.scenario.refresh_delta(0, 1)
    assert refreshed.exit_code == EXIT_OK, {po: o.error_message for po, o in refreshed.outcomes.items()}
    assert_matches_truth(refreshed, portal, ALL, names=True, refreshed_from=0)
    after = {po: portal.downloads_of(po) for po in ALL}
    for po in ALL:
        fetched = {name: n - before[po].get(name, 0) for name, n in after[po].items() if n != before[po].get(name, 0)}
        want = {name: 1 for name in delta[po].new}
        if po == "700006":
            want["delete-me.pdf"] = 1
        assert fetched == want, f"PO {po}: fetched {fetched}, expected exactly {want}"
    assert portal.page_hits("700008") == pages_before  # PO_NOT_FOUND is not asked again without --recheck

    # Statuses and folders: the NO_ATTACHMENTS PO is COMPLETED now, renamed in one step.
    assert refreshed.outcomes["700003"].status.value == "COMPLETED"
    assert not list(refreshed.out_dir.rglob("700003_NO_ATTACHMENTS"))
    gone = {f.name: f.removed_on_portal for f in refreshed.outcomes["700002"].files}
    assert gone == {"a.pdf": "", "b.pdf": refreshed.run_id, "c.pdf": ""}
    assert (Path(refreshed.outcomes["700002"].download_folder) / "b.pdf").is_file()  # kept, never deleted

    new_names = sorted((po, name) for po in ALL for name in delta[po].new)
    expected_sheet = sorted([(po, name, CHANGE_WORDS["new"]) for po, name in new_names]
                            + [("700006", "delete-me.pdf", CHANGE_WORDS["refetched"]),
                               ("700002", "b.pdf", CHANGE_WORDS["removed"])])
    assert new_sheet(refreshed) == expected_sheet
    assert (refreshed.checked, refreshed.new_files, refreshed.new_file_pos, refreshed.refetched_files,
            refreshed.removed_files) == (7, len(new_names) + 1, len({po for po, _ in new_names}) + 1, 1, 1)
    ws = load_workbook(refreshed.results_path, read_only=True)[RESULTS_SHEET]
    rows = list(ws.iter_rows(values_only=True))
    col = rows[0].index("NEW_FILES")
    assert {str(r[0]).removeprefix("PO"): r[col] for r in rows[1:]}["700001"] == 1

    return after


@pytest.mark.parametrize("mode", list(MODES))
def test_a_refresh_fetches_exactly_what_is_new(mode: str, refresh_portal, tmp_path: Path) -> None:
    portal, profile = refresh_portal
    portal.revise(0)
    first = run(portal, profile, tmp_path, **MODES[mode])
    assert first.exit_code == EXIT_OK, {po: o.error_message for po, o in first.outcomes.items()}
    assert_matches_truth(first, portal, ALL, names=True)
    before = {po: portal.downloads_of(po) for po in ALL}
    pages_before = portal.page_hits("700008")
    deleted = Path(first.outcomes["700006"].download_folder) / "delete-me.pdf"
    deleted.unlink()

    portal.revise(1)
    refreshed = run(portal, profile, tmp_path, refresh=True, **MODES[mode])
    after = assert_refreshed(portal, before, pages_before, refreshed)

    if mode != "sequential":
        return
    # Nothing new since: one page visit per PO, no download, not one file touched.
    state = folder_state(refreshed)
    quiet = run(portal, profile, tmp_path, refresh=True)
    assert quiet.exit_code == EXIT_OK and (quiet.new_files, quiet.checked) == (0, 7)
    assert {po: portal.downloads_of(po) for po in ALL} == after
    assert folder_state(quiet) == state
    assert new_sheet(quiet) == []


def test_a_refresh_of_a_po_with_300_files_fetches_only_the_new_ones(browser_available, tmp_path_factory,
                                                                     tmp_path: Path) -> None:
    """Real size: a PO of 300 links gains 5 and loses 3; the refresh asks for the 5 alone, keeps all 300."""
    scenario = {"name": "refresh-300", "seed": 23, "latency": {"page_ms": 20, "attachment_ms": 5},
                "pos": [{"id": "730001", "supplier": "Framework Contract",
                         "attachments": [_att(f"doc {i:03d}.pdf", size=2000) for i in range(300)]}],
                "revisions": [{"label": "amended", "pos": {"730001": {
                    "add": [_att(f"amendment {i}.pdf", size=2500) for i in range(5)],
                    "remove": ["doc 010.pdf", "doc 150.pdf", "doc 299.pdf"]}}}]}
    portal = DemoPortal(Scenario.from_dict(scenario)).start()
    with portal:
        profile = prepare_demo_profile(tmp_path_factory.mktemp("r300") / "profile", portal.base_url, timeout=60)
        orders = write_orders(tmp_path, ["730001"])
        opts = dict(orders=orders, out=tmp_path / "out", site="demo", base_url=portal.base_url, browser="chromium",
                    profile=profile, local_only=True, profiles_root=tmp_path / "profiles", po_timeout=60.0,
                    backoff_base=0.1)
        first = MainApp(RunOptions(**opts)).run()
        assert first.exit_code == EXIT_OK and len(first.outcomes["730001"].files) == 300
        before = portal.downloads_of("730001")
        portal.revise(1)
        refreshed = MainApp(RunOptions(**opts, refresh=True)).run()
        assert refreshed.exit_code == EXIT_OK, refreshed.outcomes["730001"].error_message
        assert_matches_truth(refreshed, portal, ["730001"], names=True, refreshed_from=0)
        after = portal.downloads_of("730001")
        assert {n: c - before.get(n, 0) for n, c in after.items() if c != before.get(n, 0)} == \
            {f"amendment {i}.pdf": 1 for i in range(5)}
        outcome = refreshed.outcomes["730001"]
        assert len(outcome.files) == 305 and sum(bool(f.removed_on_portal) for f in outcome.files) == 3
        assert (refreshed.new_files, refreshed.removed_files) == (5, 3)
