"""The demo portal's shapes of unfamiliar portals (issue 13) at HTTP level: real sockets, no browser.

Each shape is shown by its status code, headers and body markers, and by the truth the scenario
derives for it. The browser half (a list drawn by script, the variant against the built-in
selectors) is in test_portal_shapes_browser.py.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import re
import time
import tomllib
from html import escape
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from pobatch.core.demo_portal import (
    DemoPortal,
    Scenario,
    ScenarioError,
    hostile_names_scenario_path,
    load_scenario,
    sample_scenario_path,
    unfamiliar_scenario_path,
    variant_scenario_path,
    variant_site_path,
)
from pobatch.core.demo_portal import variant_pages
from pobatch.core.demo_portal.scenario import ALL_KINDS, KINDS, PAGE_FAULTS
from test_demo_portal import (
    SAMPLE_OUTCOMES,
    AttachmentParser,
    Client,
    expected_markup,
    fetch_all,
    file_url_of,
    logged_in,
    parse_page,
    saved_name,
    uniquify,
)

pytestmark = pytest.mark.timeout(60)

# The built-in Coupa definition's texts (SITE_SCHEMA.md): no fault page and no variant page may carry one.
COUPA_NOT_FOUND = ("Oops! We couldn't find what you wanted", "The page you were looking for doesn't exist")
COUPA_NOT_AUTHORIZED = ("You are not authorized", "Access denied")
COUPA_SERVER_ERROR = ("We're sorry, but something went wrong",)
COUPA_TEXTS = COUPA_NOT_FOUND + COUPA_NOT_AUTHORIZED + COUPA_SERVER_ERROR


def scenario(pos: list[dict], **top: Any) -> Scenario:
    return Scenario.from_dict({"seed": 3, "pos": pos, **top}, source="test")


def without_latency(path) -> Scenario:
    data = json.loads(path.read_text(encoding="utf-8"))
    data["latency"] = {"page_ms": 0, "attachment_ms": 0}
    return Scenario.from_dict(data, source=str(path))


@pytest.fixture(scope="module")
def unfamiliar_portal():
    with DemoPortal(without_latency(unfamiliar_scenario_path())).start() as portal:
        yield portal


@pytest.fixture
def unfamiliar(unfamiliar_portal: DemoPortal) -> DemoPortal:
    unfamiliar_portal.reset()
    return unfamiliar_portal


# -- the scenario format: new keys, validated like the old ones ----------------------------------------
@pytest.mark.parametrize("po,top,message", [
    ({"faults": {"page": ["http418"]}}, {}, r"PO 1\.faults\.page: unknown fault"),
    ({"spinner": True}, {}, r"PO 1\.spinner: only means something with attachments_delay_ms"),
    ({"attachments_delay_ms": 500, "spinner": "yes"}, {}, r"PO 1\.spinner: expected true or false"),
    ({"attachments_delay_ms": -1}, {}, r"PO 1\.attachments_delay_ms: expected an integer >= 0"),
    ({"attachments_delay_ms": "soon"}, {}, r"PO 1\.attachments_delay_ms"),
    ({"retry_after_seconds": -2}, {}, r"PO 1\.retry_after_seconds"),
    ({"faults": {"page": ["redirect_other_po"]}}, {}, r"PO 1: the redirect_other_po page fault needs redirect_to"),
    ({"faults": {"page": ["redirect_other_po"]}, "redirect_to": "9"}, {}, r"PO 1: redirect_to '9' must name another"),
    ({"faults": {"page": ["redirect_other_po"]}, "redirect_to": "1"}, {}, r"PO 1: redirect_to '1' must name another"),
    ({"redirect_to": "2"}, {}, r"PO 1: redirect_to is only used by the redirect_other_po page fault"),
    ({"faults": {"page": ["redirect_other_po"]}, "redirect_to": "a/b"}, {}, r"PO 1\.redirect_to: expected the id"),
    ({"attachments": [{"name": "contract", "kind": "inline_labeled"}]}, {}, r"inline_labeled .*file extension"),
    ({"attachments": [{"name": "a.pdf", "kind": "labeled"}]}, {}, r"PO 1\.attachments\[0\]\.kind: unknown kind"),
    ({}, {"markup": "sap"}, r"test: markup: unknown markup 'sap'"),
])
def test_bad_new_keys_are_refused_naming_the_po_and_key(po: dict, top: dict, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        scenario([{"id": "1", **po}, {"id": "2", "attachments": [{"name": "b.pdf"}]}], **top)


@pytest.mark.parametrize("target", [{"missing": True}, {"forbidden": True}, {"faults": {"page": ["http502", "ok"]}},
                                    {"faults": {"page": ["redirect_other_po"]}, "redirect_to": "1"}])
def test_a_redirect_target_must_be_served_normally(target: dict) -> None:
    with pytest.raises(ScenarioError, match=r"PO 1: redirect_to '2' must be a PO served normally"):
        scenario([{"id": "1", "faults": {"page": ["redirect_other_po"]}, "redirect_to": "2"}, {"id": "2", **target}])


def test_the_coupa_kinds_stay_the_samples_and_every_new_shape_is_known() -> None:
    assert KINDS == ("link", "download_attr", "js", "span", "popup", "inline_pdf")
    assert ALL_KINDS == KINDS + ("inline_labeled", "trusted_js")
    assert set(PAGE_FAULTS) == {"ok", "http500", "stall", "drop", "http500_bare", "http502", "http503", "http429",
                                "maintenance", "redirect_other_po", "redirect_dashboard", "sso_interstitial",
                                "http404_bare"}
    sample = load_scenario(sample_scenario_path())
    assert sample.markup == "coupa" and "markup" not in sample.to_dict()
    assert all(po.attachments_delay_ms is None and po.redirect_to is None for po in sample.pos)


def test_new_keys_round_trip_through_to_dict() -> None:
    for path in (unfamiliar_scenario_path(), hostile_names_scenario_path(), variant_scenario_path()):
        s = load_scenario(path)
        copy = Scenario.from_dict(json.loads(json.dumps(s.to_dict())))
        assert copy == s and copy.expected_outcomes() == s.expected_outcomes()


# -- the truth -------------------------------------------------------------------------------------------
ALWAYS = {
    "http500_bare": ("FAILED", "HTTP_500"), "http502": ("FAILED", "HTTP_502"), "http503": ("FAILED", "HTTP_503"),
    "http429": ("FAILED", "HTTP_429"), "maintenance": ("FAILED", "UNRECOGNISED_PAGE"),
    "redirect_other_po": ("FAILED", "UNRECOGNISED_PAGE"), "redirect_dashboard": ("FAILED", "UNRECOGNISED_PAGE"),
    "http404_bare": ("FAILED", "UNRECOGNISED_PAGE"), "sso_interstitial": ("LOGIN_REQUIRED", ""),
}


@pytest.mark.parametrize("fault", sorted(ALWAYS))
def test_each_new_page_fault_derives_its_outcome(fault: str) -> None:
    def outcome(faults: list[str], **top: Any) -> tuple[tuple[str, str], dict[str, bytes]]:
        extra = {"redirect_to": "2"} if fault == "redirect_other_po" else {}
        sc = scenario([{"id": "1", "faults": {"page": faults}, "attachments": [{"name": "own.pdf"}], **extra},
                       {"id": "2", "attachments": [{"name": "other.pdf"}, {"name": "other2.pdf"}]}], **top)
        return sc.expected_outcomes()["1"], sc.expected_files("1")

    assert outcome([fault]) == (ALWAYS[fault], {})
    cleared = outcome([fault, "ok"])
    if fault == "sso_interstitial":  # a sign-in is never retried: the run stops at the first one
        assert cleared == (("LOGIN_REQUIRED", ""), {})
        assert outcome(["http502", fault, "ok"])[0] == ("LOGIN_REQUIRED", "")
        assert outcome(["http502", "http502", "http502", fault])[0] == ("FAILED", "HTTP_502")  # never reached
    else:
        assert cleared[0] == ("COMPLETED", "") and list(cleared[1]) == ["own.pdf"]
        assert outcome([fault, fault, "ok"])[0] == ("COMPLETED", "")
        assert outcome([fault, "ok"], client_max_attempts=1) == (ALWAYS[fault], {})


def test_unfamiliar_scenario_states_what_the_rules_derive() -> None:
    """The stated `expected` of every PO is what the derivation gives without it (nothing hand-forced)."""
    data = json.loads(unfamiliar_scenario_path().read_text(encoding="utf-8"))
    stated = {p["id"]: (p["expected"]["status"], p["expected"]["reason"]) for p in data["pos"]}
    for p in data["pos"]:
        del p["expected"]
    derived = Scenario.from_dict(data)
    assert derived.expected_outcomes() == stated == load_scenario(unfamiliar_scenario_path()).expected_outcomes()
    assert stated == {
        "300001": ("COMPLETED", ""), "300002": ("COMPLETED", ""), "300003": ("NO_ATTACHMENTS", ""),
        "300004": ("NO_ATTACHMENTS", ""), "300005": ("FAILED", "HTTP_500"), "300006": ("FAILED", "HTTP_502"),
        "300007": ("FAILED", "HTTP_503"), "300008": ("FAILED", "HTTP_429"), "300009": ("FAILED", "UNRECOGNISED_PAGE"),
        "300010": ("FAILED", "UNRECOGNISED_PAGE"), "300011": ("FAILED", "UNRECOGNISED_PAGE"),
        "300012": ("FAILED", "UNRECOGNISED_PAGE"), "300013": ("COMPLETED", ""), "300014": ("COMPLETED", ""),
        "300015": ("COMPLETED", ""), "300016": ("COMPLETED", ""), "300017": ("COMPLETED", ""),
        "300018": ("COMPLETED", ""), "300019": ("COMPLETED", ""), "300020": ("COMPLETED", ""),
    }
    s = derived
    faults = {f for po in s.pos for f in po.page_faults}
    assert faults == set(PAGE_FAULTS) - {"ok", "http500", "stall", "drop", "sso_interstitial"} | {"ok"}
    delayed = {(po.spinner, bool(po.attachments)) for po in s.pos if po.attachments_delay_ms is not None}
    assert delayed == {(True, True), (False, True), (True, False), (False, False)}
    assert all(po.attachments_delay_ms == 1500 for po in s.pos if po.attachments_delay_ms is not None)
    assert {e.spec.kind for po in ("300001", "300002") for e in s.entries(po)} == set(KINDS)
    assert [e.spec.kind for e in s.entries("300013")] == ["inline_labeled"]


def test_a_redirected_po_never_gets_the_other_pos_files() -> None:
    s = load_scenario(unfamiliar_scenario_path())
    other = set(s.expected_files("300020"))
    assert other == {"Other PO order.pdf", "Other PO terms.pdf"}
    assert s.po("300010").redirect_to == s.po("300017").redirect_to == "300020"
    assert s.expected_files("300010") == {}
    assert list(s.expected_files("300017")) == ["Own file of 300017.pdf"]
    other_bytes = set(s.expected_files("300020").values())
    assert not other_bytes & set(s.expected_files("300017").values())


# -- page faults over HTTP ---------------------------------------------------------------------------------
def assert_no_portal_markup(html: str) -> None:
    for marker in ("orderHeaderShowFloatingSection", 'id="attachments"', "data-supplier-name", "flash_error",
                   "Purchase Order", "attachment", "coupa", "doc-number", "section#documents", "data-doc-kind"):
        assert marker not in html, marker
    for text in COUPA_TEXTS:
        assert text not in html


def test_bare_500_proxy_pages_and_the_rate_limit_page(unfamiliar: DemoPortal) -> None:
    c = logged_in(unfamiliar)
    r = c.get("/order_headers/300005")
    assert r.status == 500 and "<h1>Internal Server Error</h1>" in r.text
    assert_no_portal_markup(r.text)
    for po, status, title in (("300006", 502, "502 Bad Gateway"),
                              ("300007", 503, "503 Service Temporarily Unavailable")):
        r = c.get(f"/order_headers/{po}")
        assert r.status == status and f"<center><h1>{title}</h1></center>" in r.text
        assert f"<title>{title}</title>" in r.text and "<center>nginx</center>" in r.text
        assert r.header("Server") == "nginx/1.24.0"
        assert_no_portal_markup(r.text)
    r = c.get("/order_headers/300008")
    assert r.status == 429 and r.header("Retry-After") == "1" and "<h1>Too Many Requests</h1>" in r.text
    assert_no_portal_markup(r.text)
    r = c.get("/order_headers/300015")  # retry_after_seconds = 2, then the page
    assert r.status == 429 and r.header("Retry-After") == "2"
    assert c.get("/order_headers/300015").status == 200
    assert c.get("/order_headers/300005").header("Server").startswith("DemoCoupa/")  # only proxies say nginx


def test_maintenance_is_a_200_with_a_heading_and_no_po(unfamiliar: DemoPortal) -> None:
    r = logged_in(unfamiliar).get("/order_headers/300009")
    assert r.status == 200 and "<h1>Down for maintenance</h1>" in r.text
    assert "300009" not in r.text
    assert_no_portal_markup(r.text)


def test_bare_404_has_none_of_the_sites_not_found_texts(unfamiliar: DemoPortal) -> None:
    r = logged_in(unfamiliar).get("/order_headers/300012")
    assert r.status == 404 and "<h1>Not Found</h1>" in r.text
    assert_no_portal_markup(r.text)


def test_redirect_to_another_po_lands_on_that_pos_page(unfamiliar: DemoPortal) -> None:
    c = logged_in(unfamiliar)
    r = c.get("/order_headers/300010")
    assert r.status == 302 and r.header("Location") == "/order_headers/300020"
    landed = c.get(r.header("Location"))
    assert landed.status == 200 and '<h1 class="po-title">Purchase Order #300020</h1>' in landed.text
    assert {i.get("href") or i.get("data-token") for i in parse_page(landed.text).items} == {
        e.page_url if e.spec.kind != "js" else e.token for e in unfamiliar.scenario.entries("300020")}
    assert "300010" not in landed.text
    assert unfamiliar.page_hits("300010") == 1 and unfamiliar.page_hits("300020") == 1
    assert unfamiliar.redirects_to("300020") == 1
    # the fault that clears: the second request is the PO's own page
    assert c.get("/order_headers/300017").header("Location") == "/order_headers/300020"
    own = c.get("/order_headers/300017")
    assert own.status == 200 and "Purchase Order #300017" in own.text
    assert unfamiliar.redirects_to("300020") == 2


def test_redirect_to_the_dashboard_which_has_headings_but_is_no_po(unfamiliar: DemoPortal) -> None:
    c = logged_in(unfamiliar)
    r = c.get("/order_headers/300011")
    assert r.status == 302 and r.header("Location") == "/"
    home = c.get("/")
    assert home.status == 200 and '<h1 class="dashboard_title">Home</h1>' in home.text and "<h2>" in home.text
    assert 'href="/order_headers/300011"' in home.text
    body = home.text.split("</style>", 1)[1]  # the shared stylesheet names every class
    for marker in ("orderHeaderShowFloatingSection", 'id="attachments"', "data-supplier-name", "po-title"):
        assert marker not in body
    r = c.get("/order_headers/300018")  # redirect_dashboard, then http404_bare, then the page
    assert [r.status, c.get("/order_headers/300018").status, c.get("/order_headers/300018").status] == [302, 404, 200]


def test_the_fault_list_is_consumed_one_per_request() -> None:
    sc = scenario([{"id": "1", "faults": {"page": ["http502", "http503", "http429", "maintenance", "http404_bare",
                                                    "http500_bare", "redirect_dashboard", "ok"]},
                    "attachments": [{"name": "a.pdf"}]}])
    with DemoPortal(sc).start() as portal:
        c = logged_in(portal)
        assert [c.get("/order_headers/1").status for _ in range(9)] == [502, 503, 429, 200, 404, 500, 302, 200, 200]
        assert portal.page_hits("1") == 9


def test_sso_interstitial_is_on_another_host() -> None:
    sc = scenario([{"id": "1", "faults": {"page": ["sso_interstitial", "ok"]}, "attachments": [{"name": "a.pdf"}]}])
    with DemoPortal(sc).start() as portal:
        c = logged_in(portal)
        r = c.get("/order_headers/1")
        assert r.status == 302
        location = urlsplit(r.header("Location"))
        assert f"{location.scheme}://{location.netloc}" == portal.sso_base_url
        assert location.hostname == portal.sso_host == "127.0.0.2" != urlsplit(portal.base_url).hostname
        assert unquote(re.search(r"return_to=([^&]+)", location.query).group(1)) == portal.po_url("1")
        conn = http.client.HTTPConnection(location.hostname, location.port, timeout=10)
        try:
            conn.request("GET", f"{location.path}?{location.query}")  # no portal cookie goes to another host
            idp = conn.getresponse()
            html = idp.read().decode("utf-8")
        finally:
            conn.close()
        assert idp.status == 200 and "Continue to sign in" in html and "<h2>" in html
        assert f'action="{portal.base_url}/sessions/new"' in html
        assert_no_portal_markup(html)
        assert portal.sso_hits() == 1
        assert c.get("/order_headers/1").status == 200  # the fault list goes on like any other
    with pytest.raises(OSError):  # stop() closed the identity provider's host too
        http.client.HTTPConnection(location.hostname, location.port, timeout=2).request("GET", "/")


def test_the_sso_host_listens_only_when_wanted() -> None:
    with DemoPortal(scenario([{"id": "1"}])).start() as portal:
        with pytest.raises(RuntimeError, match="no identity provider host"):
            _ = portal.sso_base_url
    with DemoPortal(scenario([{"id": "1"}]), sso=True).start() as portal:
        assert urlsplit(portal.sso_base_url).hostname == "127.0.0.2"
    with pytest.raises(ValueError, match="another host"):
        DemoPortal(scenario([{"id": "1"}]), sso=True, sso_host="127.0.0.1")


# -- a list drawn by script --------------------------------------------------------------------------------
def test_a_delayed_page_holds_the_area_and_a_spinner_but_no_list(unfamiliar: DemoPortal) -> None:
    c = logged_in(unfamiliar)
    for po_id, spinner in (("300001", True), ("300002", False), ("300003", True), ("300004", False)):
        html = c.get(f"/order_headers/{po_id}").text
        area = re.search(r'<div id="attachments" class="attachments_section">(.*?)</div>\n', html, re.S)
        assert area, po_id
        inside = re.sub(r"\s+", " ", area.group(1)).strip()
        assert inside == ('<h3>Attachments</h3> <div class="spinner">Loading…' if spinner else "<h3>Attachments</h3>")
        assert "No attachments" not in html and parse_page(html).items == []
        assert f"fetch(\"/order_headers/{po_id}/attachments.json\"" in html
        assert f'<h1 class="po-title">Purchase Order #{po_id}</h1>' in html
    assert unfamiliar.attachment_list_hits("300001") == 0  # only a script fetches the list


def test_the_json_list_answers_after_the_delay_with_the_real_kinds() -> None:
    atts = [{"name": f"f{k}.pdf", "kind": k, "size": 3000} for k in KINDS] + [
        {"name": "contract.pdf", "kind": "inline_labeled", "size": 4000}]
    sc = scenario([{"id": "1", "attachments": atts, "attachments_delay_ms": 400, "spinner": False},
                   {"id": "2", "attachments_delay_ms": 400}, {"id": "3", "attachments": atts[:1]}])
    with DemoPortal(sc).start() as portal:
        c = logged_in(portal)
        c.get("/order_headers/1")
        t0 = time.monotonic()
        r = c.get("/order_headers/1/attachments.json")
        assert time.monotonic() - t0 >= 0.39  # drawn after the delay: the answer waits for it
        assert r.status == 200 and r.header("Content-Type") == "application/json; charset=utf-8"
        data = json.loads(r.body)
        entries = portal.scenario.entries("1")
        assert [(a["name"], a["kind"]) for a in data["attachments"]] == [(e.spec.name, e.spec.kind) for e in entries]
        for e in entries:
            assert expected_markup_any(e) in data["html"]
        assert data["html"].startswith("<ul>") and data["html"].count('<li class="attachment_item">') == len(atts)
        got: dict[str, bytes] = {}
        for item in parse_labels(f'<div id="attachments">{data["html"]}</div>').items:
            url = file_url_of(c, item)
            f = c.get(url)
            assert f.status == 200, url
            got[uniquify(label_or_served_name(item, url, f), set(got))] = f.body
        assert got == portal.expected_files("1")
        assert portal.page_hits("1") == 1 and portal.attachment_list_hits("1") == 1  # not a page hit
        empty = json.loads(c.get("/order_headers/2/attachments.json").body)
        assert empty == {"po": "2", "html": '<p class="empty">No attachments</p>', "attachments": []}
        assert portal.expected_outcomes()["2"] == ("NO_ATTACHMENTS", "")
        assert c.get("/order_headers/3/attachments.json").status == 404  # a page drawn at once has no list
        assert Client(portal).get("/order_headers/1/attachments.json").status == 302  # needs the session


class LabelParser(AttachmentParser):
    """AttachmentParser that also keeps each element's text (its label)."""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        before = len(self.items)
        super().handle_starttag(tag, attrs)
        self._open = self.items[-1] if len(self.items) > before else None
        if self._open is not None:
            self._open["text"] = ""

    def handle_data(self, data: str) -> None:
        if getattr(self, "_open", None) is not None:
            self._open["text"] += data

    def handle_endtag(self, tag: str) -> None:
        super().handle_endtag(tag)
        self._open = None


