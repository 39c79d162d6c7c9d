"""pobatch.core.reports.workbook: write real workbooks, read them back with openpyxl and look inside the zip."""
from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import os
import re
import stat
import sys
import zipfile
from pathlib import Path

import openpyxl
import pytest

from pobatch.core.preparation.orders import DETAIL_COLUMNS, RESULT_COLUMNS, read_orders
import pobatch.core.reports.workbook as workbook
from pobatch.core.reports.workbook import ATTENTION_COLUMNS, ATTENTION_SHEET, MAX_CELL_CHARS, NEW_COLUMNS, NEW_SHEET, NOTHING_NEEDS_ATTENTION, NOTHING_NEW, SUMMARY_SHEET, RESULTS_SHEET, STATUS_FILLS, write_results
from pobatch.core.reports.changes import CHANGE_WORDS
from pobatch.core.results import FileRecord, PoOutcome
from pobatch.core.status import Status

ALL_RESULT = list(RESULT_COLUMNS) + list(DETAIL_COLUMNS)


def make_orders(tmp_path: Path, text: str, name: str = "orders.csv"):
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8"))
    return read_orders(p)


def load(path: Path):
    return openpyxl.load_workbook(path)


def rows_as_dicts(ws) -> list[dict[str, object]]:
    header = [c.value for c in ws[1]]
    return [dict(zip(header, (c.value for c in row))) for row in ws.iter_rows(min_row=2)]


def cell_of(ws, row: int, header: str):
    names = [c.value for c in ws[1]]
    return ws.cell(row, names.index(header) + 1)


def summary_map(ws) -> dict[str, object]:
    return {row[0].value: row[1].value for row in ws.iter_rows(min_row=1) if row[0].value is not None}


def sheet_xml(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n).decode("utf-8") for n in z.namelist() if n.startswith("xl/worksheets/sheet")}


@pytest.fixture
def sample(tmp_path):
    orders = make_orders(tmp_path, (
        "PO_NUMBER,Supplier,Note\n"   # 1
        "100001,Acme,first\n"         # 2 completed
        "100002,Beta,\n"              # 3 failed
        "ABC,Gamma,bad\n"             # 4 invalid
        "PO100001,Acme,again\n"       # 5 duplicate of 2
        "100003,Delta,\n"             # 6 no outcome yet
        "100004,,\n"                  # 7 timeout
    ))
    folder = tmp_path / "out" / "Acme" / "100001_COMPLETED"
    folder.mkdir(parents=True)
    outcomes = {
        "100001": PoOutcome(
            po_number="100001", status=Status.COMPLETED, reason="", supplier="Acme Corp",
            attachments_found=2, attachments_downloaded=2,
            files=[FileRecord("a.pdf", 1000, "x" * 64), FileRecord("b c.docx", 234, "y" * 64, "requisition")],
            download_folder=str(folder), po_url="https://acme.coupahost.com/order_headers/100001",
            attempts=1, last_processed="2024-05-01T13:45:10.123456+02:00"),
        "100002": PoOutcome(
            po_number="100002", status=Status.FAILED, reason="HTTP_500", error_message="server said 500",
            attempts=3, last_processed="2024-05-01T13:46:00"),
        "100004": PoOutcome(po_number="100004", status=Status.TIMEOUT, reason="PAGE_TIMEOUT", attempts=3),
        "999999": PoOutcome(po_number="999999", status=Status.COMPLETED),  # not in the file: ignored
    }
    return orders, outcomes, folder


