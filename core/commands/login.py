"""Signing in: the demo's test account is typed for you; a real portal's sign-in is always yours.

pobatch never types a real password. `pobatch login` opens a visible browser on the profile, notices
when you have signed in (pobatch.core.commands.sign_in) and closes it; the session it leaves in the profile is what
every run then uses.
"""
from __future__ import annotations

import logging
from pathlib import Path

import click

from pobatch.core.preparation.profiles import refuse_profile_in_use, resolve_base_profile, seed_profile
from pobatch.core.commands.sign_in import SIGN_IN_TIMEOUT, SignInOutcome, SignInRequest, sign_in
from pobatch.core.sites.demo import DEMO_EMAIL, DEMO_PASSWORD
from pobatch.corelib.browser.factory import BrowserSpec
from pobatch.corelib.errors import FatalError
from pobatch.corelib.browser.local_session import LocalBrowserSession

log = logging.getLogger(__name__)


def prepare_demo_profile(profile_dir: Path, base_url: str, browser: str = "chromium", driver: str | None = None,
                         binary: str | None = None, timeout: float = 30.0) -> Path:
    """Seed a demo profile and sign it in to the demo portal; quitting writes the cookie to disk."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    refuse_profile_in_use(Path(profile_dir))
    seed_profile(Path(profile_dir))
    spec = BrowserSpec(browser=browser, headless=True, driver=driver, binary=binary,
                       user_data_dir=str(profile_dir), local_only=True, page_load_timeout=timeout)
    with LocalBrowserSession(spec) as session:
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
                      binary: str | None = None, site: str = "coupa", timeout: float = SIGN_IN_TIMEOUT) -> bool:
    """Open the portal visibly on the base profile, wait until the person has signed in (the portal
    stops sending the window to its sign-in page), then close the window. True when signed in."""
    def opened(profile_dir: Path) -> None:
        click.echo(f"Sign in to {base_url} in the browser window (profile {profile_dir}); pobatch closes the "
              "window by itself once you are signed in.")

    outcome = sign_in(SignInRequest(base_url=base_url.rstrip("/"), site=site, browser=browser, profile=profile,
                                    driver=driver, binary=binary, timeout=timeout), on_open=opened)
    path = resolve_base_profile(profile, browser)
    if not path.exists():
        raise FatalError(f"the profile {path} disappeared while signing in", reason="BAD_CONFIG")
    if outcome is SignInOutcome.SIGNED_IN:
        click.echo(f"Signed in: every run on this profile now uses that session ({path}).")
        return True
    click.echo({SignInOutcome.WINDOW_CLOSED: "The window was closed before the sign-in finished.",
           SignInOutcome.TIMED_OUT: f"No sign-in within {timeout / 60:.0f} minutes.",
           SignInOutcome.STOPPED: "Sign-in stopped."}[outcome] + " Nothing changed; try again when you are ready.")
    return False
