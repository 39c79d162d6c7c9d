"""The browser's own floor: what Chromium needs per page and per download when the portal answers at once.

The same POs and files, served without latency, fetched by the shortest loop Selenium allows: load the
page, find the links, JS-click each one, and watch the folder every 2 ms for the finished file; no
state probe, no popup bookkeeping per file, no verification. Whatever pobatch spends beyond the
portal's latency, this part of it belongs to the browser and no client-side change removes it.
"""
from __future__ import annotations

import logging
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.sites import get_site
from corelib.browser import BrowserSpec
from corelib.browser_session import BrowserSession
from corelib.downloads import is_partial

log = logging.getLogger(__name__)


@dataclass
class Floor:
    page_ms: list[float] = field(default_factory=list)  # driver.get of a PO page
    file_ms: list[float] = field(default_factory=list)  # JS click to finished file
    po_ms: list[float] = field(default_factory=list)  # one PO, everything included

    def summary(self) -> dict[str, float]:
        return {"page_ms": statistics.median(self.page_ms), "file_ms": statistics.median(self.file_ms),
                "po_ms": statistics.fmean(self.po_ms), "files_per_po": len(self.file_ms) / max(1, len(self.po_ms))}


def _wait_file(folder: Path, timeout: float = 30.0) -> str:
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        names = os.listdir(folder)
        done = [n for n in names if not is_partial(n)]
        if done and len(done) == len(names):
            return done[0]
        time.sleep(0.002)
    raise TimeoutError(f"no file in {folder} within {timeout:.0f}s")


def measure_floor(base_url: str, po_ids: list[str], profile_dir: Path, download_dir: Path) -> Floor:
    """One browser on a signed-in profile against a zero-latency portal; times every page and file."""
    from selenium.webdriver.common.by import By

    selector = ", ".join(get_site("demo").attachment_selectors)
    download_dir.mkdir(parents=True, exist_ok=True)
    spec = BrowserSpec(browser="chromium", headless=True, user_data_dir=str(profile_dir),
                       download_dir=str(download_dir), local_only=True)
    floor = Floor()
    with BrowserSession(spec) as session:
        driver = session.driver
        main = driver.current_window_handle
        driver.get(f"{base_url}/order_headers/{po_ids[0]}")  # warm-up: the first page of a browser is slower
        for po in po_ids:
            t_po = time.perf_counter()
            driver.get(f"{base_url}/order_headers/{po}")
            floor.page_ms.append((time.perf_counter() - t_po) * 1000)
            for link in driver.find_elements(By.CSS_SELECTOR, selector):
                t0 = time.perf_counter()
                driver.execute_script("arguments[0].click();", link)
                name = _wait_file(download_dir)
                floor.file_ms.append((time.perf_counter() - t0) * 1000)
                os.remove(download_dir / name)
            if len(driver.window_handles) > 1:
                for handle in driver.window_handles:
                    if handle != main:
                        driver.switch_to.window(handle)
                        driver.close()
                driver.switch_to.window(main)
            floor.po_ms.append((time.perf_counter() - t_po) * 1000)
    return floor
