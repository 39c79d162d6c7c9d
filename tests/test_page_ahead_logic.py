"""Pages ahead, pure logic (issue 23): the hidden tab, which tab is taken, and the pipelined ideal.
Selenium and DevTools are stand-ins here; the real thing is tests/test_page_ahead.py."""
from __future__ import annotations

from typing import Any

from benchmarks.run import options_of
from benchmarks.steps import overlap_seconds, pipelined_seconds
from pobatch.core.demo_portal.scenario import Scenario
from pobatch.corelib.browser.background_tab import BackgroundTab, TabHidingDriver


class FakeBase:
    """What Selenium's WebDriver.execute answers for the window list."""

    def __init__(self) -> None:
        self.handles = ["MAIN"]
        self.closed: list[str] = []
        self.current = "MAIN"

    def execute(self, command: str, params: dict[str, Any] | None = None) -> Any:
        return {"value": list(self.handles)}


class FakeDriver(TabHidingDriver, FakeBase):
    @property
    def window_handles(self) -> list[str]:
        from selenium.webdriver.remote.command import Command

        return self.execute(Command.W3C_GET_WINDOW_HANDLES)["value"]


class FakeLink:
    closed = False

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._n = 0

    def call(self, method: str, params: dict[str, Any] | None = None, **_: Any) -> dict[str, Any]:
        self.calls.append((method, params or {}))
        if method == "Target.createTarget":
            self._n += 1
            return {"targetId": f"TAB{self._n}"}
        if method == "Target.attachToTarget":
            return {"sessionId": f"S-{params['targetId']}"}
        return {}

    def send(self, method: str, params: dict[str, Any] | None = None, session_id: str | None = None) -> None:
        self.calls.append((method, {**(params or {}), **({"sessionId": session_id} if session_id else {})}))


def test_a_tab_loading_ahead_is_not_in_the_window_list_until_adopted() -> None:
    from selenium.webdriver.remote.command import Command

    driver, link, tabs = FakeDriver(), FakeLink(), BackgroundTab()
    tab = tabs.start(driver, link, "http://portal/po/2", "2")
    driver.handles.append(tab.handle)
    assert driver.execute(Command.W3C_GET_WINDOW_HANDLES)["value"] == ["MAIN"]
    assert link.calls == [("Target.createTarget", {"url": "about:blank", "background": True}),
                          ("Target.attachToTarget", {"targetId": tab.handle, "flatten": True}),
                          ("Runtime.evaluate", {"expression": "window.__pobatchLeftBehind = true"}),
                          ("Page.navigate", {"url": "http://portal/po/2", "sessionId": f"S-{tab.handle}"})]
    assert tabs.start(driver, link, "http://portal/po/2", "2") is tab, "the same page is not asked for twice"
    assert tabs.take(driver, "2") is tab and tabs.pending is None


def test_a_tab_for_another_po_loads_the_next_page_and_one_of_a_dead_browser_is_forgotten() -> None:
    driver, link, tabs = FakeDriver(), FakeLink(), BackgroundTab()
    tab = tabs.start(driver, link, "http://portal/po/2", "2")
    assert tabs.take(driver, "3") is None  # another PO came (or PO 3 is being retried): the tab stays
    again = tabs.start(driver, link, "http://portal/po/4", "4")
    assert again.handle == tab.handle and link.calls[-1] == ("Page.navigate", {"url": "http://portal/po/4",
                                                                                "sessionId": tab.session})
    assert sum(m == "Target.createTarget" for m, _ in link.calls) == 1
    restarted, calls = FakeDriver(), len(link.calls)
    assert tabs.take(restarted, "4") is None and len(link.calls) == calls, "its browser is gone with it"


def test_two_tabs_take_turns() -> None:
    """The window a page is adopted from stays hidden and loads the page after: no tab per PO."""
    driver, link, tabs = FakeDriver(), FakeLink(), BackgroundTab()
    driver.current_window_handle = "MAIN"
    driver.switch_to = type("S", (), {"window": lambda _self, h: setattr(driver, "current_window_handle", h)})()
    for po in "23456":
        tab = tabs.start(driver, link, f"http://portal/po/{po}", po)
        tabs.adopt(driver, link, tabs.take(driver, po))
        assert driver.current_window_handle == tab.handle and driver.hidden_tabs == {"MAIN", "TAB1"} - {tab.handle}
    assert sum(m == "Target.createTarget" for m, _ in link.calls) == 1
    assert not any(m == "Target.closeTarget" for m, _ in link.calls)


def test_a_driver_that_cannot_hide_a_tab_gets_none() -> None:
    link = FakeLink()
    assert BackgroundTab().start(FakeBase(), link, "http://portal/po/2", "2") is None and not link.calls


def test_the_pipelined_ideal_overlaps_each_page_with_the_previous_pos_slowest_file() -> None:
    s = Scenario.from_dict({"name": "t", "seed": 1, "latency": {"page_ms": 400, "attachment_ms": 150},
                            "pos": [{"id": str(i), "supplier": "S", "attachments": [
                                {"name": "a.pdf", "kind": "link", "size": 100}]} for i in (1, 2, 3)]})
    assert abs(sum(overlap_seconds(s, p.id) for p in s.pos) - 3 * 0.55) < 1e-9
    assert abs(pipelined_seconds(s) - (3 * 0.4 + 0.15)) < 1e-9  # pages longer than files: files hide behind pages


def test_benchmark_configuration_names() -> None:
    assert options_of("sequential-np") == {"files_at_once": 4, "page_ahead": False}
    assert options_of("parallel-4-f1") == {"files_at_once": 1, "page_ahead": True, "parallel": True, "workers": 4}
    assert options_of("single-session-4") == {"files_at_once": 4, "page_ahead": True, "strategy": "single-session",
                                              "windows": 4}


def test_a_stale_tab_costs_at_most_one_page_timeout() -> None:
    """Arriving and judging share one deadline: a tab whose page arrives late has only what is left
    of the page timeout to show a known state, not a second full timeout."""
    import time

    from pobatch.core.workflow.page_ahead import PageAhead

    class SlowToArrive:
        def __init__(self, arrives_at: float) -> None:
            self.arrives_at = arrives_at

        def execute_script(self, script: str) -> bool:
            return time.monotonic() < self.arrives_at  # True: still the page shown before

    class Pages:
        page_timeout = 2.0
        sign_ins = 0
        judged_with: float | None = None

        def judge_adopted(self, driver: Any, url: str, expect: Any, timeout: float) -> Any:
            self.judged_with = timeout
            return type("Probe", (), {"state": "READY", "evidence": ""})()

    pages = Pages()
    ahead = PageAhead(pages, lambda: None, enabled=True)  # type: ignore[arg-type]
    started = time.monotonic()
    ahead._judge(SlowToArrive(started + 1.5), "http://portal/po/2", None, started, 0)
    assert pages.judged_with is not None and pages.judged_with <= 0.5 + 0.05, pages.judged_with
