"""pobatch.corelib.browser.profile_manager with real files and real headless Chromium.

The browser starter, the tiny portal, the child-process runner and the autouse `scratch` fixture
(no browser and no temp profile may remain after a test) come from test_process_reaper.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import stat
import time
from pathlib import Path

import psutil
import pytest

from pobatch.corelib.browser.processes import browser_processes
from pobatch.corelib.errors import FatalError
from pobatch.corelib.browser.profile_lock import live_browsers_on
from pobatch.corelib.browser.profile_manager import (
    CLONE_SKIP,
    OWNER_FILE,
    CloneInfo,
    ProfileManager,
    profile_in_use_warning,
)
from eventually import wait_for
from test_process_reaper import (  # noqa: F401 - portal and scratch are fixtures
    _STARTED_DRIVERS,
    _Portal,
    driver_process,
    is_gone,
    portal,
    read_child_report,
    scratch,
    start_python_child,
    start_test_browser,
)

MiB = 1024 * 1024


def tree_size(path: Path) -> int:
    """Bytes actually allocated on disk below path (sparse files count what they use)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def relative_files(path: Path) -> set[str]:
    return {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() or p.is_symlink()}


def write(path: Path, data: bytes | str = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return path


def cookie_rows(profile: Path) -> list[tuple[str, str]]:
    """(host, name) of every cookie stored in the profile, wherever this Chromium keeps them."""
    rows: list[tuple[str, str]] = []
    for db in (profile / "Default" / "Network" / "Cookies", profile / "Default" / "Cookies"):
        if db.exists():
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                rows += conn.execute("SELECT host_key, name FROM cookies").fetchall()
    return rows


# --------------------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_clone_carries_the_login_cookie_to_a_new_browser(
    scratch: Path, portal: _Portal, browser_available: None
) -> None:
    base = scratch / "base"
    base.mkdir()
    driver = start_test_browser(base)
    _STARTED_DRIVERS.append(driver_process(driver))
    driver.get(portal.url("/login"))
    assert driver.title == "page /login"
    driver.quit()  # a clean quit flushes the cookie to disk
    wait_for(lambda: not browser_processes(base), 15, "the base browser to exit")
    assert ("127.0.0.1", "pobatch_session") in cookie_rows(base)

    with ProfileManager(base, "cookie", scratch / "work") as profiles:
        clone = profiles.clone("w1")
        assert (clone / "Local State").is_file(), "Local State holds the cookie key on Windows"
        assert ("127.0.0.1", "pobatch_session") in cookie_rows(clone)
        worker = start_test_browser(clone)
        _STARTED_DRIVERS.append(driver_process(worker))
        try:
            worker.get(portal.url("/orders"))
            assert worker.title == "page /orders"
        finally:
            worker.quit()
        sent = [cookie for path, cookie in portal.requests if path == "/orders"]
        assert sent and _Portal.SESSION_COOKIE in sent[-1], f"cookie not sent from the clone: {sent}"
    assert not (scratch / "work" / "run-cookie").exists()


