"""Read the user's list of POs (CSV or Excel) into clean, unique tasks, without ever touching the file.

Users hand over whatever Excel gave them: `;`-separated cp1252 CSV from a European Windows, UTF-8 with a
BOM, tab-separated text, a workbook whose PO sheet is not the first one, numbers stored as 100001.0, a title
block above the header. All of that is accepted. What cannot be understood stops the run with one message that
names the file and says what was expected, because a silently wrong batch is worse than no batch.
Row-level trouble (blank PO, invalid value, duplicate) does not stop the run: it is listed with its row number.

One file, a little over 400 lines: reading the file and finding the PO column in it are one decision (a CSV's
delimiter is the one whose parse shows a PO header), so they stay together.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from pobatch.corelib.errors import FatalError

log = logging.getLogger(__name__)

# Columns the results workbook writes; an input that already has them (a results file fed back) gets them
# replaced, and they are never read as folder levels.
RESULT_COLUMNS: tuple[str, ...] = (
    "STATUS", "SUPPLIER", "ATTACHMENTS_FOUND", "ATTACHMENTS_DOWNLOADED", "NEW_FILES", "ATTACHMENT_NAMES",
    "DOWNLOAD_FOLDER", "PO_URL", "ERROR_MESSAGE", "LAST_PROCESSED",
)
DETAIL_COLUMNS: tuple[str, ...] = ("REASON", "ATTEMPTS")
WRITTEN_COLUMNS: tuple[str, ...] = RESULT_COLUMNS + DETAIL_COLUMNS

# Header names accepted for the PO column, in order of preference when a sheet has more than one.
PO_HEADER_NAMES: tuple[str, ...] = (
    "PO_NUMBER", "PO Number", "PO", "PO No", "PO #", "Purchase Order", "Order Number",
)
FOLDER_LEVEL_MARKER = "<|>"
ROW_KEY = "__row__"  # hidden key in OrdersFile.rows: the spreadsheet row number, as a string
HEADER_SEARCH_ROWS = 10

CSV_SUFFIXES = (".csv", ".txt", ".tsv")
XLSX_SUFFIXES = (".xlsx", ".xlsm")
SUPPORTED_SUFFIXES = CSV_SUFFIXES + XLSX_SUFFIXES
CSV_ENCODINGS = ("utf-8-sig", "utf-8", "cp1252", "latin-1")
CSV_DELIMITERS = (",", ";", "\t")
DEFAULT_SHEET = "PO_Data"

_PO_RE = re.compile(r"^(?:P[OM](?:[\s\-#:._/]*))?([0-9]+)(?:\.0+)?$", re.IGNORECASE | re.ASCII)
_PO_HINT = "expected digits, optionally prefixed PO or PM"


def _header_key(name: object) -> str:
    """Compare header names the way people write them: case, spaces, underscores, hyphens, dots ignored."""
    return re.sub(r"[\s_\-.]+", "", str(name or "")).casefold()


_PO_HEADER_KEYS = {_header_key(n): i for i, n in enumerate(PO_HEADER_NAMES)}


def is_result_column(header: str) -> bool:
    """True for a column the results workbook writes.

    Exact names only: a user's own "Supplier" or "Status" column is their data, not an earlier result.
    """
    return str(header).strip() in WRITTEN_COLUMNS


class OrdersError(FatalError):
    """The input cannot be used at all; the message names the file and what was expected."""

    def __init__(self, message: str, reason: str = "BAD_INPUT") -> None:
        super().__init__(message, reason)


@dataclass(frozen=True)
class PoTask:
    po_number: str  # normalized: digits only, e.g. "100001"
    row: int  # 1-based spreadsheet row in the source
    raw: str  # the cell as read
    folder_levels: tuple[str, ...] = ()  # values of the columns after a "<|>" header, blanks dropped


@dataclass
class RowProblem:
    row: int
    raw: str
    message: str


@dataclass
class Duplicate:
    row: int
    po_number: str
    first_row: int


@dataclass
class OrdersFile:
    path: Path
    sheet: str | None  # sheet used for XLSX
    headers: list[str]  # header cells (blank ones named "Column <letter>", repeated ones suffixed " (2)")
    rows: list[dict[str, str]]  # non-blank data rows in order, header -> cell text, plus ROW_KEY
    po_column: str  # the header recognised as the PO column
    tasks: list[PoTask] = field(default_factory=list)  # unique valid POs in first-seen order
    duplicates: list[Duplicate] = field(default_factory=list)
    invalid: list[RowProblem] = field(default_factory=list)
    encoding: str | None = None  # detected for CSV
    delimiter: str | None = None  # detected for CSV
    header_row: int = 1

    @property
    def input_headers(self) -> list[str]:
        """The headers minus columns a results workbook writes (so a fed-back results file is not doubled)."""
        return [h for h in self.headers if not is_result_column(h)]


def row_number(row: dict[str, str]) -> int:
    """The spreadsheet row of one OrdersFile.rows entry."""
    return int(row[ROW_KEY])


def normalize_po(raw: object) -> str | None:
    """The PO number as the portal wants it (digits only), or None when the value is not a PO number.

    Accepts "100001", " PO-100001 ", "pm#100001", 100001 and Excel's 100001.0; rejects blanks, fractions,
    negatives, booleans and anything with other letters.
    """
    if raw is None or isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return str(raw) if raw >= 0 else None
    if isinstance(raw, float):
        if not math.isfinite(raw) or raw < 0 or not raw.is_integer():
            return None
        return str(int(raw))
    text = str(raw).strip()
    m = _PO_RE.match(text)
    return m.group(1) if m else None


def read_orders(path: str | Path, sheet: str | None = None) -> OrdersFile:
    """Read a CSV/TXT/TSV or XLSX/XLSM file of POs. Raises OrdersError when the file cannot be used."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".xls":
        raise OrdersError(
            f"{path}: old Excel 97-2003 workbooks (.xls) cannot be read; open it in Excel and save it as "
            f".xlsx or CSV")
    if suffix not in SUPPORTED_SUFFIXES:
        raise OrdersError(
            f"{path}: unsupported file type {suffix or '(no extension)'!r}; supported: "
            f"{' '.join(SUPPORTED_SUFFIXES)}")
    if not path.exists():
        raise OrdersError(f"{path}: file not found (expected a {suffix} file with a PO_NUMBER column)")
    if path.is_dir():
        raise OrdersError(f"{path}: is a folder, not a file (expected a {suffix} file with a PO_NUMBER column)")
    try:
        head = _read_head(path)
    except OSError as exc:
        raise OrdersError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if not head:
        raise OrdersError(f"{path}: file is empty (expected a header row with a PO column such as PO_NUMBER)")

    if suffix in XLSX_SUFFIXES:
        sheet_used, grid = _read_xlsx(path, sheet, head)
        where = f"{path} (sheet {sheet_used!r})"
        table = _build(path, where, grid)
        table.sheet = sheet_used
    else:
        if sheet is not None:
            log.warning("%s: --sheet %r ignored: a CSV file has no sheets", path, sheet)
        table = _read_csv(path)
    log.info("%s: %d unique POs, %d duplicates, %d row problems (PO column %r, header on row %d)",
             path.name, len(table.tasks), len(table.duplicates), len(table.invalid), table.po_column,
             table.header_row)
    return table


