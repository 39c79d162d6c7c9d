"""A refresh's pure parts on real files: attachment identities, held files checked on disk, and the
publisher carrying held files into the new folder beside the new ones (no browser here; the browser
runs are in tests/test_refresh.py)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pobatch.core.results import FileRecord
from pobatch.core.status import Status
from pobatch.core.workflow.attachments import PageResult, StagedFile
from pobatch.core.workflow.held_files import HeldFile, attachment_identity, check_held
from pobatch.core.workflow.job_config import JobConfig
from pobatch.core.workflow.po_task import PoTaskPayload
from pobatch.core.workflow.publish import Publisher
from pobatch.corelib.browser.downloads import sha256_file


def test_identity_keeps_what_names_the_file_and_drops_what_changes_per_view() -> None:
    a = attachment_identity("po", "https://x.example/attachments/12?Expires=1&Signature=abc&v=2#top", " Contract  A ")
    b = attachment_identity("po", "https://X.example/attachments/12?v=2&Signature=zzz&X-Amz-Date=9", "Contract A")
    assert a == b == "po|https://x.example/attachments/12?v=2|Contract A"
    assert attachment_identity("po", "https://x.example/attachments/13", "Contract A") != a
    assert attachment_identity("requisition", "https://x.example/attachments/12?v=2", "Contract A") != a
    assert attachment_identity("po", "data-token=t1", "a.pdf") != attachment_identity("po", "data-token=t2", "a.pdf")


def _record(folder: Path, name: str, data: bytes, identity: str = "") -> dict:
    path = folder / name
    path.write_bytes(data)
    st = path.stat()
    return {"name": name, "size": st.st_size, "sha256": sha256_file(path), "identity": identity or f"po|{name}|{name}",
            "source": "po", "run_id": "run1", "mtime_ns": st.st_mtime_ns}


def test_held_files_are_checked_by_size_and_time_then_by_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "Acme" / "100001_COMPLETED"
    folder.mkdir(parents=True)
    records = [_record(folder, n, n.encode() * 50) for n in ("same.pdf", "touched.pdf", "edited.pdf", "gone.pdf",
                                                            "resized.pdf")]
    os.utime(folder / "touched.pdf", ns=(1, 1))  # opened and saved unchanged: another time, the same bytes
    (folder / "edited.pdf").write_bytes(b"X" * records[2]["size"])  # the same size, other bytes
    os.utime(folder / "edited.pdf", ns=(2, 2))
    (folder / "gone.pdf").unlink()
    (folder / "resized.pdf").write_bytes(b"short")
    held = {h.name: h for h in check_held(folder, records)}
    assert {n: h.intact for n, h in held.items()} == {"same.pdf": True, "touched.pdf": True, "edited.pdf": False,
                                                       "gone.pdf": False, "resized.pdf": False}
    assert held["same.pdf"].brought_by == "run1"
    assert all(not h.intact for h in check_held("", records))  # no folder on record: nothing is held


@pytest.fixture
def publisher(tmp_path: Path):
    events: list[tuple[str, dict]] = []
    config = JobConfig(site="demo", base_url="http://127.0.0.1", out_dir=str(tmp_path / "out"), run_id="run2")
    return Publisher(config, lambda action, **kw: events.append((action, kw))), events


def _staged(tmp_path: Path, name: str, data: bytes, identity: str) -> StagedFile:
    path = tmp_path / "incoming" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return StagedFile(path, name, "po", suggested=name, identity=identity)


def _first_answer(tmp_path: Path, publisher: Publisher) -> tuple[PoTaskPayload, list[FileRecord]]:
    page = PageResult(supplier="Acme", found=2, downloaded=[
        _staged(tmp_path, "a.pdf", b"A" * 100, "po|/f/a|a.pdf"), _staged(tmp_path, "b.pdf", b"B" * 100, "po|/f/b|b.pdf")])
    first = PoTaskPayload("100001")
    outcome = publisher.publish(first, Status.COMPLETED, page, "u", tmp_path / "stage1", 1, 0.0)
    return PoTaskPayload("100001", previous_folders=(outcome.download_folder,), refresh=True,
                         held=tuple(h.to_dict() for h in check_held(outcome.download_folder,
                                                                    [_as_store_row(f) for f in outcome.files]))), outcome.files


def _as_store_row(f: FileRecord) -> dict:
    return {"name": f.name, "size": f.size, "sha256": f.sha256, "identity": f.identity, "source": f.source,
            "run_id": f.brought_by, "mtime_ns": f.mtime_ns, "removed_by": f.removed_on_portal}


def test_nothing_new_leaves_the_folder_untouched(tmp_path: Path, publisher) -> None:
    pub, events = publisher
    pub.config.run_id = "run1"
    payload, files = _first_answer(tmp_path, pub)
    folder = Path(payload.previous_folders[0])
    inode = {f.name: (folder / f.name).stat().st_ino for f in files}
    pub.config.run_id = "run2"
    page = PageResult(supplier="Acme", found=2, held=["po|/f/a|a.pdf", "po|/f/b|b.pdf"])
    outcome = pub.publish(payload, Status.COMPLETED, page, "u", tmp_path / "stage2", 1, 0.0,
                          seen={"po": ["po|/f/a|a.pdf", "po|/f/b|b.pdf"]})
    assert outcome.download_folder == str(folder) and outcome.attachments_downloaded == 2
    assert [(f.name, f.brought_by, f.removed_on_portal) for f in outcome.files] == [("a.pdf", "run1", ""),
                                                                                     ("b.pdf", "run1", "")]
    assert {p.name: p.stat().st_ino for p in folder.iterdir()} == inode  # not one file touched
    assert events[-1][1]["detail"].endswith("(unchanged)")


def test_new_files_join_held_ones_and_gone_ones_stay(tmp_path: Path, publisher) -> None:
    pub, _ = publisher
    pub.config.run_id = "run1"
    payload, _ = _first_answer(tmp_path, pub)
    pub.config.run_id = "run2"
    # b.pdf is gone from the portal; c.pdf is new, and so is a second "a.pdf" with its own identity.
    page = PageResult(supplier="Acme", found=3, held=["po|/f/a|a.pdf"], downloaded=[
        _staged(tmp_path, "c.pdf", b"C" * 10, "po|/f/c|c.pdf"), _staged(tmp_path, "a.pdf", b"A2" * 10, "po|/f/a2|a.pdf")])
    outcome = pub.publish(payload, Status.COMPLETED, page, "u", tmp_path / "stage2", 1, 0.0,
                          seen={"po": ["po|/f/a|a.pdf", "po|/f/c|c.pdf", "po|/f/a2|a.pdf"]})
    folder = Path(outcome.download_folder)
    assert sorted(p.name for p in folder.iterdir()) == ["a (1).pdf", "a.pdf", "b.pdf", "c.pdf"]
    by_name = {f.name: f for f in outcome.files}
    assert (folder / "a.pdf").read_bytes() == b"A" * 100 and (folder / "a (1).pdf").read_bytes() == b"A2" * 10
    assert {n: f.brought_by for n, f in by_name.items()} == {"a.pdf": "run1", "b.pdf": "run1", "c.pdf": "run2",
                                                             "a (1).pdf": "run2"}
    assert by_name["b.pdf"].removed_on_portal == "run2" and by_name["a.pdf"].removed_on_portal == ""
    assert outcome.attachments_found == 3 and outcome.attachments_downloaded == 3


def test_a_missing_file_is_fetched_again_under_its_name_and_a_status_change_renames(tmp_path: Path, publisher) -> None:
    pub, _ = publisher
    pub.config.run_id = "run1"
    payload, _ = _first_answer(tmp_path, pub)
    old = Path(payload.previous_folders[0])
    (old / "a.pdf").unlink()
    payload = PoTaskPayload("100001", previous_folders=payload.previous_folders, refresh=True,
                            held=tuple(h.to_dict() for h in check_held(old, [
                                {**h, "run_id": h["brought_by"]} for h in payload.held])))
    pub.config.run_id = "run2"
    page = PageResult(supplier="Acme", found=3, held=["po|/f/b|b.pdf"], failures=["d.pdf: stalled"], downloaded=[
        _staged(tmp_path, "a-served.pdf", b"A" * 100, "po|/f/a|a.pdf")])
    outcome = pub.publish(payload, Status.PARTIAL, page, "u", tmp_path / "stage2", 1, 0.0,
                          seen={"po": ["po|/f/a|a.pdf", "po|/f/b|b.pdf", "po|/f/d|d.pdf"]})
    folder = Path(outcome.download_folder)
    assert folder.name == "100001_PARTIAL" and not old.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["a.pdf", "b.pdf"]
    again = next(f for f in outcome.files if f.name == "a.pdf")
    assert again.refetched and again.brought_by == "run2"


def test_a_file_recorded_without_identity_is_recognised_by_its_bytes(tmp_path: Path, publisher) -> None:
    """A store from before identities: the refresh downloads once, sees the bytes it holds, keeps one copy."""
    pub, _ = publisher
    pub.config.run_id = "run1"
    payload, _ = _first_answer(tmp_path, pub)
    legacy = tuple({**h, "identity": ""} for h in payload.held)
    payload = PoTaskPayload("100001", previous_folders=payload.previous_folders, refresh=True, held=legacy)
    pub.config.run_id = "run2"
    page = PageResult(supplier="Acme", found=2, downloaded=[
        _staged(tmp_path, "a.pdf", b"A" * 100, "po|/f/a|a.pdf"), _staged(tmp_path, "b.pdf", b"B" * 100, "po|/f/b|b.pdf")])
    outcome = pub.publish(payload, Status.COMPLETED, page, "u", tmp_path / "stage2", 1, 0.0,
                          seen={"po": ["po|/f/a|a.pdf", "po|/f/b|b.pdf"]})
    folder = Path(outcome.download_folder)
    assert sorted(p.name for p in folder.iterdir()) == ["a.pdf", "b.pdf"]
    assert [(f.name, f.identity, f.brought_by) for f in outcome.files] == [("a.pdf", "po|/f/a|a.pdf", "run1"),
                                                                           ("b.pdf", "po|/f/b|b.pdf", "run1")]
    assert HeldFile.from_dict({**payload.held[0], "extra": 1}).name == "a.pdf"  # unknown keys are ignored


def test_a_publish_cut_between_its_renames_is_put_back(tmp_path: Path) -> None:
    """publish_folder moves the old folder aside, then the new one in: a crash between the two leaves
    only the aside copy, which the next run's recovery puts back (and a stale aside copy goes)."""
    from pobatch.core.workflow.journal import restore_replaced

    folder = tmp_path / "Acme" / "100001_COMPLETED"
    folder.mkdir(parents=True)
    (folder / "a.pdf").write_bytes(b"A")
    os.replace(folder, folder.with_name(f".{folder.name}.old-1-2"))
    assert restore_replaced(folder) and (folder / "a.pdf").read_bytes() == b"A"
    stale = folder.with_name(f".{folder.name}.old-3-4")
    stale.mkdir()
    assert not restore_replaced(folder) and not stale.exists() and folder.is_dir()