def test_results_round_trip(tmp_path, sample):
    orders, outcomes, folder = sample
    out = write_results(tmp_path / "results.xlsx", orders, outcomes)
    assert out == tmp_path / "results.xlsx"
    wb = load(out)
    assert wb.sheetnames == [RESULTS_SHEET, SUMMARY_SHEET, ATTENTION_SHEET, NEW_SHEET]
    ws = wb[RESULTS_SHEET]
    assert [c.value for c in ws[1]] == ["PO_NUMBER", "Supplier", "Note"] + ALL_RESULT
    rows = rows_as_dicts(ws)
    assert [r["PO_NUMBER"] for r in rows] == ["100001", "100002", "ABC", "PO100001", "100003", "100004"]

    done = rows[0]
    assert done["STATUS"] == "COMPLETED"
    assert done["SUPPLIER"] == "Acme Corp"
    assert done["Supplier"] == "Acme"  # the user's own column is kept beside ours
    assert (done["ATTACHMENTS_FOUND"], done["ATTACHMENTS_DOWNLOADED"]) == (2, 2)
    assert done["ATTACHMENT_NAMES"] == "a.pdf;b c.docx"
    assert done["DOWNLOAD_FOLDER"] == str(folder)
    assert done["PO_URL"] == "https://acme.coupahost.com/order_headers/100001"
    assert done["LAST_PROCESSED"] == dt.datetime(2024, 5, 1, 13, 45, 10)  # wall time; Excel has no zones
    assert done["ATTEMPTS"] == 1
    assert done["ERROR_MESSAGE"] is None

    failed = rows[1]
    assert (failed["STATUS"], failed["REASON"], failed["ERROR_MESSAGE"], failed["ATTEMPTS"]) == (
        "FAILED", "HTTP_500", "server said 500", 3)

    invalid = rows[2]
    assert invalid["STATUS"] is None
    assert invalid["ERROR_MESSAGE"] == (
        "row 4: 'ABC' is not a PO number (expected digits, optionally prefixed PO or PM)")
    assert invalid["Note"] == "bad"

    dup = rows[3]
    assert dup["STATUS"] == "COMPLETED"
    assert dup["ATTACHMENT_NAMES"] == "a.pdf;b c.docx"
    assert dup["ERROR_MESSAGE"] == "duplicate of row 2"

    assert rows[4]["STATUS"] == "PENDING"
    assert rows[4]["ATTACHMENTS_FOUND"] is None
    assert rows[5]["STATUS"] == "TIMEOUT"


def test_hyperlinks(tmp_path, sample):
    orders, outcomes, folder = sample
    ws = load(write_results(tmp_path / "r.xlsx", orders, outcomes))[RESULTS_SHEET]
    folder_cell = cell_of(ws, 2, "DOWNLOAD_FOLDER")
    assert folder_cell.hyperlink is not None
    assert folder_cell.hyperlink.target == folder.as_uri()
    assert folder_cell.hyperlink.target.startswith("file://")
    assert folder_cell.value == str(folder)
    url_cell = cell_of(ws, 2, "PO_URL")
    assert url_cell.hyperlink.target == "https://acme.coupahost.com/order_headers/100001"
    assert cell_of(ws, 3, "PO_URL").hyperlink is None  # no URL, no link
    assert cell_of(ws, 3, "DOWNLOAD_FOLDER").hyperlink is None


def test_not_a_web_link_is_not_linked(tmp_path):
    orders = make_orders(tmp_path, "PO_NUMBER\n1\n")
    out = write_results(tmp_path / "r.xlsx", orders, {"1": PoOutcome("1", Status.FAILED, po_url="javascript:alert(1)")})
    cell = cell_of(load(out)[RESULTS_SHEET], 2, "PO_URL")
    assert cell.value == "javascript:alert(1)"
    assert cell.hyperlink is None


def test_styles_header_frozen_filter_widths_and_status_colors(tmp_path, sample):
    orders, outcomes, _ = sample
    ws = load(write_results(tmp_path / "r.xlsx", orders, outcomes))[RESULTS_SHEET]
    assert all(c.font.bold for c in ws[1])
    assert ws.freeze_panes == "A2"
    assert ws.auto_filter.ref == f"A1:{openpyxl.utils.get_column_letter(ws.max_column)}{ws.max_row}"
    widths = [ws.column_dimensions[openpyxl.utils.get_column_letter(i)].width for i in range(1, ws.max_column + 1)]
    assert all(8 <= w <= 62 for w in widths), widths
    status = {ws.cell(r, 1).value: cell_of(ws, r, "STATUS") for r in range(2, ws.max_row + 1)}

    def fill(cell) -> str:
        return cell.fill.fgColor.rgb[-6:]

    assert fill(status["100001"]) == STATUS_FILLS[Status.COMPLETED][0] == "C6EFCE"
    assert fill(status["100002"]) == STATUS_FILLS[Status.FAILED][0] == "FFC7CE"
    assert fill(status["100004"]) == STATUS_FILLS[Status.TIMEOUT][0] == "FFEB9C"
    assert fill(status["100003"]) == STATUS_FILLS[Status.PENDING][0]
    assert status["ABC"].fill.fill_type is None
    assert set(STATUS_FILLS) == set(Status)


