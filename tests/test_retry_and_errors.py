import random

from selenium.common.exceptions import SessionNotCreatedException, StaleElementReferenceException, TimeoutException

from pool_handlers import ItemNotFound
from pobatch.corelib.errors import ErrorClass, LoginRequiredError, TransientError, classify, reason_of
from pobatch.corelib.retry import RetryPolicy


def test_classification():
    assert classify(TimeoutException()) is ErrorClass.TRANSIENT
    assert classify(StaleElementReferenceException()) is ErrorClass.TRANSIENT
    assert classify(SessionNotCreatedException()) is ErrorClass.FATAL
    assert classify(LoginRequiredError()) is ErrorClass.LOGIN
    assert classify(ItemNotFound("x")) is ErrorClass.BUSINESS
    assert classify(ValueError()) is ErrorClass.FATAL
    from urllib3.exceptions import MaxRetryError, ProtocolError

    assert classify(MaxRetryError(None, "http://127.0.0.1:1/session")) is ErrorClass.TRANSIENT
    assert classify(ProtocolError("connection aborted")) is ErrorClass.TRANSIENT
    assert reason_of(TimeoutException()) == "TIMEOUT"
    assert reason_of(TransientError("x", reason="HTTP_500")) == "HTTP_500"


def test_only_transient_errors_are_retried_and_attempts_are_bounded():
    p = RetryPolicy(max_attempts=3)
    assert p.should_retry(ErrorClass.TRANSIENT, 1) and p.should_retry(ErrorClass.TRANSIENT, 2)
    assert not p.should_retry(ErrorClass.TRANSIENT, 3)
    for c in (ErrorClass.BUSINESS, ErrorClass.LOGIN, ErrorClass.FATAL):
        assert not p.should_retry(c, 1)


def test_backoff_grows_and_is_capped():
    p = RetryPolicy(base_delay=1, max_delay=5, jitter=0)
    assert [p.delay(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 5, 5]
    q = RetryPolicy(base_delay=1, jitter=0.25)
    d = q.delay(1, random.Random(1))
    assert 0.75 <= d <= 1.25


def test_retry_jitter_is_the_same_in_every_process() -> None:
    """hash() of a str is salted per process; the jitter must not be."""
    import subprocess
    import sys

    code = ("from pobatch.corelib.retry import RetryPolicy, jitter_rng; "
            "print(repr(RetryPolicy().delay(2, jitter_rng('100001', 2))))")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(seed), "PATH": ""}).stdout for seed in (1, 2, 3)}
    assert len(runs) == 1


def test_a_full_disk_is_fatal_with_its_own_reason():
    import errno
    import sqlite3

    from pobatch.corelib.errors import is_disk_full

    for exc in (OSError(errno.ENOSPC, "No space left on device"), sqlite3.OperationalError("database or disk is full")):
        assert is_disk_full(exc)
        assert classify(exc) is ErrorClass.FATAL and reason_of(exc) == "DISK_FULL"
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert classify(OSError(errno.ECONNRESET, "reset")) is ErrorClass.TRANSIENT


def test_a_browser_that_cannot_reach_the_server_is_a_connection_failure():
    from selenium.common.exceptions import WebDriverException

    exc = WebDriverException("unknown error: net::ERR_CONNECTION_REFUSED\n  (Session info: chrome=120)")
    assert classify(exc) is ErrorClass.TRANSIENT and reason_of(exc) == "CONNECTION_FAILED"


def test_the_circuit_breaker_trips_only_on_consecutive_connection_failures():
    import pytest

    from pobatch.core.monitoring.stream_watch import CircuitBreaker, PortalUnreachable
    from pobatch.corelib.worker_pool.tasks import TaskResult

    def result(key: str, reason: str) -> TaskResult:
        return TaskResult(key=key, status="FAILED", reason=reason)

    breaker = CircuitBreaker("http://portal", threshold=3)
    assert breaker.hold(result("1", "CONNECTION_FAILED")) and breaker.hold(result("2", "CONNECTION_FAILED"))
    assert not breaker.hold(result("3", "HTTP_500"))  # another answer: the two were single failures
    assert [r.key for r in breaker.release()] == ["1", "2"]
    breaker.hold(result("4", "CONNECTION_FAILED"))
    breaker.hold(result("5", "CONNECTION_FAILED"))
    with pytest.raises(PortalUnreachable) as info:
        breaker.hold(result("6", "CONNECTION_FAILED"))
    assert [r.key for r in info.value.results] == ["4", "5", "6"] and "http://portal" in str(info.value)
