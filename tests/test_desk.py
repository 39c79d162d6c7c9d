"""pobatch.core.commands.desk: the verdict line, the offer to open the results, pobatch start's questions, and the
sign-in-then-carry-on loop. Pure logic: the run and the sign-in window are stand-ins here; the real
ones run end to end in tests/test_desk_sign_in.py."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from pobatch.core.app import RunSummary
import pobatch.core.cli as cli
from pobatch.core.cli import main
import pobatch.core.commands.desk as desk
from pobatch.core.commands.sign_in import SignInOutcome, SignInRequest
from pobatch.core.status import Status
from pobatch.corelib.browser.factory import default_browser


def summary(exit_code: int = 0, results: Path | None = None, report: Path | None = None, **counts: int) -> RunSummary:
    full = {s.value: 0 for s in Status}
    full.update(counts)
    return RunSummary("run1", exit_code, full, {}, results, Path("."), report_path=report)


# ------------------------------------------------------------------------------------------------ verdict

@pytest.mark.parametrize("counts,exit_code,expected", [
    ({"COMPLETED": 1900, "NO_ATTACHMENTS": 40, "FAILED": 35, "PO_NOT_FOUND": 25}, 1,
     "1,940 of 2,000 POs done; 60 need attention, see the 'Attention' sheet in orders_results.xlsx."),
    ({"COMPLETED": 3}, 0, "3 of 3 POs done; nothing needs attention."),
    ({"COMPLETED": 1, "PENDING": 1}, 3,
     "1 of 2 POs done; 1 needs attention, see the 'Attention' sheet in orders_results.xlsx (sign in first)."),
    ({"PENDING": 1}, 3, "0 of 1 PO done; 1 needs attention, see the 'Attention' sheet in orders_results.xlsx "
                        "(sign in first)."),
])
def test_verdict_is_one_plain_line(counts, exit_code, expected):
    assert desk.verdict(summary(exit_code, Path("out/orders_results.xlsx"), **counts)) == expected


# ------------------------------------------------------------------------------------------------ the offer

def opener_on_path(tmp_path: Path, monkeypatch) -> Path:
    log = tmp_path / "opened.txt"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "xdg-open"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> "{log}"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir))
    return log


def results_files(tmp_path: Path) -> tuple[Path, Path]:
    results, report = tmp_path / "o_results.xlsx", tmp_path / "o_report.html"
    results.write_bytes(b"x")
    report.write_text("<html></html>")
    return results, report


def test_no_offer_when_nobody_is_at_the_terminal(tmp_path):
    results, report = results_files(tmp_path)

    def never(question: str) -> bool:
        raise AssertionError("asked although nobody is there")

    assert desk.offer_to_open(summary(0, results, report), ask=never, is_interactive=lambda: False) == []


@pytest.mark.skipif(desk.sys.platform == "win32", reason="xdg-open is the Linux route")
def test_yes_opens_the_workbook_and_the_report_with_the_desktops_program(tmp_path, monkeypatch):
    from eventually import wait_for

    log = opener_on_path(tmp_path, monkeypatch)
    results, report = results_files(tmp_path)
    questions: list[str] = []
    opened = desk.offer_to_open(summary(0, results, report), ask=lambda q: questions.append(q) or True,
                                is_interactive=lambda: True)
    assert questions == ["Open the results workbook and the report now?"]
    assert opened == [results, report]
    wait_for(lambda: log.exists() and sorted(log.read_text().splitlines()) == sorted([str(results), str(report)]),
             60, "xdg-open to be called for both files")


def test_no_opens_nothing_and_a_missing_report_is_not_offered(tmp_path, monkeypatch):
    log = opener_on_path(tmp_path, monkeypatch)
    results, _report = results_files(tmp_path)
    questions: list[str] = []
    assert desk.offer_to_open(summary(0, results, tmp_path / "gone.html"),
                              ask=lambda q: questions.append(q) or False, is_interactive=lambda: True) == []
    assert questions == ["Open the results workbook now?"] and not log.exists()


def test_without_an_opener_the_path_is_shown(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no xdg-open anywhere
    results, report = results_files(tmp_path)
    if desk.sys.platform == "win32":
        pytest.skip("Windows always has os.startfile")
    assert desk.offer_to_open(summary(0, results, report), ask=lambda q: True, is_interactive=lambda: True) == []
    assert f"Open it yourself: {results}" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ answers

@pytest.mark.parametrize("typed,expected", [
    ("https://acme.coupahost.com/", "https://acme.coupahost.com"),
    ("acme.coupahost.com", "https://acme.coupahost.com"),
    ('  "https://acme.coupahost.com"  ', "https://acme.coupahost.com"),
    ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
    ("http://localhost:8765", "http://localhost:8765"),
    ("", None), ("acme", None), ("ftp://acme.com", None), ("https://acme .com", None),
])
def test_portal_address_as_typed(typed, expected):
    assert desk.normalize_address(typed) == expected


@pytest.mark.parametrize("typed,expected", [
    ('"C:\\Users\\me\\PO list.xlsx"', "C:\\Users\\me\\PO list.xlsx"),  # Windows terminals quote a dropped file
    ("'/home/me/PO list.csv' ", "/home/me/PO list.csv"),  # so do Linux ones
    ("/home/me/po.csv", "/home/me/po.csv"),
])
def test_a_dropped_or_pasted_path_loses_its_quotes(typed, expected):
    assert desk.clean_path(typed) == expected


# ------------------------------------------------------------------------------------------------ pobatch start

@pytest.fixture
def fake_run(monkeypatch, tmp_path):
    """pobatch start's questions without a browser: the run itself is a stand-in that records its options."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "data"))
    calls: list[dict] = []

    def run(orders, **kw):
        calls.append({"orders": orders, **kw})
        return summary(0, None, **{"COMPLETED": 2})

    monkeypatch.setattr(cli, "_run", run)
    return calls


