"""The single-session strategy: one browser, one login, N windows fed by one task queue.

`pobatch run ORDERS --strategy single-session --windows N`. See window_pool.py for the RunMode
MainApp consumes, and docs/design.md ("Single-session") for how and why. It graduated from
EXPERIMENTAL/ in issue 23 (the evidence: EXPERIMENTAL/README.md and BENCHMARKS.md).
"""
from pobatch.core.modes.single_session.window_pool import SingleSessionMode

__all__ = ["SingleSessionMode"]
