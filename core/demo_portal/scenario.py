"""Demo-portal scenarios: which POs exist, what they hold, how the portal misbehaves, and the truth.

A scenario is a JSON file (see data/sample_scenario.json). Everything the portal serves is derived
from it and its seed, so two portals built from the same scenario serve the same pages and the same
bytes, and the scenario itself can say what a correct client must end up with.

Shape::

    {"name": "...", "seed": 7, "stall_seconds": 30, "client_max_attempts": 3, "markup": "coupa",
     "latency": {"page_ms": 100 | [50, 150], "attachment_ms": 0 | [20, 80]},  (an attachment's own
                                                                             "latency_ms" overrides it)
     "session": {"expire_after_requests": null | N, "rotate_token": false,
                 "sso_refresh_every": null | N, "sso_via": "post_form"},
     "pos": [{"id": "100001", "supplier": "Acme",
              "attachments": [{"name": "a.pdf", "kind": "link", "size": 12000, "faults": ["drop_mid", "ok"]}],
              "requisition": {"id": "5001", "attachments": [...]},
              "missing": false, "forbidden": false,
              "faults": {"page": ["http500", "ok"]},
              "attachments_delay_ms": 1500, "spinner": true,
              "redirect_to": "100002", "retry_after_seconds": 1, "hang": "image" | ["image", "longpoll"],
              "expected": {"status": "COMPLETED", "reason": ""}}],
     "revisions": [{"label": "a week later",
                    "pos": {"100001": {"add": [<attachments>], "remove": ["old.pdf"]},
                            "100005": {"requisition_add": [...], "requisition_remove": [...]}}}]}

Optional keys (absent in the bundled sample, which keeps Coupa's plain shapes; only `revisions` is in it):

* `markup`: "coupa" (default) or "variant". The variant draws every page with markup that matches none
  of the built-in Coupa definition's selectors and texts (other classes, ids, attributes, error texts,
  `/files/<token>` file URLs, `/requisitions/<rid>` requisition pages, another login form); the URL of
  a PO page (`/order_headers/<id>`), the sign-in path and the session cookie stay the same.
  data/variant_site.toml is the site file that describes it.
* `page_assets` (default false): PO and requisition pages carry the images a real Coupa page does: a
  company logo in the header, a row of toolbar icons and a file-type icon beside each attachment, served
  from `/assets/...` with the long cache lifetime static files have on a real tenant (no sign-in needed).
  For the CPU benchmark (benchmarks/cpu_per_po.py), whose question is what loading images costs.
* `attachments_delay_ms` (per PO): the attachment list is not in the HTML. The page holds an empty
  attachment area and a script that fetches the list from the JSON endpoint
  `/order_headers/<id>/attachments.json` (which answers after this many ms) and then draws it, or the
  usual "No attachments" state when it is empty. `spinner` (default true) puts a loading marker
  (`<div class="spinner">Loading…</div>`; in the variant `.busy-indicator`) in the area until then.
* `redirect_to` (per PO): the PO the `redirect_other_po` page fault sends the browser to. It must be
  another PO of the scenario that is served normally (not missing, not forbidden, no page faults, no
  redirect of its own), so that the arrivals it gets by redirect (counted in its page hits) never
  change its own outcome.
* `retry_after_seconds` (per PO, default 1): the `Retry-After` of the `http429` page fault.
* `session.sso_refresh_every` (default null: never) and `session.sso_via` (default "post_form"): single
  sign-on refresh. The portal counts PO page requests (`/order_headers/<id>`) across the whole portal,
  every client and session together. When a PO page request arrives after N of them were answered
  since the last refresh, the portal's session ends: every session that exists at that moment. Only a
  PO page request triggers the end, so a sequential client meets it on a PO page, never halfway
  through a PO's downloads; a parallel client may still meet it on any protected request (an
  attachment too), because another client's PO page ended it. A request with an ended session gets a
  302 to the identity provider on the second listener (`sso_host`, 127.0.0.2):
  `/idp/sso?request=<id>&return_to=<the full original URL>`; the request id is issued by the portal
  and single use. `sso_via` says how the provider sends the browser back at once, no person needed:
  "post_form" (a page whose script submits a hidden SAMLResponse and RelayState to the portal's
  `/saml/acs`), "script" (a page whose script calls `location.replace` with the portal's
  `/sso/callback?ticket=...&return_to=...`), "meta" (the same URL in a `<meta http-equiv="refresh">`),
  "redirect_chain" (302 to the provider's `/idp/step2`, 302 to the portal's callback). The portal checks
  the ticket or SAMLResponse (issued by the provider, single use, bound to the ended session's account),
  sets a fresh session cookie and 302s to the original URL's path (only ever a path on the portal).
  "password_form" instead shows the provider's sign-in form (an account name and an
  `input[type=password]`) and stays there: a person is needed. Submitting it with the demo password
  goes back like "post_form". A client without any session (never signed in) still gets the portal's
  own sign-in page, as before.
* `hang` (per PO: one of "image", "async_script", "iframe", "longpoll", or a list of them): the PO page
  is served as usual plus a sub-resource that never answers: an `<img>`, an `<script async>`, an
  `<iframe>`, or an inline script whose `fetch()` never completes (a long-poll), at
  `/hang/{img,js,frame,poll}/<po id>?n=<k>` (k new for every page, so no cache answers). The first
  three keep the page's load event from ever firing; a long-poll does not hold the load event. The
  portal holds such a request open without answering until the client goes away or the portal stops
  (at most server.HANG_SECONDS, 600 s). `/hang/` needs no session and counts no session request (a
  tracker or chat widget, not the portal's own content). The PO's outcome is unchanged.
* `revisions` (top level): the portal later, for `pobatch run --refresh` (issue 22). Revision n is the
  scenario after the first n change sets, applied in order; revision 0 is the scenario as written, and
  the portal serves it unless asked for another (DemoPortal(revision=n), DemoPortal.revise(n),
  `POST /__demo__/revise?to=n`; Scenario.at_revision(n) is its truth). Per PO, `add` appends attachments
  (the shape of "attachments") to its list, `remove` takes attachments out of it by served name (a
  repeated name's second copy is "invoice (1).pdf"; the name must be there at that revision), and
  `requisition_add` / `requisition_remove` do the same to its requisition's list (the PO needs one).
  Removals apply before additions. An attachment that stays keeps its token, URLs, served name and bytes
  (a real portal's attachment ids are stable); an addition of revision r gets a token and bytes salted
  with r, and a served name unique among every name the PO has had, so `<po>/<name>` download counters
  never mix up a held file and a new one. A removed attachment's URLs answer 404. Page and attachment
  fault positions carry on across a revision (DemoPortal.reset() starts them over). A PO's own
  `expected`, if stated, holds at every revision; otherwise each revision's outcome is derived as below
  (a NO_ATTACHMENTS PO that gains an attachment becomes COMPLETED).

Attachment kinds: the Coupa sample's KINDS, plus `trusted_js` (a `js` attachment whose handler ignores
a click that a script made, `event.isTrusted`: only a real pointer click starts its download), and
`inline_labeled`: a link whose text is the file's
name (`contract.pdf`) while its URL ends in `/attachment_file` and the file is served without
Content-Disposition, so only the label names it.

Page faults: `ok`; `http500` (Rails' 500 page); `stall`; `drop` (closed without an answer);
`http500_bare` (500, a bare "Internal Server Error" h1); `http502`, `http503` (a proxy's nginx page);
`http429` (a plain "Too Many Requests" page with Retry-After); `maintenance` (HTTP 200 and a
"Down for maintenance" h1, no PO markup); `redirect_other_po` (302 to `redirect_to`'s page);
`redirect_dashboard` (302 to `/`, the dashboard); `sso_interstitial` (302 to an identity provider's
"Continue to sign in" page on another host, see DemoPortal.sso_base_url); `http404_bare` (404 and a
"Not Found" h1 without the site's not-found texts).

Fault lists are consumed one item per request (the PO page per PO, an attachment per attachment) and
the last item repeats: ["http500", "ok"] fails once, then works; ["http500"] always fails.

How expected outcomes are derived (when a PO does not state `expected` itself)
-----------------------------------------------------------------------------
The derivation replays the PO against a reference client that behaves like pobatch's PO workflow:
at most `client_max_attempts` attempts (default 3); each attempt requests the PO page once; a PO page
that answers opens the attachment list; the PO's own attachments are downloaded, or, when it has none,
those of its requisition; a failed attachment is re-requested up to T times within the attempt; an
attempt in which any attachment failed is retried as a whole (every attachment is fetched again).

* missing -> (PO_NOT_FOUND, ""); forbidden -> (PO_NOT_FOUND, "NOT_AUTHORIZED"). Never retried.
* Page faults on every attempt -> the last attempt decides: http500 -> (FAILED, "HTTP_500"), drop ->
  (FAILED, "CONNECTION_FAILED") (a browser shows its own error page for an empty response), stall ->
  (TIMEOUT, "TIMEOUT") (this assumes the client's page timeout is shorter than `stall_seconds`; the
  stalled page is answered normally afterwards), http500_bare -> (FAILED, "HTTP_500"), http502 ->
  (FAILED, "HTTP_502"), http503 -> (FAILED, "HTTP_503"), http429 -> (FAILED, "HTTP_429"); maintenance,
  redirect_other_po, redirect_dashboard and http404_bare -> (FAILED, "UNRECOGNISED_PAGE"): a page
  that does not prove it is this PO's page is never a final answer. A page fault that clears within
  the attempts is invisible in the outcome; the files are always the PO's own, never those of the PO
  it was redirected to.
* sso_interstitial -> (LOGIN_REQUIRED, "") on the first attempt that meets it: a sign-in is never
  retried (it stops the whole run), so even a fault list that would clear later gives LOGIN_REQUIRED.
* session.sso_via "password_form" with sso_refresh_every N -> the truth is that of one sequential run of
  the reference client over the POs in scenario order, signed in on a fresh portal: it counts PO page
  requests as the portal does (every attempt's request, the re-sent one after a drop, the arrival at a
  redirect_other_po target), and the PO whose request is the N+1-th meets the ended session and gets
  (LOGIN_REQUIRED, "") like a `_PAGE_STOP` page fault; the run stops there (as it does at any
  LOGIN_REQUIRED), so every later PO is never requested: (PENDING, ""). The bounce methods keep every PO's
  normal outcome (the bounce brings the browser back to the same request). Hanging sub-resources change
  no outcome either.
* No attachments but a requisition with some -> (COMPLETED, "REQUISITION_FALLBACK").
  No attachments anywhere -> (NO_ATTACHMENTS, "").
* An attachment that still fails in the last attempt -> (PARTIAL, "DOWNLOAD_FAILED"), and the files
  are those the last attempt got. Transient faults that clear within the attempts -> (COMPLETED, "").

How many requests one try costs is not only the client's choice: Chromium re-requests a download that
was cut off mid-way by itself (one click, several requests, seen with drop_mid), and re-sends a page
request once when a kept-alive connection closes without an answer (seen with drop). So the replay runs
for T in 1, 2, 3, 6, 12 requests per attachment try, each with and without that page re-send. When the
answers differ (a fault list whose first "ok" lies where only some clients reach it), the scenario is
ambiguous and must state `expected` for that PO; loading it otherwise fails with ScenarioError.

Attachment faults: `http500` (the 500 page), `drop_mid` and `stall_mid` (the body stops half-way, closed
or held), and `html200` (the file URL answers 200 with a web page, "This document is not available",
as a missing file does on many portals: a browser shows it instead of downloading).

Note for clients: an `http500` attachment fault answers the file URL with the 500 page, so a browser
shows that page instead of downloading; only a client that looks at the page after the click notices
it before its download timeout.

Expected files (`expected_files`) are keyed by the name the portal serves (Content-Disposition name,
the `download` attribute, for `inline_pdf` the last URL segment, for `inline_labeled` the link's
label). A name repeated within one PO gets " (1)", " (2)" before its extension, as Chromium names the
second copy. A name too long for a file system (data/hostile_names_scenario.json) is keyed by its
original; a client must shorten it, so `Scenario.match_by_bytes` maps saved names back to the
originals by content (sha256).

What a refresh must find (`Scenario.refresh_delta(from_rev, to_rev)`, a RefreshDelta per PO): `new`, the
expected files at to_rev whose attachment (token) a correct run at from_rev did not get, named as they land
beside the held files; `removed`, held files a fresh run at to_rev would no longer get; the status and
reason before and after. A refresh deletes nothing, so the PO's folder then holds the files of from_rev
and the new ones: `expected_files_after_refresh(po, from_rev, to_rev)`, or `expected_files(po,
refreshed_from=from_rev)` on the scenario at to_rev (expected_sha256 and match_by_bytes take it too).

One file, over 400 lines, on purpose: the JSON format, its checks and the derivation of the truth are
one contract (a Scenario checks itself when built, from a file or in a test), and a reader who wants
to know what a scenario promises needs all three.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from pobatch.core.status import Status

# The Coupa sample's kinds (the sample holds every one of them); EXTRA_KINDS are the shapes of portals
# pobatch has not met yet, kept apart so the sample and generated scenarios stay as they were.
KINDS = ("link", "download_attr", "js", "span", "popup", "inline_pdf")
EXTRA_KINDS = ("inline_labeled", "trusted_js")
ALL_KINDS = KINDS + EXTRA_KINDS
MARKUPS = ("coupa", "variant")
PAGE_FAULTS = ("ok", "http500", "stall", "drop", "http500_bare", "http502", "http503", "http429", "maintenance",
               "redirect_other_po", "redirect_dashboard", "sso_interstitial", "http404_bare")
ATTACHMENT_FAULTS = ("ok", "http500", "drop_mid", "stall_mid", "html200")
# How the identity provider sends a browser back after the portal's session ended (session.sso_via).
SSO_VIA = ("post_form", "script", "meta", "redirect_chain", "password_form")
SSO_BOUNCES = SSO_VIA[:-1]  # the ones that need no person
# Sub-resources of a PO page that never answer (per PO "hang").
HANG_KINDS = ("image", "async_script", "iframe", "longpoll")
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PAGE_FAILURE = {
    "http500": (Status.FAILED.value, "HTTP_500"),
    "drop": (Status.FAILED.value, "CONNECTION_FAILED"),
    "stall": (Status.TIMEOUT.value, "TIMEOUT"),
    "http500_bare": (Status.FAILED.value, "HTTP_500"),
    "http502": (Status.FAILED.value, "HTTP_502"),
    "http503": (Status.FAILED.value, "HTTP_503"),
    "http429": (Status.FAILED.value, "HTTP_429"),
    "maintenance": (Status.FAILED.value, "UNRECOGNISED_PAGE"),
    "redirect_other_po": (Status.FAILED.value, "UNRECOGNISED_PAGE"),
    "redirect_dashboard": (Status.FAILED.value, "UNRECOGNISED_PAGE"),
    "http404_bare": (Status.FAILED.value, "UNRECOGNISED_PAGE"),
}
# A PO page request that meets the session ended by an SSO refresh whose provider wants a person
# (sso_via "password_form"): not a fault in a list, but it ends the PO like one (see _PAGE_STOP).
_SSO_WALL = "sso_password_form"
# Page faults that end the PO (and the run) at once instead of being retried.
_PAGE_STOP = {"sso_interstitial": (Status.LOGIN_REQUIRED.value, ""), _SSO_WALL: (Status.LOGIN_REQUIRED.value, "")}
_MAX_SIZE = 50 * 1024 * 1024
# Requests one client try can cost: Chromium itself re-requests a download cut off mid-way (up to about
# five times) and re-sends a page request whose keep-alive connection closed without an answer.
_REPLAY_TRIES = (1, 2, 3, 6, 12)
_DATA_DIR = Path(__file__).resolve().parent / "data"

# A plausible start (and, for PDF, end) per file type, so a downloaded file looks like what it claims.
_MAGIC: dict[str, tuple[bytes, bytes]] = {
    "pdf": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", b"\n%%EOF\n"),
    "docx": (b"PK\x03\x04\x14\x00\x06\x00", b""),
    "xlsx": (b"PK\x03\x04\x14\x00\x06\x00", b""),
    "msg": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b""),
    "eml": (b"From: supplier@example.com\r\nTo: buyer@example.com\r\nSubject: Demo\r\n\r\n", b""),
}


class ScenarioError(ValueError):
    """A scenario file that cannot be served as written; the message names the offending place."""


@dataclass(frozen=True)
class LatencySpec:
    page_ms: tuple[int, int] = (0, 0)
    attachment_ms: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class SessionOptions:
    expire_after_requests: int | None = None
    rotate_token: bool = False
    sso_refresh_every: int | None = None  # the portal's session ends every N PO page requests
    sso_via: str = "post_form"  # how the identity provider sends the browser back (SSO_VIA)


@dataclass(frozen=True)
class AttachmentSpec:
    name: str
    kind: str = "link"
    size: int = 10_000
    faults: tuple[str, ...] = ()
    latency_ms: int | None = None  # this attachment's own latency, instead of the scenario's attachment_ms


@dataclass(frozen=True)
class RequisitionSpec:
    id: str
    attachments: tuple[AttachmentSpec, ...] = ()


@dataclass(frozen=True)
class PoSpec:
    id: str
    supplier: str = "Demo Supplier"
    attachments: tuple[AttachmentSpec, ...] = ()
    requisition: RequisitionSpec | None = None
    missing: bool = False
    forbidden: bool = False
    page_faults: tuple[str, ...] = ()
    expected: tuple[str, str] | None = None
    attachments_delay_ms: int | None = None  # None: the list is in the HTML; else drawn by script
    spinner: bool = True  # with attachments_delay_ms: a loading marker until the list is drawn
    redirect_to: str | None = None  # the target of the redirect_other_po page fault
    retry_after_seconds: int = 1  # the Retry-After of the http429 page fault
    hang: tuple[str, ...] = ()  # sub-resources of the page that never answer (HANG_KINDS)


@dataclass(frozen=True)
class AttachmentEntry:
    """One served attachment with its stable identity: token, URLs and its unique name within the PO."""

    po_id: str
    owner: str  # "po" or "requisition"
    owner_id: str  # the PO id or the requisition id
    index: int
    spec: AttachmentSpec
    token: str
    key: str  # served name, unique within the PO over all its revisions ("invoice.pdf", "invoice (1).pdf")
    revision: int = 0  # the revision that added it (0: the scenario as written); salts its token and bytes

    @property
    def counter_key(self) -> str:
        """The key of this attachment in DemoPortal.download_counts()."""
        return f"{self.po_id}/{self.key}"

    @property
    def file_url(self) -> str:
        """The path that answers with the bytes."""
        if self.spec.kind == "link":
            return f"/attachment_files/{self.token}"
        if self.spec.kind == "inline_pdf":
            return f"/attachments/{self.token}/inline/{quote(self.spec.name, safe='')}"
        if self.spec.kind == "inline_labeled":
            return f"/attachments/{self.token}/attachment_file"
        return f"/attachments/{self.token}/raw"

    @property
    def page_url(self) -> str:
        """The path the attachment element points at on the page (popups go through a page first)."""
        if self.spec.kind == "popup":
            return f"/attachments/{self.token}/popup"
        return self.file_url


@dataclass(frozen=True)
class PoChange:
    """What one revision changes in one PO: attachments added to, or removed from, its own list or its
    requisition's. Removals name the served name (AttachmentEntry.key) and apply before additions."""

    po_id: str
    add: tuple[AttachmentSpec, ...] = ()
    remove: tuple[str, ...] = ()
    requisition_add: tuple[AttachmentSpec, ...] = ()
    requisition_remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class Revision:
    """One change set of `revisions`: the portal as it stands some time later (revision n = revisions[n-1])."""

    label: str = ""
    pos: tuple[PoChange, ...] = ()


