"""What a portal looks like to the PO workflow: URLs, selectors and the texts of its error pages."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class SiteDefinition:
    name: str
    po_path: str  # with {id}
    login_paths: tuple[str, ...]
    login_selectors: tuple[str, ...]
    ready_selectors: tuple[str, ...]  # any of these present = the PO (or requisition) page has rendered
    supplier_selectors: tuple[str, ...]
    attachment_selectors: tuple[str, ...]
    requisition_selector: str
    not_found_texts: tuple[str, ...]
    not_authorized_texts: tuple[str, ...]
    server_error_texts: tuple[str, ...]
    error_selectors: tuple[str, ...]  # hold a page's real error; never a generic notice area
    overlay_selectors: tuple[str, ...] = ()  # floating bars that can cover links
    id_prefixes: tuple[str, ...] = ("PO", "PM")
    default_base_url: str = ""
    sso_leaves_host: bool = True  # leaving the portal's host means an identity provider wants a login
    # False: attachments are clicked with element.click() run in the page, which no overlay can
    # intercept and which starts a download about 60 ms sooner than WebDriver's pointer click
    # (BENCHMARKS.md). True: scroll, then a pointer click (a trusted event) for a portal whose
    # handlers ignore script clicks; a covered element still falls back to the script click.
    pointer_clicks: bool = False
    extra: dict = field(default_factory=dict)

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

    def page_probe_config(self, base_url: str) -> dict:
        """What the in-page state probe needs, as one JSON-able dict (one round trip per poll)."""
        return {
            "host": self.host_of(base_url) if self.sso_leaves_host else "",
            "login_paths": list(self.login_paths),
            "login_selectors": list(self.login_selectors),
            "ready_selectors": list(self.ready_selectors),
            "not_found_texts": list(self.not_found_texts),
            "not_authorized_texts": list(self.not_authorized_texts),
            "server_error_texts": list(self.server_error_texts),
            "error_selectors": list(self.error_selectors),
        }
