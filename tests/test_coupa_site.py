"""The Coupa site definition and the per-PO workflow against the demo portal, in real headless Chromium.

One portal (the sample scenario) and one signed-in profile serve the whole module: signing in costs a
browser start and a form post, so it is done once. Each test starts its own LocalBrowserSession on that
profile, with its own download folder, and closes it in a finally block.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from conftest import CHROMEDRIVER, CHROMIUM
from pobatch.core.demo_portal import DemoPortal
from pobatch.core.demo_portal.scenario import KINDS
from pobatch.core.commands.login import prepare_demo_profile
from pobatch.core.results import PoOutcome
from pobatch.core.sites import DEMO, SiteDefinition
from pobatch.core.status import Status
from pobatch.core.workflow.job_config import JobConfig
from pobatch.core.workflow.page_probes import PAGE_STATE_JS, PageProbe
from pobatch.core.workflow.po_job import PoJob
from pobatch.core.workflow.po_task import PoTaskPayload
from pobatch.core.workspace import WORK_DIR_NAME
from pobatch.corelib.browser.factory import BrowserSpec
from pobatch.corelib.browser.local_session import LocalBrowserSession
from pobatch.corelib.safe_paths import MAX_COMPONENT, MAX_PATH, contained, safe_component
from pobatch.corelib.worker_pool.tasks import Event

pytestmark = pytest.mark.timeout(180)

# Which sample POs the attachment tests process, and the kinds they hold (checked against the scenario).
KIND_POS = ("100001", "100002", "100003")
# Characters Chromium itself replaces in a download's name; names without them arrive as served.
_CHROMIUM_REWRITES = re.compile(r'[<>:"/\\|?*~]')


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def portal() -> Iterator[DemoPortal]:
    with DemoPortal().start() as p:
        yield p


@pytest.fixture(scope="module")
def signed_in_profile(portal: DemoPortal, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A profile that signed in to the portal once; the browser that did it is gone again."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        msg = "Debian chromium and chromium-driver are not installed"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return prepare_demo_profile(tmp_path_factory.mktemp("demo") / "profile", portal.base_url, timeout=60)


@contextlib.contextmanager
def po_job(profile: Path, portal: DemoPortal, work: Path, events: list[Event],
           site: SiteDefinition | None = None) -> Iterator[PoJob]:
    """A PoJob on its own browser (own download folder); the browser is closed whatever happens."""
    incoming = work / "incoming"
    incoming.mkdir(parents=True)
    spec = BrowserSpec(user_data_dir=str(profile), local_only=True, download_dir=str(incoming), page_load_timeout=60)
    session = LocalBrowserSession(spec)
    try:
        session.start()
        config = JobConfig(site="demo", base_url=portal.base_url, out_dir=str(work / "out"))
        yield PoJob(session, config, emit=events.append, site=site)
    finally:
        session.close()


# -- helpers ----------------------------------------------------------------------------------------
def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def probe(driver, portal: DemoPortal, po: str | None = None) -> tuple[str, str]:
    """The page state and its evidence; with `po`, what that PO's page must prove is checked too."""
    expect = DEMO.expectation("po", po, portal.base_url) if po else None
    seen = PageProbe.of(driver.execute_script(PAGE_STATE_JS, DEMO.page_probe_config(portal.base_url), expect))
    return seen.state, seen.detail


def published_files(out: Path) -> list[Path]:
    work = out / WORK_DIR_NAME
    return sorted(p for p in out.rglob("*") if p.is_file() and work not in p.parents)


def assert_files_are_the_portals(portal: DemoPortal, po: str, outcome: PoOutcome) -> dict[str, str]:
    """Same bytes as the portal serves (as a multiset), on disk as recorded; returns name -> sha256."""
    expected = portal.expected_files(po)
    assert expected, f"the scenario gives PO {po} no files"
    assert Counter(f.sha256 for f in outcome.files) == Counter(sha(b) for b in expected.values())
    assert outcome.attachments_found == outcome.attachments_downloaded == len(expected)
    folder = Path(outcome.download_folder)
    on_disk = {p.name: sha(p.read_bytes()) for p in folder.iterdir()}
    assert on_disk == {f.name: f.sha256 for f in outcome.files}
    for f in outcome.files:
        assert f.size == (folder / f.name).stat().st_size
        # Windows-safe already: pobatch's own rules leave the published name unchanged
        assert safe_component(f.name, basename=True) == f.name, f.name
    return on_disk


def served_name_for(portal: DemoPortal, po: str, data_sha: str) -> str:
    return next(name for name, data in portal.expected_files(po).items() if sha(data) == data_sha)


