"""What every run mode shares: the plan it receives, the RunMode contract, the attempt budget."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

from pobatch.core.modes.po_handler import WorkerConfig
from pobatch.core.workflow.job_config import JobConfig
from pobatch.corelib.worker_pool.tasks import Event, Task, TaskResult

# Per attempt, on top of its own po_timeout: a browser restart after a failed attempt (a Chromium start
# on a fresh profile clone takes 2-5 s on an office PC, a Grid session longer) and the failure capture
# before it (screenshot, HTML, console). 15 s covers both with room; past the whole budget, the browser
# is stuck in a way the workflow's own timeouts did not catch, and the mode kills it.
RESTART_ALLOWANCE = 15.0


def attempt_budget(job: JobConfig) -> float:
    """Seconds one PO may hold a worker or a window before it is killed: every attempt, its backoff,
    and a browser restart (the pool's task_timeout, the single-session window's limit)."""
    return job.max_attempts * (job.po_timeout + RESTART_ALLOWANCE) + job.backoff_max * job.max_attempts


@dataclass(frozen=True)
class RunPlan:
    """What a mode needs to run: MainApp builds it once the store is open and the POs are planned."""

    mode: str  # the registry name of the mode that runs it
    tasks: list[Task]
    worker: WorkerConfig  # picklable: the workflow's config, the browser, the base profile, the Grid
    workers: int | None = None  # pool modes: how many workers (None = auto)
    windows: int = 3  # single-session: windows in the one browser


class RunMode(Protocol):
    """A way to run a plan: events as they happen and exactly one TaskResult per task it finishes.

    The stream owns its browsers and processes: closing it (generator close) stops them, which is how
    MainApp stops a run for a sign-in, Ctrl+C, a full disk or a portal that went away."""

    name: str

    def stream(self, plan: RunPlan) -> Iterator[TaskResult | Event]: ...