def orders_file(tmp_path: Path) -> Path:
    p = tmp_path / "my orders.csv"
    p.write_text("PO_NUMBER\n100001\n")
    return p


def test_start_asks_file_address_and_mode_then_runs_signing_in_if_needed(tmp_path, fake_run):
    orders = orders_file(tmp_path)
    result = CliRunner().invoke(main, ["start"], input=f"{tmp_path / 'nope.csv'}\n'{orders}'\nacme.coupahost.com\n"
                                                       "x\np\n")
    assert result.exit_code == 0, result.output
    assert f"There is no file at {tmp_path / 'nope.csv'}" in result.output
    assert "Portal address (e.g. https://yourcompany.coupahost.com)" in result.output
    assert "Please answer S or P." in result.output
    assert len(fake_run) == 1
    call = fake_run[0]
    assert call["orders"] == orders and call["base_url"] == "https://acme.coupahost.com"
    assert call["parallel"] is True and call["site"] == "coupa" and call["browser"] == default_browser()
    assert "2 of 2 POs done; nothing needs attention." in result.output
    assert desk.remembered_address() == "https://acme.coupahost.com"


def test_start_offers_the_remembered_address_and_n_changes_it(tmp_path, fake_run):
    desk.remember_address("https://typo.coupahost.com")
    orders = orders_file(tmp_path)
    result = CliRunner().invoke(main, ["start", str(orders)], input="n\nhttps://acme.coupahost.com\ns\n")
    assert result.exit_code == 0, result.output
    assert "Use https://typo.coupahost.com? (Y/N)" in result.output
    assert fake_run[0]["base_url"] == "https://acme.coupahost.com" and fake_run[0]["parallel"] is False
    assert desk.remembered_address() == "https://acme.coupahost.com"
    result = CliRunner().invoke(main, ["start", str(orders), "--sequential", "--browser", "chrome"],
                                input="\n")  # Enter = yes
    assert fake_run[1]["base_url"] == "https://acme.coupahost.com", result.output
    assert fake_run[1]["browser"] == "chrome"