@dataclass(frozen=True)
class RefreshDelta:
    """What a correct `--refresh` from one revision to a later one finds for one PO (Scenario.refresh_delta).

    `new`: the files it downloads, named as they land in the PO's folder beside the ones it holds (a name
    already there gets " (1)"). `removed`: files it holds that a fresh run would no longer get (gone from the
    portal, or requisition files the PO's own attachments now replace); they stay in the folder."""

    new: tuple[str, ...]
    removed: tuple[str, ...]
    status_before: str
    status_after: str
    reason_before: str = ""
    reason_after: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.new or self.removed) or (self.status_before, self.reason_before) != \
            (self.status_after, self.reason_after)


@dataclass(frozen=True)
class Scenario:
    seed: int
    pos: tuple[PoSpec, ...]
    latency: LatencySpec = LatencySpec()
    session: SessionOptions = SessionOptions()
    stall_seconds: float = 30.0
    client_max_attempts: int = 3
    name: str = ""
    description: str = ""
    markup: str = "coupa"
    page_assets: bool = False  # a logo and icons on PO and requisition pages (see the module docstring)
    # Change sets applied in order (see "revisions" in the module docstring). `pos` stays the scenario as
    # written; po(), requisition(), entries() and the truth describe `revision` (0: as written).
    revisions: tuple[Revision, ...] = ()
    revision: int = 0
    _by_id: dict[str, PoSpec] = field(init=False, repr=False, compare=False)
    _req_owner: dict[str, PoSpec] = field(init=False, repr=False, compare=False)
    _entries: dict[tuple[str, str], tuple[AttachmentEntry, ...]] = field(init=False, repr=False, compare=False)
    _by_token: dict[str, AttachmentEntry] = field(init=False, repr=False, compare=False)
    _truth: dict[str, tuple[str, str, tuple[AttachmentEntry, ...]]] = field(init=False, repr=False,
                                                                            compare=False)
    _at: dict[int, "Scenario"] = field(init=False, repr=False, compare=False)  # at_revision()'s, made once

    def __post_init__(self) -> None:
        _validate(self)
        if self.revision < len(self.revisions):  # every revision is checked, whichever one is served
            _history(self.seed, self.pos, self.revisions, len(self.revisions))
        entries = _history(self.seed, self.pos, self.revisions, self.revision)
        by_id = {po.id: _served_po(po, entries) if self.revision else po for po in self.pos}
        req_owner = {po.requisition.id: po for po in by_id.values() if po.requisition}
        by_token = {e.token: e for made in entries.values() for e in made}
        object.__setattr__(self, "_at", {self.revision: self})
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(self, "_req_owner", req_owner)
        object.__setattr__(self, "_entries", entries)
        object.__setattr__(self, "_by_token", by_token)
        object.__setattr__(self, "_truth", self._derive_all())

    # -- lookups ----------------------------------------------------------------------------------
    def po(self, po_id: str) -> PoSpec | None:
        return self._by_id.get(po_id)

    def requisition(self, rid: str) -> tuple[PoSpec, RequisitionSpec] | None:
        """The requisition with this id and the PO that links to it."""
        po = self._req_owner.get(rid)
        return (po, po.requisition) if po and po.requisition else None

    def entries(self, po_id: str, owner: str = "po") -> tuple[AttachmentEntry, ...]:
        return self._entries.get((po_id, owner), ())

    def entry_by_token(self, token: str) -> AttachmentEntry | None:
        return self._by_token.get(token)

    def all_entries(self) -> list[AttachmentEntry]:
        return list(self._by_token.values())

    def file_bytes(self, entry: AttachmentEntry) -> bytes:
        return file_bytes(self.seed, entry.owner, entry.owner_id, entry.index, entry.spec.name, entry.spec.size,
                          entry.revision)

    # -- revisions --------------------------------------------------------------------------------
    @property
    def revision_count(self) -> int:
        """How many revisions the scenario has; at_revision() takes 0 to this."""
        return len(self.revisions)

    def at_revision(self, n: int) -> "Scenario":
        """The portal after the first n change sets (0: as written), with its own entries and truth.

        An attachment that stays keeps its token, URLs, served name and bytes, as a real portal's
        attachment ids do; so a refresh can tell held files from new ones."""
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(self.revisions):
            raise ScenarioError(f"revision {n!r}: expected 0 to {len(self.revisions)} (the scenario's revisions)")
        if n not in self._at:
            made = replace(self, revision=n)
            object.__setattr__(made, "_at", self._at)  # one cache for every revision of this scenario
            self._at[n] = made
        return self._at[n]

    def refresh_delta(self, from_rev: int, to_rev: int) -> dict[str, "RefreshDelta"]:
        """po_id -> what a correct refresh finds at to_rev after a correct run at from_rev (every PO)."""
        before, after = self.at_revision(from_rev), self.at_revision(to_rev)
        out = {}
        for po in self.pos:
            held, new = after._refreshed(po.id, before)
            kept = {e.token for e in after._truth[po.id][2]}
            s0, r0, _ = before._truth[po.id]
            s1, r1, _ = after._truth[po.id]
            out[po.id] = RefreshDelta(tuple(name for name, _e in new),
                                      tuple(name for name, e in held if e.token not in kept), s0, s1, r0, r1)
        return out

    def expected_files_after_refresh(self, po_id: str, from_rev: int, to_rev: int) -> dict[str, bytes]:
        """The PO's folder after a correct run at from_rev and a correct refresh to to_rev: the files held
        before (a refresh deletes nothing) and the new ones."""
        return self.at_revision(to_rev).expected_files(po_id, refreshed_from=from_rev)

    def _refreshed(self, po_id: str, before: "Scenario"
                   ) -> tuple[list[tuple[str, AttachmentEntry]], list[tuple[str, AttachmentEntry]]]:
        """(files held after a run of `before`, files a refresh to this revision adds), with their names."""
        held = before._named(po_id)
        tokens = {e.token for _name, e in held}
        taken = {name for name, _e in held}
        new = []
        for e in self._truth.get(po_id, ("", "", ()))[2]:
            if e.token not in tokens:
                name = _unique(e.spec.name, taken)
                taken.add(name)
                new.append((name, e))
        return held, new

    def _named(self, po_id: str) -> list[tuple[str, AttachmentEntry]]:
        """The PO's expected files in order, each with the name a fresh run saves it under."""
        truth = self._truth.get(po_id)
        taken: set[str] = set()
        out = []
        for e in truth[2] if truth else ():
            name = _unique(e.spec.name, taken)
            taken.add(name)
            out.append((name, e))
        return out

    # -- the truth --------------------------------------------------------------------------------
    def expected_outcomes(self) -> dict[str, tuple[str, str]]:
        """po_id -> (STATUS, REASON) that a correct client reports."""
        return {po_id: (status, reason) for po_id, (status, reason, _files) in self._truth.items()}

    def expected_files(self, po_id: str, refreshed_from: int | None = None) -> dict[str, bytes]:
        """Served name -> exact bytes, for the files a correct client ends up with for this PO.

        With `refreshed_from`: after a run at that revision and a refresh to this one (the union, the
        new files named beside the held ones; see expected_files_after_refresh)."""
        if refreshed_from is None:
            return {name: self.file_bytes(e) for name, e in self._named(po_id)}
        held, new = self._refreshed(po_id, self.at_revision(refreshed_from))
        return {name: self.file_bytes(e) for name, e in (*held, *new)}

    def expected_sha256(self, po_id: str, refreshed_from: int | None = None) -> dict[str, str]:
        """sha256 hex of each expected file's bytes -> its expected (original, unshortened) name."""
        return {hashlib.sha256(data).hexdigest(): name
                for name, data in self.expected_files(po_id, refreshed_from).items()}

    def original_name(self, po_id: str, data: bytes) -> str | None:
        """The expected name of the file of this PO whose bytes these are; None for bytes it never serves."""
        return self.expected_sha256(po_id).get(hashlib.sha256(data).hexdigest())

    def match_by_bytes(self, po_id: str, saved: dict[str, bytes],
                       refreshed_from: int | None = None) -> dict[str, str | None]:
        """Saved name -> the expected (original) name with the same bytes, or None when nothing matches.

        For names a client must shorten (data/hostile_names_scenario.json): the exact short form is the
        client's choice, so a test matches what it saved to the truth by content, then checks the
        short names itself (length, extension kept, unique). `refreshed_from` as in expected_files."""
        by_sha = self.expected_sha256(po_id, refreshed_from)
        return {name: by_sha.get(hashlib.sha256(data).hexdigest()) for name, data in saved.items()}

    def _derive_all(self) -> dict[str, tuple[str, str, tuple[AttachmentEntry, ...]]]:
        """Each PO replayed on its own; with an SSO refresh that needs a person, one whole run in order."""
        variants = [(tries, resend) for tries in _REPLAY_TRIES for resend in (False, True)]
        every = self.session.sso_refresh_every
        if every is None or self.session.sso_via != "password_form":
            return {po.id: self._derive(po, [self._replay(po, t, r) for t, r in variants]) for po in self.pos}
        runs: list[dict[str, tuple[str, str, tuple[AttachmentEntry, ...]]]] = []
        for tries, resend in variants:
            budget, run, stopped = _PageBudget(every), {}, False
            for po in self.pos:
                if stopped:  # the run stopped for a sign-in: this PO is never requested
                    run[po.id] = (Status.PENDING.value, "", ())
                    continue
                run[po.id] = self._replay(po, tries, resend, budget)
                stopped = run[po.id][0] == Status.LOGIN_REQUIRED.value
            runs.append(run)
        return {po.id: self._derive(po, [run[po.id] for run in runs]) for po in self.pos}

    def _derive(self, po: PoSpec, answers: list[tuple[str, str, tuple[AttachmentEntry, ...]]]
                ) -> tuple[str, str, tuple[AttachmentEntry, ...]]:
        distinct = {(s, r, tuple(e.token for e in files)) for s, r, files in answers}
        if po.expected is not None:
            status, reason = po.expected
            if len(distinct) == 1 and answers[0][:2] == po.expected:
                return answers[0]
            return status, reason, self._files_for_stated(po, status, reason)
        if len(distinct) > 1:
            raise ScenarioError(
                f"PO {po.id}: its outcome depends on how often a client (or its browser) re-requests a failed "
                f"page or file ({sorted({a[:2] for a in answers})}); state it with \"expected\": "
                "{\"status\": ..., \"reason\": ...}"
            )
        return answers[0]

    def _replay(self, po: PoSpec, tries: int, resend_dropped: bool, budget: "_PageBudget | None" = None
                ) -> tuple[str, str, tuple[AttachmentEntry, ...]]:
        """One reference client's run of this PO (see the module docstring). `budget` counts PO page
        requests across the run when an SSO refresh needs a person; a refused request consumes no fault."""
        page = _Cursor(po.page_faults)
        cursors: dict[str, _Cursor] = {}
        last: tuple[str, str, tuple[AttachmentEntry, ...]] = (Status.FAILED.value, "HTTP_500", ())

        def request() -> str:
            return _SSO_WALL if budget is not None and not budget.take() else page.next()

        for _attempt in range(self.client_max_attempts):
            item = request()
            if item == "drop" and resend_dropped:
                item = request()
            if item == "redirect_other_po" and budget is not None and not budget.take():
                item = _SSO_WALL  # the arrival at the other PO's page is a PO page request too
            if item in _PAGE_STOP:
                return (*_PAGE_STOP[item], ())
            if item != "ok":
                last = (*_PAGE_FAILURE[item], ())
                continue
            if po.missing:
                return Status.PO_NOT_FOUND.value, "", ()
            if po.forbidden:
                return Status.PO_NOT_FOUND.value, "NOT_AUTHORIZED", ()
            entries, reason = self.entries(po.id, "po"), ""
            if not entries and self.entries(po.id, "requisition"):
                entries, reason = self.entries(po.id, "requisition"), "REQUISITION_FALLBACK"
            if not entries:
                return Status.NO_ATTACHMENTS.value, "", ()
            got = []
            for e in entries:
                cursor = cursors.setdefault(e.token, _Cursor(e.spec.faults))
                if any(cursor.next() == "ok" for _ in range(tries)):
                    got.append(e)
            if len(got) == len(entries):
                return Status.COMPLETED.value, reason, tuple(got)
            last = (Status.PARTIAL.value, "DOWNLOAD_FAILED", tuple(got))
        return last

    def _files_for_stated(self, po: PoSpec, status: str, reason: str) -> tuple[AttachmentEntry, ...]:
        """Files for a PO whose outcome the scenario states: all of them, or those whose faults clear."""
        entries = self.entries(po.id, "requisition" if reason == "REQUISITION_FALLBACK" else "po")
        if status == Status.COMPLETED.value:
            return entries
        if status == Status.PARTIAL.value:
            return tuple(e for e in entries if not e.spec.faults or e.spec.faults[-1] == "ok")
        return ()

    # -- (de)serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        def lat(v: tuple[int, int]) -> int | list[int]:
            return v[0] if v[0] == v[1] else [v[0], v[1]]

        def atts(specs: Iterable[AttachmentSpec]) -> list[dict[str, Any]]:
            return [{"name": a.name, "kind": a.kind, "size": a.size, **({"faults": list(a.faults)} if a.faults else {}),
                     **({"latency_ms": a.latency_ms} if a.latency_ms is not None else {})}
                    for a in specs]

        pos = []
        for po in self.pos:
            d: dict[str, Any] = {"id": po.id, "supplier": po.supplier, "attachments": atts(po.attachments)}
            if po.requisition:
                d["requisition"] = {"id": po.requisition.id, "attachments": atts(po.requisition.attachments)}
            if po.missing:
                d["missing"] = True
            if po.forbidden:
                d["forbidden"] = True
            if po.page_faults:
                d["faults"] = {"page": list(po.page_faults)}
            if po.attachments_delay_ms is not None:
                d["attachments_delay_ms"] = po.attachments_delay_ms
                d["spinner"] = po.spinner
            if po.redirect_to is not None:
                d["redirect_to"] = po.redirect_to
            if po.retry_after_seconds != 1:
                d["retry_after_seconds"] = po.retry_after_seconds
            if po.hang:
                d["hang"] = list(po.hang)
            if po.expected:
                d["expected"] = {"status": po.expected[0], "reason": po.expected[1]}
            pos.append(d)
        return {
            "name": self.name, "description": self.description, "seed": self.seed,
            **({"markup": self.markup} if self.markup != "coupa" else {}),
            **({"page_assets": True} if self.page_assets else {}),
            "stall_seconds": self.stall_seconds, "client_max_attempts": self.client_max_attempts,
            "latency": {"page_ms": lat(self.latency.page_ms), "attachment_ms": lat(self.latency.attachment_ms)},
            "session": {"expire_after_requests": self.session.expire_after_requests,
                        "rotate_token": self.session.rotate_token,
                        **({"sso_refresh_every": self.session.sso_refresh_every, "sso_via": self.session.sso_via}
                           if self.session.sso_refresh_every is not None else {})},
            "pos": pos,
            **({"revisions": [_revision_dict(rv, atts) for rv in self.revisions]} if self.revisions else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "scenario") -> "Scenario":
        return _parse(data, source)


class _PageBudget:
    """PO page requests the portal answers before its session ends (sso_refresh_every)."""

    def __init__(self, every: int) -> None:
        self.every, self.answered = every, 0

    def take(self) -> bool:
        """One more PO page request: False when it meets the ended session."""
        if self.answered >= self.every:
            return False
        self.answered += 1
        return True


class _Cursor:
    """Walks a fault list; the last item repeats; an empty list means always "ok"."""

    def __init__(self, items: tuple[str, ...]) -> None:
        self.items, self.n = items, 0

    def next(self) -> str:
        item = pick_fault(self.items, self.n)
        self.n += 1
        return item


def pick_fault(items: tuple[str, ...] | list[str], n: int) -> str:
    """The fault for the n-th request (0-based): consumed in order, the last one repeating."""
    if not items:
        return "ok"
    return items[min(n, len(items) - 1)]


def draw_ms(spec: tuple[int, int], seed: int, path: str, hit: int) -> int:
    """A latency in ms, reproducible from (seed, path, hit count) so a rerun sees the same delays."""
    lo, hi = spec
    if lo >= hi:
        return lo
    return random.Random(f"{seed}|{path}|{hit}").randint(lo, hi)


def file_bytes(seed: int, owner: str, owner_id: str, index: int, name: str, size: int, revision: int = 0) -> bytes:
    """Deterministic content: a type-plausible head, then SHAKE-256 bytes of (seed, owner, index), salted
    with the revision that added the file (none for revision 0, whose bytes never change)."""
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    head, tail = _MAGIC.get(ext, (b"", b""))
    if size < len(head) + len(tail):
        head, tail = head[:size], b""
    body = hashlib.shake_256(f"pobatch-demo|{seed}|{owner}|{owner_id}|{index}{_salt(revision)}".encode()).digest(
        size - len(head) - len(tail))
    return head + body + tail


def _salt(revision: int) -> str:
    """Keeps a revision's additions apart from the files as written, whose derivation stays as it was."""
    return f"|r{revision}" if revision else ""


def _has_extension(name: str) -> bool:
    stem, dot, ext = name.rpartition(".")
    return bool(dot and stem.strip() and ext and ext.isalnum() and len(ext) <= 8)


def _token(seed: int, owner: str, owner_id: str, index: int, revision: int = 0) -> str:
    return hashlib.sha1(f"demo-token|{seed}|{owner}|{owner_id}|{index}{_salt(revision)}".encode()).hexdigest()[:20]


def _owners(po: PoSpec) -> tuple[tuple[str, str, tuple[AttachmentSpec, ...]], ...]:
    """(owner, owner id, attachments as written) for the PO's own list, then its requisition's."""
    req = po.requisition
    return (("po", po.id, po.attachments), ("requisition", req.id if req else "", req.attachments if req else ()))


def _history(seed: int, pos: tuple[PoSpec, ...], revisions: tuple[Revision, ...], upto: int
             ) -> dict[tuple[str, str], tuple[AttachmentEntry, ...]]:
    """(po_id, owner) -> the attachments served after the first `upto` revisions, each with its identity.

    The entries as written are derived exactly as before revisions existed. An entry keeps the identity it
    was given when it appeared; an addition of revision r gets a token and bytes salted with r, and a
    served name unique among every name the PO has had, so a download counter (`<po>/<name>`) never
    mixes up a held file and a new one."""
    lists: dict[tuple[str, str], list[AttachmentEntry]] = {}
    taken: dict[str, set[str]] = {po.id: set() for po in pos}

    def entry(po_id: str, owner: str, owner_id: str, index: int, spec: AttachmentSpec, rev: int) -> AttachmentEntry:
        key = _unique(spec.name, taken[po_id])
        taken[po_id].add(key)
        return AttachmentEntry(po_id, owner, owner_id, index, spec, _token(seed, owner, owner_id, index, rev), key, rev)

    for po in pos:
        for owner, owner_id, specs in _owners(po):
            lists[(po.id, owner)] = [entry(po.id, owner, owner_id, i, spec, 0) for i, spec in enumerate(specs)]
    by_id = {po.id: po for po in pos}
    for r, rev in enumerate(revisions[:upto], start=1):
        where = f"revision {r}" + (f" ({rev.label})" if rev.label else "")
        seen: set[str] = set()
        for change in rev.pos:
            po = by_id.get(change.po_id)
            if po is None:
                raise ScenarioError(f"{where}: PO {change.po_id!r} is not a PO of the scenario")
            if po.id in seen:
                raise ScenarioError(f"{where}: PO {po.id} is changed twice; give it one change set")
            seen.add(po.id)
            for owner, removes, adds in (("po", change.remove, change.add),
                                         ("requisition", change.requisition_remove, change.requisition_add)):
                w = f"{where}: PO {po.id}: {'requisition_' if owner == 'requisition' else ''}"
                if owner == "requisition" and (removes or adds) and po.requisition is None:
                    raise ScenarioError(f"{w}add/remove: the PO has no requisition")
                current = lists[(po.id, owner)]
                for name in removes:
                    gone = next((e for e in current if e.key == name), None)
                    if gone is None:
                        raise ScenarioError(f"{w}remove: no attachment named {name!r} at this revision; it has "
                                            f"{[e.key for e in current]}")
                    current.remove(gone)
                for spec in adds:
                    if spec.kind not in ALL_KINDS or any(f not in ATTACHMENT_FAULTS for f in spec.faults):
                        raise ScenarioError(f"{w}add: {spec.name!r}: unknown kind {spec.kind!r} or fault in "
                                            f"{list(spec.faults)}")
                owner_id = po.id if owner == "po" else po.requisition.id if po.requisition else ""
                current.extend(entry(po.id, owner, owner_id, j, spec, r) for j, spec in enumerate(adds))
    return {k: tuple(v) for k, v in lists.items()}


def _served_po(po: PoSpec, entries: dict[tuple[str, str], tuple[AttachmentEntry, ...]]) -> PoSpec:
    """The PO with the attachment lists it has at a revision (what Scenario.po() answers)."""
    req = po.requisition
    if req is not None:
        req = replace(req, attachments=tuple(e.spec for e in entries[(po.id, "requisition")]))
    return replace(po, attachments=tuple(e.spec for e in entries[(po.id, "po")]), requisition=req)


def _revision_dict(rv: Revision, atts: Any) -> dict[str, Any]:
    """A revision as the JSON writes it (to_dict); `atts` writes a list of AttachmentSpec."""
    pos: dict[str, Any] = {}
    for c in rv.pos:
        pos[c.po_id] = {k: v for k, v in (("add", atts(c.add)), ("remove", list(c.remove)),
                                          ("requisition_add", atts(c.requisition_add)),
                                          ("requisition_remove", list(c.requisition_remove))) if v}
    return {**({"label": rv.label} if rv.label else {}), "pos": pos}


def _unique(name: str, taken: set[str]) -> str:
    """'name.pdf', then 'name (1).pdf', ...: how Chromium names a repeated download."""
    if name not in taken:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    i = 1
    while True:
        cand = f"{stem} ({i}).{ext}" if ext else f"{stem} ({i})"
        if cand not in taken:
            return cand
        i += 1


# -- loading and validation -----------------------------------------------------------------------
def sample_scenario_path() -> Path:
    return _DATA_DIR / "sample_scenario.json"


def unfamiliar_scenario_path() -> Path:
    """Shapes of portals pobatch has never met: delayed lists, bare error pages, redirects, a label name."""
    return _DATA_DIR / "unfamiliar_scenario.json"


def hostile_names_scenario_path() -> Path:
    """Names too long for a file system (over 255 UTF-8 bytes), served with an RFC 5987 filename*."""
    return _DATA_DIR / "hostile_names_scenario.json"


def variant_scenario_path() -> Path:
    """The sample scenario drawn with the second markup (markup = "variant")."""
    return _DATA_DIR / "variant_scenario.json"


def variant_site_path() -> Path:
    """The site file (TOML, extends the built-in coupa definition) that describes the variant markup."""
    return _DATA_DIR / "variant_site.toml"


def many_attachments_scenario_path() -> Path:
    """POs with 12, 50 and 300 attachments (links), and one of 50 mixing every Coupa kind: many_attachment_pos()."""
    return _DATA_DIR / "many_attachments_scenario.json"


def sample_orders_path(ext: str = "csv") -> Path:
    """The bundled orders file (csv or xlsx) that lists the sample scenario's POs."""
    if ext not in ("csv", "xlsx"):
        raise ValueError(f"sample orders exist as csv or xlsx, not {ext!r}")
    return _DATA_DIR / f"orders.{ext}"


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"{path}: not valid JSON ({exc})") from exc
    return _parse(data, str(path))


