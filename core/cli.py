"""pobatch command line: each command is a function that reads like its help text.

Over 400 lines on purpose: this is the one file where a person finds every command and every option
it takes, each command short; their work lives elsewhere (core/commands/, MainApp), and a run's
options are declared once, as RunOptions fields (core/run_options.py)."""
from __future__ import annotations

import logging
import os
import sys
import time
import webbrowser
from pathlib import Path
from typing import NoReturn

import click

from pobatch.core import __version__
from pobatch.core.app import MainApp
from pobatch.core.commands.check import run_check, verdict, write_snapshot
from pobatch.core.commands.desk import ask_start, finish_run, run_signing_in, sign_in_request
from pobatch.core.monitoring.verdict import what_changed
from pobatch.core.commands.login import interactive_login, prepare_demo_profile
from pobatch.core.demo_portal import DemoPortal, sample_orders_path
from pobatch.core.demo_portal import main as portal_main
from pobatch.core.exit_codes import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_LOGIN, EXIT_STOPPED
from pobatch.core.monitoring.console import ConsoleView
from pobatch.core.monitoring.on_finish import run_on_finish
from pobatch.core.portal_address import NotAPortalAddress, PortalAddress
from pobatch.core.preparation.orders import OrdersError, normalize_po
from pobatch.core.preparation.preflight import run_process_alive
from pobatch.core.preparation.profiles import resolve_base_profile
from pobatch.core.reports.replay import NoRecording, write_replay
from pobatch.core.reports.report import write_report
from pobatch.core.run_options import RunOptions, run_option, run_options
from pobatch.core.sites import SITES, default_site_file, resolve_site
from pobatch.core.workspace import WORK_DIR_NAME, Workspace
from pobatch.corelib.browser.factory import BrowserSpec
from pobatch.corelib.browser.grid import GridSpec
from pobatch.corelib.errors import FatalError, LoginRequiredError
from pobatch.corelib.store import RunStore

log = logging.getLogger(__name__)

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


def browser_options(f):
    """Options shared by every command that starts a browser (declared once, in RunOptions)."""
    for name in ("driver", "browser_binary", "profile", "browser"):
        f = run_option(name)(f)
    return f


def verbose_option(f):
    return click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="pobatch")
def main() -> None:
    """Download the attachments of many purchase orders from a procurement portal, in batches.

    Every PO gets a folder <Supplier>/<PO>_<STATUS> with its verified files, and a results workbook
    says what happened to each PO and why. Running the same command again finishes an interrupted run.
    """


@main.command()
@click.argument("orders", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--sign-in-if-needed", is_flag=True, help="When the portal asks for a sign-in, open a window on "
              "the profile, wait until you have signed in there, then carry on with the same batch.")
@run_options()
@verbose_option
def run(orders: Path, sign_in_if_needed: bool = False, **params) -> None:
    """Process every PO in ORDERS (CSV or Excel) and download its attachments."""

    def run_once():
        return _run(Path(orders), **params)

    if sign_in_if_needed:
        try:
            summary = run_signing_in(run_once, sign_in_request(params["site"], params["base_url"], params))
        except FatalError as exc:  # the sign-in window could not start
            _fail(str(exc))
    else:
        summary = run_once()
    # One line on how it went, the --on-finish command (once, after any sign-in), the offer to open the results.
    finish_run(summary, on_finish=params.get("on_finish"))
    sys.exit(summary.exit_code)


def _run(orders: Path, **params):
    """One run of the batch: `params` are the command's parameters, RunOptions takes its own by name."""
    _setup_logging(params.get("verbose", 0))
    if params.get("site") == "coupa" and not params.get("base_url"):
        raise click.UsageError("--base-url is required for --site coupa; expected your tenant's address, e.g. "
                               "https://yourcompany.coupahost.com")
    try:
        return MainApp(RunOptions.from_params(orders=orders, **params), view=ConsoleView()).run()
    except (OrdersError, FatalError) as exc:
        _fail(str(exc))


@main.command()
@click.option("--scenario", type=click.Path(dir_okay=False, exists=True),
              help="Demo scenario file (JSON): its POs are the demo's orders.")
