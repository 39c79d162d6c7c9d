"""EXPERIMENTAL single-session strategy: one browser, one login, N windows fed by one task queue.

`pobatch run ORDERS --strategy single-session --windows N`. See window_pool.py for the RunMode
MainApp consumes, and EXPERIMENTAL/README.md for what it would take to graduate.
"""
from pobatch.experimental.single_session.window_pool import SingleSessionMode

__all__ = ["SingleSessionMode"]
