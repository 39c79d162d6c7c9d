"""Pure logic behind the unattended run (issue 21): click pacing, the progress-following watchdog,
following a sign-in bounce, what a TIMEOUT says, and names Chromium mangled. No browser here; the
same behaviours are shown end to end in tests/test_unattended.py."""
from __future__ import annotations

import threading
import time

import pytest

from pobatch.core.reports.attention import CHECK, advice, attention_list, common_failure
from pobatch.core.results import PoOutcome
from pobatch.core.status import Status
from pobatch.core.workflow import sign_in_bounce
from pobatch.core.workflow.page_probes import PageProbe, PageState
from pobatch.core.workflow.progress import AttemptProgress, Waiting
from pobatch.corelib.browser.click_pacer import BURST_LIMIT, BurstPacer
from pobatch.corelib.errors import TransientError
from pobatch.corelib.safe_paths import safe_component
from pobatch.corelib.watchdog import Watchdog


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def blink_accepts(times: list[float]) -> list[bool]:
    """Blink's LocalFrame::ShouldThrottleDownload, as a model: which of these requests pass."""
    count, start, out = 0, 0.0, []
    for t in times:
        if count == 0:
            start = t
        elif count >= BURST_LIMIT:
            if t - start > 1.0:
                count, start = 1, t
                out.append(True)
                continue
            out.append(False)
            continue
        count += 1
        out.append(True)
    return out


def test_unpaced_clicks_lose_the_eleventh_and_paced_clicks_lose_none():
    clock = FakeClock()
    fast = [clock.now + i * 0.02 for i in range(30)]
    assert blink_accepts(fast).count(False) == 20  # the trap: everything after the tenth is dropped

    pacer = BurstPacer(clock=clock)
    sent = []
    for _ in range(300):
        clock.sleep(pacer.delay())
        sent.append(clock.now)
        clock.sleep(0.02)  # the click's round trip
        pacer.clicked()
    assert all(blink_accepts(sent))
    # ... and the pacing costs no more than the rule demands: 300 clicks in about 30 windows
    assert sent[-1] - sent[0] < 300 / BURST_LIMIT * (1.0 + pacer.margin + 0.02) + 1


def test_the_pacer_lets_a_slow_page_click_at_once():
    clock = FakeClock()
    pacer = BurstPacer(clock=clock)
    for _ in range(50):
        assert pacer.delay() == 0.0
        pacer.clicked()
        clock.sleep(0.2)  # five a second: never near the limit


def test_the_watchdog_follows_progress_and_still_cuts_off_a_stuck_block():
    fired = threading.Event()
    with Watchdog(0.5, fired.set, "busy") as dog:
        for _ in range(8):  # 1.2 s in all, with a sign of life every 0.15 s
            time.sleep(0.15)
            dog.touch()
    assert not dog.expired and not fired.is_set()
    with Watchdog(0.3, fired.set, "stuck") as dog:
        assert fired.wait(5.0)
    assert dog.expired


def test_progress_names_the_step_and_its_reason():
    p = AttemptProgress()
    touched = []
    p.begin(lambda: touched.append(1))
    assert p.waiting is Waiting.PAGE and p.timeout_reason == "TIMEOUT"
    p.wait_for(Waiting.DOWNLOAD_BEGIN)
    p.made()
    assert touched == [1] and p.timeout_reason == "DOWNLOAD_NOT_BEGUN"
    for w in Waiting:
        p.wait_for(w)
        assert p.timeout_reason


class BouncingDriver:
    """A driver whose page goes through `hosts` (one per look) and then stays on the last one."""

    def __init__(self, pages: list[dict]) -> None:
        self.pages = pages
        self.looks = 0

    def execute_script(self, script, *args):
        page = self.pages[min(self.looks, len(self.pages) - 1)]
        self.looks += 1
        return dict(page)


PORTAL = "portal.example:443"


def test_a_refresh_that_comes_back_is_followed_to_the_portal():
    driver = BouncingDriver([{"host": "idp.example", "url": "https://idp.example/sso", "quiet_ms": 10},
                             {"host": "idp.example", "url": "https://idp.example/sso2", "quiet_ms": 10},
                             {"host": PORTAL, "url": "https://portal.example/order_headers/1"}])
    ready = PageProbe(PageState.READY, "po 1")
    bounce = sign_in_bounce.follow(driver, PageProbe(PageState.LOGIN, via="host"), lambda: ready, PORTAL)
    assert bounce.came_back and bounce.probe is ready and bounce.hosts == ("idp.example",)