def assert_plain_names_arrive_as_served(portal: DemoPortal, po: str, outcome: PoOutcome) -> None:
    """A name Chromium does not rewrite is published as pobatch's safe form of the served name."""
    for f in outcome.files:
        served = served_name_for(portal, po, f.sha256)
        if not _CHROMIUM_REWRITES.search(served) and not served.startswith("."):
            assert f.name == safe_component(served, basename=True), (served, f.name)


def downloads_of(events: list[Event], po: str) -> list[str]:
    return [e.detail for e in events if e.task_key == po and e.action == "download" and e.outcome == "ok"]


def actions_of(events: list[Event], po: str) -> list[str]:
    return [e.action for e in events if e.task_key == po]


# -- the scenario covers what these tests claim -----------------------------------------------------
def test_the_processed_pos_hold_every_attachment_kind(portal: DemoPortal) -> None:
    kinds = {e.spec.kind for po in KIND_POS for e in portal.scenario.entries(po, "po")}
    assert kinds == set(KINDS)


# -- login ------------------------------------------------------------------------------------------
def test_a_profile_that_never_signed_in_is_told_to_sign_in(browser_available: None, portal: DemoPortal,
                                                           tmp_path: Path) -> None:
    events: list[Event] = []
    before = portal.download_counts()
    with po_job(tmp_path / "never-signed-in", portal, tmp_path, events) as job:
        outcome = job.process(PoTaskPayload("100001"))

        assert outcome.status is Status.LOGIN_REQUIRED
        assert outcome.attempts == 1  # a login page is never retried: the whole run pauses
        msg = outcome.error_message
        assert "sign in" in msg.lower() and portal.base_url in msg
        driver = job.session.driver
        # the portal redirected to its login page, and the probe knows it by path and by form
        assert "/sessions/new" in driver.current_url
        assert probe(driver, portal) == ("login", "sign-in path /sessions/new")
        driver.get(portal.base_url + "/sessions/new")
        assert probe(driver, portal) == ("login", "sign-in path /sessions/new")
        assert len(driver.find_elements("css selector", "form#new_session #user_email")) == 1
    assert portal.download_counts() == before
    assert published_files(tmp_path / "out") == []
    assert not list((tmp_path / "out").glob("*/100001_*"))


# -- page recognition -------------------------------------------------------------------------------
def test_not_found_and_not_authorized_pages_are_po_not_found(signed_in_profile: Path, portal: DemoPortal,
                                                             tmp_path: Path) -> None:
    events: list[Event] = []
    hits = {po: portal.page_hits(po) for po in ("100007", "100011")}
    with po_job(signed_in_profile, portal, tmp_path, events) as job:
        missing = job.process(PoTaskPayload("100007"))
        assert probe(job.session.driver, portal)[0] == "not_found"
        forbidden = job.process(PoTaskPayload("PO100011"))  # the prefix is stripped for the URL
        assert probe(job.session.driver, portal)[0] == "not_authorized"

    assert (missing.status, missing.reason) == (Status.PO_NOT_FOUND, "")
    assert (forbidden.status, forbidden.reason) == (Status.PO_NOT_FOUND, "NOT_AUTHORIZED")
    assert (missing.attempts, forbidden.attempts) == (1, 1)
    # a business answer: asked once, never retried
    assert {po: portal.page_hits(po) - n for po, n in hits.items()} == {"100007": 1, "100011": 1}
    assert missing.files == forbidden.files == []
    assert forbidden.po_url == portal.po_url("100011")
    assert Path(missing.download_folder).name == "100007_PO_NOT_FOUND"


def test_a_harmless_notice_is_not_an_error(signed_in_profile: Path, portal: DemoPortal, tmp_path: Path) -> None:
    events: list[Event] = []
    with po_job(signed_in_profile, portal, tmp_path, events) as job:
        driver = job.session.driver
        driver.get(portal.po_url("100012"))
        notices = driver.execute_script(
            "return [...document.querySelectorAll('div.notice')].map(e => e.innerText.trim())")
        assert notices and all(notices), "the PO page should carry a non-empty div.notice"
        assert probe(driver, portal, "100012")[0] == "ready"
        assert probe(driver, portal)[0] == "unrecognised"  # nothing expected, nothing proven
        outcome = job.process(PoTaskPayload("100012"))

    assert (outcome.status, outcome.reason) == (Status.COMPLETED, "")
    assert_files_are_the_portals(portal, "100012", outcome)
    assert outcome.supplier == "Globex Corporation"


