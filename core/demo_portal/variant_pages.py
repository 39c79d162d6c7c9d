"""The demo portal's second markup (scenario `"markup": "variant"`): the same portal, other HTML.

Every class, id, attribute, element and text that the built-in Coupa definition relies on is
different here, so a client that only knows Coupa's shapes must fail to recognise these pages instead
of inventing an answer, and a site file (data/variant_site.toml) must be enough to read them:

* PO identity: no h1 at all, no `[data-po-number]`, no `.po_number`; the number is in
  `<div class="doc-number">Order 100001</div>` and the PO-page marker is `[data-doc-kind='order']`.
* No `.orderHeaderShowFloatingSection` toolbar: a fixed `nav.action-bar` covers the top instead.
* Supplier in `dd.vendor-title`; attachment area `section#documents`; loading marker `.busy-indicator`.
* Attachments are `a.doc-link`, `button.doc-action`, `span.doc-name`, served under `/files/<token>`:
  no `download` attribute, no aria-label, no title, no "attachment" in any URL.
* Requisitions live at `/requisitions/<rid>`, linked by `a.req-ref`.
* Errors: `div.alert-error` and other texts; the sign-in form is `form#signin` with `#account_email`
  and `#account_secret` (same field names and the same `/sessions` endpoint and cookie as Coupa's).

The URLs of PO pages (`/order_headers/<id>`) and of the sign-in page (`/sessions/new`) stay Coupa's.
"""
from __future__ import annotations

import json
from html import escape
from typing import Iterable
from urllib.parse import quote

from pobatch.core.demo_portal.pages import DelayedList, delayed_list_script, html_document
from pobatch.core.demo_portal.scenario import AttachmentEntry, PoSpec, RequisitionSpec

# The texts of this markup's error pages (data/variant_site.toml lists them).
NOT_FOUND_TEXT = "This record could not be located"
NOT_AUTHORIZED_TEXT = "Your role does not allow viewing this record"
SERVER_ERROR_TEXT = "The application hit an unexpected problem"

_STYLE = """
body { margin: 0; font-family: Georgia, serif; font-size: 15px; color: #1d1d1d; }
header.app-bar { background: #3c1053; color: #fff; padding: 12px 28px; letter-spacing: 1px; }
main.record { padding: 110px 28px 28px; }
nav.action-bar { background: #f4eef8; border-bottom: 2px solid #c7b3d6; display: flex; align-items: center;
  justify-content: flex-end; gap: 10px; padding: 0 28px; box-sizing: border-box; }
.banner-info { background: #eef7ff; border-left: 4px solid #7fb2e5; padding: 8px; margin: 8px 0; }
.alert-error { background: #fff0f0; border-left: 4px solid #d9534f; padding: 8px; margin: 8px 0; }
.doc-number { font-size: 26px; font-weight: bold; margin: 12px 0; }
dl.vendor dt { font-weight: bold; } dl.vendor dd { margin: 0 0 8px 0; }
table.grid-rows { border-collapse: collapse; width: 100%; margin: 12px 0; }
table.grid-rows td, table.grid-rows th { border: 1px solid #ddd; padding: 10px 8px; height: 22px; }
section.doc-panel { border: 2px dashed #c7b3d6; padding: 8px 16px; margin: 16px 0; }
ul.doc-list { list-style: square; margin: 0; }
li.doc-row { padding: 6px 0; }
.doc-name, button.doc-action { color: #5b2a86; text-decoration: underline; cursor: pointer; }
"""

_DOWNLOAD_JS = """
<script>
(function () {
  function fetchFile(token) {
    var a = document.createElement('a');
    a.href = '/files/' + encodeURIComponent(token);
    a.click();
  }
  document.querySelectorAll('#documents [data-file]').forEach(function (el) {
    el.addEventListener('click', function (ev) {
      ev.preventDefault();
      if (!ev.isTrusted && el.hasAttribute('data-trusted-only')) { return; }  // kind trusted_js
      fetchFile(el.getAttribute('data-file'));
    });
    el.addEventListener('keydown', function (ev) {
      if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); fetchFile(el.getAttribute('data-file')); }
    });
  });
  var first = document.querySelector('#documents li.doc-row');
  if (first) { window.scrollTo(0, first.getBoundingClientRect().top + window.pageYOffset - 30); }
})();
</script>
"""


def _layout(title: str, body: str, kind: str = "", bar: bool = False) -> str:
    nav = ('<nav class="action-bar sticky" style="position:fixed;top:0;left:0;right:0;height:96px;z-index:1000">'
           '<button type="button" class="act">Print</button><button type="button" class="act">Receive</button>'
           '<button type="button" class="act">Amend</button></nav>\n' if bar else "")
    kind_attr = f' data-doc-kind="{kind}"' if kind else ""
    return html_document(title, _STYLE, nav + '<header class="app-bar">procure <span class="demo-tag">(pobatch demo '
                         'portal, variant markup)</span></header>\n', f'<main class="record"{kind_attr}>', body)


def login_page(return_to: str, error: str = "") -> str:
    alert = f'<div class="alert alert-error" role="alert">{escape(error)}</div>' if error else ""
    body = f"""
<div class="page-heading">Welcome back</div>
{alert}
<form id="signin" class="signin-form" action="/sessions" method="post" accept-charset="UTF-8">
  <input type="hidden" name="return_to" value="{escape(return_to)}">
  <p><label for="account_email">Work e-mail</label><br>
     <input type="email" id="account_email" name="user[login]" autocomplete="username" size="40"></p>
  <p><label for="account_secret">Passphrase</label><br>
     <input type="password" id="account_secret" name="user[password]" autocomplete="current-password" size="40"></p>
  <p><button type="submit" id="signin_submit">Continue</button></p>
</form>
<p class="hint">Demo portal: any e-mail, password <code>demo</code>.</p>
"""
    return _layout("Welcome | Procure", body)


