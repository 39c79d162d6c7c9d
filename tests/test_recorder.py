"""The flight recorder: rrweb in every window of a real headless Chromium, stored per attempt, replayed offline.

A recorded run of the demo portal (a popup attachment, a PO that fails once) fills the recordings
table; `pobatch replay` writes the offline page, which is then opened in Chromium from disk after
the portal has stopped, and must rebuild the recorded PO page inside rrweb-player and play it.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pobatch.core.app import MainApp, RunOptions, RunSummary
from pobatch.core.cli import main as cli
from pobatch.core.demo_portal import DemoPortal, Scenario
from pobatch.core.commands.login import prepare_demo_profile
from pobatch.core.reports.replay import NoRecording, render_replay, write_replay
from pobatch.core.workflow.recorder import PAGE_KEY, SessionRecorder, preload_script, store_recording
from pobatch.core.workspace import RECORD_JS
from pobatch.corelib.browser.factory import BrowserSpec
from pobatch.corelib.browser.local_session import LocalBrowserSession
from pobatch.corelib.store import RunStore
from pobatch.corelib.worker_pool.tasks import Event
from eventually import wait_for

# rrweb event types
FULL_SNAPSHOT, META = 2, 4


def _scenario() -> Scenario:
    return Scenario.from_dict({"seed": 5, "client_max_attempts": 2, "pos": [
        {"id": "1", "supplier": "Acme", "attachments": [
            {"name": "Invoice.pdf", "kind": "link", "size": 5000},
            {"name": "Order confirmation.msg", "kind": "popup", "size": 4000}]},
        {"id": "2", "supplier": "Retry Ltd", "attachments": [{"name": "Quote.pdf", "kind": "link", "size": 3000}],
         "faults": {"page": ["http500", "ok"]}},
    ]}, source="test_recorder")


def _run(tmp: Path, portal: DemoPortal, record: bool) -> RunSummary:
    orders = tmp / "orders.csv"
    orders.write_text("PO_NUMBER\n1\n2\n", encoding="utf-8")
    profile = tmp / "profile"
    prepare_demo_profile(profile, portal.base_url)
    opts = RunOptions(orders=orders, out=tmp / "out", site="demo", base_url=portal.base_url, profile=profile,
                      local_only=True, max_attempts=2, backoff_base=0.05, po_timeout=90, record=record,
                      profiles_root=tmp / "profiles")
    return MainApp(opts).run()


@pytest.mark.timeout(240)
def test_recorded_run_stores_one_recording_per_attempt_and_replays_offline(tmp_path, browser_available):
    with DemoPortal(_scenario()).start() as portal:
        summary = _run(tmp_path, portal, record=True)
        base_url = portal.base_url
    assert {po: o.status.value for po, o in summary.outcomes.items()} == {"1": "COMPLETED", "2": "COMPLETED"}
    out = tmp_path / "out"
    with RunStore(out / ".pobatch" / "runs.sqlite") as store:
        recs = store.recordings(summary.run_id)
        acts = store.activities(summary.run_id)
        bodies = {(r["key"], r["attempt"]): store.recording_events(summary.run_id, r["key"], r["attempt"])
                  for r in recs}
        timeline_actions = {e.action for e in store.timeline(summary.run_id)}
    assert [(r["key"], r["attempt"]) for r in recs] == [("1", 1), ("2", 1), ("2", 2)]
    by_attempt = {(a["key"], a["attempt"]): a for a in acts}
    for r in recs:
        assert r["count"] > 0 and r["first_ts"] <= r["last_ts"]
        assert r["stored_bytes"] < r["bytes"]  # kept compressed
        act = by_attempt[(r["key"], r["attempt"])]
        assert act["started"] - 1 <= r["first_ts"] <= r["last_ts"] <= act["finished"] + 1
    assert "recording" not in timeline_actions  # recordings have their own table

    # PO 1: the main window (PO page) and the popup, each from its own snapshot.
    windows = {w["window"]: w for w in bodies[("1", 1)]["windows"]}
    assert set(windows) == {"main", "popup-1"}
    for w in windows.values():
        types = [e["type"] for e in w["events"]]
        assert META in types and FULL_SNAPSHOT in types
        stamps = [e["timestamp"] for e in w["events"]]
        assert stamps == sorted(stamps)
    assert "/attachments/" in windows["popup-1"]["url"]
    snapshot = json.dumps([e for e in windows["main"]["events"] if e["type"] == FULL_SNAPSHOT])
    assert "Purchase Order #1" in snapshot
    # PO 2: the 500 page of attempt 1, the PO page of attempt 2.
    assert "went wrong" in json.dumps(bodies[("2", 1)]) and "Purchase Order #2" in json.dumps(bodies[("2", 2)])

    # The report knows which attempts were recorded.
    report = summary.report_path.read_text(encoding="utf-8")
    assert "recorded: a1, a2" in report

    runner = CliRunner()
    res = runner.invoke(cli, ["replay", "last", "PO1", "--out", str(out), "--no-open"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    page = Path(res.output.strip().splitlines()[-1])
    assert page.is_file() and page.parent.parent.name == "replays"
    res = runner.invoke(cli, ["replay", summary.run_id, "3", "--out", str(out), "--no-open"])
    assert res.exit_code == 2 and "no recording of PO 3" in res.output
    res = runner.invoke(cli, ["report", "--out", str(out)])
    assert res.exit_code == 0 and Path(res.output.strip()).name == "orders_report.html"

    # The portal is gone: the page must play from the file alone.
    with LocalBrowserSession(BrowserSpec(user_data_dir=str(tmp_path / "viewer"), local_only=True,
                                    window_size=(1400, 1000))) as viewer:
        d = viewer.driver
        d.get(page.as_uri())
        wait_for(lambda: d.execute_script("return !!(window.pobatchReplay && window.pobatchReplay.ready)"),
                 what="the player", timeout=30)
        info = d.execute_script("var r = window.pobatchReplay; return {events: r.events, window: r.window, "
                                "error: r.error, total: r.player.getMetaData().totalTime}")
        assert info["error"] == "" and info["window"] == "main" and info["total"] > 0
        assert info["events"] == len(windows["main"]["events"])
        text = wait_for(lambda: d.execute_script(
            "var f = document.querySelector('.rr-player .replayer-wrapper iframe');"
            "return f && f.contentDocument && f.contentDocument.body ? f.contentDocument.body.innerText : ''"),
            what="the replayed page", timeout=30)
        assert "Purchase Order #1" in text
        wait_for(lambda: d.execute_script("return window.pobatchReplay.player.getReplayer().getCurrentTime() > 0"),
                 what="playback to advance", timeout=30)
        # The popup of the same attempt plays on its own.
        buttons = d.find_elements("css selector", "#choices button")
        assert [b.text for b in buttons] == [f"attempt 1 ({len(windows['main']['events'])})",
                                             f"attempt 1 / popup-1 ({len(windows['popup-1']['events'])})"]
        buttons[1].click()
        wait_for(lambda: d.execute_script("return window.pobatchReplay.window === 'popup-1' && "
                                          "window.pobatchReplay.ready"), what="the popup's replay", timeout=30)
        fetched = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert [u for u in fetched if base_url in u] == []  # nothing asked of the (stopped) portal
        assert [e for e in d.get_log("browser") if e["level"] == "SEVERE" and "pobatch" in e["message"]] == []


@pytest.mark.timeout(120)
def test_preload_records_a_page_and_keeps_its_buffer_across_a_navigation_it_made_itself(tmp_path,
                                                                                         browser_available):
    """A link the workflow did not follow itself (a redirect, an error page) must not lose the events."""
    with DemoPortal(_scenario()).start() as portal:
        spec = BrowserSpec(user_data_dir=str(tmp_path / "p"), local_only=True, bidi=True)
        emitted: list[Event] = []
        with LocalBrowserSession(spec) as session:
            d = session.driver
            rec = SessionRecorder(emitted.append, "w9")
            rec.begin("42", 1)
            rec.before_navigation(d)
            d.get(portal.base_url + "/sessions/new")
            d.find_element("id", "user_email").send_keys("secret@example.com")
            wait_for(lambda: d.execute_script(f"return !!window.{PAGE_KEY}"), what="the recorder", timeout=30)
            d.execute_script("window.__before = 1; location.href = '/order_headers/1'")  # navigates by itself
            wait_for(lambda: d.execute_script("return !window.__before && document.readyState === 'complete'"),
                     what="the next page", timeout=30)
            event = rec.finish(d)
    assert event is not None and emitted == [event] and event.worker_id == "w9" and event.attempt == 1
    body = json.loads(event.detail)
    main = body["windows"][0]["events"]
    snapshots = [json.dumps(e) for e in main if e["type"] == FULL_SNAPSHOT]
    assert len(snapshots) >= 2  # the login page (handed over through sessionStorage) and the next page
    assert "user_email" in snapshots[0]
    assert "secret@example.com" not in event.detail  # inputs are masked


def test_recordings_are_stored_compressed_and_round_trip(tmp_path):
    body = {"format": "pobatch-rrweb-1", "windows": [
        {"window": "main", "events": [{"type": 4, "timestamp": 1000, "data": {"href": "x"}},
                                      {"type": 2, "timestamp": 1500, "data": {"t": "é" * 5000}}]}]}
    ev = Event("recording", task_key="7", worker_id="w1", attempt=2, detail=json.dumps(body), ts=1.0)
    with RunStore(tmp_path / "s.sqlite") as store:
        run = store.begin_run("sequential")
        store_recording(store, run, ev)
        [meta] = store.recordings(run)
        assert (meta["key"], meta["attempt"], meta["worker_id"], meta["count"]) == ("7", 2, "w1", 2)
        assert (meta["first_ts"], meta["last_ts"]) == (1.0, 1.5)
        assert meta["stored_bytes"] < meta["bytes"] / 10
        assert store.recording_events(run, "7", 2) == body
        assert store.recording_events(run, "7", 3) is None
        assert store.recordings(run, "8") == []
        with pytest.raises(NoRecording, match="no recording of PO 8"):
            write_replay(store, run, "8", tmp_path)


def test_replay_page_cannot_be_broken_out_of_by_recorded_text():
    evil = "</script><script>window.pwned=1</script><!--"
    page = render_replay("r1", "7", [{"attempt": 1, "worker_id": "main", "count": 2, "windows": [
        {"window": "main", "events": [{"type": 4, "timestamp": 1, "data": {"href": evil}},
                                      {"type": 2, "timestamp": 2, "data": {"text": evil + "\u2028"}}]}]}])
    assert evil not in page and "window.pwned" in page  # present only as escaped JSON text
    start = page.index('id="pobatch-recordings">') + len('id="pobatch-recordings">')
    data = page[start:page.index("</script>", start)]
    assert json.loads(data)["recordings"][0]["windows"][0]["events"][0]["data"]["href"] == evil
    assert page.count("<script") == 3  # the data, the player, our own code


def test_preload_script_wraps_the_vendored_bundle_unmodified():
    script = preload_script()
    assert RECORD_JS.read_text(encoding="utf-8") in script
    assert script.startswith("function () {") and script.rstrip().endswith("}")
    assert "maskAllInputs: true" in script