def parse_labels(html: str) -> LabelParser:
    p = LabelParser()
    p.feed(html)
    return p


def expected_markup_any(e) -> str:
    if e.spec.kind == "inline_labeled":
        return f'<a class="attachment_inline" href="/attachments/{e.token}/attachment_file">{escape(e.spec.name)}</a>'
    return expected_markup(e)


def label_or_served_name(item: dict[str, str], url: str, resp) -> str:
    """Issue 13's naming rule: Content-Disposition, else the label when it has an extension, else the URL."""
    if resp.header("Content-Disposition"):
        return saved_name(url, resp)
    label = item.get("download") or item.get("title") or item.get("text", "")
    if re.search(r"\.[A-Za-z0-9]{1,8}$", label):
        return label
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


# -- an inline file named by its label ---------------------------------------------------------------------
def test_inline_labeled_is_named_by_its_label_not_its_url(unfamiliar: DemoPortal) -> None:
    c = logged_in(unfamiliar)
    html = c.get("/order_headers/300013").text
    e = unfamiliar.scenario.entries("300013")[0]
    assert e.spec.name == "contract.pdf" and e.file_url == f"/attachments/{e.token}/attachment_file"
    assert f'<a class="attachment_inline" href="{e.file_url}">contract.pdf</a>' in html
    [item] = parse_page(html).items
    assert item["href"] == e.file_url
    r = c.get(e.file_url)
    assert r.status == 200 and r.header("Content-Type") == "application/pdf"
    assert r.header("Content-Disposition") is None
    assert saved_name(e.file_url, r) == "attachment_file"  # what a client that trusts the URL would write
    assert unfamiliar.expected_files("300013") == {"contract.pdf": r.body}
    assert r.body.startswith(b"%PDF-1.4")


