"""Signing in on pobatch's profile, and noticing by itself when the person is done.

pobatch never types a real password: it opens the portal in a visible browser on the profile every run
starts from, and the person signs in there (password, single sign-on, whatever the portal asks). The
portal itself says when that is finished: it stops sending the browser to its sign-in page. So pobatch
watches the window, and once the page is the portal's own (not its sign-in page, not an identity
provider) it asks the portal for its home page from inside that page; when that answer is not a
redirect to the sign-in page, the session is there. Then the window is closed, which is also what
makes the browser write the fresh session cookie to the profile on disk (docs/design.md: a running
browser keeps new cookies in memory for up to about 30 s).
"""
from __future__ import annotations

import enum
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from pobatch.core.portal_address import is_local_address
from pobatch.core.preparation.profiles import profile_location, refuse_profile_in_use, resolve_base_profile
from pobatch.core.sites import get_site
from pobatch.core.sites.definition import SiteDefinition
from pobatch.core.workflow.page_probes import PAGE_STATE_JS, PageProbe, PageState
from pobatch.corelib.browser.factory import BrowserSpec
from pobatch.corelib.errors import FatalError
from pobatch.corelib.browser.local_session import LocalBrowserSession
from pobatch.corelib.polling import Backoff

log = logging.getLogger(__name__)

# A person reads, types, maybe fetches a phone for a second factor: wait generously.
SIGN_IN_TIMEOUT = 15 * 60.0
# Polling a person, not a download: from 50 ms (a sign-in that is already there) up to once a second.
POLL_FIRST, POLL_CEILING = 0.05, 1.0
# For machines with no screen at all (the test suite, CI): the same window, headless. A person cannot
# use it; a test signs in through the browser's DevTools port instead (tests/test_desk_sign_in.py).
HEADLESS_ENV = "POBATCH_SIGN_IN_HEADLESS"

# Asks the portal for its home page from inside the signed-in-looking page, with the page's cookies;
# answers the URL the portal finally served, or "error: ..." (e.g. a redirect to another host).
FETCH_HOME_JS = r"""
const done = arguments[arguments.length - 1];
fetch(arguments[0], {credentials: 'include', cache: 'no-store'})
  .then(r => done(r.url || ''))
  .catch(e => done('error: ' + e));
"""


class SignInOutcome(str, enum.Enum):
    SIGNED_IN = "SIGNED_IN"
    WINDOW_CLOSED = "WINDOW_CLOSED"  # the person closed the window before the portal let them in
    TIMED_OUT = "TIMED_OUT"
    STOPPED = "STOPPED"  # Ctrl+C


@dataclass(frozen=True)
class SignInRequest:
    """Where and with which browser/profile to sign in; what a run that stopped at a sign-in page used."""

    base_url: str
    site: str = "coupa"
    browser: str = "chromium"
    profile: str | None = None
    driver: str | None = None
    binary: str | None = None
    timeout: float = SIGN_IN_TIMEOUT


def home_url(base_url: str) -> str:
    return base_url.rstrip("/") + "/"


def page_looks_signed_in(driver, site: SiteDefinition, base_url: str) -> bool:
    """This window shows one of the portal's own pages, parsed, with no sign-in form."""
    state = PageProbe.of(driver.execute_script(PAGE_STATE_JS, site.page_probe_config(base_url), None)).state
    if state in (PageState.LOGIN, PageState.CONNECTION_ERROR, PageState.LOADING):
        return False
    url = driver.current_url
    if urlsplit(url).netloc.lower() != site.host_of(base_url) or site.is_login_url(base_url, url):
        return False
    # Parsed is enough: a tracking pixel may hold the load event for ever (docs/design.md, "Pages judged
    # by their content"); portal_lets_in then asks the portal itself.
    return driver.execute_script("return document.readyState") in ("interactive", "complete")


