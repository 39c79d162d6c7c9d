"""Where the time of a PO goes, read back from the run store's events table.

Every event carries a timestamp, so the steps of one attempt are the gaps between its events:
attempt_start -> open (the page is loaded and classified) -> attachments_found -> one `download` per
file -> published -> attempt_end, and the gap from one attempt_end to the same worker's next
attempt_start. Subtracting what the portal itself spent (its fixed latencies, known from the
scenario) leaves the client's overhead in each step.
"""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from pobatch.core.demo_portal import Scenario
from pobatch.corelib.store import RunStore
from pobatch.corelib.worker_pool.tasks import Event

_DOWNLOAD_RE = re.compile(r"^(?P<name>.*) via (?P<how>[\w-]+) in (?P<secs>[\d.]+)s(?:, .*)?$")

# One sample per PO for every step but "downloads", which has one per file (its median is per file).
STEP_NAMES = ("open page", "find attachments", "downloads", "publish", "end of attempt", "between POs")


def portal_seconds(scenario: Scenario, po_id: str) -> float:
    """The portal's own time for one PO: its page, and per attachment its latency (plus the popup page)."""
    page = scenario.latency.page_ms[0] / 1000
    att = scenario.latency.attachment_ms[0] / 1000
    return page + sum(att + (page if e.spec.kind == "popup" else 0.0) for e in scenario.entries(po_id, "po"))


def overlap_seconds(scenario: Scenario, po_id: str) -> float:
    """The portal's time for one PO when its files download at once: its page, plus its slowest file
    (a popup's file counts its popup page too, since the popups open together)."""
    page = scenario.latency.page_ms[0] / 1000
    att = scenario.latency.attachment_ms[0] / 1000
    return page + max((att + (page if e.spec.kind == "popup" else 0.0) for e in scenario.entries(po_id, "po")),
                      default=0.0)


def pipelined_seconds(scenario: Scenario) -> float:
    """The portal's time for the batch when each PO's page loads while the previous PO's files
    download (pages ahead, issue 23): per PO the longer of its page and the previous PO's slowest file,
    then the last PO's slowest file."""
    page = scenario.latency.page_ms[0] / 1000
    slowest = [overlap_seconds(scenario, po.id) - page for po in scenario.pos]
    return sum(max(page, before) for before in [0.0, *slowest[:-1]]) + (slowest[-1] if slowest else 0.0)


def file_seconds(scenario: Scenario) -> dict[tuple[str, str], float]:
    """(po_id, served name) -> the portal's time for that file."""
    page = scenario.latency.page_ms[0] / 1000
    att = scenario.latency.attachment_ms[0] / 1000
    return {(e.po_id, e.key): att + (page if e.spec.kind == "popup" else 0.0) for e in scenario.all_entries()}


@dataclass
class StepTimings:
    """Client overhead per step in ms (portal latency removed), over every PO (or file) of a run."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    attempt_overhead_ms: list[float] = field(default_factory=list)  # per PO: attempt time - portal time
    first_start: dict[str, float] = field(default_factory=dict)  # worker -> ts of its first attempt_start
    workers: int = 0
    retries: int = 0

    def median(self, step: str) -> float:
        v = self.samples.get(step) or []
        return statistics.median(v) if v else 0.0

    def mean(self, step: str) -> float:
        v = self.samples.get(step) or []
        return statistics.fmean(v) if v else 0.0

    def per_po_mean(self, step: str, pos: int) -> float:
        """This step's total overhead divided by the number of POs (files per PO folded in)."""
        return sum(self.samples.get(step) or []) / pos if pos else 0.0


def read_timeline(out_dir: Path, run_id: str) -> list[Event]:
    store = RunStore(out_dir / ".pobatch" / "runs.sqlite")
    try:
        return store.timeline(run_id)
    finally:
        store.close()


def step_timings(events: list[Event], scenario: Scenario, files_at_once: int = 1) -> StepTimings:
    """Client overhead per step. With files_at_once > 1 a PO's downloads overlap, so "downloads" is
    one sample per PO: from the attachment list to its last file, minus its slowest file's latency
    (one sample per file, minus that file's latency, when they are one at a time)."""
    page = scenario.latency.page_ms[0] / 1000
    files = file_seconds(scenario)
    result = StepTimings()
    add = lambda step, seconds: result.samples.setdefault(step, []).append(seconds * 1000)  # noqa: E731
    by_worker: dict[str, list[Event]] = {}
    for e in events:
        by_worker.setdefault(e.worker_id, []).append(e)
    result.workers = len({e.worker_id for e in events if e.action == "attempt_start"})
    for worker, evs in by_worker.items():
        last_end: float | None = None
        start: Event | None = None
        prev_ts = 0.0
        found_ts = 0.0
        slowest = 0.0
        for e in evs:
            if e.action == "attempt_start":
                result.first_start.setdefault(worker, e.ts)
                if e.attempt > 1:
                    result.retries += 1
                if last_end is not None:
                    add("between POs", e.ts - last_end)
                start, prev_ts = e, e.ts
                continue
            if start is None or e.task_key != start.task_key:
                continue
            if e.action == "open" and prev_ts == start.ts:
                add("open page", e.ts - prev_ts - page)
            elif e.action == "attachments_found":
                add("find attachments", e.ts - prev_ts)
                found_ts, slowest = e.ts, 0.0
            elif e.action == "download" and e.outcome == "ok":
                # From the previous event (the list, or the previous file) to this file, minus its latency.
                # The click itself returns only once the response headers are in, so the split between
                # "click" and "wait for the file" says little; the whole step is what counts.
                m = _DOWNLOAD_RE.match(e.detail)
                latency = files.get((e.task_key, m.group("name")), 0.0) if m else 0.0
                if files_at_once <= 1:
                    add("downloads", e.ts - prev_ts - latency)
                slowest = max(slowest, latency)
            elif e.action == "published":
                if files_at_once > 1 and slowest:
                    add("downloads", prev_ts - found_ts - slowest)
                    slowest = 0.0
                add("publish", e.ts - prev_ts)
            elif e.action == "attempt_end":
                add("end of attempt", e.ts - prev_ts)
                result.attempt_overhead_ms.append((e.ts - start.ts - portal_seconds(scenario, e.task_key)) * 1000)
                last_end = e.ts
                start = None
            if e.action in ("open", "attachments_found", "download", "published"):
                prev_ts = e.ts
    return result
