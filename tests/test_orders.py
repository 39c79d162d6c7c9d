"""pobatch.core.preparation.orders against real files as Excel and people produce them."""
from __future__ import annotations

import datetime as dt
import hashlib
import zipfile
from pathlib import Path

import openpyxl
import pytest
from openpyxl.chart import BarChart, Reference

from pobatch.core.preparation.orders import (
    PO_HEADER_NAMES,
    ROW_KEY,
    Duplicate,
    OrdersError,
    PoTask,
    describe_problems,
    normalize_po,
    read_orders,
    row_number,
)
from pobatch.corelib.errors import ErrorClass, classify


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def write_xlsx(path: Path, sheets: dict[str, list[list[object]]]) -> Path:
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for r, values in enumerate(rows, start=1):
            for c, v in enumerate(values, start=1):
                if v is not None:
                    ws.cell(r, c, v)
    wb.save(path)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def po_numbers(orders) -> list[str]:
    return [t.po_number for t in orders.tasks]


# ------------------------------------------------------------------------------------------------ normalize_po

@pytest.mark.parametrize("raw, expected", [
    ("100001", "100001"),
    ("  100001 ", "100001"),
    ("PO100001", "100001"),
    ("po-100001", "100001"),
    ("PO 100001", "100001"),
    ("PO#100001", "100001"),
    ("PO # 100001", "100001"),
    ("pm_100001", "100001"),
    ("PM100001", "100001"),
    ("\u00a0100001\u00a0", "100001"),  # non-breaking spaces from copy-paste out of a web page
    ("100001.0", "100001"),  # an Excel number exported to CSV
    (100001, "100001"),
    (100001.0, "100001"),
    ("000123", "000123"),
])
def test_normalize_po_accepts(raw, expected):
    assert normalize_po(raw) == expected


@pytest.mark.parametrize("raw", [
    None, "", "   ", "ABC", "PO", "PX100001", "100001A", "10 0001", "100001.5", "-100001", "1e5",
    100001.5, -5, float("nan"), float("inf"), True, "１２３", "PO-", "POPO100001",
])
def test_normalize_po_rejects(raw):
    assert normalize_po(raw) is None


# ---------------------------------------------------------------------------------------------------------- CSV

def test_semicolon_cp1252_csv_from_european_excel(tmp_path):
    p = write_bytes(tmp_path / "orders.csv",
                    "PO_NUMBER;Supplier;Amount\r\n100001;Müller GmbH;1,50\r\nPO-100002;Café Zoë;2,75\r\n"
                    .encode("cp1252"))
    orders = read_orders(p)
    assert orders.encoding == "cp1252"
    assert orders.delimiter == ";"
    assert orders.headers == ["PO_NUMBER", "Supplier", "Amount"]
    assert orders.po_column == "PO_NUMBER"
    assert po_numbers(orders) == ["100001", "100002"]
    assert orders.rows[0]["Supplier"] == "Müller GmbH"
    assert orders.rows[1]["Amount"] == "2,75"
    assert [t.row for t in orders.tasks] == [2, 3]
    assert orders.tasks[1].raw == "PO-100002"
    assert orders.sheet is None


def test_utf8_bom_is_not_part_of_the_header(tmp_path):
    p = write_bytes(tmp_path / "bom.csv", "\ufeffPO_NUMBER,Supplier\n100001,Łódź Sp. z o.o.\n".encode("utf-8"))
    orders = read_orders(p)
    assert orders.encoding == "utf-8-sig"
    assert orders.headers[0] == "PO_NUMBER"
    assert orders.rows[0]["Supplier"] == "Łódź Sp. z o.o."


def test_plain_utf8(tmp_path):
    p = write_bytes(tmp_path / "u.csv", "PO Number,Supplier\n100001,Škoda\n".encode("utf-8"))
    orders = read_orders(p)
    assert (orders.encoding, orders.delimiter, orders.po_column) == ("utf-8", ",", "PO Number")
    assert orders.rows[0]["Supplier"] == "Škoda"


