"""pobatch command line: each command is a function that reads like its help text."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from core import __version__
from corelib.browser import BROWSERS, default_browser
from corelib.errors import FatalError

log = logging.getLogger("pobatch")

EXIT_BAD_INPUT, EXIT_LOGIN, EXIT_INTERRUPTED = 2, 3, 130


def _setup_logging(verbose: int) -> None:
    from rich.logging import RichHandler

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(message)s", datefmt="%H:%M:%S",
                        handlers=[RichHandler(show_path=False, rich_tracebacks=False, markup=False)])
    for noisy in ("selenium", "urllib3", "WDM"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _fail(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def _workers_option(value: str | None) -> int | None:
    if value is None or value == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a number; expected a whole number from 1 to 32, or 'auto'")
    if not 1 <= n <= 32:
        raise click.BadParameter(f"{n} is out of range; expected a whole number from 1 to 32, or 'auto'")
    return n


def browser_options(f):
    """Options shared by every command that starts a browser."""
    f = click.option("--driver", type=click.Path(dir_okay=False), help="Path of msedgedriver/chromedriver.")(f)
    f = click.option("--browser-binary", type=click.Path(dir_okay=False), help="Path of the browser executable.")(f)
    f = click.option("--profile", help="Browser profile folder to start from; 'browser' = the browser's own "
                     "profile. Default: pobatch's own profile.")(f)
    f = click.option("--browser", type=click.Choice(BROWSERS), default=default_browser, show_default=True,
                     help="Which browser to drive.")(f)
    return f


def run_options(f):
    f = click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")(f)
    f = click.option("--po-timeout", type=click.FloatRange(10, 3600), default=180, show_default=True,
                     help="Seconds one PO attempt may take before its browser is restarted.")(f)
    f = click.option("--max-attempts", type=click.IntRange(1, 10), default=3, show_default=True,
                     help="Attempts per PO for transient errors (timeouts, crashes, HTTP 5xx).")(f)
    f = click.option("--workers", default=None, callback=lambda c, p, v: _workers_option(v),
                     help="Parallel workers: a number or 'auto'.  [default: auto]")(f)
    f = click.option("--parallel/--sequential", default=False, help="Run several browsers at once.")(f)
    f = click.option("--headless/--visible", default=True, show_default=True,
                     help="Hide the browser window, or show it.")(f)
    f = click.option("--force", is_flag=True, help="Redo POs that are already COMPLETED.")(f)
    f = browser_options(f)
    f = click.option("--out", type=click.Path(file_okay=False), help="Output folder. "
                     "Default: <orders file name>_downloads next to the orders file.")(f)
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
@click.option("--site", type=click.Choice(["coupa", "demo"]), default="coupa", show_default=True,
              help="Which portal definition to use.")
@click.option("--base-url", help="Portal address, e.g. https://yourcompany.coupahost.com")
@click.option("--sheet", help="Excel sheet to read (default: PO_Data if present, else the first).")
@run_options
def run(orders: str, site: str, base_url: str | None, sheet: str | None, **kw) -> None:
    """Process every PO in ORDERS (CSV or Excel) and download its attachments."""
    sys.exit(_run(Path(orders), site=site, base_url=base_url, sheet=sheet, **kw).exit_code)


def _run(orders: Path, *, verbose: int = 0, local_only: bool = False, **kw):
    from core.app import MainApp, RunOptions
    from core.console import ConsoleView
    from core.orders import OrdersError

    _setup_logging(verbose)
    if kw.get("site") == "coupa" and not kw.get("base_url"):
        _fail("--base-url is required for --site coupa; expected your tenant's address, e.g. "
              "https://yourcompany.coupahost.com")
    opts = RunOptions(orders=orders, out=Path(kw["out"]) if kw.get("out") else None, site=kw["site"],
                      base_url=kw.get("base_url"), browser=kw["browser"], profile=kw.get("profile"),
                      headless=kw["headless"], driver=kw.get("driver"), browser_binary=kw.get("browser_binary"),
                      sheet=kw.get("sheet"), force=kw["force"], parallel=kw["parallel"], workers=kw["workers"],
                      po_timeout=kw["po_timeout"], max_attempts=kw["max_attempts"], local_only=local_only)
    try:
        summary = MainApp(opts, view=ConsoleView()).run()
    except OrdersError as exc:
        _fail(str(exc))
    except FatalError as exc:
        _fail(str(exc))
    return summary


@main.command()
@click.option("--out", type=click.Path(file_okay=False), default="demo_output", show_default=True,
              help="Output folder for the demo batch.")
@click.option("--parallel/--sequential", default=False, help="Run several browsers at once.")
@click.option("--workers", default=None, callback=lambda c, p, v: _workers_option(v),
              help="Parallel workers: a number or 'auto'.")
@click.option("--headless/--visible", default=True, show_default=True, help="Hide or show the browser.")
@click.option("--scenario", type=click.Path(dir_okay=False, exists=True), help="Demo scenario file.")
@click.option("--force", is_flag=True, help="Redo POs that are already COMPLETED.")
@browser_options
@click.option("-v", "--verbose", count=True, help="More log output.")
def demo(out: str, scenario: str | None, profile: str | None, **kw) -> None:
    """Run the bundled demo batch end to end against the built-in demo portal."""
    from core.demo_portal import DemoPortal, sample_orders_path
    from core.demo_login import prepare_demo_profile

    _setup_logging(kw["verbose"])
    out_dir = Path(out).resolve()
    with DemoPortal(scenario).start() as portal:
        click.echo(f"Demo portal running at {portal.base_url}", err=True)
        profile_dir = Path(profile) if profile else out_dir / ".pobatch" / "demo-profile"
        try:
            prepare_demo_profile(profile_dir, portal.base_url, browser=kw["browser"], driver=kw.get("driver"),
                                 binary=kw.get("browser_binary"))
        except FatalError as exc:
            _fail(str(exc))
        summary = _run(sample_orders_path(), site="demo", base_url=portal.base_url, sheet=None, out=str(out_dir),
                       profile=str(profile_dir), po_timeout=120, max_attempts=3, local_only=True, **kw)
        expected = portal.expected_outcomes()
    # The demo knows the truth: it succeeds when every PO got the status its scenario says is right,
    # including the POs that are meant to fail.
    wrong = [f"PO {po}: got {o.status.value} {o.reason}".rstrip() + f", expected {' '.join(expected[po]).strip()}"
             for po, o in sorted(summary.outcomes.items())
             if po in expected and (o.status.value, o.reason) != tuple(expected[po])]
    if summary.exit_code in (EXIT_LOGIN, EXIT_INTERRUPTED):
        sys.exit(summary.exit_code)
    if wrong:
        click.echo("Demo check failed:\n  " + "\n  ".join(wrong), err=True)
        sys.exit(1)
    click.echo(f"Demo check: all {len(summary.outcomes)} POs got the status the scenario expects.", err=True)
    sys.exit(0)


@main.command("demo-portal")
@click.option("--scenario", type=click.Path(dir_okay=False, exists=True), help="Scenario file (JSON).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port on 127.0.0.1.")
def demo_portal(scenario: str | None, port: int) -> None:
    """Start the demo portal alone, to click through in a browser."""
    from core.demo_portal import main as portal_main

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    portal_main(scenario, port, "127.0.0.1")


@main.command()
@click.option("--site", type=click.Choice(["coupa", "demo"]), default="coupa", show_default=True)
@click.option("--base-url", required=True, help="Portal address, e.g. https://yourcompany.coupahost.com")
@browser_options
def login(site: str, base_url: str, browser: str, profile: str | None, driver: str | None,
          browser_binary: str | None) -> None:
    """Open the portal in a visible browser on pobatch's profile so you can sign in once."""
    from core.demo_login import interactive_login

    _setup_logging(0)
    try:
        interactive_login(base_url, browser=browser, profile=profile, driver=driver, binary=browser_binary)
    except FatalError as exc:
        _fail(str(exc))


if __name__ == "__main__":  # pragma: no cover
    main()
