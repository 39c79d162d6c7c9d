"""The demo portal at HTTP level: real sockets on 127.0.0.1, no browser (the browser tests live elsewhere)."""
from __future__ import annotations

import csv
import http.client
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, unquote, urlsplit

import pytest

from pobatch.core.demo_portal import (
    DemoPortal,
    Scenario,
    ScenarioError,
    generate_scenario,
    load_scenario,
    sample_orders_path,
    sample_scenario_path,
)
from pobatch.core.demo_portal.scenario import draw_ms
from pobatch.core.demo_portal.server import content_disposition
from eventually import wait_for

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(60)


# -- a small HTTP client that keeps the session cookie -------------------------------------------------
@dataclass
class Resp:
    status: int
    headers: Any
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class Client:
    def __init__(self, portal: DemoPortal) -> None:
        self.host, self.port = "127.0.0.1", portal.port
        self.token: str | None = None

    def request(self, method: str, path: str, body: str | None = None, timeout: float = 10.0,
                headers: dict[str, str] | None = None) -> Resp:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            hdrs = dict(headers or {})
            if self.token:
                hdrs["Cookie"] = f"_coupa_session={self.token}"
            if body is not None:
                hdrs["Content-Type"] = "application/x-www-form-urlencoded"
            conn.request(method, path, body=body, headers=hdrs)
            r = conn.getresponse()
            data = r.read()
            cookie = r.getheader("Set-Cookie")
            if cookie:
                m = re.match(r"_coupa_session=([^;]+)", cookie)
                if m:
                    self.token = m.group(1)
            return Resp(r.status, r.headers, data)
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Resp:
        return self.request("GET", path, **kw)

    def login(self, email: str = "buyer@example.com", password: str = "demo", return_to: str = "/") -> Resp:
        body = f"user%5Blogin%5D={quote(email)}&user%5Bpassword%5D={quote(password)}&return_to={quote(return_to)}"
        return self.request("POST", "/sessions", body=body)


def logged_in(portal: DemoPortal) -> Client:
    c = Client(portal)
    r = c.login()
    assert r.status == 302 and c.token
    return c


def scenario(pos: list[dict], **top: Any) -> Scenario:
    return Scenario.from_dict({"seed": 3, "pos": pos, **top}, source="test")


@pytest.fixture(scope="module")
def sample_portal():
    """The bundled sample without latency (the sample's own latency is exercised once, below)."""
    data = json.loads(sample_scenario_path().read_text(encoding="utf-8"))
    data["latency"] = {"page_ms": 0, "attachment_ms": 0}
    with DemoPortal(Scenario.from_dict(data)).start() as portal:
        yield portal


@pytest.fixture
def fresh(sample_portal: DemoPortal) -> DemoPortal:
    sample_portal.reset()
    return sample_portal