def test_start_reads_the_address_run_bat_remembered(tmp_path, fake_run):
    path = desk.remembered_address_file()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"https://acme.coupahost.com\r\n")  # what `> file echo %BASEURL%` wrote
    assert desk.remembered_address() == "https://acme.coupahost.com"


def test_start_without_a_file_says_so_and_exits_2(tmp_path, fake_run):
    result = CliRunner().invoke(main, ["start"], input="\n")
    assert result.exit_code == 2 and "No file chosen." in result.output and not fake_run


def test_start_with_a_missing_file_is_a_usage_error(tmp_path, fake_run):
    result = CliRunner().invoke(main, ["start", str(tmp_path / "missing.csv"), "--base-url", "https://a.b.com",
                                       "--sequential"])
    assert result.exit_code == 2 and "there is no file at" in result.output and not fake_run
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------------------------ sign-in loop

REQUEST = SignInRequest(base_url="https://acme.coupahost.com", timeout=60)


def scripted_runs(*codes: int):
    runs: list[int] = []

    def run_once():
        runs.append(len(runs))
        return summary(codes[min(len(runs) - 1, len(codes) - 1)], None, COMPLETED=1)
    return run_once, runs


def test_a_sign_in_then_the_same_batch_again(monkeypatch, capsys):
    windows: list[SignInRequest] = []
    monkeypatch.setattr(desk, "sign_in", lambda req, on_open=None: windows.append(req) or SignInOutcome.SIGNED_IN)
    run_once, runs = scripted_runs(3, 0)
    result = desk.run_signing_in(run_once, REQUEST, is_interactive=lambda: False)
    assert result.exit_code == 0 and len(runs) == 2 and windows == [REQUEST]
    out = capsys.readouterr().out
    assert "pobatch must be signed in to https://acme.coupahost.com before it can go on" in out
    assert "Signed in. Carrying on with the same batch." in out


def test_no_sign_in_needed_opens_no_window(monkeypatch):
    monkeypatch.setattr(desk, "sign_in", lambda *a, **k: pytest.fail("no window was needed"))
    run_once, runs = scripted_runs(1)
    assert desk.run_signing_in(run_once, REQUEST, is_interactive=lambda: True).exit_code == 1 and len(runs) == 1


@pytest.mark.parametrize("outcome,said", [
    (SignInOutcome.WINDOW_CLOSED, "The sign-in window was closed before the sign-in finished."),
    (SignInOutcome.TIMED_OUT, "No sign-in within 1 minutes."),
])
def test_no_sign_in_keeps_exit_3(monkeypatch, capsys, outcome, said):
    monkeypatch.setattr(desk, "sign_in", lambda req, on_open=None: outcome)
    run_once, runs = scripted_runs(3)
    assert desk.run_signing_in(run_once, REQUEST, is_interactive=lambda: False).exit_code == 3 and len(runs) == 1
    assert said in capsys.readouterr().out


def test_a_person_who_says_no_gets_no_window(monkeypatch):
    monkeypatch.setattr(desk, "sign_in", lambda *a, **k: pytest.fail("the person said no"))
    run_once, runs = scripted_runs(3)
    result = desk.run_signing_in(run_once, REQUEST, is_interactive=lambda: True, ask=lambda q: False)
    assert result.exit_code == 3 and len(runs) == 1


def test_a_portal_that_never_lets_in_does_not_loop_for_ever(monkeypatch):
    monkeypatch.setattr(desk, "sign_in", lambda req, on_open=None: SignInOutcome.SIGNED_IN)
    run_once, runs = scripted_runs(3)
    assert desk.run_signing_in(run_once, REQUEST, is_interactive=lambda: False).exit_code == 3
    assert len(runs) == 1 + desk.MAX_SIGN_INS


