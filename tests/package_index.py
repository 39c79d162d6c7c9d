"""For tests that set up a fresh venv, as a person's first install does: they need the package index."""
from __future__ import annotations

import os
import socket

import pytest


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
