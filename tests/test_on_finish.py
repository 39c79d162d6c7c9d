"""--on-finish CMD (issue 22): the command runs once when a run ends, with the results in POBATCH_*
variables, and its own trouble never changes the run's exit code.

The command is always a real one: a small Python script run by this interpreter through the
platform's shell, writing the environment it got to a JSON file. The variable set and the failure
cases call the hook directly with RunSummary objects (fast, no browser); the CLI cases replace the run
itself with a stand-in (as tests/test_desk.py does); the end-to-end cases run `pobatch demo` against
the demo portal with real headless Chromium.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import pobatch.core.cli as cli
import pobatch.core.commands.desk as desk
from pobatch.core.monitoring import on_finish
from pobatch.core.app import RunSummary
from pobatch.core.cli import main
from pobatch.core.monitoring.on_finish import hook_environment, outcome_word, run_on_finish
from pobatch.core.commands.sign_in import SignInOutcome
from pobatch.core.status import Status

from conftest import CHROMEDRIVER

DUMP = """\
import json, os, sys
target = sys.argv[1]
seen = json.load(open(target)) if os.path.exists(target) else []
seen.append({k: v for k, v in os.environ.items() if k.startswith("POBATCH_")})
json.dump(seen, open(target, "w"))
sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
"""


def q(path: str | Path) -> str:
    """A path quoted for the platform's shell (cmd.exe and /bin/sh both take double quotes here)."""
    return f'"{path}"'


def hook(tmp_path: Path, exit_with: int = 0) -> tuple[str, Path]:
    """A real command that writes down the POBATCH_* variables of each call, and exits `exit_with`."""
    script, target = tmp_path / "dump_env.py", tmp_path / "hook_calls.json"
    script.write_text(DUMP, encoding="utf-8")
    return f"{q(sys.executable)} {q(script)} {q(target)} {exit_with}", target


def calls(target: Path) -> list[dict[str, str]]:
    return json.loads(target.read_text()) if target.exists() else []


def summary(exit_code: int = 0, tmp: Path = Path("."), message: str = "", **counts: int) -> RunSummary:
    full = {s.value: 0 for s in Status}
    full.update(counts)
    return RunSummary("20261207-070000-abc123", exit_code, full, {}, tmp / "o_results.xlsx", tmp, message,
                      report_path=tmp / "o_report.html", log_path=tmp / "run.log", checked=5, new_files=4,
                      new_file_pos=2)


# ------------------------------------------------------------------------------------------------ the variables

def test_the_command_gets_every_variable(tmp_path):
    command, target = hook(tmp_path)
    s = summary(1, tmp_path, COMPLETED=3, FAILED=1, NO_ATTACHMENTS=1)
    assert run_on_finish(command, s) == 0
    [env] = calls(target)
    expected = {
        "POBATCH_EXIT_CODE": "1", "POBATCH_OUTCOME": "incomplete", "POBATCH_RUN_ID": "20261207-070000-abc123",
        "POBATCH_OUT_DIR": str(tmp_path), "POBATCH_WORKBOOK": str(tmp_path / "o_results.xlsx"),
        "POBATCH_REPORT": str(tmp_path / "o_report.html"), "POBATCH_LOG": str(tmp_path / "run.log"),
        "POBATCH_TOTAL": "5", "POBATCH_NEW_FILES": "4", "POBATCH_NEW_FILE_POS": "2", "POBATCH_CHECKED": "5",
        "POBATCH_MESSAGE": "5 POs checked, 4 new files in 2 POs; 4 of 5 POs done; 1 needs attention, see the "
                           "'Attention' sheet in o_results.xlsx.",
    }
    expected.update({f"POBATCH_{s.value}": "0" for s in Status})
    expected.update(POBATCH_COMPLETED="3", POBATCH_FAILED="1", POBATCH_NO_ATTACHMENTS="1")
    ours = {k: v for k, v in env.items() if k in expected or k not in os.environ}
    assert ours == expected


@pytest.mark.parametrize("code,word", [(0, "ok"), (1, "incomplete"), (3, "sign_in_required"), (4, "stopped"),
                                       (130, "interrupted")])
