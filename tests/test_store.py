import sqlite3

from pobatch.corelib.store import RunStore
from pobatch.corelib.worker_pool.tasks import Event, TaskResult


def test_results_files_and_resume_state(tmp_path):
    path = tmp_path / "runs.sqlite"
    with RunStore(path) as store:
        run = store.begin_run("sequential", {"orders": "x.csv"})
        store.mark_status(run, "1", "PENDING")
        store.mark_status(run, "1", "RUNNING", worker_id="w1", started=1.0)
        store.record_result(run, TaskResult(key="1", status="COMPLETED", attempts=2, started=1.0, finished=2.0,
                                            data={"supplier": "ACME"}),
                            [{"name": "a.pdf", "size": 3, "sha256": "ab"}])
        store.mark_status(run, "2", "RUNNING")
        assert store.keys_with_status(["COMPLETED"]) == {"1"}
        assert store.keys_with_status(["RUNNING"]) == {"2"}
        assert store.task("1")["data"] == {"supplier": "ACME"}
        assert store.task("1")["attempts"] == 2
        assert [f["name"] for f in store.files("1")] == ["a.pdf"]
        store.finish_run(run, "DONE")
    # WAL mode, readable by a fresh connection after close
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT status FROM runs").fetchone()[0] == "DONE"
    db.close()


def test_timeline_merges_workers_and_windows_by_time(tmp_path):
    with RunStore(tmp_path / "s.sqlite") as store:
        run = store.begin_run("parallel")
        store.record_events(run, [Event("b", worker_id="w2", ts=2.0), Event("a", worker_id="w1", ts=1.0)])
        store.record_events(run, [Event("c", worker_id="w1", window="popup-1", ts=1.5)])
        assert [e.action for e in store.timeline(run)] == ["a", "c", "b"]
        assert store.timeline(run)[1].window == "popup-1"