def test_clone_skips_locks_caches_and_symlinks(scratch: Path) -> None:
    base = scratch / "base"
    kept = {
        "Local State": '{"os_crypt": {}}',
        "Last Version": "156",
        "Default/Preferences": "{}",
        "Default/Cookies": "sqlite",
        "Default/Network/Cookies": "sqlite",
        "Default/Network/Cookies-journal": "",
        "Default/Login Data": "sqlite",
        "Default/Local Storage/leveldb/000003.log": "ls",
        "Default/Local Storage/leveldb/LOCK": "",  # LevelDB's LOCK is a small regular file: copied
        "Default/IndexedDB/https_portal_0.indexeddb.leveldb/CURRENT": "MANIFEST-000001",
        "Default/Service Worker/Database/MANIFEST-000001": "sw",
        "Default/Service Worker/ScriptCache/index": "script",
        "Profile 1/Preferences": "{}",
    }
    skipped = [
        "lockfile",
        "DevToolsActivePort",
        "BrowserMetrics-spare.pma",
        "BrowserMetrics/BrowserMetrics-1.pma",
        "Crashpad/settings.dat",
        "component_crx_cache/x.crx",
        "optimization_guide_model_store/model",
        "Safe Browsing/UrlMalware.store",
        "GrShaderCache/data_0",
        "ShaderCache/data_0",
        "GraphiteDawnCache/data_0",
        "Default/Cache/Cache_Data/index",
        "Default/Code Cache/js/index",
        "Default/GPUCache/data_0",
        "Default/DawnGraphiteCache/data_0",
        "Default/DawnWebGPUCache/data_0",
        "Default/Service Worker/CacheStorage/abc/index",
        "Default/Storage/ext/abc/def/GPUCache/data_1",
        "Default/Preferences.tmp",
        "Profile 1/Cache/Cache_Data/f_000001",
    ]
    for rel, content in kept.items():
        write(base / rel, content)
    for rel in skipped:
        write(base / rel, b"skip me")
    with open(base / "Default/Cache/Cache_Data/f_000002", "wb") as fh:
        fh.truncate(200 * MiB)  # a big (sparse) cache file
    # Lock symlinks as a running browser leaves them (dangling, like after a crash) and a symlink
    # that points out of the profile: none may be copied or followed.
    os.symlink(f"{socket.gethostname()}-999999", base / "SingletonLock")
    os.symlink("/nonexistent/org.chromium.Chromium.x/SingletonSocket", base / "SingletonSocket")
    os.symlink("123456789", base / "SingletonCookie")
    outside = write(scratch / "outside" / "secret.txt", "not part of the profile")
    os.symlink(outside.parent, base / "Default" / "linked-dir")
    os.symlink(outside, base / "Default" / "linked-file")

    with ProfileManager(base, "skip", scratch / "work") as profiles:
        clone = profiles.clone("w1")
        copied = relative_files(clone)
        assert copied == set(kept), f"unexpected: {copied ^ set(kept)}"
        for rel, content in kept.items():
            assert (clone / rel).read_text() == content
        assert not any((clone / name).is_symlink() or (clone / name).exists() for name in
                       ("SingletonLock", "SingletonSocket", "SingletonCookie"))
        assert tree_size(clone) < MiB
        info = profiles.info(clone)
        assert isinstance(info, CloneInfo)
        assert (info.path, info.run_id, info.owner_pid, info.name) == (clone, "skip", os.getpid(), "w1")
        assert info.files_copied == len(kept) and info.bytes_copied < MiB and info.unreadable == ()
        # Private to the user: the run folder and every folder of the clone.
        for folder in [profiles.run_dir, *[p for p in clone.rglob("*") if p.is_dir()], clone]:
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        assert "Cache" in CLONE_SKIP and "SingletonLock" in CLONE_SKIP and "LOCK" not in CLONE_SKIP
    assert outside.read_text() == "not part of the profile"


@pytest.mark.timeout(180)
def test_clone_of_profile_in_use_starts_a_browser_and_release_kills_it(
    scratch: Path, portal: _Portal, browser_available: None
) -> None:
    base = scratch / "base"
    base.mkdir()
    user_browser = start_test_browser(base)  # the user's browser, still open on the base profile
    _STARTED_DRIVERS.append(driver_process(user_browser))
    try:
        user_browser.get(portal.url("/login"))
        main_pid = driver_process(user_browser).children()[0].pid
        assert [p.pid for p in live_browsers_on(base)] == [main_pid]
        warning = profile_in_use_warning(base)
        assert warning is not None
        assert str(base) in warning and str(main_pid) in warning and "Close it first" in warning
        assert (base / "SingletonLock").is_symlink()

        with ProfileManager(base, "inuse", scratch / "work") as profiles:
            clone = profiles.clone("w1")
            assert not any(p.name.startswith("Singleton") for p in clone.iterdir())
            worker = start_test_browser(clone)
            worker_driver = driver_process(worker)
            _STARTED_DRIVERS.append(worker_driver)
            worker.get(portal.url("/from-clone"))
            assert worker.title == "page /from-clone"
            worker_tree = {worker_driver.pid} | {p.pid for p in worker_driver.children(recursive=True)}

            profiles.release(clone)  # the browser still runs on it: release kills it first
            assert all(is_gone(pid) for pid in worker_tree)
            assert not clone.exists()
            # The user's browser was not touched.
            user_browser.get(portal.url("/still-mine"))
            assert user_browser.title == "page /still-mine"
    finally:
        user_browser.quit()
    wait_for(lambda: profile_in_use_warning(base) is None, 15, "the warning to clear")


