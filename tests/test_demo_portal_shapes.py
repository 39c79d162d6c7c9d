"""The demo portal's shapes of issue 21: many attachments, a single sign-on refresh, sub-resources that
never answer, and the soak scenario. HTTP-level with the reference clients of test_demo_portal.py,
plus one small headless Chromium check per SSO method (one browser at a time)."""
from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import subprocess
import sys
import threading
import time
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest

from pobatch.core.demo_portal import (
    DemoPortal,
    Scenario,
    ScenarioError,
    load_scenario,
    many_attachment_pos,
    many_attachments_scenario_path,
)
from pobatch.core.demo_portal.scenario import ALL_KINDS, HANG_KINDS, KINDS, SSO_BOUNCES, SSO_VIA, many_attachments_po
from pobatch.core.sites.demo import DEMO_PASSWORD
from eventually import wait_for
from test_demo_portal import Client, Resp, logged_in, parse_page, reference_run

from benchmarks.soak_scenario import soak_scenario, summary

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger(__name__)
pytestmark = pytest.mark.timeout(120)


def scenario(pos: list[dict], **top: Any) -> Scenario:
    return Scenario.from_dict({"seed": 3, "pos": pos, **top}, source="test")


def sso_scenario(via: str, every: int = 1, pos: list[dict] | None = None) -> Scenario:
    return scenario(pos or [{"id": "1", "attachments": [{"name": "a.pdf", "size": 3000}]}],
                    session={"sso_refresh_every": every, "sso_via": via})


