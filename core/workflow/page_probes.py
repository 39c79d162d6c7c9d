"""In-page probes: one JavaScript round trip answers "what page is this, and how do we know?".

One round trip per poll keeps the per-PO overhead low (each WebDriver call costs a few ms), and the
probes are driven entirely by a SiteDefinition, so they hold no portal knowledge of their own.

The page probe returns evidence, not only a verdict (docs/design.md, "Evidence before answers"): the
main document's HTTP status from Navigation Timing Level 2 (`responseStatus`, Chromium and Edge 109+,
no second request), which text or selector decided the state, and the identity checks of the page
that was expected. Only a page whose identity is proven is "ready"; a complete page that proves
nothing is "unrecognised", which the workflow treats as transient, never as an answer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Shared by the probes: visible attachment elements in page order, without nested duplicates (a
# span inside a matched link counts once), each with the first selector that matched it.
_FIND_FN = r"""
function pobatchFind(selectors) {
  const found = new Map();
  for (const q of selectors) {
    let nodes = [];
    try { nodes = document.querySelectorAll(q); } catch (e) { continue; }
    for (const el of nodes) if (!found.has(el)) found.set(el, q);
  }
  const visible = el => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
  const all = [...found.keys()];
  const items = all.filter(el => visible(el) && !all.some(o => o !== el && o.contains(el)));
  items.sort((a, b) => (a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING) ? -1 : 1);
  return items.map(el => [el, found.get(el)]);
}
function pobatchQuietMs() {
  // A MutationObserver installed on the first look; attributes are left out so that an animated
  // widget cannot keep a page "busy" for ever (a spinner is judged by its marker instead).
  if (!window.__pobatchQuiet) {
    const q = {last: performance.now()};
    try {
      new MutationObserver(() => { q.last = performance.now(); })
        .observe(document.documentElement, {childList: true, subtree: true, characterData: true});
    } catch (e) {}
    window.__pobatchQuiet = q;
  }
  return Math.round(performance.now() - window.__pobatchQuiet.last);
}
function pobatchSettle(c) {
  const quiet = pobatchQuietMs();
  const first = (qs, root) => qs.find(q => { try { return (root || document).querySelector(q); } catch (e) { return false; } }) || '';
  const area = first(c.area_selectors);
  let areaEl = null;
  try { areaEl = area ? document.querySelector(area) : null; } catch (e) {}
  return {
    area: area,
    loading: first(c.loading_selectors, areaEl || document),
    loaded: first(c.loaded_selectors),
    quiet_ms: quiet,
    count: pobatchFind(c.attachment_selectors).length,
  };
}
"""

PAGE_STATE_JS = _FIND_FN + r"""
const QUIET_BEFORE_JUDGING_MS = 1500;
const c = arguments[0];
const e = arguments[1];  // what the page must prove, or null
const loc = window.location;
let http = 0;
try {
  const nav = performance.getEntriesByType('navigation')[0];
  if (nav && typeof nav.responseStatus === 'number') http = nav.responseStatus;
} catch (err) {}
const out = (state, detail, extra) => Object.assign({state: state, detail: String(detail || ''), http: http, url: loc.href,
                                                     referrer: document.referrer || ''}, extra || {});
if (loc.protocol === 'chrome-error:' || loc.href.startsWith('chrome-error://')) return out('connection_error', 'the browser showed its own error page');
// `via` says which sign-in evidence it is: another host or the sign-in path may be a single-sign-on
// refresh passing through (the workflow follows it), a form or a 401 is a wall.
if (c.host && loc.host && loc.host.toLowerCase() !== c.host)
  return out('login', 'the page left for another host: ' + loc.host, {via: 'host'});
