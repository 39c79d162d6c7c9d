"""HTML of the demo portal, shaped like Coupa's pages so the Coupa site definition is what gets exercised.

The shapes that matter (selectors, error texts, the floating toolbar that covers an attachment link)
follow docs/design.md. Everything else is filler that makes the page long enough to scroll.

The second markup (markup = "variant") lives in variant_pages.py with the same functions; the pages
that no portal draws itself (a proxy's 502, a bare 500, a rate-limit page, a maintenance page, an
identity provider's interstitial and its sign-in bounces, sub-resources that never finish) are at the
end of this module and shared by both.

Over 400 lines on purpose: a catalogue of page shapes (Coupa's, then what proxies, bare servers
and identity providers draw), each a small function a test names; one file keeps every shape in
sight when a new one is added.
"""
from __future__ import annotations

import json
import re
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from html import escape
from typing import Iterable
from urllib.parse import quote

from pobatch.core.demo_portal.scenario import AttachmentEntry, PoSpec, RequisitionSpec

_STYLE = """
body { margin: 0; font-family: Arial, Helvetica, sans-serif; font-size: 14px; color: #222; }
header.top_nav { background: #0b3b60; color: #fff; padding: 10px 24px; font-weight: bold; }
main { padding: 16px 24px 24px; }
.page_buttons_right.orderHeaderShowFloatingSection.floatingSectionOnTop {
  position: fixed; top: 0; left: 0; right: 0; height: 96px; z-index: 1000; background: #eef2f6;
  border-bottom: 1px solid #b8c4d0; display: flex; align-items: center; justify-content: flex-end;
  gap: 8px; padding: 0 24px; box-sizing: border-box; }
.page_buttons_right button { padding: 6px 14px; }
div.notice { background: #fff8d6; border: 1px solid #e6d27a; padding: 8px; margin: 8px 0; }
div.flash_error { background: #fde2e1; border: 1px solid #e0a19f; padding: 8px; margin: 8px 0; color: #8a1f1b; }
table.filler { border-collapse: collapse; width: 100%; margin: 12px 0; }
table.filler td, table.filler th { border: 1px solid #d5dde5; padding: 10px 8px; height: 22px; text-align: left; }
#attachments { border: 1px solid #b8c4d0; padding: 8px 16px; margin: 16px 0; }
#attachments ul { list-style: none; padding: 0; margin: 0; }
#attachments li.attachment_item { padding: 6px 0; }
.attachment_js, .attachment_title { color: #0b62a4; text-decoration: underline; cursor: pointer; }
a.requisition_link { display: inline-block; margin: 8px 0; }
"""

# JS-triggered downloads (kinds js and span): a detached anchor to the file, clicked; nothing is fetched
# by the page itself, so the browser's own download machinery does the work, as on the real portal.
_DOWNLOAD_JS = """
<script>
(function () {
  function startDownload(token) {
    var a = document.createElement('a');
    a.href = '/attachments/' + encodeURIComponent(token) + '/raw';
    a.click();
  }
  document.querySelectorAll('#attachments [data-token]').forEach(function (el) {
    el.addEventListener('click', function (ev) {
      ev.preventDefault();
      // kind trusted_js: a handler that ignores clicks a script made (event.isTrusted), as some portals do
      if (!ev.isTrusted && el.hasAttribute('data-trusted-only')) { return; }
      startDownload(el.getAttribute('data-token'));
    });
    el.addEventListener('keydown', function (ev) {
      if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); startDownload(el.getAttribute('data-token')); }
    });
  });
  // Open at the attachments, as a deep link would: the first attachment then sits under the floating
  // toolbar, so a plain click on it is intercepted unless the client scrolls it clear first.
  var first = document.querySelector('#attachments li.attachment_item');
  if (first) { window.scrollTo(0, first.getBoundingClientRect().top + window.pageYOffset - 30); }
})();
</script>
"""