# -- a client that goes through the identity provider as a browser does --------------------------------
def request(url: str, method: str = "GET", cookie: str | None = None, form: dict[str, str] | None = None,
            timeout: float = 10.0) -> Resp:
    """One request to any of the portal's two hosts, no redirect followed."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        headers = {"Cookie": f"_coupa_session={cookie}"} if cookie else {}
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, u.path + (f"?{u.query}" if u.query else ""), body=body, headers=headers)
        r = conn.getresponse()
        return Resp(r.status, r.headers, r.read())
    finally:
        conn.close()


def next_step(base: str, r: Resp) -> tuple[str, str, dict[str, str] | None] | None:
    """Where a browser goes next by itself from this answer: (method, url, form) or None (it stays)."""
    if r.status in (301, 302, 303, 307):
        loc = r.header("Location")
        return "GET", loc if "://" in loc else base + loc, None
    if "text/html" not in (r.header("Content-Type") or ""):
        return None
    html = r.text
    if m := re.search(r'<form id="saml-post" method="post" action="([^"]+)">', html):
        if "document.getElementById('saml-post').submit()" in html:
            fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html))
            return "POST", unescape(m.group(1)), {k: unescape(v) for k, v in fields.items()}
    if m := re.search(r"<script>location\.replace\((\"[^\"]*\")\);</script>", html):
        return "GET", json.loads(m.group(1)), None
    if m := re.search(r'<meta http-equiv="refresh" content="0;url=([^"]+)">', html):
        return "GET", unescape(m.group(1)), None
    return None


@pytest.fixture
def hops() -> list[tuple[str, str, int]]:
    return []


def follow(url: str, cookie: str | None, hops: list[tuple[str, str, int]] | None = None,
           limit: int = 10) -> tuple[Resp, str | None, str]:
    """Follow redirects and self-submitting pages across hosts, keeping the portal's cookie as a
    browser would: (the answer it stays on, the cookie, its URL)."""
    method, form = "GET", None
    for _ in range(limit):
        r = request(url, method, cookie, form)
        if hops is not None:
            hops.append((method, url, r.status))
        set_cookie = r.header("Set-Cookie")
        if set_cookie and (m := re.match(r"_coupa_session=([^;]+)", set_cookie)):
            cookie = m.group(1)
        step = next_step(f"{urlsplit(url).scheme}://{urlsplit(url).netloc}", r)
        if step is None:
            return r, cookie, url
        method, url, form = step
    raise AssertionError(f"more than {limit} hops: {hops}")


class SsoClient(Client):
    """test_demo_portal's Client, following the identity provider's bounce as a browser would."""

    def __init__(self, portal: DemoPortal) -> None:
        super().__init__(portal)
        self.portal = portal
        self.bounces = 0

    def request(self, method: str, path: str, body: str | None = None, timeout: float = 10.0,
                headers: dict[str, str] | None = None) -> Resp:
        r = super().request(method, path, body, timeout, headers)
        loc = r.header("Location") or ""
        if r.status == 302 and loc.startswith(self.portal.sso_base_url):
            self.bounces += 1
            r, self.token, url = follow(loc, self.token)
            assert urlsplit(url).path == urlsplit(path).path, (url, path)
        return r


def sign_in(portal: DemoPortal) -> str:
    c = logged_in(portal)
    assert c.token
    return c.token


# -- many attachments ---------------------------------------------------------------------------------
def test_the_many_attachments_scenario_is_the_helpers_list() -> None:
    sc = load_scenario(many_attachments_scenario_path())
    assert sc.pos == many_attachment_pos(seed=21)
    assert [len(po.attachments) for po in sc.pos] == [12, 50, 300, 50]
    assert [{a.kind for a in po.attachments} for po in sc.pos] == [{"link"}] * 3 + [set(KINDS)]
    assert all(2_000 <= a.size <= 5_000 for po in sc.pos for a in po.attachments)
    assert sc.latency.page_ms[1] <= 50 and sc.latency.attachment_ms[1] <= 20
    for po in sc.pos:
        keys = [e.key for e in sc.entries(po.id)]
        assert len(set(keys)) == len(keys) == len(po.attachments)
        assert sc.expected_outcomes()[po.id] == ("COMPLETED", "")
        assert list(sc.expected_files(po.id)) == keys


def test_many_attachments_po_takes_any_kinds_and_refuses_nonsense() -> None:
    po = many_attachments_po("7", 20, kinds=ALL_KINDS)
    assert [a.kind for a in po.attachments][:len(ALL_KINDS)] == list(ALL_KINDS)
    assert all(a.name.endswith(".pdf") for a in po.attachments if a.kind in ("inline_pdf", "inline_labeled"))
    sc = Scenario(seed=1, pos=(po,))
    assert len(sc.expected_files("7")) == 20
    with pytest.raises(ScenarioError):
        many_attachments_po("7", 0)
    with pytest.raises(ScenarioError):
        many_attachments_po("7", 3, kinds=("magic",))


def test_every_file_of_a_long_list_is_served_once_with_its_bytes() -> None:
    """12, 50, 300 and a mixed 50: every element on the page leads to its own file, under its own name."""
    data = json.loads(many_attachments_scenario_path().read_text(encoding="utf-8"))
    data["latency"] = {"page_ms": 0, "attachment_ms": 0}
    with DemoPortal(Scenario.from_dict(data)).start() as portal:
        c = logged_in(portal)
        for po in portal.scenario.pos:
            status, reason, files = reference_run(c, po.id)
            assert (status, reason) == ("COMPLETED", ""), po.id
            assert files == portal.expected_files(po.id), po.id
        assert portal.download_counts() == {f"{po.id}/{e.key}": 1 for po in portal.scenario.pos
                                             for e in portal.scenario.entries(po.id)}
        html = c.get("/order_headers/410004").text
        assert {i.get("class", "") for i in parse_page(html).items} >= {"attachment_link", "attachment_download",
                                                                       "attachment_js", "attachment_title",
                                                                       "attachment_popup", "attachment_inline"}


@pytest.mark.parametrize("count", [12, 50, 300])
def test_a_long_list_of_every_kind_is_served_whole(count: int) -> None:
    po = many_attachments_po("9", count, kinds=KINDS, seed=count)
    with DemoPortal(Scenario(seed=1, pos=(po,))).start() as portal:
        c = logged_in(portal)
        html = c.get("/order_headers/9").text
        assert len(parse_page(html).items) == count
        assert reference_run(c, "9") == ("COMPLETED", "", portal.expected_files("9"))
        assert len(portal.expected_files("9")) == count and sum(portal.download_counts().values()) == count


# -- single sign-on refresh: the format and the truth -------------------------------------------------
@pytest.mark.parametrize("session,message", [
    ({"sso_refresh_every": 0}, "sso_refresh_every"),
    ({"sso_refresh_every": 2, "sso_via": "carrier_pigeon"}, "sso_via"),
    ({"sso_every": 2}, "unknown key"),
])
def test_bad_sso_settings_are_refused(session: dict, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        scenario([{"id": "1"}], session=session)


def test_sso_and_hang_keys_round_trip() -> None:
    sc = scenario([{"id": "1", "hang": "image", "attachments": [{"name": "a.pdf"}]},
                   {"id": "2", "hang": ["longpoll", "iframe"]}],
                  session={"sso_refresh_every": 7, "sso_via": "meta"})
    d = sc.to_dict()
    assert d["session"]["sso_refresh_every"] == 7 and d["session"]["sso_via"] == "meta"
    assert d["pos"][0]["hang"] == ["image"] and d["pos"][1]["hang"] == ["longpoll", "iframe"]
    assert Scenario.from_dict(json.loads(json.dumps(d))) == sc
    assert "sso_refresh_every" not in scenario([{"id": "1"}]).to_dict()["session"]


def _five(**extra: Any) -> list[dict]:
    return [{"id": str(i), "attachments": [{"name": f"f{i}.pdf"}], **extra.get(str(i), {})} for i in range(1, 6)]


@pytest.mark.parametrize("via", SSO_BOUNCES)
def test_a_bounce_keeps_every_outcome(via: str) -> None:
    plain = scenario(_five(**{"2": {"faults": {"page": ["http500", "ok"]}}, "3": {"missing": True}}))
    sso = scenario(_five(**{"2": {"faults": {"page": ["http500", "ok"]}}, "3": {"missing": True}}),
                   session={"sso_refresh_every": 1, "sso_via": via})
    assert sso.expected_outcomes() == plain.expected_outcomes()


def test_password_form_stops_the_run_at_the_po_that_meets_the_ended_session() -> None:
    top = {"session": {"sso_refresh_every": 2, "sso_via": "password_form"}}
    done, wall, never = ("COMPLETED", ""), ("LOGIN_REQUIRED", ""), ("PENDING", "")
    assert scenario(_five(), **top).expected_outcomes() == {"1": done, "2": done, "3": wall, "4": never, "5": never}
    # a retried page costs a second request: the second PO now meets the end
    retried = scenario(_five(**{"1": {"faults": {"page": ["http500", "ok"]}}}), **top)
    assert retried.expected_outcomes() == {"1": done, "2": wall, "3": never, "4": never, "5": never}
    # the arrival at a redirect's target is a PO page request too
    redirected = scenario(_five(**{"1": {"faults": {"page": ["redirect_other_po", "ok"]}, "redirect_to": "5"}}),
                          **top)  # 2 requests in its first attempt
    assert redirected.expected_outcomes() == {"1": wall, "2": never, "3": never, "4": never, "5": never}
    assert redirected.expected_files("1") == {}
    long = scenario(_five(), session={"sso_refresh_every": 5, "sso_via": "password_form"})
    assert set(long.expected_outcomes().values()) == {done}


# -- single sign-on refresh over HTTP --------------------------------------------------------------------
@pytest.mark.parametrize("via", SSO_BOUNCES)
def test_each_bounce_brings_the_client_back_with_a_fresh_session(via: str, hops: list) -> None:
    with DemoPortal(sso_scenario(via)).start() as portal:
        token = sign_in(portal)
        page = portal.po_url("1")
        assert request(page, cookie=token).status == 200
        r, fresh, url = follow(page, token, hops)
        assert r.status == 200 and "Purchase Order #1" in r.text and url == page
        assert fresh and fresh != token
        idp = urlsplit(portal.sso_base_url).netloc
        hosts = [urlsplit(u).netloc for _m, u, _s in hops]
        assert hosts[0] == hosts[-1] == urlsplit(portal.base_url).netloc and idp in hosts
        assert hops[1][1].startswith(f"{portal.sso_base_url}/idp/sso?request=")
        assert parse_qs(urlsplit(hops[1][1]).query)["return_to"] == [page]  # the full original URL
        back = {"post_form": ("POST", "/saml/acs"), "script": ("GET", "/sso/callback"),
                "meta": ("GET", "/sso/callback"), "redirect_chain": ("GET", "/sso/callback")}[via]
        assert [(m, urlsplit(u).path) for m, u, _s in hops if urlsplit(u).netloc != idp][1] == back
        if via == "redirect_chain":
            assert [(urlsplit(u).path, s) for _m, u, s in hops if urlsplit(u).netloc == idp] == \
                [("/idp/sso", 302), ("/idp/step2", 302)]
        assert (portal.sso_session_ends(), portal.sso_redirects(), portal.sso_refreshes(),
                portal.sso_rejected()) == (1, 1, 1, 0)
        assert portal.sso_bounce_seconds()[0] < 0.3
        assert portal.page_hits("1") == 2  # the refused request never reached the page
        # the old session stays ended; the fresh one is good for the next PO page (every = 1: that ends it)
        assert request(page, cookie=token).header("Location").startswith(portal.sso_base_url)
        assert request(page, cookie=fresh).status == 302 and portal.sso_session_ends() == 2


def test_only_po_pages_end_the_session_so_a_pos_downloads_never_meet_it() -> None:
    sc = sso_scenario("script", every=2, pos=[
        {"id": "1", "attachments": [{"name": f"a{i}.pdf", "size": 2000} for i in range(8)],
         "requisition": {"id": "9"}}])
    with DemoPortal(sc).start() as portal:
        c = SsoClient(portal)
        c.login()
        for _ in range(2):
            assert c.get("/order_headers/1").status == 200
            for e in portal.scenario.entries("1"):
                assert c.get(e.file_url).status == 200
            assert c.get("/requisition_headers/9").status == 200 and c.get("/").status == 200
        assert c.bounces == 0 and portal.sso_session_ends() == 0
        assert c.get("/order_headers/1").status == 200  # the third PO page meets the end
        assert c.bounces == 1 and portal.sso_refreshes() == 1


def test_a_download_after_another_client_ended_the_session_bounces_back_to_the_file() -> None:
    """Parallel clients: the end is global, so one client's download may be the first to meet it."""
    with DemoPortal(sso_scenario("post_form", every=1)).start() as portal:
        a, b = SsoClient(portal), SsoClient(portal)
        a.login()
        b.login()
        assert a.get("/order_headers/1").status == 200
        assert b.get("/order_headers/1").status == 200 and b.bounces == 1  # b's page ended every session
        e = portal.scenario.entries("1")[0]
        r = a.get(e.file_url)
        assert a.bounces == 1 and r.status == 200 and r.body == portal.expected_files("1")["a.pdf"]
        assert portal.sso_refreshes() == 2 and portal.sso_session_ends() == 1