# -- hostile names -----------------------------------------------------------------------------------------
def test_hostile_names_are_served_whole_and_matched_back_by_bytes() -> None:
    s = load_scenario(hostile_names_scenario_path())
    names = [e.spec.name for e in s.all_entries()]
    assert "L" * 300 + ".pdf" in names
    mixed = next(n for n in names if not n.startswith("L"))
    assert len(mixed) == 175 and len(mixed.encode("utf-8")) > 255
    assert re.search(r"[\U0001F300-\U0001FAFF]", mixed) and re.search(r"[а-я]", mixed)
    assert re.search(r"[一-龯]", mixed)
    with DemoPortal(s).start() as portal:
        c = logged_in(portal)
        for po_id in ("400001", "400002"):
            served: dict[str, bytes] = {}
            for item in parse_page(c.get(f"/order_headers/{po_id}").text).items:
                url = file_url_of(c, item)
                r = c.get(url)
                assert r.status == 200 and "filename*=UTF-8''" in r.header("Content-Disposition")
                served[uniquify(saved_name(url, r), set(served))] = r.body
            assert served == portal.expected_files(po_id)  # the truth holds the original names
            assert all(len(n.encode("utf-8")) > 255 for n in served)
            # a client shortens them its own way; the helper maps what it saved back by content
            short = {f"{i}-{hashlib.md5(n.encode()).hexdigest()[:6]}.pdf": data
                     for i, (n, data) in enumerate(served.items())}
            assert portal.match_by_bytes(po_id, short) == {k: n for k, n in zip(short, served)}
            assert portal.match_by_bytes(po_id, {"x.pdf": b"not served"}) == {"x.pdf": None}
            assert s.original_name(po_id, next(iter(served.values()))) == next(iter(served))
            assert set(portal.expected_sha256(po_id).values()) == set(served)
        assert set(portal.expected_files("400002")) == {mixed, mixed[:-4] + " (1).pdf"}