# -- parsing the attachments section the way a client sees it ----------------------------------------
class AttachmentParser(HTMLParser):
    """Elements inside #attachments that a client would treat as attachments, plus the requisition link."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0  # >0 while inside #attachments
        self.items: list[dict[str, str]] = []
        self.requisition = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if a.get("id") == "attachments":
            self.depth = 1
        elif self.depth:
            self.depth += 1
            if (tag == "a" and "attachment" in a.get("href", "")) or (tag == "span" and "data-token" in a):
                self.items.append({"tag": tag, **a})
        if tag == "a" and "/requisition_headers/" in a.get("href", ""):
            self.requisition = a["href"]

    def handle_endtag(self, tag: str) -> None:
        if self.depth:
            self.depth -= 1


def parse_page(html: str) -> AttachmentParser:
    p = AttachmentParser()
    p.feed(html)
    return p


def file_url_of(client: Client, item: dict[str, str]) -> str:
    """What a browser would end up requesting for one attachment element."""
    if item["tag"] == "span":
        return f"/attachments/{item['data-token']}/raw"
    href = item["href"]
    if item.get("target") == "_blank":
        popup = client.get(href)
        assert popup.status == 200
        m = re.search(r'window\.location\.href = "([^"]+)"', popup.text)
        assert m, popup.text
        return m.group(1)
    return href


def saved_name(url: str, resp: Resp) -> str:
    """The file name a browser derives: filename* of Content-Disposition, else the URL's last segment."""
    cd = resp.header("Content-Disposition")
    if cd:
        m = re.search(r"filename\*=UTF-8''([^;]+)", cd)
        assert m, cd
        return unquote(m.group(1))
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def uniquify(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    stem, _, ext = name.rpartition(".")
    i = 1
    while f"{stem} ({i}).{ext}" in taken:
        i += 1
    return f"{stem} ({i}).{ext}"


def fetch_all(client: Client, items: list[dict[str, str]], url_of: Callable[[dict[str, str]], str],
              name_of: Callable[[dict[str, str], str, "Resp"], str]) -> tuple[dict[str, bytes], bool]:
    """Every attachment once, as a browser saves them (name, then " (1)" for a repeat); and whether any failed."""
    files: dict[str, bytes] = {}
    failed = False
    for item in items:
        url = url_of(item)
        try:
            r = client.get(url)
        except (http.client.HTTPException, ConnectionError):
            failed = True
            continue
        if r.status != 200:
            failed = True
            continue
        files[uniquify(name_of(item, url, r), set(files))] = r.body
    return files, failed


def reference_run(client: Client, po_id: str, attempts: int = 3) -> tuple[str, str, dict[str, bytes]]:
    """A minimal correct client: retries the PO, falls back to the requisition, downloads every file."""
    last: tuple[str, str, dict[str, bytes]] = ("FAILED", "HTTP_500", {})
    for _ in range(attempts):
        try:
            page = client.get(f"/order_headers/{po_id}")
        except (http.client.RemoteDisconnected, ConnectionError):
            last = ("FAILED", "CONNECTION_FAILED", {})
            continue
        if page.status == 404:
            return "PO_NOT_FOUND", "", {}
        if page.status == 403:
            return "PO_NOT_FOUND", "NOT_AUTHORIZED", {}
        if page.status >= 500:
            last = ("FAILED", "HTTP_500", {})
            continue
        assert page.status == 200
        parsed, reason = parse_page(page.text), ""
        if not parsed.items and parsed.requisition:
            req = client.get(parsed.requisition)
            assert req.status == 200
            parsed, reason = parse_page(req.text), "REQUISITION_FALLBACK"
        if not parsed.items:
            return "NO_ATTACHMENTS", "", {}
        files, failed = fetch_all(client, parsed.items, lambda item: file_url_of(client, item),
                                  lambda _item, url, r: saved_name(url, r))
        if not failed:
            return "COMPLETED", reason, files
        last = ("PARTIAL", "DOWNLOAD_FAILED", files)
    return last


# -- login and sessions -------------------------------------------------------------------------------
def test_login_page_has_coupa_form(fresh: DemoPortal) -> None:
    r = Client(fresh).get("/sessions/new?return_to=%2Forder_headers%2F100001")
    assert r.status == 200
    html = r.text
    assert '<form id="new_session"' in html and 'action="/sessions" method="post"' in html
    assert re.search(r'<input[^>]*id="user_email"[^>]*name="user\[login\]"', html)
    assert re.search(r'<input[^>]*id="user_password"[^>]*name="user\[password\]"', html)
    assert re.search(r'<button type="submit" id="login_button" name="commit"', html)
    assert '<input type="hidden" name="return_to" value="/order_headers/100001">' in html


@pytest.mark.parametrize("path", ["/", "/order_headers/100001", "/requisition_headers/5005",
                                  "/attachment_files/abc", "/attachments/abc/raw", "/no/such/page?x=1"])
def test_without_session_every_page_redirects_to_login(fresh: DemoPortal, path: str) -> None:
    r = Client(fresh).get(path)
    assert r.status == 302
    assert r.header("Location") == "/sessions/new?return_to=" + quote(path, safe="")


def test_open_paths_need_no_session(fresh: DemoPortal) -> None:
    c = Client(fresh)
    assert c.get("/favicon.ico").status == 204
    assert c.get("/sessions/new").status == 200
    state = c.get("/__demo__/state")
    assert state.status == 200 and set(json.loads(state.body)) >= {"download_counts", "page_hits", "sessions"}


def test_login_sets_a_persistent_cookie_and_returns_to_the_page(fresh: DemoPortal) -> None:
    c = Client(fresh)
    r = c.login(email="someone@example.com", return_to="/order_headers/100001")
    assert r.status == 302 and r.header("Location") == "/order_headers/100001"
    cookie = r.header("Set-Cookie")
    assert re.fullmatch(r"_coupa_session=[A-Za-z0-9_-]{20,}; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax", cookie)
    page = c.get("/order_headers/100001")
    assert page.status == 200 and "Purchase Order #100001" in page.text
    sessions = json.loads(c.get("/__demo__/state").body)["sessions"]
    assert {"email": "someone@example.com", "requests": 1} in sessions


def test_login_defaults_to_home_which_lists_the_pos(fresh: DemoPortal) -> None:
    c = Client(fresh)
    r = c.request("POST", "/sessions", body="user%5Blogin%5D=a%40b.c&user%5Bpassword%5D=demo")
    assert r.status == 302 and r.header("Location") == "/"
    home = c.get("/")
    assert home.status == 200
    for po in fresh.scenario.pos:
        assert f'href="/order_headers/{po.id}"' in home.text


@pytest.mark.parametrize("email,password", [("a@b.c", "wrong"), ("a@b.c", ""), ("  ", "demo")])
def test_bad_credentials_show_the_login_page_with_an_error(fresh: DemoPortal, email: str, password: str) -> None:
    c = Client(fresh)
    r = c.login(email=email, password=password, return_to="/order_headers/100002")
    assert r.status == 200 and c.token is None
    assert '<div class="flash_error">Invalid email or password</div>' in r.text
    assert 'value="/order_headers/100002"' in r.text  # the return path survives a failed try


@pytest.mark.parametrize("target", ["//evil.example.com/x", "http://evil.example.com/", "/\\evil.example.com"])
def test_return_to_never_leaves_the_portal(fresh: DemoPortal, target: str) -> None:
    r = Client(fresh).login(return_to=target)
    assert r.status == 302 and r.header("Location") == "/"


def test_unknown_or_forged_token_is_not_a_session(fresh: DemoPortal) -> None:
    c = Client(fresh)
    c.token = "forged-token-value-000000"
    assert c.get("/").status == 302


def test_session_expires_after_n_authenticated_requests() -> None:
    sc = scenario([{"id": "1", "attachments": [{"name": "a.pdf"}]}], session={"expire_after_requests": 3})
    with DemoPortal(sc).start() as portal:
        c = logged_in(portal)
        assert [c.get("/order_headers/1").status for _ in range(3)] == [200, 200, 200]
        r = c.get("/order_headers/1")
        assert r.status == 302 and r.header("Location").startswith("/sessions/new?return_to=")
        assert c.get("/").status == 302  # stays invalid
        assert portal.page_hits("1") == 3  # the refused request never reached the page
        c = logged_in(portal)
        assert c.get("/order_headers/1").status == 200


def test_rotate_token_replaces_the_cookie_on_every_response() -> None:
    sc = scenario([{"id": "1", "attachments": [{"name": "a.pdf"}]}], session={"rotate_token": True})
    with DemoPortal(sc).start() as portal:
        c = logged_in(portal)
        t0 = c.token
        r = c.get("/order_headers/1")
        assert r.status == 200
        t1 = c.token
        assert t1 != t0 and "Max-Age=86400" in r.header("Set-Cookie")
        stale = Client(portal)
        stale.token = t0
        assert stale.get("/order_headers/1").status == 302  # the old token died with the rotation
        e = portal.scenario.entries("1")[0]
        assert c.get(e.file_url).status == 200
        assert c.token not in (t0, t1)
        assert c.get("/").status == 200


# -- page shapes ----------------------------------------------------------------------------------------
def expected_markup(e) -> str:
    name = escape(e.spec.name)
    return {
        "link": f'<a class="attachment_link" href="/attachment_files/{e.token}">{name}</a>',
        "download_attr": f'<a class="attachment_download" href="/attachments/{e.token}/raw" download="{name}">{name}</a>',
        "js": (f'<span class="attachment_js" role="button" tabindex="0" aria-label="Download file attachment {name}" '
               f'data-token="{e.token}">{name}</span>'),
        "span": (f'<span class="attachment_title" title="{name}" aria-label="file attachment {name}" tabindex="0" '
                 f'data-token="{e.token}">{name}</span>'),
        "popup": f'<a class="attachment_popup" href="/attachments/{e.token}/popup" target="_blank">{name}</a>',
        "inline_pdf": (f'<a class="attachment_inline" href="/attachments/{e.token}/inline/'
                       f'{quote(e.spec.name, safe="")}">{name}</a>'),
    }[e.spec.kind]


def test_po_pages_have_coupas_shapes_and_each_kinds_element(fresh: DemoPortal) -> None:
    c = logged_in(fresh)
    kinds_seen = set()
    for po in fresh.scenario.pos:
        if po.missing or po.forbidden or po.page_faults:
            continue
        html = c.get(f"/order_headers/{po.id}").text
        assert f"<title>Purchase Order #{po.id} | Coupa</title>" in html
        assert f'<h1 class="po-title">Purchase Order #{po.id}</h1>' in html
        assert ('<div class="page_buttons_right orderHeaderShowFloatingSection floatingSectionOnTop" '
                'style="position:fixed;') in html
        assert (f'<div class="supplier-info"><span data-supplier-name="{escape(po.supplier)}">'
                f"Supplier: {escape(po.supplier)}</span></div>") in html
        assert '<div class="notice">Scheduled maintenance on Sunday</div>' in html
        assert '<div id="attachments" class="attachments_section">' in html
        assert 'class="flash_error"' not in html
        parsed = parse_page(html)
        entries = fresh.scenario.entries(po.id)
        assert len(parsed.items) == len(entries)
        for e in entries:
            assert expected_markup(e) in html
            kinds_seen.add(e.spec.kind)
        if po.requisition:
            assert (f'<a href="/requisition_headers/{po.requisition.id}" class="requisition_link">'
                    f"Requisition #{po.requisition.id}</a>") in html
            assert "attachment" not in parsed.requisition
        else:
            assert parsed.requisition == ""
        # the attachments section comes after enough content for the page to scroll (rows of ~40 px), and
        # enough follows it that a client can scroll the first link to the middle, clear of the toolbar
        at = html.index('id="attachments"')
        assert html[:at].count("<tr>") >= 30 and html[at:].count("<tr>") >= 30
        # every URL on the page that leads to a file says "attachment"
        for item in parsed.items:
            if item["tag"] == "a":
                assert "attachment" in item["href"]
    assert kinds_seen == {"link", "download_attr", "js", "span", "popup", "inline_pdf"}


def test_requisition_page_has_the_same_shapes_and_no_requisition_link(fresh: DemoPortal) -> None:
    c = logged_in(fresh)
    r = c.get("/requisition_headers/5005")
    assert r.status == 200
    assert "<title>Requisition #5005 | Coupa</title>" in r.text
    assert 'data-supplier-name="Acme Office Supplies"' in r.text
    parsed = parse_page(r.text)
    assert parsed.requisition == "" and len(parsed.items) == 2
    for e in fresh.scenario.entries("100005", "requisition"):
        assert expected_markup(e) in r.text
    assert c.get("/requisition_headers/9999").status == 404
    assert fresh.requisition_hits("5005") == 1


def test_js_kinds_carry_a_download_script(fresh: DemoPortal) -> None:
    html = logged_in(fresh).get("/order_headers/100001").text
    assert "querySelectorAll('#attachments [data-token]')" in html
    assert "'/attachments/' + encodeURIComponent(token) + '/raw'" in html
    assert "window.scrollTo(0, first.getBoundingClientRect().top" in html  # opens with a link under the toolbar


def test_sample_exercises_every_tricky_name(fresh: DemoPortal) -> None:
    names = [e.spec.name for e in fresh.scenario.all_entries()]
    assert "Facture été №5.pdf" in names
    assert names.count("invoice.pdf") == 2
    assert "Quote: A/B <final>?.pdf" in names and "CON.pdf" in names and "../../escape.pdf" in names
    assert any(len(n) >= 200 for n in names)
    assert any(" " in n for n in names)
    assert {n.rsplit(".", 1)[-1] for n in names} >= {"pdf", "docx", "msg", "eml", "xlsx"}
    suppliers = {po.supplier for po in fresh.scenario.pos}
    assert 3 <= len(suppliers) <= 4 and any(set(s) & set('<>:"/\\|?*') for s in suppliers)
    sizes = [e.spec.size for e in fresh.scenario.all_entries()]
    assert min(sizes) >= 5_000 and max(sizes) <= 50_000


def test_duplicate_names_inside_one_po_have_different_bytes(fresh: DemoPortal) -> None:
    files = fresh.expected_files("100002")
    assert set(files) >= {"invoice.pdf", "invoice (1).pdf"}
    assert files["invoice.pdf"] != files["invoice (1).pdf"]


# -- files ----------------------------------------------------------------------------------------------
def test_content_disposition_carries_the_exact_utf8_name(fresh: DemoPortal) -> None:
    c = logged_in(fresh)
    e = next(e for e in fresh.scenario.all_entries() if e.spec.name == "Facture été №5.pdf")
    r = c.get(e.file_url)
    assert r.status == 200 and r.header("Content-Type") == "application/pdf"
    assert r.header("Content-Disposition") == (
        "attachment; filename=\"Facture ete No5.pdf\"; filename*=UTF-8''Facture%20%C3%A9t%C3%A9%20%E2%84%965.pdf")
    assert r.body.startswith(b"%PDF-1.4") and r.body.endswith(b"%%EOF\n")
    assert int(r.header("Content-Length")) == e.spec.size == len(r.body)


@pytest.mark.parametrize("name", ["../../escape.pdf", "Quote: A/B <final>?.pdf", "CON.pdf", 'a "quoted" \\name.pdf'])
def test_content_disposition_serves_names_as_given(name: str) -> None:
    cd = content_disposition(name)
    fallback = re.search(r'filename="([^"]*)"', cd).group(1)
    assert '"' not in fallback and "\\" not in fallback
    assert unquote(re.search(r"filename\*=UTF-8''(\S+)$", cd).group(1)) == name


def test_every_kind_serves_bytes_equal_to_expected_files(fresh: DemoPortal) -> None:
    c = logged_in(fresh)
    for po_id in ("100001", "100002", "100003", "100004", "100012"):
        got: dict[str, bytes] = {}
        for item in parse_page(c.get(f"/order_headers/{po_id}").text).items:
            url = file_url_of(c, item)
            r = c.get(url)
            assert r.status == 200, url
            got[uniquify(saved_name(url, r), set(got))] = r.body
        assert got == fresh.expected_files(po_id)


def test_inline_pdf_has_no_content_disposition_and_its_name_in_the_url(fresh: DemoPortal) -> None:
    c = logged_in(fresh)
    e = next(e for e in fresh.scenario.all_entries() if e.spec.kind == "inline_pdf")
    assert e.file_url.endswith("/" + quote(e.spec.name, safe=""))
    r = c.get(e.file_url)
    assert r.status == 200 and r.header("Content-Type") == "application/pdf"
    assert r.header("Content-Disposition") is None
    assert e.spec.name in fresh.expected_files(e.po_id)


def test_popup_page_sends_the_window_to_the_file(fresh: DemoPortal) -> None:
    c = logged_in(fresh)
    e = next(e for e in fresh.scenario.all_entries() if e.spec.kind == "popup")
    r = c.get(e.page_url)
    assert r.status == 200 and f'window.location.href = "{e.file_url}";' in r.text
    assert fresh.download_counts() == {}  # opening the popup is not a download


def test_file_bytes_are_deterministic_per_seed_po_and_index() -> None:
    with DemoPortal().start() as a, DemoPortal().start() as b:
        ca, cb = logged_in(a), logged_in(b)
        for e in a.scenario.all_entries()[:8]:
            assert ca.get(e.file_url).body == cb.get(e.file_url).body == a.scenario.file_bytes(e)
        assert {po: a.expected_files(po) for po in a.expected_outcomes()} == \
               {po: b.expected_files(po) for po in b.expected_outcomes()}
    other = load_scenario(sample_scenario_path())
    reseeded = Scenario.from_dict({**other.to_dict(), "seed": 8})
    e0, e1 = other.entries("100001")[0], reseeded.entries("100001")[0]
    assert e0.token != e1.token and other.file_bytes(e0) != reseeded.file_bytes(e1)
    assert other.file_bytes(other.entries("100001")[0]) != other.file_bytes(other.entries("100001")[1])


def test_magic_bytes_match_the_extension(fresh: DemoPortal) -> None:
    magic = {"pdf": b"%PDF-1.4", "docx": b"PK\x03\x04", "xlsx": b"PK\x03\x04", "msg": b"\xd0\xcf\x11\xe0",
             "eml": b"From: "}
    for e in fresh.scenario.all_entries():
        data = fresh.scenario.file_bytes(e)
        assert len(data) == e.spec.size
        assert data.startswith(magic[e.spec.name.rsplit(".", 1)[-1].lower()])


# -- error pages ----------------------------------------------------------------------------------------
def test_not_found_and_not_authorized_pages(fresh: DemoPortal) -> None:
    c = logged_in(fresh)
    for po_id in ("100007", "999999"):
        r = c.get(f"/order_headers/{po_id}")
        assert r.status == 404
        assert '<div class="flash_error">Oops! We couldn\'t find what you wanted</div>' in r.text
        assert "The page you were looking for doesn't exist" in r.text
    r = c.get("/order_headers/100011")
    assert r.status == 403
    assert re.search(r'<div class="flash_error">You are not authorized[^<]*</div>', r.text)
    assert "Confidential.pdf" not in r.text
    assert fresh.page_hits("999999") == 1  # unknown POs are counted too: a client must not retry them


def test_server_error_page_is_rails_500(fresh: DemoPortal) -> None:
    r = logged_in(fresh).get("/order_headers/100010")
    assert r.status == 500
    assert "<title>We're sorry, but something went wrong (500)</title>" in r.text
    assert "We're sorry, but something went wrong." in r.text


# -- faults ---------------------------------------------------------------------------------------------
def test_page_fault_sequence_is_consumed_in_order_and_the_last_repeats() -> None:
    sc = scenario([
        {"id": "1", "faults": {"page": ["http500", "ok", "http500"]}, "attachments": [{"name": "a.pdf"}]},
        {"id": "2", "faults": {"page": ["drop", "ok"]}, "attachments": [{"name": "a.pdf"}]},
    ])
    with DemoPortal(sc).start() as portal:
        c = logged_in(portal)
        assert [c.get("/order_headers/1").status for _ in range(5)] == [500, 200, 500, 500, 500]
        with pytest.raises(http.client.RemoteDisconnected):  # closed without any response
            c.get("/order_headers/2")
        assert c.get("/order_headers/2").status == 200
        assert portal.page_hits("1") == 5 and portal.page_hits("2") == 2


def test_drop_mid_sends_half_then_closes_and_is_not_counted() -> None:
    sc = scenario([{"id": "1", "attachments": [
        {"name": "big.pdf", "size": 100_000, "faults": ["drop_mid", "http500", "ok"]}]}])
    with DemoPortal(sc).start() as portal:
        c = logged_in(portal)
        e = portal.scenario.entries("1")[0]
        conn = http.client.HTTPConnection("127.0.0.1", portal.port, timeout=10)
        conn.request("GET", e.file_url, headers={"Cookie": f"_coupa_session={c.token}"})
        r = conn.getresponse()
        assert r.status == 200 and r.getheader("Content-Length") == "100000"
        with pytest.raises(http.client.IncompleteRead) as info:
            r.read()
        conn.close()
        assert len(info.value.partial) == 50_000
        assert info.value.partial == portal.scenario.file_bytes(e)[:50_000]
        assert portal.download_counts() == {}
        assert c.get(e.file_url).status == 500
        ok = c.get(e.file_url)
        assert ok.status == 200 and ok.body == portal.expected_files("1")["big.pdf"]
        assert portal.download_counts() == {"1/big.pdf": 1}
        assert portal.attachment_requests() == {"1/big.pdf": 3}


def test_download_counts_only_complete_responses_and_reset_clears_them(fresh: DemoPortal) -> None:
    c = logged_in(fresh)
    entries = fresh.scenario.entries("100002")
    for e in entries:
        assert c.get(e.file_url).status == 200
    assert c.get(entries[1].file_url).status == 200
    assert fresh.download_counts() == {
        "100002/Specification sheet.xlsx": 1, "100002/invoice.pdf": 2, "100002/invoice (1).pdf": 1,
        "100002/Order confirmation.msg": 1}
    c.get("/order_headers/100002")
    state = json.loads(c.get("/__demo__/state").body)
    assert state["download_counts"] == fresh.download_counts() and state["page_hits"] == {"100002": 1}
    assert c.request("POST", "/__demo__/reset", body="").status == 200
    assert fresh.download_counts() == {} and fresh.page_hits("100002") == 0


def test_reset_restarts_fault_sequences(fresh: DemoPortal) -> None:
    c = logged_in(fresh)
    assert [c.get("/order_headers/100008").status for _ in range(2)] == [500, 200]
    fresh.reset()
    assert [c.get("/order_headers/100008").status for _ in range(2)] == [500, 200]


def _stall_in_flight(portal: DemoPortal, path: str, token: str, started: threading.Event) -> dict:
    """Run a request in a thread; report how it ended."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", portal.port, timeout=30)
        try:
            started.set()
            conn.request("GET", path, headers={"Cookie": f"_coupa_session={token}"})
            r = conn.getresponse()
            outcome["status"] = r.status
            outcome["body"] = r.read()
        except Exception as exc:  # the point: it ends, one way or another
            outcome["error"] = exc
        finally:
            conn.close()
            outcome["done"] = time.monotonic()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    outcome["thread"] = t
    return outcome


@pytest.mark.parametrize("fault", ["page", "attachment"])
def test_stop_returns_promptly_while_a_stall_is_in_flight(fault: str) -> None:
    sc = scenario([{"id": "1", "faults": {"page": ["stall"] if fault == "page" else ["ok"]},
                    "attachments": [{"name": "a.pdf", "size": 200_000, "faults": ["stall_mid"]}]}],
                  stall_seconds=30)
    portal = DemoPortal(sc).start()
    try:
        c = logged_in(portal)
        e = portal.scenario.entries("1")[0]
        path = "/order_headers/1" if fault == "page" else e.file_url
        outcome = _stall_in_flight(portal, path, c.token, threading.Event())
        wait_for(lambda: portal.stalls_in_flight() == 1, 5.0, "the stall to be in flight", interval=0.01)
        assert outcome["thread"].is_alive()  # really stalled
        assert portal.page_hits("1") == (1 if fault == "page" else 0)
        t0 = time.monotonic()
        portal.stop()
        assert time.monotonic() - t0 < 2.0
        outcome["thread"].join(5)
        assert not outcome["thread"].is_alive() and portal.stalls_in_flight() == 0
        assert "error" in outcome or outcome.get("status") != 200 or len(outcome.get("body", b"")) < 200_000
        assert portal.download_counts() == {}
    finally:
        portal.stop()
    portal.stop()  # idempotent


def test_stall_then_answers_normally_after_stall_seconds() -> None:
    sc = scenario([{"id": "1", "faults": {"page": ["stall", "ok"]}, "attachments": [{"name": "a.pdf"}]}],
                  stall_seconds=1.0)
    with DemoPortal(sc).start() as portal:
        c = logged_in(portal)
        t0 = time.monotonic()
        assert c.get("/order_headers/1").status == 200
        assert time.monotonic() - t0 >= 1.0
        t0 = time.monotonic()
        assert c.get("/order_headers/1").status == 200
        assert time.monotonic() - t0 < 0.8


def test_stop_is_prompt_with_idle_keep_alive_connections_and_frees_the_port() -> None:
    portal = DemoPortal(scenario([{"id": "1"}])).start()
    c = logged_in(portal)
    conn = http.client.HTTPConnection("127.0.0.1", portal.port, timeout=10)
    conn.request("GET", "/order_headers/1", headers={"Cookie": f"_coupa_session={c.token}"})
    assert conn.getresponse().read()  # the connection now idles in keep-alive
    t0 = time.monotonic()
    portal.stop()
    assert time.monotonic() - t0 < 2.0
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", portal.port, timeout=2).request("GET", "/sessions/new")
    conn.close()
    with pytest.raises(RuntimeError):
        portal.start()


def test_latency_is_applied_and_reproducible() -> None:
    assert draw_ms((50, 150), 7, "/order_headers/1", 0) == draw_ms((50, 150), 7, "/order_headers/1", 0)
    draws = {draw_ms((50, 150), 7, "/order_headers/1", i) for i in range(50)}
    assert len(draws) > 10 and min(draws) >= 50 and max(draws) <= 150
    assert draw_ms((80, 80), 7, "/x", 3) == 80
    sc = scenario([{"id": "1", "attachments": [{"name": "a.pdf", "size": 40_000}]}],
                  latency={"page_ms": 250, "attachment_ms": 200})
    with DemoPortal(sc).start() as portal:
        c = logged_in(portal)
        t0 = time.monotonic()
        c.get("/order_headers/1")
        t1 = time.monotonic()
        c.get(portal.scenario.entries("1")[0].file_url)
        t2 = time.monotonic()
        assert 0.24 <= t1 - t0 < 1.5 and 0.19 <= t2 - t1 < 1.5


# -- the truth ------------------------------------------------------------------------------------------
SAMPLE_OUTCOMES = {
    "100001": ("COMPLETED", ""), "100002": ("COMPLETED", ""), "100003": ("COMPLETED", ""),
    "100004": ("COMPLETED", ""), "100005": ("COMPLETED", "REQUISITION_FALLBACK"), "100006": ("NO_ATTACHMENTS", ""),
    "100007": ("PO_NOT_FOUND", ""), "100008": ("COMPLETED", ""), "100009": ("COMPLETED", ""),
    "100010": ("FAILED", "HTTP_500"), "100011": ("PO_NOT_FOUND", "NOT_AUTHORIZED"), "100012": ("COMPLETED", ""),
}


def test_expected_outcomes_for_the_sample(fresh: DemoPortal) -> None:
    assert fresh.expected_outcomes() == SAMPLE_OUTCOMES
    assert set(fresh.expected_files("100005")) == {"Requisition approval.pdf", "Budget breakdown.xlsx"}
    assert "Requisition form.pdf" not in fresh.expected_files("100001")  # the PO has its own: no fallback
    for po in ("100006", "100007", "100010", "100011", "nonexistent"):
        assert fresh.expected_files(po) == {}


def test_a_reference_client_gets_exactly_the_expected_outcomes_and_files() -> None:
    """The whole sample, with its real latency and faults, through a minimal correct HTTP client."""
    with DemoPortal().start() as portal:
        c = logged_in(portal)
        t0 = time.monotonic()
        for po_id, expected in portal.expected_outcomes().items():
            status, reason, files = reference_run(c, po_id)
            assert (status, reason) == expected, po_id
            assert files == portal.expected_files(po_id), po_id
        assert time.monotonic() - t0 > 1.0  # the sample's latency is real
        expected_counts = {f"{po}/{name}": 1 for po in SAMPLE_OUTCOMES for name in portal.expected_files(po)}
        expected_counts["100009/Contract.docx"] = 2  # fetched again in the attempt that repeated the cut-off file
        assert portal.download_counts() == expected_counts
        assert portal.page_hits("100008") == 2 and portal.page_hits("100010") == 3
        assert portal.attachment_requests()["100009/Delivery schedule.pdf"] == 2


def test_derived_outcomes_follow_the_documented_rules() -> None:
    def outcome(po: dict, **top: Any) -> tuple[str, str]:
        po = {"id": "1", **po}
        return scenario([po], **top).expected_outcomes()["1"]

    att = [{"name": "a.pdf"}]
    assert outcome({"missing": True}) == ("PO_NOT_FOUND", "")
    assert outcome({"forbidden": True, "attachments": att}) == ("PO_NOT_FOUND", "NOT_AUTHORIZED")
    assert outcome({"faults": {"page": ["stall"]}, "attachments": att}) == ("TIMEOUT", "TIMEOUT")
    assert outcome({"faults": {"page": ["drop"]}, "attachments": att}) == ("FAILED", "CONNECTION_FAILED")
    assert outcome({"faults": {"page": ["http500", "http500", "stall"]}, "attachments": att}) == ("TIMEOUT", "TIMEOUT")
    assert outcome({"faults": {"page": ["http500", "http500", "ok"]}, "attachments": att}) == ("COMPLETED", "")
    assert outcome({"faults": {"page": ["http500", "ok"]}, "attachments": att}, client_max_attempts=1) == \
        ("FAILED", "HTTP_500")
    assert outcome({"faults": {"page": ["drop", "ok"]}, "attachments": att}) == ("COMPLETED", "")
    assert outcome({"attachments": []}) == ("NO_ATTACHMENTS", "")
    assert outcome({"requisition": {"id": "9", "attachments": []}}) == ("NO_ATTACHMENTS", "")
    assert outcome({"requisition": {"id": "9", "attachments": att}}) == ("COMPLETED", "REQUISITION_FALLBACK")
    assert outcome({"attachments": [{"name": "a.pdf", "faults": ["http500"]}, {"name": "b.pdf"}]}) == \
        ("PARTIAL", "DOWNLOAD_FAILED")
    assert outcome({"attachments": [{"name": "a.pdf", "faults": ["drop_mid", "stall_mid", "ok"]}]}) == \
        ("COMPLETED", "")
    # the permanent fault leaves the other file; a page that fails later turns PARTIAL into FAILED
    sc = scenario([{"id": "1", "attachments": [{"name": "a.pdf", "faults": ["http500"]}, {"name": "b.pdf"}]}])
    assert list(sc.expected_files("1")) == ["b.pdf"]
    assert outcome({"faults": {"page": ["ok", "http500"]},
                    "attachments": [{"name": "a.pdf", "faults": ["http500"]}]}) == ("FAILED", "HTTP_500")


def test_ambiguous_fault_lists_need_a_stated_outcome() -> None:
    late_ok = {"id": "1", "attachments": [{"name": "a.pdf", "faults": ["http500"] * 4 + ["ok"]}]}
    with pytest.raises(ScenarioError, match="state it with"):
        scenario([late_ok])
    sc = scenario([{**late_ok, "expected": {"status": "COMPLETED", "reason": ""}}])
    assert sc.expected_outcomes() == {"1": ("COMPLETED", "")}
    assert list(sc.expected_files("1")) == ["a.pdf"]
    stated = scenario([{"id": "1", "missing": True, "expected": {"status": "FAILED", "reason": "WHATEVER"}}])
    assert stated.expected_outcomes() == {"1": ("FAILED", "WHATEVER")}


@pytest.mark.parametrize("pos,top,message", [
    ([{"id": "1", "attachments": [{"name": "a.pdf", "kind": "magic"}]}], {}, "unknown kind"),
    ([{"id": "1", "attachments": [{"name": "a.pdf", "faults": ["explode"]}]}], {}, "unknown fault"),
    ([{"id": "1", "faults": {"page": ["drop_mid"]}}], {}, "unknown fault"),
    ([{"id": "1"}, {"id": "1"}], {}, "appears twice"),
    ([{"id": "1/2"}], {}, "pos\\[0\\].id"),
    ([{"id": "1", "colour": "red"}], {}, "unknown key"),
    ([{"id": "1", "missing": True, "forbidden": True}], {}, "missing and forbidden"),
    ([{"id": "1", "attachments": [{"name": "a/b.pdf", "kind": "inline_pdf"}]}], {}, "inline_pdf"),
    ([{"id": "1", "attachments": [{"name": ""}]}], {}, "name"),
    ([{"id": "1", "expected": {"status": "GREAT"}}], {}, "expected.status"),
    ([{"id": "1", "requisition": {"id": "7"}}, {"id": "2", "requisition": {"id": "7"}}], {}, "two POs"),
    ([], {"latency": {"page_ms": [100, 50]}}, "min > max"),
    ([], {"session": {"expire_after_requests": 0}}, "expire_after_requests"),
    ([], {"stall_second": 3}, "unknown key"),
])
def test_bad_scenarios_are_refused_with_a_clear_message(pos: list, top: dict, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        scenario(pos, **top)


def test_load_scenario_reports_unreadable_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ScenarioError, match="not valid JSON"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.json")


def test_scenario_round_trips_through_json(tmp_path: Path) -> None:
    sample = load_scenario(sample_scenario_path())
    path = tmp_path / "copy.json"
    path.write_text(json.dumps(sample.to_dict(), ensure_ascii=False), encoding="utf-8")
    copy = load_scenario(path)
    assert copy == sample and copy.expected_outcomes() == sample.expected_outcomes()
    with DemoPortal(path).start() as portal:
        assert portal.scenario == sample


def test_generate_scenario_is_fault_free_fixed_latency_and_deterministic() -> None:
    a = generate_scenario(40, seed=5, page_ms=300, attachment_ms=100, size=(1_000, 2_000))
    b = generate_scenario(40, seed=5, page_ms=300, attachment_ms=100, size=(1_000, 2_000))
    assert a == b and a != generate_scenario(40, seed=6, page_ms=300, attachment_ms=100, size=(1_000, 2_000))
    assert len(a.pos) == 40 and a.latency.page_ms == (300, 300) and a.latency.attachment_ms == (100, 100)
    assert set(a.expected_outcomes().values()) == {("COMPLETED", "")}
    for po in a.pos:
        assert 2 <= len(po.attachments) <= 3 and not po.page_faults
        assert all(not x.faults and 1_000 <= x.size <= 2_000 for x in po.attachments)
        assert len(a.expected_files(po.id)) == len(po.attachments)
    assert {x.kind for po in a.pos for x in po.attachments} == {"link", "download_attr", "js", "span", "popup",
                                                                 "inline_pdf"}


def test_page_assets_give_pages_a_logo_and_icons_and_change_no_attachment() -> None:
    """The CPU benchmark's pages with images (scenario "page_assets"): a logo, toolbar icons, a file-type
    icon per attachment, served as cacheable PNGs without a session; the attachment elements stay as they were."""
    plain = generate_scenario(3, seed=5, page_ms=0, attachment_ms=0)
    sc = generate_scenario(3, seed=5, page_ms=0, attachment_ms=0, page_assets=True)
    assert sc.page_assets and Scenario.from_dict(sc.to_dict()) == sc and "page_assets" not in plain.to_dict()
    with DemoPortal(sc).start() as portal:
        c = logged_in(portal)
        po = sc.pos[0]
        html = c.get(f"/order_headers/{po.id}").text
        srcs = re.findall(r'<img [^>]*src="(/assets/[^"]+)"', html)
        assert "/assets/logo.png" in srcs and sum("/toolbar-" in u for u in srcs) == 8
        assert sum("/file-" in u for u in srcs) == len(po.attachments)
        assert parse_page(html).items == parse_page(c.get(f"/order_headers/{po.id}").text).items
        assert len(parse_page(html).items) == len(po.attachments)
        for e in sc.entries(po.id):
            assert expected_markup(e) in html
        anonymous = Client(portal)
        for url in set(srcs):
            r = anonymous.get(url)
            assert r.status == 200 and r.header("Content-Type") == "image/png" and r.body.startswith(b"\x89PNG")
            assert "max-age" in (r.header("Cache-Control") or "")
        assert anonymous.get("/assets/nothing.png").status == 404
    with DemoPortal(plain).start() as portal:
        assert "<img" not in logged_in(portal).get(f"/order_headers/{po.id}").text
        assert Client(portal).get("/assets/logo.png").status == 302  # no assets: an ordinary page, behind sign-in


def test_po_url_accepts_the_forms_users_write(fresh: DemoPortal) -> None:
    for form in ("100001", "PO100001", "pm100001", " PO-100001 "):
        assert fresh.po_url(form) == f"{fresh.base_url}/order_headers/100001"
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", fresh.base_url)


def test_sample_orders_list_the_sample_pos_in_mixed_forms() -> None:
    from openpyxl import load_workbook

    with open(sample_orders_path("csv"), encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["PO_NUMBER"]
    values = [r[0] if r else "" for r in rows[1:]]
    wb = load_workbook(sample_orders_path("xlsx"), read_only=True)
    try:
        ws = wb["PO_Data"]
        xrows = list(ws.iter_rows(values_only=True))
    finally:
        wb.close()
    assert xrows[0] == ("PO_NUMBER",)
    xvalues = ["" if r[0] is None else str(r[0]) for r in xrows[1:]]
    for vals in (values, xvalues):
        assert "" in vals  # one blank row
        digits = [re.sub(r"\D", "", v) for v in vals if v.strip()]
        assert len(digits) == len(set(digits)) + 1  # one duplicate
        assert set(digits) == set(SAMPLE_OUTCOMES)
        assert "PO100001" in vals and " 100002 " in vals and "pm100003" in vals


def test_python_m_serves_and_stops_on_ctrl_c() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "pobatch.core.demo_portal", "--port", "0"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8")
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        seen: list[str] = []
        url = ""
        end = time.monotonic() + 15
        while not (url and any("/sessions/new" in s for s in seen)):
            seen.append(lines.get(timeout=max(0.1, end - time.monotonic())))
            m = re.search(r"running at (http://127\.0\.0\.1:\d+)", seen[-1])
            url = url or (m.group(1) if m else "")
        assert any(f"log in at {url}/sessions/new with any e-mail and password 'demo'" in s for s in seen), seen
        conn = http.client.HTTPConnection(urlsplit(url).hostname, urlsplit(url).port, timeout=5)
        conn.request("GET", "/sessions/new")
        assert conn.getresponse().status == 200
        conn.close()
        if os.name == "posix":
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_main_refuses_a_busy_port_with_a_clear_message(caplog: pytest.LogCaptureFixture) -> None:
    import socket

    from pobatch.core.demo_portal import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        with pytest.raises(SystemExit) as info:
            main(None, busy.getsockname()[1], "127.0.0.1")
    assert info.value.code == 2
    assert "pick another port" in caplog.text
