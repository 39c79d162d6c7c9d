"""The planner: from RunOptions to the RunPlan a mode runs, with every check before the first browser.

MainApp (core/app.py) calls it in order: `check_inputs` (every bad input is one line here, nothing
written yet), then, with the run store open, `select_tasks`, `job_config` and `run_plan`. An option
reaches a mode by name, without a copy per layer: every mode reads `plan.options`, and the workers'
JobConfig gets each RunOptions field of the same name (`job_config`). docs/design.md, "How to add a
run mode".
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from pobatch.core.modes.base import RunPlan
from pobatch.core.modes.po_handler import WorkerConfig
from pobatch.core.modes.registry import traits_of
from pobatch.core.portal_address import NotAPortalAddress, PortalAddress
from pobatch.core.preparation.orders import OrdersError, OrdersFile, describe_problems, read_orders
from pobatch.core.preparation.preflight import check_reachable, check_writable
from pobatch.core.preparation.profiles import refuse_profile_in_use, resolve_base_profile
from pobatch.core.run_options import RunOptions
from pobatch.core.sites import default_site_file, resolve_site
from pobatch.core.status import Status
from pobatch.core.workflow.held_files import check_held
from pobatch.core.workflow.job_config import JobConfig
from pobatch.core.workflow.po_task import PoTaskPayload
from pobatch.core.workspace import Workspace
from pobatch.corelib.browser.factory import BrowserSpec
from pobatch.corelib.browser.grid import GridSpec
from pobatch.corelib.errors import FatalError
from pobatch.corelib.store import RunStore
from pobatch.corelib.worker_pool.tasks import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunInputs:
    """What the options name, checked: the orders, the site, the portal, the mode, the profile."""

    orders: OrdersFile
    site_name: str  # the resolved definition's name (a site file may rename it)
    site_file: Path | None
    base_url: PortalAddress
    out: Path
    mode: str  # a registry name (core/modes/registry.py)
    grid: GridSpec | None
    base_profile: Path


@dataclass
class Selection:
    """The POs to process, and what the planning learnt about the others."""

    tasks: list[Task]
    skipped: int  # final answers kept
    standing: set[str]  # POs whose stored outcome stands until a new result replaces it
    pending: list[str]  # POs new to the store: PENDING from now on
    checked: int  # answered POs a --refresh looks at again


def check_inputs(opts: RunOptions, workspace: Workspace) -> RunInputs:
    """Every check before anything is written (FatalError/OrdersError, one line each), in the order a
    person would fix them: the orders, the site, the options, the portal, the profile, the folder."""
    orders = read_orders(opts.orders, sheet=opts.sheet)  # OrdersError: nothing written yet
    site_file = opts.site_file or default_site_file()
    site = resolve_site(opts.site, site_file)  # FatalError naming the key and line, before any work
    if site_file:
        log.warning("site definition: %s (%s)", site.name, site_file)
    try:
        base_url = PortalAddress(opts.base_url or site.default_base_url or "")
    except NotAPortalAddress as exc:
        raise FatalError(f"--base-url: {exc}", reason="BAD_CONFIG") from None
    out = opts.out_dir().resolve()
    grid = GridSpec(opts.grid) if opts.grid else None  # FatalError for a malformed address, before any work
    mode = opts.mode()  # FatalError for a --strategy unknown or at odds with --parallel/--grid
    if opts.refresh and opts.force:
        raise FatalError("--refresh and --force: choose one; expected --refresh to fetch only what is new, or "
                         "--force to download every file again", reason="BAD_CONFIG")
    if opts.preflight and not traits_of(mode).remote_browsers:  # remote browsers reach the portal, maybe not this PC
        check_reachable(base_url)  # the options are consistent: now one request to the portal
    base_profile = resolve_base_profile(opts.profile, opts.browser)
    refuse_profile_in_use(base_profile)  # before any browser starts: never one of the user's
    _check_orders(orders)
    check_writable(workspace.work_dir, out)  # before any browser starts
    return RunInputs(orders, site.name, site_file, base_url, out, mode, grid, base_profile)


def _check_orders(orders: OrdersFile) -> None:
    for line in describe_problems(orders):
        log.warning("%s: %s", orders.path.name, line)
    if not orders.tasks:
        raise OrdersError(f"{orders.path}: no valid PO number found in column '{orders.po_column}'; "
                          "expected at least one row with a PO number such as 100001 or PO100001")


def job_config(opts: RunOptions, inputs: RunInputs, run_id: str) -> JobConfig:
    """The workflow's config: every JobConfig field named like a RunOptions field comes from it, the
    rest from the checked inputs."""
    shared = {f.name: getattr(opts, f.name) for f in dataclasses.fields(JobConfig) if hasattr(opts, f.name)}
    return JobConfig(**{**shared, "site_file": str(inputs.site_file or ""), "base_url": inputs.base_url,
                        "out_dir": str(inputs.out), "run_id": run_id})


def select_tasks(orders: OrdersFile, store: RunStore, opts: RunOptions) -> Selection:
    """The POs to process: every final answer is kept (COMPLETED unless --force, NO_ATTACHMENTS and
    PO_NOT_FOUND unless --recheck), or looked at again for what is new (--refresh). A redone PO keeps
    its stored outcome until the new one replaces it, so the store, its folder and the workbook agree
    at every moment. Reads the store; MainApp writes it."""
    known = store.tasks()
    refresh = opts.refresh
    redo = {Status.COMPLETED.value: opts.force or refresh,
            Status.NO_ATTACHMENTS.value: opts.recheck or refresh,
            Status.PO_NOT_FOUND.value: opts.recheck}
    chosen = Selection([], 0, set(), [], 0)
    for t in orders.tasks:
        prev = known.get(t.po_number)
        status = prev["status"] if prev else ""
        if status in redo and not redo[status]:
            chosen.skipped += 1
            continue
        folder = prev["data"].get("download_folder") if prev else ""
        previous = [folder] if folder else []
        held: tuple[dict, ...] = ()
        if refresh and prev and prev["data"].get("po_number"):
            # What the store and the folder hold: kept, never fetched again unless missing or changed.
            held = tuple(h.to_dict() for h in check_held(folder, store.files(t.po_number)))
            chosen.checked += 1
        payload = PoTaskPayload(po_number=t.po_number, row=t.row, folder_levels=tuple(t.folder_levels),
                                previous_folders=tuple(previous), refresh=refresh, held=held)
        chosen.tasks.append(Task(key=t.po_number, payload=payload.to_dict()))
        if previous:
            chosen.standing.add(t.po_number)
        else:
            chosen.pending.append(t.po_number)
    return chosen


def run_plan(opts: RunOptions, inputs: RunInputs, job: JobConfig, tasks: list[Task]) -> RunPlan:
    """What the mode runs: the tasks, the options, and the picklable WorkerConfig its browsers need."""
    # A portal on this machine (the demo) needs no name resolution at all: stop every lookup.
    spec = BrowserSpec(browser=opts.browser, headless=opts.headless, binary=opts.browser_binary,
                       driver=opts.driver, page_load_timeout=opts.page_timeout,
                       local_only=opts.local_only or inputs.base_url.is_local, bidi=opts.record)
    worker = WorkerConfig(job=job, browser=spec, base_profile=str(inputs.base_profile), run_id=job.run_id,
                          profiles_root=str(opts.profiles_root) if opts.profiles_root else None, grid=inputs.grid)
    return RunPlan(inputs.mode, tasks, worker, opts)
