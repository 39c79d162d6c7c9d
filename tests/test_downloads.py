"""Completion detection against real files written by a thread that imitates Chromium's steps."""
import os
import threading
import time

import pytest

from corelib.downloads import (
    DownloadFolder,
    DownloadStalled,
    DownloadTimeout,
    is_partial,
    publish_folder,
    sha256_file,
)


def chromium_like_download(folder, name, data, step=0.02, chunks=4):
    hidden = folder / ".org.chromium.Chromium.abc123"
    hidden.write_bytes(b"")
    time.sleep(step)
    part = folder / f"{name}.crdownload"
    os.replace(hidden, part)
    size = len(data) // chunks
    with open(part, "ab") as fh:
        for i in range(chunks):
            fh.write(data[i * size:(i + 1) * size] if i < chunks - 1 else data[i * size:])
            fh.flush()
            time.sleep(step)
    os.replace(part, folder / name)


def test_partial_names():
    assert is_partial("a.pdf.crdownload")
    assert is_partial(".org.chromium.Chromium.XyZ")
    assert is_partial("Unconfirmed 123.crdownload")
    assert not is_partial("a.pdf")


def test_waits_through_every_stage(tmp_path):
    folder = DownloadFolder(tmp_path)
    data = os.urandom(100_000)
    t = threading.Thread(target=chromium_like_download, args=(tmp_path, "x.pdf", data))
    before = folder.finished()
    t.start()
    names = folder.wait_for_new(before, 1, timeout=10)
    t.join()
    assert names == ["x.pdf"]
    assert (tmp_path / "x.pdf").read_bytes() == data


def test_empty_folder_right_after_click_is_not_done(tmp_path):
    folder = DownloadFolder(tmp_path)
    with pytest.raises(DownloadTimeout):
        folder.wait_for_new(set(), 1, timeout=0.3)


def test_a_partial_that_stops_growing_is_a_failed_download(tmp_path):
    folder = DownloadFolder(tmp_path)
    (tmp_path / "y.pdf.crdownload").write_bytes(b"half")
    t0 = time.monotonic()
    with pytest.raises(DownloadStalled):
        folder.wait_for_new(set(), 1, timeout=10, stall_timeout=0.3)
    assert time.monotonic() - t0 < 5
    folder.clear_partials()
    assert not list(tmp_path.iterdir())


def test_existing_files_do_not_count(tmp_path):
    (tmp_path / "old.pdf").write_bytes(b"old")
    folder = DownloadFolder(tmp_path)
    before = folder.finished()
    threading.Timer(0.1, lambda: (tmp_path / "new.pdf").write_bytes(b"new")).start()
    assert folder.wait_for_new(before, 1, timeout=5) == ["new.pdf"]


def test_publish_replaces_old_folders_in_one_rename(tmp_path):
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "a.pdf").write_bytes(b"new")
    old = tmp_path / "out" / "ACME" / "1_FAILED"
    old.mkdir(parents=True)
    (old / "junk").write_bytes(b"x")
    dest = tmp_path / "out" / "ACME" / "1_COMPLETED"
    publish_folder(staged, dest, replace=[old])
    assert not old.exists() and not staged.exists()
    assert (dest / "a.pdf").read_bytes() == b"new"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["1_COMPLETED"]
    assert sha256_file(dest / "a.pdf") == "11507a0e2f5e69d5dfa40a62a1bd7b6ee57e6bcd85c67c9b8431b36fff21c437"


def test_backoff_starts_short_and_stops_at_its_ceiling():
    from corelib.polling import Backoff

    b = Backoff(first=0.002, ceiling=0.05, factor=2)
    intervals = [b.next_interval() for _ in range(8)]
    assert intervals[:3] == [0.002, 0.004, 0.008]
    assert max(intervals) == 0.05 and intervals[-1] == 0.05
    with pytest.raises(ValueError):
        Backoff(first=0.1, ceiling=0.05)


def test_throttle_skips_calls_until_its_interval_has_passed():
    from corelib.polling import Throttle

    calls = []
    t = Throttle(lambda: calls.append(time.monotonic()), every=0.2)
    t()
    assert calls == [], "a wait that ends before the interval never pays for the check"
    time.sleep(0.25)
    t()
    t()
    assert len(calls) == 1


def test_a_file_that_lands_right_away_is_seen_without_the_callback(tmp_path):
    folder = DownloadFolder(tmp_path / "dl", poll=0.05, callback_every=0.5)
    (folder.path / "a.pdf").write_bytes(b"x")
    polled = []
    assert folder.wait_for_new(set(), 1, timeout=5, on_poll=lambda: polled.append(1)) == ["a.pdf"]
    assert polled == []


def test_a_long_wait_still_runs_the_callback(tmp_path):
    folder = DownloadFolder(tmp_path / "dl", poll=0.02, callback_every=0.05)
    polled = []

    def land_later():
        polled.append(1)
        if len(polled) == 3:
            (folder.path / "late.pdf").write_bytes(b"x")

    assert folder.wait_for_new(set(), 1, timeout=10, on_poll=land_later) == ["late.pdf"]
    assert len(polled) == 3