def test_summary(tmp_path, sample):
    orders, outcomes, _ = sample
    started = dt.datetime(2024, 5, 1, 13, 40, 0)
    out = write_results(tmp_path / "r.xlsx", orders, outcomes,
                        run_info={"Run id": "20240501-134000", "Started": started, "Mode": "parallel",
                                  "Output folder": tmp_path / "out", "Workers": 2},
                        report_link=str(tmp_path / "report.html"))
    ws = load(out)[SUMMARY_SHEET]
    assert [ws.cell(r, 1).value for r in range(2, 2 + len(Status))] == [s.value for s in Status]
    values = summary_map(ws)
    expected_counts = {s.value: 0 for s in Status}
    expected_counts.update(COMPLETED=1, FAILED=1, TIMEOUT=1, PENDING=1)
    assert {s.value: values[s.value] for s in Status} == expected_counts
    assert values["Rows in file"] == 6
    assert values["POs in file"] == 5
    assert values["Unique POs"] == 4
    assert values["Duplicates"] == 1
    assert values["Invalid rows"] == 1
    assert values["Files downloaded"] == 2
    assert values["Attachments found"] == 2
    assert values["Bytes downloaded"] == 1234
    assert values["Run id"] == "20240501-134000"
    assert values["Started"] == started
    assert values["Mode"] == "parallel"
    assert values["Output folder"] == str(tmp_path / "out")
    assert values["Workers"] == 2
    assert values["Input file"] == str(orders.path)
    report = next(r[1] for r in ws.iter_rows() if r[0].value == "Report")
    assert report.value == str(tmp_path / "report.html")
    assert report.hyperlink.target == (tmp_path / "report.html").as_uri()


def test_summary_report_url_link_and_empty_outcomes(tmp_path):
    orders = make_orders(tmp_path, "PO_NUMBER\n1\n2\n")
    ws = load(write_results(tmp_path / "r.xlsx", orders, {}, report_link="http://127.0.0.1:8000/r.html"))[SUMMARY_SHEET]
    values = summary_map(ws)
    assert values["PENDING"] == 2
    assert values["COMPLETED"] == 0
    assert values["Bytes downloaded"] == 0
    report = next(r[1] for r in ws.iter_rows() if r[0].value == "Report")
    assert report.hyperlink.target == "http://127.0.0.1:8000/r.html"


INJECTIONS = ["=HYPERLINK(\"http://evil\",\"x\")", "+1+1", "-2+3", "@SUM(1,2)", "\t=1+1", "\r=1+1",
              "=cmd|' /C calc'!A0", "#N/A"]


def test_formula_injection_stays_text(tmp_path):
    # Dangerous text in the user's own cells (from the CSV) and in portal-provided values.
    buf = io.StringIO(newline="")
    csv.writer(buf).writerows([["PO_NUMBER", "Comment"]] + [[100001 + i, v] for i, v in enumerate(INJECTIONS)])
    orders = make_orders(tmp_path, buf.getvalue())
    assert [r["Comment"] for r in orders.rows] == INJECTIONS
    outcomes = {
        t.po_number: PoOutcome(t.po_number, Status.FAILED, supplier=v, error_message=v, reason=v,
                               files=[FileRecord(v.strip() + ".pdf", 1, "")])
        for t, v in zip(orders.tasks, INJECTIONS)
    }
    out = write_results(tmp_path / "inj.xlsx", orders, outcomes, run_info={"note": "=1+2"})
    wb = load(out)
    ws = wb[RESULTS_SHEET]
    for r, v in enumerate(INJECTIONS, start=2):
        for header in ("Comment", "SUPPLIER", "ERROR_MESSAGE", "REASON"):
            cell = cell_of(ws, r, header)
            # XML parsing turns a bare CR into LF when the file is read back; that is not ours to keep.
            assert cell.value == v.replace("\r", "\n"), (header, cell.value)
            assert cell.data_type == "s", (header, v)
        assert cell_of(ws, r, "ATTACHMENT_NAMES").value == v.strip() + ".pdf"
        assert cell_of(ws, r, "ATTACHMENT_NAMES").data_type == "s"
    note = next(r[1] for r in wb[SUMMARY_SHEET].iter_rows() if r[0].value == "note")
    assert (note.value, note.data_type) == ("=1+2", "s")
    for name, xml in sheet_xml(out).items():
        assert not re.search(r"<(\w+:)?f[ >/]", xml), f"formula element in {name}"
    assert "=HYPERLINK" in "".join(sheet_xml(out).values())  # the text is there, as text