def test_latin1_when_cp1252_cannot_decode(tmp_path):
    # 0x8D is undefined in cp1252, so only latin-1 can read this file.
    p = write_bytes(tmp_path / "l1.csv", b"PO_NUMBER,Note\n100001,M\xfcller \x8d\n")
    orders = read_orders(p)
    assert orders.encoding == "latin-1"
    assert orders.rows[0]["Note"] == "Müller \x8d"


def test_tab_separated_txt_and_tsv(tmp_path):
    for name in ("tabs.txt", "tabs.tsv"):
        p = write_bytes(tmp_path / name, b"PO\tSupplier, Inc\tCity\n100001\tAcme, Inc\tParis\n")
        orders = read_orders(p)
        assert orders.delimiter == "\t", name
        assert orders.headers == ["PO", "Supplier, Inc", "City"]
        assert orders.rows[0]["Supplier, Inc"] == "Acme, Inc"


def test_utf16_unicode_text_from_excel(tmp_path):
    p = write_bytes(tmp_path / "unicode.txt", "PO_NUMBER\tSupplier\r\n100001\tMüller\r\n".encode("utf-16"))
    orders = read_orders(p)
    assert orders.encoding == "utf-16"
    assert po_numbers(orders) == ["100001"]
    assert orders.rows[0]["Supplier"] == "Müller"


def test_quoted_commas_and_embedded_newlines_count_as_one_row(tmp_path):
    p = write_bytes(tmp_path / "q.csv", (
        'PO_NUMBER,Supplier,Note\n'
        '100001,"Acme, Inc.","line one\nline two"\n'
        '100002,"Quote ""Q"" Ltd",x\n'
        'ABC,Bad,y\n'
    ).encode("utf-8"))
    orders = read_orders(p)
    assert orders.delimiter == ","
    assert orders.rows[0]["Supplier"] == "Acme, Inc."
    assert orders.rows[0]["Note"] == "line one\nline two"
    assert orders.rows[1]["Supplier"] == 'Quote "Q" Ltd'
    # Excel shows the record with an embedded newline as one row, so the invalid value is on row 4.
    assert [p.row for p in orders.invalid] == [4]


def test_delimiter_follows_the_header_not_the_data(tmp_path):
    # Semicolons inside comma-separated values, and commas inside semicolon-separated ones.
    comma = write_bytes(tmp_path / "c.csv", b"PO_NUMBER,Note\n100001,a;b;c;d\n100002,e;f;g\n")
    semi = write_bytes(tmp_path / "s.csv", b"PO_NUMBER;Note\n100001;a,b,c,d\n100002;1,5\n")
    assert read_orders(comma).delimiter == ","
    assert read_orders(comma).rows[0]["Note"] == "a;b;c;d"
    assert read_orders(semi).delimiter == ";"
    assert read_orders(semi).rows[1]["Note"] == "1,5"


def test_single_column_csv_with_header(tmp_path):
    p = write_bytes(tmp_path / "one.csv", b"PO_NUMBER\n100001\nPO100002\n\n100003\n")
    orders = read_orders(p)
    assert po_numbers(orders) == ["100001", "100002", "100003"]
    assert [t.row for t in orders.tasks] == [2, 3, 5]


def test_header_on_row_3_after_a_title_block_csv(tmp_path):
    p = write_bytes(tmp_path / "title.csv", b"Open orders export\nGenerated 2024-05-01\nPO No;Supplier\n"
                                           b"100001;A\nXYZ;B\n")
    orders = read_orders(p)
    assert orders.header_row == 3
    assert orders.po_column == "PO No"
    assert orders.tasks == [PoTask("100001", 4, "100001")]
    assert [p.row for p in orders.invalid] == [5]


