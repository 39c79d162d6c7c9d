"""The run modes by name: what `--strategy`, `--parallel` and `--grid` choose, and MainApp runs.

The names are stored with every run (run store, workbook, report) and shown in `--help`: they are
the user's words, so a mode keeps its name when it moves (single-session graduated from EXPERIMENTAL/ in
issue 23 and kept its name).
"""
from __future__ import annotations

from typing import Callable

from pobatch.core.modes.base import ModeTraits, RunMode
from pobatch.core.modes.grid import GridMode
from pobatch.core.modes.parallel import ParallelMode
from pobatch.core.modes.sequential import SequentialMode
from pobatch.core.modes.single_session import SingleSessionMode
from pobatch.corelib.errors import FatalError

MODES: dict[str, Callable[[], RunMode]] = {
    "sequential": SequentialMode,
    "parallel": ParallelMode,
    "grid": GridMode,
    "single-session": SingleSessionMode,
}

# What --strategy may name: parallel (the same as --parallel) and single-session.
STRATEGIES: tuple[str, ...] = ("parallel", "single-session")


def mode_name(strategy: str | None, parallel: bool, grid: str | None) -> str:
    """The mode the options choose; FatalError (one line) for a strategy that is unknown or that
    cannot be combined with --parallel or --grid. The one place these rules are written."""
    if strategy in (None, "parallel"):
        return "grid" if grid else "parallel" if parallel or strategy else "sequential"
    if strategy not in STRATEGIES or grid or parallel:
        raise FatalError(f"--strategy {strategy}: expected one of {', '.join(STRATEGIES)}, "
                         "without --parallel or --grid", reason="BAD_CONFIG")
    return strategy


def get_mode(name: str) -> RunMode:
    """The mode registered under `name` (a name mode_name returned)."""
    return MODES[name]()


def traits_of(name: str) -> ModeTraits:
    """What the mode registered under `name` is like; a name no mode has (a view told nothing yet) has
    the plain traits of one local browser."""
    return get_mode(name).traits if name in MODES else ModeTraits()