# -- the second markup -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def variant_portal():
    with DemoPortal(without_latency(variant_scenario_path())).start() as portal:
        yield portal


class VariantParser(HTMLParser):
    """The variant's attachment elements (those variant_site.toml selects) and its requisition link."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[dict[str, str]] = []
        self.requisition = ""
        self._open: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        cls = a.get("class", "").split()
        if (tag == "a" and "doc-link" in cls) or (tag == "button" and "doc-action" in cls) or \
                (tag == "span" and "doc-name" in cls):
            self._open = {"tag": tag, **a, "text": ""}
            self.items.append(self._open)
        if tag == "a" and "req-ref" in cls:
            self.requisition = a["href"]

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open["text"] += data

    def handle_endtag(self, tag: str) -> None:
        self._open = None


def variant_items(html: str) -> VariantParser:
    p = VariantParser()
    p.feed(html)
    return p


def variant_file_url(c: Client, item: dict[str, str]) -> str:
    if "data-file" in item:
        return f"/files/{item['data-file']}"
    if item.get("target") == "_blank":
        popup = c.get(item["href"])
        assert popup.status == 200
        return re.search(r'window\.location\.href = "([^"]+)"', popup.text).group(1)
    return item["href"]


def test_variant_scenario_is_the_sample_with_the_other_markup() -> None:
    sample, variant = load_scenario(sample_scenario_path()), load_scenario(variant_scenario_path())
    assert variant.markup == "variant" and sample.markup == "coupa"
    assert variant.pos == sample.pos and variant.seed == sample.seed and variant.latency == sample.latency
    assert variant.expected_outcomes() == SAMPLE_OUTCOMES


def test_variant_po_pages_share_nothing_with_coupas_shapes(variant_portal: DemoPortal) -> None:
    c = logged_in(variant_portal)
    for po in variant_portal.scenario.pos:
        if po.missing or po.forbidden or po.page_faults:
            continue
        html = c.get(f"/order_headers/{po.id}").text
        for marker in ("<h1", "orderHeaderShow", "data-po-number", "po_number", "data-supplier-name",
                       "supplier-name", "supplier-info", 'id="attachments"', "data-attachments",
                       "attachments_section", "attachment", " download", "aria-label", "title=", "spinner",
                       "loading", "aria-busy", "/requisition_headers/", "flash_error", "error_explanation",
                       "Purchase Order", "Coupa"):
            assert marker not in html, (po.id, marker)
        assert f'<div class="doc-number">Order {po.id}</div>' in html and 'data-doc-kind="order"' in html
        assert f'<dd class="vendor-title">{escape(po.supplier)}</dd>' in html
        assert '<section id="documents" class="doc-panel">' in html
        parsed = variant_items(html)
        assert len(parsed.items) == len(variant_portal.scenario.entries(po.id))
        if po.requisition:
            assert parsed.requisition == f"/requisitions/{po.requisition.id}"


def test_every_file_of_the_sample_downloads_from_the_variant(variant_portal: DemoPortal) -> None:
    """A reference client that reads the variant's markup gets the sample's expected files, byte for byte."""
    variant_portal.reset()
    c = logged_in(variant_portal)
    for po_id, (status, reason) in SAMPLE_OUTCOMES.items():
        if status != "COMPLETED":
            continue
        answers = [c.get(f"/order_headers/{po_id}") for _ in range(3)]
        ok = next(r for r in answers if r.status == 200)  # 100008 answers a 500 first
        if po_id == "100008":
            assert answers[0].status == 500 and variant_pages.SERVER_ERROR_TEXT in answers[0].text
        page = variant_items(ok.text)
        if reason == "REQUISITION_FALLBACK":
            req = c.get(page.requisition)
            assert req.status == 200 and f'<div class="doc-number">Request ' in req.text
            page = variant_items(req.text)
        def file_url(item: dict[str, str]) -> str:
            url = variant_file_url(c, item)
            assert url.startswith("/files/") and "attachment" not in url
            return url

        got: dict[str, bytes] = {}
        for _attempt in range(3):
            got, failed = fetch_all(c, page.items, file_url, label_or_served_name)
            if not failed:
                break
        assert got == variant_portal.expected_files(po_id), po_id


def test_variant_error_login_and_dashboard_pages_use_the_variants_texts(variant_portal: DemoPortal) -> None:
    anon = Client(variant_portal)
    login = anon.get("/sessions/new").text
    assert '<form id="signin"' in login and 'id="account_email" name="user[login]"' in login
    assert 'id="account_secret" name="user[password]"' in login
    for marker in ("user_email", "user_password", "new_session", "flash_error"):
        assert marker not in login
    bad = anon.login(password="nope")
    assert bad.status == 200 and '<div class="alert alert-error" role="alert">' in bad.text
    c = logged_in(variant_portal)  # same form fields, same /sessions, same cookie as Coupa's
    pages = {404: c.get("/order_headers/100007"), 403: c.get("/order_headers/100011"),
             500: c.get("/order_headers/100010")}
    texts = {404: variant_pages.NOT_FOUND_TEXT, 403: variant_pages.NOT_AUTHORIZED_TEXT,
             500: variant_pages.SERVER_ERROR_TEXT}
    for status, r in pages.items():
        assert r.status == status and texts[status] in r.text and '<div class="alert alert-error">' in r.text
        for text in COUPA_TEXTS:
            assert text not in r.text
        assert "flash_error" not in r.text and "error_explanation" not in r.text and "<h1" not in r.text
    assert c.get("/no/such/page").status == 404 and variant_pages.NOT_FOUND_TEXT in c.get("/x").text
    home = c.get("/").text
    assert '<div class="page-heading">Dashboard</div>' in home and "<h1" not in home
    assert c.get("/requisition_headers/5005").status == 200  # both paths answer; the page links /requisitions/


def test_the_markup_switches_while_serving_and_sessions_can_be_shared() -> None:
    with DemoPortal(without_latency(sample_scenario_path())).start() as portal:
        c = logged_in(portal)
        assert "Purchase Order #100001" in c.get("/order_headers/100001").text
        portal.markup = "variant"
        assert '<div class="doc-number">Order 100001</div>' in c.get("/order_headers/100001").text
        with pytest.raises(ValueError, match="unknown markup"):
            portal.markup = "sap"
        with DemoPortal(variant_scenario_path(), share_sessions_with=portal).start() as other:
            assert other.markup == "variant"
            c2 = Client(other)
            c2.token = c.token  # the browser sends a host's cookies to every port
            assert c2.get("/order_headers/100002").status == 200
    with DemoPortal(variant_scenario_path(), markup="coupa").start() as forced:
        assert "Purchase Order #100001" in logged_in(forced).get("/order_headers/100001").text


def test_variant_delayed_list_uses_the_variants_marker_and_area() -> None:
    sc = scenario([{"id": "1", "attachments": [{"name": "a.pdf", "kind": "js"}], "attachments_delay_ms": 0}],
                  markup="variant")
    with DemoPortal(sc).start() as portal:
        c = logged_in(portal)
        html = c.get("/order_headers/1").text
        assert '<div class="busy-indicator">Fetching documents…</div>' in html and "spinner" not in html
        assert "attachment" not in html.replace("attachments.json", "")
        data = json.loads(c.get("/order_headers/1/attachments.json").body)
        e = portal.scenario.entries("1")[0]
        assert data["html"] == (f'<ul class="doc-list">\n<li class="doc-row"><button type="button" class="doc-action" '
                                f'data-file="{e.token}">a.pdf</button></li>\n</ul>')
        assert c.get(f"/files/{e.token}").body == portal.expected_files("1")["a.pdf"]


def test_variant_site_file_extends_coupa_and_replaces_each_list_that_differs() -> None:
    site = tomllib.loads(variant_site_path().read_text(encoding="utf-8"))
    assert site["extends"] == "coupa"
    assert site["urls"] == {"requisition_path": "/requisitions/{id}"}  # po_path and sign-in stay Coupa's
    for section, keys in {"login": ["selectors"], "identity": ["po_number_selectors", "po_markers"],
                          "supplier": ["selectors"], "attachments": ["selectors", "area", "loading"],
                          "errors": ["not_found_texts", "not_authorized_texts", "server_error_texts",
                                     "error_selectors"]}.items():
        for key in keys:
            assert isinstance(site[section][key], list) and site[section][key], (section, key)
    assert site["errors"]["not_found_texts"] == [variant_pages.NOT_FOUND_TEXT]
    assert site["errors"]["not_authorized_texts"] == [variant_pages.NOT_AUTHORIZED_TEXT]
    assert site["errors"]["server_error_texts"] == [variant_pages.SERVER_ERROR_TEXT]
