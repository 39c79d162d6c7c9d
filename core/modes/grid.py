"""Grid mode: the parallel mode's pool, each worker holding a remote session on a Selenium Grid.

The Grid's nodes have no copy of the user's profile: the portal's cookies are read from it here, once,
and every worker's session gets them (core/modes/grid_login.py). `--workers auto` means the Grid's free slots.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Iterator

from pobatch.core.modes.grid_login import read_portal_cookies
from pobatch.core.modes.base import ModeTraits, RunPlan
from pobatch.core.modes.parallel import run_pool
from pobatch.core.modes.po_handler import make_grid_handler
from pobatch.corelib.browser.grid import check_grid
from pobatch.corelib.worker_pool.tasks import Event, TaskResult

log = logging.getLogger(__name__)


class GridMode:
    name = "grid"
    # Its sessions get the profile's cookies, not clones of the profile: SignInWatch decides at the first
    # sign-in page, as it always did for a Grid run.
    traits = ModeTraits(worker_lines=True, remote_browsers=True)

    def stream(self, plan: RunPlan) -> Iterator[TaskResult | Event]:
        cfg = plan.worker
        assert cfg.grid is not None, "grid mode needs WorkerConfig.grid"
        cookies = read_portal_cookies(cfg.base_profile, cfg.job.base_url, cfg.browser, cfg.run_id,
                                      cfg.profiles_root) if plan.tasks else []
        plan = dataclasses.replace(plan, worker=dataclasses.replace(cfg, cookies=tuple(cookies)))
        slots = check_grid(cfg.grid.url, cfg.browser.browser)
        workers = plan.options.workers
        if workers is None:
            workers = max(1, slots.free)
            log.info("--workers auto: %d (the Grid's free slots: %d of %d)", workers, slots.free, slots.total)
        yield from run_pool(plan, workers, make_grid_handler)
