"""One classification of errors, used by every retry decision in the engine.

transient: worth another attempt (timeouts, a crashed browser, HTTP 5xx, stale elements);
business:  a true answer about the item, never retried (not found, nothing to download);
login:     the portal wants a person to sign in: pause the whole run, do not fail items;
fatal:     bad configuration: stop the run.
"""
from __future__ import annotations

import enum
import errno


class ErrorClass(str, enum.Enum):
    TRANSIENT = "transient"
    BUSINESS = "business"
    LOGIN = "login"
    FATAL = "fatal"


class PobatchError(Exception):
    """Base error that knows its class and a short machine-readable reason."""

    error_class: ErrorClass = ErrorClass.FATAL

    def __init__(self, message: str = "", reason: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason or type(self).__name__.upper()


class TransientError(PobatchError):
    error_class = ErrorClass.TRANSIENT

    def __init__(self, message: str = "", reason: str = "", retry_after: float = 0.0) -> None:
        super().__init__(message, reason)
        self.retry_after = retry_after  # the server asked for at least this pause (HTTP 429 Retry-After)


class LoginRequiredError(PobatchError):
    error_class = ErrorClass.LOGIN

    def __init__(self, message: str = "", reason: str = "LOGIN_REQUIRED") -> None:
        super().__init__(message, reason)


class FatalError(PobatchError):
    error_class = ErrorClass.FATAL


class DiskFullError(FatalError):
    """No room left where the run writes: every further PO would fail the same way, so the run stops."""

    def __init__(self, message: str = "", reason: str = "DISK_FULL") -> None:
        super().__init__(message, reason)


# Windows: ERROR_HANDLE_DISK_FULL, ERROR_DISK_FULL (Python maps most, not all, to ENOSPC).
_WIN_DISK_FULL = (39, 112)


def is_disk_full(exc: BaseException) -> bool:
    """An OSError or SQLite error that says the disk (or the user's quota) is full."""
    if isinstance(exc, DiskFullError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)) or \
            getattr(exc, "winerror", None) in _WIN_DISK_FULL
    if type(exc).__name__ in ("OperationalError", "DatabaseError") and type(exc).__module__.startswith("sqlite3"):
        return "disk is full" in str(exc)
    return False


def classify(exc: BaseException) -> ErrorClass:
    """Map any exception to its class; unknown WebDriver trouble is transient."""
    if isinstance(exc, PobatchError):
        return exc.error_class
    if is_disk_full(exc):
        return ErrorClass.FATAL
    # Imported lazily: the pure-logic parts of the engine do not need selenium.
    try:
        from selenium.common import exceptions as sx
    except ImportError:  # pragma: no cover - selenium is a hard dependency
        sx = None
    if sx is not None and isinstance(exc, sx.WebDriverException):
        if isinstance(exc, sx.SessionNotCreatedException):
            # The driver/browser pair cannot start at all: configuration, not luck.
            return ErrorClass.FATAL
        return ErrorClass.TRANSIENT
    if isinstance(exc, (TimeoutError, ConnectionError, OSError)):
        return ErrorClass.TRANSIENT
    if type(exc).__module__.startswith("urllib3"):
        # The driver process died under us (MaxRetryError, ProtocolError): a new browser will do.
        return ErrorClass.TRANSIENT
    return ErrorClass.FATAL


# What Chromium says (in a WebDriver error) when it could not reach the server at all.
_NET_FAILURES = ("ERR_CONNECTION_REFUSED", "ERR_CONNECTION_RESET", "ERR_CONNECTION_CLOSED", "ERR_CONNECTION_FAILED",
                 "ERR_CONNECTION_TIMED_OUT", "ERR_NAME_NOT_RESOLVED", "ERR_ADDRESS_UNREACHABLE",
                 "ERR_INTERNET_DISCONNECTED", "ERR_NETWORK_CHANGED", "ERR_EMPTY_RESPONSE",
                 "ERR_TUNNEL_CONNECTION_FAILED", "ERR_PROXY_CONNECTION_FAILED")


def reason_of(exc: BaseException) -> str:
    """A short upper-case reason for the results table."""
    if isinstance(exc, PobatchError):
        return exc.reason
    if is_disk_full(exc):
        return "DISK_FULL"
    name = type(exc).__name__
    if name in ("TimeoutException", "TimeoutError"):
        return "TIMEOUT"
    if name in ("InvalidSessionIdException", "NoSuchWindowException") or "crash" in str(exc).lower():
        return "BROWSER_CRASHED"
    if name == "StaleElementReferenceException":
        return "STALE_ELEMENT"
    if any(code in str(exc) for code in _NET_FAILURES):
        return "CONNECTION_FAILED"
    return name.upper()


def fatal_error(reason: str, message: str) -> FatalError:
    """A fatal error that crossed a process boundary as (reason, message), as its own class again."""
    if reason == DiskFullError().reason:
        return DiskFullError(message)
    return FatalError(message, reason=reason)
