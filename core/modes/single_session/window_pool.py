"""The single-session strategy: one browser, one login, N windows fed from one task queue.

MainApp consumes `SingleSessionMode().stream(plan)` (a RunMode, core/modes/base.py) exactly like the sequential and parallel streams: events
as they happen, one TaskResult per PO. Each window is a thread running the ordinary per-PO workflow
(pobatch.core.workflow.po_job.PoJob) over a WindowSession; only how browsers and windows are held differs.

Sign-in pages need a second look here. A portal that rotates its session token on every response
(one live session per user) briefly sees the previous token on a request that was sent while another
window's answer was still on its way: that one request is redirected to the sign-in page although the
browser still holds a valid session (measured on the demo portal: about 2 of 100 requests with four
busy windows). So a LOGIN_REQUIRED outcome puts its PO back in the queue, unless sign-in pages keep
coming with no signed-in page in between (more than windows + 1 in a row) or the same PO was already
given that second look twice: then the run stops for a sign-in as in every other mode.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import queue
import sys
import threading
import time
from typing import Iterator

from pobatch.core.events import PoEvent
from pobatch.core.modes.base import ModeTraits, RunPlan, attempt_budget
from pobatch.core.modes.po_handler import WorkerConfig
from pobatch.core.results import outcome_to_result
from pobatch.core.status import Status
from pobatch.core.workflow.page_probes import SIGNED_IN_STATES
from pobatch.core.workflow.po_job import PoJob
from pobatch.core.workflow.po_task import PoTaskPayload
from pobatch.corelib.errors import FatalError
from pobatch.corelib.browser.profile_manager import open_run_profiles
from pobatch.corelib.worker_pool.tasks import Event, PoolEvent, Task, TaskResult
from pobatch.corelib.tree_removal import remove_tree
from pobatch.corelib.worker_pool import result_from_exception
from pobatch.core.modes.single_session.shared_browser import SharedBrowser
from pobatch.core.modes.single_session.window_session import WindowSession
from pobatch.core.modes.single_session.window_sink import window_download_sink

log = logging.getLogger(__name__)

MAX_LOGIN_RECHECKS_PER_PO = 2
STOP_GRACE = 30.0  # seconds windows get to finish their current PO when the run stops early


class SessionHealth:
    """Tells a sign-in page caused by the token race from a session that really ended."""

    def __init__(self, windows: int) -> None:
        self.limit = windows + 1
        self._lock = threading.Lock()
        self._in_a_row = 0
        self._rechecks: collections.Counter[str] = collections.Counter()
        self.rechecks_total = 0

    def signed_in_page(self) -> None:
        with self._lock:
            self._in_a_row = 0

    def login_page(self, key: str) -> bool:
        """True: give the PO a second look; False: the session is gone, stop the run."""
        with self._lock:
            self._in_a_row += 1
            if self._in_a_row > self.limit or self._rechecks[key] >= MAX_LOGIN_RECHECKS_PER_PO:
                return False
            self._rechecks[key] += 1
            self.rechecks_total += 1
            return True


class _TaskQueue:
    """Tasks not yet resolved: take() waits while others are in flight, since they may come back."""

    def __init__(self, tasks: list[Task]) -> None:
        self._pending: collections.deque[Task] = collections.deque(tasks)
        self._unresolved = {t.key for t in tasks}
        self._cond = threading.Condition()
        self.stopping = False

    def take(self) -> Task | None:
        with self._cond:
            while True:
                if self.stopping or not self._unresolved:
                    return None
                if self._pending:
                    return self._pending.popleft()
                self._cond.wait(0.5)

    def put_back(self, task: Task) -> None:
        with self._cond:
            if task.key in self._unresolved:
                self._pending.appendleft(task)
                self._cond.notify()

    def resolve(self, key: str) -> bool:
        with self._cond:
            if key not in self._unresolved:
                return False
            self._unresolved.discard(key)
            self._cond.notify_all()
            return True

    def stop(self) -> None:
        with self._cond:
            self.stopping = True
            self._cond.notify_all()

    @property
    def unresolved(self) -> int:
        with self._cond:
            return len(self._unresolved)


@dataclasses.dataclass
class _Fatal:
    error: BaseException


class _Window(threading.Thread):
    """One window's worker: takes a PO, runs the workflow in its window, reports, repeats."""

    def __init__(self, pool: "WindowPool", index: int) -> None:
        super().__init__(name=f"pobatch-window-{index}", daemon=True)
        self.pool = pool
        self.worker_id = f"w{index}"
        self.task: Task | None = None
        self.busy_since = 0.0  # when its PO began, or sent its last event: the limit counts from here
        self.abandoned = False
        self.session = WindowSession(pool.browser, self.worker_id, pool.work_dir, pool.cfg.job.page_timeout,
                                     emit=self._emit)
        self.job = PoJob(self.session, pool.cfg.job, emit=self._emit, worker_id=self.worker_id,
                         sink=window_download_sink(self.session))

    def _emit(self, event: Event) -> None:
        if event.action == PoEvent.OPEN and event.outcome in SIGNED_IN_STATES:
            self.pool.health.signed_in_page()
        if not self.abandoned:
            self.pool.out.put(event)

    def run(self) -> None:
        try:
            while True:
                task = self.pool.tasks.take()
                if task is None:
                    return
                self.task, self.busy_since = task, time.monotonic()
                try:
                    result = self._run(task)
                finally:
                    self.task = None
                if result is not None and not self.abandoned:
                    self.pool.out.put(result)
                if self.abandoned:
                    return
        except BaseException as exc:  # a bug here must end the run loudly, not hang it
            self.pool.out.put(_Fatal(exc))
        finally:
            try:
                self.session.close()
            except Exception as exc:
                log.debug("closing window %s: %s", self.worker_id, exc)

    def _run(self, task: Task) -> TaskResult | None:
        payload = PoTaskPayload.from_dict(task.payload)
        started = time.time()
        try:
            outcome = self.job.process(payload, prior_attempts=task.prior_attempts)
        except FatalError:
            raise
        except Exception as exc:  # not a PO outcome: this window is suspect, the PO fails as in a pool worker
            log.exception("window %s: PO %s failed outside the workflow", self.worker_id, task.key)
            self.session.restart()
            return result_from_exception(task, exc, worker_id=self.worker_id, started=started)
        if outcome.status is Status.LOGIN_REQUIRED and self.pool.health.login_page(task.key):
            self._emit(Event(action=PoEvent.LOGIN_RECHECK, task_key=task.key, worker_id=self.worker_id,
                             window=self.worker_id, outcome="requeued",
                             detail="a sign-in page while the session is still in use elsewhere: tried again"))
            self.pool.tasks.put_back(task)
            return None
        return outcome_to_result(outcome, self.worker_id)


