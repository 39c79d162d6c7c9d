"""Partial names, atomic publication, polling helpers and matching downloads to clicks, on real files."""
import time
from pathlib import Path

import pytest

from pobatch.corelib.browser.downloads import is_partial, publish_folder, sha256_file


def test_partial_names():
    assert is_partial("a.pdf.crdownload")
    assert is_partial(".org.chromium.Chromium.XyZ")
    assert is_partial("Unconfirmed 123.crdownload")
    assert not is_partial("a.pdf")


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
    from pobatch.corelib.polling import Backoff

    b = Backoff(first=0.002, ceiling=0.05, factor=2)
    intervals = [b.next_interval() for _ in range(8)]
    assert intervals[:3] == [0.002, 0.004, 0.008]
    assert max(intervals) == 0.05 and intervals[-1] == 0.05
    with pytest.raises(ValueError):
        Backoff(first=0.1, ceiling=0.05)


def test_throttle_skips_calls_until_its_interval_has_passed():
    from pobatch.corelib.polling import Throttle

    calls = []
    t = Throttle(lambda: calls.append(time.monotonic()), every=0.2)
    t()
    assert calls == [], "a wait that ends before the interval never pays for the check"
    time.sleep(0.25)
    t()
    t()
    assert len(calls) == 1


# -- matching a page's downloads to its clicks (pure logic: the browser's events are given) ---------
class FakeTracker:
    """The reading side of pobatch.corelib.browser.download_events.DownloadTracker, fed by hand."""

    def __init__(self) -> None:
        self.downloads: list = []
        self.cancelled: list[str] = []
        self.version = 0
        self.alive = True

    def begin(self, guid: str, url: str, frame: str = "main", name: str = "f.pdf"):
        from pobatch.corelib.browser.download_events import BrowserDownload

        d = BrowserDownload(guid=guid, url=url, suggested=name, frame_id=frame, seq=len(self.downloads) + 1,
                            announced=True)
        self.downloads.append(d)
        return d

    def settle(self, timeout: float = 5.0) -> None:
        pass

    @property
    def last_seq(self) -> int:
        return len(self.downloads)

    def since(self, seq: int):
        return [d for d in self.downloads if d.seq > seq]

    def cancel(self, guid: str) -> None:
        self.cancelled.append(guid)

    def forget(self, guid: str) -> None:
        self.cancel(guid)

    def path_of(self, d) -> Path:
        return self.spool / d.guid


def test_a_download_goes_to_its_popup_then_its_url_then_the_click_that_navigated():
    from pobatch.corelib.browser.download_sink import Attribution, DownloadBatch

    tracker = FakeTracker()
    tracker.begin("old", "http://p/a")  # began before the batch: never this page's
    batch = DownloadBatch(tracker, lambda d: True, download_timeout=60, stall_timeout=20)
    by_url = batch.expect("a.pdf", "http://p/a")
    popup = batch.expect("b.pdf", "http://p/popup/b")
    popup.frames.add("POPUP1")
    navigating = batch.expect("c.pdf", "", navigates=True)
    # finished in reverse: the navigating click's file first, then the popup's, then the link's
    tracker.begin("g3", "http://p/raw/c")
    tracker.begin("g2", "http://p/raw/b", frame="POPUP1")
    tracker.begin("g1", "http://p/a")
    batch.update()
    assert (by_url.download.guid, by_url.how) == ("g1", Attribution.URL)
    assert (popup.download.guid, popup.how) == ("g2", Attribution.FRAME)
    assert (navigating.download.guid, navigating.how) == ("g3", Attribution.ORDER)
    assert batch.extra == [] and tracker.cancelled == []


def test_a_download_no_click_accounts_for_is_cancelled_and_reported():
    from pobatch.corelib.browser.download_sink import DownloadBatch

    tracker = FakeTracker()
    batch = DownloadBatch(tracker, lambda d: d.frame_id != "other-window", download_timeout=60, stall_timeout=20)
    only = batch.expect("a.pdf", "http://p/a")
    tracker.begin("theirs", "http://p/x", frame="other-window")  # another window's: not even looked at
    tracker.begin("g1", "http://p/a")
    tracker.begin("g2", "http://p/a")
    batch.update()
    assert only.download.guid == "g1"
    assert [d.guid for d in batch.extra] == ["g2"] and tracker.cancelled == ["g2"]


def test_a_cancelled_download_fails_its_click_at_once_and_a_silent_one_after_the_stall_timeout():
    from pobatch.corelib.browser.download_events import DownloadState
    from pobatch.corelib.browser.download_sink import DownloadBatch
    from pobatch.corelib.browser.downloads import DownloadInterrupted, DownloadStalled

    tracker = FakeTracker()
    batch = DownloadBatch(tracker, lambda d: True, download_timeout=60, stall_timeout=5)
    cut, still = batch.expect("a.pdf", "http://p/a"), batch.expect("b.pdf", "http://p/b")
    a, b = tracker.begin("g1", "http://p/a"), tracker.begin("g2", "http://p/b")
    a.state = DownloadState.CANCELED
    batch.update()
    assert isinstance(cut.error, DownloadInterrupted) and cut.done and not cut.ok
    assert still.error is None and not still.done
    b.last_growth -= 6  # no byte for longer than stall_timeout
    batch.update()
    assert isinstance(still.error, DownloadStalled) and tracker.cancelled == ["g2"]


def test_a_finished_file_is_taken_only_with_the_size_the_browser_reported(tmp_path):
    from pobatch.corelib.browser.download_events import DownloadState
    from pobatch.corelib.browser.download_sink import DownloadBatch
    from pobatch.corelib.errors import TransientError

    tracker = FakeTracker()
    tracker.spool = tmp_path
    batch = DownloadBatch(tracker, lambda d: True, download_timeout=60, stall_timeout=20)
    good, short = batch.expect("a.pdf", "http://p/a"), batch.expect("b.pdf", "http://p/b")
    for guid, url, data in (("g1", "http://p/a", b"x" * 10), ("g2", "http://p/b", b"y" * 4)):
        d = tracker.begin(guid, url)
        d.state, d.received, d.total = DownloadState.COMPLETED, 10, 10
        (tmp_path / guid).write_bytes(data)
    batch.update()
    assert batch.fetch(good, tmp_path / "a.pdf").read_bytes() == b"x" * 10
    with pytest.raises(TransientError, match="4 bytes on disk"):
        batch.fetch(short, tmp_path / "b.pdf")
    assert not (tmp_path / "b.pdf").exists()
