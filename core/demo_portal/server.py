"""The demo portal's HTTP server: Coupa's page shapes on 127.0.0.1, driven by a seeded scenario.

A real server (stdlib ThreadingHTTPServer) so clients meet real sockets: real latency, responses that
stop half-way, connections dropped without an answer, stalls. It keeps score (page hits, complete
downloads) so tests can check what a client really fetched. Every wait in a handler is a wait on the
stop event, so stop() returns promptly even while a response is stalled.

It also serves what an unfamiliar portal throws at a client (scenario.py lists the shapes): pages in a
second markup, attachment lists fetched by script from `/order_headers/<id>/attachments.json`, proxy
and bare error pages, redirects, and an identity provider's interstitial on a second listener bound to
another loopback address (`sso_host`, 127.0.0.2 by default), so that the browser leaves the portal's host.
"""
from __future__ import annotations

import logging
import re
import secrets
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pobatch.core.demo_portal.handlers import PortalHandler, PortalServer, PortalSession, SsoHandler
from pobatch.core.demo_portal.scenario import MARKUPS, Scenario, draw_ms, load_scenario, sample_scenario_path
from pobatch.core.sites.demo import DEMO_PASSWORD  # the portal's one password, as the demo site knows it

log = logging.getLogger(__name__)


class DemoPortal:
    """The demo portal: start() it (or use it as a context manager), point a client at base_url."""

    def __init__(self, scenario: Scenario | str | Path | None = None, host: str = "127.0.0.1", port: int = 0,
                 markup: str | None = None, sso_host: str = "127.0.0.2", sso: bool | None = None,
                 share_sessions_with: "DemoPortal | None" = None) -> None:
        """`markup` overrides the scenario's; `sso_host` is where the sso_interstitial fault sends the
        browser (another host than `host`; it listens only when the scenario uses that fault or `sso`
        is true); `share_sessions_with` makes a session signed in on that portal valid here too (the
        cookie is per host, not per port, so one signed-in profile serves both)."""
        if scenario is None:
            scenario = load_scenario(sample_scenario_path())
        elif not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario)
        self.scenario: Scenario = scenario
        self.host = host
        self._port = port
        self._markup = scenario.markup
        if markup is not None:
            self.markup = markup
        self.sso_host = sso_host
        self._sso_wanted = sso if sso is not None else any(
            "sso_interstitial" in po.page_faults for po in scenario.pos)
        if self._sso_wanted and sso_host == host:
            raise ValueError("the identity provider must listen on another host than the portal")
        self._httpd: PortalServer | None = None
        self._sso: PortalServer | None = None
        self._thread: threading.Thread | None = None
        self._sso_thread: threading.Thread | None = None
        self._serving = False
        self._stopping = threading.Event()
        self._life = threading.Lock()
        self._lock = share_sessions_with._lock if share_sessions_with else threading.Lock()
        self._sessions: dict[str, PortalSession] = share_sessions_with._sessions if share_sessions_with else {}
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._stalls_in_flight = 0
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

    # -- life cycle -------------------------------------------------------------------------------
    def _bind(self) -> PortalServer:
        with self._life:
            if self._httpd is None:
                if self._stopping.is_set():
                    raise RuntimeError("this DemoPortal was stopped; create a new one")
                httpd = PortalServer((self.host, self._port), PortalHandler)
                httpd.portal = self
                if self._sso_wanted:
                    try:
                        sso = PortalServer((self.sso_host, 0), SsoHandler)
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

        It exists when the scenario uses the sso_interstitial page fault (or DemoPortal(sso=True)). A
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

    def expected_files(self, po_id: str) -> dict[str, bytes]:
        return self.scenario.expected_files(po_id)

    def download_counts(self) -> dict[str, int]:
        """'<po_id>/<name>' -> complete successful attachment responses (a repeated name gets ' (1)')."""
        with self._lock:
            return dict(self._download_counts)

    def attachment_requests(self) -> dict[str, int]:
        """'<po_id>/<name>' -> every request for the file, failed and incomplete ones included."""
        with self._lock:
            return dict(self._attachment_requests)

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

    def _count(self, table: dict[str, int], key: str) -> int:
        with self._lock:
            return table.get(key, 0)

    def expected_sha256(self, po_id: str) -> dict[str, str]:
        return self.scenario.expected_sha256(po_id)

    def match_by_bytes(self, po_id: str, saved: dict[str, bytes]) -> dict[str, str | None]:
        """Saved name -> expected original name with the same bytes (None: bytes this PO never served)."""
        return self.scenario.match_by_bytes(po_id, saved)

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
                "markup": self._markup,
            }

    def reset(self) -> None:
        """Forget counters and fault positions (sessions stay): the scenario starts over."""
        with self._lock:
            self._reset_counters()

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
            self._sessions[token] = PortalSession(email=email, created=time.time())
        return token

    def _use_session(self, token: str) -> bool:
        """Count one authenticated request; False once the session is unknown or used up."""
        limit = self.scenario.session.expire_after_requests
        with self._lock:
            s = self._sessions.get(token)
            if s is None:
                return False
            if limit is not None and s.requests >= limit:
                del self._sessions[token]
                return False
            s.requests += 1
            return True

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


def main(scenario: str | None = None, port: int = 8765, host: str = "127.0.0.1", markup: str | None = None) -> None:
    """Serve the demo portal until Ctrl+C (`pobatch demo-portal`, `python -m pobatch.core.demo_portal`)."""
    portal = DemoPortal(scenario, host=host, port=port, markup=markup)
    try:
        portal._bind()
    except OSError as exc:
        log.error("cannot listen on %s:%s (%s); pick another port with --port", host, port, exc.strerror or exc)
        raise SystemExit(2) from None
    log.info("Demo portal running at %s (scenario: %s, %d POs, %s markup)", portal.base_url,
             scenario or "bundled sample", len(portal.scenario.pos), portal.markup)
    if portal._sso is not None:
        log.info("identity provider interstitial at %s", portal.sso_base_url)
    log.info("log in at %s/sessions/new with any e-mail and password '%s'", portal.base_url, DEMO_PASSWORD)
    try:
        portal.serve_forever()
    except KeyboardInterrupt:
        log.info("demo portal stopped")
    finally:
        portal.stop()
