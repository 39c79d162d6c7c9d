"""The process exit codes, one home for the CLI, MainApp and the launchers (README, "Exit codes")."""
from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0  # every PO reached a final answer
    INCOMPLETE = 1  # some did not (FAILED, PARTIAL, TIMEOUT, ...)
    BAD_INPUT = 2  # bad input or configuration, told before any work
    LOGIN = 3  # the portal wants a sign-in
    STOPPED = 4  # the run stopped itself (the portal went away, the disk is full)
    INTERRUPTED = 130  # stopped by the user


EXIT_OK, EXIT_INCOMPLETE, EXIT_BAD_INPUT = ExitCode.OK, ExitCode.INCOMPLETE, ExitCode.BAD_INPUT
EXIT_LOGIN, EXIT_STOPPED, EXIT_INTERRUPTED = ExitCode.LOGIN, ExitCode.STOPPED, ExitCode.INTERRUPTED