class WindowPool:
    def __init__(self, cfg: WorkerConfig, windows: int) -> None:
        self.cfg = cfg
        self.windows = max(1, windows)
        self.out: queue.Queue[TaskResult | Event | _Fatal] = queue.Queue()
        self.health = SessionHealth(self.windows)
        self.work_dir = cfg.job.workspace.scratch("single-session")
        self.browser: SharedBrowser | None = None  # type: ignore[assignment]
        self.tasks = _TaskQueue([])
        self._threads: list[_Window] = []

    def run(self, tasks: list[Task]) -> Iterator[TaskResult | Event]:
        if not tasks:
            return
        cfg = self.cfg
        if cfg.job.record:
            log.warning("--record is not available with the single-session strategy yet: "
                        "this run is not recorded")
            cfg = self.cfg = dataclasses.replace(cfg, job=dataclasses.replace(cfg.job, record=False),
                                                 browser=dataclasses.replace(cfg.browser, bidi=False))
        windows = max(1, min(self.windows, len(tasks)))
        self.health = SessionHealth(windows)
        manager = open_run_profiles(cfg.base_profile, cfg.run_id, cfg.profiles_root)
        clean_exit = False
        try:
            clone = manager.clone("session")
            spec = dataclasses.replace(cfg.browser, user_data_dir=str(clone))
            remove_tree(self.work_dir)
            self.browser = SharedBrowser(spec, self.work_dir / "spool")
            self.browser.start()  # a start failure shows at once, before any PO
            self.tasks = _TaskQueue(list(tasks))
            log.info("single-session strategy: %d window(s) in one browser", windows)
            for i in range(1, windows + 1):
                self._start_window(i)
            yield from self._results(windows)
            yield self._stats_event(windows)
            clean_exit = True
        finally:
            self._stop(urgent=sys.exc_info()[0] is KeyboardInterrupt, clean=clean_exit)
            manager.cleanup()

    def _stats_event(self, windows: int) -> Event:
        """What the strategy did, for the run's timeline (and for the tests and benchmarks)."""
        assert self.browser is not None
        router = self.browser.router
        stats = dataclasses.asdict(router.stats) if router else {}
        stats.pop("by_window", None)
        stats.update(windows=windows, browser_starts=self.browser.starts,
                     window_instances=sum(w.session.instances for w in self._threads),
                     login_rechecks=self.health.rechecks_total)
        return Event(action=PoEvent.SINGLE_SESSION_STATS, worker_id="single-session", detail=json.dumps(stats))

    def _start_window(self, index: int) -> None:
        w = _Window(self, index)
        self._threads.append(w)
        w.start()

    def _results(self, windows: int) -> Iterator[TaskResult | Event]:
        # How long one PO may hold a window without a sign of life (an event of its own) before the
        # browser is killed: a PO with 300 files may run long, a stuck one is still cut off.
        limit = attempt_budget(self.cfg.job)
        next_index = windows + 1
        killed_at: float | None = None
        while self.tasks.unresolved:
            try:
                item = self.out.get(timeout=0.5)
            except queue.Empty:
                item = None
            if isinstance(item, _Fatal):
                raise item.error
            if isinstance(item, TaskResult):
                if self.tasks.resolve(item.key):
                    yield item
            elif item is not None:
                for w in self._threads:
                    if w.task is not None and item.worker_id == w.worker_id and item.task_key == w.task.key:
                        w.busy_since = time.monotonic()  # progress: the limit counts from here
                yield item
            # A window stuck past every attempt's watchdog: kill the browser (every blocked command fails);
            # if its thread still does not come back, give its PO to the queue and open another window.
            now = time.monotonic()
            for w in list(self._threads):
                if w.abandoned or w.task is None or now - w.busy_since < limit:
                    continue
                if killed_at is None:
                    log.warning("window %s: PO %s made no progress for %.0fs: killing the shared browser", w.worker_id,
                                w.task.key, limit)
                    assert self.browser is not None
                    self.browser.kill()
                    killed_at = now
                elif now - killed_at > 60:
                    task = w.task
                    w.abandoned = True
                    if task is not None:
                        yield Event(action=PoolEvent.WORKER_LOST, worker_id=w.worker_id, task_key=task.key,
                                    outcome="requeued", detail="window thread did not come back")
                        self.tasks.put_back(dataclasses.replace(task, prior_attempts=task.prior_attempts + 1))
                    self._start_window(next_index)
                    next_index += 1
                    killed_at = None
            if killed_at is not None and not any(w.task and not w.abandoned for w in self._threads):
                killed_at = None
            if not any(w.is_alive() for w in self._threads if not w.abandoned) and self.tasks.unresolved:
                raise RuntimeError("every window thread ended with POs still unresolved")

    def _stop(self, urgent: bool, clean: bool) -> None:
        self.tasks.stop()
        live = [w for w in self._threads if w.is_alive()]
        if live and not urgent:
            deadline = time.monotonic() + (5.0 if clean else STOP_GRACE)
            for w in live:
                w.join(max(0.0, deadline - time.monotonic()))
        if self.browser is not None:
            if any(w.is_alive() for w in self._threads):
                self.browser.kill()  # what is still running fails fast now
                for w in self._threads:
                    w.join(10.0)
            self.browser.close()
        remove_tree(self.work_dir)


class SingleSessionMode:
    """The registry's "single-session" entry (core/modes/registry.py)."""

    name = "single-session"
    traits = ModeTraits()  # one browser, one session: its windows cannot sign each other out

    def stream(self, plan: RunPlan) -> Iterator[TaskResult | Event]:
        """The stream MainApp consumes: events as they happen and one result per PO."""
        yield from WindowPool(plan.worker, plan.options.windows).run(plan.tasks)
