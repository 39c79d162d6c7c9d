"""Following a single-sign-on refresh instead of stopping the run for it (docs/design.md, "Single-sign-on refreshes").

When the portal's own session ends while the identity provider's has not, the browser goes to the
provider on another host (or through the portal's sign-in path) and comes straight back signed in:
an auto-submitting SAML form, a script or meta redirect, a chain of 302s, all within a second and no
person needed. Only a page that stays there and wants a person is a sign-in wall: a visible password
or code field at once, or a page that stays still for STAYS_S (an account picker, a "continue"
button, an error). A bounce that keeps moving past FOLLOW_S is a transient SSO_TIMEOUT.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from pobatch.core.workflow.page_probes import BOUNCE_JS, PageProbe, PageState
from pobatch.corelib.errors import TransientError
from pobatch.corelib.polling import Backoff

log = logging.getLogger(__name__)

FOLLOW_S = 20.0  # the longest a refresh may take to come back, however many hosts it passes
STAYS_S = 3.0  # a sign-in page that stays this still, with no field, waits for a person


@dataclass(frozen=True)
class BounceLook:
    """One look at the page a refresh is passing through."""

    url: str = ""
    host: str = ""
    quiet_ms: int = 0
    person: str = ""  # what asks for a person ('' none)

    @classmethod
    def of(cls, d: Any) -> "BounceLook":
        d = d if isinstance(d, dict) else {}
        return cls(str(d.get("url") or ""), str(d.get("host") or ""), int(d.get("quiet_ms") or 0),
                   str(d.get("person") or ""))


@dataclass(frozen=True)
class Bounce:
    """How a followed refresh ended: the probe of the page it came back to (or of the wall), the hosts
    it passed and how long it took."""

    probe: PageProbe
    hosts: tuple[str, ...]
    seconds: float

    @property
    def came_back(self) -> bool:
        """Back on the portal's own pages (whatever they show), not stopped at a wall."""
        return self.probe.via != "wall"


def look(driver: Any) -> BounceLook:
    """The page as it is now; a page that is being replaced answers as 'still moving'."""
    from selenium.common.exceptions import JavascriptException, WebDriverException

    try:
        return BounceLook.of(driver.execute_script(BOUNCE_JS))
    except JavascriptException as exc:  # the document went away under the script: it is moving
        log.debug("bounce look during a navigation: %s", exc)
        return BounceLook()
    except WebDriverException as exc:
        if "execution context" in str(exc).lower() or "unloaded" in str(exc).lower():
            return BounceLook()
        raise


def follow(driver: Any, first: PageProbe, probe_portal: Callable[[], PageProbe], portal_host: str,
           follow_s: float = FOLLOW_S, stays_s: float = STAYS_S,
           clock: Callable[[], float] = time.monotonic,
           ended_in_download: Callable[[], bool] = lambda: False) -> Bounce:
    """Follow the browser from a sign-in state that a refresh may pass through (`first`) until it is
    back on one of the portal's own pages (the probe of it is returned), or stops at a wall (a LOGIN
    probe with via 'wall'). `probe_portal` waits for the page's state as the workflow judges it.

    A refresh on the way to a file ends in the download, not on a page: the frame stays on the last
    page it passed (the provider's form). `ended_in_download` says when that download has begun; the
    bounce then came back (probe state LOADING, via 'download') and the caller restores its page."""
    t0 = clock()
    hosts: list[str] = []
    backoff = Backoff(first=0.02, ceiling=0.2)
    probe = first
    while True:
        if ended_in_download():
            return Bounce(PageProbe(PageState.LOADING, "the refresh ended in the download", via="download"),
                          tuple(hosts), clock() - t0)
        seen = look(driver)
        if seen.host and seen.host not in hosts and seen.host != portal_host:
            hosts.append(seen.host)
        if seen.host == portal_host:
            probe = probe_portal()
            if not probe.may_pass_through:  # back on the portal proper, or a real wall there
                return Bounce(probe, tuple(hosts), clock() - t0)
            seen = look(driver)  # still the portal's sign-in path: judged as any page on the way
        if seen.person:
            return Bounce(_wall(f"{_where(seen, portal_host)} asks for {seen.person}", seen), tuple(hosts), clock() - t0)
        if seen.host and seen.quiet_ms >= stays_s * 1000:
            return Bounce(_wall(f"{_where(seen, portal_host)} stayed {seen.quiet_ms / 1000:.1f}s without moving on "
                                "(it waits for a person)", seen), tuple(hosts), clock() - t0)
        if clock() - t0 > follow_s:
            raise TransientError(f"the sign-in redirect through {', '.join(hosts) or portal_host} did not come back "
                                 f"within {follow_s:.0f}s (last at {seen.url or probe.url})", reason="SSO_TIMEOUT")
        backoff.sleep()


def _where(seen: BounceLook, portal_host: str) -> str:
    return "the portal's sign-in page" if seen.host == portal_host else f"the sign-in page at {seen.host}"


def _wall(detail: str, seen: BounceLook) -> PageProbe:
    return PageProbe(PageState.LOGIN, detail, url=seen.url, via="wall")