def _keys(d: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ScenarioError(f"{where}: expected an object, got {type(d).__name__}")
    unknown = set(d) - allowed
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {sorted(unknown)}; expected some of {sorted(allowed)}")
    return d


def _int(v: Any, where: str, minimum: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ScenarioError(f"{where}: expected an integer >= {minimum}, got {v!r}")
    return v


def _range(v: Any, where: str) -> tuple[int, int]:
    if isinstance(v, list) and len(v) == 2:
        lo, hi = _int(v[0], where), _int(v[1], where)
        if lo > hi:
            raise ScenarioError(f"{where}: [min, max] with min > max: {v!r}")
        return lo, hi
    n = _int(v, where)
    return n, n


def _faults(v: Any, allowed: tuple[str, ...], where: str) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ScenarioError(f"{where}: expected a list of strings from {list(allowed)}")
    bad = [x for x in v if x not in allowed]
    if bad:
        raise ScenarioError(f"{where}: unknown fault(s) {bad}; expected items of {list(allowed)}")
    return tuple(v)


def _hang(v: Any, where: str) -> tuple[str, ...]:
    """One kind or a list of kinds, each at most once."""
    kinds = [v] if isinstance(v, str) else v
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
        raise ScenarioError(f"{where}: expected one of {list(HANG_KINDS)} or a list of them")
    bad = [k for k in kinds if k not in HANG_KINDS]
    if bad:
        raise ScenarioError(f"{where}: unknown kind(s) {bad}; expected items of {list(HANG_KINDS)}")
    if len(set(kinds)) != len(kinds):
        raise ScenarioError(f"{where}: a kind appears twice in {kinds}")
    return tuple(kinds)


def _attachments(v: Any, where: str) -> tuple[AttachmentSpec, ...]:
    if not isinstance(v, list):
        raise ScenarioError(f"{where}: expected a list of attachments")
    out = []
    for i, a in enumerate(v):
        w = f"{where}[{i}]"
        a = _keys(a, {"name", "kind", "size", "faults", "latency_ms"}, w)
        name = a.get("name")
        if not isinstance(name, str) or not name.strip() or any(ord(c) < 32 for c in name):
            raise ScenarioError(f"{w}.name: expected a non-empty file name without control characters")
        kind = a.get("kind", "link")
        if kind not in ALL_KINDS:
            raise ScenarioError(f"{w}.kind: unknown kind {kind!r}; expected one of {list(ALL_KINDS)}")
        if kind == "inline_pdf" and (not name.lower().endswith(".pdf") or "/" in name or "\\" in name):
            raise ScenarioError(f"{w}: an inline_pdf takes its name from the URL: it must end in .pdf "
                                f"and hold no / or \\ ({name!r})")
        if kind == "inline_labeled" and not _has_extension(name):
            raise ScenarioError(f"{w}: an inline_labeled file is named by its label alone: the name needs a "
                                f"file extension ({name!r})")
        size = _int(a.get("size", 10_000), f"{w}.size", minimum=1)
        if size > _MAX_SIZE:
            raise ScenarioError(f"{w}.size: at most {_MAX_SIZE} bytes")
        latency = a.get("latency_ms")
        out.append(AttachmentSpec(name, kind, size, _faults(a.get("faults", []), ATTACHMENT_FAULTS, f"{w}.faults"),
                                  None if latency is None else _int(latency, f"{w}.latency_ms", minimum=0)))
    return tuple(out)


def _parse(data: Any, source: str) -> Scenario:
    top = _keys(data, {"name", "description", "seed", "stall_seconds", "client_max_attempts", "latency",
                       "session", "pos", "markup", "revisions", "page_assets"}, source)
    markup = top.get("markup", "coupa")
    page_assets = top.get("page_assets", False)
    if not isinstance(page_assets, bool):
        raise ScenarioError(f"{source}: page_assets: expected true or false")
    if markup not in MARKUPS:
        raise ScenarioError(f"{source}: markup: unknown markup {markup!r}; expected one of {list(MARKUPS)}")
    latency = _keys(top.get("latency", {}), {"page_ms", "attachment_ms"}, f"{source}: latency")
    session = _keys(top.get("session", {}), {"expire_after_requests", "rotate_token", "sso_refresh_every",
                                             "sso_via"}, f"{source}: session")
    refresh = session.get("sso_refresh_every")
    sso_via = session.get("sso_via", "post_form")
    if sso_via not in SSO_VIA:
        raise ScenarioError(f"{source}: session.sso_via: unknown {sso_via!r}; expected one of {list(SSO_VIA)}")
    expire = session.get("expire_after_requests")
    rotate = session.get("rotate_token", False)
    if not isinstance(rotate, bool):
        raise ScenarioError(f"{source}: session.rotate_token: expected true or false")
    stall = top.get("stall_seconds", 30)
    if isinstance(stall, bool) or not isinstance(stall, (int, float)) or stall < 0:
        raise ScenarioError(f"{source}: stall_seconds: expected a number >= 0, got {stall!r}")
    pos_data = top.get("pos")
    if not isinstance(pos_data, list):
        raise ScenarioError(f"{source}: pos: expected a list of POs")
    pos = []
    for i, p in enumerate(pos_data):
        w = f"{source}: pos[{i}]"
        p = _keys(p, {"id", "supplier", "attachments", "requisition", "missing", "forbidden", "faults",
                      "expected", "attachments_delay_ms", "spinner", "redirect_to", "retry_after_seconds",
                      "hang"}, w)
        po_id = p.get("id")
        if not isinstance(po_id, str) or not _ID_RE.match(po_id):
            raise ScenarioError(f"{w}.id: expected letters, digits, '-' or '_' (the id in the URL), got {po_id!r}")
        w = f"{source}: PO {po_id}"
        supplier = p.get("supplier", "Demo Supplier")
        if not isinstance(supplier, str) or not supplier.strip():
            raise ScenarioError(f"{w}.supplier: expected a non-empty string")
        req = None
        if p.get("requisition") is not None:
            r = _keys(p["requisition"], {"id", "attachments"}, f"{w}.requisition")
            rid = r.get("id")
            if not isinstance(rid, str) or not _ID_RE.match(rid):
                raise ScenarioError(f"{w}.requisition.id: expected letters, digits, '-' or '_', got {rid!r}")
            req = RequisitionSpec(rid, _attachments(r.get("attachments", []), f"{w}.requisition.attachments"))
        flags = {}
        for flag in ("missing", "forbidden"):
            flags[flag] = p.get(flag, False)
            if not isinstance(flags[flag], bool):
                raise ScenarioError(f"{w}.{flag}: expected true or false")
        faults = _keys(p.get("faults", {}), {"page"}, f"{w}.faults")
        expected = None
        if p.get("expected") is not None:
            e = _keys(p["expected"], {"status", "reason"}, f"{w}.expected")
            if e.get("status") not in Status.__members__:
                raise ScenarioError(f"{w}.expected.status: expected one of {list(Status.__members__)}")
            if not isinstance(e.get("reason", ""), str):
                raise ScenarioError(f"{w}.expected.reason: expected a string")
            expected = (e["status"], e.get("reason", ""))
        delay = None
        if p.get("attachments_delay_ms") is not None:
            delay = _int(p["attachments_delay_ms"], f"{w}.attachments_delay_ms")
        spinner = p.get("spinner", True)
        if not isinstance(spinner, bool):
            raise ScenarioError(f"{w}.spinner: expected true or false")
        if "spinner" in p and delay is None:
            raise ScenarioError(f"{w}.spinner: only means something with attachments_delay_ms (a list drawn "
                                "by script); add that or drop spinner")
        redirect_to = p.get("redirect_to")
        if redirect_to is not None and (not isinstance(redirect_to, str) or not _ID_RE.match(redirect_to)):
            raise ScenarioError(f"{w}.redirect_to: expected the id of another PO of the scenario, got {redirect_to!r}")
        pos.append(PoSpec(
            id=po_id, supplier=supplier, attachments=_attachments(p.get("attachments", []), f"{w}.attachments"),
            requisition=req, missing=flags["missing"], forbidden=flags["forbidden"],
            page_faults=_faults(faults.get("page", []), PAGE_FAULTS, f"{w}.faults.page"), expected=expected,
            attachments_delay_ms=delay, spinner=spinner, redirect_to=redirect_to,
            retry_after_seconds=_int(p.get("retry_after_seconds", 1), f"{w}.retry_after_seconds"),
            hang=_hang(p.get("hang", []), f"{w}.hang"),
        ))
    seed = _int(top.get("seed", 0), f"{source}: seed")
    revisions = _revisions(top.get("revisions", []), source)
    if revisions:
        try:  # here, so the message names the file
            _history(seed, tuple(pos), revisions, len(revisions))
        except ScenarioError as exc:
            raise ScenarioError(f"{source}: {exc}") from None
    return Scenario(
        seed=seed,
        pos=tuple(pos),
        latency=LatencySpec(_range(latency.get("page_ms", 0), f"{source}: latency.page_ms"),
                            _range(latency.get("attachment_ms", 0), f"{source}: latency.attachment_ms")),
        session=SessionOptions(None if expire is None else _int(expire, f"{source}: session.expire_after_requests", 1),
                               rotate,
                               None if refresh is None else _int(refresh, f"{source}: session.sso_refresh_every", 1),
                               sso_via),
        stall_seconds=float(stall),
        client_max_attempts=_int(top.get("client_max_attempts", 3), f"{source}: client_max_attempts", 1),
        name=str(top.get("name", "")),
        description=str(top.get("description", "")),
        markup=markup,
        page_assets=page_assets,
        revisions=revisions,
    )


def _revisions(v: Any, source: str) -> tuple[Revision, ...]:
    """The optional top-level "revisions": a list of {"label": ..., "pos": {po_id: change}}."""
    if not isinstance(v, list):
        raise ScenarioError(f"{source}: revisions: expected a list of change sets")
    out = []
    for r, item in enumerate(v, start=1):
        item = _keys(item, {"label", "pos"}, f"{source}: revision {r}")
        label = item.get("label", "")
        if not isinstance(label, str):
            raise ScenarioError(f"{source}: revision {r}.label: expected a string")
        w = f"{source}: revision {r}" + (f" ({label})" if label else "")
        changes = item.get("pos", {})
        if not isinstance(changes, dict):
            raise ScenarioError(f"{w}.pos: expected an object of PO id -> change")
        made = []
        for po_id, c in changes.items():
            wp = f"{w}: PO {po_id}"
            c = _keys(c, {"add", "remove", "requisition_add", "requisition_remove"}, wp)
            if not c:
                raise ScenarioError(f"{wp}: nothing to change; give add, remove, requisition_add or requisition_remove")
            removes = {}
            for k in ("remove", "requisition_remove"):
                names = c.get(k, [])
                if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
                    raise ScenarioError(f"{wp}.{k}: expected a list of attachment names (served names, "
                                        "e.g. \"invoice (1).pdf\" for a repeated name's second copy)")
                removes[k] = tuple(names)
            made.append(PoChange(po_id, _attachments(c.get("add", []), f"{wp}.add"), removes["remove"],
                                 _attachments(c.get("requisition_add", []), f"{wp}.requisition_add"),
                                 removes["requisition_remove"]))
        out.append(Revision(label, tuple(made)))
    return tuple(out)


def _validate(s: Scenario) -> None:
    """Checks that hold however a Scenario was built (from JSON or in code)."""
    seen: set[str] = set()
    reqs: set[str] = set()
    for po in s.pos:
        if po.id in seen:
            raise ScenarioError(f"PO {po.id} appears twice in the scenario")
        seen.add(po.id)
        if po.missing and po.forbidden:
            raise ScenarioError(f"PO {po.id}: missing and forbidden at once; pick one")
        if po.requisition:
            if po.requisition.id in reqs:
                raise ScenarioError(f"requisition {po.requisition.id} belongs to two POs; give each its own")
            reqs.add(po.requisition.id)
        for a in (*po.attachments, *(po.requisition.attachments if po.requisition else ())):
            if a.kind not in ALL_KINDS:
                raise ScenarioError(f"PO {po.id}: unknown attachment kind {a.kind!r}")
            if any(f not in ATTACHMENT_FAULTS for f in a.faults):
                raise ScenarioError(f"PO {po.id}: unknown attachment fault in {list(a.faults)}")
        if any(f not in PAGE_FAULTS for f in po.page_faults):
            raise ScenarioError(f"PO {po.id}: unknown page fault in {list(po.page_faults)}")
        if po.attachments_delay_ms is not None and po.attachments_delay_ms < 0:
            raise ScenarioError(f"PO {po.id}: attachments_delay_ms must be >= 0")
        if po.retry_after_seconds < 0:
            raise ScenarioError(f"PO {po.id}: retry_after_seconds must be >= 0")
        if any(k not in HANG_KINDS for k in po.hang) or len(set(po.hang)) != len(po.hang):
            raise ScenarioError(f"PO {po.id}: hang must name kinds of {list(HANG_KINDS)}, each once: {list(po.hang)}")
    by_id = {po.id: po for po in s.pos}
    for po in s.pos:
        redirects = "redirect_other_po" in po.page_faults
        if redirects and po.redirect_to is None:
            raise ScenarioError(f"PO {po.id}: the redirect_other_po page fault needs redirect_to (the PO it sends "
                                "the browser to)")
        if po.redirect_to is None:
            continue
        if not redirects:
            raise ScenarioError(f"PO {po.id}: redirect_to is only used by the redirect_other_po page fault; "
                                "add that fault or drop redirect_to")
        target = by_id.get(po.redirect_to)
        if target is None or target.id == po.id:
            raise ScenarioError(f"PO {po.id}: redirect_to {po.redirect_to!r} must name another PO of the scenario")
        if target.missing or target.forbidden or target.page_faults or target.redirect_to is not None:
            raise ScenarioError(f"PO {po.id}: redirect_to {target.id!r} must be a PO served normally (not missing, "
                                "not forbidden, no page faults, no redirect of its own), so that arrivals by "
                                "redirect never change its own outcome")
    if s.markup not in MARKUPS:
        raise ScenarioError(f"unknown markup {s.markup!r}; expected one of {list(MARKUPS)}")
    if isinstance(s.revision, bool) or not isinstance(s.revision, int) or not 0 <= s.revision <= len(s.revisions):
        raise ScenarioError(f"revision {s.revision!r}: expected 0 to {len(s.revisions)} (the scenario's revisions)")
    if s.client_max_attempts < 1:
        raise ScenarioError("client_max_attempts must be at least 1")
    if s.session.sso_via not in SSO_VIA:
        raise ScenarioError(f"unknown session.sso_via {s.session.sso_via!r}; expected one of {list(SSO_VIA)}")
    if s.session.sso_refresh_every is not None and s.session.sso_refresh_every < 1:
        raise ScenarioError("session.sso_refresh_every must be at least 1 (or null: never)")


# -- generated scenarios for benchmarks -----------------------------------------------------------
_GEN_SUPPLIERS = ("Acme Office Supplies", "Globex Corporation", "Nordic Parts AB", "Initech Services",
                  "Müller & Söhne: GmbH")
_GEN_DOCS = (("Invoice", "pdf"), ("Delivery note", "pdf"), ("Quote", "docx"), ("Price list", "xlsx"),
             ("Order confirmation", "msg"), ("Supplier reply", "eml"), ("Certificate", "pdf"))


def generate_scenario(count: int, seed: int, attachments_per_po: tuple[int, int] = (2, 3), page_ms: int = 400,
                      attachment_ms: int = 150, size: tuple[int, int] = (20_000, 60_000),
                      page_assets: bool = False) -> Scenario:
    """A fixed-latency, fault-free scenario of `count` POs (ids 200001...), every attachment kind mixed in;
    `page_assets`: pages with a logo and icons, as a real tenant's."""
    if count < 1:
        raise ScenarioError("generate_scenario: count must be at least 1")
    rng = random.Random(f"generate|{seed}")
    pos = []
    for n in range(count):
        po_id = str(200001 + n)
        atts = []
        for i in range(rng.randint(*attachments_per_po)):
            kind = rng.choice(KINDS)  # the Coupa kinds only: generated scenarios stay as they were
            stem, ext = rng.choice(_GEN_DOCS)
            if kind == "inline_pdf":
                ext = "pdf"
            atts.append(AttachmentSpec(f"{stem} {po_id}-{i + 1}.{ext}", kind, rng.randint(*size)))
        pos.append(PoSpec(id=po_id, supplier=_GEN_SUPPLIERS[n % len(_GEN_SUPPLIERS)], attachments=tuple(atts)))
    return Scenario(seed=seed, pos=tuple(pos), latency=LatencySpec((page_ms, page_ms), (attachment_ms, attachment_ms)),
                    name=f"generated-{count}-{seed}", description="fixed latency, no faults (benchmarks)",
                    page_assets=page_assets)


def many_attachments_po(po_id: str, count: int, kinds: Iterable[str] = ("link",),
                        size: tuple[int, int] = (2_000, 5_000), seed: int = 0,
                        supplier: str = "Acme Office Supplies") -> PoSpec:
    """One PO with `count` attachments, their kinds taken from `kinds` in turn, every name distinct.

    For scenarios that test a long attachment list (issue 21): the names say which file is which
    ("Invoice 410003-017.pdf"), so a missing or doubled file is easy to spot in a failure message."""
    kinds = tuple(kinds)
    if count < 1 or not kinds or any(k not in ALL_KINDS for k in kinds):
        raise ScenarioError(f"many_attachments_po: count >= 1 and kinds from {list(ALL_KINDS)}, got {count}, {kinds}")
    rng = random.Random(f"many|{seed}|{po_id}")
    atts = []
    for i in range(count):
        kind = kinds[i % len(kinds)]
        stem, ext = _GEN_DOCS[i % len(_GEN_DOCS)]
        if kind in ("inline_pdf", "inline_labeled"):
            ext = "pdf"
        atts.append(AttachmentSpec(f"{stem} {po_id}-{i + 1:03d}.{ext}", kind, rng.randint(*size)))
    return PoSpec(id=po_id, supplier=supplier, attachments=tuple(atts))


def many_attachment_pos(counts: Iterable[int] = (12, 50, 300), mixed: Iterable[int] = (50,), first_id: int = 410001,
                        size: tuple[int, int] = (2_000, 5_000), seed: int = 0) -> tuple[PoSpec, ...]:
    """POs with these many `link` attachments, then POs with these many of every Coupa kind in turn
    (ids first_id, first_id + 1, ...): the PO list of data/many_attachments_scenario.json."""
    plan = [(n, ("link",)) for n in counts] + [(n, KINDS) for n in mixed]
    return tuple(many_attachments_po(str(first_id + i), n, kinds, size, seed,
                                     _GEN_SUPPLIERS[i % len(_GEN_SUPPLIERS)])
                 for i, (n, kinds) in enumerate(plan))