def test_the_outcome_word_follows_the_exit_code(tmp_path, code, word):
    command, target = hook(tmp_path)
    assert run_on_finish(command, summary(code, tmp_path, PENDING=1)) == 0
    assert calls(target)[0]["POBATCH_EXIT_CODE"] == str(code) and calls(target)[0]["POBATCH_OUTCOME"] == word
    assert outcome_word(code) == word


def test_the_message_is_one_line_with_the_runs_own_words(tmp_path):
    env = hook_environment(summary(3, tmp_path, "The portal asks for a sign-in:\n  run pobatch login.",
                                   COMPLETED=1, PENDING=1), base={})
    assert env["POBATCH_MESSAGE"] == ("5 POs checked, 4 new files in 2 POs; 1 of 2 POs done; 1 needs attention, "
                                      "see the 'Attention' sheet in o_results.xlsx (sign in first). The portal asks for a sign-in: run pobatch "
                                      "login.")
    assert env["POBATCH_OUTCOME"] == "sign_in_required"


def test_missing_paths_are_empty_and_the_rest_of_the_environment_stays(tmp_path):
    s = RunSummary("r", 0, {"COMPLETED": 1}, {}, None, tmp_path)
    env = hook_environment(s, base={"PATH": "/x", "POBATCH_PROFILES_ROOT": "/p"})
    assert env["POBATCH_WORKBOOK"] == env["POBATCH_REPORT"] == env["POBATCH_LOG"] == ""
    assert env["PATH"] == "/x" and env["POBATCH_PROFILES_ROOT"] == "/p" and env["POBATCH_PENDING"] == "0"


def test_the_log_has_the_commands_start_and_result(tmp_path):
    command, _ = hook(tmp_path, exit_with=5)
    s = summary(0, tmp_path, COMPLETED=1)
    s.log_path.write_text("# pobatch run r\n", encoding="utf-8")
    run_on_finish(command, s)
    text = s.log_path.read_text(encoding="utf-8")
    assert "on_finish_start" in text and "on_finish_end" in text and "exit 5" in text


# ------------------------------------------------------------------------------------------------ its own trouble

