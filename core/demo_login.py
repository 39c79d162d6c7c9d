"""Signing in: the demo's test account is typed for you; a real portal's sign-in is always yours.

pobatch never types a real password. `pobatch login` opens a visible browser on the profile and waits
until you close it; the session it leaves in the profile is what every run then uses.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from core.profiles import resolve_base_profile, seed_profile
from core.sites.demo import DEMO_EMAIL, DEMO_PASSWORD
from corelib.browser import BrowserSpec
from corelib.browser_session import BrowserSession
from corelib.errors import FatalError

log = logging.getLogger(__name__)


def _refuse_in_use(profile: Path) -> None:
    """Never start a browser on a profile a running browser holds (closing ours could not be told
    apart from closing the user's): one line asking the user to close it."""
    from corelib.profile_manager import profile_in_use_error

    message = profile_in_use_error(profile) if profile.exists() else None
    if message:
        raise FatalError(f"--profile: {message}", reason="PROFILE_IN_USE")


def prepare_demo_profile(profile_dir: Path, base_url: str, browser: str = "chromium", driver: str | None = None,
                         binary: str | None = None, timeout: float = 30.0) -> Path:
    """Seed a demo profile and sign it in to the demo portal; quitting writes the cookie to disk."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _refuse_in_use(Path(profile_dir))
    seed_profile(Path(profile_dir))
    spec = BrowserSpec(browser=browser, headless=True, driver=driver, binary=binary,
                       user_data_dir=str(profile_dir), local_only=True, page_load_timeout=timeout)
    with BrowserSession(spec) as session:
        d = session.driver
        d.get(base_url.rstrip("/") + "/")
        if "/sessions/new" in d.current_url:
            d.find_element(By.ID, "user_email").send_keys(DEMO_EMAIL)
            d.find_element(By.ID, "user_password").send_keys(DEMO_PASSWORD)
            d.find_element(By.CSS_SELECTOR, "form#new_session [type=submit]").click()
            WebDriverWait(d, timeout).until(lambda drv: "/sessions" not in drv.current_url)
            log.info("signed the demo profile in to %s", base_url)
    return Path(profile_dir)


def interactive_login(base_url: str, browser: str, profile: str | None, driver: str | None = None,
                      binary: str | None = None) -> Path:
    """Open the portal visibly on the base profile and wait for the user to close the window."""
    path = resolve_base_profile(profile, browser)
    _refuse_in_use(path)
    spec = BrowserSpec(browser=browser, headless=False, driver=driver, binary=binary, user_data_dir=str(path))
    with BrowserSession(spec) as session:
        d = session.driver
        d.get(base_url)
        print(f"Sign in to {base_url} in the browser window, then close the window.")
        while True:
            try:
                if not d.window_handles:
                    break
            except Exception:  # the user closed the last window
                break
            time.sleep(1.0)  # polling a person, not a download: once a second is plenty
    if not path.exists():
        raise FatalError(f"the profile {path} disappeared while signing in", reason="BAD_CONFIG")
    return path