@pytest.mark.parametrize("via", SSO_BOUNCES)
def test_a_bouncing_reference_client_gets_the_truth(via: str) -> None:
    pos = _five(**{"2": {"faults": {"page": ["http500", "ok"]}}, "3": {"missing": True},
                   "4": {"attachments": [{"name": "x.pdf", "faults": ["drop_mid", "ok"]}, {"name": "y.pdf"}]}})
    with DemoPortal(sso_scenario(via, every=2, pos=pos)).start() as portal:
        c = SsoClient(portal)
        c.login()
        for po_id, expected in portal.expected_outcomes().items():
            status, reason, files = reference_run(c, po_id)
            assert (status, reason) == expected and files == portal.expected_files(po_id), po_id
        # 7 PO page requests (POs 2 and 4 take two attempts), every 2: the 3rd, 5th and 7th meet the end
        assert c.bounces == portal.sso_refreshes() == 3


def _saml_response(ticket: str) -> str:
    return base64.b64encode(f'<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="{ticket}">'
                            "</samlp:Response>".encode()).decode()


def _provider_ticket(portal: DemoPortal) -> tuple[str, str]:
    """A genuine (SAMLResponse, ticket) from the provider, through its password form."""
    r = request(f"{portal.sso_base_url}/idp/login", "POST",
                form={"account": "buyer@example.com", "password": DEMO_PASSWORD, "return_to": "/"})
    step = next_step(portal.sso_base_url, r)
    assert step and step[0] == "POST" and step[1] == f"{portal.base_url}/saml/acs"
    saml = step[2]["SAMLResponse"]
    ticket = re.search(r'ID="([^"]+)"', base64.b64decode(saml).decode()).group(1)
    return saml, ticket


