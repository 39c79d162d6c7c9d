"""The run modes by name: what `--strategy`, `--parallel` and `--grid` choose, and MainApp runs.

The names are stored with every run (run store, workbook, report) and shown in `--help`: they are
the user's words, so a mode keeps its name when it moves (see EXPERIMENTAL/README.md, graduation).
"""
from __future__ import annotations

from typing import Callable

from pobatch.core.modes.base import RunMode
from pobatch.core.modes.grid import GridMode
from pobatch.core.modes.parallel import ParallelMode
from pobatch.core.modes.sequential import SequentialMode
from pobatch.corelib.errors import FatalError


def _single_session() -> RunMode:
    # The one deliberate lazy import: EXPERIMENTAL sits on core, never under it, and a strategy still
    # being proven costs nothing (not even its import) unless the user chose it by name.
    from pobatch.experimental.single_session import SingleSessionMode

    return SingleSessionMode()


MODES: dict[str, Callable[[], RunMode]] = {
    "sequential": SequentialMode,
    "parallel": ParallelMode,
    "grid": GridMode,
    "single-session": _single_session,  # EXPERIMENTAL
}

# What --strategy may name: parallel (the same as --parallel) and the opt-in strategies.
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
