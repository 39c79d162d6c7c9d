"""remove_tree waits out Windows' late file handles, with a bounded backoff, and gives up honestly.

A locked file cannot be made on Linux (and root ignores permissions), so the lock is simulated by
an rmtree that fails a given number of times, on a clock that only the recorded sleeps move.
"""
from __future__ import annotations

import errno
import shutil

import pytest

from pobatch.corelib import tree_removal
from pobatch.corelib.tree_removal import remove_tree


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def locked(monkeypatch):
    """Make rmtree fail `state["failures"]` times with `state["error"]`, then really remove; record sleeps."""
    clock = _Clock()
    state = {"failures": 0, "error": PermissionError(errno.EACCES, "in use"), "sleeps": clock.sleeps}
    real_rmtree = shutil.rmtree

    def flaky_rmtree(path, *args, **kwargs):
        if state["failures"]:
            state["failures"] -= 1
            raise state["error"]
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(tree_removal.shutil, "rmtree", flaky_rmtree)
    monkeypatch.setattr(tree_removal, "time", clock)
    return state


def _tree(tmp_path):
    root = tmp_path / "profile"
    (root / "Default").mkdir(parents=True)
    (root / "Default" / "Cookies").write_bytes(b"x")
    return root


def test_a_briefly_locked_tree_is_removed_after_growing_waits(tmp_path, locked):
    root = _tree(tmp_path)
    locked["failures"] = 3
    remove_tree(root)
    assert not root.exists()
    assert locked["sleeps"] == [0.05, 0.1, 0.2]


def test_a_tree_locked_for_good_raises_once_the_deadline_is_near(tmp_path, locked):
    root = _tree(tmp_path)
    locked["failures"] = 10**6
    with pytest.raises(PermissionError):
        remove_tree(root, deadline_seconds=2.0)
    assert root.exists()
    # 0.05 + 0.1 + 0.2 + 0.4 + 0.8 = 1.55 s; the next wait (1.0 s, the ceiling) would end past 2 s.
    assert locked["sleeps"] == [0.05, 0.1, 0.2, 0.4, 0.8]


def test_other_errors_are_not_retried(tmp_path, locked):
    root = _tree(tmp_path)
    locked["failures"], locked["error"] = 1, OSError(errno.EIO, "disk error")
    with pytest.raises(OSError, match="disk error"):
        remove_tree(root)
    assert locked["sleeps"] == []


def test_a_missing_tree_is_already_removed(tmp_path):
    remove_tree(tmp_path / "never-made")