@run_options(skip=("site", "base_url", "sheet"), out={"default": "demo_output", "help": "Output folder.",
                                                     "show_default": True})
@verbose_option
def demo(out: str, scenario: str | None, profile: str | None, **kw) -> None:
    """Run the bundled demo batch (or a scenario's POs) end to end against the built-in demo portal."""
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
        summary = _run(orders, site="demo", base_url=portal.base_url, out=str(out_dir), profile=str(profile_dir),
                       **kw)
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
@run_option("site", help="Which portal definition to start from.")
@run_option("base_url")
@run_option("site_file")
@run_option("headless", default=False)  # a check is watched
@click.option("--download", "download_dir", type=click.Path(file_okay=False),
              help="Also run the real workflow for each PO and put its folder under DIR (default: download nothing).")
@click.option("--snapshot", type=click.Path(dir_okay=False),
              help="Where to write the JSON snapshot to send to whoever maintains your site file. "
                   "Default: pobatch-check-<time>.json in the current folder.")
@browser_options
@verbose_option
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
        url = _portal_address(base_url or definition.default_base_url)
        spec = BrowserSpec(browser=browser, headless=headless, binary=browser_binary, driver=driver,
                           local_only=url.is_local)
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
@run_option("site")
@run_option("base_url", required=True)
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
@run_option("base_url", help="Portal address; without it, the remembered one (asked first) or a new one.")
@run_option("parallel", default=None, help="Without either, you are asked.")
@run_option("site")
@run_option("profile", help="Browser profile folder (default: pobatch's own profile).")
@run_option("out", help="Output folder (default: next to the orders file).")
@run_option("browser")
@run_option("driver")
@click.pass_context
def start(ctx: click.Context, orders: str | None, base_url: str | None, parallel: bool | None, site: str,
          profile: str | None, out: str | None, browser: str, driver: str | None) -> None:
    """Ask for the orders file, the portal address and the mode, then run, signing in if needed.

    When the file was run before into the same output folder, one more question: continue the last
    run (Enter), refresh the archive (--refresh), or start again in a new folder.

    This is what run.bat (double-click, or a file dropped on it) and ./run.sh with no arguments do."""
    answers = ask_start(orders, base_url, parallel, out)  # the questions: pobatch.core.commands.desk
    ctx.invoke(run, orders=answers.orders, site=site, base_url=answers.base_url, parallel=answers.parallel,
               profile=profile, out=str(answers.out) if answers.out else None, browser=browser, driver=driver,
               sign_in_if_needed=True, refresh=answers.refresh)


# -- when something goes wrong at a desk (issue 25): core/commands/doctor.py, core/commands/support.py ---------------
@main.command()
@run_option("base_url", help="Portal address, e.g. https://yourcompany.coupahost.com (default: the remembered one).")
@run_option("site")
@run_option("site_file")
@click.option("--out", type=click.Path(), default=".", show_default=True,
              help="The output folder a run would write to.")
@run_option("grid", help="Also check this Selenium Grid (e.g. http://gridhost:4444).")
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
    address = base_url or remembered_address() or (get_site_default(site) if site != "coupa" else None)
    address = _portal_address(address) if address else None
    if grid:
        try:
            GridSpec(grid)  # the one rule for a Grid address
        except FatalError as exc:
            _fail(str(exc))
    if Path(out).exists() and not Path(out).is_dir():
        _fail(f"--out: '{out}' is a file; expected the output folder a run would write to")
    opts = DoctorOptions(base_url=address, site=site, site_file=site_file, browser=browser, profile=profile,
                         driver=driver, browser_binary=browser_binary, out=Path(out), grid=grid,
                         sign_in=not no_sign_in_check)
    checks = run_doctor(opts, echo=click.echo)
    click.echo(verdict_line(checks))
    sys.exit(0 if can_start(checks) else 1)


def _portal_address(text: str | None) -> PortalAddress:
    """An address that did not come through --base-url (a site's default, the remembered one), checked
    by the same rule."""
    try:
        return PortalAddress(text or "")
    except NotAPortalAddress as exc:
        _fail(f"--base-url: {exc}")


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
