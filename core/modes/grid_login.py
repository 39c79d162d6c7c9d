"""Login travels with the Grid session: the base profile's portal cookies, set into each remote browser.

A Grid node's browser starts with an empty profile, and the user's sign-in (SSO) lives in their own
profile on this PC. So before the first PO, pobatch reads the cookies the profile holds for the
portal, and sets them into every new remote session. pobatch never sees a password; the cookies
stay in memory (they go to worker processes through their pipes, never to disk or the log).

Reading: a short local headless start on a clone of the profile (the profile may be open in the
user's browser, and Chromium encrypts cookies on disk with a key only the browser itself uses), then
DevTools `Network.getCookies` for the portal's URL: the cookies a request to the portal would carry,
HttpOnly ones included, without loading any page. If DevTools is not available, it falls back to
opening the portal and `driver.get_cookies()`.

Setting: WebDriver only accepts a cookie for the page's own domain, so the remote browser first opens
a page on the portal that needs no login (`/robots.txt`, or the login page it redirects to), then adds each cookie.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pobatch.core.workflow import sign_in_bounce
from pobatch.core.workflow.page_probes import PageProbe, PageState
from pobatch.corelib.browser.factory import BrowserSpec
from pobatch.corelib.errors import TransientError
from pobatch.corelib.browser.local_session import LocalBrowserSession
from pobatch.corelib.browser.profile_manager import ProfileManager

log = logging.getLogger(__name__)

LANDING_PATH = "/robots.txt"  # on the portal's host, needs no login (favicon.ico can be a 204: no navigation)
_WEBDRIVER_FIELDS = ("name", "value", "path", "domain", "secure", "httpOnly", "expiry", "sameSite")


def read_portal_cookies(base_profile: str | Path, base_url: str, spec: BrowserSpec, run_id: str,
                        profiles_root: str | Path | None = None) -> list[dict[str, Any]]:
    """The cookies the base profile would send to base_url, as WebDriver cookie dicts."""
    manager = ProfileManager(base_profile, f"{run_id}-grid-login", work_root=profiles_root)
    try:
        clone = manager.clone("cookies")
        local = dataclasses.replace(spec, user_data_dir=str(clone), download_dir=None, headless=True)
        with LocalBrowserSession(local) as session:
            cookies = _cookies_for(session.driver, base_url)
    finally:
        manager.cleanup()
    host = urlsplit(base_url).hostname or base_url
    if cookies:
        log.info("carrying %d cookie(s) for %s from the profile to the Grid sessions", len(cookies), host)
    else:
        log.warning("the profile %s holds no cookies for %s: the Grid's browsers will meet the sign-in page "
                    "(sign in once with `pobatch login`, then run again)", base_profile, host)
    return cookies


def _cookies_for(driver: Any, base_url: str) -> list[dict[str, Any]]:
    url = base_url.rstrip("/") + "/"
    try:
        raw = driver.execute_cdp_cmd("Network.getCookies", {"urls": [url]})["cookies"]
        return [webdriver_cookie(c) for c in raw]
    except Exception as exc:  # a browser without DevTools: ask the page instead
        log.debug("Network.getCookies failed (%s): reading cookies from the portal page", exc)
    driver.get(base_url.rstrip("/") + LANDING_PATH)
    return [{k: v for k, v in c.items() if k in _WEBDRIVER_FIELDS} for c in driver.get_cookies()]


def webdriver_cookie(cdp: dict[str, Any]) -> dict[str, Any]:
    """A DevTools cookie as WebDriver's add_cookie wants it.

    A host-only cookie (domain without a leading dot) is added without a domain, so it stays
    host-only (and `__Host-` cookies stay valid); session cookies (expires -1) get no expiry."""
    out: dict[str, Any] = {"name": cdp["name"], "value": cdp["value"], "path": cdp.get("path") or "/",
                           "secure": bool(cdp.get("secure")), "httpOnly": bool(cdp.get("httpOnly"))}
    domain = cdp.get("domain") or ""
    if domain.startswith("."):
        out["domain"] = domain
    expires = cdp.get("expires", -1)
    if not cdp.get("session") and expires and expires > 0:
        out["expiry"] = int(expires)
    if cdp.get("sameSite") in ("Strict", "Lax", "None"):
        out["sameSite"] = cdp["sameSite"]
    return out


def apply_cookies(driver: Any, base_url: str, cookies: list[dict[str, Any]]) -> int:
    """Open a login-free page on the portal in the (new) remote browser and add the cookies there.

    A portal that sends even its landing page to the identity provider is followed back (a
    single-sign-on refresh, core/workflow/sign_in_bounce.py). Where no page of the portal can be
    reached, or a cookie is refused, this says so in one line and sets what it can: the POs then meet
    the sign-in page, and the run stops for it with one sentence, as any run without a sign-in does."""
    from selenium.common.exceptions import WebDriverException

    if not cookies:
        return 0
    host = (urlsplit(base_url).hostname or "").lower()
    try:
        landed = _land(driver, base_url, host)
    except (WebDriverException, TransientError) as exc:
        log.warning("the Grid's browser could not open the portal to set its cookies (%s): its POs will meet "
                    "the sign-in page", str(exc).splitlines()[0][:200])
        return 0
    if landed != host:
        log.warning("opening %s%s on the Grid led to %s, so the portal's cookies cannot be set there: its POs will "
                    "meet the sign-in page", base_url.rstrip("/"), LANDING_PATH, landed or "nowhere")
        return 0
    done = 0
    for cookie in cookies:
        try:
            driver.add_cookie(dict(cookie))
            done += 1
        except WebDriverException as exc:
            log.warning("the Grid's browser refused the cookie %s: %s", cookie.get("name", "?"),
                        (exc.msg or str(exc)).splitlines()[0][:200])
    log.debug("set %d cookie(s) for %s in Grid session %s", done, host, driver.session_id)
    return done


def _land(driver: Any, base_url: str, host: str) -> str:
    """Open the landing page; when it leaves for another host, follow the browser back. Returns the
    host the browser ends on."""
    driver.get(base_url.rstrip("/") + LANDING_PATH)
    landed = (urlsplit(driver.current_url).hostname or "").lower()
    if landed == host:
        return landed
    first = PageProbe(PageState.LOGIN, f"the landing page left for {landed}", via="host")
    try:
        sign_in_bounce.follow(driver, first, lambda: PageProbe(PageState.READY, "the portal's own host"),
                              urlsplit(base_url).netloc.lower())  # host:port, as the page reports it
    except TransientError as exc:
        log.debug("following the landing page's redirect: %s", exc)
    return (urlsplit(driver.current_url).hostname or "").lower()