def test_a_ticket_works_once_and_a_made_up_one_never() -> None:
    with DemoPortal(sso_scenario("password_form")).start() as portal:
        saml, ticket = _provider_ticket(portal)
        acs = f"{portal.base_url}/saml/acs"
        first = request(acs, "POST", form={"SAMLResponse": saml, "RelayState": "/order_headers/1"})
        assert first.status == 302 and first.header("Location") == "/order_headers/1"
        token = re.match(r"_coupa_session=([^;]+)", first.header("Set-Cookie")).group(1)
        assert request(portal.po_url("1"), cookie=token).status == 200
        again = request(acs, "POST", form={"SAMLResponse": saml, "RelayState": "/"})
        assert again.status == 403 and again.header("Set-Cookie") is None
        assert "Single sign-on failed" in again.text
        callback = f"{portal.base_url}/sso/callback?ticket={quote(ticket)}&return_to=%2F"
        assert request(callback).status == 403  # single use across both endpoints
        forged = [request(acs, "POST", form={"SAMLResponse": _saml_response("_" + "0" * 40), "RelayState": "/"}),
                  request(acs, "POST", form={"SAMLResponse": "not base64 at all!", "RelayState": "/"}),
                  request(acs, "POST", form={"RelayState": "/"}),
                  request(f"{portal.base_url}/sso/callback?ticket=_{'1' * 40}&return_to=%2F"),
                  request(f"{portal.base_url}/sso/callback?return_to=%2F")]
        assert [r.status for r in forged] == [403] * 5 and all(r.header("Set-Cookie") is None for r in forged)
        assert request(acs).status == 405  # the ACS takes the POST binding only
        assert portal.sso_refreshes() == 1 and portal.sso_rejected() == 7


