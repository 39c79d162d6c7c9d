"""For tests that install pobatch afresh, as a person's first install does: a copy of the checkout to
install from (so nothing is built inside the source tree), and the package index for its dependencies."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def require_package_index(what: str) -> None:
    """Skip where pypi.org cannot be reached; fail in CI, which must have it (.ci/run)."""
    try:
        socket.create_connection(("pypi.org", 443), timeout=10).close()
        return
    except OSError:
        pass
    message = f"pypi.org is not reachable: {what}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def fresh_clone(target: Path) -> Path:
    """The files a clone of this checkout holds (tracked, plus new ones not ignored), nothing else."""
    if not shutil.which("git") or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / name)
    return target
