"""What MainApp watches in a run's stream besides recording it: a sign-in page (did the session end,
or do the workers' sessions sign each other out?) and a portal that stopped answering.

Both decide from the results and events alone, whichever mode produced them (core/modes/).
"""
from __future__ import annotations

import time

from pobatch.core.events import PoEvent
from pobatch.core.status import Status
from pobatch.core.workflow.page_probes import SIGNED_IN_STATES
from pobatch.corelib.errors import FatalError
from pobatch.corelib.worker_pool.tasks import Event, TaskResult


class SignInWatch:
    """At a sign-in page in parallel mode: did the session simply end, or do the workers' sessions
    kill each other? Profile clones share one session cookie; a portal that keeps one live session per
    user (or renews its token on every response) signs a worker out as soon as another one uses it,
    while that other one stays signed in.

    So when the first LOGIN_REQUIRED comes, wait (at most `grace` seconds) for the evidence either
    way: another worker that opens a signed-in page after the refusal (sessions killing each other),
    or a sign-in page from every worker that has started (the session ended for all). Then stop with
    one message that says only what was seen. Elsewhere the first LOGIN_REQUIRED decides at once."""

    def __init__(self, one_session_possible: bool, grace: float = 30.0) -> None:
        self.enabled = one_session_possible
        self.grace = grace
        self.login: TaskResult | None = None
        self.signed_in = False  # a signed-in page at any time in this run
        self.signed_in_after: Event | None = None  # ...from a worker still signed in after the refusal
        self._refused_at: float | None = None
        self._attempt_started: dict[str, float] = {}  # worker -> when its latest attempt began
        self._started: set[str] = set()
        self._logged_out: set[str] = set()
        self._deadline = 0.0

    def observe(self, item: TaskResult | Event) -> None:
        if isinstance(item, Event):
            if item.action == PoEvent.ATTEMPT_START:
                self._started.add(item.worker_id)
                self._attempt_started[item.worker_id] = item.ts
            elif item.action == PoEvent.OPEN and item.outcome == "login" and self._refused_at is None:
                self._refused_at = item.ts
            elif item.action == PoEvent.OPEN and item.outcome in SIGNED_IN_STATES:
                self.signed_in = True
                # Evidence only from an attempt that began after the refusal: a page served just
                # before the session died can be reported just after it.
                if (self.login is not None and item.worker_id not in self._logged_out
                        and self._attempt_started.get(item.worker_id, 0.0) > (self._refused_at or self.login.finished)):
                    self.signed_in_after = self.signed_in_after or item
            return
        if item.status == Status.LOGIN_REQUIRED.value:
            self._logged_out.add(item.worker_id)
            if self.login is None:
                self.login, self._deadline = item, time.monotonic() + self.grace
                if self._refused_at is None:
                    self._refused_at = item.finished

    def verdict(self) -> str | None:
        """None while it is worth waiting; else "one_session", "ended" or "signed_out"."""
        if not self.enabled:
            return "signed_out"
        if self.signed_in_after is not None:
            return "one_session"
        if self._started <= self._logged_out or time.monotonic() > self._deadline:
            return "ended" if self.signed_in else "signed_out"
        return None

    def message(self) -> str:
        assert self.login is not None
        # The stream may end before the wait does: then what was seen so far decides.
        verdict = (self.verdict() or ("ended" if self.signed_in else "signed_out")) if self.enabled else "signed_out"
        if verdict == "one_session":
            other = self.signed_in_after.worker_id if self.signed_in_after else "another worker"
            return ("The portal refused worker " + (self.login.worker_id or "?") + "'s session while worker "
                    + other + ", using a copy of the same sign-in, stayed signed in: the sessions sign each "
                    "other out, so the portal keeps one live session per user (for example it renews the "
                    "session token on every page). Sign in again in your own browser, then run the same command "
                    "with --strategy single-session --windows 3 instead of --parallel: one browser, one session, "
                    "several windows. Finished POs are kept.")
        if verdict == "ended":
            return ("The portal signed pobatch out in the middle of the run: pages had opened signed in, then "
                    "every worker met the sign-in page (the session ended or expired). Sign in again in your own "
                    "browser, then run the same command: finished POs are kept.")
        return self.login.error


class PortalUnreachable(FatalError):
    """The portal stopped answering in the middle of a run: the results that showed it come along."""

    def __init__(self, message: str, results: list[TaskResult]) -> None:
        super().__init__(message, reason="CONNECTION_FAILED")
        self.results = results


class CircuitBreaker:
    """Stops the run when `threshold` POs in a row (across workers) could not connect to the portal.

    Each CONNECTION_FAILED result is held back; another kind of result releases them to be recorded
    (a single PO with a dropped connection is a FAILED answer); the threshold-th raises
    PortalUnreachable carrying them, so they stay PENDING for the rerun."""

    REASON = "CONNECTION_FAILED"

    def __init__(self, base_url: str, threshold: int = 3) -> None:
        self.base_url, self.threshold = base_url, threshold
        self._held: list[TaskResult] = []

    def hold(self, result: TaskResult) -> bool:
        if result.reason != self.REASON:
            return False
        self._held.append(result)
        if len(self._held) >= self.threshold:
            raise PortalUnreachable(
                f"The run stopped: {len(self._held)} POs in a row could not reach the portal {self.base_url} "
                f"(CONNECTION_FAILED). The POs not finished stay PENDING; run the same command again when the "
                "portal answers.", self._held)
        return True

    def release(self) -> list[TaskResult]:
        held, self._held = self._held, []
        return held
