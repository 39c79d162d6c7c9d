"""`pobatch check`: does pobatch understand this tenant? Evidence per PO, before a batch of 2,000.

It opens each PO the way a run does (same profile clone, same probes, same site definition) but only
looks: the HTTP status, the page state and what decided it, the identity evidence, the supplier,
every attachment with the selector that matched it, and file-like names on the page that no
selector matched. Nothing is downloaded unless asked. A JSON snapshot (with each page's HTML) can be
sent to whoever maintains the site file.
"""
from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from pobatch.core.modes.po_handler import PoHandler, WorkerConfig, sequential_handler
from pobatch.core.sites import SiteDefinition
from pobatch.core.workflow.job_config import JobConfig
from pobatch.core.workflow.page_probes import FIND_ATTACHMENTS_JS, SUPPLIER_JS, PageProbe, PageState, Settle
from pobatch.core.workflow.po_job import PoJob
from pobatch.core.workflow.po_task import PoTaskPayload
from pobatch.corelib.browser.factory import BrowserSpec
from pobatch.corelib.errors import LoginRequiredError, PobatchError

log = logging.getLogger(__name__)

SNAPSHOT_HTML_LIMIT = 300_000  # characters of each page's HTML kept in the snapshot

# Elements that look like a file (a name with a known extension) but that no attachment selector
# matched, outside every matched element: what a site file probably misses.
UNMATCHED_JS = r"""
const matched = arguments[0];
const re = /[^\s\/\\"'<>|]{1,200}\.(pdf|docx?|xlsx?|xlsm|msg|eml|csv|zip|txt|png|jpe?g|tiff?|pptx?|rtf|xml)\b/i;
const inMatched = el => matched.some(m => m === el || m.contains(el) || el.contains(m));
const seen = [];
for (const el of document.body.querySelectorAll('*')) {
  if (['SCRIPT', 'STYLE', 'NOSCRIPT', 'TITLE'].includes(el.tagName)) continue;
  const own = [...el.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join(' ');
  const attrs = ['title', 'download', 'aria-label', 'href'].map(a => el.getAttribute(a) || '').join(' ');
  const m = (own + ' ' + attrs).match(re);
  if (!m || inMatched(el)) continue;
  // The whole label when it is the element's text (names have spaces), else the matched part.
  const label = own.trim().includes(m[0]) ? own.trim().replace(/\s+/g, ' ').slice(0, 160) : m[0];
  const tag = el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
    (el.classList.length ? '.' + [...el.classList].join('.') : '');
  seen.push([label, tag]);
  if (seen.length >= 20) break;
}
return seen;
"""


@dataclass
class AttachmentSeen:
    label: str
    kind: str  # link, download, js, popup, inline
    selector: str
    href: str = ""


@dataclass
class PoCheck:
    po_number: str
    url: str
    http: int = 0
    state: str = ""
    evidence: str = ""
    identity: dict[str, Any] = field(default_factory=dict)
    supplier: str = ""
    attachments: list[AttachmentSeen] = field(default_factory=list)
    settled: str = ""  # how the attachment area settled, or why it did not
    unmatched: list[tuple[str, str]] = field(default_factory=list)  # (file-like name, element)
    problems: list[str] = field(default_factory=list)  # what a site file should change
    downloaded: str = ""  # with --download: the status the real workflow gave
    html: str = ""

    @property
    def understood(self) -> bool:
        return not self.problems


def attachment_kind(tag: str, href: str, target: str, has_download_attr: bool) -> str:
    """How an attachment element starts its file, as far as the markup tells."""
    if target == "_blank":
        return "popup"
    if has_download_attr:
        return "download"
    if tag != "a" or not href or href.startswith(("javascript:", "#")):
        return "js"
    if re.search(r"\.(pdf|png|jpe?g|gif|txt)$", href.split("?")[0], re.IGNORECASE) or "inline" in href:
        return "inline"
    return "link"


def advice(check: PoCheck, site: SiteDefinition) -> list[str]:
    """What to put in a site file, from what the page showed."""
    out: list[str] = []
    ident = check.identity or {}
    if check.state == PageState.UNRECOGNISED:
        if ident and not ident.get("url_ok"):
            out.append(f"the page's URL is {ident.get('path')}, not {ident.get('expected_path')}: check "
                       "[urls] po_path, or whether the portal redirects this PO elsewhere")
        elif ident and not ident.get("number"):
            out.append("no element shows the PO number: add the selector of the element that does (a heading or "
                       "field) to [identity] po_number_selectors")
        elif ident and not ident.get("marker"):
            out.append("none of the PO-page markers is present: add a selector found only on PO pages to "
                       "[identity] po_markers")
        else:
            out.append(f"the page was not recognised ({check.evidence}): if it is an error page, add its text to "
                       "[errors]")
    elif check.state not in (PageState.READY, PageState.NOT_FOUND, PageState.NOT_AUTHORIZED):
        out.append(f"the page is a {check.state.replace('_', ' ')} page ({check.evidence}): try again later, or "
                   "check the address")
    if check.state == PageState.READY:
        if not check.supplier:
            out.append("no supplier found: add the selector of the supplier's name to [supplier] selectors")
        if check.settled.startswith("not settled"):
            out.append(f"the attachment area {check.settled}: check [attachments] area, loading and loaded")
        if check.unmatched:
            names = ", ".join(f"{n} ({el})" for n, el in check.unmatched[:5])
            out.append(f"file-like names that no attachment selector matched: {names}: add selectors for them to "
                       "[attachments] selectors")
    return out


