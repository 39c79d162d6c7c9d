"""Shared fixtures. Every test must end with no browser process and no temporary profile of ours."""
from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def our_browser_processes(roots: list[str]) -> list[psutil.Process]:
    """Browsers/drivers/workers of this test session: descendants of this process, plus Chromium
    processes whose --user-data-dir lies under one of `roots` (orphans re-parented to init).
    Other sessions' browsers are never counted (or killed)."""
    me = psutil.Process()
    procs = {p.pid: p for p in me.children(recursive=True)}
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            cmd = p.info["cmdline"] or []
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for arg in cmd:
            if arg.startswith("--user-data-dir="):
                path = os.path.realpath(arg.split("=", 1)[1])
                if any(path.startswith(r) for r in roots):
                    procs[p.pid] = p
    alive = []
    for p in procs.values():
        try:
            cmdline = " ".join(p.cmdline())
            # multiprocessing's resource tracker lives for the whole session by design
            if p.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in cmdline:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def _wait_gone(roots: list[str], deadline: float = 15.0) -> list[psutil.Process]:
    end = time.monotonic() + deadline
    while True:
        left = our_browser_processes(roots)
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.1)


@pytest.fixture(scope="session", autouse=True)
def private_profiles_root(tmp_path_factory):
    """Every clone this session makes (subprocesses included) goes under its own folder, so the leak
    check below sees exactly ours and never another test session's."""
    root = tmp_path_factory.getbasetemp() / "pobatch-profiles"
    root.mkdir(exist_ok=True)
    old = os.environ.get("POBATCH_PROFILES_ROOT")
    os.environ["POBATCH_PROFILES_ROOT"] = str(root)
    yield root
    if old is None:
        os.environ.pop("POBATCH_PROFILES_ROOT", None)
    else:
        os.environ["POBATCH_PROFILES_ROOT"] = old


@pytest.fixture(autouse=True)
def no_leftovers(request, tmp_path_factory, private_profiles_root):
    """Fail a test that leaves a browser, a driver, a worker, or a temporary profile behind."""
    before_profiles = set(_profile_runs(private_profiles_root))
    yield
    roots = [os.path.realpath(tmp_path_factory.getbasetemp())]
    left = _wait_gone(roots)
    for p in left:  # clean up so one leak does not cascade into every later test
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    new_profiles = set(_profile_runs(private_profiles_root)) - before_profiles
    assert not left, f"processes left behind: {[(p.pid, p.name()) for p in left]}"
    assert not new_profiles, f"temporary profiles left behind: {sorted(new_profiles)}"


def _profile_runs(root: Path) -> list[str]:
    return [str(p) for p in root.iterdir()] if root.is_dir() else []


def _require_browser() -> None:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        msg = "Debian chromium and chromium-driver are not installed"
        if os.environ.get("CI"):
            pytest.fail(msg)  # CI installs them: a skip there would hide a broken set-up
        pytest.skip(msg)


@pytest.fixture
def browser_available():
    _require_browser()


@pytest.fixture(scope="module")
def browser_available_module():
    """The same, for module fixtures (a function fixture cannot serve them)."""
    _require_browser()


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody may write in, root included: a read-only mount when this runs as root (which
    ignores permission bits), else a folder without write permission."""
    import subprocess

    ro = tmp_path / "ro"
    ro.mkdir()
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=False,
                       capture_output=True)
        if not os.path.ismount(ro):
            pytest.skip("running as root without permission to mount a read-only folder")
        try:
            yield ro
        finally:
            subprocess.run(["umount", str(ro)], check=True)
    else:
        ro.chmod(0o555)
        try:
            yield ro
        finally:
            ro.chmod(0o755)