def test_header_names_are_matched_loosely_and_by_preference(tmp_path):
    p = write_bytes(tmp_path / "h.csv", b"Order Number,purchase-order,P.O. #,Po_Number\n1,2,3,4\n")
    orders = read_orders(p)
    assert orders.po_column == "Po_Number"  # PO_NUMBER is preferred over the other accepted names
    assert po_numbers(orders) == ["4"]
    p2 = write_bytes(tmp_path / "h2.csv", b"Supplier,Purchase Order\nA,PO-7\n")
    assert read_orders(p2).po_column == "Purchase Order"
    assert po_numbers(read_orders(p2)) == ["7"]


def test_blank_rows_duplicates_and_invalid_values_keep_row_numbers(tmp_path):
    p = write_bytes(tmp_path / "mix.csv", (
        "PO_NUMBER,Supplier\n"   # 1
        "100001,A\n"             # 2
        ",,\n"                   # 3 blank (only delimiters)
        "\n"                     # 4 blank
        "PO100001,A again\n"     # 5 duplicate of 2
        "ABC,B\n"                # 6 invalid
        ",C only\n"              # 7 PO empty, other cells not
        "100002,D\n"             # 8
        "pm-100002,E\n"          # 9 duplicate of 8
        "12.5,F\n"               # 10 invalid
    ).encode("utf-8"))
    orders = read_orders(p)
    assert po_numbers(orders) == ["100001", "100002"]
    assert [t.row for t in orders.tasks] == [2, 8]
    assert orders.duplicates == [Duplicate(5, "100001", 2), Duplicate(9, "100002", 8)]
    assert [(x.row, x.raw) for x in orders.invalid] == [(6, "ABC"), (7, ""), (10, "12.5")]
    assert orders.invalid[0].message == (
        "row 6: 'ABC' is not a PO number (expected digits, optionally prefixed PO or PM)")
    assert orders.invalid[1].message == "row 7: PO number is empty"
    # blank rows are not data rows; every other row is, in order, with its spreadsheet row number
    assert [row_number(r) for r in orders.rows] == [2, 5, 6, 7, 8, 9, 10]
    assert orders.rows[0][ROW_KEY] == "2"
    lines = describe_problems(orders)
    assert lines[0].startswith("row 5: PO 100001 is a duplicate of row 2")
    assert [ln.split(":")[0] for ln in lines] == ["row 5", "row 6", "row 7", "row 9", "row 10"]


def test_folder_levels_after_marker(tmp_path):
    p = write_bytes(tmp_path / "levels.csv", (
        "PO_NUMBER,Supplier,<|>,Region,Country,STATUS,SUPPLIER,ATTEMPTS\n"
        "100001,A,,EMEA,DE,COMPLETED,Acme,1\n"
        "100002,B,ignored,,FR,,,\n"
        "100003,C,,  ,  ,,,\n"
    ).encode("utf-8"))
    orders = read_orders(p)
    assert [t.folder_levels for t in orders.tasks] == [("EMEA", "DE"), ("FR",), ()]
    # The marker column and result columns from an earlier run are not levels; the user's own
    # "Supplier" column is not a result column (exact names only).
    assert "<|>" in orders.headers
    assert orders.input_headers == ["PO_NUMBER", "Supplier", "<|>", "Region", "Country"]


def test_user_column_named_like_a_level_after_marker_is_a_level(tmp_path):
    p = write_bytes(tmp_path / "levels.csv", b"PO_NUMBER,<|>,Supplier,Status\n100001,,Acme,open\n")
    assert read_orders(p).tasks[0].folder_levels == ("Acme", "open")


def test_no_folder_levels_without_marker(tmp_path):
    p = write_bytes(tmp_path / "x.csv", b"Region,PO_NUMBER,Country\nEMEA,100001,DE\n")
    assert read_orders(p).tasks[0].folder_levels == ()


def test_blank_and_repeated_headers_get_usable_names(tmp_path):
    p = write_bytes(tmp_path / "x.csv", b"PO_NUMBER,Note,,Note\n100001,a,b,c,d\n")
    orders = read_orders(p)
    assert orders.headers == ["PO_NUMBER", "Note", "Column C", "Note (2)", "Column E"]
    assert orders.rows[0]["Note (2)"] == "c"
    assert orders.rows[0]["Column E"] == "d"


