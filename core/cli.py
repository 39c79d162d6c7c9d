"""pobatch command line: each command is a function that reads like its help text."""
from __future__ import annotations

import logging
import os
import sys
import time
import webbrowser
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import click

from pobatch.core import __version__
from pobatch.core.app import MainApp, RunOptions
from pobatch.core.commands.check import run_check, verdict, write_snapshot
from pobatch.core.monitoring.console import ConsoleView
from pobatch.core.demo_portal import DemoPortal, sample_orders_path
from pobatch.core.demo_portal import main as portal_main
from pobatch.core.commands.desk import ask_start, finish_run, run_signing_in, sign_in_request, what_changed
from pobatch.core.exit_codes import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_LOGIN, EXIT_STOPPED
from pobatch.core.commands.login import interactive_login, prepare_demo_profile
from pobatch.core.modes.registry import STRATEGIES
from pobatch.core.monitoring.on_finish import run_on_finish
from pobatch.core.preparation.orders import OrdersError, normalize_po
from pobatch.core.preparation.preflight import run_process_alive
from pobatch.core.preparation.profiles import resolve_base_profile
from pobatch.core.reports.replay import NoRecording, write_replay
from pobatch.core.reports.report import write_report
from pobatch.core.sites import SITES, default_site_file, resolve_site
from pobatch.core.workspace import WORK_DIR_NAME, Workspace
from pobatch.corelib.browser.factory import BROWSERS, BrowserSpec, default_browser
from pobatch.corelib.errors import FatalError, LoginRequiredError
from pobatch.corelib.store import RunStore

log = logging.getLogger(__name__)

STRATEGY_HELP = ("parallel: several browsers (the same as --parallel). single-session: one browser, one "
                 "sign-in, --windows windows; for portals that allow one live session per user, and for "
                 "parallel work on a PC short of memory.")
WINDOWS_HELP = "With --strategy single-session: how many windows work in the one browser."
RECORD_HELP = ("Record every PO attempt in every browser window (rrweb, inputs masked); "
               "watch one with 'pobatch replay RUN PO'.")


