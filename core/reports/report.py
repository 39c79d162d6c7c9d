"""The HTML run report: what happened to every PO, and when, on which worker, in one file.

Written at the end of each run (and by `pobatch report`) next to the results workbook, which links
to it. It must open anywhere without a network: CSS, script and the timeline picture (SVG) are
inline, and a Content-Security-Policy forbids fetching anything. Everything shown comes from the
run store; much of it (supplier names, file names, error texts) comes from a web portal, so every
value is escaped and links are built only from paths this program made.

The timeline has one row per worker and one bar per PO attempt, coloured by how the attempt ended;
a failed attempt's bar links to its artifacts (pobatch.core.workflow.artifacts), dashed lines join the attempts of
one PO (the retries), and triangles mark browser restarts; a bar's tooltip lists each file with its
duration and size. The data comes from core/reports/report_data.py;
the activities rows behind the bars are written while the run goes (core/reports/activity_log.py).

A run of thousands of POs stays usable: the PO table has a status filter (the count buttons) and a
search box, both a few lines of inline script over rows drawn once; a chart of POs per minute and
failures, per worker, shows the run's course (core/reports/run_chart.py). Download progress events
(one every 2 s per big file) never become rows: the events table leaves them out and says how many.
The report links to the run's plain log (core/monitoring/run_log.py), the file to send when asking for help.

Over 400 lines on purpose: one template, rendered top-down in the order the page shows it; its
pieces share the escaping and link rules at the bottom and have no other reader.
"""
from __future__ import annotations

import html
import logging
import math
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pobatch.core.events import PoEvent
from pobatch.core.reports.changes import CHANGE_WORDS, change_kind
from pobatch.core.reports.report_data import AttemptBar, ReportData, load_report_data, natural_order, report_path
from pobatch.core.reports.run_chart import describe_files, file_timings, throughput_svg
from pobatch.core.workspace import Workspace
from pobatch.core.status import Status
from pobatch.core.workspace import PAGE_HTML, SCREENSHOT
from pobatch.corelib.store import RunStore

log = logging.getLogger(__name__)

MAX_EVENT_ROWS = 5000

# Attempt outcomes and statuses -> colour (fill, text); an attempt that raised ends as "error".
OUTCOME_COLOURS: dict[str, str] = {
    Status.COMPLETED.value: "#2e9e5b",
    Status.NO_ATTACHMENTS.value: "#4a86c5",
    Status.PO_NOT_FOUND.value: "#e08a2c",
    Status.PARTIAL.value: "#d9b526",
    Status.TIMEOUT.value: "#d9b526",
    Status.FAILED.value: "#cf3a3a",
    Status.LOGIN_REQUIRED.value: "#8e44ad",
    Status.INTERRUPTED.value: "#9a9a9a",
    Status.PENDING.value: "#bdbdbd",
    Status.RUNNING.value: "#6fa8dc",
    "error": "#cf3a3a",
    "interrupted": "#9a9a9a",
    "worker_lost": "#7a1f1f",
}


# -- writing ------------------------------------------------------------------------------------------
def write_report(store: RunStore, run_id: str, out_dir: Path, path: Path | None = None) -> Path:
    """Render the report of `run_id` and write it atomically; returns its path."""
    data = load_report_data(store, run_id, out_dir)
    if path is None:
        newest = store.last_run_id()
        path = report_path(out_dir, data.run.get("args", {}).get("orders"), None if newest == run_id else run_id)
    path = Path(path)
    page = render_report(data, path.parent)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    log.info("run report: %s", path)
    return path


