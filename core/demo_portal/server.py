"""The demo portal's HTTP server: Coupa's page shapes on 127.0.0.1, driven by a seeded scenario.

A real server (stdlib ThreadingHTTPServer) so clients meet real sockets: real latency, responses that
stop half-way, connections dropped without an answer, stalls. It keeps score (page hits, complete
downloads) so tests can check what a client really fetched. Every wait in a handler is a wait on the
stop event, so stop() returns promptly even while a response is stalled.

It also serves what an unfamiliar portal throws at a client (scenario.py lists the shapes): pages in a
second markup, attachment lists fetched by script from `/order_headers/<id>/attachments.json`, proxy
and bare error pages, redirects, and an identity provider's interstitial on a second listener bound to
another loopback address (`sso_host`, 127.0.0.2 by default), so that the browser leaves the portal's host.
The same listener plays the identity provider of a single sign-on refresh (session.sso_refresh_every):
it checks the portal's request, issues a single-use ticket and sends the browser back to the portal's
`/saml/acs` or `/sso/callback`, which checks that ticket before it sets a fresh session. Sub-resources
that never answer (`/hang/...`) wait on the socket and the stop event, so they never hold up stop().

One file, over 400 lines, on purpose: the request handlers read and count DemoPortal's own state under
its lock (about twenty of its attributes); apart, each would import the other.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import re
import secrets
import select
import socket
import threading
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from pobatch.core.demo_portal import pages, variant_pages
from pobatch.core.demo_portal.scenario import (
    MARKUPS,
    SSO_BOUNCES,
    AttachmentEntry,
    Scenario,
    ScenarioError,
    draw_ms,
    load_scenario,
    pick_fault,
    sample_scenario_path,
)
from pobatch.core.sites.demo import DEMO_PASSWORD  # the portal's one password, as the demo site knows it

log = logging.getLogger(__name__)

SESSION_COOKIE = "_coupa_session"
SESSION_MAX_AGE = 86400  # persistent: Chromium writes it to the profile's Cookies file
CHUNK = 16 * 1024
_PO_RE = re.compile(r"^/order_headers/([^/]+)/?$")
_LIST_RE = re.compile(r"^/order_headers/([^/]+)/attachments\.json$")  # the list a delayed page fetches
_REQ_RE = re.compile(r"^/(?:requisition_headers|requisitions)/([^/]+)/?$")  # Coupa's, the variant's
_FILE_RE = re.compile(r"^/attachment_files/([^/]+)/?$")
_ATT_RE = re.compile(r"^/attachments/([^/]+)/(raw|popup|inline|attachment_file)(?:/.*)?$")
_VFILE_RE = re.compile(r"^/files/([^/]+)(?:/(window|view|content)(?:/.*)?)?/?$")  # the variant's file URLs
_INLINE = ("inline", "attachment_file", "view", "content")  # served without Content-Disposition
_HANG_RE = re.compile(r"^/hang/(img|js|frame|poll)/([^/]+)$")
_HANG_KIND = {"img": "image", "js": "async_script", "frame": "iframe", "poll": "longpoll"}
HANG_SECONDS = 600.0  # the longest a /hang/ request is held (the client leaving or stop() ends it sooner)
SSO_TICKET_SECONDS = 60.0  # an unused SSO request or ticket is refused after this
_SSO_RETURN_PATHS = ("/saml/acs", "/sso/callback")  # where the identity provider sends the browser back
_MARKUP_PAGES: dict[str, ModuleType] = {"coupa": pages, "variant": variant_pages}
_OPEN_PATHS = ("/sessions/new", "/sessions", "/favicon.ico")
_CONTENT_TYPES = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "msg": "application/vnd.ms-outlook",
    "eml": "message/rfc822",
}


def content_disposition(name: str) -> str:
    """RFC 6266: an ASCII fallback plus the exact UTF-8 name; the name is served as given, unsanitised."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    ascii_name = re.sub(r'["\\\x00-\x1f\x7f]', "_", ascii_name) or "download"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def content_type(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return _CONTENT_TYPES.get(ext, "application/octet-stream")


@dataclass
class _Session:
    email: str
    requests: int = 0
    created: float = 0.0
    epoch: int = 0  # the SSO epoch it was made in; it ends when the portal's epoch moves on


@dataclass
class _SsoGrant:
    """A request the portal sent to the identity provider, or a ticket the provider issued: single use."""

    email: str
    issued: float  # time.monotonic() when made
    bounce_started: float | None = None  # a ticket: when the portal sent the browser away (None: a person signed in)


@dataclass
class _SsoState:
    """The portal's single sign-on bookkeeping, shared by portals that share sessions."""

    epoch: int = 0
    answered: int = 0  # PO page requests answered in this epoch
    requests: dict[str, _SsoGrant] | None = None
    tickets: dict[str, _SsoGrant] | None = None

    def __post_init__(self) -> None:
        self.requests = {} if self.requests is None else self.requests
        self.tickets = {} if self.tickets is None else self.tickets


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    portal: "DemoPortal"

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("demo portal: error while serving %s", client_address, exc_info=True)


class _TrackedHandler(BaseHTTPRequestHandler):
    """Every connection is known to the portal while it is open, so stop() can close the idle
    keep-alive ones instead of waiting out their timeout."""

    protocol_version = "HTTP/1.1"
    timeout = 120  # an idle keep-alive connection is closed after this
    server: _Server

    @property
    def portal(self) -> "DemoPortal":
        return self.server.portal

    def setup(self) -> None:
        super().setup()
        self.portal._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.portal._untrack(self.connection)