const lp = c.login_paths.find(p => loc.pathname === p || loc.pathname.startsWith(p + '/'));
if (lp) return out('login', 'sign-in path ' + lp, {via: 'path'});
const sel = q => { try { return document.querySelector(q); } catch (err) { return null; } };
const ls = c.login_selectors.find(q => sel(q));
if (ls) return out('login', 'sign-in form ' + ls, {via: 'form'});
if (document.readyState === 'loading' || !document.body) return out('loading', 'document ' + document.readyState);
if (http === 401) return out('login', 'HTTP 401', {via: 'http'});
if (http === 429) return out('rate_limited', 'HTTP 429');
const text = document.body.innerText || '';
const title = document.title || '';
const hasText = list => list.find(t => text.includes(t) || title.includes(t));
let t;
if (http >= 500) return out('server_error', 'HTTP ' + http + ((t = hasText(c.server_error_texts)) ? ', text "' + t + '"' : ''));
let identity = null;
if (e) {
  const strip = p => p.replace(/\/+$/, '').toLowerCase();
  let path = loc.pathname;
  try { path = decodeURIComponent(path); } catch (err) {}
  const urlOk = strip(path) === strip(e.path);
  const esc = e.id.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const idRe = new RegExp('(^|[^0-9A-Za-z])' + esc + '($|[^0-9A-Za-z])', 'i');
  let number = '';
  for (const q of e.number_selectors) {
    let nodes = [];
    try { nodes = document.querySelectorAll(q); } catch (err) { continue; }
    for (const el of nodes) {
      const data = [...el.attributes].filter(a => a.name.startsWith('data-')).map(a => a.value).join(' ');
      if (idRe.test((el.innerText || el.textContent || '') + ' ' + data)) { number = q; break; }
    }
    if (number) break;
  }
  const marker = e.markers.length ? (e.markers.find(q => sel(q)) || '') : '(none required)';
  identity = {url_ok: urlOk, path: path, expected_path: e.path, number: number, marker: marker};
  if (urlOk && number && marker && (!http || (http >= 200 && http < 400))) {
    return out('ready', e.kind + ' ' + e.id + ': URL ' + path + ', number in ' + number + ', marker ' + marker,
               {identity: identity, settle: pobatchSettle(c)});
  }
}
const x = {identity: identity};
if ((t = hasText(c.not_found_texts))) return out('not_found', 'text "' + t + '"', x);
if ((t = hasText(c.not_authorized_texts))) return out('not_authorized', 'text "' + t + '"', x);
if ((t = hasText(c.server_error_texts))) return out('server_error', 'text "' + t + '"', x);
for (const q of c.error_selectors) {
  const el = sel(q);
  if (el && el.innerText.trim()) return out('error_page', q + ': ' + el.innerText.trim().slice(0, 300), x);
}
// A page whose load event never comes (a tracking pixel, a widget, a long-poll that never ends) is
// judged once its DOM has been quiet for a while (docs/design.md, "Pages judged by their content").
if (document.readyState !== 'complete' && pobatchQuietMs() < QUIET_BEFORE_JUDGING_MS)
  return out('loading', 'document ' + document.readyState, x);