def render_report(data: ReportData, report_dir: Path) -> str:
    run = data.run
    args = run.get("args") or {}
    started, finished = run.get("started"), run.get("finished")
    total = len(data.rows)
    facts = [
        ("Run", data.run_id), ("Mode", run.get("mode", "")), ("Status", run.get("status", "")),
        ("Started", _clock(started)),
        ("Last seen" if run.get("status") == "INTERRUPTED" else "Finished", _clock(finished)),
        ("Duration", _duration(finished - started) if started and finished else ""),
        ("Orders file", args.get("orders", "")), ("Site", args.get("site", "")), ("Portal", args.get("base_url", "")),
        ("Output folder", str(data.out_dir)),
    ]
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; img-src data:\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        f"<title>pobatch report {_e(data.run_id)}</title>\n<style>{_CSS}</style></head><body>",
        f"<h1>pobatch run report <span class=\"muted\">{_e(data.run_id)}</span></h1>",
        "<dl class=\"facts\">" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts if v) + "</dl>",
        _log_link(data, report_dir),
        _counts_html(data.counts, total),
        _chart_html(data),
        "<h2>Timeline</h2>",
        _timeline_svg(data, report_dir),
        _legend_html(),
        _changes_html(data, report_dir),
        "<h2>Purchase orders</h2>",
        _search_html(total),
        _table_html(data, report_dir),
        _events_html(data),
        f"<footer>Written by pobatch on {_e(datetime.now().isoformat(timespec='seconds'))}. "
        "Replay a recorded attempt with <code>pobatch replay RUN PO</code>.</footer>",
        f"<script>{_JS}</script></body></html>\n",
    ]
    return "\n".join(parts)


def _log_link(data: ReportData, report_dir: Path) -> str:
    """Where the run's plain log is: the file a helper asks for first."""
    path = Workspace(data.out_dir).run_log(data.run_id)
    if not path.is_file():
        return ""
    return (f"<p class=\"log\">Run log: <a id=\"run-log\" href=\"{_e(_href(path, report_dir))}\" target=\"_blank\">"
            f"{_e(path.name)}</a> <span class=\"muted\">(every step of every PO; <code>pobatch support</code> "
            "puts it in a zip with what a helper needs)</span></p>")


def _chart_html(data: ReportData) -> str:
    chart = throughput_svg(data)
    return f"<h2>POs per minute and failures</h2>{chart}" if chart else ""


def _search_html(total: int) -> str:
    return ("<div class=\"search\"><input type=\"search\" id=\"search\" placeholder=\"Search PO, supplier, "
            "reason, file, error\" aria-label=\"Search the purchase orders\" autocomplete=\"off\">"
            f"<span id=\"shown\" class=\"muted\">{total} of {total} shown</span></div>")


def _counts_html(counts: dict[str, int], total: int) -> str:
    order = [s.value for s in Status] + sorted(k for k in counts if k not in {s.value for s in Status})
    boxes = [f"<button class=\"count all active\" data-status=\"\" type=\"button\"><b>{total}</b> POs</button>"]
    for status in order:
        n = counts.get(status, 0)
        if n:
            boxes.append(f"<button class=\"count\" type=\"button\" data-status=\"{_e(status)}\" "
                         f"style=\"border-color:{_colour(status)}\"><b>{n}</b> {_e(status)}</button>")
    return "<div class=\"counts\" id=\"counts\">" + "".join(boxes) + "</div>"


def _legend_html() -> str:
    items = [("COMPLETED", "completed"), ("NO_ATTACHMENTS", "no attachments"), ("PO_NOT_FOUND", "not found"),
             ("error", "failed attempt (click: artifacts)"), ("interrupted", "interrupted"),
             ("worker_lost", "worker lost")]
    spans = [f"<span><i style=\"background:{_colour(k)}\"></i>{_e(label)}</span>" for k, label in items]
    spans.append("<span><i class=\"tri\"></i>browser restart</span>")
    spans.append("<span><i class=\"dash\"></i>retry of the same PO</span>")
    return "<div class=\"legend\">" + "".join(spans) + "</div>"