def test_the_provider_bounces_only_for_a_request_the_portal_made() -> None:
    with DemoPortal(sso_scenario("script")).start() as portal:
        back = quote(portal.po_url("1"), safe="")
        made_up = request(f"{portal.sso_base_url}/idp/sso?request=invented&return_to={back}")
        assert made_up.status == 200 and 'type="password"' in made_up.text and "/sso/callback" not in made_up.text
        token = sign_in(portal)
        assert request(portal.po_url("1"), cookie=token).status == 200
        to_idp = request(portal.po_url("1"), cookie=token).header("Location")
        first = request(to_idp)
        assert first.status == 200 and "location.replace" in first.text and "/sso/callback?ticket=" in first.text
        replayed = request(to_idp)  # the same request id a second time
        assert 'type="password"' in replayed.text and "location.replace" not in replayed.text


@pytest.mark.parametrize("endpoint", ["acs", "callback"])
@pytest.mark.parametrize("target,expected", [
    ("http://evil.example.com/x", "/"), ("//evil.example.com/x", "/"), ("/\\evil.example.com", "/"),
    ("javascript:alert(1)", "/"), ("/order_headers/1\r\nSet-Cookie: x=1", "/"), ("", "/"),
    ("{base}/order_headers/1?x=1", "/order_headers/1?x=1"), ("{base}@evil.example.com/", "/"),
    ("http://127.0.0.1:1/order_headers/1", "/"), ("/order_headers/1", "/order_headers/1"),
])
def test_the_return_never_leaves_the_portal(endpoint: str, target: str, expected: str) -> None:
    with DemoPortal(sso_scenario("password_form")).start() as portal:
        target = target.replace("{base}", portal.base_url)
        saml, ticket = _provider_ticket(portal)
        if endpoint == "acs":
            r = request(f"{portal.base_url}/saml/acs", "POST", form={"SAMLResponse": saml, "RelayState": target})
        else:
            r = request(f"{portal.base_url}/sso/callback?ticket={quote(ticket)}&return_to={quote(target, safe='')}")
        assert r.status == 302 and r.header("Location") == expected


def test_password_form_stays_until_a_person_signs_in() -> None:
    with DemoPortal(sso_scenario("password_form")).start() as portal:
        token = sign_in(portal)
        assert request(portal.po_url("1"), cookie=token).status == 200
        hops: list = []
        r, cookie, url = follow(portal.po_url("1"), token, hops)
        assert url.startswith(portal.sso_base_url + "/idp/sso?") and r.status == 200 and cookie == token
        assert re.search(r'<input type="password" id="idp-password"', r.text)
        assert re.search(r'<input type="text" id="idp-account" name="account"', r.text)
        assert "<script" not in r.text and "http-equiv" not in r.text  # nothing takes the browser away
        assert portal.sso_refreshes() == 0 and request(portal.po_url("1"), cookie=token).status == 302
        return_to = re.search(r'name="return_to" value="([^"]+)"', r.text).group(1)
        wrong = request(f"{portal.sso_base_url}/idp/login", "POST",
                        form={"account": "buyer@example.com", "password": "nope", "return_to": unescape(return_to)})
        assert wrong.status == 200 and "Wrong account name or password" in wrong.text
        assert next_step(portal.sso_base_url, wrong) is None
        right = request(f"{portal.sso_base_url}/idp/login", "POST",
                        form={"account": "buyer@example.com", "password": DEMO_PASSWORD,
                              "return_to": unescape(return_to)})
        method, url, form = next_step(portal.sso_base_url, right)
        assert (method, url) == ("POST", f"{portal.base_url}/saml/acs")
        r = request(url, method, form=form)
        assert r.status == 302 and r.header("Location") == "/order_headers/1"
        fresh = re.match(r"_coupa_session=([^;]+)", r.header("Set-Cookie")).group(1)
        assert request(portal.po_url("1"), cookie=fresh).status == 200
        assert portal.sso_refreshes() == 1 and portal.sso_bounce_seconds() == []  # a person, not a bounce


def test_sso_interstitial_still_answers_beside_the_refresh() -> None:
    sc = scenario([{"id": "1", "faults": {"page": ["sso_interstitial", "ok"]}, "attachments": [{"name": "a.pdf"}]}],
                  session={"sso_refresh_every": 10})
    with DemoPortal(sc).start() as portal:
        c = logged_in(portal)
        r = c.get("/order_headers/1")
        assert r.status == 302 and r.header("Location").startswith(portal.sso_base_url + "/idp/authorize?")
        page = request(r.header("Location"))
        assert page.status == 200 and 'id="idp-continue"' in page.text and portal.sso_hits() == 1
        assert portal.sso_redirects() == 0