if (!text.trim() && !http) return out('connection_error', 'an empty page', x);
let why = 'nothing on the page says what it is';
if (identity) {
  if (!identity.url_ok) why = 'the URL is ' + identity.path + ', not ' + identity.expected_path;
  else if (!identity.number) why = 'the number ' + e.id + ' is in none of ' + e.number_selectors.join(', ');
  else if (!identity.marker) why = 'none of the markers ' + e.markers.join(', ') + ' is present';
}
if (http >= 400) why = 'HTTP ' + http + ' without the site\'s evidence; ' + why;
return out('unrecognised', why, x);
"""

# Returns the attachment area's state: {area, loading, loaded, quiet_ms, count}.
SETTLE_JS = _FIND_FN + "return pobatchSettle(arguments[0]);"

# Returns [[element, {name, href, target, tag, kind, selector}], ...] for visible attachment elements.
FIND_ATTACHMENTS_JS = _FIND_FN + r"""
return pobatchFind(arguments[0]).map(([el, q]) => [el, {
  name: (el.getAttribute('download') || el.getAttribute('title') || el.innerText || '').trim(),
  href: el.getAttribute('href') || '',
  target: el.getAttribute('target') || '',
  tag: el.tagName.toLowerCase(),
  download_attr: el.hasAttribute('download'),
  selector: q,
  // What names this attachment on the portal across visits (core/workflow/held_files.py): its link,
  // else its id, else its data-* values (a script's attachment id).
  ref: (el.getAttribute('href') && !/^(javascript:|#)/i.test(el.getAttribute('href').trim()) ? el.href : '')
       || (el.id ? '#' + el.id : '')
       || [...el.attributes].filter(a => a.name.startsWith('data-') && a.value).map(a => a.name + '=' + a.value).sort().join(';'),
}]);
"""

# The Retry-After of a 429 page: Navigation Timing has no headers, so ask once with HEAD (one more
# request, only on a page that already said "slow down"). Async: calls back with seconds or null.
RETRY_AFTER_JS = r"""
const done = arguments[arguments.length - 1];
fetch(location.href, {method: 'HEAD', credentials: 'include', cache: 'no-store'})
  .then(r => done(r.headers.get('Retry-After')))
  .catch(() => done(null));
"""

# The selectors a browser rejects, as [[field, selector], ...]: a site file's last check.
BAD_SELECTORS_JS = r"""
const bad = [];
const frag = document.createDocumentFragment();
for (const [field, list] of Object.entries(arguments[0])) {
  for (const q of list) { try { frag.querySelector(q); } catch (e) { bad.push([field, q]); } }
}
return bad;
"""

SUPPLIER_JS = r"""
for (const q of arguments[0]) {
  let el = null;
  try { el = document.querySelector(q); } catch (e) { continue; }
  if (!el) continue;
  const v = (el.getAttribute('data-supplier-name') || el.innerText || '').trim();
  if (v) return v;
}
return '';
"""

REQUISITION_JS = r"""
let el = null;
try { el = document.querySelector(arguments[0]); } catch (e) {}
return el ? el.href : '';
"""

# A page a sign-in redirect passes through: where it is, how long its DOM has been still, and whether
# it asks for a person (a visible password or one-time-code field). Returns {url, host, quiet_ms, person}.
BOUNCE_JS = _FIND_FN + r"""
const vis = el => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
const any = q => { try { return [...document.querySelectorAll(q)].some(vis); } catch (e) { return false; } };
let person = '';
if (any('input[type=password]')) person = 'a password field';
else if (any('input[autocomplete="one-time-code"], input[name*="otp" i], input[name*="passcode" i], ' +
             'input[name*="verification" i]')) person = 'a code field';
return {url: location.href, host: location.host.toLowerCase(), quiet_ms: document.body ? pobatchQuietMs() : 0,
        person: person};
"""

# Stops a page that is still loading after it was judged (its load event never came); returns its
# readyState before, or '' when it had finished loading.
STOP_LOADING_JS = r"""
if (document.readyState === 'complete') return '';
const was = document.readyState;
window.stop();
return was;
"""

# Scroll an element to the middle of the viewport, clear of floating bars at the top.
SCROLL_CENTER_JS = "arguments[0].scrollIntoView({block: 'center', inline: 'nearest'});"
JS_CLICK = "arguments[0].click();"


class PageState:
    """The states the page probe can return (strings, because they come from JavaScript)."""

    LOADING = "loading"
    LOGIN = "login"
    READY = "ready"
    NOT_FOUND = "not_found"
    NOT_AUTHORIZED = "not_authorized"
    SERVER_ERROR = "server_error"
    RATE_LIMITED = "rate_limited"
    ERROR_PAGE = "error_page"
    CONNECTION_ERROR = "connection_error"
    UNRECOGNISED = "unrecognised"


# States only a signed-in browser sees: the page answered for this user.
SIGNED_IN_STATES = (PageState.READY, PageState.NOT_FOUND, PageState.NOT_AUTHORIZED)


@dataclass(frozen=True)
class Settle:
    """The attachment area as the probe saw it."""

    area: str = ""  # the selector that found the area, '' if none did
    loading: str = ""  # a loading marker still present
    loaded: str = ""  # the loaded marker present, '' if none is (or the site defines none)
    quiet_ms: int = 0  # how long the DOM has been quiet
    count: int = 0  # attachment elements visible now

    @classmethod
    def of(cls, d: dict[str, Any] | None) -> "Settle":
        d = d or {}
        return cls(str(d.get("area") or ""), str(d.get("loading") or ""), str(d.get("loaded") or ""),
                   int(d.get("quiet_ms") or 0), int(d.get("count") or 0))


@dataclass(frozen=True)
class PageProbe:
    """One look at a page: its state, the HTTP status, and the evidence for both."""

    state: str
    detail: str = ""
    http: int = 0  # 0: the browser did not say (an old browser, or an error page)
    url: str = ""
    identity: dict[str, Any] = field(default_factory=dict)
    settle: Settle = field(default_factory=Settle)
    via: str = ""  # a sign-in state's evidence: host, path (may be a refresh passing through), form, http
    referrer: str = ""  # the page that led here: another host's when a sign-in refresh passed on the way

    @classmethod
    def of(cls, d: Any) -> "PageProbe":
        if not isinstance(d, dict):  # a page that replaced the probe's result: treat as still loading
            return cls(PageState.LOADING, "no answer from the page")
        return cls(str(d.get("state")), str(d.get("detail") or ""), int(d.get("http") or 0), str(d.get("url") or ""),
                   dict(d.get("identity") or {}), Settle.of(d.get("settle")), str(d.get("via") or ""),
                   str(d.get("referrer") or ""))

    @property
    def may_pass_through(self) -> bool:
        """A sign-in state that a single-sign-on refresh passes through without a person."""
        return self.state == PageState.LOGIN and self.via in ("host", "path")

    @property
    def evidence(self) -> str:
        status = f"HTTP {self.http}" if self.http else "HTTP status unknown"
        return f"{status}; {self.detail}"


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
  // A link an earlier click marked as a download goes back to what the page made it (the next route).
  if (!convert && a.hasAttribute('data-pobatch-converted')) {
    a.removeAttribute('download');
    a.removeAttribute('data-pobatch-converted');
  }
  if (a.hasAttribute('download')) return 'download';
  if (!convert) return 'navigate';
  let u;
  try { u = new URL(a.getAttribute('href'), location.href); } catch (e) { return 'navigate'; }
  if (u.origin !== location.origin || !/^https?:$/.test(u.protocol) || u.hash && u.pathname === location.pathname)
    return 'navigate';
  a.setAttribute('download', '');
  a.setAttribute('data-pobatch-converted', '');
  return 'converted';
})();
if (arguments[3]) el.click();
return mode;
"""