def _timeline_svg(data: ReportData, report_dir: Path) -> str:
    bars = sorted(data.bars, key=lambda b: (b.started, b.key, b.attempt))
    if not bars:
        return "<p class=\"muted\">No attempt was recorded in this run.</p>"
    workers = sorted({b.worker_id for b in bars} | {m.worker_id for m in data.markers if m.worker_id},
                     key=natural_order)
    row_of = {w: i for i, w in enumerate(workers)}
    t0 = min(b.started for b in bars)
    t1 = max(max(b.finished for b in bars), max((m.ts for m in data.markers), default=t0))
    span = max(t1 - t0, 0.5)
    label_w, plot_w, row_h, bar_h, top = 110, 1000, 30, 20, 24
    width, height = label_w + plot_w + 20, top + row_h * len(workers) + 10

    def x(t: float) -> float:
        return label_w + (t - t0) / span * plot_w

    out = [f"<svg class=\"timeline\" id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" "
           f"viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" "
           f"aria-label=\"One row per worker, one bar per PO attempt\">"]
    step = _tick_step(span)
    k = 0
    while k * step <= span + 1e-9:
        tx = x(t0 + k * step)
        out.append(f"<line class=\"grid\" x1=\"{tx:.1f}\" y1=\"{top - 6}\" x2=\"{tx:.1f}\" y2=\"{height - 6}\"/>"
                   f"<text class=\"tick\" x=\"{tx:.1f}\" y=\"{top - 10}\">+{_duration(k * step)}</text>")
        k += 1
    for w, i in row_of.items():
        y = top + i * row_h
        out.append(f"<text class=\"worker\" x=\"4\" y=\"{y + row_h / 2 + 4:.1f}\">{_e(w)}</text>"
                   f"<line class=\"lane\" x1=\"{label_w}\" y1=\"{y + row_h / 2:.1f}\" x2=\"{label_w + plot_w}\" "
                   f"y2=\"{y + row_h / 2:.1f}\"/>")
    files = file_timings(data)
    by_key: dict[str, list[AttemptBar]] = {}
    for b in bars:
        by_key.setdefault(b.key, []).append(b)
    for attempts in by_key.values():  # retries: a dashed line from one attempt's end to the next one's start
        for prev, nxt in zip(attempts, attempts[1:]):
            y1 = top + row_of[prev.worker_id] * row_h + row_h / 2
            y2 = top + row_of[nxt.worker_id] * row_h + row_h / 2
            out.append(f"<line class=\"retry\" data-po=\"{_e(prev.key)}\" x1=\"{x(prev.finished):.1f}\" "
                       f"y1=\"{y1:.1f}\" x2=\"{x(nxt.started):.1f}\" y2=\"{y2:.1f}\"/>")
    for b in bars:
        y = top + row_of[b.worker_id] * row_h + (row_h - bar_h) / 2
        bx, bw = x(b.started), max(x(b.finished) - x(b.started), 2.0)
        tip = (f"PO {b.key}, attempt {b.attempt} on {b.worker_id}: {b.outcome}"
               f"{' - ' + b.detail if b.detail else ''}\n{_clock(b.started)} to {_clock(b.finished)}"
               f" ({_duration(b.finished - b.started)})" + ("\nrecorded" if b.recorded else ""))
        if (b.key, b.attempt) in files:
            tip += "\n" + describe_files(files[(b.key, b.attempt)])
        rect = (f"<rect class=\"attempt{' failed' if b.failed else ''}\" data-po=\"{_e(b.key)}\" "
                f"data-attempt=\"{b.attempt}\" data-worker=\"{_e(b.worker_id)}\" data-outcome=\"{_e(b.outcome)}\" "
                f"x=\"{bx:.1f}\" y=\"{y:.1f}\" width=\"{bw:.1f}\" height=\"{bar_h}\" rx=\"3\" "
                f"fill=\"{_colour(b.outcome)}\"><title>{_e(tip)}</title></rect>")
        label = f"{b.key}" + (f" a{b.attempt}" if b.attempt > 1 else "")
        text = ""
        if bw > 7 * len(label) + 6:
            text = f"<text class=\"bar-label\" x=\"{bx + 4:.1f}\" y=\"{y + bar_h - 6:.1f}\">{_e(label)}</text>"
        if b.failed and b.artifacts is not None:
            href = _href(b.artifacts, report_dir, is_dir=True)
            out.append(f"<a href=\"{_e(href)}\" target=\"_blank\">{rect}{text}</a>")
        else:
            out.append(rect + text)
    for m in data.markers:
        if m.worker_id not in row_of:
            continue
        mx, my = x(m.ts), top + row_of[m.worker_id] * row_h
        what = "browser restart" if m.action == PoEvent.BROWSER_RESTART else "worker lost"
        tip = f"{what} on {m.worker_id} at {_clock(m.ts)}" + (f" (PO {m.task_key})" if m.task_key else "") + \
              (f": {m.detail}" if m.detail else "")
        out.append(f"<path class=\"marker {_e(m.action)}\" data-action=\"{_e(m.action)}\" "
                   f"d=\"M{mx - 5:.1f},{my + 1:.1f} L{mx + 5:.1f},{my + 1:.1f} L{mx:.1f},{my + 9:.1f} Z\">"
                   f"<title>{_e(tip)}</title></path>")
    out.append("</svg>")
    return "<div class=\"scroll\">" + "".join(out) + "</div>"


