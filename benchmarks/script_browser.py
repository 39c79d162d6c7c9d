"""What the two yardstick scripts (the naive one and the lean loop) share: their browser, the links
they click and how they leave a PO's popups behind.

They start the browser with the product's own flags (pobatch.corelib.browser.factory) so that a comparison is about
the workflow, not about a browser stall that docs/design.md explains ("Browser flags and the first-load
stall"), and they are cleaned up by profile directory like every other browser here.
"""
from __future__ import annotations

from pathlib import Path

from pobatch.core.sites import get_site
from pobatch.corelib.browser.factory import BrowserSpec
from pobatch.corelib.browser.local_session import LocalBrowserSession

ATTACHMENT_SELECTOR = ", ".join(get_site("demo").attachment_selectors)


def script_browser(profile_dir: Path, download_dir: Path) -> LocalBrowserSession:
    """A headless Chromium on a signed-in profile, downloading into download_dir."""
    download_dir.mkdir(parents=True, exist_ok=True)
    return LocalBrowserSession(BrowserSpec(browser="chromium", headless=True, user_data_dir=str(profile_dir),
                                      download_dir=str(download_dir), local_only=True))


def close_popups(driver, main: str) -> None:
    """Close every window but `main` (popups stay open after their download) and come back to it."""
    others = [h for h in driver.window_handles if h != main]
    for handle in others:
        driver.switch_to.window(handle)
        driver.close()
    if others:
        driver.switch_to.window(main)
