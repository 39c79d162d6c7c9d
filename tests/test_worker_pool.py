"""The worker pool with real spawned processes, real kills and real timeouts (handlers in pool_handlers)."""
from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import time

import psutil
import pytest

from pobatch.corelib.worker_pool.task_queue import TaskQueue
from pobatch.corelib.worker_pool.tasks import Event, Task, TaskResult
from pobatch.corelib.worker_pool import PoolStopped, WorkerInfo, WorkerLost, WorkerPool, WorkerSpec, WorkerState

try:  # run from the repository root (python3 -m pytest) or with tests/ on sys.path
    from tests import pool_handlers
except ImportError:  # pragma: no cover
    import pool_handlers  # type: ignore[no-redef]

FACTORY = pool_handlers.make_handler
FAILING = pool_handlers.failing_factory


def _stop_resource_tracker() -> None:
    """Spawning on POSIX starts multiprocessing's resource tracker, a child that outlives every pool
    by design. The pool registers nothing with it (pipes only), so stopping it is safe here, and
    lets this module and conftest's no_leftovers demand that no child process at all remains."""
    if sys.platform != "win32":
        from multiprocessing import resource_tracker

        resource_tracker._resource_tracker._stop()


@pytest.fixture(autouse=True)
def no_leftover_processes():
    threads_before = {t.ident for t in threading.enumerate()}
    yield
    _stop_resource_tracker()
    deadline = time.monotonic() + 5.0
    while True:
        left = psutil.Process().children(recursive=True)
        if not left:
            break
        if time.monotonic() > deadline:
            for p in left:
                p.kill()
            pytest.fail(f"child processes left behind: {left}")
        time.sleep(0.05)
    # The parent must not leak threads either (no queue feeder threads, no watchers).
    extra = [t for t in threading.enumerate() if t.ident not in threads_before and t.is_alive()]
    assert not extra, f"threads left behind: {extra}"


def spec(**config) -> WorkerSpec:
    return WorkerSpec(FACTORY, dict(config))


def collect(pool: WorkerPool) -> tuple[dict[str, TaskResult], list[Event], list[WorkerLost]]:
    results: dict[str, TaskResult] = {}
    events: list[Event] = []
    lost: list[WorkerLost] = []
    for item in pool.results():
        if isinstance(item, TaskResult):
            assert item.key not in results, f"two results for {item.key}"
            results[item.key] = item
        elif isinstance(item, WorkerLost):
            lost.append(item)
        else:
            events.append(item)
    return results, events, lost


def live_workers(pool: WorkerPool) -> list[str]:
    """The workers that have not exited (neither stopped nor dead)."""
    return [i.worker_id for i in pool.workers() if i.state not in (WorkerState.STOPPED, WorkerState.DEAD)]


def test_a_slow_task_does_not_hold_the_others():
    pool = WorkerPool(spec(), 2)
    pool.submit(Task("long", {"do": "sleep", "seconds": 2.0}))
    for i in range(10):
        pool.submit(Task(f"short{i}", {"do": "sleep", "seconds": 0.05}))
    with pool:
        results, _, lost = collect(pool)
    assert not lost
    assert len(results) == 11 and all(r.status == "COMPLETED" for r in results.values())
    long_worker = results["long"].worker_id
    short_workers = {results[f"short{i}"].worker_id for i in range(10)}
    assert len(short_workers) == 1 and long_worker not in short_workers
    assert max(results[f"short{i}"].finished for i in range(10)) < results["long"].finished


def test_the_queue_gives_a_worker_the_task_it_was_told_comes_next():
    q = TaskQueue()
    for key in "abcdef":
        q.put(Task(key))
    assert q.pop("b", spoken_for={"a"}).key == "b"  # its own, though another's is in front
    assert q.pop(None, spoken_for={"a"}).key == "c"  # the first no one expects
    assert q.peek_free({"a", "d"}).key == "e"
    assert q.pop("gone", spoken_for={"a"}).key == "d"  # its own went elsewhere: the first free one
    assert [q.pop(None, spoken_for={"a", "e", "f"}).key for _ in range(3)] == ["a", "e", "f"]  # none free: in order
    assert q.pop() is None and q.peek_free() is None