def _changes_html(data: ReportData, report_dir: Path) -> str:
    """The files this run brought, fetched again or found gone from the portal (the workbook's "New" sheet)."""
    if not data.changes:
        return ""
    folders = {r.po_number: r.download_folder for r in data.rows}
    items = []
    for c in data.changes:
        kind = change_kind(c, data.run_id)
        folder = folders.get(c["key"], "")
        name = _e(c["name"])
        if folder and kind != "removed":
            name = f"<a href=\"{_e(_href(Path(folder) / c['name'], report_dir))}\" target=\"_blank\">{name}</a>"
        items.append(f"<tr><td>{_e(c['key'])}</td><td>{name}</td><td class=\"num\">{_size(c['size'])}</td>"
                     f"<td>{_e(CHANGE_WORDS[kind])}</td></tr>")
    arrived = sum(1 for c in data.changes if c.get("brought_by") == data.run_id)
    pos = len({c["key"] for c in data.changes if c.get("brought_by") == data.run_id})
    return (f"<h2>What changed <span class=\"muted\">{arrived} new file(s) in {pos} PO(s)</span></h2>"
            "<table id=\"changes\"><thead><tr><th>PO</th><th>File</th><th>Size</th><th>Change</th></tr></thead>"
            f"<tbody>{''.join(items)}</tbody></table>")