# ---------------------------------------------------------------------------------------------------------- files

def _read_head(path: Path, size: int = 8) -> bytes:
    with path.open("rb") as fh:
        return fh.read(size)


def _cell_text(value: object) -> str:
    """One cell as the text a person sees; whole floats lose their '.0' (Excel stores every number as float)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        return repr(value)
    if isinstance(value, _dt.datetime):
        return value.date().isoformat() if value.time() == _dt.time() else value.isoformat(sep=" ")
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    return str(value)


def _read_xlsx(path: Path, sheet: str | None, head: bytes) -> tuple[str, list[tuple[int, list[str]]]]:
    """(sheet name, [(row number, cells)]) from an .xlsx/.xlsm, read-only and closed again at once."""
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        raise OrdersError(
            f"{path}: this is an old Excel 97-2003 workbook (or an encrypted one) despite its name; open it in "
            f"Excel and save it as .xlsx (without a password) or CSV")
    if not head.startswith(b"PK"):
        raise OrdersError(f"{path}: not a valid Excel workbook (not a zip archive); expected an .xlsx file "
                          f"saved by Excel, or rename a text file to .csv")
    import openpyxl  # lazily: CSV users do not pay for it

    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged workbook makes openpyxl raise almost anything
        raise OrdersError(f"{path}: cannot be read as an Excel workbook ({type(exc).__name__}: {exc}); "
                          f"expected an .xlsx file saved by Excel") from exc
    try:
        names = list(wb.sheetnames)
        worksheets = [ws.title for ws in wb.worksheets]
        if sheet is not None:
            chosen = _pick_sheet(sheet, names)
            if chosen is None:
                raise OrdersError(f"{path}: no sheet named {sheet!r}; available sheets: "
                                  f"{', '.join(repr(n) for n in names)}")
            if chosen not in worksheets:
                raise OrdersError(f"{path}: sheet {chosen!r} is a chart, not a table of POs; worksheets: "
                                  f"{', '.join(repr(n) for n in worksheets)}")
        else:
            chosen = _pick_sheet(DEFAULT_SHEET, worksheets) or (worksheets[0] if worksheets else None)
            if chosen is None:
                raise OrdersError(f"{path}: the workbook has no worksheet (expected a sheet with a PO_NUMBER "
                                  f"column)")
        ws = wb[chosen]
        ws.reset_dimensions()  # some writers store a wrong <dimension>; read what is really there
        grid: list[tuple[int, list[str]]] = []
        try:
            for number, values in enumerate(ws.iter_rows(min_row=1, values_only=True), start=1):
                cells = [_cell_text(v) for v in values]
                if any(c.strip() for c in cells):
                    grid.append((number, cells))
        except Exception as exc:  # noqa: BLE001 - same: damaged sheet XML
            raise OrdersError(f"{path}: sheet {chosen!r} cannot be read ({type(exc).__name__}: {exc}); "
                              f"expected an .xlsx file saved by Excel") from exc
        if not grid:
            raise OrdersError(f"{path}: sheet {chosen!r} is empty (expected a header row with a PO column such "
                              f"as PO_NUMBER)")
        return chosen, grid
    finally:
        wb.close()  # read-only mode keeps the file open (and locked on Windows) until closed


def _pick_sheet(wanted: str, names: Sequence[str]) -> str | None:
    if wanted in names:
        return wanted
    folded = [n for n in names if n.strip().casefold() == wanted.strip().casefold()]
    return folded[0] if len(folded) == 1 else None


def _decode(path: Path, data: bytes) -> tuple[str, str]:
    """(text, encoding): BOMs first, then strict UTF-8, then cp1252 (Excel on Windows), then latin-1."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data.decode("utf-8-sig", errors="replace"), "utf-8-sig"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel's "Unicode Text": UTF-16 with BOM, tab-separated
        return data.decode("utf-16", errors="replace"), "utf-16"
    if data.startswith(b"PK\x03\x04"):
        raise OrdersError(f"{path}: this is an Excel workbook, not a text file; rename it to .xlsx")
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        raise OrdersError(f"{path}: this is an old Excel 97-2003 workbook, not a text file; open it in Excel "
                          f"and save it as .xlsx or CSV")
    if b"\x00" in data:
        raise OrdersError(f"{path}: binary content, not a text file (expected CSV text with a PO_NUMBER "
                          f"header)")
    for encoding in CSV_ENCODINGS[1:]:
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes any bytes")  # pragma: no cover