def test_each_worker_is_told_which_task_comes_next_and_gets_it():
    """Task.up_next: a worker prepares the task it was told comes next (a page loaded ahead), so it
    must be the one it gets whenever it gets one."""
    pool = WorkerPool(spec(), 2)
    for i in range(12):
        pool.submit(Task(f"t{i:02}", {"do": "sleep", "seconds": 0.05 * (i % 3)}))
    with pool:
        results, _, lost = collect(pool)
    assert not lost and len(results) == 12
    told = 0
    for worker in {r.worker_id for r in results.values()}:
        ran = sorted((r for r in results.values() if r.worker_id == worker), key=lambda r: r.started)
        for before, after in zip(ran, ran[1:]):
            assert before.data["up_next"] in (None, after.key), (worker, [r.key for r in ran])
            told += before.data["up_next"] is not None
    assert told >= 8  # only near the end of the queue is there nothing left to tell


def test_each_worker_builds_its_state_once_and_closes_it(tmp_path):
    exits: list[WorkerInfo] = []
    with WorkerPool(spec(close_dir=str(tmp_path)), 2, on_worker_exit=exits.append) as pool:
        for i in range(20):
            pool.submit(Task(f"t{i}", {"do": "sleep", "seconds": 0.02}))
        results, events, lost = collect(pool)
        infos = pool.workers()
    assert not lost and len(results) == 20
    assert {r.data["factory_calls"] for r in results.values()} == {1}
    assert len({r.data["pid"] for r in results.values()}) <= 2
    assert sorted(e.worker_id for e in events if e.action == "factory_called") == ["w1", "w2"]
    assert [(i.worker_id, i.notes.factory_calls) for i in infos] == [("w1", 1), ("w2", 1)]
    assert all(i.state is WorkerState.STOPPED for i in pool.workers())
    # stop() let each worker close its handler, and the app heard of every exit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["closed-w1", "closed-w2"]
    assert sorted(i.worker_id for i in exits) == ["w1", "w2"]
    assert sum(i.done for i in pool.workers()) == 20


def test_an_exception_in_run_becomes_a_classified_result(caplog):
    caplog.set_level(logging.INFO)  # the workers take the parent's level at start()
    with WorkerPool(spec(), 1) as pool:
        pool.submit(Task("slow", {"do": "raise", "exc": "TimeoutError", "message": "portal too slow"},
                         prior_attempts=1))
        pool.submit(Task("missing", {"do": "raise", "exc": "ItemNotFound", "message": "no such PO",
                                     "reason": "PO_NOT_FOUND"}))
        pool.submit(Task("bug", {"do": "raise", "exc": "ValueError", "message": "bad value"}))
        pool.submit(Task("fine", {"do": "ok"}))
        results, _, lost = collect(pool)
    assert not lost
    slow = results["slow"]
    assert (slow.status, slow.error_class, slow.reason, slow.error, slow.attempts) == (
        "FAILED", "transient", "TIMEOUT", "portal too slow", 2)
    assert (results["missing"].error_class, results["missing"].reason) == ("business", "PO_NOT_FOUND")
    assert (results["bug"].error_class, results["bug"].reason) == ("fatal", "VALUEERROR")
    assert results["fine"].status == "COMPLETED"
    # the same worker survived every exception
    assert {r.worker_id for r in results.values()} == {"w1"}
    # the worker's own log lines reach the parent's handlers, tagged with the worker id
    assert "[w1] task bug failed: ValueError: bad value" in caplog.messages