def test_without_a_session_the_portals_own_sign_in_comes_first() -> None:
    with DemoPortal(sso_scenario("post_form")).start() as portal:
        r = request(portal.po_url("1"))
        assert r.status == 302 and r.header("Location").startswith("/sessions/new?return_to=")
        assert portal.sso_redirects() == 0


# -- sub-resources that never answer ---------------------------------------------------------------------
_HANG_MARKUP = {"image": '<img class="tracking-pixel" src="/hang/img/', "async_script": '<script async src="/hang/js/',
                "iframe": '<iframe class="chat-widget" src="/hang/frame/', "longpoll": "fetch(\"/hang/poll/"}


def _hang_urls(html: str) -> list[str]:
    return re.findall(r'(/hang/(?:img|js|frame|poll)/[^"?]+\?n=\d+)', html)


@pytest.mark.parametrize("kind", HANG_KINDS)
def test_a_hanging_sub_resource_is_on_the_page_and_never_answers(kind: str) -> None:
    sc = scenario([{"id": "1", "hang": kind, "attachments": [{"name": "a.pdf"}]}])
    with DemoPortal(sc).start() as portal:
        c = logged_in(portal)
        html = c.get("/order_headers/1").text
        assert _HANG_MARKUP[kind] in html and "Purchase Order #1" in html
        assert len(parse_page(html).items) == 1
        (url,) = _hang_urls(html)
        conn = http.client.HTTPConnection("127.0.0.1", portal.port, timeout=0.5)
        try:
            conn.request("GET", url)
            with pytest.raises(TimeoutError):  # no status line within the read timeout: it hangs
                conn.getresponse()
            assert portal.hangs_in_flight() == 1 and portal.hang_requests() == {kind: 1}
        finally:
            conn.close()
        wait_for(lambda: portal.hangs_in_flight() == 0, 5.0, "the hang to end when its client left", 0.01)
        t0 = time.monotonic()
        assert c.get("/order_headers/1").status == 200 and time.monotonic() - t0 < 1.0  # still responsive
        assert c.get("/order_headers/1").text != html  # a new URL each time: no cache answers for the portal


def test_hanging_kinds_add_up_and_change_no_outcome() -> None:
    pos = [{"id": "1", "hang": list(HANG_KINDS), "attachments": [{"name": "a.pdf"}]},
           {"id": "2", "hang": ["image"], "missing": True}]
    sc = scenario(pos)
    assert sc.expected_outcomes() == scenario([{k: v for k, v in p.items() if k != "hang"} for p in pos]) \
        .expected_outcomes()
    with DemoPortal(sc).start() as portal:
        html = logged_in(portal).get("/order_headers/1").text
        assert [u.split("/")[2] for u in _hang_urls(html)] == ["img", "js", "frame", "poll"]


@pytest.mark.parametrize("bad", ["sound", ["image", "image"], 3])
def test_bad_hang_values_are_refused(bad: Any) -> None:
    with pytest.raises(ScenarioError, match="hang"):
        scenario([{"id": "1", "hang": bad}])


def test_stop_returns_promptly_while_requests_hang() -> None:
    sc = scenario([{"id": "1", "hang": list(HANG_KINDS), "attachments": [{"name": "a.pdf"}]}])
    portal = DemoPortal(sc).start()
    try:
        html = logged_in(portal).get("/order_headers/1").text
        ends: list[str] = []

        def hang(url: str) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", portal.port, timeout=30)
            try:
                conn.request("GET", url)
                conn.getresponse()
                ends.append("answered")
            except (http.client.HTTPException, OSError):
                ends.append("closed")
            finally:
                conn.close()

        threads = [threading.Thread(target=hang, args=(u,), daemon=True) for u in _hang_urls(html)]
        for t in threads:
            t.start()
        wait_for(lambda: portal.hangs_in_flight() == 4, 5.0, "four hanging requests", 0.01)
        t0 = time.monotonic()
        portal.stop()
        assert time.monotonic() - t0 < 2.0
        for t in threads:
            t.join(5)
        assert ends == ["closed"] * 4 and portal.hangs_in_flight() == 0
        assert portal.hang_requests() == {k: 1 for k in HANG_KINDS}
    finally:
        portal.stop()


