"""The desk: what a person at an office PC sees around a run, from the first question to the opened results.

run.bat and run.sh stay thin and call this through `pobatch start` (a command in core/cli.py whose
questions are here: the orders file, whether to continue, refresh or start a new folder when that file
was run before into the same output folder, the portal address and the mode) and `pobatch run --sign-in-if-needed` (a run that stops at the portal's sign-in
page opens the sign-in window, waits until the person has signed in, then carries on with the same
batch). At the end of every run: one line that says how it went, and, only when a person is at the
keyboard, an offer to open the results workbook and the HTML report.
"""
from __future__ import annotations

import dataclasses
import enum
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import click

from pobatch.core.app import RunSummary
from pobatch.core.exit_codes import EXIT_INTERRUPTED, EXIT_LOGIN
from pobatch.core.portal_address import NotAPortalAddress, PortalAddress
from pobatch.core.preparation.profiles import pobatch_data_dir
from pobatch.core.run_options import RunOptions
from pobatch.core.monitoring.verdict import verdict
from pobatch.core.commands.sign_in import SignInOutcome, SignInRequest, sign_in
from pobatch.core.sites import get_site
from pobatch.core.workspace import Workspace
from pobatch.corelib.store import RunStore

log = logging.getLogger(__name__)

# After a sign-in the portal may still say no (a wrong account, a session it drops at once): ask again,
# but a portal that never lets pobatch in must not keep a person in a loop.
MAX_SIGN_INS = 3
BASE_URL_FILE = "base_url.txt"  # run.bat wrote it there too: %LOCALAPPDATA%\pobatch\base_url.txt
ADDRESS_EXAMPLE = "https://yourcompany.coupahost.com"


def interactive() -> bool:
    """A person at a terminal: never offer to open windows (or wait for an answer) otherwise."""
    try:
        return sys.stdin.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def say(text: str) -> None:
    click.echo(text)


def ask_yes_no(question: str, default: bool = True) -> bool:
    """A "(Y/N)" question as run.bat asks it; Enter takes the default."""
    while True:
        answer = click.prompt(f"{question} (Y/N)", default="Y" if default else "N", show_default=False,
                              prompt_suffix=" ").strip().lower()
        if answer in ("y", "yes", "j", "o", "s"):
            return True
        if answer in ("n", "no"):
            return False
        say("Please answer Y or N.")


# ------------------------------------------------------------------------------------------- the verdict