def _read_csv(path: Path) -> OrdersFile:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OrdersError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    text, encoding = _decode(path, data)
    if not text.strip():
        raise OrdersError(f"{path}: file is empty (expected a header row with a PO column such as PO_NUMBER)")

    first_error: OrdersError | None = None
    for delimiter in _delimiter_candidates(text, path.suffix.lower()):
        try:
            grid = _parse_csv(text, delimiter)
        except csv.Error as exc:
            first_error = first_error or OrdersError(f"{path}: not readable as CSV ({exc})")
            continue
        try:
            table = _build(path, str(path), grid)
        except OrdersError as exc:
            first_error = first_error or exc
            continue
        table.encoding, table.delimiter = encoding, delimiter
        log.debug("%s: encoding %s, delimiter %r", path.name, encoding, delimiter)
        return table
    assert first_error is not None
    raise first_error


def _delimiter_candidates(text: str, suffix: str) -> list[str]:
    """Delimiters to try, most likely first; the one whose parse shows a PO header wins.

    csv.Sniffer guesses well on regular files but fails on one-column files and on files with commas inside
    quoted names; counting in the first line is the fallback; trying all three makes the choice robust.
    """
    order: list[str] = []
    if suffix == ".tsv":
        order.append("\t")
    sample = text[:65536]
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters="".join(CSV_DELIMITERS)).delimiter
        if sniffed in CSV_DELIMITERS:
            order.append(sniffed)
    except csv.Error:
        pass
    first_line = next((ln for ln in text.splitlines() if ln.strip()), "")
    counted = sorted(CSV_DELIMITERS, key=lambda d: -first_line.count(d))
    for d in [*counted, *CSV_DELIMITERS]:
        if d not in order:
            order.append(d)
    # A delimiter that occurs in the header line is more plausible than the sniffer's guess without it.
    with_count = [d for d in order if first_line.count(d)]
    return with_count + [d for d in order if d not in with_count]