class _Handler(_TrackedHandler):
    server_version = "DemoCoupa/1.0"

    # -- plumbing ---------------------------------------------------------------------------------
    @property
    def pages(self) -> ModuleType:
        """The page module of the portal's current markup (pages or variant_pages)."""
        return _MARKUP_PAGES[self.portal.markup]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("demo portal %s: %s", self.address_string(), format % args)

    def version_string(self) -> str:
        """The Server header: the portal's own, or a proxy's when a proxy answers instead of the portal."""
        return getattr(self, "_server_as", "") or super().version_string()

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_HEAD(self) -> None:
        """A HEAD of a PO page, as a client asks a 429 page for its Retry-After: the headers the PO's
        last answer had, without consuming its fault list and without a body. Any other HEAD: 405."""
        portal = self.portal
        m = _PO_RE.match(urlsplit(self.path).path)
        po = portal.scenario.po(unquote(m.group(1))) if m else None
        if po is None:
            self.send_response(405)
            self.send_header("Allow", "GET, POST")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with portal._lock:
            served = portal._page_fault_n[po.id]
        last = pick_fault(po.page_faults, served - 1) if served else "ok"
        self.send_response(429 if last == "http429" else 200)
        if last == "http429":
            self.send_header("Retry-After", str(po.retry_after_seconds))
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _pause(self, seconds: float) -> bool:
        """Sleep unless the portal is stopping; False means: stop now and close the connection."""
        if seconds > 0:
            stopped = self.portal._stopping.wait(seconds)
        else:
            stopped = self.portal._stopping.is_set()
        if stopped:
            self.close_connection = True
        return not stopped

    def _stall(self) -> bool:
        """Hold the response for stall_seconds (or until stop()); counted so tests can wait for it."""
        portal = self.portal
        with portal._lock:
            portal._stalls_in_flight += 1
        try:
            return self._pause(portal.scenario.stall_seconds)
        finally:
            with portal._lock:
                portal._stalls_in_flight -= 1

    def _abort(self) -> None:
        """Close the connection without (the rest of) a response."""
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass

    def _start(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if "Cache-Control" not in headers:
            self.send_header("Cache-Control", "no-store")  # every request must reach the portal's counters
        if self._rotate_from:
            new = self.portal._rotate(self._rotate_from)
            self._rotate_from = None
            if new:
                self.send_header("Set-Cookie", _cookie(new))
        self.end_headers()

    def _send(self, status: int, body: bytes | str, ctype: str = "text/html; charset=utf-8",
              headers: dict[str, str] | None = None) -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self._start(status, {"Content-Type": ctype, "Content-Length": str(len(data)), **(headers or {})})
        self.wfile.write(data)

    def _redirect(self, location: str, headers: dict[str, str] | None = None) -> None:
        self._start(302, {"Location": location, "Content-Length": "0", **(headers or {})})

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    # -- routing ----------------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        self._rotate_from: str | None = None
        self._server_as = ""
        url = urlsplit(self.path)
        path = url.path
        try:
            if path == "/favicon.ico":
                return self._send(204, b"", "image/x-icon")
            if path.startswith("/__demo__/"):
                return self._demo_api(method, path, url.query)
            if path.startswith("/assets/") and self.portal.scenario.page_assets:
                return self._asset(path[len("/assets/"):])
            if path == "/sessions/new":
                return_to = _safe_return_to(parse_qs(url.query).get("return_to", [""])[0])
                return self._send(200, self.pages.login_page(return_to))
            if path == "/sessions":
                if method == "POST":
                    return self._login()
                return self._redirect("/sessions/new")
            if path in _SSO_RETURN_PATHS:
                return self._sso_return(method, path, url.query)
            if m := _HANG_RE.match(path):
                return self._hang(_HANG_KIND[m.group(1)])
            state, token = self._authenticate(po_page=bool(_PO_RE.match(path)))
            if state != "ok":
                self._body()
                target = path + (f"?{url.query}" if url.query else "")
                if state == "ended":  # the portal's session ended: its identity provider decides
                    return self._redirect(self.portal._sso_redirect(token, self.portal.base_url + target))
                return self._redirect("/sessions/new?return_to=" + quote(target, safe=""))
            if method != "GET":
                self._body()
                return self._send(404, self.pages.not_found_page())
            if path == "/":
                return self._send(200, self.pages.home_page(self.portal.scenario.pos))
            if m := _PO_RE.match(path):
                return self._po_page(unquote(m.group(1)), path)
            if m := _LIST_RE.match(path):
                return self._attachment_list(unquote(m.group(1)))
            if m := _REQ_RE.match(path):
                return self._requisition_page(unquote(m.group(1)), path)
            if m := _FILE_RE.match(path):
                return self._attachment(m.group(1), path, inline=False)
            if m := _ATT_RE.match(path) or _VFILE_RE.match(path):
                token, what = m.group(1), m.group(2) or ""
                if what in ("popup", "window"):
                    return self._popup(token, path)
                return self._attachment(token, path, inline=(what in _INLINE))
            return self._send(404, self.pages.not_found_page())
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True  # the client went away: normal for a cancelled download

    # -- login and sessions -----------------------------------------------------------------------
    def _login(self) -> None:
        form = parse_qs(self._body().decode("utf-8", "replace"))
        email = form.get("user[login]", [""])[0].strip()
        password = form.get("user[password]", [""])[0]
        return_to = _safe_return_to(form.get("return_to", [""])[0])
        if not email or password != DEMO_PASSWORD:
            return self._send(200, self.pages.login_page(return_to, "Invalid email or password"))
        token = self.portal._new_session(email)
        log.info("demo portal: %s signed in", email)
        self._redirect(return_to or "/", {"Set-Cookie": _cookie(token)})

    def _authenticate(self, po_page: bool) -> tuple[str, str]:
        """("ok" | "ended" | "none", the cookie's token): "ended" is a session the SSO refresh ended."""
        token = ""
        try:
            morsel = SimpleCookie(self.headers.get("Cookie", "")).get(SESSION_COOKIE)
            token = morsel.value if morsel else ""
        except CookieError:
            pass
        state = self.portal._use_session(token, po_page) if token else "none"
        if state == "ok" and self.portal.scenario.session.rotate_token:
            self._rotate_from = token  # committed when the response starts: a dropped answer keeps the old one
        return state, token

    def _sso_return(self, method: str, path: str, query: str) -> None:
        """The identity provider sent the browser back: a fresh session for a ticket it issued, once."""
        if path == "/saml/acs":
            if method != "POST":
                self._body()
                return self._send(405, self.pages.not_found_page(), headers={"Allow": "POST"})
            form = parse_qs(self._body().decode("utf-8", "replace"))
            ticket = _saml_ticket(form.get("SAMLResponse", [""])[0])
            return_to = form.get("RelayState", [""])[0]
        else:
            self._body()
            params = parse_qs(query)
            ticket, return_to = params.get("ticket", [""])[0], params.get("return_to", [""])[0]
        email = self.portal._redeem_ticket(ticket)
        if email is None:
            return self._send(403, pages.sso_failed_page())
        token = self.portal._new_session(email)
        log.info("demo portal: %s back from the identity provider", email)
        self._redirect(_portal_path(return_to, self.portal.base_url), {"Set-Cookie": _cookie(token)})

    def _hang(self, kind: str) -> None:
        """Never answer: wait until the client goes away, the portal stops, or HANG_SECONDS pass.

        select() on the socket wakes when the client closes it (a browser that navigates away cancels
        the request) and when stop() shuts it down, so no thread outlives its client or the portal."""
        portal = self.portal
        with portal._lock:
            portal._hang_requests[kind] += 1
            portal._hangs_in_flight += 1
        self.close_connection = True  # nothing was answered: the connection cannot be reused
        deadline = time.monotonic() + HANG_SECONDS
        try:
            while not portal._stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    readable, _, _ = select.select([self.connection], [], [], min(left, 1.0))
                except (OSError, ValueError):  # the socket is already closed
                    break
                if readable:  # the client closed it (or sent something we will not read)
                    break
        finally:
            with portal._lock:
                portal._hangs_in_flight -= 1

    # -- pages ------------------------------------------------------------------------------------
    def _po_page(self, po_id: str, path: str) -> None:
        portal = self.portal
        scenario = portal.scenario  # one revision for the whole answer, even while revise() runs
        po = scenario.po(po_id)
        with portal._lock:
            portal._page_hits[po_id] += 1
            fault = pick_fault(po.page_faults, portal._page_fault_n[po_id]) if po else "ok"
            portal._page_fault_n[po_id] += 1
        if not self._pause(portal._latency("page", path)):
            return
        if fault == "drop":
            return self._abort()
        if fault == "http500":
            return self._send(500, self.pages.server_error_page())
        if fault == "stall" and not self._stall():
            return
        if fault != "ok" and po is not None and self._page_fault(po.id, fault):
            return
        if po is None or po.missing:
            return self._send(404, self.pages.not_found_page())
        if po.forbidden:
            return self._send(403, self.pages.not_authorized_page())
        delayed = None
        if po.attachments_delay_ms is not None:
            delayed = pages.DelayedList(f"/order_headers/{quote(po.id, safe='')}/attachments.json", po.spinner)
        html = self.pages.po_page(po, scenario.entries(po.id, "po"), delayed)
        if scenario.page_assets:
            html = pages.with_assets(html)
        if po.hang:
            with portal._lock:
                portal._hang_serial += 1
                n = portal._hang_serial
            html = html.replace("</body>", pages.hang_html(po.hang, po.id, n) + "\n</body>", 1)
        self._send(200, html)

    def _asset(self, name: str) -> None:
        """A static image of a tenant's pages (scenario "page_assets"): public, cached for a year."""
        data = pages.asset(name)
        if data is None:
            return self._send(404, self.pages.not_found_page())
        self._send(200, data, "image/png", headers={"Cache-Control": "public, max-age=31536000, immutable"})

    def _page_fault(self, po_id: str, fault: str) -> bool:
        """Answer a PO page with the shapes of issue 13 (proxies, redirects, ...); False: not one of them."""
        po = self.portal.scenario.po(po_id)
        assert po is not None
        if fault == "http500_bare":
            self._send(500, pages.bare_server_error_page())
        elif fault in ("http502", "http503"):
            self._server_as = "nginx/1.24.0"
            self._send(int(fault[4:]), pages.proxy_error_page(int(fault[4:])))
        elif fault == "http429":
            self._send(429, pages.too_many_requests_page(), headers={"Retry-After": str(po.retry_after_seconds)})
        elif fault == "maintenance":
            self._send(200, pages.maintenance_page())
        elif fault == "http404_bare":
            self._send(404, pages.bare_not_found_page())
        elif fault == "redirect_other_po":
            with self.portal._lock:
                self.portal._redirects[po.redirect_to or ""] += 1
            self._redirect(f"/order_headers/{quote(po.redirect_to or '', safe='')}")
        elif fault == "redirect_dashboard":
            self._redirect("/")
        elif fault == "sso_interstitial":
            back = quote(f"{self.portal.base_url}/order_headers/{quote(po_id, safe='')}", safe="")
            self._redirect(f"{self.portal.sso_base_url}/idp/authorize?client=pobatch-demo&return_to={back}")
        else:
            return False
        return True

    def _attachment_list(self, po_id: str) -> None:
        """The JSON a delayed PO page fetches: its list, drawn by the page's script once it arrives."""
        portal = self.portal
        scenario = portal.scenario  # one revision for the whole answer
        po = scenario.po(po_id)
        with portal._lock:
            portal._list_hits[po_id] += 1
        if po is None or po.missing or po.forbidden or po.attachments_delay_ms is None:
            return self._send(404, json.dumps({"error": "no such list"}), "application/json")
        if not self._pause(po.attachments_delay_ms / 1000.0):
            return
        entries = scenario.entries(po.id, "po")
        body = {"po": po.id, "html": self.pages.list_html(entries),
                "attachments": [{"name": e.spec.name, "kind": e.spec.kind, "url": self.pages.page_url(e)}
                                for e in entries]}
        self._send(200, json.dumps(body, ensure_ascii=False), "application/json; charset=utf-8")

    def _requisition_page(self, rid: str, path: str) -> None:
        portal = self.portal
        with portal._lock:
            portal._requisition_hits[rid] += 1
        if not self._pause(portal._latency("page", path)):
            return
        scenario = portal.scenario  # one revision for the whole answer
        found = scenario.requisition(rid)
        if not found:
            return self._send(404, self.pages.not_found_page())
        po, req = found
        html = self.pages.requisition_page(po, req, scenario.entries(po.id, "requisition"))
        self._send(200, pages.with_assets(html) if scenario.page_assets else html)

    def _popup(self, token: str, path: str) -> None:
        entry = self.portal.scenario.entry_by_token(token)
        if not self._pause(self.portal._latency("page", path)):
            return
        if entry is None:
            return self._send(404, self.pages.not_found_page())
        self._send(200, self.pages.popup_page(self.pages.file_url(entry)))

    def _attachment(self, token: str, path: str, inline: bool) -> None:
        portal = self.portal
        scenario = portal.scenario  # one revision for the whole answer
        entry: AttachmentEntry | None = scenario.entry_by_token(token)
        if entry is None:
            return self._send(404, self.pages.not_found_page())
        with portal._lock:
            fault = pick_fault(entry.spec.faults, portal._attachment_fault_n[token])
            portal._attachment_fault_n[token] += 1
            portal._attachment_requests[entry.counter_key] += 1
        latency = portal._latency("attachment", path)
        if entry.spec.latency_ms is not None:
            latency = entry.spec.latency_ms / 1000.0
        if not self._pause(latency / 2):  # half before the first byte, half spread over the chunks
            return
        if fault == "http500":
            return self._send(500, self.pages.server_error_page())
        if fault == "html200":  # a missing file answered as a page, with 200
            return self._send(200, self.pages.not_available_page())
        data = scenario.file_bytes(entry)
        headers = {"Content-Type": content_type(entry.spec.name), "Content-Length": str(len(data))}
        if not inline:
            headers["Content-Disposition"] = content_disposition(entry.spec.name)
        self._start(200, headers)
        complete = fault not in ("drop_mid", "stall_mid")
        limit = len(data) if complete else len(data) // 2
        offsets = range(0, limit, CHUNK)
        for off in offsets:
            if not self._pause(latency / 2 / len(offsets)):
                return
            last = complete and off + CHUNK >= limit
            if last:
                # Counted before the last bytes go out, so a client that holds the whole file always
                # finds it counted; taken back if the client is gone before they are sent.
                self._count_download(entry, +1)
            try:
                self.wfile.write(data[off:min(off + CHUNK, limit)])
                self.wfile.flush()
            except OSError:
                if last:
                    self._count_download(entry, -1)
                raise
        if fault == "drop_mid":
            return self._abort()
        if fault == "stall_mid":
            self._stall()
            return self._abort()

    def _count_download(self, entry: AttachmentEntry, delta: int) -> None:
        with self.portal._lock:
            counts = self.portal._download_counts
            counts[entry.counter_key] += delta
            if counts[entry.counter_key] <= 0:
                del counts[entry.counter_key]

    # -- test helpers -----------------------------------------------------------------------------
    def _demo_api(self, method: str, path: str, query: str = "") -> None:
        if method == "POST":
            self._body()
        if path == "/__demo__/state" and method == "GET":
            return self._send(200, json.dumps(self.portal.state(), ensure_ascii=False), "application/json")
        if path == "/__demo__/reset" and method == "POST":
            self.portal.reset()
            return self._send(200, json.dumps({"ok": True}), "application/json")
        if path == "/__demo__/revise" and method == "POST":
            return self._revise(parse_qs(query).get("to", [""])[0])
        self._send(404, json.dumps({"error": "unknown demo endpoint"}), "application/json")

    def _revise(self, to: str) -> None:
        """POST /__demo__/revise?to=N: a portal in another process moves to revision N (loopback only: it
        changes what every client sees)."""
        if not _loopback(self.client_address[0]):
            return self._send(403, json.dumps({"error": "only from this machine"}), "application/json")
        count = self.portal.scenario.revision_count
        try:
            self.portal.revise(int(to))
        except (ValueError, ScenarioError):
            return self._send(400, json.dumps({"error": f"to: expected a revision from 0 to {count}, got {to!r}"}),
                              "application/json")
        self._send(200, json.dumps({"ok": True, "revision": self.portal.revision, "revision_count": count}),
                   "application/json")


class _SsoHandler(_TrackedHandler):
    """The identity provider's host. `/idp/sso` (and `/idp/step2`, `/idp/login`) serve the single
    sign-on refresh; every other GET answers the "Continue to sign in" interstitial of sso_interstitial."""

    server_version = "DemoIdP/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("demo identity provider %s: %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        try:
            if url.path == "/favicon.ico":  # a browser asks every new origin for one: not counted
                return self._answer(204, b"")
            with self.portal._lock:
                self.portal._sso_hits += 1
            params = parse_qs(url.query)
            if url.path == "/idp/sso" and method == "GET":
                return self._sso(params.get("request", [""])[0], params.get("return_to", [""])[0])
            if url.path == "/idp/step2" and method == "GET":
                return self._answer(302, b"", {"Location": self._callback_url(
                    params.get("ticket", [""])[0], params.get("return_to", [""])[0])})
            if url.path == "/idp/login" and method == "POST":
                return self._password(parse_qs(body.decode("utf-8", "replace")))
            return self._html(pages.sso_interstitial_page(f"{self.portal.base_url}/sessions/new"))
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    def _sso(self, request_id: str, return_to: str) -> None:
        """Send the browser straight back when the portal's request is genuine; else a person signs in."""
        portal = self.portal
        via = portal.scenario.session.sso_via
        grant = portal._take_sso_request(request_id)
        if grant is None or via not in SSO_BOUNCES:
            return self._html(pages.sso_password_page("/idp/login", return_to))
        ticket = portal._issue_ticket(grant.email, bounce_started=grant.issued)
        if via == "post_form":
            return self._html(pages.sso_post_form_page(f"{portal.base_url}/saml/acs",
                                                       _saml_response(ticket, grant.email), return_to))
        if via == "script":
            return self._html(pages.sso_script_page(self._callback_url(ticket, return_to)))
        if via == "meta":
            return self._html(pages.sso_meta_page(self._callback_url(ticket, return_to)))
        self._answer(302, b"", {"Location": f"/idp/step2?ticket={quote(ticket, safe='')}"
                                            f"&return_to={quote(return_to, safe='')}"})

    def _password(self, form: dict[str, list[str]]) -> None:
        """A person signed in at the provider: back to the portal like post_form."""
        account = form.get("account", [""])[0].strip()
        return_to = form.get("return_to", [""])[0]
        if not account or form.get("password", [""])[0] != DEMO_PASSWORD:
            return self._html(pages.sso_password_page("/idp/login", return_to, "Wrong account name or password"))
        ticket = self.portal._issue_ticket(account, bounce_started=None)
        self._html(pages.sso_post_form_page(f"{self.portal.base_url}/saml/acs", _saml_response(ticket, account),
                                            return_to))

    def _callback_url(self, ticket: str, return_to: str) -> str:
        return (f"{self.portal.base_url}/sso/callback?ticket={quote(ticket, safe='')}"
                f"&return_to={quote(return_to, safe='')}")

    def _html(self, html: str) -> None:
        self._answer(200, html.encode("utf-8"), {"Content-Type": "text/html; charset=utf-8"})

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            for k, v in {"Content-Length": str(len(body)), "Cache-Control": "no-store", **(headers or {})}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True


def _saml_response(ticket: str, email: str) -> str:
    """A SAMLResponse as the HTTP-POST binding carries it (base64 XML); only its ID is ever trusted."""
    xml = ('<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
           f'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{ticket}" Version="2.0">'
           f"<saml:Assertion><saml:Subject><saml:NameID>{escape_xml(email)}</saml:NameID></saml:Subject>"
           "</saml:Assertion></samlp:Response>")
    return base64.b64encode(xml.encode("utf-8")).decode("ascii")


def _saml_ticket(saml_response: str) -> str:
    """The response's ID (the ticket the portal checks); "" for anything that is not one."""
    try:
        xml = base64.b64decode(saml_response, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return ""
    m = re.search(r'<samlp:Response\b[^>]*\bID="([^"]+)"', xml)
    return m.group(1) if m else ""


def escape_xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _portal_path(value: str, base_url: str) -> str:
    """Where to send a browser back: a path on this portal, from a path or a URL of this portal's own
    origin; anything else (another host or port, a scheme-relative URL, control characters) is "/"."""
    if value.startswith(base_url + "/"):
        value = value[len(base_url):]
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "/"
    return _safe_return_to(value)


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _cookie(token: str) -> str:
    return f"{SESSION_COOKIE}={token}; Path=/; Max-Age={SESSION_MAX_AGE}; HttpOnly; SameSite=Lax"


def _safe_return_to(value: str) -> str:
    """Only a path on this portal: never an open redirect to another host."""
    if value.startswith("/") and not value.startswith("//") and not value.startswith("/\\"):
        return value
    return "/"


class DemoPortal:
    """The demo portal: start() it (or use it as a context manager), point a client at base_url."""

    def __init__(self, scenario: Scenario | str | Path | None = None, host: str = "127.0.0.1", port: int = 0,
                 markup: str | None = None, sso_host: str = "127.0.0.2", sso: bool | None = None,
                 share_sessions_with: "DemoPortal | None" = None, revision: int | None = None) -> None:
        """`markup` overrides the scenario's; `sso_host` is where the sso_interstitial fault sends the
        browser (another host than `host`; it listens only when the scenario uses that fault or `sso`
        is true); `share_sessions_with` makes a session signed in on that portal valid here too (the
        cookie is per host, not per port, so one signed-in profile serves both); `revision` serves the
        scenario at that revision (default: the scenario's own, 0 for one loaded from a file)."""
        if scenario is None:
            scenario = load_scenario(sample_scenario_path())
        elif not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario)
        if revision is not None:
            scenario = scenario.at_revision(revision)
        self.scenario: Scenario = scenario
        self.host = host
        self._port = port
        self._markup = scenario.markup
        if markup is not None:
            self.markup = markup
        self.sso_host = sso_host
        self._sso_wanted = sso if sso is not None else (scenario.session.sso_refresh_every is not None or any(
            "sso_interstitial" in po.page_faults for po in scenario.pos))
        if self._sso_wanted and sso_host == host:
            raise ValueError("the identity provider must listen on another host than the portal")
        self._httpd: _Server | None = None
        self._sso: _Server | None = None
        self._thread: threading.Thread | None = None
        self._sso_thread: threading.Thread | None = None
        self._serving = False
        self._stopping = threading.Event()
        self._life = threading.Lock()
        self._lock = share_sessions_with._lock if share_sessions_with else threading.Lock()
        self._sessions: dict[str, _Session] = share_sessions_with._sessions if share_sessions_with else {}
        self._sso_state: _SsoState = share_sessions_with._sso_state if share_sessions_with else _SsoState()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._stalls_in_flight = 0
        self._hangs_in_flight = 0
        self._reset_counters()

    @property
    def markup(self) -> str:
        """The markup pages are drawn with, "coupa" or "variant"; settable while serving (sessions and counters stay), e.g. to show a
        profile signed in on Coupa's markup the variant's pages."""
        return self._markup

    @markup.setter
    def markup(self, value: str) -> None:
        if value not in MARKUPS:
            raise ValueError(f"unknown markup {value!r}; expected one of {list(MARKUPS)}")
        self._markup = value

    @property
    def revision(self) -> int:
        """The scenario revision being served (0: as written)."""
        return self.scenario.revision

    def revise(self, n: int) -> None:
        """Serve revision n from the next request on, e.g. between a run and its `--refresh`. Sessions,
        counters and fault positions stay (reset() clears the last two); held attachments keep their
        URLs, and the URLs of removed ones answer 404."""
        self.scenario = self.scenario.at_revision(n)
        log.info("demo portal: now serving revision %d of %d", n, self.scenario.revision_count)

    # -- life cycle -------------------------------------------------------------------------------
    def _bind(self) -> _Server:
        with self._life:
            if self._httpd is None:
                if self._stopping.is_set():
                    raise RuntimeError("this DemoPortal was stopped; create a new one")
                httpd = _Server((self.host, self._port), _Handler)
                httpd.portal = self
                if self._sso_wanted:
                    try:
                        sso = _Server((self.sso_host, 0), _SsoHandler)
                    except OSError:
                        httpd.server_close()
                        raise
                    sso.portal = self
                    self._sso = sso
                self._httpd = httpd
                log.debug("demo portal bound to %s", self.base_url)
            return self._httpd

    def _start_sso(self) -> None:
        """The identity provider's host serves in its own daemon thread, whoever serves the portal."""
        with self._life:
            if self._sso is not None and self._sso_thread is None:
                self._sso_thread = threading.Thread(target=self._sso.serve_forever, kwargs={"poll_interval": 0.05},
                                                    name=f"demo-idp-{self._sso.server_address[1]}", daemon=True)
                self._sso_thread.start()

    def start(self) -> "DemoPortal":
        """Serve in a daemon thread; returns self so `with DemoPortal().start() as p:` reads naturally."""
        if self._stopping.is_set():
            raise RuntimeError("this DemoPortal was stopped; create a new one")
        httpd = self._bind()
        with self._life:
            if self._thread is None:
                self._serving = True
                self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                                name=f"demo-portal-{httpd.server_address[1]}", daemon=True)
                self._thread.start()
        self._start_sso()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until stop() (from another thread) or Ctrl+C."""
        httpd = self._bind()
        with self._life:
            if self._thread is not None or self._serving:
                raise RuntimeError("the demo portal is already serving")
            self._serving = True
        self._start_sso()
        try:
            httpd.serve_forever(poll_interval=0.05)
        finally:
            self.stop()

    def stop(self) -> None:
        """Shut down, close every socket, join the threads. Idempotent; stalled responses do not block it."""
        with self._life:
            if self._stopping.is_set():
                return
            self._stopping.set()  # wakes every latency, stall and mid-response pause
            httpd = self._httpd
        if httpd is None:
            return
        if self._serving:
            httpd.shutdown()  # returns once the accept loop has left
        httpd.server_close()
        if self._sso is not None:
            if self._sso_thread is not None:
                self._sso.shutdown()
            self._sso.server_close()
        with self._lock:
            conns = dict(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # wakes handlers blocked reading the next keep-alive request
            except OSError:
                pass
        for thread in (self._thread, self._sso_thread):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=5)
        deadline = time.monotonic() + 5
        for t in conns.values():
            if t is not threading.current_thread():
                t.join(timeout=max(0.0, deadline - time.monotonic()))
        log.debug("demo portal at %s stopped", self.base_url)

    def __enter__(self) -> "DemoPortal":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- addresses --------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the demo portal has no port before start()")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def sso_base_url(self) -> str:
        """The identity provider's origin (another host than base_url), e.g. http://127.0.0.2:41234.

        It exists when the scenario uses the sso_interstitial page fault or session.sso_refresh_every
        (or DemoPortal(sso=True)). A
        test browser whose host-resolver rules map every host but 127.0.0.1 to NOTFOUND cannot load it:
        Chromium applies those rules to IP literals too, so it needs `EXCLUDE <sso_host>` as well."""
        if self._sso is None:
            raise RuntimeError("this demo portal has no identity provider host: the scenario uses no "
                               "sso_interstitial fault (or pass sso=True), or it is not started")
        return f"http://{self.sso_host}:{self._sso.server_address[1]}"

    def po_url(self, po_id: str) -> str:
        """The PO page's URL; accepts 'PO100001' / 'pm 100001' forms too, as the portal's clients do."""
        po_id = re.sub(r"^\s*(?:PO|PM)[\s#:_-]*", "", str(po_id), flags=re.IGNORECASE).strip()
        return f"{self.base_url}/order_headers/{quote(po_id, safe='')}"

    # -- the truth and the score ------------------------------------------------------------------
    def expected_outcomes(self) -> dict[str, tuple[str, str]]:
        return self.scenario.expected_outcomes()

    def expected_files(self, po_id: str, refreshed_from: int | None = None) -> dict[str, bytes]:
        """At the served revision; `refreshed_from`: the folder after a refresh from that revision."""
        return self.scenario.expected_files(po_id, refreshed_from)

    def download_counts(self) -> dict[str, int]:
        """'<po_id>/<name>' -> complete successful attachment responses (a repeated name gets ' (1)')."""
        with self._lock:
            return dict(self._download_counts)

    def attachment_requests(self) -> dict[str, int]:
        """'<po_id>/<name>' -> every request for the file, failed and incomplete ones included."""
        with self._lock:
            return dict(self._attachment_requests)

    def downloads_of(self, po_id: str, every_request: bool = False) -> dict[str, int]:
        """Served name -> complete downloads of this PO's files (`every_request`: every request, failed
        and incomplete ones too): download_counts() for one PO, to show a refresh fetched only new files."""
        prefix = f"{po_id}/"
        with self._lock:
            table = self._attachment_requests if every_request else self._download_counts
            return {k[len(prefix):]: n for k, n in table.items() if k.startswith(prefix) and n}

    def page_hits(self, po_id: str) -> int:
        return self._count(self._page_hits, po_id)

    def stalls_in_flight(self) -> int:
        """Responses being held by a stall fault right now."""
        with self._lock:
            return self._stalls_in_flight

    def requisition_hits(self, rid: str) -> int:
        return self._count(self._requisition_hits, rid)

    def attachment_list_hits(self, po_id: str) -> int:
        """Requests for the JSON attachment list of a delayed PO page (not counted as page hits)."""
        return self._count(self._list_hits, po_id)

    def redirects_to(self, po_id: str) -> int:
        """redirect_other_po answers sent to this PO's page (each arrival counts in its page hits too)."""
        return self._count(self._redirects, po_id)

    def sso_hits(self) -> int:
        """Pages the identity provider's host answered (its favicon not counted)."""
        with self._lock:
            return self._sso_hits

    def sso_session_ends(self) -> int:
        """Times the SSO refresh ended the portal's session (sessions.sso_refresh_every)."""
        with self._lock:
            return self._sso_ends

    def end_sessions(self) -> None:
        """End every session now, as the portal's own single-sign-on refresh does: the next request of
        each goes through the identity provider (a scenario with session.sso_refresh_every only)."""
        if self.scenario.session.sso_refresh_every is None:
            raise ValueError("end_sessions: the scenario has no single-sign-on refresh (session.sso_refresh_every)")
        with self._lock:
            self._sso_state.epoch += 1
            self._sso_state.answered = 0
            self._sso_ends += 1

    def sso_redirects(self) -> int:
        """Requests answered with a 302 to the identity provider because their session had ended."""
        with self._lock:
            return self._sso_redirects

    def sso_refreshes(self) -> int:
        """Completed returns from the identity provider: a genuine ticket redeemed, a fresh session set."""
        with self._lock:
            return self._sso_refreshes

    def sso_rejected(self) -> int:
        """Tickets or SAMLResponses refused: never issued, already used, or too old."""
        with self._lock:
            return self._sso_rejected

    def sso_bounce_seconds(self) -> list[float]:
        """Per completed bounce without a person: seconds from the portal's 302 to the identity provider
        until the ticket came back (the server's own clock, whatever the client's load)."""
        with self._lock:
            return list(self._sso_bounces)

    def hang_requests(self) -> dict[str, int]:
        """kind ("image", "async_script", "iframe", "longpoll") -> /hang/ requests received."""
        with self._lock:
            return dict(self._hang_requests)

    def hangs_in_flight(self) -> int:
        """/hang/ requests being held open right now."""
        with self._lock:
            return self._hangs_in_flight

    def _count(self, table: dict[str, int], key: str) -> int:
        with self._lock:
            return table.get(key, 0)

    def expected_sha256(self, po_id: str, refreshed_from: int | None = None) -> dict[str, str]:
        return self.scenario.expected_sha256(po_id, refreshed_from)

    def match_by_bytes(self, po_id: str, saved: dict[str, bytes],
                       refreshed_from: int | None = None) -> dict[str, str | None]:
        """Saved name -> expected original name with the same bytes (None: bytes this PO never served)."""
        return self.scenario.match_by_bytes(po_id, saved, refreshed_from)

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "download_counts": dict(self._download_counts),
                "attachment_requests": dict(self._attachment_requests),
                "page_hits": dict(self._page_hits),
                "requisition_hits": dict(self._requisition_hits),
                "sessions": [{"email": s.email, "requests": s.requests} for s in self._sessions.values()],
                "stalls_in_flight": self._stalls_in_flight,
                "attachment_list_hits": dict(self._list_hits),
                "redirects_to": dict(self._redirects),
                "sso_hits": self._sso_hits,
                "sso_session_ends": self._sso_ends,
                "sso_redirects": self._sso_redirects,
                "sso_refreshes": self._sso_refreshes,
                "sso_rejected": self._sso_rejected,
                "hang_requests": dict(self._hang_requests),
                "hangs_in_flight": self._hangs_in_flight,
                "markup": self._markup,
                "revision": self.scenario.revision,
            }

    def reset(self) -> None:
        """Forget counters and fault positions (sessions stay): the scenario starts over, and so does
        the count of PO pages towards the next SSO refresh."""
        with self._lock:
            self._reset_counters()
            self._sso_state.answered = 0

    def _reset_counters(self) -> None:
        self._download_counts: Counter[str] = Counter()
        self._attachment_requests: Counter[str] = Counter()
        self._page_hits: Counter[str] = Counter()
        self._requisition_hits: Counter[str] = Counter()
        self._page_fault_n: Counter[str] = Counter()
        self._attachment_fault_n: Counter[str] = Counter()
        self._path_hits: Counter[str] = Counter()
        self._list_hits: Counter[str] = Counter()
        self._redirects: Counter[str] = Counter()
        self._sso_hits = 0
        self._sso_ends = 0
        self._sso_redirects = 0
        self._sso_refreshes = 0
        self._sso_rejected = 0
        self._sso_bounces: list[float] = []
        self._hang_requests: Counter[str] = Counter()
        self._hang_serial = 0

    # -- used by the handler ----------------------------------------------------------------------
    def _latency(self, what: str, path: str) -> float:
        """Seconds to wait for this request, reproducible from (seed, path, hit count)."""
        spec = self.scenario.latency.page_ms if what == "page" else self.scenario.latency.attachment_ms
        with self._lock:
            hit = self._path_hits[path]
            self._path_hits[path] += 1
        return draw_ms(spec, self.scenario.seed, path, hit) / 1000.0

    def _new_session(self, email: str) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._sessions[token] = _Session(email=email, created=time.time(), epoch=self._sso_state.epoch)
        return token

    def _use_session(self, token: str, po_page: bool = False) -> str:
        """Count one authenticated request: "ok"; "none" once the session is unknown or used up; "ended"
        when the SSO refresh ended it. A PO page request that finds sso_refresh_every PO pages answered
        since the last refresh ends every session at once (the epoch moves on), its own included."""
        limit = self.scenario.session.expire_after_requests
        every = self.scenario.session.sso_refresh_every
        with self._lock:
            s = self._sessions.get(token)
            if s is None:
                return "none"
            if limit is not None and s.requests >= limit:
                del self._sessions[token]
                return "none"
            sso = self._sso_state
            if every is not None:
                if s.epoch < sso.epoch:
                    return "ended"
                if po_page and sso.answered >= every:
                    sso.epoch += 1
                    sso.answered = 0
                    self._sso_ends += 1
                    return "ended"
                if po_page:
                    sso.answered += 1
            s.requests += 1
            return "ok"

    def _sso_redirect(self, token: str, return_to: str) -> str:
        """The identity provider's URL for a request whose session ended, with a request id of our own."""
        request_id = secrets.token_urlsafe(18)
        with self._lock:
            s = self._sessions.get(token)
            self._prune_sso_grants()
            self._sso_state.requests[request_id] = _SsoGrant(s.email if s else "", time.monotonic())
            self._sso_redirects += 1
        return f"{self.sso_base_url}/idp/sso?request={request_id}&return_to={quote(return_to, safe='')}"

    def _take_sso_request(self, request_id: str) -> _SsoGrant | None:
        """The portal's request, once: a replayed or made-up id gets None."""
        with self._lock:
            self._prune_sso_grants()
            return self._sso_state.requests.pop(request_id, None)

    def _issue_ticket(self, email: str, bounce_started: float | None) -> str:
        ticket = "_" + secrets.token_hex(20)
        with self._lock:
            self._sso_state.tickets[ticket] = _SsoGrant(email, time.monotonic(), bounce_started)
        return ticket

    def _redeem_ticket(self, ticket: str) -> str | None:
        """The account of a ticket the identity provider issued, once; None (and counted) otherwise."""
        with self._lock:
            self._prune_sso_grants()
            grant = self._sso_state.tickets.pop(ticket, None) if ticket else None
            if grant is None:
                self._sso_rejected += 1
                return None
            self._sso_refreshes += 1
            if grant.bounce_started is not None:
                self._sso_bounces.append(time.monotonic() - grant.bounce_started)
            return grant.email

    def _prune_sso_grants(self) -> None:
        """Forget requests and tickets older than SSO_TICKET_SECONDS (caller holds the lock)."""
        oldest = time.monotonic() - SSO_TICKET_SECONDS
        for table in (self._sso_state.requests, self._sso_state.tickets):
            assert table is not None
            for key in [k for k, g in table.items() if g.issued < oldest]:
                del table[key]

    def _rotate(self, old: str) -> str | None:
        """Move a session to a fresh token; the old one stops working at once."""
        with self._lock:
            s = self._sessions.pop(old, None)
            if s is None:
                return None
            new = secrets.token_urlsafe(24)
            self._sessions[new] = s
            return new

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections[conn] = threading.current_thread()
        if self._stopping.is_set():  # accepted just as stop() looked: close it here instead
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _untrack(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.pop(conn, None)


def main(scenario: str | None = None, port: int = 8765, host: str = "127.0.0.1", markup: str | None = None,
         revision: int | None = None) -> None:
    """Serve the demo portal until Ctrl+C (`pobatch demo-portal`, `python -m pobatch.core.demo_portal`)."""
    try:
        portal = DemoPortal(scenario, host=host, port=port, markup=markup, revision=revision)
    except ScenarioError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    try:
        portal._bind()
    except OSError as exc:
        log.error("cannot listen on %s:%s (%s); pick another port with --port", host, port, exc.strerror or exc)
        raise SystemExit(2) from None
    log.info("Demo portal running at %s (scenario: %s, %d POs, %s markup, revision %d of %d)", portal.base_url,
             scenario or "bundled sample", len(portal.scenario.pos), portal.markup, portal.revision,
             portal.scenario.revision_count)
    if portal._sso is not None:
        log.info("identity provider at %s", portal.sso_base_url)
    log.info("log in at %s/sessions/new with any e-mail and password '%s'", portal.base_url, DEMO_PASSWORD)
    try:
        portal.serve_forever()
    except KeyboardInterrupt:
        log.info("demo portal stopped")
    finally:
        portal.stop()
