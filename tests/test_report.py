"""The run report and the failure artifacts: real demo portal, real headless Chromium, real files.

A small scenario with a PO that fails once, one that always fails and one that is not found runs
through MainApp; the report it writes is then opened in Chromium from disk and read back from its
DOM (one bar per attempt, the counts, the links to the artifacts). The rest checks what needs no
browser: activities from events, escaping of portal text, restarts on the timeline.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from openpyxl import load_workbook

from pobatch.core.app import MainApp, RunOptions, RunSummary
from pobatch.core.demo_portal import DemoPortal, Scenario
from pobatch.core.commands.login import prepare_demo_profile
from pobatch.core.reports.activity_log import ActivityLog, activities_from_events
from pobatch.core.reports.report import load_report_data, render_report, write_report
from pobatch.core.workflow.artifacts import capture_failure
from pobatch.core.workspace import Workspace
from pobatch.corelib.browser.factory import BrowserSpec
from pobatch.corelib.browser.local_session import LocalBrowserSession
from pobatch.corelib.store import RunStore
from pobatch.corelib.worker_pool.tasks import Event, TaskResult
from eventually import wait_for

EVIL = "<img src=x onerror=\"document.title='pwned'\"> & \"Co\""
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _scenario() -> Scenario:
    pdf = [{"name": "Invoice 1.pdf", "kind": "link", "size": 5000}]
    return Scenario.from_dict({"seed": 11, "client_max_attempts": 2, "pos": [
        {"id": "1", "supplier": EVIL, "attachments": pdf},
        {"id": "2", "supplier": "Retry Ltd", "attachments": pdf, "faults": {"page": ["http500", "ok"]}},
        {"id": "3", "supplier": "Broken Ltd", "attachments": pdf, "faults": {"page": ["http500"]}},
        {"id": "4", "missing": True},
    ]}, source="test_report")


def _run(tmp: Path, portal: DemoPortal, pos: list[str], record: bool = False) -> RunSummary:
    orders = tmp / "orders.csv"
    orders.write_text("PO_NUMBER\n" + "\n".join(pos) + "\n", encoding="utf-8")
    profile = tmp / "profile"
    if not profile.exists():
        prepare_demo_profile(profile, portal.base_url)
    opts = RunOptions(orders=orders, out=tmp / "out", site="demo", base_url=portal.base_url, profile=profile,
                      local_only=True, max_attempts=2, backoff_base=0.05, po_timeout=90, record=record,
                      profiles_root=tmp / "profiles",
                      # PO 2's one page error must cost an attempt (a bar of its own): a page loaded ahead
                      # would absorb it within the attempt (tests/test_page_ahead.py)
                      page_ahead=False)
    return MainApp(opts).run()


def _viewer(tmp: Path) -> LocalBrowserSession:
    return LocalBrowserSession(BrowserSpec(user_data_dir=str(tmp / "viewer"), local_only=True, window_size=(1400, 1000)))


# -- end to end -------------------------------------------------------------------------------------
@pytest.mark.timeout(240)
def test_demo_run_writes_a_report_with_one_bar_per_attempt_and_artifacts_for_failures(tmp_path, browser_available):
    with DemoPortal(_scenario()).start() as portal:
        summary = _run(tmp_path, portal, ["1", "2", "3", "4"])
    out = tmp_path / "out"
    statuses = {po: o.status.value for po, o in summary.outcomes.items()}
    assert statuses == {"1": "COMPLETED", "2": "COMPLETED", "3": "FAILED", "4": "PO_NOT_FOUND"}

    # The store holds one activity per attempt, each with a start, an end and a duration.
    with RunStore(out / ".pobatch" / "runs.sqlite") as store:
        acts = store.activities(summary.run_id)
    assert sorted((a["key"], a["attempt"], a["outcome"]) for a in acts) == [
        ("1", 1, "COMPLETED"), ("2", 1, "error"), ("2", 2, "COMPLETED"), ("3", 1, "error"), ("3", 2, "error"),
        ("4", 1, "PO_NOT_FOUND")]
    assert all(a["finished"] >= a["started"] and a["duration"] == pytest.approx(a["finished"] - a["started"])
               for a in acts)

    # Artifacts for exactly the failed attempts.
    work = Workspace(out)
    for po, attempt in (("2", 1), ("3", 1), ("3", 2)):
        folder = work.artifacts(summary.run_id, po, attempt)
        assert (folder / "screenshot.png").read_bytes()[:8] == PNG_MAGIC
        assert "something went wrong" in (folder / "page.html").read_text(encoding="utf-8")
        assert (folder / "console.log").stat().st_size > 0
        assert "HTTP_500" in (folder / "error.txt").read_text(encoding="utf-8")
        manifest = json.loads((folder / "capture.json").read_text(encoding="utf-8"))
        assert manifest["failed"] == {} and manifest["url"].endswith(f"/order_headers/{po}")
    for po, attempt in (("1", 1), ("2", 2), ("4", 1)):
        assert not work.artifacts(summary.run_id, po, attempt).exists()

    # The report sits next to the workbook, which links to it.
    report = summary.report_path
    assert report == out / "orders_report.html" and report.is_file()
    wb = load_workbook(summary.results_path)
    links = [c.hyperlink.target for row in wb["Summary"].iter_rows() for c in row if c.hyperlink]
    assert any(unquote(t).endswith("orders_report.html") for t in links), links

    with _viewer(tmp_path) as viewer:
        d = viewer.driver
        d.get(report.as_uri())
        wait_for(lambda: d.execute_script("return document.readyState") == "complete", what="report load", timeout=20)
        bars = d.execute_script("""return Array.from(document.querySelectorAll('svg#timeline rect.attempt')).map(r =>
            [r.dataset.po, Number(r.dataset.attempt), r.dataset.outcome,
             r.parentElement.tagName.toLowerCase() === 'a' ? r.parentElement.getAttribute('href') : null,
             r.getBoundingClientRect().width])""")
        counts = d.execute_script("""var o = {}; document.querySelectorAll('#counts .count').forEach(b =>
            o[b.dataset.status || 'ALL'] = Number(b.querySelector('b').textContent)); return o""")
        retries = d.execute_script("return Array.from(document.querySelectorAll('svg#timeline line.retry'))"
                                   ".map(l => l.dataset.po)")
        title = d.title
        images = d.execute_script("return document.images.length")
        supplier = d.execute_script("return document.querySelector('#pos tbody tr[data-status] td:nth-child(5)')"
                                    ".textContent")
        resources = d.execute_script("return performance.getEntriesByType('resource').length")
        # Filtering by a status count hides the other rows.
        d.find_element("css selector", "#counts .count[data-status='FAILED']").click()
        visible = d.execute_script("return Array.from(document.querySelectorAll('#pos tbody tr'))"
                                   ".filter(tr => tr.offsetParent !== null).map(tr => tr.dataset.status)")

    assert sorted((po, n, outcome) for po, n, outcome, _href, _w in bars) == sorted(
        (a["key"], a["attempt"], a["outcome"]) for a in acts)
    assert all(w >= 2 for *_rest, w in bars)
    failed = [(po, n, href) for po, n, outcome, href, _w in bars if outcome == "error"]
    assert len(failed) == 3
    for po, n, href in failed:  # each failed bar links to its own artifacts folder
        assert href and (report.parent / unquote(href)).resolve() == work.artifacts(summary.run_id, po, n).resolve()
    assert all(href is None for po, n, outcome, href, _w in bars if outcome != "error")
    assert counts == {"ALL": 4, "COMPLETED": 2, "FAILED": 1, "PO_NOT_FOUND": 1}
    assert sorted(retries) == ["2", "3"]
    assert visible == ["FAILED"]
    # The supplier's markup is shown as text, never run: no image, the title untouched.
    assert images == 0 and "pwned" not in title and supplier == EVIL
    assert resources == 0  # nothing fetched: the report is self-contained


@pytest.mark.timeout(120)
def test_capture_never_raises_when_the_browser_is_dead_or_absent(tmp_path, browser_available):
    session = LocalBrowserSession(BrowserSpec(user_data_dir=str(tmp_path / "p"), local_only=True))
    try:
        absent = capture_failure(session, tmp_path / "a0", key="9", attempt=1, error=RuntimeError("boom"))
        assert absent == tmp_path / "a0" and "boom" in (absent / "error.txt").read_text(encoding="utf-8")
        assert json.loads((absent / "capture.json").read_text())["failed"] == {"browser": "no browser was running"}

        session.start()
        session.driver.get("data:text/html,<title>t</title><p>alive</p>")
        live = capture_failure(session, tmp_path / "a1", key="9", attempt=2, error="plain text error", started=0)
        assert (live / "screenshot.png").read_bytes()[:8] == PNG_MAGIC
        assert "alive" in (live / "page.html").read_text(encoding="utf-8")

        session.abort()  # the browser is killed, as the watchdog does
        t0 = time.monotonic()
        dead = capture_failure(session, tmp_path / "a2", key="9", attempt=3, error=TimeoutError("late"), timeout=20)
        assert time.monotonic() - t0 < 25
        manifest = json.loads((dead / "capture.json").read_text())
        assert manifest["files"] == ["error.txt"]
        assert {"screenshot.png", "page.html", "console.log"} <= set(manifest["failed"])
        assert "TimeoutError: late" in (dead / "error.txt").read_text(encoding="utf-8")
        # An unwritable target is a warning, not an exception.
        (tmp_path / "file").write_text("x")
        assert capture_failure(session, tmp_path / "file" / "sub", key="9", attempt=4, error="x") is None
    finally:
        session.close()


# -- no browser ---------------------------------------------------------------------------------------
def test_activity_log_makes_one_activity_per_attempt_and_leaves_the_gaps_out():
    got: list[dict] = []
    log = ActivityLog(got.append)
    for e in [
        Event("attempt_start", "7", "w1", attempt=1, ts=10.0),
        Event("open", "7", "w1", attempt=1, ts=10.5),
        Event("attempt_end", "7", "w1", attempt=1, outcome="error", detail="HTTP_500: x", ts=11.0),
        Event("browser_restart", "7", "w1", attempt=1, ts=11.2),  # after the end: the gap, not the attempt
        Event("retry_wait", "7", "w1", attempt=1, ts=11.3),
        Event("open", "7", "w1", attempt=2, ts=12.0),  # no attempt_start (it failed before): first event starts it
        Event("attempt_end", "7", "w1", attempt=2, outcome="COMPLETED", ts=13.0),
        Event("attempt_start", "8", "w2", attempt=1, ts=12.5),
        Event("worker_lost", "8", "w2", ts=14.0, detail="pid 1 exit code -9"),
        Event("attempt_start", "9", "w1", attempt=1, ts=15.0),
        Event("open", "9", "w1", attempt=1, ts=15.5),
        Event("run_note", ts=16.0),  # not about a task: ignored
    ]:
        log.observe(e)
    log.close_all()
    assert [(a["key"], a["attempt"], a["worker_id"], a["started"], a["finished"], a["outcome"]) for a in got] == [
        ("7", 1, "w1", 10.0, 11.0, "error"), ("7", 2, "w1", 12.0, 13.0, "COMPLETED"),
        ("8", 1, "w2", 12.5, 14.0, "worker_lost"), ("9", 1, "w1", 15.0, 15.5, "interrupted")]
    assert activities_from_events([Event("attempt_start", "1", "m", attempt=1, ts=1.0),
                                   Event("attempt_end", "1", "m", attempt=1, outcome="COMPLETED", ts=2.0)]) == [
        {"key": "1", "attempt": 1, "worker_id": "m", "started": 1.0, "finished": 2.0, "outcome": "COMPLETED",
         "detail": ""}]


def _synthetic_run(tmp_path: Path) -> tuple[RunStore, str, Path]:
    """Two workers, a retried PO whose first attempt crashed the browser, portal text full of markup."""
    out = tmp_path / "out"
    store = RunStore(out / ".pobatch" / "runs.sqlite")
    run = store.begin_run("parallel", {"orders": str(tmp_path / "my orders.csv"), "site": "coupa",
                                       "base_url": "https://x.coupahost.com"})
    t = 1000.0
    evil_po = "PO<script>alert(1)</script>"
    events = [
        Event("attempt_start", "A1", "w1", attempt=1, ts=t), Event("attempt_end", "A1", "w1", attempt=1,
                                                                   outcome="error", detail="BROWSER_CRASHED: </svg>", ts=t + 2),
        Event("browser_restart", "A1", "w1", attempt=1, detail="BROWSER_CRASHED <b>x</b>", ts=t + 2.1),
        Event("attempt_start", "A1", "w1", attempt=2, ts=t + 3), Event("attempt_end", "A1", "w1", attempt=2,
                                                                       outcome="COMPLETED", ts=t + 5),
        Event("attempt_start", evil_po, "w2", attempt=1, ts=t + 0.5),
        Event("attempt_end", evil_po, "w2", attempt=1, outcome="NO_ATTACHMENTS", ts=t + 1.5),
    ]
    store.record_events(run, events)
    acts = ActivityLog.into_store(store, run)
    for e in events:
        acts.observe(e)
    folder = tmp_path / "out" / "ACME <&> Ltd" / "A1_COMPLETED"
    store.record_result(run, TaskResult(key="A1", status="COMPLETED", attempts=2, started=t, finished=t + 5,
                                        worker_id="w1", data={"supplier": "ACME <&> Ltd", "download_folder": str(folder),
                                                              "po_url": "javascript:alert(1)",
                                                              "files": [{"name": "<b>bold</b>.pdf", "size": 2048}]}))
    store.record_result(run, TaskResult(key=evil_po, status="NO_ATTACHMENTS", worker_id="w2",
                                        error="'\"><script>alert(2)</script>", data={}))
    store.record_attempt(run, "A1", 2, "w1", t, t + 5, "COMPLETED")
    store.finish_run(run, "DONE")
    Workspace(out).artifacts(run, "A1", 1).mkdir(parents=True)
    return store, run, out


def test_report_escapes_portal_text_and_marks_restarts_and_retries(tmp_path):
    from html.parser import HTMLParser

    store, run, out = _synthetic_run(tmp_path)
    with store:
        data = load_report_data(store, run, out)
        path = write_report(store, run, out)
    assert path == out / "my orders_report.html"
    page = path.read_text(encoding="utf-8")
    assert data.counts == {"COMPLETED": 1, "NO_ATTACHMENTS": 1}

    class Tags(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: list[tuple[str, dict]] = []

        def handle_starttag(self, tag, attrs):
            self.tags.append((tag, dict(attrs)))

    parser = Tags()
    parser.feed(page)
    tags = [t for t, _ in parser.tags]
    assert tags.count("script") == 1 and tags.count("svg") == 1  # only our own
    assert "<b>bold</b>" not in page and "<b>x</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;.pdf" in page
    assert "alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not any(a.get("href", "").startswith("javascript:") for t, a in parser.tags if t == "a")
    rects = [a for t, a in parser.tags if t == "rect" and "attempt" in a.get("class", "")]
    assert sorted((a["data-po"], a["data-attempt"], a["data-worker"]) for a in rects) == [
        ("A1", "1", "w1"), ("A1", "2", "w1"), ("PO<script>alert(1)</script>", "1", "w2")]
    assert [a["data-action"] for t, a in parser.tags if t == "path"] == ["browser_restart"]
    assert [a["data-po"] for t, a in parser.tags if t == "line" and a.get("class") == "retry"] == ["A1"]
    hrefs = [a["href"] for t, a in parser.tags if t == "a" and "href" in a]
    artifacts = f".pobatch/artifacts/{run}/A1-a1/"
    assert artifacts in hrefs  # the failed attempt links to its artifacts, relative to the report
    assert "ACME%20%3C%26%3E%20Ltd/A1_COMPLETED/" in hrefs  # the folder link, percent-encoded
    assert (out / urlsplit(artifacts).path).is_dir()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # Rendering is deterministic apart from the footer's time stamp.
    assert render_report(data, out).split("<footer>")[0] == page.split("<footer>")[0]