def test_a_killed_worker_is_noticed_at_once_and_its_task_finished_by_a_replacement(tmp_path):
    marker = tmp_path / "killed-at"
    exits: list[WorkerInfo] = []
    lost_at: dict[str, float] = {}
    pool = WorkerPool(spec(), 2, on_worker_exit=exits.append)
    pool.submit(Task("victim", {"do": "kill_once", "marker": str(marker)}))
    pool.submit(Task("long", {"do": "sleep", "seconds": 2.0}))
    results: dict[str, TaskResult] = {}
    lost: list[WorkerLost] = []
    with pool:
        for item in pool.results():
            if isinstance(item, WorkerLost):
                lost_at[item.worker_id] = time.time()
                lost.append(item)
            elif isinstance(item, TaskResult):
                results[item.key] = item
    infos = {i.worker_id: i for i in pool.workers()}
    assert len(lost) == 1
    dead = lost[0]
    assert (dead.task_key, dead.requeued) == ("victim", True)
    if sys.platform != "win32":
        assert dead.exitcode == -signal.SIGKILL
    assert dead.notes.profile_dir == f"profile-{dead.worker_id}"
    # noticed through the process sentinel, not by a timeout
    assert lost_at[dead.worker_id] - float(marker.read_text()) < 1.0
    victim = results["victim"]
    assert victim.status == "COMPLETED" and victim.data["prior_attempts"] == 1
    assert victim.worker_id == "w3"  # the replacement; the other worker was busy on "long"
    assert results["long"].status == "COMPLETED"
    assert infos[dead.worker_id].state is WorkerState.DEAD and infos["w3"].state is WorkerState.STOPPED
    dead_exit = [i for i in exits if i.worker_id == dead.worker_id]
    assert len(dead_exit) == 1 and dead_exit[0].notes.profile_dir == f"profile-{dead.worker_id}"
    assert dead_exit[0].state is WorkerState.DEAD and dead_exit[0].task_key == "victim"
    assert sorted(infos) == ["w1", "w2", "w3"]  # exactly one replacement was started


def test_a_task_that_always_kills_its_worker_fails_after_bounded_requeues():
    # max_consecutive_failures is raised so this test is about the requeue bound alone
    pool = WorkerPool(spec(), 2, max_task_requeues=2, max_consecutive_failures=10)
    pool.submit(Task("poison", {"do": "kill"}))
    for i in range(6):
        pool.submit(Task(f"t{i}", {"do": "sleep", "seconds": 0.2}))
    with pool:
        results, _, lost = collect(pool)
    poison = results["poison"]
    assert (poison.status, poison.reason, poison.error_class, poison.attempts) == (
        "FAILED", "WORKER_DIED", "transient", 3)
    assert [(x.task_key, x.requeued) for x in lost] == [("poison", True), ("poison", True), ("poison", False)]
    assert all(results[f"t{i}"].status == "COMPLETED" for i in range(6))


def test_a_factory_that_always_fails_stops_the_pool_with_a_reason():
    pool = WorkerPool(WorkerSpec(FAILING, {}), 2, max_consecutive_failures=3)
    tasks = [Task(f"t{i}") for i in range(3)]
    for t in tasks:
        pool.submit(t)
    events: list[Event] = []
    t0 = time.monotonic()
    with pytest.raises(PoolStopped) as stopped:
        for item in pool.results():
            assert not isinstance(item, TaskResult)
            events.append(item)
    assert time.monotonic() - t0 < 15
    assert re.search(r"\d workers in a row died before finishing a task", str(stopped.value))
    assert "RuntimeError: no browser for you" in str(stopped.value)
    failed = [e for e in events if e.action == "worker_start_failed"]
    assert len(failed) >= 3 and all("no browser for you" in e.detail for e in failed)
    assert [t.key for t in stopped.value.unfinished] == ["t0", "t1", "t2"]
    assert live_workers(pool) == []
    assert [t.key for t in pool.stop()] == ["t0", "t1", "t2"]
    assert pool.stop() == []
    with pytest.raises(PoolStopped):  # asking again does not hang either
        list(pool.results())