def test_clone_of_mostly_cache_gigabyte_profile_is_small(
    scratch: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    base = scratch / "base"
    block = os.urandom(MiB)
    cache = base / "Default" / "Cache" / "Cache_Data"
    cache.mkdir(parents=True)
    for i in range(16):  # 16 x 64 MiB of real bytes
        with open(cache / f"f_{i:06d}", "wb") as fh:
            for _ in range(64):
                fh.write(block)
    write(base / "Default" / "Code Cache" / "js" / "big", block * 32)
    write(base / "Local State", "{}")
    write(base / "Default" / "Network" / "Cookies", os.urandom(64 * 1024))
    write(base / "Default" / "Preferences", "{}")
    write(base / "Default" / "Local Storage" / "leveldb" / "000003.log", os.urandom(16 * 1024))
    assert tree_size(base) >= 1024 * MiB  # real bytes, not sparse

    with caplog.at_level(logging.DEBUG, logger="pobatch.corelib.browser.profile_manager"):
        with ProfileManager(base, "big", scratch / "work") as profiles:
            started = time.perf_counter()
            clone = profiles.clone("w1")
            seconds = time.perf_counter() - started
            info = profiles.info(clone)
            with capsys.disabled():
                print(f"\n[clone timing] {tree_size(base) / MiB:.0f} MiB profile cloned in {seconds * 1000:.1f} ms, "
                      f"{info.bytes_copied} bytes in {info.files_copied} files copied")
            assert tree_size(clone) < MiB
            assert info.bytes_copied == 64 * 1024 + 16 * 1024 + 4 and info.files_copied == 4
    assert any("Cloned" in r.getMessage() and "bytes copied" in r.getMessage() for r in caplog.records)


def test_run_folder_owner_names_and_cleanup(scratch: Path) -> None:
    base = write(scratch / "base" / "Local State", "{}").parent
    work = scratch / "work"
    profiles = ProfileManager(base, "r42", work)
    run_dir = work / "run-r42"
    assert profiles.run_dir == run_dir
    owner = json.loads((run_dir / OWNER_FILE).read_text())
    assert owner["run_id"] == "r42" and owner["pid"] == os.getpid()
    assert abs(owner["pid_create_time"] - psutil.Process().create_time()) < 0.01
    assert set(owner) == {"run_id", "pid", "pid_create_time", "user", "created", "clones"}

    first = profiles.clone("w1")
    second = profiles.clone("w2")
    assert json.loads((run_dir / OWNER_FILE).read_text())["clones"] == ["w1", "w2"]
    with pytest.raises(FileExistsError):
        profiles.clone("w1")
    for bad in ("", "..", "a/b", "a\\b", OWNER_FILE, "owner-1-1.json"):
        with pytest.raises(ValueError):
            profiles.clone(bad)

    # A second manager on the same run (another worker) joins it with its own record.
    peer = ProfileManager(base, "r42", work)
    peer_records = [p for p in run_dir.glob("owner-*.json")]
    assert len(peer_records) == 1
    with pytest.raises(FileExistsError):
        peer.clone("w1")  # claimed by a live manager
    peer_clone = peer.clone("w3")
    peer.cleanup()  # not the last one: leaves the run folder and our clones alone
    assert not peer_clone.exists() and not peer_records[0].exists()
    assert first.exists() and second.exists() and (run_dir / OWNER_FILE).exists()

    # release() deletes only clones of this run.
    with pytest.raises(ValueError):
        profiles.release(base)
    with pytest.raises(ValueError):
        profiles.release(run_dir / OWNER_FILE)
    assert base.is_dir()

    profiles.release(first)
    assert not first.exists() and second.exists()
    assert [c.name for c in profiles.clones] == ["w2"]
    profiles.cleanup()
    assert not run_dir.exists()
    profiles.cleanup()  # twice is fine
    with pytest.raises(RuntimeError):
        profiles.clone("w3")
    with pytest.raises(FatalError, match="not found"):
        ProfileManager(scratch / "missing", "r43", work)
    for bad_run_id in ("", "a/b", ".."):
        with pytest.raises(ValueError):
            ProfileManager(base, bad_run_id, work)


@pytest.mark.timeout(180)
def test_run_shared_with_a_dead_worker_is_kept_and_its_clone_reclaimed(
    scratch: Path, portal: _Portal, browser_available: None
) -> None:
    """Parallel workers share a run folder; one dies hard with its browser still running."""
    base = write(scratch / "base" / "Local State", "{}").parent
    work = scratch / "work"
    report_file = scratch / "dead-worker.json"
    child = start_python_child(_crashing_run, str(base), "shared", str(work), portal.url("/w"), str(report_file))
    info = read_child_report(child, report_file)
    orphan_driver = psutil.Process(info["driver_pid"])
    _STARTED_DRIVERS.append(orphan_driver)
    dead_clone = Path(info["clone"])
    live_peer = ProfileManager(base, "shared", work)  # a worker that is still alive
    psutil.Process(child.pid).kill()
    child.wait(15)
    orphan_pids = {orphan_driver.pid} | {p.pid for p in browser_processes(dead_clone)}
    assert len(orphan_pids) >= 3

    # One live owner keeps the whole run folder away from the sweep.
    assert ProfileManager.sweep_orphans(work) == []
    assert dead_clone.exists()

    # A replacement worker with the dead one's clone name gets a fresh clone; the orphan dies.
    (base / "Preferences").write_text('{"fresh": true}')
    fresh = live_peer.clone(dead_clone.name)
    assert fresh == dead_clone and (fresh / "Preferences").read_text() == '{"fresh": true}'
    assert all(is_gone(pid) for pid in orphan_pids)

    # The last live manager out removes the folder, dead peers' records included.
    live_peer.cleanup()
    assert not live_peer.run_dir.exists()


def test_work_root_inside_the_base_profile_is_not_copied_into_itself(scratch: Path) -> None:
    base = write(scratch / "base" / "Local State", "{}").parent
    with ProfileManager(base, "nested", base / "pobatch-profiles") as profiles:
        first = profiles.clone("w1")
        second = profiles.clone("w2")
        assert relative_files(first) == {"Local State"}
        assert relative_files(second) == {"Local State"}
    assert not (base / "pobatch-profiles" / "run-nested").exists()
    (base / "pobatch-profiles").rmdir()


def _crashing_run(base: str, run_id: str, work_root: str, url: str, report_file: str) -> None:
    """Child process body: a run that clones, starts a browser, reports, and is then killed."""
    profiles = ProfileManager(base, run_id, work_root)
    clone = profiles.clone("w1")
    driver = start_test_browser(clone)
    driver.get(url)
    tmp = report_file + ".tmp"
    Path(tmp).write_text(json.dumps({"driver_pid": driver.service.process.pid, "clone": str(clone)}))
    os.replace(tmp, report_file)
    while True:
        time.sleep(60)


@pytest.mark.timeout(180)
def test_sweep_orphans_removes_dead_runs_and_their_browsers_only(
    scratch: Path, portal: _Portal, browser_available: None
) -> None:
    base = write(scratch / "base" / "Local State", "{}").parent
    work = scratch / "work"
    report_file = scratch / "crash-report.json"

    # A run whose process died hard, with a browser still running on its clone.
    child = start_python_child(_crashing_run, str(base), "crashed", str(work), portal.url("/w"), str(report_file))
    info = read_child_report(child, report_file)
    orphan_driver = psutil.Process(info["driver_pid"])
    _STARTED_DRIVERS.append(orphan_driver)
    crashed_clone = Path(info["clone"])
    psutil.Process(child.pid).kill()
    child.wait(15)
    orphan_pids = {orphan_driver.pid} | {p.pid for p in browser_processes(crashed_clone)}
    assert len(orphan_pids) >= 3 and not is_gone(orphan_driver.pid)

    # This process's live run: never touched.
    live = ProfileManager(base, "live", work)
    live_clone = live.clone("w1")

    # A live pid with another create time: the pid was reused, the run is dead.
    reused = work / "run-reused"
    write(reused / "w1" / "Local State", "{}")
    me = psutil.Process()
    write(reused / OWNER_FILE, json.dumps({
        "run_id": "reused", "pid": me.pid, "pid_create_time": me.create_time() - 1000,
        "user": json.loads((live.run_dir / OWNER_FILE).read_text())["user"], "created": "2020-01-01T00:00:00+00:00",
    }))
    # Without owner.json: dead once an hour old, possibly still being created before that.
    old = work / "run-old"
    write(old / "w1" / "Local State", "{}")
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))
    fresh = work / "run-fresh"
    write(fresh / "w1" / "Local State", "{}")
    unrelated = write(work / "notes" / "keep.txt", "not a run").parent

    removed = ProfileManager.sweep_orphans(work)

    assert sorted(p.name for p in removed) == ["run-crashed", "run-old", "run-reused"]
    assert all(is_gone(pid) for pid in orphan_pids)
    assert not (work / "run-crashed").exists() and not reused.exists() and not old.exists()
    assert fresh.exists() and unrelated.exists()
    assert live_clone.exists() and (live.run_dir / OWNER_FILE).exists()
    assert ProfileManager.sweep_orphans(work) == []

    live.cleanup()
    assert not live.run_dir.exists()
    assert ProfileManager.sweep_orphans(scratch / "no-such-root") == []
    for folder in (fresh, unrelated):
        for path in sorted(folder.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        folder.rmdir()
    assert list(work.iterdir()) == []
