"""The run report of a 5,000-PO run (issue 25): written in reasonable time and size, filtered by status and
searched by PO in a real browser, with the chart of POs per minute and failures per worker.

The run store is generated (no browser, no portal): 5,000 POs on four workers over about 80 minutes,
with retries, failures, download events with sizes and progress events, as MainApp would record them.
"""
from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from pobatch.core.events import PoEvent
from pobatch.core.reports.report import render_report, write_report
from pobatch.core.reports.report_data import load_report_data
from pobatch.core.status import Status
from pobatch.corelib.browser.factory import BrowserSpec
from pobatch.corelib.browser.local_session import LocalBrowserSession
from pobatch.corelib.store import RunStore
from pobatch.corelib.worker_pool.tasks import Event, TaskResult
from eventually import wait_for

N = 5000
WORKERS = ("w1", "w2", "w3", "w4")


def generate_store(out: Path, n: int = N, seed: int = 25) -> tuple[str, dict[str, str]]:
    """A run store as a 5,000-PO parallel run leaves it; returns the run id and each PO's status."""
    rng = random.Random(seed)
    store = RunStore(out / ".pobatch" / "runs.sqlite")
    run_id = store.begin_run("parallel", {"orders": str(out / "big.csv"), "site": "demo",
                                          "base_url": "http://127.0.0.1:1"})
    t0 = time.time() - 5000
    clock = {w: t0 for w in WORKERS}
    statuses: dict[str, str] = {}
    events: list[Event] = []
    for i in range(n):
        po = str(800000 + i)
        w = WORKERS[i % len(WORKERS)]
        roll = rng.random()
        status = (Status.FAILED if roll < 0.02 else Status.PO_NOT_FOUND if roll < 0.05 else
                  Status.NO_ATTACHMENTS if roll < 0.10 else Status.COMPLETED)
        attempts = 2 if status is Status.FAILED or rng.random() < 0.03 else 1
        for a in range(1, attempts + 1):
            start = clock[w]
            end = start + rng.uniform(1.5, 5.0) * (3 if i > n * 0.6 and i < n * 0.7 else 1)  # a slow patch
            last = a == attempts
            outcome = status.value if last and status is not Status.FAILED else "error"
            events.append(Event(action=PoEvent.ATTEMPT_START, task_key=po, worker_id=w, attempt=a, ts=start))
            if outcome == Status.COMPLETED.value:
                events.append(Event(action=PoEvent.DOWNLOAD_PROGRESS, task_key=po, worker_id=w, attempt=a,
                                    detail=f"1000/{20000 + i} Scan {i}.pdf", ts=start + 0.5))
                events.append(Event(action=PoEvent.DOWNLOAD, task_key=po, worker_id=w, attempt=a, outcome="ok",
                                    detail=f"Scan {i}.pdf via script in {end - start - 0.2:.2f}s, from attachment "
                                           f"'Scan {i}.pdf' by url", ts=end - 0.1))
            events.append(Event(action=PoEvent.ATTEMPT_END, task_key=po, worker_id=w, attempt=a, outcome=outcome,
                                detail="" if outcome != "error" else "HTTP_500: server error", ts=end))
            store.record_activity(run_id, po, a, w, start, end, outcome, "" if outcome != "error" else "HTTP_500")
            store.record_attempt(run_id, po, a, w, start, end, status.value if last else "FAILED",
                                 "HTTP_500" if outcome == "error" else "")
            clock[w] = end + 0.05
        files = ([{"name": f"Scan {i}.pdf", "size": 20000 + i, "sha256": "0" * 64, "source": "po"}]
                 if status is Status.COMPLETED else [])
        data = {"po_number": po, "status": status.value, "supplier": f"Supplier {i % 37}",
                "attachments_found": len(files), "attachments_downloaded": len(files), "files": files,
                "download_folder": "", "po_url": f"http://127.0.0.1:1/order_headers/{po}",
                "error_message": "the portal answered with a server error page" if status is Status.FAILED else "",
                "attempts": attempts, "reason": "HTTP_500" if status is Status.FAILED else ""}
        store.record_result(run_id, TaskResult(key=po, status=status.value, reason=data["reason"],
                                               attempts=attempts, started=t0, finished=clock[w], worker_id=w,
                                               data=data), files)
        statuses[po] = status.value
    store.record_events(run_id, events)
    store.finish_run(run_id, "DONE")
    store.close()
    return run_id, statuses