def test_the_end_of_run_line_says_what_a_refresh_found(tmp_path: Path) -> None:
    from pobatch.core.app import RunSummary
    from pobatch.core.monitoring.verdict import verdict

    counts = {s.value: 0 for s in Status}
    counts["COMPLETED"] = 2000
    summary = RunSummary("r", 0, counts, {}, None, tmp_path, checked=1998, new_files=37, new_file_pos=21)
    assert verdict(summary) == ("1,998 POs checked, 37 new files in 21 POs; 2,000 of 2,000 POs done; "
                                "nothing needs attention.")
    summary.new_files, summary.new_file_pos, summary.refetched_files, summary.removed_files = 1, 1, 1, 2
    assert verdict(summary).startswith("1,998 POs checked, 1 new file in 1 PO (1 of them fetched again: missing or "
                                       "changed here), 2 files gone from the portal (kept); 2,000 of 2,000")
    summary.new_files = summary.new_file_pos = summary.refetched_files = summary.removed_files = 0
    assert verdict(summary).startswith("1,998 POs checked, nothing new; ")
    summary.checked = 0  # not a refresh: the line as before
    assert verdict(summary) == "2,000 of 2,000 POs done; nothing needs attention."


def test_refresh_and_force_exclude_each_other(tmp_path: Path) -> None:
    """One clear line, exit 2, before anything is written to the output folder."""
    import subprocess
    import sys

    orders = tmp_path / "orders.csv"
    orders.write_text("PO_NUMBER\n100001\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "pobatch.core", "run", str(orders), "--site", "demo", "--base-url",
                           "http://127.0.0.1:9", "--no-preflight", "--refresh", "--force", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "--refresh and --force" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
