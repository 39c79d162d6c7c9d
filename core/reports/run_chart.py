"""The run report's pictures for big runs: POs per minute and failures over the run, per worker.

A 5,000-PO run is too long to read row by row; a person wants to see at a glance whether it slowed
down, when the failures came and which worker they came from. One inline SVG (no script, no network):
stacked bars per time slice, one colour per worker, for the POs that got their answer in that slice;
a red line for the failed attempts in the same slice. The slice is a round length that gives at most
about 60 bars; the axis is always in POs per minute so two runs compare.

Also here: each downloaded file's duration and size for the timeline's tooltips, from the `download`
events (detail "<name> via <click> in <seconds>s, ...") and the PO's file rows (sizes).
"""
from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass

from pobatch.core.events import PoEvent
from pobatch.core.download_progress import human_bytes
from pobatch.core.reports.report_data import AttemptBar, ReportData, natural_order

# Distinct, colour-blind-friendly hues (Okabe-Ito, then Tableau): a worker keeps its colour in one report.
WORKER_COLOURS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#999999",
                  "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#9c755f", "#76b7b2", "#edc948", "#bab0ac")
FAIL_COLOUR = "#cf3a3a"
SLICES = (5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)  # seconds
MAX_BARS = 60
# A run shorter than this has no course to show: its rate is one number (the facts' duration and count).
MIN_SPAN = 120.0
_DOWNLOAD = re.compile(r"^(?P<name>.*?) via .*? in (?P<secs>\d+(?:\.\d+)?)s\b")


@dataclass(frozen=True)
class FileTiming:
    name: str
    seconds: float | None
    size: int | None


def file_timings(data: ReportData) -> dict[tuple[str, int], list[FileTiming]]:
    """(PO, attempt) -> each file downloaded in that attempt, how long it took and how big it is."""
    sizes: dict[str, dict[str, int]] = {r.po_number: {f.name: f.size for f in r.files} for r in data.rows}
    out: dict[tuple[str, int], list[FileTiming]] = {}
    for e in data.events:
        if e.action != PoEvent.DOWNLOAD or e.outcome != "ok":
            continue
        m = _DOWNLOAD.match(e.detail or "")
        name = m.group("name") if m else (e.detail or "").split(" via ")[0]
        secs = float(m.group("secs")) if m else None
        out.setdefault((e.task_key, e.attempt), []).append(
            FileTiming(name, secs, sizes.get(e.task_key, {}).get(name)))
    return out


def describe_files(files: list[FileTiming]) -> str:
    """Tooltip lines: 'scan.pdf, 48.2 MB in 23.1s (2.1 MB/s)'."""
    lines = []
    for f in files:
        text = f.name
        if f.size is not None:
            text += f", {human_bytes(f.size)}"
        if f.seconds is not None:
            text += f" in {f.seconds:.1f}s"
            if f.size and f.seconds > 0.5:
                text += f" ({human_bytes(f.size / f.seconds)}/s)"
        lines.append(text)
    return "\n".join(lines)


def _slice(span: float) -> int:
    for s in SLICES:
        if span / s <= MAX_BARS:
            return s
    return int(math.ceil(span / MAX_BARS / 3600) * 3600)