def _layout(title: str, body: str, toolbar: bool = False) -> str:
    bar = (
        '<div class="page_buttons_right orderHeaderShowFloatingSection floatingSectionOnTop" '
        'style="position:fixed;top:0;left:0;right:0;height:96px;z-index:1000">'
        '<button type="button" class="button">Print</button>'
        '<button type="button" class="button">Receive</button>'
        '<button type="button" class="button">Change Order</button>'
        '<button type="button" class="button">Close Order</button></div>'
        if toolbar else ""
    )
    return html_document(title, _STYLE, bar + '<header class="top_nav">coupa <span class="demo_badge">(pobatch demo '
                         'portal)</span></header>\n', "<main>", body)


def html_document(title: str, style: str, top: str, main_tag: str, body: str) -> str:
    """The page around a body, the same for every markup: what differs is passed in."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><style>{style}</style></head>\n<body>\n{top}"
        f"{main_tag}\n{body}\n</main>\n</body></html>\n"
    )


def login_page(return_to: str, error: str = "") -> str:
    flash = f'<div class="flash_error">{escape(error)}</div>' if error else ""
    body = f"""
<h2>Sign in to Coupa</h2>
{flash}
<form id="new_session" class="new_session" action="/sessions" method="post" accept-charset="UTF-8">
  <input type="hidden" name="return_to" value="{escape(return_to)}">
  <p><label for="user_email">Email</label><br>
     <input type="email" id="user_email" name="user[login]" autocomplete="username" size="40"></p>
  <p><label for="user_password">Password</label><br>
     <input type="password" id="user_password" name="user[password]" autocomplete="current-password" size="40"></p>
  <p><button type="submit" id="login_button" name="commit" value="Sign In">Sign In</button></p>
</form>
<p class="hint">Demo portal: any e-mail, password <code>demo</code>.</p>
"""
    return _layout("Sign In | Coupa", body)


def home_page(pos: Iterable[PoSpec]) -> str:
    items = "\n".join(
        f'<li><a href="/order_headers/{escape(po.id)}">Purchase Order #{escape(po.id)}</a> '
        f'<span class="supplier">{escape(po.supplier)}</span></li>'
        for po in pos
    )
    # A heading, like every dashboard: a client that takes any h1 for a PO page is fooled by it.
    return _layout("Home | Coupa", '<h1 class="dashboard_title">Home</h1>\n'
                   f"<h2>Purchase Orders</h2>\n<ul class=\"po_list\">\n{items}\n</ul>")


def _attachment_element(e: AttachmentEntry) -> str:
    name = escape(e.spec.name)
    kind = e.spec.kind
    if kind == "link":
        return f'<a class="attachment_link" href="{escape(e.page_url)}">{name}</a>'
    if kind == "download_attr":
        return f'<a class="attachment_download" href="{escape(e.page_url)}" download="{name}">{name}</a>'
    if kind in ("js", "trusted_js"):
        trusted = " data-trusted-only" if kind == "trusted_js" else ""
        return (f'<span class="attachment_js" role="button" tabindex="0" aria-label="Download file attachment '
                f'{name}" data-token="{escape(e.token)}"{trusted}>{name}</span>')
    if kind == "span":
        return (f'<span class="attachment_title" title="{name}" aria-label="file attachment {name}" '
                f'tabindex="0" data-token="{escape(e.token)}">{name}</span>')
    if kind == "popup":
        return f'<a class="attachment_popup" href="{escape(e.page_url)}" target="_blank">{name}</a>'
    if kind in ("inline_pdf", "inline_labeled"):
        return f'<a class="attachment_inline" href="{escape(e.page_url)}">{name}</a>'
    raise ValueError(f"unknown attachment kind {kind!r}")


def _filler_rows(prefix: str, count: int) -> str:
    rows = "\n".join(
        f"<tr><td>{i}</td><td>{escape(prefix)} item {i}</td><td>{(i * 7) % 13 + 1} EA</td>"
        f"<td>{(i * 37) % 500 + 10}.00 EUR</td></tr>"
        for i in range(1, count + 1)
    )
    return f'<table class="filler"><tr><th>#</th><th>Description</th><th>Qty</th><th>Price</th></tr>\n{rows}</table>'


def list_html(entries: Iterable[AttachmentEntry]) -> str:
    """The attachment list as it stands in the attachment area, or its "No attachments" state."""
    entries = list(entries)
    items = "\n".join(f'<li class="attachment_item">{_attachment_element(e)}</li>' for e in entries)
    return f'<ul>\n{items}\n</ul>' if entries else '<p class="empty">No attachments</p>'


def document_page(title: str, heading: str, heading_class: str, supplier: str,
                  entries: Iterable[AttachmentEntry], requisition_id: str | None,
                  delayed: "DelayedList | None" = None) -> str:
    """A PO or requisition page: header, long filler, the attachments section, more filler."""
    entries = list(entries)
    if delayed is None:
        section = list_html(entries)
        script = _DOWNLOAD_JS if entries else ""
    else:  # drawn by script: only the area (and perhaps its spinner) is in the HTML
        section = '<div class="spinner">Loading…</div>' if delayed.spinner else ""
        script = delayed_list_script(delayed.endpoint, "attachments", ".spinner", "data-token",
                                     "/attachments/{token}/raw", "li.attachment_item")
    req = (f'<a href="/requisition_headers/{escape(requisition_id)}" class="requisition_link">'
           f"Requisition #{escape(requisition_id)}</a>" if requisition_id else "")
    body = f"""