def _table_html(data: ReportData, report_dir: Path) -> str:
    bars_by_key: dict[str, list[AttemptBar]] = {}
    for b in sorted(data.bars, key=lambda b: b.attempt):
        bars_by_key.setdefault(b.key, []).append(b)
    head = ("<tr><th>PO</th><th>Status</th><th>Reason</th><th>Attempts</th><th>Supplier</th><th>Files</th>"
            "<th>Folder</th><th>Error</th><th>Failed attempts, recordings</th></tr>")
    body = []
    for r in data.rows:
        files = "".join(f"<li>{_e(f.name)} <span class=\"muted\">{_size(f.size)}"
                        f"{' (requisition)' if f.source == 'requisition' else ''}</span></li>"
                        for f in r.files)
        folder = ""
        if r.download_folder:
            folder = (f"<a href=\"{_e(_href(Path(r.download_folder), report_dir, is_dir=True))}\" target=\"_blank\">"
                      f"{_e(Path(r.download_folder).name)}</a>")
        po = _e(r.po_number)
        if r.po_url.startswith(("http://", "https://")):
            po = f"<a href=\"{_e(r.po_url)}\" target=\"_blank\" rel=\"noreferrer\">{po}</a>"
        fails = []
        for b in bars_by_key.get(r.po_number, []):
            if not b.failed:
                continue
            if b.artifacts is None:
                fails.append(f"<span title=\"{_e(b.detail)}\">a{b.attempt}</span>")
                continue
            links = [f"<a href=\"{_e(_href(b.artifacts, report_dir, is_dir=True))}\" target=\"_blank\" "
                     f"title=\"{_e(b.detail)}\">a{b.attempt}</a>"]
            for name, label in ((SCREENSHOT, "screenshot"), (PAGE_HTML, "html")):
                if name in b.artifact_files:
                    links.append(f"<a class=\"small\" href=\"{_e(_href(b.artifacts / name, report_dir))}\" "
                                 f"target=\"_blank\">{label}</a>")
            fails.append("<span class=\"fail\">" + " ".join(links) + "</span>")
        recorded = [b.attempt for b in bars_by_key.get(r.po_number, []) if b.recorded]
        if recorded:
            fails.append(f"<span class=\"muted\" title=\"pobatch replay {_e(data.run_id)} {_e(r.po_number)}\">"
                         f"recorded: a{', a'.join(str(a) for a in recorded)}</span>")
        body.append(
            f"<tr data-status=\"{_e(r.status.value)}\"><td>{po}</td>"
            f"<td><span class=\"badge\" style=\"background:{_colour(r.status.value)}\">{_e(r.status.value)}</span></td>"
            f"<td>{_e(r.reason)}</td><td class=\"num\">{r.attempts}</td><td>{_e(r.supplier)}</td>"
            f"<td>{'<ul>' + files + '</ul>' if files else ''}</td><td>{folder}</td>"
            f"<td class=\"error\">{_e(r.error_message)}</td><td>{'<br>'.join(fails)}</td></tr>")
    return f"<table id=\"pos\"><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def _events_html(data: ReportData) -> str:
    shown = [e for e in data.events if e.action != PoEvent.DOWNLOAD_PROGRESS]
    progress = len(data.events) - len(shown)
    events = shown[:MAX_EVENT_ROWS]
    if not events:
        return ""
    t0 = events[0].ts
    rows = "".join(
        f"<tr><td class=\"num\">+{e.ts - t0:.2f}s</td><td>{_e(e.worker_id)}</td><td>{_e(e.window)}</td>"
        f"<td>{_e(e.task_key)}</td><td class=\"num\">{e.attempt or ''}</td><td>{_e(e.action)}</td>"
        f"<td>{_e(e.outcome)}</td><td class=\"wrap\">{_e(e.url)}</td><td class=\"wrap\">{_e(e.detail)}</td></tr>"
        for e in events)
    more = (f"<p class=\"muted\">First {MAX_EVENT_ROWS} of {len(shown)} events.</p>"
            if len(shown) > MAX_EVENT_ROWS else "")
    if progress:
        more += (f"<p class=\"muted\">{progress} download progress report(s) left out (the run log has "
                 "them); each file's duration and size are in the timeline's tooltips.</p>")
    return (f"<details><summary>All events, every worker and window, by time ({len(shown)})</summary>{more}"
            "<table class=\"events\"><thead><tr><th>time</th><th>worker</th><th>window</th><th>PO</th><th>attempt</th>"
            f"<th>action</th><th>outcome</th><th>URL</th><th>detail</th></tr></thead><tbody>{rows}</tbody></table>"
            "</details>")


# -- small pieces -------------------------------------------------------------------------------------
def _e(value: Any) -> str:
    """Escape for HTML text and attribute values (quotes too); control characters dropped."""
    text = "" if value is None else str(value)
    text = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", text)
    return html.escape(text, quote=True)


def _href(target: Path, report_dir: Path, is_dir: bool = False) -> str:
    """A link that keeps working when the output folder is moved: relative when possible."""
    try:
        rel = os.path.relpath(os.path.abspath(target), os.path.abspath(report_dir))
        href = "/".join(quote(part) for part in Path(rel).parts)
    except ValueError:  # another drive on Windows
        href = Path(os.path.abspath(target)).as_uri()
    return href + ("/" if is_dir and not href.endswith("/") else "")


def _colour(outcome: str) -> str:
    return OUTCOME_COLOURS.get(outcome, "#777777")