def home_page(pos: Iterable[PoSpec]) -> str:
    items = "\n".join(f'<li><a href="/order_headers/{escape(po.id)}">Order {escape(po.id)}</a> '
                      f'<span class="vendor-cell">{escape(po.supplier)}</span></li>' for po in pos)
    return _layout("Dashboard | Procure",
                   f'<div class="page-heading">Dashboard</div>\n<ul class="order-index">\n{items}\n</ul>',
                   kind="dashboard")


def page_url(e: AttachmentEntry) -> str:
    if e.spec.kind == "popup":
        return f"/files/{e.token}/window"
    return file_url(e)


def file_url(e: AttachmentEntry) -> str:
    if e.spec.kind == "inline_pdf":
        return f"/files/{e.token}/view/{quote(e.spec.name, safe='')}"
    if e.spec.kind == "inline_labeled":
        return f"/files/{e.token}/content"
    return f"/files/{e.token}"


def attachment_element(e: AttachmentEntry) -> str:
    name, kind, url = escape(e.spec.name), e.spec.kind, escape(page_url(e))
    if kind == "link":
        return f'<a class="doc-link" href="{url}">{name}</a>'
    if kind == "download_attr":
        return f'<a class="doc-link doc-save" href="{url}" data-save="true">{name}</a>'
    if kind in ("js", "trusted_js"):
        trusted = " data-trusted-only" if kind == "trusted_js" else ""
        return f'<button type="button" class="doc-action" data-file="{escape(e.token)}"{trusted}>{name}</button>'
    if kind == "span":
        return f'<span class="doc-name" tabindex="0" data-file="{escape(e.token)}">{name}</span>'
    if kind == "popup":
        return f'<a class="doc-link" href="{url}" target="_blank">{name}</a>'
    if kind in ("inline_pdf", "inline_labeled"):
        return f'<a class="doc-link doc-view" href="{url}">{name}</a>'
    raise ValueError(f"unknown attachment kind {kind!r}")


def list_html(entries: Iterable[AttachmentEntry]) -> str:
    entries = list(entries)
    items = "\n".join(f'<li class="doc-row">{attachment_element(e)}</li>' for e in entries)
    return f'<ul class="doc-list">\n{items}\n</ul>' if entries else '<p class="doc-empty">No documents</p>'


def _rows(prefix: str, count: int) -> str:
    rows = "\n".join(f"<tr><td>{i}</td><td>{escape(prefix)} {i}</td><td>{(i * 5) % 11 + 1} PCS</td></tr>"
                     for i in range(1, count + 1))
    return f'<table class="grid-rows"><tr><th>No.</th><th>Text</th><th>Amount</th></tr>\n{rows}</table>'


def _document(title: str, number: str, kind: str, supplier: str, entries: Iterable[AttachmentEntry],
              requisition_id: str | None, delayed: DelayedList | None) -> str:
    entries = list(entries)
    if delayed is None:
        section, script = list_html(entries), (_DOWNLOAD_JS if entries else "")
    else:
        section = '<div class="busy-indicator">Fetching documents…</div>' if delayed.spinner else ""
        script = delayed_list_script(delayed.endpoint, "documents", ".busy-indicator", "data-file",
                                     "/files/{token}", "li.doc-row")
    req = (f'<a href="/requisitions/{escape(requisition_id)}" class="req-ref">Request {escape(requisition_id)}</a>'
           if requisition_id else "")
    body = f"""
<div class="banner-info">Scheduled maintenance on Sunday</div>
<div class="doc-number">{escape(number)}</div>
<dl class="vendor"><dt>Vendor</dt><dd class="vendor-title">{escape(supplier)}</dd></dl>
<h3>Lines</h3>
{_rows("Line", 32)}
<section id="documents" class="doc-panel">
<h3>Documents</h3>
{section}
</section>
{req}
<h3>Activity</h3>
{_rows("Entry", 32)}
{script}
"""
    return _layout(title, body, kind=kind, bar=True)


def po_page(po: PoSpec, entries: Iterable[AttachmentEntry], delayed: DelayedList | None = None) -> str:
    rid = po.requisition.id if po.requisition else None
    return _document(f"Order {po.id} | Procure", f"Order {po.id}", "order", po.supplier, entries, rid, delayed)


def requisition_page(po: PoSpec, req: RequisitionSpec, entries: Iterable[AttachmentEntry]) -> str:
    return _document(f"Request {req.id} | Procure", f"Request {req.id}", "request", po.supplier, entries, None, None)


def popup_page(url: str) -> str:
    body = (f'<p>Preparing your file… <a href="{escape(url)}">Get it</a></p>\n'
            f"<script>window.location.href = {json.dumps(url)};</script>")
    return _layout("File | Procure", body)


def not_found_page() -> str:
    return _layout("Missing | Procure", '<div class="alert alert-error">No such record</div>\n'
                   f"<p>{NOT_FOUND_TEXT}. Check the number and try again.</p>")


def not_authorized_page() -> str:
    return _layout("Restricted | Procure", '<div class="alert alert-error">Restricted</div>\n'
                   f"<p>{NOT_AUTHORIZED_TEXT}. Ask your administrator.</p>")


def server_error_page() -> str:
    return _layout("Problem | Procure", f'<div class="alert alert-error">{SERVER_ERROR_TEXT}.</div>\n'
                   "<p>Our engineers have been notified.</p>")


def not_available_page() -> str:
    """The variant's page for a missing file, answered with 200 (attachment fault html200)."""
    return _layout("Document | Procure", "<h2>Document</h2>\n<p>This document is not available.</p>")