def test_a_password_field_is_a_wall_at_once_and_a_still_page_after_a_while():
    clock = FakeClock()
    driver = BouncingDriver([{"host": "idp.example", "url": "https://idp.example/login", "quiet_ms": 5,
                              "person": "a password field"}])
    bounce = sign_in_bounce.follow(driver, PageProbe(PageState.LOGIN, via="host"), lambda: None, PORTAL, clock=clock)
    assert not bounce.came_back and "password" in bounce.probe.detail and driver.looks == 1

    still = BouncingDriver([{"host": "idp.example", "url": "https://idp.example/pick", "quiet_ms": 3500}])
    bounce = sign_in_bounce.follow(still, PageProbe(PageState.LOGIN, via="host"), lambda: None, PORTAL, clock=clock)
    assert not bounce.came_back and "stayed" in bounce.probe.detail


def test_a_bounce_that_never_settles_is_a_transient_sso_timeout(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(sign_in_bounce.Backoff, "sleep", lambda self: clock.sleep(0.5))
    moving = BouncingDriver([{"host": "idp.example", "url": "https://idp.example/x", "quiet_ms": 100}])
    with pytest.raises(TransientError) as err:
        sign_in_bounce.follow(moving, PageProbe(PageState.LOGIN, via="host"), lambda: None, PORTAL, clock=clock)
    assert err.value.reason == "SSO_TIMEOUT"


def test_every_timeout_says_what_it_waited_for():
    texts = {}
    for reason in ("TIMEOUT", "ATTACHMENTS_NOT_SETTLED", "DOWNLOAD_NOT_BEGUN", "DOWNLOAD_TIMEOUT", "SSO_TIMEOUT"):
        a = advice("1", PoOutcome(po_number="1", status=Status.TIMEOUT, reason=reason))
        texts[reason] = a.what_happened
    assert len(set(texts.values())) == 5
    assert "too slow" in texts["TIMEOUT"] and "too slow" not in texts["SSO_TIMEOUT"]
    assert "too slow" not in texts["DOWNLOAD_NOT_BEGUN"] and "too slow" not in texts["ATTACHMENTS_NOT_SETTLED"]


def test_an_unrecognised_page_is_told_to_run_check_and_many_alike_are_said_once():
    outcomes = {str(i): PoOutcome(po_number=str(i), status=Status.FAILED, reason="UNRECOGNISED_PAGE")
                for i in range(100001, 100006)}
    outcomes["100009"] = PoOutcome(po_number="100009", status=Status.TIMEOUT, reason="TIMEOUT")
    lines = attention_list(outcomes, outcomes)
    assert lines[0].what_to_do == CHECK.format(po="100001") and "Run the same file again" not in lines[0].what_to_do
    said = common_failure(lines)
    assert said.startswith("5 of them the same way:") and "pobatch check 100001" in said
    assert common_failure(lines[-2:]) == ""  # two alike are no pattern


@pytest.mark.parametrize("served, kept", [("summary .pdf_", "summary .pdf"), ("summary .pdf ", "summary .pdf"),
                                          ("Offer.DOCX._", "Offer.DOCX"), ("notes.txt.", "notes.txt"),
                                          ("archive.tar_", "archive.tar_")])
def test_trailing_spaces_and_dots_go_before_the_extension_is_judged(served, kept):
    assert safe_component(served, basename=True) == kept


def test_the_end_of_run_line_says_a_common_failure_once(tmp_path):
    from pobatch.core.app import RunSummary
    from pobatch.core.monitoring.verdict import verdict

    outcomes = {str(i): PoOutcome(po_number=str(i), status=Status.FAILED, reason="UNRECOGNISED_PAGE")
                for i in range(100001, 100041)}
    outcomes["100099"] = PoOutcome(po_number="100099", status=Status.COMPLETED)
    summary = RunSummary(run_id="r", exit_code=1, counts={"FAILED": 40, "COMPLETED": 1}, outcomes=outcomes,
                         results_path=tmp_path / "orders_results.xlsx", out_dir=tmp_path)
    line = verdict(summary)
    assert line.startswith("1 of 41 POs done; 40 need attention, see the 'Attention' sheet in orders_results.xlsx.")
    assert line.count("pobatch check") == 1 and "40 of them the same way" in line