def test_csv_read_leaves_the_file_untouched(tmp_path):
    p = write_bytes(tmp_path / "o.csv", "PO_NUMBER;Supplier\r\n100001;Müller\r\n".encode("cp1252"))
    before, mtime = digest(p), p.stat().st_mtime_ns
    read_orders(p)
    assert digest(p) == before
    assert p.stat().st_mtime_ns == mtime


# --------------------------------------------------------------------------------------------------------- XLSX

def test_xlsx_prefers_po_data_sheet(tmp_path):
    p = write_xlsx(tmp_path / "o.xlsx", {
        "Notes": [["Read me"], ["PO_NUMBER"], [999]],
        "PO_Data": [["PO_NUMBER", "Supplier"], [100001, "A"], ["PO100002", "B"]],
    })
    orders = read_orders(p)
    assert orders.sheet == "PO_Data"
    assert po_numbers(orders) == ["100001", "100002"]
    assert orders.encoding is None and orders.delimiter is None


def test_xlsx_first_sheet_without_po_data_and_explicit_sheet(tmp_path):
    p = write_xlsx(tmp_path / "o.xlsx", {
        "January": [["PO", "Supplier"], [100001, "A"]],
        "February": [["PO", "Supplier"], [200001, "B"]],
    })
    assert read_orders(p).sheet == "January"
    assert po_numbers(read_orders(p)) == ["100001"]
    chosen = read_orders(p, sheet="February")
    assert chosen.sheet == "February"
    assert po_numbers(chosen) == ["200001"]
    assert read_orders(p, sheet="february").sheet == "February"  # case-insensitive when unambiguous


def test_xlsx_unknown_sheet_lists_available(tmp_path):
    p = write_xlsx(tmp_path / "o.xlsx", {"January": [["PO"], [1]], "February": [["PO"], [2]]})
    with pytest.raises(OrdersError) as err:
        read_orders(p, sheet="March")
    msg = str(err.value)
    assert "o.xlsx" in msg and "'March'" in msg
    assert "'January'" in msg and "'February'" in msg


def with_float_literal(path: Path, placeholder: str, literal: str) -> None:
    """openpyxl stores 100001.0 as "100001"; Excel stores "100001.0"-like floats: patch the sheet XML."""
    with zipfile.ZipFile(path) as z:
        parts = {name: z.read(name) for name in z.namelist()}
    sheet = "xl/worksheets/sheet1.xml"
    assert placeholder.encode() in parts[sheet]
    parts[sheet] = parts[sheet].replace(placeholder.encode(), literal.encode())
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in parts.items():
            z.writestr(name, data)


def test_xlsx_numeric_cells_int_and_whole_float_are_the_same_po(tmp_path):
    p = write_xlsx(tmp_path / "n.xlsx", {"Sheet1": [
        ["PO_NUMBER", "Amount", "When", "Flag"],
        [100001, 12.5, dt.datetime(2024, 5, 1), True],
        [100001.125, 3.0, dt.datetime(2024, 5, 1, 13, 30), False],
        [100002.5, None, None, None],
    ]})
    with_float_literal(p, "100001.125", "100001.0")
    wb = openpyxl.load_workbook(p)
    assert isinstance(wb.active["A3"].value, float)  # the file really holds a float
    wb.close()
    orders = read_orders(p)
    assert po_numbers(orders) == ["100001"]
    assert orders.tasks[0].raw == "100001"
    assert orders.duplicates == [Duplicate(3, "100001", 2)]
    assert orders.rows[1]["PO_NUMBER"] == "100001"
    assert orders.rows[0]["Amount"] == "12.5"
    assert orders.rows[1]["Amount"] == "3"
    assert orders.rows[0]["When"] == "2024-05-01"
    assert orders.rows[1]["When"] == "2024-05-01 13:30:00"
    assert orders.rows[0]["Flag"] == "TRUE"
    assert [(x.row, x.raw) for x in orders.invalid] == [(4, "100002.5")]


