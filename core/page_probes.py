"""In-page probes: one JavaScript round trip answers "what page is this?" or "what can be downloaded?".

One round trip per poll keeps the per-PO overhead low (each WebDriver call costs a few ms), and the
probes are driven entirely by a SiteDefinition, so they hold no portal knowledge of their own.
"""
from __future__ import annotations

# Returns [state, detail]; state is one of loading, login, not_found, not_authorized, server_error,
# error_page, connection_error, ready.
PAGE_STATE_JS = r"""
const c = arguments[0];
const loc = window.location;
if (loc.protocol === 'chrome-error:' || loc.href.startsWith('chrome-error://')) return ['connection_error', loc.href];
if (c.host && loc.host && loc.host.toLowerCase() !== c.host) return ['login', loc.href];
if (c.login_paths.some(p => loc.pathname === p || loc.pathname.startsWith(p + '/') || loc.pathname.startsWith(p + '?')))
  return ['login', loc.pathname];
if (c.login_selectors.some(q => document.querySelector(q))) return ['login', 'login form'];
if (document.readyState === 'loading' || !document.body) return ['loading', document.readyState];
const text = document.body.innerText || '';
const title = document.title || '';
for (const t of c.not_found_texts) if (text.includes(t)) return ['not_found', t];
for (const t of c.not_authorized_texts) if (text.includes(t)) return ['not_authorized', t];
for (const t of c.server_error_texts) if (text.includes(t) || title.includes(t)) return ['server_error', t];
for (const q of c.error_selectors) {
  const el = document.querySelector(q);
  if (el && el.innerText.trim()) return ['error_page', el.innerText.trim().slice(0, 300)];
}
for (const q of c.ready_selectors) if (document.querySelector(q)) return ['ready', q];
if (document.readyState === 'complete' && !text.trim()) return ['connection_error', 'empty page'];
return ['loading', document.readyState];
"""

# Returns [[element, {name, href, target, tag}], ...] for visible attachment elements, in page order,
# without nested duplicates (a span inside a matched link counts once).
FIND_ATTACHMENTS_JS = r"""
const selectors = arguments[0];
const found = new Set();
for (const q of selectors) {
  let nodes = [];
  try { nodes = document.querySelectorAll(q); } catch (e) { continue; }
  for (const el of nodes) found.add(el);
}
const visible = el => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
const items = [...found].filter(el => visible(el) && ![...found].some(o => o !== el && o.contains(el)));
items.sort((a, b) => (a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING) ? -1 : 1);
return items.map(el => [el, {
  name: (el.getAttribute('download') || el.getAttribute('title') || el.innerText || '').trim(),
  href: el.getAttribute('href') || '',
  target: el.getAttribute('target') || '',
  tag: el.tagName.toLowerCase(),
}]);
"""

SUPPLIER_JS = r"""
for (const q of arguments[0]) {
  const el = document.querySelector(q);
  if (!el) continue;
  const v = (el.getAttribute('data-supplier-name') || el.innerText || '').trim();
  if (v) return v;
}
return '';
"""

REQUISITION_JS = r"""
const el = document.querySelector(arguments[0]);
return el ? el.href : '';
"""

# Scroll an element to the middle of the viewport, clear of floating bars at the top.
SCROLL_CENTER_JS = "arguments[0].scrollIntoView({block: 'center', inline: 'nearest'});"
JS_CLICK = "arguments[0].click();"

# Before a click: how will it behave? Returns "popup" (a link to another window), "download" (a link the
# browser downloads without leaving the page), "converted" (a plain link marked as a download here) or
# "navigate" (it navigates the page's own frame first).
# arguments: element, convert (mark a same-origin plain link as a download: it then needs no frame,
# so several run at once), center (scroll it to the middle for a pointer click), click (then click it
# by script, in the same round trip).
PREPARE_CLICK_JS = r"""
const el = arguments[0], convert = arguments[1], center = arguments[2];
if (center) el.scrollIntoView({block: 'center', inline: 'nearest'});
const mode = (() => {
  const a = el.closest ? el.closest('a[href]') : null;
  if (!a) return 'navigate';
  const target = (a.getAttribute('target') || '').toLowerCase();
  if (target && target !== '_self' && target !== '_top' && target !== '_parent') return 'popup';
  if (a.hasAttribute('download')) return 'download';
  if (!convert) return 'navigate';
  let u;
  try { u = new URL(a.getAttribute('href'), location.href); } catch (e) { return 'navigate'; }
  if (u.origin !== location.origin || !/^https?:$/.test(u.protocol) || u.hash && u.pathname === location.pathname)
    return 'navigate';
  a.setAttribute('download', '');
  return 'converted';
})();
if (arguments[3]) el.click();
return mode;
"""