def portal_lets_in(driver, site: SiteDefinition, base_url: str) -> bool:
    """The portal answers its home page without sending this browser to its sign-in page."""
    final = driver.execute_async_script(FETCH_HOME_JS, home_url(base_url))
    if not final or str(final).startswith("error:"):
        log.debug("sign-in check: the portal's home page answered %s", final)
        return False
    return urlsplit(final).netloc.lower() == site.host_of(base_url) and not site.is_login_url(base_url, final)


def wait_for_sign_in(driver, site: SiteDefinition, base_url: str, timeout: float = SIGN_IN_TIMEOUT,
                     clock: Callable[[], float] = time.monotonic) -> SignInOutcome:
    """Watch the open window until the portal lets this browser in, the window is closed, or `timeout`."""
    from selenium.common.exceptions import JavascriptException, NoSuchWindowException, WebDriverException

    deadline = clock() + timeout
    backoff = Backoff(first=POLL_FIRST, ceiling=POLL_CEILING)
    try:
        driver.set_script_timeout(30)
    except WebDriverException:  # the window was closed before the watch began
        return SignInOutcome.WINDOW_CLOSED
    while True:
        try:
            handles = driver.window_handles
        except WebDriverException as exc:  # the browser is gone: the person closed its last window
            log.debug("sign-in window gone: %s", exc.msg if hasattr(exc, "msg") else exc)
            return SignInOutcome.WINDOW_CLOSED
        if not handles:
            return SignInOutcome.WINDOW_CLOSED
        try:
            try:
                current = driver.current_window_handle
            except NoSuchWindowException:
                current = None
            if current not in handles:  # the person closed our tab but kept another one
                driver.switch_to.window(handles[0])
            if page_looks_signed_in(driver, site, base_url) and portal_lets_in(driver, site, base_url):
                return SignInOutcome.SIGNED_IN
        except (NoSuchWindowException, JavascriptException) as exc:
            log.debug("sign-in check skipped (window changing): %s", exc.msg)
        except WebDriverException as exc:
            # A page in the middle of navigating, or a browser closing under us: the next round tells.
            log.debug("sign-in check skipped: %s", exc.msg)
        if clock() > deadline:
            return SignInOutcome.TIMED_OUT
        backoff.sleep()


def no_screen() -> bool:
    """Linux without a desktop session (ssh, a container): a visible window has nowhere to show."""
    return sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def sign_in(request: SignInRequest, on_open: Callable[[Path], None] | None = None) -> SignInOutcome:
    """Open the portal in a window on the profile, wait until the person has signed in, close the window.

    `on_open` is told the profile folder once the window shows the portal (to print what to do)."""
    site = get_site(request.site)
    # First the user's own browser on the profile (the likelier problem), then the screen, and only
    # then is anything created: a refused sign-in leaves no trace.
    refuse_profile_in_use(profile_location(request.profile, request.browser))
    headless = os.environ.get(HEADLESS_ENV) == "1"
    if not headless and no_screen():
        raise FatalError("there is no screen here to show the sign-in window on (no DISPLAY): run pobatch from "
                         f"a desktop session, or sign in there once with 'pobatch login --base-url "
                         f"{request.base_url}'", reason="BAD_CONFIG")
    profile = resolve_base_profile(request.profile, request.browser)
    spec = BrowserSpec(browser=request.browser, headless=headless, driver=request.driver, binary=request.binary,
                       user_data_dir=str(profile), local_only=is_local_address(request.base_url),
                       page_load_timeout=120.0)
    with LocalBrowserSession(spec) as session:  # closing = quitting: the browser writes its cookies to disk
        driver = session.driver
        try:
            driver.get(home_url(request.base_url))
        except Exception as exc:  # a slow identity provider: the window is still there to sign in
            log.info("the portal's first page is still loading: %s", getattr(exc, "msg", exc))
        if on_open:
            on_open(profile)
        try:
            outcome = wait_for_sign_in(driver, site, request.base_url, request.timeout)
        except KeyboardInterrupt:
            outcome = SignInOutcome.STOPPED
    log.info("sign-in on %s: %s", profile, outcome.value)
    return outcome