# -- every attachment kind --------------------------------------------------------------------------
# Script clicks are the default; pointer clicks (trusted events) stay for portals that need them.
CLICKS = pytest.mark.parametrize("pointer", [False, True], ids=["script-click", "pointer-click"])


@CLICKS
def test_link_download_attr_and_js_kinds_under_the_floating_toolbar(signed_in_profile: Path, portal: DemoPortal,
                                                                    tmp_path: Path, pointer: bool) -> None:
    events: list[Event] = []
    site = dataclasses.replace(DEMO, pointer_clicks=pointer)
    with po_job(signed_in_profile, portal, tmp_path, events, site) as job:
        driver = job.session.driver
        driver.get(portal.po_url("100001"))
        # The page opens scrolled to its attachments: the first one lies under the floating toolbar.
        first_name, covered = driver.execute_script(
            """
            const el = document.querySelector('#attachments li.attachment_item > *');
            const r = el.getBoundingClientRect();
            const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
            const bar = document.querySelector(arguments[0]);
            return [el.innerText.trim(), !!(bar && hit && bar.contains(hit))];
            """,
            ".page_buttons_right.orderHeaderShowFloatingSection.floatingSectionOnTop",  # the demo's toolbar
        )
        assert covered, "the floating toolbar should cover the first attachment before pobatch acts"
        outcome = job.process(PoTaskPayload("100001"))
        assert len(driver.window_handles) == 1

    assert (outcome.status, outcome.reason) == (Status.COMPLETED, "")
    assert_files_are_the_portals(portal, "100001", outcome)
    assert_plain_names_arrive_as_served(portal, "100001", outcome)
    assert {f.name for f in outcome.files} == {"Invoice 2024-001.pdf", "Delivery note.docx", "Facture été №5.pdf"}
    assert all(f.source == "po" for f in outcome.files)
    # the covered link was downloaded (pointer: by a scrolled click or, still covered, a script click)
    done = downloads_of(events, "100001")
    how = r"(js-)?click" if pointer else "script"
    assert any(re.match(re.escape(first_name) + f" via {how} ", d) for d in done), done
    assert Path(outcome.download_folder) == tmp_path / "out" / "Acme Office Supplies" / "100001_COMPLETED"


@CLICKS
def test_span_popup_and_a_duplicate_name(signed_in_profile: Path, portal: DemoPortal, tmp_path: Path,
                                         pointer: bool) -> None:
    events: list[Event] = []
    with po_job(signed_in_profile, portal, tmp_path, events, dataclasses.replace(DEMO, pointer_clicks=pointer)) as job:
        outcome = job.process(PoTaskPayload("100002"))
        # the popup that started a download was closed and the PO page's window kept
        assert len(job.session.driver.window_handles) == 1
        assert job.session.driver.current_url == portal.po_url("100002")

    assert (outcome.status, outcome.reason) == (Status.COMPLETED, "")
    on_disk = assert_files_are_the_portals(portal, "100002", outcome)
    assert_plain_names_arrive_as_served(portal, "100002", outcome)
    actions = actions_of(events, "100002")
    assert actions.count("popup_opened") == 1 and actions.count("popup_closed") == 1
    assert actions.index("popup_opened") < actions.index("popup_closed")
    # two different files served as invoice.pdf: both kept, neither overwritten
    assert {"invoice.pdf", "invoice (1).pdf"} <= set(on_disk)
    assert on_disk["invoice.pdf"] != on_disk["invoice (1).pdf"]
    expected = portal.expected_files("100002")
    assert {on_disk["invoice.pdf"], on_disk["invoice (1).pdf"]} == {sha(expected["invoice.pdf"]),
                                                                    sha(expected["invoice (1).pdf"])}
    assert Path(outcome.download_folder).parent.name == safe_component("Müller & Söhne: GmbH")


def test_inline_pdf_span_and_a_name_with_forbidden_characters(signed_in_profile: Path, portal: DemoPortal,
                                                             tmp_path: Path) -> None:
    events: list[Event] = []
    with po_job(signed_in_profile, portal, tmp_path, events) as job:
        outcome = job.process(PoTaskPayload("100003"))
        assert len(job.session.driver.window_handles) == 1  # the inline PDF was saved, not shown in a tab

    assert (outcome.status, outcome.reason) == (Status.COMPLETED, "")
    on_disk = assert_files_are_the_portals(portal, "100003", outcome)
    assert_plain_names_arrive_as_served(portal, "100003", outcome)
    assert "Terms and conditions.pdf" in on_disk  # inline PDF: named after the URL's last segment
    served = "Quote: A/B <final>?.pdf"
    quote = next(f.name for f in outcome.files if f.sha256 == sha(portal.expected_files("100003")[served]))
    # Chromium's own rewrite, or pobatch's if a browser passed the name through: never a path
    assert quote in {"Quote_ A_B _final__.pdf", safe_component(served, basename=True)}, quote


