"""The leanest Selenium client: what any browser-driven downloader pays on top of the portal.

For each PO: load the page, find the links, JS-click each one and watch the folder every 2 ms for
the finished file, then close any popup. No state probe, no verification, no journal, no run store,
no retry. Run against the benchmark's latency portal it is a row of the table: whatever pobatch
spends beyond it is pobatch's own share. Run against the same POs served with no latency at all it
is the browser's floor: what Chromium itself needs per page and per file.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.script_browser import ATTACHMENT_SELECTOR, close_popups, script_browser
from benchmarks.steps import file_seconds, portal_seconds
from pobatch.core.demo_portal import Scenario
from pobatch.corelib.browser.downloads import is_partial


@dataclass
class LoopTimes:
    """Seconds per PO (and per file, in page order) as the loop saw them."""

    wall: float = 0.0  # from before the browser starts to after it quit
    browser_start: float = 0.0
    page: dict[str, float] = field(default_factory=dict)  # driver.get
    find: dict[str, float] = field(default_factory=dict)  # find_elements
    files: dict[str, list[float]] = field(default_factory=dict)  # JS click to finished file
    whole: dict[str, float] = field(default_factory=dict)  # the PO, popups closed included

    @property
    def file_count(self) -> int:
        return sum(len(v) for v in self.files.values())


def _wait_file(folder: Path, timeout: float = 30.0) -> str:
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        names = os.listdir(folder)
        done = [n for n in names if not is_partial(n)]
        if done and len(done) == len(names):
            return done[0]
        time.sleep(0.002)
    raise TimeoutError(f"no file in {folder} within {timeout:.0f}s")


def run_lean_loop(base_url: str, po_ids: list[str], profile_dir: Path, download_dir: Path,
                  warm_up: bool = False) -> LoopTimes:
    """One browser on a signed-in profile; every file is removed once it has arrived whole.

    warm_up loads one page first and leaves the browser start out of nothing else: for the floor,
    where only the steady state counts.
    """
    from selenium.webdriver.common.by import By

    times = LoopTimes()
    t_start = time.perf_counter()
    with script_browser(profile_dir, download_dir) as session:
        driver = session.driver
        times.browser_start = time.perf_counter() - t_start
        main = driver.current_window_handle
        if warm_up:  # the first page of a browser is slower
            driver.get(f"{base_url}/order_headers/{po_ids[0]}")
        for po in po_ids:
            t_po = time.perf_counter()
            driver.get(f"{base_url}/order_headers/{po}")
            t_page = time.perf_counter()
            links = driver.find_elements(By.CSS_SELECTOR, ATTACHMENT_SELECTOR)
            t_found = time.perf_counter()
            times.page[po], times.find[po] = t_page - t_po, t_found - t_page
            files = times.files.setdefault(po, [])
            for link in links:
                t0 = time.perf_counter()
                driver.execute_script("arguments[0].click();", link)
                name = _wait_file(download_dir)
                files.append(time.perf_counter() - t0)
                os.remove(download_dir / name)
            close_popups(driver, main)
            times.whole[po] = time.perf_counter() - t_po
    times.wall = time.perf_counter() - t_start
    return times


@dataclass
class LoopOverhead:
    """The loop's time beyond the portal's latency, in ms, in the shape of pobatch's step table."""

    steps_ms_per_po: dict[str, float]  # mean per PO, like benchmarks.steps
    page_ms: float  # median page load beyond the page's latency
    file_ms: float  # median click-to-file beyond the file's latency
    po_ms: float  # mean whole PO beyond its portal time
    po_ms_median: float
    files_per_po: float


def loop_overhead(times: LoopTimes, scenario: Scenario) -> LoopOverhead:
    """Subtract the scenario's latencies (none for the floor) from what the loop measured.

    The page lists a PO's attachments in the scenario's order, so the n-th click is the n-th entry.
    """
    page_s = scenario.latency.page_ms[0] / 1000
    latency = file_seconds(scenario)
    pos = list(times.whole)
    page = [(times.page[p] - page_s) * 1000 for p in pos]
    per_file: list[float] = []
    downloads = 0.0
    rest = 0.0
    for p in pos:
        entries = scenario.entries(p, "po")
        if len(entries) != len(times.files[p]):
            raise RuntimeError(f"PO {p}: the loop clicked {len(times.files[p])} link(s), the scenario has "
                               f"{len(entries)} attachment(s)")
        files = [(t - latency[(p, e.key)]) * 1000 for t, e in zip(times.files[p], entries)]
        per_file += files
        downloads += sum(files)
        rest += (times.whole[p] - times.page[p] - times.find[p] - sum(times.files[p])) * 1000
    whole = [(times.whole[p] - portal_seconds(scenario, p)) * 1000 for p in pos]
    n = len(pos)
    return LoopOverhead(
        steps_ms_per_po={"open page": statistics.fmean(page), "find attachments": statistics.fmean(
            times.find[p] * 1000 for p in pos), "downloads": downloads / n, "end of attempt": rest / n},
        page_ms=statistics.median(page), file_ms=statistics.median(per_file) if per_file else 0.0,
        po_ms=statistics.fmean(whole), po_ms_median=statistics.median(whole), files_per_po=len(per_file) / n)