def test_replacements_are_bounded_by_max_restarts():
    pool = WorkerPool(spec(), 1, max_restarts=1, max_task_requeues=5, max_consecutive_failures=10)
    pool.submit(Task("poison", {"do": "kill"}))
    with pool, pytest.raises(PoolStopped, match=r"restart limit \(1\)"):
        collect(pool)
    assert [i.worker_id for i in pool.workers()] == ["w1", "w2"]  # one restart, no more


def test_task_timeout_aborts_the_task_inside_the_worker():
    with WorkerPool(spec(), 1, task_timeout=0.5, abort_grace=20) as pool:
        t0 = time.monotonic()
        pool.submit(Task("stuck", {"do": "hang", "raise_after_abort": True}))
        pool.submit(Task("stuck-returns", {"do": "hang"}))
        pool.submit(Task("after", {"do": "ok"}))
        results, events, lost = collect(pool)
    assert time.monotonic() - t0 < 8
    assert not lost
    stuck = results["stuck"]
    assert (stuck.status, stuck.reason, stuck.error_class) == ("FAILED", "TIMEOUT", "transient")
    assert "browser went away" in stuck.error
    assert (results["stuck-returns"].status, results["stuck-returns"].data) == ("TIMEOUT", {"aborted": True})
    assert results["after"].status == "COMPLETED"
    assert {r.worker_id for r in results.values()} == {"w1"}  # aborted, not killed
    assert [e.task_key for e in events if e.action == "task_timeout"] == ["stuck", "stuck-returns"]
    assert len([e for e in events if e.action == "handler_abort"]) == 2


def test_a_handler_that_ignores_abort_is_killed_after_the_grace():
    exits: list[WorkerInfo] = []
    with WorkerPool(spec(), 1, task_timeout=0.3, abort_grace=0.5, max_task_requeues=0,
                    on_worker_exit=exits.append) as pool:
        t0 = time.monotonic()
        pool.submit(Task("deaf", {"do": "hang_ignore", "max": 60}))
        pool.submit(Task("after", {"do": "ok"}))
        results, events, lost = collect(pool)
        elapsed = time.monotonic() - t0
    assert 0.8 <= elapsed < 10
    assert [(x.worker_id, x.task_key, x.requeued) for x in lost] == [("w1", "deaf", False)]
    deaf = results["deaf"]
    assert (deaf.status, deaf.reason, deaf.error_class, deaf.attempts) == ("FAILED", "TIMEOUT", "transient", 1)
    assert results["after"].status == "COMPLETED" and results["after"].worker_id == "w2"
    assert [(i.worker_id, i.state) for i in exits] == [("w1", WorkerState.DEAD), ("w2", WorkerState.STOPPED)]
    assert [e.task_key for e in events if e.action == "task_timeout"] == ["deaf"]


def test_stop_returns_the_tasks_that_never_started():
    pool = WorkerPool(spec(), 1)
    pool.submit(Task("first", {"do": "sleep", "seconds": 1.0}))
    later = [Task(f"later{i}", {"n": i}) for i in range(5)]
    for t in later:
        pool.submit(t)
    pool.start()
    cancelled = None
    for item in pool.results():
        if isinstance(item, Event) and item.action == "running" and item.task_key == "first":
            cancelled = pool.stop(cancel_pending=True)
            break
    assert cancelled == later  # same tasks, same order, nothing lost
    rest = list(pool.results())
    done = [r for r in rest if isinstance(r, TaskResult)]
    assert [(r.key, r.status) for r in done] == [("first", "COMPLETED")]  # graceful: the current task finished
    assert pool.stop() == []
    with pytest.raises(RuntimeError):
        pool.submit(Task("too-late"))
    assert live_workers(pool) == []