def _setup_logging(verbose: int) -> None:
    from rich.logging import RichHandler

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(message)s", datefmt="%H:%M:%S",
                        handlers=[RichHandler(show_path=False, rich_tracebacks=False, markup=False)])
    for noisy in ("selenium", "urllib3", "WDM"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


class BadInput(click.ClickException):
    """Bad input or configuration found while running (a file's contents, a folder, a site file):
    click prints the one line "Error: ..." and exits 2 (README, exit codes). Problems with the
    command line itself are click.UsageError, which adds the usage."""

    exit_code = EXIT_BAD_INPUT


def _fail(message: str) -> NoReturn:
    raise BadInput(message)


class WorkersType(click.ParamType):
    """--workers: a whole number from 1 to 32, or 'auto' (None: let the machine decide)."""

    name = "N|auto"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int | None:
        if value is None or value == "auto":
            return None
        try:
            n = int(value)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            self.fail(f"'{value}' is not a number; expected a whole number from 1 to 32, or 'auto'", param, ctx)
        if not 1 <= n <= 32:
            self.fail(f"{n} is out of range; expected a whole number from 1 to 32, or 'auto'", param, ctx)
        return n


WORKERS = WorkersType()


def browser_options(f):
    """Options shared by every command that starts a browser."""
    f = click.option("--driver", type=click.Path(dir_okay=False), help="Path of msedgedriver/chromedriver.")(f)
    f = click.option("--browser-binary", type=click.Path(dir_okay=False), help="Path of the browser executable.")(f)
    f = click.option("--profile", help="Browser profile folder to start from; 'browser' = the browser's own "
                     "profile. Default: pobatch's own profile.")(f)
    f = click.option("--browser", type=click.Choice(BROWSERS), default=default_browser, show_default=True,
                     help="Which browser to drive.")(f)
    return f


SITE_FILE_HELP = ("A site file (TOML) that extends or replaces the portal's definition: selectors, texts, "
                  "URL patterns. Default: site.toml in pobatch's config folder, if there is one.")


def site_file_option(f):
    return click.option("--site-file", type=click.Path(dir_okay=False), help=SITE_FILE_HELP)(f)


def run_options(f=None, *, out_default: str | None = None):
    """The options of a batch run, shared by `run` and `demo` (which differs only in its --out default)."""
    if f is None:
        return lambda g: run_options(g, out_default=out_default)
    f = click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")(f)
    f = click.option("--po-timeout", type=click.FloatRange(10, 3600), default=180, show_default=True,
                     help="Seconds one PO attempt may take before its browser is restarted.")(f)
    f = click.option("--files-at-once", type=click.IntRange(1, 16), default=4, show_default=True,
                     help="Attachments of one PO downloading at the same time; 1 = one after another "
                     "(for a portal that limits how fast you may download).")(f)
    f = click.option("--max-attempts", type=click.IntRange(1, 10), default=3, show_default=True,
                     help="Attempts per PO for transient errors (timeouts, crashes, HTTP 5xx).")(f)
    f = click.option("--workers", type=WORKERS, default=None,
                     help="Parallel workers: a number or 'auto'.  [default: auto]")(f)
    f = click.option("--parallel/--sequential", default=False, help="Run several browsers at once.")(f)
    f = click.option("--windows", type=click.IntRange(1, 16), default=3, show_default=True, help=WINDOWS_HELP)(f)
    f = click.option("--strategy", type=click.Choice(STRATEGIES), help=STRATEGY_HELP)(f)
    f = click.option("--grid", metavar="URL", help="Run the browsers on a Selenium Grid (e.g. http://gridhost:4444); "
                     "--workers auto then means the Grid's free slots.")(f)
    f = click.option("--headless/--visible", default=True, show_default=True,
                     help="Hide the browser window, or show it.")(f)
    f = click.option("--recheck", is_flag=True, help="Ask the portal again about POs already answered "
                     "NO_ATTACHMENTS or PO_NOT_FOUND (kept otherwise).")(f)
    f = click.option("--force", is_flag=True, help="Redo POs that are already COMPLETED.")(f)
    f = click.option("--refresh", is_flag=True, help="Keep the archive current: look at every answered PO again "
                     "and download only the attachments not yet held (with --recheck, PO_NOT_FOUND too).")(f)
    f = click.option("--on-finish", metavar="CMD", help="A command to run when the run ends (also after a stop "
                     "for sign-in); the results are in POBATCH_* environment variables.")(f)
    f = click.option("--record", is_flag=True, help=RECORD_HELP)(f)
    f = click.option("--page-ahead/--no-page-ahead", default=True, show_default=True,
                     help="Load the next PO's page while this PO's files download (one page request in "
                     "flight beside the downloads).")(f)
    f = click.option("--preflight/--no-preflight", default=True, show_default=True,
                     help="Check with one request that the portal answers before any browser starts.")(f)
    f = browser_options(f)
    out_help = "Output folder." + ("" if out_default else
                                   " Default: <orders file name>_downloads next to the orders file.")
    f = click.option("--out", type=click.Path(file_okay=False), default=out_default, show_default=bool(out_default),
                     help=out_help)(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="pobatch")
def main() -> None:
    """Download the attachments of many purchase orders from a procurement portal, in batches.

    Every PO gets a folder <Supplier>/<PO>_<STATUS> with its verified files, and a results workbook
    says what happened to each PO and why. Running the same command again finishes an interrupted run.
    """


@main.command()
@click.argument("orders", type=click.Path(dir_okay=False))
@click.option("--site", type=click.Choice(sorted(SITES)), default="coupa", show_default=True,
              help="Which portal definition to use.")
@click.option("--base-url", help="Portal address, e.g. https://yourcompany.coupahost.com")
@click.option("--sheet", help="Excel sheet to read (default: PO_Data if present, else the first).")
@site_file_option
@click.option("--sign-in-if-needed", is_flag=True, help="When the portal asks for a sign-in, open a window on "
              "the profile, wait until you have signed in there, then carry on with the same batch.")
@run_options
def run(orders: str, site: str, base_url: str | None, sheet: str | None, sign_in_if_needed: bool = False,
        **kw) -> None:
    """Process every PO in ORDERS (CSV or Excel) and download its attachments."""
    _check_on_finish(kw.get("on_finish"))

    def run_once():
        return _run(Path(orders), site=site, base_url=base_url, sheet=sheet, **kw)

    if sign_in_if_needed:
        try:
            summary = run_signing_in(run_once, sign_in_request(site, base_url, kw))
        except FatalError as exc:  # the sign-in window could not start
            _fail(str(exc))
    else:
        summary = run_once()
    # One line on how it went, the --on-finish command (once, after any sign-in), the offer to open the results.
    finish_run(summary, on_finish=kw.get("on_finish"))
    sys.exit(summary.exit_code)


def _check_on_finish(command: str | None) -> None:
    if command is not None and not command.strip():
        _fail("--on-finish: the command is empty; expected a command to run when the run ends, e.g. "
              "--on-finish \"powershell -File notify.ps1\"")


def _run(orders: Path, *, verbose: int = 0, local_only: bool = False, **kw):
    _setup_logging(verbose)
    if kw.get("site") == "coupa" and not kw.get("base_url"):
        raise click.UsageError("--base-url is required for --site coupa; expected your tenant's address, e.g. "
                               "https://yourcompany.coupahost.com")
    opts = RunOptions(orders=orders, out=Path(kw["out"]) if kw.get("out") else None, site=kw["site"],
                      base_url=kw.get("base_url"), browser=kw["browser"], profile=kw.get("profile"),
                      headless=kw["headless"], driver=kw.get("driver"), browser_binary=kw.get("browser_binary"),
                      sheet=kw.get("sheet"), force=kw["force"], recheck=kw.get("recheck", False),
                      refresh=kw.get("refresh", False), on_finish=kw.get("on_finish"),
                      parallel=kw["parallel"], workers=kw["workers"], strategy=kw.get("strategy"),
                      windows=kw.get("windows") or 3,
                      po_timeout=kw["po_timeout"], max_attempts=kw["max_attempts"], local_only=local_only,
                      grid=kw.get("grid"), record=kw.get("record", False), page_ahead=kw.get("page_ahead", True),
                      files_at_once=kw.get("files_at_once", 4),
                      site_file=Path(kw["site_file"]) if kw.get("site_file") else None,
                      preflight=kw.get("preflight", True))
    try:
        summary = MainApp(opts, view=ConsoleView()).run()
    except OrdersError as exc:
        _fail(str(exc))
    except FatalError as exc:
        _fail(str(exc))
    return summary


@main.command()
@click.option("--scenario", type=click.Path(dir_okay=False, exists=True),
              help="Demo scenario file (JSON): its POs are the demo's orders.")
@site_file_option
@run_options(out_default="demo_output")
def demo(out: str, scenario: str | None, profile: str | None, **kw) -> None:
    """Run the bundled demo batch (or a scenario's POs) end to end against the built-in demo portal."""
    _check_on_finish(kw.get("on_finish"))
    _setup_logging(kw["verbose"])
    out_dir = Path(out).resolve()
    with DemoPortal(scenario).start() as portal:
        later = portal.scenario.revision_count if kw.get("refresh") else 0
        if later:  # a refresh meets the portal as its scenario says it is later on: files added, removed
            portal.revise(later)
        click.echo(f"Demo portal running at {portal.base_url}"
                   + (f", as it is {portal.scenario.revisions[later - 1].label or 'later'}" if later else ""), err=True)
        orders = _scenario_orders(Path(scenario), portal, out_dir) if scenario else sample_orders_path()
        profile_dir = Path(profile) if profile else Workspace(out_dir).demo_profile
        try:
            prepare_demo_profile(profile_dir, portal.base_url, browser=kw["browser"], driver=kw.get("driver"),
                                 binary=kw.get("browser_binary"))
        except FatalError as exc:
            _fail(str(exc))
        summary = _run(orders, site="demo", base_url=portal.base_url, sheet=None, out=str(out_dir),
                       profile=str(profile_dir), local_only=True, **kw)
        expected = portal.expected_outcomes()
    # The demo knows the truth: it succeeds when every PO got the status its scenario says is right,
    # including the POs that are meant to fail.
    wrong = [f"PO {po}: got {o.status.value} {o.reason}".rstrip() + f", expected {' '.join(expected[po]).strip()}"
             for po, o in sorted(summary.outcomes.items())
             if po in expected and (o.status.value, o.reason) != tuple(expected[po])]
    if summary.checked:
        click.echo(what_changed(summary), err=True)
    if summary.exit_code in (EXIT_LOGIN, EXIT_INTERRUPTED, EXIT_STOPPED):
        code = summary.exit_code
    elif wrong:
        click.echo("Demo check failed:\n  " + "\n  ".join(wrong), err=True)
        code = 1
    else:
        click.echo(f"Demo check: all {len(summary.outcomes)} POs got the status the scenario expects.", err=True)
        code = 0
    run_on_finish(kw.get("on_finish"), summary, exit_code=code)  # the hook sees the exit code the demo exits with
    sys.exit(code)


def _scenario_orders(scenario: Path, portal, out_dir: Path) -> Path:
    """The scenario's POs as an orders file in the output folder (the same bytes on every run, so a
    rerun resumes): the demo processes exactly what the scenario describes."""
    path = out_dir / f"{scenario.stem}_orders.csv"
    text = "PO_NUMBER\n" + "".join(f"{po.id}\n" for po in portal.scenario.pos)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        _fail(f"--out: cannot write in {out_dir} ({exc.strerror or exc}); expected an output folder you can "
              "write to")
    return path


def _open_store(out: str):
    """The run store of an output folder, or a clear error naming what was expected."""
    path = Workspace(Path(out).resolve()).store_path
    if not path.is_file():
        _fail(f"no pobatch run in {Path(out).resolve()}: expected the output folder of a run (the folder that "
              f"holds {WORK_DIR_NAME}); pass it with --out")
    store = RunStore(path)
    store.interrupt_dead_runs(run_process_alive)  # a killed run shows as INTERRUPTED, not RUNNING for ever
    return store


def _run_id(store, run: str | None) -> str:
    runs = [r["run_id"] for r in store.runs()]
    if run in (None, "last"):
        if not runs:
            _fail(f"{store.path} holds no run yet")
        return runs[-1]
    matches = [r for r in runs if r == run] or [r for r in runs if r.startswith(run)]
    if len(matches) != 1:
        listing = ", ".join(runs[-5:]) or "none"
        _fail(f"run '{run}' {'is ambiguous' if matches else 'is not in ' + str(store.path)}; "
              f"expected a run id (or 'last'); latest runs: {listing}")
    return matches[0]


@main.command()
@click.argument("run", required=False)
@click.option("--out", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Output folder of the run (the folder that holds .pobatch).")
def report(run: str | None, out: str) -> None:
    """Write the HTML report of RUN (a run id, or 'last', the default) into the output folder."""
    _setup_logging(0)
    with _open_store(out) as store:
        run_id = _run_id(store, run)
        path = write_report(store, run_id, Path(out).resolve())
    click.echo(str(path))


@main.command()
@click.argument("run")
@click.argument("po")
@click.option("--out", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Output folder of the run (the folder that holds .pobatch).")
@click.option("--attempt", type=click.IntRange(1, 100), help="Only this attempt (default: every recorded one).")
@click.option("--open/--no-open", "open_page", default=True, show_default=True,
              help="Open the page in the default browser (never when the CI variable is set).")
def replay(run: str, po: str, out: str, attempt: int | None, open_page: bool) -> None:
    """Write an offline page that replays the recorded attempts of PO in RUN ('last' for the latest run)."""
    _setup_logging(0)
    with _open_store(out) as store:
        run_id = _run_id(store, run)
        try:
            path = write_replay(store, run_id, normalize_po(po) or po.strip(), Path(out).resolve(), attempt=attempt)
        except NoRecording as exc:
            _fail(str(exc))
    click.echo(str(path))
    if open_page and not os.environ.get("CI"):
        webbrowser.open(path.as_uri())


@main.command()
@click.argument("pos", nargs=-1, required=True, metavar="PO [PO...]")
@click.option("--site", type=click.Choice(sorted(SITES)), default="coupa", show_default=True,
              help="Which portal definition to start from.")
@click.option("--base-url", help="Portal address, e.g. https://yourcompany.coupahost.com")
@site_file_option
@click.option("--headless/--visible", default=False, show_default=True, help="Hide the browser window, or show it.")
@click.option("--download", "download_dir", type=click.Path(file_okay=False),
              help="Also run the real workflow for each PO and put its folder under DIR (default: download nothing).")
@click.option("--snapshot", type=click.Path(dir_okay=False),
              help="Where to write the JSON snapshot to send to whoever maintains your site file. "
                   "Default: pobatch-check-<time>.json in the current folder.")
@browser_options
@click.option("-v", "--verbose", count=True, help="More log output.")
def check(pos: tuple[str, ...], site: str, base_url: str | None, site_file: str | None, headless: bool,
          download_dir: str | None, snapshot: str | None, browser: str, profile: str | None, driver: str | None,
          browser_binary: str | None, verbose: int) -> None:
    """Before a big batch: does pobatch understand your portal? Prints the evidence for each PO.

    For every PO: the HTTP status and page state with what decided it, the identity evidence, the
    supplier, each attachment with the selector that matched it, and file-like names no selector
    matched. Exit code 0 means everything was understood.
    """
    _setup_logging(verbose)
    numbers = []
    for raw in pos:
        po = normalize_po(raw)
        if not po:
            _fail(f"PO '{raw}': expected a PO number such as 100001 or PO100001")
        numbers.append(po)
    try:
        chosen_file = site_file or default_site_file()
        definition = resolve_site(site, chosen_file)
        url = (base_url or definition.default_base_url or "").rstrip("/")
        if not url.startswith(("http://", "https://")):
            _fail(f"--base-url: '{base_url or ''}' is not a portal address; expected e.g. "
                  "https://yourcompany.coupahost.com")
        spec = BrowserSpec(browser=browser, headless=headless, binary=browser_binary, driver=driver,
                           local_only=urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1"))
        checks = run_check(numbers, site_name=site, site_file=str(chosen_file or ""), base_url=url, browser=spec,
                           base_profile=resolve_base_profile(profile, browser),
                           download_dir=Path(download_dir).resolve() if download_dir else None,
                           profiles_root=None, echo=click.echo)
    except LoginRequiredError as exc:
        click.echo(f"Sign-in required: {exc}", err=True)
        sys.exit(EXIT_LOGIN)
    except FatalError as exc:
        _fail(str(exc))
    target = Path(snapshot) if snapshot else Path(time.strftime("pobatch-check-%Y%m%d-%H%M%S.json"))
    write_snapshot(target.resolve(), definition, url, checks)
    click.echo(verdict(checks))
    click.echo(f"Snapshot: {target.resolve()}")
    sys.exit(0 if all(c.understood for c in checks) else 1)


@main.command("demo-portal")
@click.option("--scenario", type=click.Path(dir_okay=False, exists=True), help="Scenario file (JSON).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port on 127.0.0.1.")
def demo_portal(scenario: str | None, port: int) -> None:
    """Start the demo portal alone, to click through in a browser."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    portal_main(scenario, port, "127.0.0.1")


@main.command()
@click.option("--site", type=click.Choice(sorted(SITES)), default="coupa", show_default=True)
@click.option("--base-url", required=True, help="Portal address, e.g. https://yourcompany.coupahost.com")
@browser_options
def login(site: str, base_url: str, browser: str, profile: str | None, driver: str | None,
          browser_binary: str | None) -> None:
    """Open the portal in a visible browser on pobatch's profile, and close it once you have signed in."""
    _setup_logging(0)
    try:
        signed_in = interactive_login(base_url, browser=browser, profile=profile, driver=driver,
                                      binary=browser_binary, site=site)
    except FatalError as exc:
        _fail(str(exc))
    sys.exit(0 if signed_in else EXIT_LOGIN)


@main.command("start")
@click.argument("orders", required=False, type=click.Path(dir_okay=False))
@click.option("--base-url", help="Portal address; without it, the remembered one (asked first) or a new one.")
@click.option("--parallel/--sequential", default=None, help="Without either, you are asked.")
@click.option("--site", type=click.Choice(sorted(SITES)), default="coupa", show_default=True,
              help="Which portal definition to use.")
@click.option("--profile", help="Browser profile folder (default: pobatch's own profile).")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default: next to the orders file).")
@click.option("--browser", type=click.Choice(BROWSERS), default=default_browser, show_default=True,
              help="Which browser to drive.")
@click.option("--driver", type=click.Path(dir_okay=False), help="Path of msedgedriver/chromedriver.")
@click.pass_context
def start(ctx: click.Context, orders: str | None, base_url: str | None, parallel: bool | None, site: str,
          profile: str | None, out: str | None, browser: str, driver: str | None) -> None:
    """Ask for the orders file, the portal address and the mode, then run, signing in if needed.

    When the file was run before into the same output folder, one more question: continue the last
    run (Enter), refresh the archive (--refresh), or start again in a new folder.

    This is what run.bat (double-click, or a file dropped on it) and ./run.sh with no arguments do."""
    answers = ask_start(orders, base_url, parallel, out)  # the questions: pobatch.core.commands.desk
    ctx.invoke(run, orders=str(answers.orders), site=site, base_url=answers.base_url, parallel=answers.parallel,
               profile=profile, out=str(answers.out) if answers.out else None, browser=browser, driver=driver,
               sign_in_if_needed=True, refresh=answers.refresh)


# -- when something goes wrong at a desk (issue 25): core/commands/doctor.py, core/commands/support.py -------------------
@main.command()
@click.option("--base-url", help="Portal address, e.g. https://yourcompany.coupahost.com (default: the remembered one).")
@click.option("--site", type=click.Choice(sorted(SITES)), default="coupa", show_default=True,
              help="Which portal definition to use.")
@site_file_option
@click.option("--out", type=click.Path(), default=".", show_default=True,
              help="The output folder a run would write to.")
@click.option("--grid", metavar="URL", help="Also check this Selenium Grid (e.g. http://gridhost:4444).")
@click.option("--no-sign-in-check", is_flag=True, help="Skip the one headless page that checks the sign-in.")
@browser_options
def doctor(base_url: str | None, site: str, site_file: str | None, out: str, grid: str | None,
           no_sign_in_check: bool, browser: str, profile: str | None, driver: str | None,
           browser_binary: str | None) -> None:
    """Can a run start on this PC? One line per check, and what to do for each one that fails.

    Exit code 0 when a run can start, 1 when it cannot."""
    from pobatch.core.commands.desk import remembered_address
    from pobatch.core.commands.doctor import DoctorOptions, can_start, run_doctor, verdict_line

    _setup_logging(0)
    address = (base_url or remembered_address() or "").rstrip("/") or None
    if site != "coupa" and not address:
        address = (get_site_default(site) or "").rstrip("/") or None
    if address and not address.startswith(("http://", "https://")):
        _fail(f"--base-url: '{address}' is not a portal address; expected e.g. https://yourcompany.coupahost.com")
    if grid and not grid.startswith(("http://", "https://")):
        _fail(f"--grid: '{grid}' is not a Grid address; expected e.g. http://gridhost:4444")
    if Path(out).exists() and not Path(out).is_dir():
        _fail(f"--out: '{out}' is a file; expected the output folder a run would write to")
    opts = DoctorOptions(base_url=address, site=site, site_file=site_file, browser=browser, profile=profile,
                         driver=driver, browser_binary=browser_binary, out=Path(out), grid=grid,
                         sign_in=not no_sign_in_check)
    checks = run_doctor(opts, echo=click.echo)
    click.echo(verdict_line(checks))
    sys.exit(0 if can_start(checks) else 1)


def get_site_default(site: str) -> str | None:
    try:
        return resolve_site(site, None).default_base_url
    except FatalError:
        return None


@main.command()
@click.option("--out", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Output folder of the run (the folder that holds .pobatch).")
@click.option("--run", "run_ref", help="The run id (or 'last', the default).")
@click.option("--with-results", is_flag=True, help="Also put the results workbook in (it names suppliers and files).")
def support(out: str, run_ref: str | None, with_results: bool) -> None:
    """Make one zip to send to whoever helps you: the run's log, report, events, failures and options.

    It never holds cookies, Authorization headers, the browser profile or the downloaded files."""
    from pobatch.core.commands.doctor import DoctorOptions
    from pobatch.core.commands.support import build_bundle, bundle_path

    _setup_logging(0)
    out_dir = Path(out).resolve()
    with _open_store(out) as store:
        run_id = _run_id(store, run_ref)
        args = (store.run(run_id) or {}).get("args") or {}
        site = args.get("site") if args.get("site") in SITES else "coupa"
        doctor_opts = DoctorOptions(base_url=args.get("base_url") or None, site=site, out=out_dir, sign_in=False)
        target = bundle_path(out_dir, run_id)
        try:
            bundle = build_bundle(store, run_id, out_dir, target, with_results=with_results, doctor=doctor_opts)
        except OSError as exc:
            _fail(f"--out: cannot write the support bundle in {out_dir} ({exc.strerror or exc}); expected an output "
                  "folder you can write to")
    click.echo(bundle.summary())


if __name__ == "__main__":  # pragma: no cover
    main()
