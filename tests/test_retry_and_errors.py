import random

from selenium.common.exceptions import SessionNotCreatedException, StaleElementReferenceException, TimeoutException

from corelib.errors import BusinessError, ErrorClass, LoginRequiredError, TransientError, classify, reason_of
from corelib.retry import RetryPolicy


def test_classification():
    assert classify(TimeoutException()) is ErrorClass.TRANSIENT
    assert classify(StaleElementReferenceException()) is ErrorClass.TRANSIENT
    assert classify(SessionNotCreatedException()) is ErrorClass.FATAL
    assert classify(LoginRequiredError()) is ErrorClass.LOGIN
    assert classify(BusinessError("x")) is ErrorClass.BUSINESS
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

    code = ("from corelib.retry import RetryPolicy, jitter_rng; "
            "print(repr(RetryPolicy().delay(2, jitter_rng('100001', 2))))")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(seed), "PATH": ""}).stdout for seed in (1, 2, 3)}
    assert len(runs) == 1
