"""What a portal looks like to the PO workflow: URLs, the evidence a page must show, selectors, texts.

A final answer (COMPLETED, PARTIAL, NO_ATTACHMENTS) is only ever given on a page that proved it is
this PO's page (docs/design.md, "Evidence before answers"): the URL still this PO's after redirects,
the PO number in one of `po_number_selectors`, and one of `po_markers` present. Everything here is
data; a portal is added as a site file (core/sites/site_file.py), never as workflow code.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class SiteDefinition:
    name: str
    po_path: str  # with {id}
    login_paths: tuple[str, ...]
    login_selectors: tuple[str, ...]
    # Identity: the number must appear as a whole token in one of these elements' text ...
    po_number_selectors: tuple[str, ...]
    # ... and one of these markers must be present (empty: the number and the URL suffice).
    po_markers: tuple[str, ...]
    supplier_selectors: tuple[str, ...]
    attachment_selectors: tuple[str, ...]
    # The part of the page that holds the attachments: it must be there, settled and empty for
    # NO_ATTACHMENTS to be believed.
    attachment_area_selectors: tuple[str, ...]
    requisition_selector: str
    not_found_texts: tuple[str, ...]
    not_authorized_texts: tuple[str, ...]
    server_error_texts: tuple[str, ...]
    error_selectors: tuple[str, ...]  # hold a page's real error; never a generic notice area
    requisition_path: str = ""  # with {id}; empty: requisition pages are not used as a fallback
    requisition_number_selectors: tuple[str, ...] = ()
    requisition_markers: tuple[str, ...] = ()
    loading_selectors: tuple[str, ...] = ()  # a spinner inside the attachment area: not settled yet
    loaded_selectors: tuple[str, ...] = ()  # present once the attachment list is drawn (if the site has one)
    quiet_ms: int = 200  # the DOM must have been quiet this long before a found list is trusted
    empty_quiet_ms: int = 2000  # ... and this long before an empty list is believed
    settle_timeout_s: float = 20.0  # bound on waiting for the attachment area to settle
    id_prefixes: tuple[str, ...] = ("PO", "PM")
    default_base_url: str = ""
    sso_leaves_host: bool = True  # another host is the identity provider: a wall unless it comes straight back
    # False: attachments are clicked with element.click() run in the page, which no overlay can
    # intercept and which starts a download about 60 ms sooner than WebDriver's pointer click
    # (BENCHMARKS.md). True: scroll, then a pointer click (a trusted event) for a portal whose
    # handlers ignore script clicks; a covered element still falls back to the script click.
    pointer_clicks: bool = False
    source: str = ""  # the site file this definition came from, for messages

    def po_id(self, po_number: str) -> str:
        """The id in the URL: the PO number without a leading PO/PM, case-insensitive."""
        pattern = r"^\s*(?:" + "|".join(re.escape(p) for p in self.id_prefixes) + r")[\s#:_-]*"
        return re.sub(pattern, "", str(po_number), flags=re.IGNORECASE).strip()

    def po_url(self, base_url: str, po_number: str) -> str:
        return base_url.rstrip("/") + self.po_path.format(id=self.po_id(po_number))

    def host_of(self, base_url: str) -> str:
        return urlsplit(base_url).netloc.lower()

    def is_login_url(self, base_url: str, url: str) -> bool:
        """Whether a URL is the portal's own sign-in page: for popups and downloads, whose pages are
        not probed in-page. Another host is not taken for a sign-in here (a popup may show a file host)."""
        parts = urlsplit(url)
        if parts.netloc.lower() != self.host_of(base_url):
            return False
        return any(parts.path == p or parts.path.startswith(p.rstrip("/") + "/") for p in self.login_paths)

    def requisition_id(self, url: str) -> str:
        """The requisition id in a requisition page's URL, or '' when the URL is not one."""
        if not self.requisition_path or "{id}" not in self.requisition_path:
            return ""
        head, _, tail = self.requisition_path.partition("{id}")
        path = unquote(urlsplit(url).path)
        if not path.startswith(head) or (tail and not path.endswith(tail)):
            return ""
        return path[len(head):len(path) - len(tail) if tail else None].strip("/")

    def page_probe_config(self, base_url: str) -> dict[str, Any]:
        """What the in-page state probe needs, as one JSON-able dict (one round trip per poll)."""
        return {
            "host": self.host_of(base_url) if self.sso_leaves_host else "",
            "login_paths": list(self.login_paths),
            "login_selectors": list(self.login_selectors),
            "not_found_texts": list(self.not_found_texts),
            "not_authorized_texts": list(self.not_authorized_texts),
            "server_error_texts": list(self.server_error_texts),
            "error_selectors": list(self.error_selectors),
            "attachment_selectors": list(self.attachment_selectors),
            "area_selectors": list(self.attachment_area_selectors),
            "loading_selectors": list(self.loading_selectors),
            "loaded_selectors": list(self.loaded_selectors),
        }

    def expectation(self, kind: str, page_id: str, base_url: str) -> dict[str, Any]:
        """What the page of one PO (kind "po") or requisition must prove about itself."""
        if kind == "po":
            path, numbers, markers = self.po_path, self.po_number_selectors, self.po_markers
        else:
            path, numbers, markers = self.requisition_path, self.requisition_number_selectors, self.requisition_markers
        base_path = urlsplit(base_url).path.rstrip("/")
        return {
            "kind": kind,
            "id": page_id,
            "path": base_path + path.format(id=page_id),
            "number_selectors": list(numbers),
            "markers": list(markers),
        }

    def selector_fields(self) -> dict[str, tuple[str, ...]]:
        """Every CSS selector this definition holds, by field: what a browser must accept."""
        out = {f: getattr(self, f) for f in (
            "login_selectors", "po_number_selectors", "po_markers", "requisition_number_selectors",
            "requisition_markers", "supplier_selectors", "attachment_selectors", "attachment_area_selectors",
            "loading_selectors", "loaded_selectors", "error_selectors")}
        out["requisition_selector"] = (self.requisition_selector,) if self.requisition_selector else ()
        return out