def open_path(path: Path) -> bool:
    """Open a file with the program the desktop uses for it; False when there is no way to."""
    try:
        if sys.platform == "win32":
            os.startfile(str(path))  # type: ignore[attr-defined]  # what `start ""` does
            return True
        opener = "open" if sys.platform == "darwin" else "xdg-open"
        if not shutil.which(opener):
            return False
        subprocess.Popen([opener, str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
        return True
    except OSError as exc:
        log.warning("could not open %s: %s", path, exc)
        return False


def offer_to_open(summary: RunSummary, ask: Callable[[str], bool] = ask_yes_no,
                  is_interactive: Callable[[], bool] = interactive) -> list[Path]:
    """Offer to open the results workbook and the report; only when a person is there to answer."""
    paths = [p for p in (summary.results_path, summary.report_path) if p and Path(p).exists()]
    if not paths or not is_interactive():
        return []
    what = "the results workbook and the report" if len(paths) == 2 else "the results workbook"
    if not ask(f"Open {what} now?"):
        return []
    opened = [p for p in paths if open_path(Path(p))]
    for p in paths:
        if p not in opened:
            say(f"Open it yourself: {p}")
    return opened


def finish_run(summary: RunSummary, on_finish: str | None = None) -> None:
    """The end of every run: the verdict, the --on-finish command, then the offer to open the results.

    The command comes before the offer: a person who walks away from the question still gets the mail."""
    say(verdict(summary))
    if on_finish:
        from pobatch.core.monitoring.on_finish import run_on_finish  # it reads the verdict from here

        run_on_finish(on_finish, summary)
    offer_to_open(summary)


# ------------------------------------------------------------------------------------------- sign-in

def run_signing_in(run_once: Callable[[], RunSummary], request: SignInRequest,
                   is_interactive: Callable[[], bool] = interactive,
                   ask: Callable[[str], bool] = ask_yes_no) -> RunSummary:
    """Run; when the run stops for a sign-in, open the sign-in window, wait for it, and run again.

    The same batch resumes: the run store keeps every finished PO, and the POs the sign-in page stopped
    are PENDING again."""
    summary = run_once()
    for _ in range(MAX_SIGN_INS):
        if summary.exit_code != EXIT_LOGIN:
            return summary
        say(f"pobatch must be signed in to {request.base_url} before it can go on; "
            "you sign in once, in a browser window that pobatch opens.")
        if is_interactive() and not ask("Open the sign-in window now?"):
            return summary
        outcome = sign_in(request, on_open=lambda _profile: say(
            "Sign in in the browser window. pobatch notices when you are signed in, closes the window and "
            "carries on with the same batch."))
        if outcome is SignInOutcome.STOPPED:  # Ctrl+C while the window was open: stopped by the user
            say("Sign-in stopped. Run the same file again when you are ready: finished POs are kept.")
            return dataclasses.replace(summary, exit_code=EXIT_INTERRUPTED)
        if outcome is not SignInOutcome.SIGNED_IN:
            say({SignInOutcome.WINDOW_CLOSED: "The sign-in window was closed before the sign-in finished.",
                 SignInOutcome.TIMED_OUT: f"No sign-in within {request.timeout / 60:.0f} minutes."}[outcome]
                + " Run the same file again when you are ready: finished POs are kept.")
            return summary
        say("Signed in. Carrying on with the same batch.")
        summary = run_once()
    return summary


def sign_in_request(site: str, base_url: str | None, kw: dict) -> SignInRequest:
    """What `pobatch run`'s own options say about where to sign in."""
    address = (base_url or get_site(site).default_base_url).rstrip("/")
    return SignInRequest(base_url=address, site=site, browser=kw["browser"], profile=kw.get("profile"),
                         driver=kw.get("driver"), binary=kw.get("browser_binary"))


# ------------------------------------------------------------------------------------------- pobatch start

def remembered_address_file() -> Path:
    return pobatch_data_dir() / BASE_URL_FILE


def remembered_address() -> str | None:
    try:
        text = remembered_address_file().read_text(encoding="utf-8-sig").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def remember_address(url: str) -> None:
    path = remembered_address_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(url + "\n", encoding="utf-8")


def normalize_address(text: str) -> str | None:
    """What a person types as a portal address, as a URL: a bare host name gets https://."""
    text = text.strip().strip('"').strip("'").strip().rstrip("/")
    if not text or any(c.isspace() for c in text):
        return None
    if "://" not in text:
        text = "https://" + text
    try:
        address = PortalAddress(text)
    except NotAPortalAddress:
        return None
    # A typed name without a dot is a slip ("acme"), unless it names this machine.
    return address if "." in (urlsplit(address).hostname or "") or address.is_local else None


def clean_path(text: str) -> str:
    """A path as terminals paste a dropped file: in quotes ("..." on Windows, '...' on Linux)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    return text.strip()


def ask_orders_file() -> Path | None:
    while True:
        text = clean_path(click.prompt("Orders file (CSV or Excel): type or paste its path, or drag the file "
                                       "into this window, then press Enter", default="", show_default=False))
        if not text:
            return None
        path = Path(text).expanduser()
        if path.is_file():
            return path
        say(f"There is no file at {path}; expected the path of a CSV or Excel file of PO numbers.")


def ask_address() -> str:
    remembered = remembered_address()
    if remembered and ask_yes_no(f"Use {remembered}?"):
        return remembered
    while True:
        url = normalize_address(click.prompt(f"Portal address (e.g. {ADDRESS_EXAMPLE})"))
        if url:
            remember_address(url)
            return url
        say(f"That is not a portal address; expected something like {ADDRESS_EXAMPLE}.")


def ask_parallel() -> bool:
    while True:
        answer = click.prompt("Sequential (S) or parallel (P)?", prompt_suffix=" ").strip().lower()
        if answer in ("s", "p"):
            return answer == "p"
        say("Please answer S or P.")


@dataclasses.dataclass(frozen=True)
class StartAnswers:
    """What `pobatch start` will run: the answers to its questions and what the command line gave."""
    orders: Path
    base_url: str
    parallel: bool
    refresh: bool = False  # --refresh: fetch the attachments that are new since the last run
    out: Path | None = None  # the output folder; None: the run's default next to the orders file


class RunAgain(str, enum.Enum):
    """The answers to "this file was run before": the letter a person types is the value."""
    CONTINUE = "c"
    REFRESH = "r"
    NEW_FOLDER = "n"


def default_out(orders: Path) -> Path:
    """The output folder a run of `orders` uses without --out (the run's own rule, RunOptions.out_dir)."""
    return RunOptions(orders=orders).out_dir()


def previous_run(orders: Path, out: Path) -> dict | None:
    """The last run of this orders file into `out`, from the run store there; None when there is none.

    The store keeps the orders path as it was given (maybe relative, maybe a folder since moved), so
    the file name decides. A store that cannot be read asks nothing: the run itself will say why."""
    path = Workspace(out.resolve()).store_path
    if not path.is_file():
        return None
    try:
        with RunStore(path) as store:
            runs = [store.run(r["run_id"]) for r in store.runs()]
    except (sqlite3.Error, OSError) as exc:
        log.debug("run store %s not read: %s", path, exc)
        return None
    wanted = os.path.normcase(orders.name)
    mine = [r for r in runs if r and os.path.normcase(Path(str(r["args"].get("orders") or "")).name) == wanted]
    return mine[-1] if mine else None


def next_free_folder(out: Path) -> Path:
    """A new output folder next to `out`: `<name>-2`, `-3`, ... the first that does not exist yet."""
    n = 2
    while (candidate := out.with_name(f"{out.name}-{n}")).exists():
        n += 1
    return candidate


def ask_run_again(orders: Path, out: Path, previous: dict) -> RunAgain:
    """The one question when a file was run before into the same folder. Enter continues, as a rerun
    always did; refresh fetches what is new since; a new folder starts from nothing, deleting nothing."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(previous.get("started") or 0))
    say(f"{orders.name} was run before into {out} (last run {when}).")
    say("  C = continue the last run: finish only what is missing (Enter)")
    say("  R = refresh the archive: look at every PO again and download the attachments that are new")
    say(f"  N = start again in a new folder, {next_free_folder(out).name} (nothing is deleted)")
    while True:
        answer = click.prompt("Continue (C), refresh (R) or new folder (N)?", default="c", show_default=False,
                              prompt_suffix=" ").strip().lower()
        if answer in {a.value for a in RunAgain}:
            return RunAgain(answer)
        say("Please answer C, R or N.")


def ask_start(orders: str | None, base_url: str | None, parallel: bool | None,
              out: str | None = None) -> StartAnswers:
    """`pobatch start`'s questions: the orders file, what to do when it was run before into the same
    output folder (continue, refresh, or a new folder), the portal address and the mode, each asked
    only when needed. A missing answer exits 2 (click.UsageError, or "No file chosen.")."""
    path = Path(clean_path(orders)) if orders else ask_orders_file()
    if path is None:
        say("No file chosen.")
        sys.exit(2)
    if not path.is_file():
        raise click.UsageError(f"ORDERS: there is no file at {path}; expected a CSV or Excel file of PO numbers")
    out_dir = Path(out) if out else None
    folder = (out_dir or default_out(path)).resolve()
    refresh = False
    previous = previous_run(path, folder)
    if previous is not None:  # asked right after the file, where the person has it in mind
        choice = ask_run_again(path, folder, previous)
        refresh = choice is RunAgain.REFRESH
        if choice is RunAgain.NEW_FOLDER:
            out_dir = next_free_folder(folder)
            say(f"The new run writes to {out_dir}.")
    address = normalize_address(base_url) if base_url else ask_address()
    if not address:
        raise click.UsageError(f"--base-url: '{base_url}' is not a portal address; expected e.g. {ADDRESS_EXAMPLE}")
    if parallel is None:
        parallel = ask_parallel()
    return StartAnswers(path, address, parallel, refresh=refresh, out=out_dir)