<div class="notice">Scheduled maintenance on Sunday</div>
<h1 class="{heading_class}">{escape(heading)}</h1>
<div class="supplier-info"><span data-supplier-name="{escape(supplier)}">Supplier: {escape(supplier)}</span></div>
<h3>Lines</h3>
{_filler_rows("Line", 32)}
<div id="attachments" class="attachments_section">
<h3>Attachments</h3>
{section}
</div>
{req}
<h3>History</h3>
{_filler_rows("Event", 32)}
{script}
"""
    return _layout(title, body, toolbar=True)


def po_page(po: PoSpec, entries: Iterable[AttachmentEntry], delayed: "DelayedList | None" = None) -> str:
    rid = po.requisition.id if po.requisition else None
    return document_page(f"Purchase Order #{po.id} | Coupa", f"Purchase Order #{po.id}", "po-title",
                         po.supplier, entries, rid, delayed)


def requisition_page(po: PoSpec, req: RequisitionSpec, entries: Iterable[AttachmentEntry]) -> str:
    return document_page(f"Requisition #{req.id} | Coupa", f"Requisition #{req.id}", "requisition-title",
                         po.supplier, entries, None)


def page_url(e: AttachmentEntry) -> str:
    """Where the attachment's element points (Coupa's URLs: /attachment_files/..., /attachments/...)."""
    return e.page_url


def file_url(e: AttachmentEntry) -> str:
    """The URL that answers with the attachment's bytes."""
    return e.file_url


def attachment_element(e: AttachmentEntry) -> str:
    return _attachment_element(e)


def popup_page(file_url: str) -> str:
    """The page a popup attachment opens: it starts the download itself and stays open."""
    url = escape(file_url)
    body = (f'<p>Your download will start shortly. <a href="{url}">Download</a></p>\n'
            f"<script>window.location.href = {json.dumps(file_url)};</script>")
    return _layout("Download | Coupa", body)


def not_found_page() -> str:
    body = ('<div class="flash_error">Oops! We couldn\'t find what you wanted</div>\n'
            "<p>The page you were looking for doesn't exist. You may have mistyped the address or the page "
            "may have moved.</p>")
    return _layout("Page not found | Coupa", body)


def not_authorized_page() -> str:
    body = ('<div class="flash_error">You are not authorized to view this page</div>\n'
            "<p>Ask your administrator for access.</p>")
    return _layout("Not authorized | Coupa", body)