def test_run_passes_its_browser_and_profile_to_the_sign_in_window(monkeypatch, tmp_path):
    seen: list[SignInRequest] = []
    monkeypatch.setattr(desk, "sign_in", lambda req, on_open=None: seen.append(req) or SignInOutcome.WINDOW_CLOSED)
    monkeypatch.setattr(cli, "_run", lambda orders, **kw: summary(3, None, PENDING=1))
    orders = orders_file(tmp_path)
    result = CliRunner().invoke(main, ["run", str(orders), "--base-url", "https://acme.coupahost.com/",
                                       "--profile", str(tmp_path / "p"), "--browser", "chrome",
                                       "--sign-in-if-needed"])
    assert result.exit_code == 3, result.output
    assert seen == [SignInRequest(base_url="https://acme.coupahost.com", site="coupa", browser="chrome",
                                  profile=str(tmp_path / "p"))]


def test_no_screen_says_so_instead_of_a_browser_that_cannot_start(monkeypatch, tmp_path):
    from pobatch.core.commands import sign_in as sign_in_module
    from pobatch.corelib.errors import FatalError

    monkeypatch.setattr(sign_in_module.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv(sign_in_module.HEADLESS_ENV, raising=False)
    with pytest.raises(FatalError, match="no screen here to show the sign-in window on"):
        sign_in_module.sign_in(SignInRequest(base_url="https://acme.coupahost.com", profile=str(tmp_path / "p")))
    assert not (tmp_path / "p").exists()  # nothing started, nothing created


def test_ctrl_c_in_the_sign_in_window_is_stopped_by_the_user(monkeypatch, capsys):
    monkeypatch.setattr(desk, "sign_in", lambda req, on_open=None: SignInOutcome.STOPPED)
    run_once, runs = scripted_runs(3)
    assert desk.run_signing_in(run_once, REQUEST, is_interactive=lambda: False).exit_code == 130 and len(runs) == 1
    assert "Sign-in stopped." in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ a file run before

def earlier_run(orders: Path, out: Path | None = None, orders_arg: str | None = None) -> Path:
    """A run store in the output folder that says `orders` was run there (as MainApp writes it)."""
    from pobatch.core.workspace import Workspace
    from pobatch.corelib.store import RunStore

    out = out or tmp_default_out(orders)
    with RunStore(Workspace(out).store_path) as store:
        run_id = store.begin_run("sequential", {"orders": orders_arg or str(orders), "site": "coupa"})
        store.finish_run(run_id, "DONE")
    return out


def tmp_default_out(orders: Path) -> Path:
    return orders.parent / f"{orders.stem}_downloads"


def start(orders: Path, answers: str, *extra: str):
    return CliRunner().invoke(main, ["start", str(orders), "--base-url", "https://acme.coupahost.com",
                                     "--sequential", *extra], input=answers)


def test_a_file_never_run_asks_nothing_more(tmp_path, fake_run):
    orders = orders_file(tmp_path)
    result = start(orders, "")
    assert result.exit_code == 0, result.output
    assert "was run before" not in result.output
    assert fake_run[0]["refresh"] is False and fake_run[0]["out"] is None


@pytest.mark.parametrize("typed,refresh", [("", False), ("c", False), ("C", False), ("r", True), ("R", True)])
def test_a_file_run_before_asks_continue_or_refresh(tmp_path, fake_run, typed, refresh):
    orders = orders_file(tmp_path)
    out = earlier_run(orders)
    result = start(orders, typed + "\n")
    assert result.exit_code == 0, result.output
    assert f"my orders.csv was run before into {out.resolve()} (last run " in result.output
    assert "C = continue the last run: finish only what is missing (Enter)" in result.output
    assert "R = refresh the archive: look at every PO again and download the attachments that are new" in result.output
    assert "N = start again in a new folder, my orders_downloads-2 (nothing is deleted)" in result.output
    assert "Continue (C), refresh (R) or new folder (N)?" in result.output
    assert len(fake_run) == 1
    assert fake_run[0]["refresh"] is refresh and fake_run[0]["out"] is None  # the same folder as before


def test_a_new_folder_is_the_first_free_one_next_to_the_old_and_nothing_is_deleted(tmp_path, fake_run):
    orders = orders_file(tmp_path)
    out = earlier_run(orders)
    (tmp_path / "my orders_downloads-2").mkdir()  # taken: by an earlier "new folder", or by the person
    result = start(orders, "x\nn\n")
    assert result.exit_code == 0, result.output
    assert "Please answer C, R or N." in result.output
    new = (tmp_path / "my orders_downloads-3").resolve()
    assert f"The new run writes to {new}." in result.output
    assert fake_run[0]["out"] == str(new) and fake_run[0]["refresh"] is False
    assert (out / ".pobatch" / "runs.sqlite").is_file() and (tmp_path / "my orders_downloads-2").is_dir()


def test_the_question_follows_out(tmp_path, fake_run):
    orders = orders_file(tmp_path)
    out = earlier_run(orders, tmp_path / "archive", orders_arg="my orders.csv")  # a relative path, as typed
    result = start(orders, "n\n", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert f"was run before into {out.resolve()}" in result.output
    assert fake_run[0]["out"] == str((tmp_path / "archive-2").resolve())
    result = start(orders, "r\n", "--out", str(out))
    assert fake_run[1]["out"] == str(out) and fake_run[1]["refresh"] is True, result.output


def test_another_file_run_into_the_folder_asks_nothing(tmp_path, fake_run):
    orders = orders_file(tmp_path)
    earlier_run(orders, orders_arg=str(tmp_path / "other.csv"))
    result = start(orders, "")
    assert result.exit_code == 0 and "was run before" not in result.output, result.output
    assert fake_run[0]["refresh"] is False


def test_a_store_that_cannot_be_read_asks_nothing_and_shows_no_traceback(tmp_path, fake_run):
    orders = orders_file(tmp_path)
    store = tmp_default_out(orders) / ".pobatch" / "runs.sqlite"
    store.parent.mkdir(parents=True)
    store.write_bytes(b"not a database at all" * 100)
    result = start(orders, "")
    assert result.exit_code == 0 and "was run before" not in result.output, result.output
    assert "Traceback" not in result.output


def test_the_question_comes_right_after_the_file_before_the_address(tmp_path, fake_run):
    orders = orders_file(tmp_path)
    earlier_run(orders)
    result = CliRunner().invoke(main, ["start"], input=f"{orders}\nr\nacme.coupahost.com\ns\n")
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.index("Orders file") < text.index("was run before") < text.index("Portal address")
    assert fake_run[0]["refresh"] is True and fake_run[0]["parallel"] is False


@pytest.mark.skipif(desk.sys.platform == "win32", reason="the pty driver is POSIX")
def test_at_a_real_terminal_the_question_comes_where_the_file_is_picked(tmp_path):
    """`pobatch start` as run.sh and run.bat start it, under a pseudo-terminal: the file, then the
    question, then the run. The portal address answers nobody, so the run stops at its pre-flight check
    (exit 2) before any browser could start."""
    import os
    import sys

    from desk_pty import PtySession

    orders = orders_file(tmp_path)
    out = earlier_run(orders)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(XDG_DATA_HOME=str(tmp_path / "data"), LOCALAPPDATA=str(tmp_path / "data"))
    session = PtySession([sys.executable, "-m", "pobatch.core", "start", "--base-url", "http://127.0.0.1:9",
                          "--sequential"], env=env, cwd=tmp_path)
    try:
        session.expect(r"Orders file \(CSV or Excel\)", 60)
        session.send(f"'{orders}'")
        session.expect(r"my orders\.csv was run before into .*my orders_downloads \(last run ", 60)
        session.expect(r"N = start again in a new folder, my orders_downloads-2 \(nothing is deleted\)", 60)
        session.expect(r"Continue \(C\), refresh \(R\) or new folder \(N\)\?", 60)
        session.send("n")
        session.expect(r"The new run writes to .*my orders_downloads-2\.", 60)
        session.expect(r"the portal http://127\.0\.0\.1:9 cannot be reached", 60)
        assert session.wait(60) == 2
        assert "Traceback" not in session.text
    finally:
        session.close()
    assert (out / ".pobatch" / "runs.sqlite").is_file()  # the old folder is untouched