def test_xlsx_header_on_row_3_blank_rows_and_levels(tmp_path):
    p = write_xlsx(tmp_path / "t.xlsx", {"PO_Data": [
        ["Export of open orders"],                        # 1
        [],                                               # 2
        ["Supplier", "PO #", "<|>", "Region", "Team"],     # 3 header
        ["A", "PO-100001", None, "EMEA", "Ops"],           # 4
        [],                                               # 5 blank
        [],                                               # 6 blank
        ["B", None, None, "APAC", None],                   # 7 PO empty
        ["C", "oops", None, None, None],                   # 8 invalid
        ["D", 100002, None, None, "IT"],                   # 9
        ["E", "100001", None, "X", "Y"],                   # 10 duplicate of 4
    ]})
    orders = read_orders(p)
    assert orders.header_row == 3
    assert orders.po_column == "PO #"
    assert orders.tasks == [PoTask("100001", 4, "PO-100001", ("EMEA", "Ops")), PoTask("100002", 9, "100002", ("IT",))]
    assert [(x.row, x.message) for x in orders.invalid] == [
        (7, "row 7: PO number is empty"),
        (8, "row 8: 'oops' is not a PO number (expected digits, optionally prefixed PO or PM)"),
    ]
    assert orders.duplicates == [Duplicate(10, "100001", 4)]
    assert [row_number(r) for r in orders.rows] == [4, 7, 8, 9, 10]


def test_xlsx_sheet_starting_below_row_1(tmp_path):
    """A sheet whose first used cell is C5: row numbers stay the real ones."""
    p = tmp_path / "offset.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws["C5"], ws["D5"] = "PO_NUMBER", "Supplier"
    ws["C6"], ws["D6"] = 100001, "A"
    ws["C9"] = "bad"
    wb.save(p)
    orders = read_orders(p)
    assert orders.header_row == 5
    assert orders.headers == ["Column A", "Column B", "PO_NUMBER", "Supplier"]
    assert orders.tasks == [PoTask("100001", 6, "100001")]
    assert [x.row for x in orders.invalid] == [9]


def test_xlsm_is_read(tmp_path):
    p = write_xlsx(tmp_path / "macro.xlsm", {"PO_Data": [["PO_NUMBER"], [100001]]})
    assert po_numbers(read_orders(p)) == ["100001"]


def test_xlsx_read_leaves_the_file_untouched(tmp_path):
    p = write_xlsx(tmp_path / "o.xlsx", {"PO_Data": [["PO_NUMBER"], [100001], [100002]]})
    before, mtime = digest(p), p.stat().st_mtime_ns
    read_orders(p)
    read_orders(p, sheet="PO_Data")
    assert digest(p) == before
    assert p.stat().st_mtime_ns == mtime


# ------------------------------------------------------------------------------------------------------- errors

def raises_orders_error(path: Path, *expected: str, sheet: str | None = None) -> str:
    with pytest.raises(OrdersError) as err:
        read_orders(path, sheet=sheet)
    msg = str(err.value)
    assert path.name in msg, msg
    for text in expected:
        assert text in msg, f"{text!r} not in {msg!r}"
    return msg


def test_orders_error_is_fatal_for_the_run():
    assert classify(OrdersError("x")) is ErrorClass.FATAL


def test_missing_file(tmp_path):
    raises_orders_error(tmp_path / "nope.csv", "not found", "PO_NUMBER")


def test_folder_instead_of_file(tmp_path):
    d = tmp_path / "dir.csv"
    d.mkdir()
    raises_orders_error(d, "folder")


@pytest.mark.parametrize("name, data", [
    ("empty.csv", b""),
    ("blank.csv", b"  \r\n\r\n \t\n"),
    ("bom_only.csv", b"\xef\xbb\xbf"),
    ("empty.xlsx", b""),
])
def test_empty_files(tmp_path, name, data):
    raises_orders_error(write_bytes(tmp_path / name, data), "empty", "PO_NUMBER")