class Checker:
    """Looks at POs with one browser; `run` gives one PoCheck per PO."""

    def __init__(self, handler: PoHandler, download_dir: Path | None) -> None:
        self.handler = handler
        self.po_job: PoJob = handler.po_job
        self.site = self.po_job.site
        self.download_dir = download_dir

    def check(self, po: str) -> PoCheck:
        po_job, site = self.po_job, self.site
        url = site.po_url(po_job.config.base_url, po)
        result = PoCheck(po_number=po, url=url)
        probe = po_job.look(url, site.expectation("po", site.po_id(po), po_job.config.base_url))
        driver = po_job.session.driver
        result.http, result.state, result.evidence, result.identity = probe.http, probe.state, probe.evidence, \
            probe.identity
        if probe.state == PageState.LOGIN:
            raise_login(probe)
        if probe.state == PageState.READY:
            self._attachments(result, probe)
            result.supplier = driver.execute_script(SUPPLIER_JS, list(site.supplier_selectors)) or ""
        result.problems = advice(result, site)
        result.html = (driver.page_source or "")[:SNAPSHOT_HTML_LIMIT]
        if self.download_dir is not None and probe.state in (PageState.READY, PageState.NOT_FOUND,
                                                             PageState.NOT_AUTHORIZED):
            outcome = po_job.process(PoTaskPayload(po))
            result.downloaded = f"{outcome.status.value} {outcome.reason}".strip() + \
                (f" -> {outcome.download_folder}" if outcome.download_folder else "")
        return result

    def _attachments(self, result: PoCheck, probe: PageProbe) -> None:
        po_job = self.po_job
        driver = po_job.session.driver
        try:
            settle: Settle = po_job.await_attachments(driver, probe)
            shown = f"{settle.count} in view" if settle.count else f"empty and quiet for {settle.quiet_ms} ms"
            result.settled = (f"settled: area {settle.area or '(none)'}, {shown}"
                              + (f", loaded marker {settle.loaded}" if settle.loaded else ""))
        except PobatchError as exc:
            result.settled = f"not settled: {exc}"
        found = driver.execute_script(FIND_ATTACHMENTS_JS, list(self.site.attachment_selectors))
        elements = [el for el, _ in found]
        for el, meta in found:
            kind = attachment_kind(meta["tag"], meta["href"], meta["target"], bool(meta["download_attr"]))
            result.attachments.append(AttachmentSeen(meta["name"], kind, meta["selector"], meta["href"]))
        result.unmatched = [tuple(x) for x in driver.execute_script(UNMATCHED_JS, elements)]


def raise_login(probe: PageProbe) -> None:
    raise LoginRequiredError(f"the portal asked for a sign-in ({probe.evidence}): run 'pobatch login' first")


def format_check(c: PoCheck) -> list[str]:
    """The lines `pobatch check` prints for one PO."""
    lines = [f"PO {c.po_number}  {c.url}",
             f"  page         {c.state.upper()}  ({c.evidence})"]
    ident = c.identity or {}
    if ident:
        lines.append(f"  identity     URL {'ok' if ident.get('url_ok') else 'WRONG: ' + str(ident.get('path'))}; "
                     f"number in {ident.get('number') or 'NOTHING'}; marker {ident.get('marker') or 'NONE'}")
    if c.state == PageState.READY:
        lines.append(f"  supplier     {c.supplier or 'NOT FOUND'}")
        lines.append(f"  attachments  {len(c.attachments)}, {c.settled}")
        for a in c.attachments:
            lines.append(f"    - {a.label or '(no label)'}  [{a.kind}]  matched {a.selector}")
        if c.unmatched:
            lines.append("  file-like names no selector matched:")
            lines.extend(f"    ? {name}  in <{el}>" for name, el in c.unmatched)
    if c.downloaded:
        lines.append(f"  downloaded   {c.downloaded}")
    lines.append("  -> understood" if c.understood else "  -> NOT understood: " + "; ".join(c.problems))
    return lines


def verdict(checks: list[PoCheck]) -> str:
    bad = [c for c in checks if not c.understood]
    if not bad:
        return f"Verdict: all {len(checks)} PO(s) understood; pobatch can run this portal with this definition."
    return (f"Verdict: {len(bad)} of {len(checks)} PO(s) not understood ({', '.join(c.po_number for c in bad)}); "
            "see the lines above for what to put in a site file (README, 'Site files').")


def write_snapshot(path: Path, site: SiteDefinition, base_url: str, checks: list[PoCheck]) -> Path:
    data = {"pobatch_check": 1, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "base_url": base_url,
            "site": site.name, "site_file": site.source, "verdict": verdict(checks),
            "pos": [dict(asdict(c), understood=c.understood) for c in checks]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)
    return path


def run_check(pos: list[str], *, site_name: str, site_file: str, base_url: str, browser: BrowserSpec,
              base_profile: Path, download_dir: Path | None, profiles_root: str | None,
              echo: Callable[[str], None]) -> list[PoCheck]:
    """Check each PO with one browser on a clone of the profile; print as it goes."""
    run_id = time.strftime("check-%Y%m%d-%H%M%S")
    scratch = None
    if download_dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="pobatch-check-")
        out_dir = Path(scratch.name)
    else:
        out_dir = download_dir
    job_config = JobConfig(site=site_name, site_file=site_file, base_url=base_url, out_dir=str(out_dir), run_id=run_id,
                           max_attempts=1, po_timeout=max(180.0, browser.page_load_timeout * 3))
    cfg = WorkerConfig(job=job_config, browser=browser, base_profile=str(base_profile), run_id=run_id,
                       profiles_root=profiles_root)
    handler = sequential_handler(cfg, lambda e: None)
    checks: list[PoCheck] = []
    try:
        checker = Checker(handler, download_dir)
        for po in pos:
            c = checker.check(po)
            checks.append(c)
            for line in format_check(c):
                echo(line)
    finally:
        handler.close()
        if scratch is not None:
            scratch.cleanup()
    return checks