def server_error_page() -> str:
    """Rails' stock public/500.html, as a real tenant shows it."""
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        "<title>We're sorry, but something went wrong (500)</title></head>\n<body>\n"
        '<div class="dialog"><div><h1>We\'re sorry, but something went wrong.</h1></div>\n'
        "<p>If you are the application owner check the logs for more information.</p></div>\n</body></html>\n"
    )


# -- a list drawn by script after the page has loaded ----------------------------------------------
@dataclass(frozen=True)
class DelayedList:
    """How a PO page draws its attachment list later: the JSON endpoint to fetch, and a spinner or not."""

    endpoint: str
    spinner: bool


_DELAYED_JS = """
<script>
(function () {
  var area = document.getElementById(%(area)s);
  function startDownload(token) {
    var a = document.createElement('a');
    a.href = %(download)s.replace('{token}', encodeURIComponent(token));
    a.click();
  }
  function target(ev) { return ev.target.closest ? ev.target.closest('[' + %(attr)s + ']') : null; }
  area.addEventListener('click', function (ev) {
    var el = target(ev);
    if (!el) { return; }
    ev.preventDefault();
    if (!ev.isTrusted && el.hasAttribute('data-trusted-only')) { return; }
    startDownload(el.getAttribute(%(attr)s));
  });
  area.addEventListener('keydown', function (ev) {
    var el = target(ev);
    if (el && (ev.key === 'Enter' || ev.key === ' ')) { ev.preventDefault(); startDownload(el.getAttribute(%(attr)s)); }
  });
  fetch(%(endpoint)s, {credentials: 'same-origin', cache: 'no-store', headers: {'Accept': 'application/json'}})
    .then(function (r) { if (!r.ok) { throw new Error('HTTP ' + r.status); } return r.json(); })
    .then(function (data) {
      var marker = area.querySelector(%(marker)s);
      if (marker) { marker.parentNode.removeChild(marker); }
      area.insertAdjacentHTML('beforeend', data.html);
      var first = area.querySelector(%(item)s);
      if (first) { window.scrollTo(0, first.getBoundingClientRect().top + window.pageYOffset - 30); }
    })
    .catch(function () { /* the loading marker stays: the list never settled */ });
})();
</script>
"""


def delayed_list_script(endpoint: str, area_id: str, marker: str, token_attr: str, download: str,
                        item: str) -> str:
    """The script that fetches the list, removes the loading marker and draws the list (or its empty state)."""
    return _DELAYED_JS % {k: json.dumps(v) for k, v in {
        "endpoint": endpoint, "area": area_id, "marker": marker, "attr": token_attr, "download": download,
        "item": item}.items()}


# -- pages no portal draws itself: proxies, bare servers, identity providers ------------------------
def bare_server_error_page() -> str:
    """A 500 from a server without an error page of its own: a heading, nothing of the portal."""
    return ("<!DOCTYPE html>\n<html><head><title>500 Internal Server Error</title></head>\n"
            "<body>\n<h1>Internal Server Error</h1>\n</body></html>\n")


_PROXY_TITLES = {502: "502 Bad Gateway", 503: "503 Service Temporarily Unavailable"}


def proxy_error_page(status: int) -> str:
    """nginx's own error page, as a reverse proxy in front of the portal shows it."""
    title = _PROXY_TITLES[status]
    return (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
            "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")


def too_many_requests_page() -> str:
    return ("<!DOCTYPE html>\n<html><head><title>Too Many Requests</title></head>\n<body>\n"
            "<h1>Too Many Requests</h1>\n<p>You have sent too many requests. Please slow down.</p>\n"
            "</body></html>\n")


def maintenance_page() -> str:
    """Served with HTTP 200: only the page's content says that this is not the PO."""
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Maintenance</title></head>\n<body>\n"
            "<h1>Down for maintenance</h1>\n<p>We are improving the service and will be back shortly.</p>\n"
            "</body></html>\n")


def bare_not_found_page() -> str:
    """A 404 with none of the portal's not-found texts (a proxy or a bare server answered)."""
    return ("<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n<body>\n<h1>Not Found</h1>\n"
            "<p>The requested URL was not found on this server.</p>\n</body></html>\n")