def test_empty_sheet(tmp_path):
    p = write_xlsx(tmp_path / "blank.xlsx", {"PO_Data": []})
    raises_orders_error(p, "'PO_Data'", "empty")


def test_corrupt_xlsx_not_a_zip(tmp_path):
    p = write_bytes(tmp_path / "fake.xlsx", b"PO_NUMBER\n100001\n")
    raises_orders_error(p, "not a valid Excel workbook", ".xlsx")


def test_truncated_xlsx(tmp_path):
    good = write_xlsx(tmp_path / "good.xlsx", {"PO_Data": [["PO_NUMBER"], [1]]})
    p = write_bytes(tmp_path / "cut.xlsx", good.read_bytes()[:300])
    raises_orders_error(p, "cannot be read as an Excel workbook", ".xlsx")


def test_zip_that_is_not_a_workbook(tmp_path):
    p = tmp_path / "other.xlsx"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("hello.txt", "hi")
    raises_orders_error(p, "cannot be read as an Excel workbook")


def test_old_xls_by_extension_and_by_content(tmp_path):
    raises_orders_error(write_bytes(tmp_path / "old.xls", b"\xd0\xcf\x11\xe0" + b"\0" * 100), ".xlsx or CSV")
    raises_orders_error(write_bytes(tmp_path / "renamed.xlsx", b"\xd0\xcf\x11\xe0" + b"\0" * 100), "save it as .xlsx")


def test_workbook_renamed_to_csv(tmp_path):
    good = write_xlsx(tmp_path / "good.xlsx", {"PO_Data": [["PO_NUMBER"], [1]]})
    raises_orders_error(write_bytes(tmp_path / "renamed.csv", good.read_bytes()), "rename it to .xlsx")


def test_binary_garbage_csv(tmp_path):
    raises_orders_error(write_bytes(tmp_path / "bin.csv", b"PO\x00\x01\x02\x00"), "not a text file")


@pytest.mark.parametrize("name", ["orders.json", "orders.ods", "orders"])
def test_unsupported_extension(tmp_path, name):
    p = write_bytes(tmp_path / name, b"PO_NUMBER\n1\n")
    raises_orders_error(p, "unsupported", ".csv .txt .tsv .xlsx .xlsm")


def test_no_po_column_lists_headers_and_accepted_names(tmp_path):
    p = write_bytes(tmp_path / "nopo.csv", b"Supplier;Amount;Invoice\nA;1;X\n")
    msg = raises_orders_error(p, "no PO column", "'Supplier'", "'Amount'", "'Invoice'")
    for name in PO_HEADER_NAMES:
        assert repr(name) in msg


def test_single_column_without_header_is_refused(tmp_path):
    p = write_bytes(tmp_path / "bare.csv", b"100001\n100002\n100003\n")
    raises_orders_error(p, "no PO column", "'PO_NUMBER'", "add a header cell PO_NUMBER")


def test_header_beyond_row_10_is_not_searched(tmp_path):
    rows = [[f"title {i}"] for i in range(11)] + [["PO_NUMBER"], [100001]]
    p = write_xlsx(tmp_path / "deep.xlsx", {"PO_Data": rows})
    raises_orders_error(p, "no PO column", "first 10 rows", "'PO_Data'")


def test_chart_sheet_cannot_be_chosen(tmp_path):
    p = tmp_path / "chart.xlsx"
    wb = openpyxl.Workbook()
    wb.active.title = "Data"
    wb.active.append(["PO_NUMBER"])
    wb.active.append([1])
    chart = BarChart()
    chart.add_data(Reference(wb.active, min_col=1, min_row=1, max_row=2))
    wb.create_chartsheet("Chart").add_chart(chart)
    wb.save(p)
    assert read_orders(p).sheet == "Data"
    raises_orders_error(p, "chart", sheet="Chart")