# -- the soak scenario -------------------------------------------------------------------------------------
def test_the_soak_generator_writes_a_scenario_that_loads_with_its_truth(tmp_path: Path) -> None:
    out, base = tmp_path / "soak.json", tmp_path / "base.json"
    for path, extra in ((out, []), (base, ["--no-faults"])):
        proc = subprocess.run([sys.executable, "-m", "benchmarks.soak_scenario", "--pos", "2000", "--seed", "1",
                               "--out", str(path), *extra], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "wrote" in proc.stderr
    soak, plain = load_scenario(out), load_scenario(base)
    assert soak == soak_scenario(2000, 1)  # the file is what the function builds, seed and all
    s = summary(soak)
    assert s["pos"] == 2000 and 5_500 <= s["files"] <= 6_800 and 3 <= s["pos_with_50_files"] <= 20
    assert all(1 <= len(po.attachments) <= 5 or len(po.attachments) == 50 for po in soak.pos)
    assert 0.03 <= s["hanging_pages"] / 2000 <= 0.07 and 0.01 <= s["resets"] / s["files"] <= 0.03
    assert 0.003 <= s["http429_pages"] / 2000 <= 0.02
    assert {k for po in soak.pos for k in po.hang} == set(HANG_KINDS)
    assert {po.page_faults for po in soak.pos} == {(), ("http429", "ok")}
    assert {a.faults for po in soak.pos for a in po.attachments} == {(), ("drop_mid", "ok")}
    assert all(po.retry_after_seconds == 1 for po in soak.pos)
    assert (soak.session.sso_refresh_every, soak.session.sso_via) == (100, "post_form")
    assert soak.latency.page_ms == (30, 80) and soak.latency.attachment_ms == (10, 40)
    assert set(soak.expected_outcomes().values()) == {("COMPLETED", "")}
    # --no-faults: the same POs and files, nothing else
    assert [(po.id, [(a.name, a.kind, a.size) for a in po.attachments]) for po in plain.pos] == \
        [(po.id, [(a.name, a.kind, a.size) for a in po.attachments]) for po in soak.pos]
    assert summary(plain)["resets"] == summary(plain)["hanging_pages"] == summary(plain)["http429_pages"] == 0
    assert plain.session.sso_refresh_every is None
    assert all(plain.expected_files(po.id) == soak.expected_files(po.id) for po in soak.pos[:200])


def test_a_slice_of_the_soak_runs_true_through_a_bouncing_client() -> None:
    """The first 150 POs without latency: one SSO refresh, 429s and resets that clear, every PO true."""
    data = soak_scenario(150, 1).to_dict()
    data["latency"] = {"page_ms": 0, "attachment_ms": 0}
    with DemoPortal(Scenario.from_dict(data)).start() as portal:
        c = SsoClient(portal)
        c.login()
        for po_id, expected in portal.expected_outcomes().items():
            status, reason, files = reference_run(c, po_id)
            assert (status, reason) == expected and files == portal.expected_files(po_id), po_id
        assert c.bounces == portal.sso_refreshes() >= 1


# -- real Chromium: the bounce needs no person, and is fast ---------------------------------------------
@pytest.mark.parametrize("via", SSO_VIA)
def test_chromium_goes_to_the_provider_and_back_by_itself(via: str, browser_available: None, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    from pobatch.corelib.browser.factory import BrowserSpec
    from pobatch.corelib.browser.local_session import LocalBrowserSession

    with DemoPortal(sso_scenario(via)).start() as portal:
        spec = BrowserSpec(user_data_dir=str(tmp_path / "profile"), local_only=True, page_load_timeout=30)
        with LocalBrowserSession(spec) as session:
            d = session.driver
            sign_in_browser(d, portal)
            d.get(portal.po_url("1"))
            assert "Purchase Order #1" in d.title  # the first PO page: the session is still good
            page = portal.po_url("1")

            def on_po_page() -> bool:
                return (d.current_url == page and d.execute_script("return document.readyState") == "complete"
                        and "Purchase Order #1" in d.title)

            started = time.time()
            d.get(page)  # this one meets the ended session
            if via == "password_form":
                wait_for(lambda: d.execute_script("return location.hostname") == portal.sso_host
                         and d.execute_script("return document.readyState") == "complete", 10.0, "the provider")
                assert d.execute_script("return document.querySelectorAll('input[type=password]').length") == 1
                assert d.execute_script("return document.scripts.length + "
                                        "document.querySelectorAll('meta[http-equiv]').length") == 0
                assert portal.sso_refreshes() == 0
                d.find_element(By.ID, "idp-account").send_keys("buyer@example.com")
                d.find_element(By.ID, "idp-password").send_keys(DEMO_PASSWORD)
                d.find_element(By.ID, "idp-submit").click()
                wait_for(on_po_page, 10.0, "the PO page after the person signed in")
                assert portal.sso_refreshes() == 1
                return
            wait_for(on_po_page, 10.0, "the PO page after the bounce", interval=0.02)
            # the browser's own clock: when the PO page's answer began to arrive, from before get()
            arrived = d.execute_script("var n = performance.getEntriesByType('navigation')[0];"
                                       "return performance.timeOrigin + n.responseStart;") / 1000.0
            log.info("%s: back on the PO page %.3f s after get(), bounce %.3f s on the portal's clock", via,
                     arrived - started, portal.sso_bounce_seconds()[0])
            assert arrived - started < 1.0, f"back after {arrived - started:.3f} s"
            assert portal.sso_hits() >= 1 and portal.sso_refreshes() == 1 and portal.sso_rejected() == 0
            assert portal.sso_bounce_seconds()[0] < 1.0
            assert portal.page_hits("1") == 2


def test_chromium_never_sees_the_load_event_of_a_hanging_page(browser_available: None, tmp_path: Path) -> None:
    """What the docstring promises, in a real browser: image, async script and iframe hold the load event
    while a long-poll does not; leaving the page ends the portal's hold."""
    from pobatch.corelib.browser.factory import BASE_ARGS, BrowserSpec
    from pobatch.corelib.browser.local_session import LocalBrowserSession

    # Chromium keeps a page it leaves in its back/forward cache, hanging request and connection included:
    # six such pages take all six connections per host and the next page load stalls (seen here, Chromium
    # 156). The browser factory turns that cache off (docs/design.md, "Pages judged by their content").
    assert "BackForwardCache" in next(a for a in BASE_ARGS if a.startswith("--disable-features="))
    sc = scenario([{"id": k, "hang": k, "attachments": [{"name": "a.pdf"}]} for k in HANG_KINDS] + [{"id": "plain"}])
    with DemoPortal(sc).start() as portal:
        spec = BrowserSpec(user_data_dir=str(tmp_path / "profile"), local_only=True, page_load_timeout=30,
                           page_load_strategy="eager")  # get() returns at DOMContentLoaded, not at load
        with LocalBrowserSession(spec) as session:
            d = session.driver
            sign_in_browser(d, portal)
            for kind in HANG_KINDS:
                d.get(portal.po_url(kind))
                assert "Purchase Order #" + kind in d.title
                wait_for(lambda: portal.hangs_in_flight() == 1, 10.0, f"the {kind} request to hang", 0.02)
                if kind == "longpoll":
                    wait_for(lambda: d.execute_script("return document.readyState") == "complete", 10.0,
                             "the load event beside a long-poll")
                else:  # the hanging request is in flight and unanswered: the load event cannot have fired
                    assert d.execute_script("return document.readyState") == "interactive", kind
                assert portal.hangs_in_flight() == 1
                d.get(portal.po_url("plain"))  # leaving the page cancels the request: the portal lets go
                wait_for(lambda: portal.hangs_in_flight() == 0, 10.0, f"the {kind} hold to end", 0.02)
            assert portal.hang_requests() == {k: 1 for k in HANG_KINDS}


def sign_in_browser(d, portal: DemoPortal) -> None:
    """Sign in on the demo portal's own form, as a person would."""
    from selenium.webdriver.common.by import By

    d.get(portal.base_url + "/sessions/new")
    d.find_element(By.ID, "user_email").send_keys("buyer@example.com")
    d.find_element(By.ID, "user_password").send_keys(DEMO_PASSWORD)
    d.find_element(By.ID, "new_session").submit()
    wait_for(lambda: "/sessions" not in d.current_url, 10.0, "the sign-in")


def test_a_head_after_a_429_tells_its_retry_after_without_using_up_the_fault_list() -> None:
    """Clients read a 429's Retry-After with a HEAD of the same page (Navigation Timing has no headers);
    a real rate limiter answers it alike, so the demo must too, or every 429 looks like 'no Retry-After'."""
    import http.client

    sc = scenario([{"id": "7", "faults": {"page": ["http429", "ok"]}, "retry_after_seconds": 2,
                    "attachments": [{"name": "a.pdf"}]}])
    with DemoPortal(sc).start() as portal:
        token = sign_in(portal)

        def ask(method: str) -> http.client.HTTPResponse:
            conn = http.client.HTTPConnection("127.0.0.1", portal.port, timeout=10)
            conn.request(method, "/order_headers/7", headers={"Cookie": f"_coupa_session={token}"})
            resp = conn.getresponse()
            resp.read()
            conn.close()
            return resp

        assert ask("HEAD").status == 200  # nothing served yet
        assert ask("GET").status == 429
        head = ask("HEAD")
        assert (head.status, head.getheader("Retry-After")) == (429, "2")
        assert ask("GET").status == 200  # the HEAD did not use up the fault list
        assert ask("HEAD").status == 200