def _label(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m" + (f"{seconds % 60:02d}s" if seconds % 60 else "")
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def throughput_svg(data: ReportData) -> str:
    """The chart, or '' when the run has no finished attempt or is too short to have a course."""
    bars: list[AttemptBar] = [b for b in data.bars if b.finished]
    if not bars or max(b.finished for b in bars) - min(b.started for b in bars) < MIN_SPAN:
        return ""
    workers = sorted({b.worker_id for b in bars}, key=natural_order)
    colour = {w: WORKER_COLOURS[i % len(WORKER_COLOURS)] for i, w in enumerate(workers)}
    t0 = min(b.started for b in bars)
    span = max(max(b.finished for b in bars) - t0, 1.0)
    step = _slice(span)
    n = int(span // step) + 1
    done = [[0] * len(workers) for _ in range(n)]
    failed = [0] * n
    widx = {w: i for i, w in enumerate(workers)}
    for b in bars:
        k = min(int((b.finished - t0) // step), n - 1)
        if b.failed:
            failed[k] += 1
        elif b.outcome not in ("interrupted",):
            done[k][widx[b.worker_id]] += 1
    per_min = 60.0 / step
    peak = max(max(sum(row) for row in done), max(failed), 1) * per_min
    top_val = _nice_ceiling(peak)
    left, plot_w, plot_h, top, bottom = 56, 900, 180, 14, 36
    width, height = left + plot_w + 16, top + plot_h + bottom
    bw = plot_w / n

    def y(v: float) -> float:
        return top + plot_h - v / top_val * plot_h

    out = [f"<svg class=\"chart\" id=\"throughput\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} "
           f"{height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"POs per minute and failed "
           f"attempts over the run, per worker\">"]
    for i in range(5):  # horizontal grid with values
        v = top_val * i / 4
        out.append(f"<line class=\"grid\" x1=\"{left}\" y1=\"{y(v):.1f}\" x2=\"{left + plot_w}\" y2=\"{y(v):.1f}\"/>"
                   f"<text class=\"axis\" x=\"{left - 6}\" y=\"{y(v) + 4:.1f}\" text-anchor=\"end\">{_num(v)}</text>")
    out.append(f"<text class=\"axis\" x=\"12\" y=\"{top + plot_h / 2:.0f}\" transform=\"rotate(-90 12 "
               f"{top + plot_h / 2:.0f})\" text-anchor=\"middle\">per minute</text>")
    label_every = max(1, n // 10)
    for k in range(n):
        x = left + k * bw
        base = 0.0
        for w, count in zip(workers, done[k]):
            if not count:
                continue
            rate = count * per_min
            out.append(f"<rect class=\"done\" data-worker=\"{_e(w)}\" data-slice=\"{k}\" data-count=\"{count}\" "
                       f"x=\"{x + 1:.1f}\" y=\"{y(base + rate):.1f}\" width=\"{max(bw - 2, 1):.1f}\" "
                       f"height=\"{y(base) - y(base + rate):.1f}\" fill=\"{colour[w]}\"><title>{_e(w)}: {count} PO(s) "
                       f"answered from +{_label(k * step)} to +{_label((k + 1) * step)} ({_num(rate)}/min)"
                       f"</title></rect>")
            base += rate
        if k % label_every == 0:
            out.append(f"<text class=\"axis\" x=\"{x:.1f}\" y=\"{top + plot_h + 14}\">+{_label(k * step)}</text>")
    points = " ".join(f"{left + (k + 0.5) * bw:.1f},{y(failed[k] * per_min):.1f}" for k in range(n))
    out.append(f"<polyline class=\"failures\" points=\"{points}\" fill=\"none\" stroke=\"{FAIL_COLOUR}\" "
               f"stroke-width=\"2\"/>")
    for k in range(n):
        if failed[k]:
            out.append(f"<circle class=\"failure\" data-slice=\"{k}\" data-count=\"{failed[k]}\" "
                       f"cx=\"{left + (k + 0.5) * bw:.1f}\" cy=\"{y(failed[k] * per_min):.1f}\" r=\"3\" "
                       f"fill=\"{FAIL_COLOUR}\"><title>{failed[k]} failed attempt(s) from +{_label(k * step)} "
                       f"to +{_label((k + 1) * step)}</title></circle>")
    out.append("</svg>")
    legend = "".join(f"<span><i style=\"background:{colour[w]}\"></i>{_e(w)}</span>" for w in workers)
    legend += f"<span><i class=\"dash\" style=\"border-color:{FAIL_COLOUR}\"></i>failed attempts</span>"
    total_done = sum(sum(row) for row in done)
    note = (f"{total_done} PO answer(s) and {sum(failed)} failed attempt(s); bars are {_label(step)} slices, "
            f"stacked by worker, scaled to POs per minute.")
    return (f"<div class=\"scroll\">{''.join(out)}</div><div class=\"legend\">{legend}</div>"
            f"<p class=\"muted small\">{_e(note)}</p>")


def _nice_ceiling(v: float) -> float:
    mag = 10 ** math.floor(math.log10(v)) if v > 0 else 1
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * mag:
            return m * mag
    return 10 * mag


def _num(v: float) -> str:
    return f"{v:.0f}" if v >= 10 or v == int(v) else f"{v:.1f}"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)
