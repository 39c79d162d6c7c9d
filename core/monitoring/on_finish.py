"""--on-finish CMD: one command run when a run ends, with the results in POBATCH_* environment variables.

Why a shell command and environment variables: it is the one portable way to hand a run's outcome to
whatever a site already uses to tell people (a PowerShell Send-MailMessage, a Teams webhook through
Invoke-RestMethod, `mail` on Linux), without pobatch knowing any of them. The command runs through the
platform's shell (cmd.exe on Windows, /bin/sh elsewhere), once, at the very end: after a sign-in and
the second pass of `run --sign-in-if-needed`, after the verdict line, before the offer to open the
results.

It runs whenever the run has a summary: exit 0, 1 (some POs not final), 3 (sign-in required), 4 (the
run stopped itself) and 130 (Ctrl+C), never for bad input (exit 2: no run happened). The command's own
trouble (it cannot start, it exits non-zero, it hangs past HOOK_TIMEOUT and is killed, Ctrl+C while it
runs) is one warning line: the run's exit code stays the run's. Its output goes to the console as is.

The variables (README, "When a run ends: --on-finish"):

    POBATCH_EXIT_CODE      the run's exit code (0, 1, 3, 4, 130)
    POBATCH_OUTCOME        the same as a word: ok, incomplete, sign_in_required, stopped, interrupted
    POBATCH_RUN_ID         the run's id
    POBATCH_OUT_DIR        the output folder
    POBATCH_WORKBOOK       the results workbook ("" when it could not be written)
    POBATCH_REPORT         the HTML report ("" when none)
    POBATCH_LOG            the run's plain log ("" when none)
    POBATCH_TOTAL          POs in the orders file
    POBATCH_<STATUS>       POs with that status, one per status: POBATCH_COMPLETED, POBATCH_PARTIAL, ...
    POBATCH_NEW_FILES      files that arrived in this run
    POBATCH_NEW_FILE_POS   POs those files belong to
    POBATCH_CHECKED        POs --refresh looked at again
    POBATCH_MESSAGE        one line: how it went ("1,940 of 2,000 POs done; ..."), then the run's own
                           message when it has one (e.g. what to do to sign in)
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from typing import Mapping

import psutil

from pobatch.core.app import RunSummary
from pobatch.core.exit_codes import ExitCode
from pobatch.core.monitoring.run_log import append_after_run
from pobatch.core.monitoring.verdict import verdict
from pobatch.core.status import Status
from pobatch.corelib.browser.process_reaper import kill_and_wait

log = logging.getLogger(__name__)

HOOK_TIMEOUT = 600.0  # seconds: a mail or a webhook takes seconds; a command still running after this is stuck
KILL_WAIT = 10.0  # seconds to wait for a killed command (and what it started) to be gone
PREFIX = "POBATCH_"

OUTCOMES: dict[int, str] = {
    ExitCode.OK: "ok",
    ExitCode.INCOMPLETE: "incomplete",
    ExitCode.BAD_INPUT: "bad_input",  # never seen by a hook today: bad input ends before a run exists
    ExitCode.LOGIN: "sign_in_required",
    ExitCode.STOPPED: "stopped",
    ExitCode.INTERRUPTED: "interrupted",
}


def outcome_word(exit_code: int) -> str:
    """The exit code as the word a mail rule or a script can test without a table of numbers."""
    return OUTCOMES.get(int(exit_code), f"exit_{int(exit_code)}")


def _one_line(text: str) -> str:
    return " ".join(str(text or "").split())


def hook_message(summary: RunSummary) -> str:
    """POBATCH_MESSAGE: the desk's verdict line, then the run's own message (a sign-in, a stop) if any."""

    parts = [verdict(summary), summary.message]
    return _one_line(" ".join(p for p in parts if p))


def hook_environment(summary: RunSummary, exit_code: int | None = None,
                     base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the command runs in: `base` (default: this process's) plus the POBATCH_* results.

    `exit_code` is the process's exit code when it is not the summary's (the demo's own check)."""
    code = int(summary.exit_code if exit_code is None else exit_code)
    counts = {s.value: int(summary.counts.get(s.value, 0)) for s in Status}
    values: dict[str, object] = {
        "EXIT_CODE": code,
        "OUTCOME": outcome_word(code),
        "RUN_ID": summary.run_id,
        "OUT_DIR": summary.out_dir,
        "WORKBOOK": summary.results_path or "",
        "REPORT": summary.report_path or "",
        "LOG": summary.log_path or "",
        "TOTAL": sum(summary.counts.values()),
        **counts,
        "NEW_FILES": summary.new_files,
        "NEW_FILE_POS": summary.new_file_pos,
        "CHECKED": summary.checked,
        "MESSAGE": hook_message(summary),
    }
    env = dict(os.environ if base is None else base)
    env.update({PREFIX + name: str(value) for name, value in values.items()})
    return env


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill the shell and everything it started (cmd.exe -> powershell.exe would outlive cmd.exe alone)."""
    try:
        parent = psutil.Process(proc.pid)
        family = parent.children(recursive=True) + [parent]
    except psutil.Error:
        family = []
    kill_and_wait(family, time.monotonic() + KILL_WAIT)
    try:
        proc.wait(KILL_WAIT)
    except subprocess.TimeoutExpired:
        pass


def run_on_finish(command: str | None, summary: RunSummary, *, exit_code: int | None = None,
                  timeout: float = HOOK_TIMEOUT) -> int | None:
    """Run the --on-finish command once with the run's results in its environment.

    Returns the command's exit code, or None when there is no command or it did not finish (it could
    not start, it was killed after `timeout` seconds, Ctrl+C). Never raises for the command's own
    trouble: the caller exits with the run's exit code whatever happens here."""
    if not command or not command.strip():
        return None
    code = int(summary.exit_code if exit_code is None else exit_code)
    env = hook_environment(summary, code)
    log.info("running the --on-finish command (run %s, exit code %d)", summary.run_id, code)
    append_after_run(summary.log_path, "on_finish_start", outcome_word(code), "the --on-finish command started")
    for stream in (sys.stdout, sys.stderr):  # the run's last lines come before the command's own
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    started = time.monotonic()
    try:
        # shell=True: cmd.exe on Windows (COMSPEC), /bin/sh elsewhere, as the user typed the command.
        # No stdin: a command that waits for input must not take the console's keys (or hang a task).
        proc = subprocess.Popen(command, shell=True, env=env, stdin=subprocess.DEVNULL)
    except OSError as exc:
        return _failed(summary, f"the --on-finish command could not start ({exc.strerror or exc}); "
                                f"the run's exit code stays {code}")
    try:
        result = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        return _failed(summary, f"the --on-finish command did not finish within {timeout:g} s and was stopped; "
                                f"the run's exit code stays {code}")
    except KeyboardInterrupt:
        _kill_tree(proc)
        return _failed(summary, f"the --on-finish command was stopped (Ctrl+C); the run's exit code stays {code}")
    took = time.monotonic() - started
    if result != 0:
        _failed(summary, f"the --on-finish command failed with exit code {result}; the run's exit code "
                         f"stays {code}", result)
    else:
        log.info("the --on-finish command finished in %.1f s", took)
        append_after_run(summary.log_path, "on_finish_end", "exit 0", f"took {took:.1f} s")
    return result


def _failed(summary: RunSummary, message: str, result: int | None = None) -> int | None:
    log.warning("%s", message)
    append_after_run(summary.log_path, "on_finish_end", "failed" if result is None else f"exit {result}", message)
    return result
