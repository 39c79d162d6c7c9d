"""The options of a batch run, declared once: each RunOptions field carries its default and its click
option, and the commands' options are generated from the fields (docs/design.md, "How to add a run mode").

So an option has one route: click parses it into the parameter named after its field,
`RunOptions.from_params` builds the options by name, the planner (core/preparation/planner.py) hands
them to the mode in its RunPlan and copies the fields JobConfig shares by name into the workers'
config. A default the workflow owns (e.g. --files-at-once) is read from JobConfig, not written again.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click

from pobatch.core.modes.registry import STRATEGIES, mode_name
from pobatch.core.option_types import COMMAND, PORTAL_URL, WORKERS
from pobatch.core.sites import SITES
from pobatch.core.workflow.job_config import JobConfig
from pobatch.corelib.browser.factory import BROWSERS, default_browser

CLICK = "click"  # the metadata key of a field's click declaration

SITE_FILE_HELP = ("A site file (TOML) that extends or replaces the portal's definition: selectors, texts, "
                  "URL patterns. Default: site.toml in pobatch's config folder, if there is one.")
STRATEGY_HELP = ("parallel: several browsers (the same as --parallel). single-session: one browser, one "
                 "sign-in, --windows windows; for portals that allow one live session per user, and for "
                 "parallel work on a PC short of memory.")
RECORD_HELP = ("Record every PO attempt in every browser window (rrweb, inputs masked); "
               "watch one with 'pobatch replay RUN PO'.")


def option(*decls: str, default: Any = None, default_factory: Callable[[], Any] | None = None, **attrs: Any) -> Any:
    """A RunOptions field that is also a click option: `decls` and `attrs` as click.option takes them,
    the default given once for both."""
    meta = {CLICK: (decls, attrs)}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass
class RunOptions:
    """What a run was asked for. Fields with a click declaration are `pobatch run`'s options; the
    rest are for library callers (tests, benchmarks)."""

    orders: Path
    out: Path | None = option("--out", type=click.Path(file_okay=False),
                              help="Output folder. Default: <orders file name>_downloads next to the orders file.")
    site: str = option("--site", default="coupa", type=click.Choice(sorted(SITES)), show_default=True,
                       help="Which portal definition to use.")
    # extends or replaces the site definition (else the user's site.toml)
    site_file: Path | None = option("--site-file", type=click.Path(dir_okay=False, path_type=Path),
                                    help=SITE_FILE_HELP)
    base_url: str | None = option("--base-url", type=PORTAL_URL,
                                  help="Portal address, e.g. https://yourcompany.coupahost.com")
    sheet: str | None = option("--sheet", help="Excel sheet to read (default: PO_Data if present, else the first).")
    browser: str = option("--browser", default_factory=default_browser, type=click.Choice(BROWSERS),
                          show_default=True, help="Which browser to drive.")
    profile: Path | None = option("--profile", help="Browser profile folder to start from; 'browser' = the "
                                  "browser's own profile. Default: pobatch's own profile.")
    driver: str | None = option("--driver", type=click.Path(dir_okay=False), help="Path of msedgedriver/chromedriver.")
    browser_binary: str | None = option("--browser-binary", type=click.Path(dir_okay=False),
                                        help="Path of the browser executable.")
    headless: bool = option("--headless/--visible", default=True, show_default=True,
                            help="Hide the browser window, or show it.")
    force: bool = option("--force", default=False, is_flag=True, help="Redo POs that are already COMPLETED.")
    # --refresh: look at answered POs again and fetch only what is new (docs/design.md, "Refresh")
    refresh: bool = option("--refresh", default=False, is_flag=True,
                           help="Keep the archive current: look at every answered PO again and download only the "
                           "attachments not yet held (with --recheck, PO_NOT_FOUND too).")
    recheck: bool = option("--recheck", default=False, is_flag=True,
                           help="Ask the portal again about POs already answered NO_ATTACHMENTS or PO_NOT_FOUND "
                           "(kept otherwise).")
    # --on-finish: a command run once the run ends (core/monitoring/on_finish.py)
    on_finish: str | None = option("--on-finish", type=COMMAND,
                                   help="A command to run when the run ends (also after a stop for sign-in); the "
                                   "results are in POBATCH_* environment variables.")
    parallel: bool = option("--parallel/--sequential", default=False, help="Run several browsers at once.")
    workers: int | None = option("--workers", type=WORKERS,  # None = auto
                                 help="Parallel workers: a number or 'auto'.  [default: auto]")
    strategy: str | None = option("--strategy", type=click.Choice(STRATEGIES), help=STRATEGY_HELP)
    windows: int = option("--windows", default=3, type=click.IntRange(1, 16), show_default=True,
                          help="With --strategy single-session: how many windows work in the one browser.")
    # Selenium Grid address: workers hold remote sessions there (implies the pool)
    grid: str | None = option("--grid", metavar="URL", help="Run the browsers on a Selenium Grid (e.g. "
                              "http://gridhost:4444); --workers auto then means the Grid's free slots.")
    po_timeout: float = option("--po-timeout", default=JobConfig.po_timeout, type=click.FloatRange(10, 3600),
                               show_default=True, help="Seconds one PO attempt may take before its browser is "
                               "restarted.")
    files_at_once: int = option("--files-at-once", default=JobConfig.files_at_once, type=click.IntRange(1, 16),
                                show_default=True, help="Attachments of one PO downloading at the same time; 1 = "
                                "one after another (for a portal that limits how fast you may download).")
    max_attempts: int = option("--max-attempts", default=JobConfig.max_attempts, type=click.IntRange(1, 10),
                               show_default=True,
                               help="Attempts per PO for transient errors (timeouts, crashes, HTTP 5xx).")
    record: bool = option("--record", default=JobConfig.record, is_flag=True, help=RECORD_HELP)
    page_ahead: bool = option("--page-ahead/--no-page-ahead", default=JobConfig.page_ahead, show_default=True,
                              help="Load the next PO's page while this PO's files download (one page request in "
                              "flight beside the downloads).")
    preflight: bool = option("--preflight/--no-preflight", default=True, show_default=True,
                             help="Check with one request that the portal answers before any browser starts.")
    # Not on the command line: the workflow's own limits, and what tests and benchmarks set.
    page_timeout: float = JobConfig.page_timeout
    download_timeout: float = JobConfig.download_timeout
    stall_timeout: float = JobConfig.stall_timeout
    backoff_base: float = JobConfig.backoff_base
    local_only: bool = False  # the browsers resolve loopback names only, even for a portal elsewhere
    profiles_root: Path | None = None  # where temporary profile clones go (default: system temp)

    def __post_init__(self) -> None:
        self.out = Path(self.out) if self.out else None  # the command line gives text

    @classmethod
    def from_params(cls, **params: Any) -> RunOptions:
        """The options from a command's parameters, by field name (a command's other parameters, such
        as --verbose, are not options of the run)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})

    def out_dir(self) -> Path:
        return self.out or self.orders.parent / f"{self.orders.stem}_downloads"

    def mode(self) -> str:
        """The registry name of the mode these options choose (FatalError when they contradict)."""
        return mode_name(self.strategy, self.parallel, self.grid)


def run_option(name: str, options: type[RunOptions] = RunOptions, **changes: Any) -> Callable:
    """The click option of the field `name`, as every command that takes it declares it; `changes` is
    what this command says differently (a help text, required=True)."""
    f = next(f for f in dataclasses.fields(options) if f.name == name)
    decls, attrs = f.metadata[CLICK]
    default = f.default_factory if f.default is dataclasses.MISSING else f.default
    return click.option(*decls, name, **{"default": default, **attrs, **changes})


def run_options(options: type[RunOptions] = RunOptions, *, skip: tuple[str, ...] = (),
                **changes: dict[str, Any]) -> Callable:
    """Every click option of `options` (a RunOptions or a subclass) but `skip`, in field order;
    `changes` maps a field name to what this command says differently (e.g. out={"default": ...})."""
    chosen = [f.name for f in dataclasses.fields(options) if CLICK in f.metadata and f.name not in skip]

    def decorate(command: Callable) -> Callable:
        for name in reversed(chosen):  # click lists the option applied last first
            command = run_option(name, options, **changes.get(name, {}))(command)
        return command
    return decorate