# -- requisition fallback and nothing to download ---------------------------------------------------
def test_requisition_fallback_and_no_attachments(signed_in_profile: Path, portal: DemoPortal,
                                                 tmp_path: Path) -> None:
    events: list[Event] = []
    req_hits = portal.requisition_hits("5006")
    with po_job(signed_in_profile, portal, tmp_path, events) as job:
        fallback = job.process(PoTaskPayload("100005"))
        nothing = job.process(PoTaskPayload("100006"))

    assert (fallback.status, fallback.reason) == (Status.COMPLETED, "REQUISITION_FALLBACK")
    assert_files_are_the_portals(portal, "100005", fallback)
    assert_plain_names_arrive_as_served(portal, "100005", fallback)
    assert {f.source for f in fallback.files} == {"requisition"}
    assert "requisition_fallback" in actions_of(events, "100005")
    assert fallback.supplier == "Acme Office Supplies"

    assert (nothing.status, nothing.reason) == (Status.NO_ATTACHMENTS, "")
    assert nothing.files == [] and nothing.attachments_found == 0
    assert portal.requisition_hits("5006") - req_hits == 1  # it did look at the requisition
    folder = Path(nothing.download_folder)
    assert folder.name == "100006_NO_ATTACHMENTS" and folder.is_dir() and not any(folder.iterdir())


# -- file names -------------------------------------------------------------------------------------
def test_file_names_are_windows_safe_and_stay_in_their_po_folder(signed_in_profile: Path, portal: DemoPortal,
                                                                 tmp_path: Path) -> None:
    events: list[Event] = []
    with po_job(signed_in_profile, portal, tmp_path, events) as job:
        outcome = job.process(PoTaskPayload("100004"))

    assert (outcome.status, outcome.reason) == (Status.COMPLETED, "")
    on_disk = assert_files_are_the_portals(portal, "100004", outcome)
    names = set(on_disk)
    assert "_CON.pdf" in names
    long_served = next(n for n in portal.expected_files("100004") if n.startswith("Framework agreement"))
    long_name = next(n for n in names if n.startswith("Framework agreement"))
    assert long_name.endswith(".pdf") and len(long_name) < len(long_served)
    assert len(long_name) <= MAX_COMPONENT
    escape = next(n for n in names if n.endswith("escape.pdf"))
    assert "/" not in escape and "\\" not in escape and not escape.startswith(".")

    out = tmp_path / "out"
    folder = Path(outcome.download_folder)
    files = published_files(out)
    assert len(files) == 3
    for f in files:
        assert f.parent == folder and contained(folder, f), f
        assert len(f.relative_to(out).parts) == 3  # <Supplier>/<PO>_<STATUS>/<file>
        assert len(str(f)) < MAX_PATH
    # nothing escaped anywhere else either: not above the output folder, not left in the download folder
    assert not [p for p in tmp_path.rglob("*escape*") if folder not in p.parents]
    assert not any((tmp_path / "incoming").iterdir())


def test_a_popup_that_lands_on_the_sign_in_page_stops_the_po_at_once(browser_available: None, tmp_path: Path) -> None:
    """Not after the download timeout: the popup is looked at while its download is awaited."""
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps({
        "name": "popup-sign-in", "seed": 1, "latency": {"page_ms": 0, "attachment_ms": 0},
        "pos": [{"id": "900001", "supplier": "Popup Ltd",
                 "attachments": [{"name": "scan.pdf", "kind": "popup", "size": 4000}]}]}), encoding="utf-8")
    events: list[Event] = []
    with DemoPortal(path).start() as portal:
        profile = prepare_demo_profile(tmp_path / "profile", portal.base_url, timeout=60)
        used = portal.state()["sessions"][0]["requests"]
        # The PO page is the session's last request: the popup it opens meets the sign-in page.
        portal.scenario = dataclasses.replace(
            portal.scenario, session=dataclasses.replace(portal.scenario.session, expire_after_requests=used + 1))
        with po_job(profile, portal, tmp_path / "work", events) as job:
            job.config.download_timeout = 60.0
            outcome = job.process(PoTaskPayload("900001"))

    assert outcome.status is Status.LOGIN_REQUIRED, outcome
    assert outcome.attempts == 1 and "sign-in" in outcome.error_message
    assert "popup_opened" in actions_of(events, "900001")
    assert not [e for e in events if e.action == "download" and e.outcome == "failed"], "it waited for a timeout"