def sso_interstitial_page(continue_url: str) -> str:
    """An identity provider's "Continue to sign in" page, on its own host."""
    url = escape(continue_url)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign in | Identity Provider"
            "</title></head>\n<body>\n<div class=\"idp-card\">\n<h2>Your organisation signs you in</h2>\n"
            "<p>Your session has ended. Continue to sign in with your organisation's account.</p>\n"
            f'<form method="get" action="{url}"><button type="submit" id="idp-continue">Continue to sign in</button>'
            "</form>\n</div>\n</body></html>\n")


# -- an identity provider that sends the browser back by itself (session.sso_via) ------------------
def _idp_document(title: str, head: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title>{head}</head>\n<body>\n<div class=\"idp-card\">\n{body}\n</div>\n"
            "</body></html>\n")


def sso_post_form_page(acs_url: str, saml_response: str, relay_state: str) -> str:
    """SAML's HTTP-POST binding: a hidden form that the page's own script submits on load."""
    body = (f'<form id="saml-post" method="post" action="{escape(acs_url)}">\n'
            f'<input type="hidden" name="SAMLResponse" value="{escape(saml_response)}">\n'
            f'<input type="hidden" name="RelayState" value="{escape(relay_state)}">\n'
            '<noscript><button type="submit">Continue</button></noscript>\n</form>\n'
            "<p>Signing you in…</p>\n<script>document.getElementById('saml-post').submit();</script>")
    return _idp_document("Signing in | Identity Provider", "", body)


def sso_script_page(url: str) -> str:
    """A provider page that leaves by script (location.replace keeps it out of the history)."""
    body = f"<p>Signing you in…</p>\n<script>location.replace({json.dumps(url)});</script>"
    return _idp_document("Signing in | Identity Provider", "", body)


def sso_meta_page(url: str) -> str:
    """A provider page that leaves by a zero-second meta refresh."""
    head = f'<meta http-equiv="refresh" content="0;url={escape(url)}">'
    return _idp_document("Signing in | Identity Provider", head, "<p>Signing you in…</p>")


def sso_password_page(action: str, return_to: str, error: str = "") -> str:
    """The provider's own sign-in: it stays until a person types a password."""
    flash = f'<p class="idp-error" role="alert">{escape(error)}</p>\n' if error else ""
    body = (f"<h2>Sign in to your organisation</h2>\n{flash}"
            f'<form id="idp-login" method="post" action="{escape(action)}">\n'
            f'<input type="hidden" name="return_to" value="{escape(return_to)}">\n'
            '<p><label for="idp-account">Account</label><br>'
            '<input type="text" id="idp-account" name="account" autocomplete="username"></p>\n'
            '<p><label for="idp-password">Password</label><br>'
            '<input type="password" id="idp-password" name="password" autocomplete="current-password"></p>\n'
            '<p><button type="submit" id="idp-submit">Sign in</button></p>\n</form>')
    return _idp_document("Sign in | Identity Provider", "", body)


def sso_failed_page() -> str:
    """What the portal answers a ticket or SAMLResponse it did not issue, or one already used."""
    body = ('<div class="flash_error">Single sign-on failed: the response from your identity provider is not '
            "valid</div>\n<p>Sign in again.</p>")
    return _layout("Sign-in failed | Coupa", body)


# -- sub-resources that never answer (per PO "hang") -----------------------------------------------
def hang_html(kinds: Iterable[str], po_id: str, n: int) -> str:
    """Markup for a tracking pixel, an async script, a chat iframe or a long-poll that never finish;
    `n` makes every URL unique, so no cache can answer for the portal."""
    q = f"{quote(po_id, safe='')}?n={n}"
    parts = {
        "image": f'<img class="tracking-pixel" src="/hang/img/{q}" alt="" width="1" height="1">',
        "async_script": f'<script async src="/hang/js/{q}"></script>',
        "iframe": f'<iframe class="chat-widget" src="/hang/frame/{q}" title="Chat" width="1" height="1"></iframe>',
        "longpoll": ("<script>fetch(" + json.dumps(f"/hang/poll/{q}") +
                     ", {cache: 'no-store'}).catch(function () {});</script>"),
    }
    return "\n".join(parts[k] for k in kinds)


