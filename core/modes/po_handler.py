"""The PO handler a worker runs: one browser kept across tasks, the shared PO workflow per task.

Sequential mode builds one in-process; parallel mode puts `make_handler` and the WorkerConfig in a
WorkerSpec and every spawned worker builds its own, on its own clone of the base profile. Grid mode
puts `make_grid_handler`: each worker holds a remote session instead, carrying the profile's cookies.
"""
from __future__ import annotations

import dataclasses
import logging
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pobatch.corelib.worker_pool import WorkerContext

from pobatch.core.modes.grid_login import apply_cookies
from pobatch.core.results import outcome_to_result
from pobatch.core.modes.worker_notes import BrowserWorkerNotes
from pobatch.core.workflow.job_config import JobConfig
from pobatch.core.workflow.po_job import PoJob
from pobatch.core.workflow.po_task import PoTaskPayload
from pobatch.corelib.browser.factory import BrowserSpec
from pobatch.corelib.browser.session import BrowserSession
from pobatch.corelib.browser.download_sink import DownloadSink, GridDownloadSink
from pobatch.corelib.browser.grid import GridSpec
from pobatch.corelib.browser.local_session import LocalBrowserSession
from pobatch.corelib.browser.profile_manager import ProfileManager, open_run_profiles
from pobatch.corelib.browser.remote_session import RemoteBrowserSession
from pobatch.corelib.worker_pool.tasks import Event, Task, TaskResult
from pobatch.corelib.tree_removal import remove_tree

log = logging.getLogger(__name__)


@dataclass
class WorkerConfig:
    """Picklable: what a worker process needs to build its handler."""

    job: JobConfig
    browser: BrowserSpec
    base_profile: str
    run_id: str
    profiles_root: str | None = None
    grid: GridSpec | None = None  # grid mode: remote sessions on this Grid
    cookies: tuple[dict[str, Any], ...] = ()  # grid mode: the base profile's portal cookies


class PoHandler:
    def __init__(self, session: BrowserSession, job_config: JobConfig,
                 emit: Callable[[Event], None], worker_id: str, on_close: Callable[[], None] | None = None,
                 sink: DownloadSink | None = None) -> None:
        self.session = session
        self.po_job = PoJob(session, job_config, emit=emit, worker_id=worker_id, sink=sink)
        self.worker_id = worker_id
        self._on_close = on_close

    def run(self, task: Task) -> TaskResult:
        payload = PoTaskPayload.from_dict(task.payload)
        outcome = self.po_job.process(payload, prior_attempts=task.prior_attempts, up_next=_up_next(task))
        return outcome_to_result(outcome, self.worker_id)

    def abort(self) -> None:
        """The pool's last resort for a task past its time: kill the browser (its session silences the
        retries the blocked driver would still log)."""
        self.session.abort()

    def close(self) -> None:
        try:
            self.session.close()
        finally:
            try:
                # The browser's own download folder: emptied after every PO, pointless once it is gone.
                download_dir = self.session.download_dir
                if download_dir is not None:
                    remove_tree(download_dir)
            finally:
                if self._on_close:
                    self._on_close()


def _up_next(task: Task) -> PoTaskPayload | None:
    """The PO that will probably come next (its page loads ahead); a hint that does not read as a PO
    is no reason to fail this one."""
    if task.up_next is None:
        return None
    try:
        return PoTaskPayload.from_dict(task.up_next.payload)
    except (KeyError, TypeError, ValueError) as exc:
        log.debug("no page ahead for task %s: %s", task.up_next.key, exc)
        return None


def incoming_dir(job_config: JobConfig, worker_id: str) -> Path:
    """Each browser's own download folder, fixed for its life: files land there under their download
    GUIDs and are moved out as soon as they finish (docs/design.md, "Downloads in Chromium")."""
    return job_config.workspace.incoming(worker_id)


# What a pool mode hands run_pool: a module-level function (spawn pickles it by name) of the worker's
# context and the run's WorkerConfig.
HandlerFactory = Callable[[WorkerContext, WorkerConfig], "PoHandler"]


def make_handler(ctx: WorkerContext, cfg: WorkerConfig) -> PoHandler:
    """WorkerSpec factory: clone the base profile, note it for crash cleanup, start the browser."""
    parent = multiprocessing.parent_process()
    # The run lives and dies with the app that started this worker: if the app is killed, the next
    # run's sweep knows this worker for an orphan.
    manager = ProfileManager(cfg.base_profile, cfg.run_id, work_root=cfg.profiles_root,
                             run_owner_pid=parent.pid if parent is not None else None)
    session: LocalBrowserSession | None = None
    try:
        clone = manager.clone(f"{ctx.worker_id}")
        download_dir = incoming_dir(cfg.job, ctx.worker_id)
        ctx.note(BrowserWorkerNotes(profile_dir=str(clone), download_dir=str(download_dir)))
        spec = dataclasses.replace(cfg.browser, user_data_dir=str(clone), download_dir=str(download_dir))
        session = LocalBrowserSession(spec)
        handler = PoHandler(session, cfg.job, ctx.emit, ctx.worker_id, on_close=manager.cleanup)
        # Start the browser now: a worker is ready when its browser is, and a start failure shows at once.
        session.start()
    except BaseException:
        # A worker that cannot start (or is stopped while starting) leaves no browser and no clone.
        try:
            if session is not None:
                session.close()
        finally:
            manager.cleanup()
        raise
    return handler


def make_grid_handler(ctx: WorkerContext, cfg: WorkerConfig) -> PoHandler:
    """WorkerSpec factory for grid mode: a remote session that gets the login cookies at every start."""
    assert cfg.grid is not None
    grid, cookies, base_url = cfg.grid, [dict(c) for c in cfg.cookies], cfg.job.base_url

    def on_start(driver: Any) -> None:
        # Noted first: if this worker dies, the parent deletes the session rather than the Grid
        # keeping it until its session timeout.
        ctx.note(BrowserWorkerNotes(grid_url=grid.url, grid_session=driver.session_id))
        apply_cookies(driver, base_url, cookies)

    session = RemoteBrowserSession(cfg.browser, grid, on_start=on_start)
    handler = PoHandler(session, cfg.job, ctx.emit, ctx.worker_id, sink=GridDownloadSink(session))
    session.start()  # ready when its session is; a Grid that cannot start one shows at once
    return handler


def sequential_handler(cfg: WorkerConfig, emit: Callable[[Event], None]) -> PoHandler:
    """The in-process handler. It works on a clone of the base profile, like a pool worker: a crash
    then leaves nothing on the user's own profile, and the next run's sweep finds what it left."""
    manager = open_run_profiles(cfg.base_profile, cfg.run_id, cfg.profiles_root)
    clone = manager.clone("main")
    spec = dataclasses.replace(cfg.browser, user_data_dir=str(clone), download_dir=str(incoming_dir(cfg.job, "main")))
    return PoHandler(LocalBrowserSession(spec), cfg.job, emit, "main", on_close=manager.cleanup)