def _parse_csv(text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """[(record number, cells)] of the non-blank records; a record with embedded newlines is one row, as in Excel."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar='"', doublequote=True,
                        skipinitialspace=False, strict=False)
    grid = []
    for number, cells in enumerate(reader, start=1):
        if any(c.strip() for c in cells):
            grid.append((number, list(cells)))
    return grid


# ------------------------------------------------------------------------------------------------ table building

def _column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def _find_header(grid: list[tuple[int, list[str]]]) -> tuple[int, int] | None:
    """(position in grid, PO column index) of the first row within the first rows that names a PO column."""
    for pos, (number, cells) in enumerate(grid):
        if number > HEADER_SEARCH_ROWS:
            break
        ranked = [(_PO_HEADER_KEYS[_header_key(c)], i) for i, c in enumerate(cells)
                  if _header_key(c) in _PO_HEADER_KEYS]
        if ranked:
            return pos, min(ranked)[1]
    return None


def _no_header_error(where: str, grid: list[tuple[int, list[str]]]) -> OrdersError:
    number, cells = grid[0]
    found = [c.strip() for c in cells if c.strip()]
    accepted = ", ".join(repr(n) for n in PO_HEADER_NAMES)
    msg = (f"{where}: no PO column found; expected a header row within the first {HEADER_SEARCH_ROWS} rows "
           f"with one of {accepted} (case, spaces, '_', '-', '.' ignored). "
           f"Row {number} has: {', '.join(repr(c) for c in found[:20])}")
    if found and normalize_po(found[0]) is not None:
        msg += ". It looks like a PO number: add a header cell PO_NUMBER above the numbers"
    return OrdersError(msg)


def _unique_headers(cells: list[str], width: int) -> list[str]:
    headers: list[str] = []
    seen: set[str] = set()
    for i in range(width):
        name = cells[i].strip() if i < len(cells) else ""
        name = name or f"Column {_column_letter(i)}"
        base, n = name, 1
        while name in seen or name == ROW_KEY:
            n += 1
            name = f"{base} ({n})"
        seen.add(name)
        headers.append(name)
    return headers


def _build(path: Path, where: str, grid: list[tuple[int, list[str]]]) -> OrdersFile:
    """Turn rows of cell texts into headers, data rows, unique tasks and the row problems."""
    if not grid:
        raise OrdersError(f"{where}: file is empty (expected a header row with a PO column such as PO_NUMBER)")
    found = _find_header(grid)
    if found is None:
        raise _no_header_error(where, grid)
    pos, po_index = found
    header_number, header_cells = grid[pos]
    data = grid[pos + 1:]

    # Width: the header's last named cell, or further when data reaches beyond it.
    width = max([i + 1 for i, c in enumerate(header_cells) if c.strip()] or [1])
    for _, cells in data:
        filled = [i + 1 for i, c in enumerate(cells) if c.strip()]
        if filled:
            width = max(width, filled[-1])
    headers = _unique_headers(header_cells, width)
    po_column = headers[po_index]

    marker = next((i for i, c in enumerate(header_cells[:width]) if c.strip() == FOLDER_LEVEL_MARKER), None)
    level_columns = [] if marker is None else [
        headers[i] for i in range(marker + 1, width) if i != po_index and not is_result_column(headers[i])]

    table = OrdersFile(path=path, sheet=None, headers=headers, rows=[], po_column=po_column,
                       header_row=header_number)
    first_seen: dict[str, int] = {}
    for number, cells in data:
        row = {h: (cells[i] if i < len(cells) else "") for i, h in enumerate(headers)}
        row[ROW_KEY] = str(number)
        table.rows.append(row)
        raw = row[po_column]
        if not raw.strip():
            table.invalid.append(RowProblem(number, raw, f"row {number}: PO number is empty"))
            continue
        po = normalize_po(raw)
        if po is None:
            table.invalid.append(RowProblem(number, raw, f"row {number}: {raw.strip()!r} is not a PO number "
                                                         f"({_PO_HINT})"))
            continue
        if po in first_seen:
            table.duplicates.append(Duplicate(number, po, first_seen[po]))
            continue
        first_seen[po] = number
        levels = tuple(v for v in (row[c].strip() for c in level_columns) if v)
        table.tasks.append(PoTask(po_number=po, row=number, raw=raw, folder_levels=levels))
    return table


def describe_problems(orders: OrdersFile) -> list[str]:
    """One line per row problem and duplicate, in row order, for the CLI and the log."""
    lines = [(p.row, p.message) for p in orders.invalid]
    lines += [(d.row, f"row {d.row}: PO {d.po_number} is a duplicate of row {d.first_row} (processed once)")
              for d in orders.duplicates]
    return [msg for _, msg in sorted(lines)]