def test_illegal_characters_and_long_text(tmp_path):
    orders = make_orders(tmp_path, "PO_NUMBER,Note\n1,x\n")
    long_text = "L" * (MAX_CELL_CHARS + 500)
    outcomes = {"1": PoOutcome("1", Status.FAILED, supplier="A\x00B\x07C\x1bD\tE", error_message=long_text)}
    ws = load(write_results(tmp_path / "r.xlsx", orders, outcomes))[RESULTS_SHEET]
    assert cell_of(ws, 2, "SUPPLIER").value == "ABCD\tE"
    assert len(cell_of(ws, 2, "ERROR_MESSAGE").value) == MAX_CELL_CHARS


def test_results_file_fed_back_replaces_old_result_columns(tmp_path, sample):
    orders, outcomes, _ = sample
    first = write_results(tmp_path / "run1.xlsx", orders, outcomes)
    again = read_orders(first)
    assert again.sheet == RESULTS_SHEET
    assert again.po_column == "PO_NUMBER"
    assert [t.po_number for t in again.tasks] == [t.po_number for t in orders.tasks]
    assert [(d.row, d.first_row) for d in again.duplicates] == [(5, 2)]
    assert "STATUS" in again.headers and again.input_headers == ["PO_NUMBER", "Supplier", "Note"]
    newer = {"100003": PoOutcome("100003", Status.NO_ATTACHMENTS, attempts=1)}
    second = write_results(tmp_path / "run2.xlsx", again, newer)
    ws = load(second)[RESULTS_SHEET]
    header = [c.value for c in ws[1]]
    assert header == ["PO_NUMBER", "Supplier", "Note"] + ALL_RESULT
    rows = rows_as_dicts(ws)
    # old results are replaced by this run's view: 100001 has no outcome in `newer`, so PENDING
    assert [r["STATUS"] for r in rows] == ["PENDING", "PENDING", None, "PENDING", "NO_ATTACHMENTS", "PENDING"]
    assert rows[3]["ERROR_MESSAGE"] == "duplicate of row 2"


