"""The yardstick: a PO download loop written the way such scripts usually are.

One driver; for each PO open the page, find the attachment links, click each one, then sleep a
fixed time per file and hope the download is done. No completion check, no verification, no retry,
no per-PO folders. Deliberately naive; it lives in benchmarks/ only.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.script_browser import ATTACHMENT_SELECTOR, close_popups, script_browser
from pobatch.corelib.browser.downloads import is_partial

log = logging.getLogger(__name__)


@dataclass
class NaiveResult:
    wall: float  # from before the browser starts to after it quit
    browser_start: float
    files: int  # finished files in the download folder at the end
    partial: int  # downloads still in flight when the script ended


def run_naive(base_url: str, po_ids: list[str], profile_dir: Path, download_dir: Path,
              sleep_per_file: float = 2.0) -> NaiveResult:
    from selenium.webdriver.common.by import By

    t0 = time.perf_counter()
    with script_browser(profile_dir, download_dir) as session:
        driver = session.driver
        started = time.perf_counter() - t0
        main = driver.current_window_handle
        for po in po_ids:
            driver.get(f"{base_url.rstrip('/')}/order_headers/{po}")
            for link in driver.find_elements(By.CSS_SELECTOR, ATTACHMENT_SELECTOR):
                driver.execute_script("arguments[0].click();", link)  # the toolbar covers some links
                time.sleep(sleep_per_file)
            close_popups(driver, main)
        names = [p.name for p in download_dir.iterdir()]
    wall = time.perf_counter() - t0  # the browser's quit counts, as it does for pobatch
    return NaiveResult(wall=wall, browser_start=started, files=sum(not is_partial(n) for n in names),
                       partial=sum(is_partial(n) for n in names))