def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_command_that_is_not_found_is_one_warning(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    result = run_on_finish("pobatch-no-such-command-at-all", summary(0, tmp_path, COMPLETED=1))
    assert result not in (0, None)
    assert warnings_of(caplog) == [f"the --on-finish command failed with exit code {result}; the run's exit code "
                                   "stays 0"]


def test_a_command_that_fails_is_one_warning_with_its_exit_code(tmp_path, caplog):
    command, target = hook(tmp_path, exit_with=7)
    assert run_on_finish(command, summary(3, tmp_path, PENDING=1)) == 7
    assert len(calls(target)) == 1
    assert warnings_of(caplog) == ["the --on-finish command failed with exit code 7; the run's exit code stays 3"]


def test_a_command_that_hangs_is_stopped_with_what_it_started(tmp_path, caplog):
    """The shell is killed with its children: `sleep; echo` makes /bin/sh fork the Python that sleeps
    (the autouse no_leftovers fixture fails the test if it outlives the hook)."""
    sleeper = f"{q(sys.executable)} -c \"import time; time.sleep(120)\""
    command = f"{sleeper} && echo after" if sys.platform == "win32" else f"{sleeper}; echo after"
    started = time.monotonic()
    assert run_on_finish(command, summary(0, tmp_path, COMPLETED=1), timeout=1) is None
    assert time.monotonic() - started < 30
    assert warnings_of(caplog) == ["the --on-finish command did not finish within 1 s and was stopped; the run's "
                                   "exit code stays 0"]


def test_no_command_runs_nothing(tmp_path):
    assert run_on_finish(None, summary(0, tmp_path)) is None
    assert run_on_finish("   ", summary(0, tmp_path)) is None


def test_the_time_limit_is_generous():
    assert on_finish.HOOK_TIMEOUT >= 300


# ------------------------------------------------------------------------------------------------ the CLI, run stand-in

@pytest.fixture
def orders(tmp_path) -> Path:
    p = tmp_path / "orders.csv"
    p.write_text("PO_NUMBER\n100001\n", encoding="utf-8")
    return p


def stand_in_runs(monkeypatch, tmp_path, *codes: int) -> list[int]:
    """`_run` replaced by a stand-in whose runs end with `codes` in turn (the last one repeats)."""
    done: list[int] = []

    def run(orders, **kw):
        code = codes[min(len(done), len(codes) - 1)]
        done.append(code)
        return summary(code, tmp_path, COMPLETED=1) if code == 0 else summary(code, tmp_path, PENDING=1)

    monkeypatch.setattr(cli, "_run", run)
    return done


def test_run_calls_the_command_once_after_the_sign_in_and_the_second_pass(monkeypatch, tmp_path, orders):
    monkeypatch.setattr(desk, "sign_in", lambda req, on_open=None: SignInOutcome.SIGNED_IN)
    runs = stand_in_runs(monkeypatch, tmp_path, 3, 0)
    command, target = hook(tmp_path)
    result = CliRunner().invoke(main, ["run", str(orders), "--base-url", "https://acme.coupahost.com",
                                       "--sign-in-if-needed", "--on-finish", command])
    assert result.exit_code == 0, result.output
    assert runs == [3, 0]
    assert [c["POBATCH_EXIT_CODE"] for c in calls(target)] == ["0"]


def test_run_stopped_for_a_sign_in_still_calls_the_command(monkeypatch, tmp_path, orders):
    stand_in_runs(monkeypatch, tmp_path, 3)
    command, target = hook(tmp_path)
    result = CliRunner().invoke(main, ["run", str(orders), "--base-url", "https://acme.coupahost.com",
                                       "--on-finish", command])
    assert result.exit_code == 3, result.output
    [env] = calls(target)
    assert env["POBATCH_EXIT_CODE"] == "3" and env["POBATCH_OUTCOME"] == "sign_in_required"


def test_a_failing_command_keeps_the_runs_exit_code_and_shows_no_traceback(monkeypatch, tmp_path, orders):
    stand_in_runs(monkeypatch, tmp_path, 1)
    command, target = hook(tmp_path, exit_with=9)
    result = CliRunner().invoke(main, ["run", str(orders), "--base-url", "https://acme.coupahost.com",
                                       "--on-finish", command])
    assert result.exit_code == 1, result.output
    assert len(calls(target)) == 1 and "Traceback" not in result.output


@pytest.mark.parametrize("command", ["", "   "])
def test_an_empty_command_is_bad_input(monkeypatch, tmp_path, orders, command):
    runs = stand_in_runs(monkeypatch, tmp_path, 0)
    result = CliRunner().invoke(main, ["run", str(orders), "--base-url", "https://acme.coupahost.com",
                                       "--on-finish", command])
    assert result.exit_code == 2 and not runs
    assert result.output.strip().splitlines()[-1].startswith("Error: --on-finish: the command is empty; expected")


def test_bad_input_runs_no_command(tmp_path):
    """Exit 2 before any run: there are no results to tell, and no command runs."""
    command, target = hook(tmp_path)
    result = CliRunner().invoke(main, ["run", str(tmp_path / "missing.csv"), "--base-url",
                                       "https://acme.coupahost.com", "--on-finish", command])
    assert result.exit_code == 2, result.output
    assert calls(target) == []


# ------------------------------------------------------------------------------------------------ end to end: pobatch demo

STEP = 300  # seconds a small demo run may take on a busy 2-core machine


def demo(tmp_path: Path, pos: list[dict], *args: str, **top) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """`pobatch demo` on a scenario of `pos` with a real --on-finish command; its output and the calls."""
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"name": "on-finish", "seed": 3, "stall_seconds": 20,
                                    "latency": {"page_ms": 10, "attachment_ms": 5}, "pos": pos, **top}),
                        encoding="utf-8")
    command, target = hook(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["POBATCH_OFFLINE"] = "1"
    run = subprocess.run([sys.executable, "-m", "pobatch.core", "demo", "--scenario", str(scenario),
                          "--out", str(tmp_path / "out"), "--browser", "chromium", "--driver", CHROMEDRIVER,
                          "--on-finish", command, *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=STEP)
    return run, calls(target)


def files(name: str, n: int = 1) -> list[dict]:
    return [{"name": f"{name}-{i}.pdf", "kind": "link", "size": 3000} for i in range(n)]


@pytest.mark.usefixtures("browser_available")
def test_demo_all_done_calls_the_command_once_with_exit_0_and_the_counts(tmp_path):
    run, seen = demo(tmp_path, [{"id": "400001", "supplier": "Acme", "attachments": files("a", 2)},
                                {"id": "400002", "supplier": "Acme", "attachments": []}])
    assert run.returncode == 0, run.stdout + run.stderr
    [env] = seen
    assert env["POBATCH_EXIT_CODE"] == "0" and env["POBATCH_OUTCOME"] == "ok"
    assert env["POBATCH_TOTAL"] == "2" and env["POBATCH_COMPLETED"] == "1" and env["POBATCH_NO_ATTACHMENTS"] == "1"
    assert Path(env["POBATCH_WORKBOOK"]).is_file() and Path(env["POBATCH_OUT_DIR"]) == tmp_path / "out"
    assert Path(env["POBATCH_LOG"]).is_file() and "on_finish_end" in Path(env["POBATCH_LOG"]).read_text()
    assert "Traceback" not in run.stdout + run.stderr


@pytest.mark.usefixtures("browser_available")
def test_demo_with_a_po_that_stays_failed_calls_the_command_with_exit_1(tmp_path):
    """The portal answers the second PO's page on the second attempt; with one attempt it stays FAILED
    (not final: exit 1, and the demo's own check says it is not what the scenario expects)."""
    run, seen = demo(tmp_path, [{"id": "400011", "supplier": "Acme", "attachments": files("b")},
                                {"id": "400012", "supplier": "Acme", "attachments": files("c"),
                                 "faults": {"page": ["http500", "ok"]}}], "--max-attempts", "1",
                     # its page's one error must cost the attempt: a page loaded ahead would absorb it
                     "--no-page-ahead")
    assert run.returncode == 1, run.stdout + run.stderr
    [env] = seen
    assert env["POBATCH_EXIT_CODE"] == "1" and env["POBATCH_OUTCOME"] == "incomplete"
    assert env["POBATCH_COMPLETED"] == "1" and env["POBATCH_FAILED"] == "1" and env["POBATCH_TOTAL"] == "2"
    assert "Traceback" not in run.stdout + run.stderr


@pytest.mark.usefixtures("browser_available")
def test_demo_that_needs_a_sign_in_calls_the_command_with_exit_3(tmp_path):
    """The identity provider asks for a password after the first PO (as in tests/test_unattended.py):
    nobody is there to type it, the run stops with exit 3, and the command still tells."""
    run, seen = demo(tmp_path, [{"id": f"40002{i}", "supplier": "Acme", "attachments": files(f"d{i}")}
                                for i in range(3)], session={"sso_refresh_every": 1, "sso_via": "password_form"})
    assert run.returncode == 3, run.stdout + run.stderr
    [env] = seen
    assert env["POBATCH_EXIT_CODE"] == "3" and env["POBATCH_OUTCOME"] == "sign_in_required"
    assert int(env["POBATCH_PENDING"]) >= 1 and "sign in" in env["POBATCH_MESSAGE"].lower()
    assert "Traceback" not in run.stdout + run.stderr


# ------------------------------------------------------------------------------------------------ the README

def test_the_readme_names_every_variable_and_every_outcome_word(tmp_path):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### When a run ends: `--on-finish CMD`", 1)[1].split("\n## ", 1)[0]
    names = [k for k in hook_environment(summary(0, tmp_path), base={})]
    assert [n for n in names if f"`{n}`" not in section] == []
    words = {outcome_word(c) for c in (0, 1, 3, 4, 130)}
    assert [w for w in sorted(words) if f"`{w}`" not in section] == []
    assert f"{on_finish.HOOK_TIMEOUT / 60:g} minutes" in section
