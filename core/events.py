"""The names of what the per-PO workflow puts on the timeline (corelib.tasks.Event.action).

The run store keeps them, the console and the HTML report read them, the sign-in watch decides on
them: one enum, so a name is spelled once. The engine's own events are corelib.tasks.PoolEvent.
"""
from __future__ import annotations

from enum import Enum


class PoEvent(str, Enum):
    ATTEMPT_START = "attempt_start"  # one attempt at one PO begins (its bar in the report)
    ATTEMPT_END = "attempt_end"  # ... and ends: outcome = the status, or "error"
    OPEN = "open"  # a page was opened: outcome = the probe's page state
    RATE_LIMITED = "rate_limited"  # the portal said 429: every worker pauses
    REQUISITION_FALLBACK = "requisition_fallback"  # the PO page had no list: its requisition is read
    ATTACHMENTS_FOUND = "attachments_found"
    DOWNLOAD = "download"  # one attachment: outcome ok or failed
    # A download still running after about 2 s, at most one every 2 s per download: detail is
    # "<received bytes>/<total bytes or 0> <file name>"; it also counts as the attempt's progress.
    DOWNLOAD_PROGRESS = "download_progress"
    # A click that started no download within its bounded wait; the next route is taken (detail says which).
    DOWNLOAD_NOT_BEGUN = "download_not_begun"
    # The browser went to the identity provider and came back signed in, without a person:
    # url = where it came back to, detail = the hosts it passed and how long it took.
    SSO_REFRESH = "sso_refresh"
    # The next PO's page began loading in a background tab while this PO's files download
    # (core/workflow/page_ahead.py): url = that page, detail = its PO.
    PAGE_AHEAD = "page_ahead"
    # A page loaded ahead did not prove itself (or the session was refreshed since): it is loaded again;
    # detail says why. A used one is an OPEN whose detail begins "loaded ahead".
    PAGE_AHEAD_STALE = "page_ahead_stale"
    # A sign-in page met while a page loaded ahead (the portal may renew its token on every answer):
    # pages ahead stop for this browser and the PO is tried again.
    PAGE_AHEAD_OFF = "page_ahead_off"
    POPUP_OPENED = "popup_opened"
    POPUP_CLOSED = "popup_closed"
    PUBLISHED = "published"  # the PO's folder is in place
    # A refresh found a held file missing (or changed) locally and no longer on the portal: it cannot come back.
    HELD_FILE_LOST = "held_file_lost"
    FAILURE_CAPTURED = "failure_captured"  # screenshot, HTML and console of a failed attempt
    BROWSER_RESTART = "browser_restart"
    RETRY_WAIT = "retry_wait"
    RECORDING = "recording"  # an rrweb recording of one attempt (core.recorder)
    # The single-session strategy's windows (core/modes/single_session):
    WINDOW_OPEN = "window_open"
    WINDOW_CLOSED = "window_closed"
    LOGIN_RECHECK = "login_recheck"
    SINGLE_SESSION_STATS = "single_session_stats"
