"""What every run mode shares: the plan it receives, the RunMode contract, its traits, the attempt budget."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Iterator, Protocol

from pobatch.core.modes.po_handler import WorkerConfig
from pobatch.core.workflow.job_config import JobConfig
from pobatch.corelib.worker_pool.tasks import Event, Task, TaskResult

if TYPE_CHECKING:  # core/run_options.py imports the registry, which imports this module
    from pobatch.core.run_options import RunOptions

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
class ModeTraits:
    """What differs between modes for the code outside core/modes/ (the app, the planner, the console):
    it asks the mode's traits (registry.traits_of), never its name."""

    worker_lines: bool = False  # the console shows a line per worker and the queue (a pool of processes)
    # Several browsers on clones of one profile share its session cookie: a portal that keeps one live
    # session per user signs them out in turn (SignInWatch, core/monitoring/stream_watch.py, waits for
    # the evidence before it says which).
    clones_share_a_session: bool = False
    remote_browsers: bool = False  # the browsers run elsewhere (a Grid): a request from this PC proves nothing

    def may_sign_each_other_out(self, workers: int | None) -> bool:
        """Whether browsers of this run may sign each other out (`workers` None = auto: maybe several)."""
        return self.clones_share_a_session and workers != 1


@dataclass(frozen=True)
class RunPlan:
    """What a mode needs to run: the planner (core/preparation/planner.py) builds it once the store is
    open and the POs are planned."""

    mode: str  # the registry name of the mode that runs it
    tasks: list[Task]
    worker: WorkerConfig  # picklable: the workflow's config, the browser, the base profile, the Grid
    options: RunOptions  # every option as given, by name: e.g. options.workers (None = auto), options.windows


class RunMode(Protocol):
    """A way to run a plan: events as they happen and exactly one TaskResult per task it finishes.

    The stream owns its browsers and processes: closing it (generator close) stops them, which is how
    MainApp stops a run for a sign-in, Ctrl+C, a full disk or a portal that went away."""

    name: str
    traits: ClassVar[ModeTraits]

    def stream(self, plan: RunPlan) -> Iterator[TaskResult | Event]: ...
