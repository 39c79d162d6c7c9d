"""Downloads tracked by the browser's own events (issue 15, and 14.1/14.6): a page's files at once,
each matched to its attachment, names too long for a file system, and downloads cut off for good.

Real demo portal, real headless Chromium, real files: the PoJob runs on one browser as in sequential
mode, and the events it emits say which attachment each file was matched to.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import pytest

from pobatch.core.demo_portal import DemoPortal
from pobatch.core.demo_portal.scenario import Scenario
from pobatch.core.commands.login import prepare_demo_profile
from pobatch.core.status import Status
from pobatch.core.workflow.job_config import JobConfig
from pobatch.core.workflow.po_job import PoJob
from pobatch.core.workflow.po_task import PoTaskPayload
from pobatch.corelib.browser.factory import BrowserSpec
from pobatch.corelib.browser.local_session import LocalBrowserSession
from pobatch.corelib.worker_pool.tasks import Event

pytestmark = pytest.mark.usefixtures("browser_available")

LONG_ASCII = "L" * 300 + ".pdf"  # 304 bytes: more than any file system takes in one name
MIXED = ("Счёт-фактура 請求書 إيصال 🧾📄 " * 8)[:171] + ".pdf"  # 175 characters, over 255 UTF-8 bytes
assert len(MIXED) == 175 and len(MIXED.encode("utf-8")) > 255
REVERSED = (2400, 1200, 200)  # click order first, finish order last


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def scenario() -> Scenario:
    def att(name: str, kind: str = "link", **kw) -> dict:
        return {"name": name, "kind": kind, "size": 30_000, **kw}

    return Scenario.from_dict({
        "name": "download-events", "seed": 11, "stall_seconds": 60,
        "latency": {"page_ms": 20, "attachment_ms": 50},
        "pos": [
            {"id": "700001", "supplier": "Long Names", "attachments": [att(LONG_ASCII), att(MIXED, "download_attr")]},
            {"id": "700002", "supplier": "Same Names", "attachments": [att("invoice.pdf"), att("invoice.pdf")]},
            {"id": "700003", "supplier": "Reverse", "attachments": [
                att(f"first-{REVERSED[0]}.pdf", latency_ms=REVERSED[0]),
                att(f"second-{REVERSED[1]}.pdf", latency_ms=REVERSED[1]),
                att(f"third-{REVERSED[2]}.pdf", latency_ms=REVERSED[2])]},
            {"id": "700004", "supplier": "Reverse Popups", "attachments": [
                att(f"pop-first-{REVERSED[0]}.pdf", "popup", latency_ms=REVERSED[0]),
                att(f"pop-second-{REVERSED[1]}.pdf", "popup", latency_ms=REVERSED[1]),
                att(f"pop-third-{REVERSED[2]}.pdf", "popup", latency_ms=REVERSED[2])]},
            {"id": "700005", "supplier": "Cut Off", "attachments": [
                att("whole.pdf"), att("dropped.pdf", faults=["drop_mid"])]},
            {"id": "700006", "supplier": "Stalled", "attachments": [
                att("whole.pdf"), att("stalled.pdf", faults=["stall_mid"])]},
            {"id": "700007", "supplier": "Error Page", "attachments": [
                att("whole.pdf"), att("broken.pdf", "span", faults=["http500"]), att("after.pdf", "span")]},
            {"id": "700008", "supplier": "Error Link", "attachments": [
                att("whole.pdf"), att("broken.pdf", faults=["http500"]), att("after.pdf")]},
        ],
    })


@pytest.fixture(scope="module")
def portal(browser_available_module):
    with DemoPortal(scenario()) as p:
        yield p


@pytest.fixture(scope="module")
def profile(portal, tmp_path_factory):
    return prepare_demo_profile(tmp_path_factory.mktemp("profile") / "p", portal.base_url)


def run_po(portal: DemoPortal, profile: Path, out: Path, po: str, **cfg) -> tuple:
    events: list[Event] = []
    spec = BrowserSpec(user_data_dir=str(profile), download_dir=str(out / "dl"), local_only=True)
    config = JobConfig(site="demo", base_url=portal.base_url, out_dir=str(out), backoff_base=0.05, **cfg)
    with LocalBrowserSession(spec) as session:
        outcome = PoJob(session, config, emit=events.append).process(PoTaskPayload(po))
    return outcome, events


def files_by_bytes(folder: Path) -> Counter:
    return Counter(sha(p.read_bytes()) for p in folder.iterdir())


def test_names_too_long_for_a_file_system_download_under_a_short_name_that_keeps_the_extension(
        portal, profile, tmp_path):
    outcome, _ = run_po(portal, profile, tmp_path, "700001", po_timeout=60)
    assert (outcome.status, outcome.reason) == (Status.COMPLETED, "")
    folder = Path(outcome.download_folder)
    assert files_by_bytes(folder) == Counter(sha(b) for b in portal.expected_files("700001").values())
    assert {f.original_name for f in outcome.files} == {LONG_ASCII, MIXED}
    names = [f.name for f in outcome.files]
    assert len(set(names)) == 2
    for f in outcome.files:
        assert f.name.endswith(".pdf") and len(f.name.encode("utf-8")) <= 255
        assert f.original_name.startswith(f.name[:-4])  # shortened, recognisably the same name
        assert (folder / f.name).stat().st_size == f.size


def test_two_attachments_of_the_same_name_both_arrive_under_distinct_names(portal, profile, tmp_path):
    outcome, _ = run_po(portal, profile, tmp_path, "700002")
    assert outcome.status is Status.COMPLETED
    folder = Path(outcome.download_folder)
    assert sorted(p.name for p in folder.iterdir()) == ["invoice (1).pdf", "invoice.pdf"]
    expected = portal.expected_files("700002")
    assert len(set(expected.values())) == 2  # two different files that share a name
    assert files_by_bytes(folder) == Counter(sha(b) for b in expected.values())


@pytest.mark.parametrize("po", ["700003", "700004"], ids=["links", "popups"])
def test_files_that_finish_in_reverse_click_order_are_matched_to_their_own_attachment(portal, profile, tmp_path, po):
    outcome, events = run_po(portal, profile, tmp_path, po, files_at_once=4)
    assert outcome.status is Status.COMPLETED
    folder = Path(outcome.download_folder)
    expected = portal.expected_files(po)
    assert {p.name: sha(p.read_bytes()) for p in folder.iterdir()} == {n: sha(b) for n, b in expected.items()}
    done = [e for e in events if e.action == "download" and e.outcome == "ok"]
    if po == "700003":
        # finished in the reverse order of the clicks (a popup's click can take ChromeDriver a second
        # on a busy machine, so only the links' order is certain)
        assert [e.detail.split(" via ")[0] for e in done] == sorted(expected, key=lambda n: int(n[:-4].rsplit("-", 1)[1]))
    # the PO's record lists its files in the page's order, whatever order they finished in
    assert [f.name for f in outcome.files] == list(expected)
    # each file went to the attachment clicked for it
    for e in done:
        name, label = re.match(r"(.*) via .* from attachment '(.*)' by ", e.detail).groups()
        assert name == label, e.detail
    if po == "700004":
        assert all(e.detail.endswith(" by frame") for e in done)
        closed = [e for e in events if e.action == "popup_closed"]
        assert len(closed) == 3


@pytest.mark.parametrize("po", ["700005", "700006"], ids=["drop_mid", "stall_mid"])
def test_a_download_cut_off_for_good_ends_partial_not_timeout(portal, profile, tmp_path, po):
    # Three attempts of a PO whose file never arrives must fit in a PO timeout far below the 120 s
    # download timeout: the browser says the download ended, or its bytes stop (stall_timeout).
    outcome, _ = run_po(portal, profile, tmp_path, po, po_timeout=25, stall_timeout=4, max_attempts=2)
    assert (outcome.status, outcome.reason) == (Status.PARTIAL, "DOWNLOAD_FAILED"), outcome.error_message
    assert [f.name for f in outcome.files] == ["whole.pdf"]
    assert outcome.attempts == 2


@pytest.mark.parametrize("po,files_at_once", [("700007", 4), ("700008", 4), ("700008", 1)],
                         ids=["script-link", "link-as-download", "link-one-by-one"])
def test_an_attachment_that_answers_with_an_error_page_fails_alone(portal, profile, tmp_path, po, files_at_once):
    # The error page either replaces the PO page (a script or a plain link navigating the page's own
    # frame) or ends a download at once (a link marked as a download): either way that attachment
    # fails, the others arrive, and the PO ends PARTIAL after its attempts.
    outcome, events = run_po(portal, profile, tmp_path, po, files_at_once=files_at_once, max_attempts=2)
    assert (outcome.status, outcome.reason) == (Status.PARTIAL, "DOWNLOAD_FAILED"), outcome.error_message
    assert sorted(f.name for f in outcome.files) == ["after.pdf", "whole.pdf"]
    failed = [e for e in events if e.action == "download" and e.outcome == "failed"]
    assert len(failed) == 2 and all("broken.pdf" in e.detail for e in failed), [e.detail for e in failed]


def test_a_long_name_s_full_form_reaches_the_run_store_and_the_workbook(portal, profile, tmp_path):
    import json
    import sqlite3

    import openpyxl

    from pobatch.core.app import MainApp, RunOptions

    orders = tmp_path / "orders.csv"
    orders.write_text("PO_NUMBER\n700001\n", encoding="utf-8")
    summary = MainApp(RunOptions(orders=orders, out=tmp_path / "out", site="demo", base_url=portal.base_url,
                                 browser="chromium", profile=profile, local_only=True, backoff_base=0.1,
                                 profiles_root=tmp_path / "clones")).run()
    assert summary.outcomes["700001"].status is Status.COMPLETED
    db = sqlite3.connect(summary.out_dir / ".pobatch" / "runs.sqlite")
    try:
        data = json.loads(db.execute("SELECT data FROM tasks WHERE key='700001'").fetchone()[0])
    finally:
        db.close()
    assert {f["original_name"] for f in data["files"]} == {LONG_ASCII, MIXED}
    ws = openpyxl.load_workbook(summary.results_path)["Results"]
    header = [c.value for c in ws[1]]
    names = next(ws.iter_rows(min_row=2, values_only=True))[header.index("ATTACHMENT_NAMES")]
    assert f"[{LONG_ASCII}]" in names and f"[{MIXED}]" in names