def _clock(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 and seconds != int(seconds) else f"{seconds:.0f}s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def _size(n: Any) -> str:
    try:
        n = int(n)
    except (TypeError, ValueError):
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _tick_step(span: float) -> float:
    """A round step giving about 5 to 12 ticks."""
    raw = span / 8
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            step = m * mag
            break
    for nice in (15, 30, 60, 120, 300, 600, 900, 1800, 3600):  # clock-friendly above 10 s
        if 10 < step <= nice:
            return float(nice)
    return float(step)


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 12px}h2{font-size:17px;margin:24px 0 8px}
.muted{color:#777;font-weight:normal}
.facts{display:grid;grid-template-columns:max-content auto;gap:2px 16px;margin:0 0 16px}
.facts dt{color:#555}.facts dd{margin:0;word-break:break-all}
.counts{display:flex;flex-wrap:wrap;gap:8px}
.count{border:2px solid #888;border-radius:6px;padding:6px 12px;background:#fafafa;cursor:pointer;font:inherit}
.count.active{background:#e8eefc}.count b{font-size:18px;margin-right:4px}
.scroll{overflow-x:auto}
svg.timeline{font:11px system-ui,sans-serif;background:#fcfcfc;border:1px solid #ddd}
svg .grid{stroke:#eee}svg .lane{stroke:#e4e4e4}svg .tick{fill:#888;text-anchor:middle}
svg .worker{fill:#333;font-weight:600}
svg .attempt{stroke:#0003}svg .attempt.failed{stroke:#600;stroke-width:1.5}
svg a .attempt{cursor:pointer}
svg .bar-label{fill:#fff;pointer-events:none}
svg .retry{stroke:#555;stroke-dasharray:3 3}
svg .marker{fill:#111}svg .marker.worker_lost{fill:#b00}
.legend{display:flex;flex-wrap:wrap;gap:14px;margin:6px 0 0;color:#444;font-size:12px}
.legend i{display:inline-block;width:14px;height:10px;margin-right:4px;border-radius:2px;vertical-align:middle}
.legend i.tri{width:0;height:0;border-left:6px solid transparent;border-right:6px solid transparent;
  border-top:9px solid #111;border-radius:0}
.legend i.dash{height:0;border-top:2px dashed #555;border-radius:0}
table{border-collapse:collapse;width:100%;margin-top:8px}
th,td{border-bottom:1px solid #e3e3e3;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f9;position:sticky;top:0}
td.num{text-align:right}td.error{color:#9c0006;max-width:360px;word-break:break-word}
td ul{margin:0;padding-left:16px}
.badge{color:#fff;border-radius:4px;padding:1px 6px;font-size:12px;white-space:nowrap}
.fail a{margin-right:6px}.small{font-size:12px}
tr.hidden{display:none}
.search{display:flex;gap:12px;align-items:center;margin:8px 0}
.search input{font:inherit;padding:5px 8px;width:320px;border:1px solid #bbb;border-radius:4px}
svg.chart{font:11px system-ui,sans-serif;background:#fcfcfc;border:1px solid #ddd}
svg .axis{fill:#777}svg.chart rect.done{stroke:#fff;stroke-width:.5}
details{margin-top:24px}summary{cursor:pointer;font-weight:600}
table.events{font-size:12px}td.wrap{word-break:break-all;max-width:420px}
footer{margin-top:24px;color:#777;font-size:12px}
"""

# The status filter and the search work together on rows read once (5,000 rows: a few ms per keystroke).
_JS = """
(function () {
  var buttons = document.querySelectorAll('#counts .count');
  var rows = Array.prototype.slice.call(document.querySelectorAll('#pos tbody tr'));
  var texts = rows.map(function (tr) { return tr.textContent.toLowerCase(); });
  var search = document.getElementById('search'), shown = document.getElementById('shown');
  var status = '', timer = null;
  function apply() {
    var words = (search ? search.value : '').toLowerCase().split(/\\s+/).filter(Boolean), n = 0;
    for (var i = 0; i < rows.length; i++) {
      var ok = (!status || rows[i].getAttribute('data-status') === status);
      for (var j = 0; ok && j < words.length; j++) ok = texts[i].indexOf(words[j]) !== -1;
      if (ok) n++;
      if (rows[i].classList.contains('hidden') === ok) rows[i].classList.toggle('hidden', !ok);
    }
    if (shown) shown.textContent = n + ' of ' + rows.length + ' shown';
  }
  buttons.forEach(function (btn) {
    btn.addEventListener('click', function () {
      status = btn.getAttribute('data-status');
      buttons.forEach(function (b) { b.classList.toggle('active', b === btn); });
      apply();
    });
  });
  if (search) search.addEventListener('input', function () {
    clearTimeout(timer); timer = setTimeout(apply, rows.length > 2000 ? 120 : 0);
  });
})();
"""