def not_available_page() -> str:
    """A missing file answered with 200 and a plain page (attachment fault html200): no error text the
    site knows, no PO markup; a client must notice it is a page, not the file."""
    return _layout("Document | Coupa", '<h1 class="doc_title">Document</h1>\n'
                   "<p>This document is not available. It may have been moved or archived.</p>")


# -- a real tenant's images (scenario "page_assets") -----------------------------------------------
# A Coupa page carries a company logo, toolbar icons and a file-type icon per attachment; static files
# a tenant serves with a long cache lifetime. Drawn here as small PNGs, deterministic, no files shipped.
TOOLBAR_ICONS = ("home", "requests", "orders", "invoices", "suppliers", "notifications", "help", "profile")
FILE_ICONS = ("pdf", "doc", "sheet", "mail", "archive", "image", "text", "other")
_FILE_ICON_OF = {"pdf": "pdf", "doc": "doc", "docx": "doc", "xls": "sheet", "xlsx": "sheet", "csv": "sheet",
                 "msg": "mail", "eml": "mail", "zip": "archive", "png": "image", "jpg": "image", "tif": "image",
                 "txt": "text"}


def _png(width: int, height: int, seed: int) -> bytes:
    """An RGBA PNG: a two-colour pattern with some texture, so it compresses like a real icon or logo."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = bytearray()
    for y in range(height):
        rows.append(0)
        for x in range(width):
            v = (x * 7 + y * 13 + seed * 31 + (x * y) % (seed + 5)) & 0xFF
            alpha = 255 if (x + y + seed) % 9 else 160
            rows += bytes(((v + seed * 40) & 0xFF, (v * 3) & 0xFF, (255 - v) & 0xFF, alpha))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(rows), 9)) + chunk(b"IEND", b""))


@lru_cache(maxsize=None)
def asset(path: str) -> bytes | None:
    """The bytes of /assets/<path>, or None when there is no such asset."""
    if path == "logo.png":
        return _png(240, 60, 1)
    m = re.fullmatch(r"icons/(toolbar|file)-([a-z]+)\.png", path)
    if m and m.group(2) in (TOOLBAR_ICONS if m.group(1) == "toolbar" else FILE_ICONS):
        names = TOOLBAR_ICONS if m.group(1) == "toolbar" else FILE_ICONS
        return _png(24, 24, 2 + names.index(m.group(2)) + (0 if m.group(1) == "toolbar" else 10))
    return None


def with_assets(html: str) -> str:
    """A PO or requisition page with its images: the logo in the header, the toolbar icons above the
    heading, a file-type icon at the start of each attachment's line (outside the attachment's element)."""
    logo = '<img class="company_logo" src="/assets/logo.png" alt="Company logo" width="120" height="30"> '
    icons = ('<nav class="icon_bar">' + "".join(
        f'<img class="nav_icon" src="/assets/icons/toolbar-{n}.png" alt="{n}" width="24" height="24">'
        for n in TOOLBAR_ICONS) + "</nav>\n")
    html = re.sub(r'(<header class="top_nav">)', lambda m: m.group(1) + logo, html, count=1)
    html = re.sub(r"(<main>\n)", lambda m: m.group(1) + icons, html, count=1)

    def file_icon(m: re.Match) -> str:
        ext = m.group(2).rsplit(".", 1)[-1].lower() if "." in m.group(2) else ""
        kind = _FILE_ICON_OF.get(ext, "other")
        return (m.group(1) + f'<img class="file_icon" src="/assets/icons/file-{kind}.png" alt="" width="16" '
                f'height="16"> ' + m.group(2))

    return re.sub(r'(<li class="attachment_item">)([^<]*<[^>]*>[^<]*)', file_icon, html)
