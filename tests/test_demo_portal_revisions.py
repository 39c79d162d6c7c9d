"""Demo scenarios that change between runs (issue 22, `--refresh`): the derivation, and the portal at
HTTP level (real sockets on 127.0.0.1, no browser)."""
from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from pobatch.core.demo_portal import (
    DemoPortal,
    PoChange,
    RefreshDelta,
    Revision,
    Scenario,
    ScenarioError,
    load_scenario,
    sample_scenario_path,
)
from pobatch.core.demo_portal.server import _loopback, main
from test_demo_portal import Client, file_url_of, logged_in, parse_page, reference_run, saved_name, uniquify

pytestmark = pytest.mark.timeout(60)

# The sample's served identities at revision 0 (counter key, token, URL, sha256 of the bytes), as the code
# before revisions existed derived them: revisions must not move a single one.
SAMPLE_REVISION_0 = "a319a2de71ba07c90bd71ff23d8b63e5510cdb54fd4c6ce4b8c1bc6d121692d4"
SAMPLE_CHANGES = {
    "100003": RefreshDelta((), ("Supplier reply.eml",), "COMPLETED", "COMPLETED"),
    "100006": RefreshDelta(("Delivery confirmation.pdf",), (), "NO_ATTACHMENTS", "COMPLETED"),
    "100012": RefreshDelta(("Invoice 2024-118.pdf",), (), "COMPLETED", "COMPLETED"),
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def identities(s: Scenario) -> str:
    h = hashlib.sha256()
    for e in sorted(s.all_entries(), key=lambda e: e.token):
        h.update(f"{e.counter_key}|{e.token}|{e.page_url}|{sha(s.file_bytes(e))}\n".encode())
    return h.hexdigest()


def scenario(pos: list[dict], revisions: list[dict], **top: Any) -> Scenario:
    return Scenario.from_dict({"seed": 3, "pos": pos, "revisions": revisions, **top}, source="test.json")


def by_key(s: Scenario, po_id: str, owner: str = "po") -> dict[str, tuple[str, str, str]]:
    """Served name -> (token, URL, sha256 of the bytes): an attachment's identity as a client meets it."""
    return {e.key: (e.token, e.page_url, sha(s.file_bytes(e))) for e in s.entries(po_id, owner)}


PLAIN = [{"id": "1", "attachments": [{"name": "a.pdf"}, {"name": "a.pdf", "kind": "span"}, {"name": "b.docx"}]},
         {"id": "2", "attachments": [], "requisition": {"id": "r2", "attachments": []}},
         {"id": "3", "requisition": {"id": "r3", "attachments": [{"name": "req.pdf"}]}}]


# -- the derivation ---------------------------------------------------------------------------------
def test_revision_0_serves_what_the_sample_served_before_revisions_existed() -> None:
    sample = load_scenario(sample_scenario_path())
    assert sample.revision == 0 and sample.revision_count == 1
    assert identities(sample) == SAMPLE_REVISION_0
    assert sample.at_revision(0) is sample
    data = json.loads(sample_scenario_path().read_text(encoding="utf-8"))
    del data["revisions"]
    without = Scenario.from_dict(data)
    assert without.pos == sample.pos and without.expected_outcomes() == sample.expected_outcomes()
    assert all(without.expected_files(po.id) == sample.expected_files(po.id) for po in sample.pos)


def test_a_held_attachment_keeps_its_identity_and_an_added_one_gets_a_new_one() -> None:
    s = scenario(PLAIN, [{"pos": {"1": {"add": [{"name": "c.pdf"}, {"name": "b.docx"}], "remove": ["a.pdf"]}}}])
    before, after = by_key(s, "1"), by_key(s.at_revision(1), "1")
    assert set(before) == {"a.pdf", "a (1).pdf", "b.docx"}
    assert set(after) == {"a (1).pdf", "b.docx", "c.pdf", "b (1).docx"}  # a name the PO had is never reused
    for name in ("a (1).pdf", "b.docx"):
        assert after[name] == before[name]
    old = {t for t, _url, _sha in before.values()} | {h for _t, _url, h in before.values()}
    for name in ("c.pdf", "b (1).docx"):
        token, url, digest = after[name]
        assert token not in old and digest not in old and token in url
    assert s.at_revision(1).entry_by_token(before["a.pdf"][0]) is None  # removed: its URL no longer answers
    assert [e.revision for e in s.at_revision(1).entries("1")] == [0, 0, 1, 1]
    # the PO as served at the revision, while `pos` stays the scenario as written
    assert [a.name for a in s.at_revision(1).po("1").attachments] == ["a.pdf", "b.docx", "c.pdf", "b.docx"]
    assert s.at_revision(1).pos == s.pos


def test_additions_of_different_revisions_never_share_a_token_or_bytes() -> None:
    same = {"add": [{"name": "x.pdf"}]}
    s = scenario([{"id": "1", "attachments": [{"name": "x.pdf"}]}],
                 [{"pos": {"1": same}}, {"pos": {"1": same}}, {"pos": {"1": {"remove": ["x.pdf"]}}}])
    last = s.at_revision(3)
    tokens = [e.token for e in last.entries("1")]
    assert len(last.entries("1")) == 2 and len(set(tokens)) == 2
    assert len({sha(last.file_bytes(e)) for e in last.entries("1")}) == 2
    assert [e.key for e in last.entries("1")] == ["x (1).pdf", "x (2).pdf"]
    assert [e.counter_key for e in last.entries("1")] == ["1/x (1).pdf", "1/x (2).pdf"]


def test_outcomes_follow_the_revision() -> None:
    s = scenario(PLAIN, [{"label": "later", "pos": {"2": {"requisition_add": [{"name": "r.pdf"}]},
                                                    "3": {"add": [{"name": "own.pdf"}]}}},
                         {"pos": {"2": {"add": [{"name": "first.pdf"}]}, "3": {"remove": ["own.pdf"]}}}])
    assert {k: v for k, v in s.expected_outcomes().items() if k != "1"} == \
        {"2": ("NO_ATTACHMENTS", ""), "3": ("COMPLETED", "REQUISITION_FALLBACK")}
    assert s.at_revision(1).expected_outcomes() == \
        {"1": ("COMPLETED", ""), "2": ("COMPLETED", "REQUISITION_FALLBACK"), "3": ("COMPLETED", "")}
    assert s.at_revision(2).expected_outcomes() == \
        {"1": ("COMPLETED", ""), "2": ("COMPLETED", ""), "3": ("COMPLETED", "REQUISITION_FALLBACK")}
    assert list(s.at_revision(1).expected_files("3")) == ["own.pdf"]
    assert list(s.at_revision(2).expected_files("2")) == ["first.pdf"]


def test_refresh_delta_of_the_sample_is_exactly_its_three_changes() -> None:
    sample = load_scenario(sample_scenario_path())
    delta = sample.refresh_delta(0, 1)
    assert set(delta) == {po.id for po in sample.pos}
    assert {po: d for po, d in delta.items() if d.changed} == SAMPLE_CHANGES
    for po_id, d in delta.items():
        assert (d.status_before, d.reason_before) == sample.expected_outcomes()[po_id]
        assert (d.status_after, d.reason_after) == sample.at_revision(1).expected_outcomes()[po_id]
    assert not any(d.changed for d in sample.refresh_delta(1, 1).values())


def test_the_folder_after_a_refresh_holds_both_revisions_files() -> None:
    sample = load_scenario(sample_scenario_path())
    now = sample.at_revision(1)
    for po in sample.pos:
        before, after = sample.expected_files(po.id), now.expected_files(po.id)
        union = sample.expected_files_after_refresh(po.id, 0, 1)
        assert union == now.expected_files(po.id, refreshed_from=0)
        assert {sha(b) for b in union.values()} == {sha(b) for b in (*before.values(), *after.values())}
        assert {k: v for k, v in union.items() if k in before} == before
        assert set(union) - set(before) == set(sample.refresh_delta(0, 1)[po.id].new)
    removed = sample.expected_files("100003")["Supplier reply.eml"]
    assert "Supplier reply.eml" not in now.expected_files("100003")
    assert now.match_by_bytes("100003", {"kept.eml": removed}) == {"kept.eml": None}
    assert now.match_by_bytes("100003", {"kept.eml": removed}, refreshed_from=0) == \
        {"kept.eml": "Supplier reply.eml"}
    union = sample.expected_files_after_refresh("100012", 0, 1)
    assert now.expected_sha256("100012", refreshed_from=0) == {sha(b): n for n, b in union.items()}


def test_a_new_file_named_like_a_held_one_lands_beside_it() -> None:
    """A corrected "a.pdf" replaces the old one on the portal; the client keeps the old file, so the new
    one is "a (2).pdf" beside it, while a fresh run at that revision saves it as "a (1).pdf"."""
    s = scenario(PLAIN, [{"pos": {"1": {"remove": ["a.pdf"], "add": [{"name": "a.pdf"}]}}}])
    d = s.refresh_delta(0, 1)["1"]
    assert d == RefreshDelta(("a (2).pdf",), ("a.pdf",), "COMPLETED", "COMPLETED")
    assert list(s.expected_files_after_refresh("1", 0, 1)) == ["a.pdf", "a (1).pdf", "b.docx", "a (2).pdf"]
    assert list(s.at_revision(1).expected_files("1")) == ["a.pdf", "b.docx", "a (1).pdf"]
    assert [e.counter_key for e in s.at_revision(1).entries("1")] == ["1/a (1).pdf", "1/b.docx", "1/a (2).pdf"]


@pytest.mark.parametrize("revisions,message", [
    ([{"label": "wk", "pos": {"1": {"remove": ["nope.pdf"]}}}],
     r"test.json: revision 1 \(wk\): PO 1: remove: no attachment named 'nope.pdf' at this revision; it has "
     r"\['a.pdf', 'a \(1\).pdf', 'b.docx'\]"),
    ([{"pos": {"1": {"remove": ["b.docx"]}}}, {"pos": {"1": {"remove": ["b.docx"]}}}],
     r"test.json: revision 2: PO 1: remove: no attachment named 'b.docx'"),
    ([{"pos": {"3": {"requisition_remove": ["x.pdf"]}}}],
     r"revision 1: PO 3: requisition_remove: no attachment named 'x.pdf'"),
    ([{"pos": {"1": {"requisition_add": [{"name": "x.pdf"}]}}}], r"revision 1: PO 1: requisition_add/remove: the PO "
                                                                  r"has no requisition"),
    ([{"pos": {"9": {"add": [{"name": "x.pdf"}]}}}], r"test.json: revision 1: PO '9' is not a PO of the scenario"),
    ([{"pos": {"1": {}}}], r"revision 1: PO 1: nothing to change"),
    ([{"pos": {"1": {"add": [{"name": "x.pdf", "kind": "fax"}]}}}], r"revision 1: PO 1.add\[0\].kind: unknown kind"),
    ([{"pos": {"1": {"remove": "a.pdf"}}}], r"revision 1: PO 1.remove: expected a list"),
    ([{"pos": {"1": {"rename": ["a.pdf"]}}}], r"revision 1: PO 1: unknown key\(s\) \['rename'\]"),
    ([{"pos": ["1"]}], r"revision 1.pos: expected an object"),
    ({"pos": {}}, r"revisions: expected a list"),
])
def test_bad_revisions_are_refused_with_a_clear_message(revisions: Any, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        scenario(PLAIN, revisions)


def test_revisions_built_in_code_are_checked_too() -> None:
    base = Scenario.from_dict({"seed": 1, "pos": PLAIN})
    with pytest.raises(ScenarioError, match=r"revision 1: PO 1: remove: no attachment named 'zz.pdf'"):
        Scenario(seed=1, pos=base.pos, revisions=(Revision(pos=(PoChange("1", remove=("zz.pdf",)),)),))
    ok = Scenario(seed=1, pos=base.pos, revisions=(Revision(pos=(PoChange("1", remove=("a.pdf",)),)),))
    for bad in (2, -1, True):
        with pytest.raises(ScenarioError, match="expected 0 to 1"):
            ok.at_revision(bad)
    with pytest.raises(ScenarioError, match="expected 0 to 0"):
        Scenario(seed=1, pos=base.pos, revision=1)


def test_revisions_round_trip_through_json(tmp_path: Path) -> None:
    sample = load_scenario(sample_scenario_path())
    path = tmp_path / "copy.json"
    path.write_text(json.dumps(sample.to_dict(), ensure_ascii=False), encoding="utf-8")
    copy = load_scenario(path)
    assert copy == sample and copy.revisions == sample.revisions and copy.revisions[0].label == "a week later"
    assert copy.refresh_delta(0, 1) == sample.refresh_delta(0, 1)
    assert "revisions" not in Scenario.from_dict({"seed": 1, "pos": PLAIN}).to_dict()


# -- the portal -------------------------------------------------------------------------------------
@pytest.fixture
def portal():
    data = json.loads(sample_scenario_path().read_text(encoding="utf-8"))
    data["latency"] = {"page_ms": 0, "attachment_ms": 0}
    with DemoPortal(Scenario.from_dict(data)).start() as p:
        yield p


def page_items(c: Client, po_id: str) -> dict[str, str]:
    """The PO page's attachments as a client meets them: file URL -> the name the file is saved under."""
    page = c.get(f"/order_headers/{po_id}")
    assert page.status == 200
    out = {}
    for item in parse_page(page.text).items:
        url = file_url_of(c, item)
        r = c.get(url)
        assert r.status == 200
        out[url] = saved_name(url, r)
    return out


def test_revise_changes_the_lists_and_keeps_held_attachments(portal: DemoPortal) -> None:
    c = logged_in(portal)
    before = {po: page_items(c, po) for po in ("100003", "100006", "100012")}
    old_bytes = {url: c.get(url).body for url in before["100003"]}
    assert portal.revision == 0 and before["100006"] == {}
    portal.revise(1)
    assert portal.revision == 1 and c.token  # the session stays
    after = {po: page_items(c, po) for po in ("100003", "100006", "100012")}
    assert list(after["100006"].values()) == ["Delivery confirmation.pdf"]
    assert set(after["100012"].values()) - set(before["100012"].values()) == {"Invoice 2024-118.pdf"}
    assert {u: n for u, n in after["100012"].items() if u in before["100012"]} == before["100012"]
    gone = [u for u, n in before["100003"].items() if n == "Supplier reply.eml"]
    assert len(gone) == 1 and gone[0] not in after["100003"]
    assert after["100003"] == {u: n for u, n in before["100003"].items() if u != gone[0]}
    assert c.get(gone[0]).status == 404
    for url in after["100003"]:
        assert c.get(url).body == old_bytes[url]
    assert "Supplier reply.eml" not in c.get("/order_headers/100003").text
    portal.revise(0)
    assert page_items(c, "100003") == before["100003"]  # back to the start: the same URLs answer again


def test_a_portal_started_at_a_revision_serves_what_revise_serves(portal: DemoPortal) -> None:
    with DemoPortal(portal.scenario, revision=1).start() as other:
        assert other.revision == 1 and other.scenario == portal.scenario.at_revision(1)
        portal.revise(1)
        a, b = logged_in(portal), logged_in(other)
        for po in ("100003", "100006", "100012"):
            assert page_items(a, po) == page_items(b, po)


def post(portal: DemoPortal, path: str) -> tuple[int, dict[str, Any]]:
    """A POST without any session cookie, as another process would send it."""
    req = urllib.request.Request(f"{portal.base_url}{path}", data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_revise_endpoint_moves_a_running_portal(portal: DemoPortal) -> None:
    assert post(portal, "/__demo__/revise?to=1") == (200, {"ok": True, "revision": 1, "revision_count": 1})
    assert portal.revision == 1
    with urllib.request.urlopen(f"{portal.base_url}/__demo__/state", timeout=10) as r:
        assert json.loads(r.read())["revision"] == 1
    for bad in ("2", "-1", "x", ""):
        status, body = post(portal, f"/__demo__/revise?to={bad}")
        assert status == 400 and "expected a revision from 0 to 1" in body["error"]
    assert portal.revision == 1
    assert post(portal, "/__demo__/revise?to=0")[0] == 200 and portal.revision == 0
    with pytest.raises(urllib.error.HTTPError) as got:
        urllib.request.urlopen(f"{portal.base_url}/__demo__/revise?to=1", timeout=10)  # a GET changes nothing
    assert got.value.code == 404 and portal.revision == 0


def test_only_loopback_clients_may_revise() -> None:
    assert _loopback("127.0.0.1") and _loopback("127.0.0.2") and _loopback("::1")
    assert not _loopback("192.168.1.20") and not _loopback("10.0.0.1") and not _loopback("")


def page_urls(c: Client, po_id: str) -> set[str]:
    """The file URLs the PO page lists, fetching no file: what a refresh compares with what it holds.
    A page that fails is asked again, as the client retries (reset() replays the sample's page faults)."""
    page = c.get(f"/order_headers/{po_id}")
    for _ in range(2):
        if page.status < 500:
            break
        page = c.get(f"/order_headers/{po_id}")
    assert page.status == 200
    return {file_url_of(c, item) for item in parse_page(page.text).items}


def test_a_refresh_that_fetches_only_new_files_shows_in_the_counters(portal: DemoPortal) -> None:
    """A minimal refreshing client: a run at revision 0, then each answered PO again at revision 1,
    downloading only the attachments whose URL it does not hold. Its folders end up as the derived
    truth, and the portal's counters show each new file fetched once and no held file fetched again."""
    sample = portal.scenario
    c = logged_in(portal)
    folders: dict[str, dict[str, bytes]] = {}
    held: dict[str, set[str]] = {}
    for po in sample.pos:
        status, reason, files = reference_run(c, po.id)
        assert (status, reason) == sample.expected_outcomes()[po.id]
        if status in ("COMPLETED", "NO_ATTACHMENTS"):
            folders[po.id], held[po.id] = files, page_urls(c, po.id)
    assert len(held) == 9 and all(set(portal.downloads_of(po_id)) == set(sample.expected_files(po_id))
                                  for po_id in held)
    assert post(portal, "/__demo__/revise?to=1")[0] == 200
    portal.reset()  # count the refresh's own requests only
    for po_id, urls in held.items():
        for url in page_urls(c, po_id) - urls:
            r = c.get(url)
            assert r.status == 200
            folders[po_id][uniquify(saved_name(url, r), set(folders[po_id]))] = r.body
    delta = sample.refresh_delta(0, 1)
    for po_id in held:
        assert folders[po_id] == sample.expected_files_after_refresh(po_id, 0, 1), po_id
        assert portal.downloads_of(po_id) == {name: 1 for name in delta[po_id].new}, po_id
        assert portal.downloads_of(po_id, every_request=True) == {name: 1 for name in delta[po_id].new}, po_id
    assert portal.download_counts() == {"100006/Delivery confirmation.pdf": 1, "100012/Invoice 2024-118.pdf": 1}


def test_counters_keep_an_added_file_apart_from_a_held_one_of_the_same_name() -> None:
    s = scenario([{"id": "1", "attachments": [{"name": "a.pdf"}]}],
                 [{"pos": {"1": {"remove": ["a.pdf"], "add": [{"name": "a.pdf"}]}}}],
                 latency={"page_ms": 0, "attachment_ms": 0})
    with DemoPortal(s).start() as p:
        c = logged_in(p)
        first = page_items(c, "1")
        p.revise(1)
        second = page_items(c, "1")
        assert list(first.values()) == list(second.values()) == ["a.pdf"] and set(first) != set(second)
        assert p.downloads_of("1") == {"a.pdf": 1, "a (1).pdf": 1}
        assert p.downloads_of("2") == {}


def test_downloads_of_counts_complete_downloads_or_every_request() -> None:
    s = scenario([{"id": "1", "attachments": [{"name": "a.pdf"}]}, {"id": "10", "attachments": [{"name": "c.pdf"}]}],
                 [{"pos": {"1": {"add": [{"name": "b.pdf", "faults": ["http500", "ok"]}]}}}],
                 latency={"page_ms": 0, "attachment_ms": 0})
    with DemoPortal(s, revision=1).start() as p:
        c = logged_in(p)
        held, new = s.at_revision(1).entries("1")
        assert [c.get(new.file_url).status for _ in range(2)] == [500, 200]
        assert c.get(s.entries("10")[0].file_url).status == 200
        assert p.downloads_of("1") == {"b.pdf": 1} and held.key not in p.downloads_of("1")
        assert p.downloads_of("1", every_request=True) == {"b.pdf": 2}
        assert p.downloads_of("10") == {"c.pdf": 1}


def test_main_refuses_a_revision_the_scenario_does_not_have(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(None, 0, revision=2)
    assert exc.value.code == 2 and "revision 2: expected 0 to 1" in caplog.text