@pytest.fixture(scope="module")
def big_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("big") / "out"
    out.mkdir()
    run_id, statuses = generate_store(out)
    with RunStore(out / ".pobatch" / "runs.sqlite") as store:
        t = time.perf_counter()
        path = write_report(store, run_id, out)
        seconds = time.perf_counter() - t
    return path, seconds, statuses


def test_the_report_of_5000_pos_is_written_quickly_and_stays_a_reasonable_size(big_report):
    path, seconds, statuses = big_report
    size = path.stat().st_size
    print(f"\n5,000-PO report: {size / 1e6:.2f} MB written in {seconds:.2f} s")
    assert seconds < 20, seconds
    assert size < 12_000_000, size
    page = path.read_text(encoding="utf-8")
    assert page.count("<tr data-status=") == N
    assert "download_progress" not in page.split("<details>")[1]  # no progress rows in the events table
    assert "download progress report(s) left out" in page
    assert "<script src" not in page and "http-equiv=\"Content-Security-Policy\"" in page


def test_the_timeline_tells_each_files_duration_and_size(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    run_id, statuses = generate_store(out, n=8)
    with RunStore(out / ".pobatch" / "runs.sqlite") as store:
        data = load_report_data(store, run_id, out)
    page = render_report(data, out)
    po = next(p for p, s in statuses.items() if s == "COMPLETED")
    i = int(po) - 800000
    size = f"{(20000 + i) / 1024:.1f} KB"
    assert f"Scan {i}.pdf, {size} in " in page


@pytest.mark.timeout(180)
def test_the_report_filters_by_status_and_searches_by_po_in_a_real_browser(big_report, tmp_path, browser_available):
    path, _seconds, statuses = big_report
    failed = sorted(p for p, s in statuses.items() if s == "FAILED")
    with LocalBrowserSession(BrowserSpec(user_data_dir=str(tmp_path / "viewer"), local_only=True,
                                         window_size=(1400, 1000))) as viewer:
        d = viewer.driver
        t = time.perf_counter()
        d.get(path.as_uri())
        wait_for(lambda: d.execute_script("return document.readyState") == "complete", what="report load",
                 timeout=60)
        load = time.perf_counter() - t

        def visible() -> list[str]:
            return d.execute_script("return Array.from(document.querySelectorAll('#pos tbody tr'))"
                                    ".filter(tr => !tr.classList.contains('hidden'))"
                                    ".map(tr => tr.querySelector('td').textContent)")

        assert len(visible()) == N
        d.find_element("css selector", "#counts .count[data-status='FAILED']").click()
        assert sorted(visible()) == failed
        assert d.find_element("id", "shown").text == f"{len(failed)} of {N} shown"
        box = d.find_element("id", "search")
        t = time.perf_counter()
        box.send_keys(failed[0])
        wait_for(lambda: visible() == [failed[0]], what="search on the failed POs", timeout=10)
        search = time.perf_counter() - t
        d.find_element("css selector", "#counts .count.all").click()  # every status, still the search
        assert visible() == [failed[0]]
        box.clear()
        box.send_keys("server HTTP_500")  # every word must be in the row, in any case and order
        wait_for(lambda: sorted(visible()) == failed, what="search by reason and error", timeout=10)
        chart = d.execute_script("""var s = document.getElementById('throughput');
            return s ? [s.querySelectorAll('rect.done').length, s.querySelectorAll('circle.failure').length,
                        new Set(Array.from(s.querySelectorAll('rect.done')).map(r => r.dataset.worker)).size,
                        s.getBoundingClientRect().width] : null""")
        resources = d.execute_script("return performance.getEntriesByType('resource').length")
    print(f"\nreport load {load:.2f} s, search {search:.2f} s")
    assert chart is not None and chart[0] > 10 and chart[1] > 0 and chart[2] == len(WORKERS) and chart[3] > 400
    assert resources == 0  # self-contained
