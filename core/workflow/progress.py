"""What an attempt is waiting for, and its signs of life.

An attempt's time limit follows its progress (a page read, a download begun, bytes received): the
watchdog counts `po_timeout` from the last sign of life, not from the start, so a PO with 300 files
needs no larger limit than a PO with 3, and a stuck one is still cut off. When it is cut off, the
TIMEOUT says what it was waiting for, in words a person can act on (README, "What a TIMEOUT means").
"""
from __future__ import annotations

from enum import Enum
from typing import Callable


class Waiting(str, Enum):
    """The step an attempt is in; its value completes "waiting for ..."."""

    PAGE = "the PO page"
    ATTACHMENT_LIST = "its attachment list to settle"
    DOWNLOAD_BEGIN = "a download to begin"
    DOWNLOAD_BYTES = "a download's bytes"
    SIGN_IN_REDIRECT = "a sign-in redirect to come back"


# The reason a TIMEOUT carries, by what it waited for (docs/design.md, "Statuses and reasons").
TIMEOUT_REASONS: dict[Waiting, str] = {
    Waiting.PAGE: "TIMEOUT",
    Waiting.ATTACHMENT_LIST: "ATTACHMENTS_NOT_SETTLED",
    Waiting.DOWNLOAD_BEGIN: "DOWNLOAD_NOT_BEGUN",
    Waiting.DOWNLOAD_BYTES: "DOWNLOAD_TIMEOUT",
    Waiting.SIGN_IN_REDIRECT: "SSO_TIMEOUT",
}


class AttemptProgress:
    """Shared by the parts of one workflow: they say what they wait for and when they move on."""

    def __init__(self) -> None:
        self.waiting = Waiting.PAGE
        self._touch: Callable[[], None] = lambda: None

    def begin(self, touch: Callable[[], None]) -> None:
        """A new attempt: its watchdog's touch is what progress pulls."""
        self.waiting, self._touch = Waiting.PAGE, touch

    def wait_for(self, what: Waiting) -> None:
        self.waiting = what

    def made(self) -> None:
        """A sign of life: the attempt's limit counts from now."""
        self._touch()

    @property
    def timeout_reason(self) -> str:
        return TIMEOUT_REASONS[self.waiting]
