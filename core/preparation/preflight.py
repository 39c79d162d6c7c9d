"""The checks before any browser starts, each one line for the user (FatalError) when it fails: the
portal answers, the output folder can be written, and what runs that died left behind is swept.
"""
from __future__ import annotations

import logging
import os
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from pobatch.core.portal_address import is_local_address
from pobatch.corelib.browser.session import sweep_driver_temp
from pobatch.corelib.errors import FatalError
from pobatch.corelib.browser.profile_manager import ProfileManager

log = logging.getLogger(__name__)


def check_reachable(base_url: str, timeout: float = 15.0) -> None:
    """One request to the portal before any browser starts: an address nobody answers at is one line
    (FatalError), not hours of retries. Any HTTP answer (a sign-in page, 404, 500, a certificate this
    Python does not trust) means it is there."""
    request = urllib.request.Request(base_url + "/", method="HEAD", headers={"User-Agent": "pobatch pre-flight"})
    # A portal on this machine is asked directly; any other through the proxy the system names.
    local = is_local_address(base_url)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({})) if local else urllib.request.build_opener()
    try:
        opener.open(request, timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):
            return
        raise FatalError(f"--base-url: the portal {base_url} cannot be reached ({_why(exc.reason)}); expected "
                         "the address your browser opens (check the address, the network or VPN; "
                         "--no-preflight skips this check)", reason="CONNECTION_FAILED") from None
    except (OSError, ValueError) as exc:
        if isinstance(exc, ssl.SSLError):
            return
        raise FatalError(f"--base-url: the portal {base_url} cannot be reached ({_why(exc)}); expected the "
                         "address your browser opens (check the address, the network or VPN; --no-preflight "
                         "skips this check)", reason="CONNECTION_FAILED") from None


def _why(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def check_writable(work: Path, out: Path) -> None:
    """Create the output and work folders and write in them, or stop with one line naming the folder
    (a read-only folder, a read-only parent, a full disk): before any browser starts."""
    try:
        work.mkdir(parents=True, exist_ok=True)
        for stale in work.glob(".write-test-*"):  # a run killed in the middle of this check left it
            stale.unlink(missing_ok=True)
        probe = work / f".write-test-{os.getpid()}"
        probe.write_bytes(b"pobatch")
        probe.unlink(missing_ok=True)
    except OSError as exc:
        where = Path(exc.filename) if exc.filename else out
        if where == work or where.parent == work:  # the user named the output folder, not our work folder
            where = out
        why = exc.strerror or type(exc).__name__
        raise FatalError(f"--out: cannot write in {where} ({why}); expected an output folder you can write to",
                         reason="BAD_CONFIG") from None


# A run on another PC (a shared output folder) is taken for dead when it has not been seen this long.
FOREIGN_RUN_STALE_AFTER = 120.0


def run_process_alive(run: dict) -> bool:
    """Whether the process of a run the store says is RUNNING still lives (the same pid, started no
    later than the run, on this host); a run from another host is alive while its heartbeat is fresh."""
    if run.get("host") != socket.gethostname():
        return time.time() - float(run.get("last_seen") or run["started"]) < FOREIGN_RUN_STALE_AFTER
    try:
        proc = psutil.Process(int(run.get("pid") or 0))
        return proc.create_time() <= float(run["started"]) + 1 and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def sweep_leftovers(root: Path | None) -> None:
    """Profiles, browsers and scratch folders of runs whose process died (a crash, a SIGKILL)."""
    for path in ProfileManager.sweep_orphans(root) + sweep_driver_temp():
        log.info("removed what a run that died left behind: %s", path)