def test_replaces_existing_target_atomically_and_leaves_no_temp(tmp_path, sample):
    orders, outcomes, _ = sample
    target = tmp_path / "r.xlsx"
    target.write_bytes(b"old content")
    assert write_results(target, orders, outcomes) == target
    assert zipfile.is_zipfile(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orders.csv", "out", "r.xlsx"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_result_file_is_readable_by_others_per_umask(tmp_path, sample):
    orders, outcomes, _ = sample
    old = os.umask(0o022)
    try:
        out = write_results(tmp_path / "r.xlsx", orders, outcomes)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_creates_missing_output_folder(tmp_path, sample):
    orders, outcomes, _ = sample
    out = write_results(tmp_path / "new" / "deeper" / "r.xlsx", orders, outcomes)
    assert out.is_file()


def test_failed_save_leaves_nothing_half_written(tmp_path, sample, monkeypatch):
    orders, outcomes, _ = sample
    target = tmp_path / "r.xlsx"
    target.write_bytes(b"previous results")
    real_save = openpyxl.Workbook.save

    def broken_save(self, filename):
        real_save(self, filename)
        Path(filename).write_bytes(Path(filename).read_bytes()[:100])  # half a file on disk
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(openpyxl.Workbook, "save", broken_save)
    with pytest.raises(OSError, match="No space"):
        write_results(target, orders, outcomes)
    assert target.read_bytes() == b"previous results"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orders.csv", "out", "r.xlsx"]


def test_target_open_in_excel_falls_back_to_numbered_name(tmp_path, sample, monkeypatch, caplog):
    orders, outcomes, _ = sample
    target = tmp_path / "results.xlsx"
    target.write_bytes(b"open in Excel")
    real_replace = os.replace
    locked = {target, tmp_path / "results (1).xlsx"}

    def windows_like_replace(src, dst):
        if Path(dst) in locked:
            raise PermissionError(13, "The process cannot access the file", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(workbook.os, "replace", windows_like_replace)
    with caplog.at_level(logging.WARNING, logger="pobatch.core.reports.workbook"):
        out = write_results(target, orders, outcomes)
    assert out == tmp_path / "results (2).xlsx"
    assert target.read_bytes() == b"open in Excel"
    assert rows_as_dicts(load(out)[RESULTS_SHEET])[0]["STATUS"] == "COMPLETED"
    assert any("results (2).xlsx" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_target_is_a_directory_falls_back(tmp_path, sample):
    orders, outcomes, _ = sample
    (tmp_path / "results.xlsx").mkdir()
    out = write_results(tmp_path / "results.xlsx", orders, outcomes)
    assert out == tmp_path / "results (1).xlsx"
    assert zipfile.is_zipfile(out)


def test_input_file_is_not_modified_by_writing(tmp_path, sample):
    orders, outcomes, _ = sample
    before = orders.path.read_bytes()
    write_results(tmp_path / "r.xlsx", orders, outcomes)
    assert orders.path.read_bytes() == before


def test_xlsx_input_with_levels_round_trip(tmp_path):
    src = tmp_path / "in.xlsx"
    wb = openpyxl.Workbook()
    wb.active.title = "PO_Data"
    for row in (["PO_NUMBER", "<|>", "Region"], [100001, None, "EMEA"], [100002, None, None]):
        wb.active.append(row)
    wb.save(src)
    orders = read_orders(src)
    out = write_results(tmp_path / "r.xlsx", orders, {"100001": PoOutcome("100001", Status.PARTIAL)})
    ws = load(out)[RESULTS_SHEET]
    assert [c.value for c in ws[1]][:3] == ["PO_NUMBER", "<|>", "Region"]
    rows = rows_as_dicts(ws)
    assert [(r["PO_NUMBER"], r["Region"], r["STATUS"]) for r in rows] == [
        ("100001", "EMEA", "PARTIAL"), ("100002", None, "PENDING")]
    assert cell_of(ws, 2, "STATUS").fill.fgColor.rgb[-6:] == "FFEB9C"
    assert load(out)[SUMMARY_SHEET]["A1"].value == "Status"
    assert summary_map(load(out)[SUMMARY_SHEET])["Sheet"] == "PO_Data"


def test_attention_sheet_lists_only_what_needs_a_person_with_what_to_do(tmp_path, sample):
    orders, outcomes, _ = sample
    outcomes = dict(outcomes)
    outcomes["100005"] = PoOutcome(po_number="100005", status=Status.NO_ATTACHMENTS)
    orders = make_orders(tmp_path, (
        "PO_NUMBER\n100001\n100002\nABC\nPO100001\n100003\n100004\n100005\n100006\n100007\n100008\n"))
    outcomes["100006"] = PoOutcome(po_number="100006", status=Status.PO_NOT_FOUND)
    outcomes["100007"] = PoOutcome(po_number="100007", status=Status.PENDING, reason="LOGIN_REQUIRED")
    outcomes["100008"] = PoOutcome(po_number="100008", status=Status.PARTIAL, attachments_found=3,
                                   attachments_downloaded=1, error_message="1 of 3 failed")
    ws = load(write_results(tmp_path / "r.xlsx", orders, outcomes))[ATTENTION_SHEET]
    assert tuple(c.value for c in ws[1]) == ATTENTION_COLUMNS
    rows = {r["PO_NUMBER"]: r for r in rows_as_dicts(ws)}
    # COMPLETED, NO_ATTACHMENTS and the duplicate row need nobody
    assert list(rows) == ["100002", "ABC", "100003", "100004", "100006", "100007", "100008"]
    assert [rows[po]["ROW"] for po in rows] == [3, 4, 6, 7, 9, 10, 11]
    assert rows["100002"]["STATUS"] == "FAILED" and "HTTP_500" in rows["100002"]["WHAT_HAPPENED"]
    assert rows["100002"]["DETAILS"] == "server said 500"
    assert rows["ABC"]["WHAT_TO_DO"].startswith("Correct the PO number") and "not a PO number" in rows["ABC"]["DETAILS"]
    assert rows["100003"]["STATUS"] == "PENDING" and rows["100003"]["WHAT_TO_DO"].startswith("Run the same file again")
    assert rows["100004"]["WHAT_HAPPENED"] == "The portal was too slow to send this PO's page."
    assert rows["100006"]["WHAT_TO_DO"].startswith("Check the PO number")
    assert rows["100007"]["WHAT_TO_DO"].startswith("Sign in")
    assert rows["100008"]["WHAT_HAPPENED"] == "Only 1 of 3 attachment(s) could be downloaded."
    assert ws.auto_filter.ref and ws.freeze_panes == "A2"
    assert cell_of(ws, 2, "STATUS").fill.fgColor.rgb.endswith(STATUS_FILLS[Status.FAILED][0])


def test_attention_sheet_says_so_when_nothing_needs_a_person(tmp_path):
    orders = make_orders(tmp_path, "PO_NUMBER\n100001\n100002\n")
    outcomes = {"100001": PoOutcome(po_number="100001", status=Status.COMPLETED),
                "100002": PoOutcome(po_number="100002", status=Status.NO_ATTACHMENTS)}
    ws = load(write_results(tmp_path / "r.xlsx", orders, outcomes))[ATTENTION_SHEET]
    assert ws.cell(2, 1).value == NOTHING_NEEDS_ATTENTION and ws.max_row == 2


def test_new_sheet_lists_what_this_run_changed(tmp_path, sample):
    """NEW_FILES counts a PO's files that this run brought; the "New" sheet has one row per file brought,
    fetched again or found gone, and nothing of other runs."""
    orders, outcomes, folder = sample
    changes = [
        {"key": "100001", "name": "new.pdf", "size": 10, "brought_by": "run2", "refetched": False,
         "removed_on_portal": "", "mtime_ns": 1_700_000_000_000_000_000},
        {"key": "100001", "name": "again.pdf", "size": 20, "brought_by": "run2", "refetched": True,
         "removed_on_portal": "", "mtime_ns": 1_700_000_000_000_000_000},
        {"key": "100002", "name": "gone.pdf", "size": 30, "brought_by": "run1", "refetched": False,
         "removed_on_portal": "run2", "mtime_ns": 0},
        {"key": "999999", "name": "not-in-file.pdf", "size": 1, "brought_by": "run2", "refetched": False,
         "removed_on_portal": "", "mtime_ns": 0},
    ]
    wb = load(write_results(tmp_path / "r.xlsx", orders, outcomes, run_id="run2", changes=changes))
    rows = rows_as_dicts(wb[RESULTS_SHEET])
    new_files = {r["PO_NUMBER"]: r["NEW_FILES"] for r in rows}
    assert new_files["100001"] == 2 and new_files["100002"] == 0
    ws = wb[NEW_SHEET]
    assert [c.value for c in ws[1]] == list(NEW_COLUMNS)
    got = [(r["PO_NUMBER"], r["FILE"], r["SIZE"], r["CHANGE"]) for r in rows_as_dicts(ws)]
    assert got == [("100001", "new.pdf", 10, CHANGE_WORDS["new"]), ("100001", "again.pdf", 20, CHANGE_WORDS["refetched"]),
                   ("100002", "gone.pdf", 30, CHANGE_WORDS["removed"])]
    empty = load(write_results(tmp_path / "e.xlsx", orders, outcomes, run_id="run3", changes=[]))[NEW_SHEET]
    assert empty.cell(2, 1).value == NOTHING_NEW
