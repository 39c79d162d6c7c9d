"""The yardstick: a PO download loop written the way such scripts usually are.

One driver; for each PO open the page, find the attachment links, click each one, then sleep a
fixed time per file and hope the download is done. No completion check, no verification, no retry,
no per-PO folders. Deliberately naive; it lives in benchmarks/ only.

It starts its browser with the product's own flags (corelib.browser) so that the comparison is about
the workflow, not about a browser stall that DESIGN.md already explains, and it is cleaned up by
profile directory like every other browser here.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from core.sites import get_site
from corelib.browser import BrowserSpec
from corelib.browser_session import BrowserSession
from corelib.downloads import is_partial

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

    selector = ", ".join(get_site("demo").attachment_selectors)
    download_dir.mkdir(parents=True, exist_ok=True)
    spec = BrowserSpec(browser="chromium", headless=True, user_data_dir=str(profile_dir),
                       download_dir=str(download_dir), local_only=True)
    t0 = time.perf_counter()
    with BrowserSession(spec) as session:
        driver = session.driver
        started = time.perf_counter() - t0
        main = driver.current_window_handle
        for po in po_ids:
            driver.get(f"{base_url.rstrip('/')}/order_headers/{po}")
            for link in driver.find_elements(By.CSS_SELECTOR, selector):
                driver.execute_script("arguments[0].click();", link)  # the toolbar covers some links
                time.sleep(sleep_per_file)
            for handle in driver.window_handles:  # popups stay open after their download
                if handle != main:
                    driver.switch_to.window(handle)
                    driver.close()
            driver.switch_to.window(main)
        names = [p.name for p in download_dir.iterdir()]
    wall = time.perf_counter() - t0  # the browser's quit counts, as it does for pobatch
    return NaiveResult(wall=wall, browser_start=started, files=sum(not is_partial(n) for n in names),
                       partial=sum(is_partial(n) for n in names))