def test_stop_without_cancel_finishes_the_queue():
    pool = WorkerPool(spec(), 2)
    for i in range(6):
        pool.submit(Task(f"t{i}", {"do": "sleep", "seconds": 0.05}))
    pool.start()
    assert pool.stop(cancel_pending=False, timeout=30) == []
    results, _, _ = collect(pool)
    assert sorted(results) == [f"t{i}" for i in range(6)]
    assert all(r.status == "COMPLETED" for r in results.values())


def test_submit_while_consuming_and_the_workers_books():
    with WorkerPool(spec(), 1) as pool:
        pool.submit(Task("a"))
        seen = []
        for item in pool.results():
            if isinstance(item, TaskResult):
                seen.append(item.key)
                if item.key == "a":
                    pool.submit(Task("b", prior_attempts=2))
        books = [(i.worker_id, i.state, i.task_key, i.done) for i in pool.workers()]
        left = pool.stop()
    assert seen == ["a", "b"]
    assert books == [("w1", WorkerState.IDLE, "", 2)]  # one worker, idle, nothing in hand, both tasks done
    assert left == []  # nothing queued


def test_every_task_gets_exactly_one_result_whatever_its_outcome():
    tasks = [Task("slowest", {"do": "sleep", "seconds": 0.4}),
             Task("broken", {"do": "raise", "exc": "ValueError"}),
             Task("slow", {"do": "sleep", "seconds": 0.2}),
             Task("quick", {"do": "ok"})]
    with WorkerPool(spec(), 2) as pool:
        for t in tasks:
            pool.submit(t)
        results, _, lost = collect(pool)  # collect() fails on a second result for a key
    assert not lost
    assert {k: r.status for k, r in results.items()} == {
        "slowest": "COMPLETED", "broken": "FAILED", "slow": "COMPLETED", "quick": "COMPLETED"}
    assert results["broken"].error_class == "fatal"


def test_a_pool_that_gives_up_accounts_for_every_task():
    pool = WorkerPool(WorkerSpec(FAILING, {}), 2)
    pool.submit(Task("x"))
    pool.submit(Task("y"))
    with pytest.raises(PoolStopped) as stopped:
        collect(pool)
    assert [t.key for t in stopped.value.unfinished] == ["x", "y"]  # none got a result, none is lost
    assert "no browser for you" in str(stopped.value)
    assert [t.key for t in pool.stop()] == ["x", "y"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_in_the_parent_interrupts_results_and_workers_ignore_it():
    pool = WorkerPool(spec(), 1)
    pool.submit(Task("long", {"do": "sleep", "seconds": 4.0}))
    pool.start()
    worker_pid = 0
    sent_at = 0.0
    timer = None
    with pytest.raises(KeyboardInterrupt):
        for item in pool.results():
            if isinstance(item, Event) and item.action == "running":
                worker_pid = pool.workers()[0].pid
                os.kill(worker_pid, signal.SIGINT)  # a console Ctrl+C reaches the workers too
                sent_at = time.monotonic() + 0.3
                timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
                timer.start()
    assert time.monotonic() - sent_at < 1.5  # results() was blocked in wait() and let it through
    timer.join()
    worker = psutil.Process(worker_pid)
    assert worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE  # the worker ignored SIGINT
    pool.terminate()
    rest = [r for r in pool.results() if isinstance(r, TaskResult)]
    assert [(r.key, r.status, r.reason) for r in rest] == [("long", "INTERRUPTED", "TERMINATED")]
    assert pool.stop() == []


def test_bad_specs_fail_fast():
    with pytest.raises(ValueError):
        WorkerPool(WorkerSpec(lambda ctx, config: None, {}), 1)  # no worker can import a lambda by name
    with pytest.raises(TypeError):
        WorkerPool(WorkerSpec("no_such_module_xyz:make", {}), 1)  # a "module:callable" name is no factory
    with pytest.raises(TypeError):
        WorkerPool(WorkerSpec(FACTORY, {"lock": threading.Lock()}), 1)
    with pytest.raises(ValueError):
        WorkerPool(spec(), 0)
