"""The results workbook: the user's own rows with the outcome of each PO beside them, plus a summary.

Users filter and sort this file in Excel and feed it back as the next run's input, so it keeps their columns
and row order, replaces (never doubles) earlier result columns, and is safe to open: text from a portal that
starts with "=" stays text. It is written atomically, and a copy open in Excel on Windows does not lose a run.

Over 400 lines on purpose: the file reads as the workbook does, one section per sheet (Results,
Summary, Attention), then the cell rules and the atomic save they all share; split by sheet, each
part would import those shared rules and nothing else.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import secrets
from pathlib import Path
from typing import Any, Mapping

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, Cell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from pobatch.core.preparation.orders import DETAIL_COLUMNS, RESULT_COLUMNS, ROW_KEY, OrdersFile, is_result_column
from pobatch.core.reports.attention import attention_list
from pobatch.core.reports.changes import CHANGE_WORDS, change_kind
from pobatch.core.results import PoOutcome
from pobatch.core.status import Status

__all__ = ["RESULT_COLUMNS", "DETAIL_COLUMNS", "RESULTS_SHEET", "SUMMARY_SHEET", "ATTENTION_SHEET", "ATTENTION_COLUMNS",
           "NEW_SHEET", "NEW_COLUMNS", "CHANGE_WORDS", "STATUS_FILLS", "write_results"]

log = logging.getLogger(__name__)

RESULTS_SHEET = "Results"
SUMMARY_SHEET = "Summary"
ATTENTION_SHEET = "Attention"
ATTENTION_COLUMNS = ("ROW", "PO_NUMBER", "STATUS", "WHAT_HAPPENED", "WHAT_TO_DO", "DETAILS")
NEW_SHEET = "New"
NEW_COLUMNS = ("PO_NUMBER", "SUPPLIER", "FILE", "SIZE", "WHEN", "CHANGE", "FOLDER")
NOTHING_NEW = "Nothing new in this run."
NOTHING_NEEDS_ATTENTION = "Nothing needs you: every PO is done."
MAX_CELL_CHARS = 32_767  # Excel's limit per cell
MAX_HYPERLINK_CHARS = 2_079  # Excel ignores longer link targets
MIN_WIDTH, MAX_WIDTH = 8, 60
FALLBACK_TRIES = 50

# Characters that make a spreadsheet treat text as a formula (OWASP CSV/formula injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# (fill, font colour) per status: Excel's own "good / neutral / bad" palette, so it reads as familiar.
_GREEN, _AMBER, _RED = ("C6EFCE", "006100"), ("FFEB9C", "9C5700"), ("FFC7CE", "9C0006")
_BLUE, _GREY, _ORANGE = ("DDEBF7", "1F4E78"), ("EDEDED", "404040"), ("FCE4D6", "833C0B")
STATUS_FILLS: dict[Status, tuple[str, str]] = {
    Status.PENDING: _GREY,
    Status.RUNNING: _BLUE,
    Status.COMPLETED: _GREEN,
    Status.PARTIAL: _AMBER,
    Status.NO_ATTACHMENTS: _BLUE,
    Status.PO_NOT_FOUND: _ORANGE,
    Status.LOGIN_REQUIRED: _RED,
    Status.TIMEOUT: _AMBER,
    Status.FAILED: _RED,
    Status.INTERRUPTED: _AMBER,
}
_HEADER_FONT = Font(bold=True)
_HEADER_FILL = PatternFill("solid", fgColor="D9E1F2")
_LINK_FONT = Font(color="0563C1", underline="single")


def write_results(
    path: str | Path,
    orders: OrdersFile,
    outcomes: Mapping[str, PoOutcome],
    *,
    run_info: Mapping[str, object] | None = None,
    report_link: str | None = None,
    run_id: str = "",
    changes: list[Mapping[str, Any]] | None = None,
) -> Path:
    """Write the results workbook and return where it went (another name if the target is open in Excel).

    `changes` are the run store's files that run `run_id` brought or found gone (RunStore.file_changes):
    the NEW_FILES column and the "New" sheet."""
    target = Path(path)
    wb = Workbook()
    results = wb.active
    results.title = RESULTS_SHEET
    new_by_po: dict[str, int] = {}
    for c in changes or ():
        if c.get("brought_by") == run_id:
            new_by_po[c["key"]] = new_by_po.get(c["key"], 0) + 1
    _fill_results(results, orders, outcomes, new_by_po)
    _fill_summary(wb.create_sheet(SUMMARY_SHEET), orders, outcomes, run_info or {}, report_link)
    _fill_attention(wb.create_sheet(ATTENTION_SHEET), orders, outcomes)
    _fill_new(wb.create_sheet(NEW_SHEET), orders, outcomes, run_id, changes or [])
    return _save_atomically(wb, target)


def _fill_new(ws: Worksheet, orders: OrdersFile, outcomes: Mapping[str, PoOutcome], run_id: str,
              changes: list[Mapping[str, Any]]) -> None:
    """One row per file this run brought (or fetched again), and per file it found gone from the portal."""
    _write_header(ws, list(NEW_COLUMNS))
    mine = {t.po_number for t in orders.tasks}
    r = 1
    for c in changes:
        outcome = outcomes.get(c["key"])
        if outcome is None or c["key"] not in mine:
            continue
        r += 1
        kind = change_kind(c, run_id)
        when: Any = (_dt.datetime.fromtimestamp(c["mtime_ns"] / 1e9).replace(microsecond=0)
                     if kind != "removed" and c.get("mtime_ns") else _as_datetime(outcome.last_processed))
        folder = outcome.download_folder
        for col, value in enumerate((c["key"], outcome.supplier, c["name"], c["size"], when, CHANGE_WORDS[kind],
                                     folder), start=1):
            _put(ws.cell(r, col), value)
        if isinstance(ws.cell(r, 5).value, _dt.datetime):
            ws.cell(r, 5).number_format = "yyyy-mm-dd hh:mm:ss"
        uri = _file_uri(str(Path(folder) / c["name"])) if folder else ""
        if uri:
            _link(ws.cell(r, 3), uri)
    if r == 1:
        _put(ws.cell(2, 1), NOTHING_NEW)
    _finish_sheet(ws, len(NEW_COLUMNS), autofilter=r > 1)


# ------------------------------------------------------------------------------------------------------ Results

def _fill_results(ws: Worksheet, orders: OrdersFile, outcomes: Mapping[str, PoOutcome],
                  new_by_po: Mapping[str, int]) -> None:
    input_headers = [h for h in orders.headers if not is_result_column(h)]
    headers = input_headers + list(RESULT_COLUMNS) + list(DETAIL_COLUMNS)
    _write_header(ws, headers)

    task_by_row = {t.row: t for t in orders.tasks}
    first_row_of = {t.po_number: t.row for t in orders.tasks}
    dup_by_row = {d.row: d for d in orders.duplicates}
    problem_by_row = {p.row: p for p in orders.invalid}
    status_col = len(input_headers) + 1

    for out_row, row in enumerate(orders.rows, start=2):
        for col, header in enumerate(input_headers, start=1):
            _put(ws.cell(out_row, col), row.get(header, ""))
        number = int(row[ROW_KEY])
        values: dict[str, Any] = {}
        link_cols: dict[str, str] = {}
        if number in task_by_row:
            values, link_cols = _outcome_values(task_by_row[number].po_number, outcomes)
            if task_by_row[number].po_number in outcomes:
                values["NEW_FILES"] = new_by_po.get(task_by_row[number].po_number, 0)
        elif number in dup_by_row:
            dup = dup_by_row[number]
            values, link_cols = _outcome_values(dup.po_number, outcomes)
            first = first_row_of.get(dup.po_number, dup.first_row)
            own = values.get("ERROR_MESSAGE") or ""
            values["ERROR_MESSAGE"] = f"duplicate of row {first}" + (f"; {own}" if own else "")
        elif number in problem_by_row:
            values = {"STATUS": "", "ERROR_MESSAGE": problem_by_row[number].message}
        for offset, name in enumerate(RESULT_COLUMNS + DETAIL_COLUMNS):
            cell = ws.cell(out_row, status_col + offset)
            _put(cell, values.get(name))
            if name in link_cols:
                _link(cell, link_cols[name])
            elif name == "LAST_PROCESSED" and isinstance(cell.value, _dt.datetime):
                cell.number_format = "yyyy-mm-dd hh:mm:ss"
        _color_status(ws.cell(out_row, status_col))
    _finish_sheet(ws, len(headers), autofilter=True)


def _outcome_values(po: str, outcomes: Mapping[str, PoOutcome]) -> tuple[dict[str, Any], dict[str, str]]:
    """The result cells of one PO, and which of them are links (column -> target)."""
    outcome = outcomes.get(po)
    if outcome is None:
        return {"STATUS": Status.PENDING.value}, {}
    status = outcome.status.value if isinstance(outcome.status, Status) else str(outcome.status)
    values: dict[str, Any] = {
        "STATUS": status,
        "SUPPLIER": outcome.supplier,
        "ATTACHMENTS_FOUND": outcome.attachments_found,
        "ATTACHMENTS_DOWNLOADED": outcome.attachments_downloaded,
        # A name the portal served that had to change (too long, or a second file of one name) is
        # shown in full after the name on disk.
        "ATTACHMENT_NAMES": ";".join(f"{f.name} [{f.original_name}]" if f.original_name else f.name
                                     for f in outcome.files),
        "DOWNLOAD_FOLDER": outcome.download_folder,
        "PO_URL": outcome.po_url,
        "ERROR_MESSAGE": outcome.error_message,
        "LAST_PROCESSED": _as_datetime(outcome.last_processed),
        "REASON": outcome.reason,
        "ATTEMPTS": outcome.attempts,
    }
    links: dict[str, str] = {}
    folder_uri = _file_uri(outcome.download_folder)
    if folder_uri:
        links["DOWNLOAD_FOLDER"] = folder_uri
    if re.match(r"^https?://", outcome.po_url or "", re.IGNORECASE):
        links["PO_URL"] = outcome.po_url
    return values, links


def _as_datetime(text: str) -> _dt.datetime | str:
    """ISO text as a real Excel date-time (sortable); Excel has no time zones, so the wall time is kept."""
    if not text:
        return ""
    try:
        value = _dt.datetime.fromisoformat(text)
    except ValueError:
        return text
    return value.replace(tzinfo=None, microsecond=0)


def _file_uri(folder: str) -> str:
    if not folder:
        return ""
    try:
        return Path(folder).absolute().as_uri()
    except ValueError:
        return ""


# ------------------------------------------------------------------------------------------------------ Summary

def _fill_summary(ws: Worksheet, orders: OrdersFile, outcomes: Mapping[str, PoOutcome],
                  run_info: Mapping[str, object], report_link: str | None) -> None:
    _write_header(ws, ["Status", "Count"])
    unique = [outcomes.get(t.po_number) for t in orders.tasks]
    counts = {s: 0 for s in Status}
    for outcome in unique:
        counts[outcome.status if outcome is not None else Status.PENDING] += 1
    r = 2
    for status, count in counts.items():
        _put(ws.cell(r, 1), status.value)
        _color_status(ws.cell(r, 1))
        ws.cell(r, 2, count)
        r += 1

    done = [o for o in unique if o is not None]
    totals: list[tuple[str, object]] = [
        ("Rows in file", len(orders.rows)),
        ("POs in file", len(orders.tasks) + len(orders.duplicates)),
        ("Unique POs", len(orders.tasks)),
        ("Duplicates", len(orders.duplicates)),
        ("Invalid rows", len(orders.invalid)),
        ("Attachments found", sum(o.attachments_found for o in done)),
        ("Attachments downloaded", sum(o.attachments_downloaded for o in done)),
        ("Files downloaded", sum(len(o.files) for o in done)),
        ("Bytes downloaded", sum(f.size or 0 for o in done for f in o.files)),
    ]
    r = _section(ws, r + 1, "Totals", totals)
    info = [("Input file", str(orders.path))] + ([("Sheet", orders.sheet)] if orders.sheet else [])
    info += [(str(k), _info_value(v)) for k, v in run_info.items()]
    r = _section(ws, r + 1, "Run", info)
    if report_link:
        _put(ws.cell(r + 1, 1), "Report")
        ws.cell(r + 1, 1).font = _HEADER_FONT
        cell = ws.cell(r + 1, 2)
        _put(cell, report_link)
        target = report_link if re.match(r"^[a-z][a-z0-9+.-]*://", report_link, re.I) else _file_uri(report_link)
        if target:
            _link(cell, target)
    _finish_sheet(ws, 2, autofilter=False)


def _section(ws: Worksheet, r: int, title: str, pairs: list[tuple[str, object]]) -> int:
    """A bold title row then key/value rows; returns the next free row."""
    _put(ws.cell(r, 1), title)
    ws.cell(r, 1).font = _HEADER_FONT
    for key, value in pairs:
        r += 1
        _put(ws.cell(r, 1), key)
        _put(ws.cell(r, 2), value)
        if isinstance(ws.cell(r, 2).value, _dt.datetime):
            ws.cell(r, 2).number_format = "yyyy-mm-dd hh:mm:ss"
    return r + 1


def _info_value(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, _dt.datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, Status):
        return value.value
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(str(v) for v in value)
    return str(value)


# ---------------------------------------------------------------------------------------------------- Attention

def _fill_attention(ws: Worksheet, orders: OrdersFile, outcomes: Mapping[str, PoOutcome]) -> None:
    """Only the rows a person must act on, in file order, each with what happened and what to do.

    The same rule as the end-of-run verdict (pobatch.core.reports.attention), so "60 need attention" means 60 lines here,
    plus the rows whose PO number is not a PO number at all."""
    _write_header(ws, list(ATTENTION_COLUMNS))
    row_of = {t.po_number: t.row for t in orders.tasks}
    lines: list[tuple[int, tuple[object, ...]]] = []
    for item in attention_list((t.po_number for t in orders.tasks), outcomes):
        lines.append((row_of[item.po_number], (row_of[item.po_number], item.po_number, item.status,
                                               item.what_happened, item.what_to_do, item.details)))
    for problem in orders.invalid:
        lines.append((problem.row, (problem.row, problem.raw, "", "This row has no valid PO number.",
                                    "Correct the PO number in your file (e.g. 100001 or PO100001).",
                                    problem.message)))
    r = 1
    for r, (_row, values) in enumerate(sorted(lines, key=lambda line: line[0]), start=2):
        for col, value in enumerate(values, start=1):
            _put(ws.cell(r, col), value)
        _color_status(ws.cell(r, 3))
    if r == 1:
        _put(ws.cell(2, 1), NOTHING_NEEDS_ATTENTION)
    _finish_sheet(ws, len(ATTENTION_COLUMNS), autofilter=r > 1)


# ------------------------------------------------------------------------------------------------ cells & style

def _put(cell: Cell, value: object) -> None:
    """Write one value safely: text is cleaned, bounded and never becomes a formula."""
    if value is None or value == "":
        cell.value = None
        return
    if isinstance(value, str):
        text = ILLEGAL_CHARACTERS_RE.sub("", value)[:MAX_CELL_CHARS]
        cell.value = text
        cell.data_type = "s"  # openpyxl would otherwise store "=..." as a formula and "#N/A" as an error
        if text.startswith(_FORMULA_STARTS):
            cell.quotePrefix = True  # and Excel keeps it text when the user edits the cell
        return
    cell.value = value


def _link(cell: Cell, target: str) -> None:
    if len(target) > MAX_HYPERLINK_CHARS:
        return
    cell.hyperlink = target
    cell.font = _LINK_FONT


def _color_status(cell: Cell) -> None:
    try:
        status = Status(cell.value)
    except ValueError:
        return
    fill, font = STATUS_FILLS[status]
    cell.fill = PatternFill("solid", fgColor=fill)
    cell.font = Font(color=font, bold=status is not Status.COMPLETED and status is not Status.PENDING)


def _write_header(ws: Worksheet, headers: list[str]) -> None:
    for col, name in enumerate(headers, start=1):
        cell = ws.cell(1, col)
        _put(cell, name)
        cell.font = _HEADER_FONT
        cell.fill = _HEADER_FILL
        cell.alignment = Alignment(vertical="center")
    ws.freeze_panes = "A2"


def _finish_sheet(ws: Worksheet, ncols: int, *, autofilter: bool) -> None:
    if autofilter:
        ws.auto_filter.ref = f"A1:{get_column_letter(max(ncols, 1))}{max(ws.max_row, 1)}"
    widths = [MIN_WIDTH] * (ncols + 1)
    for row in ws.iter_rows(min_row=1, max_col=ncols):
        for cell in row:
            if cell.value is None:
                continue
            text = cell.value.isoformat(sep=" ") if isinstance(cell.value, _dt.datetime) else str(cell.value)
            longest = max((len(line) for line in text.splitlines()), default=0)
            widths[cell.column] = max(widths[cell.column], min(longest + 2, MAX_WIDTH))
    for col in range(1, ncols + 1):
        ws.column_dimensions[get_column_letter(col)].width = widths[col] + (2 if autofilter else 0)


# ------------------------------------------------------------------------------------------------------- saving

def _candidates(target: Path) -> list[Path]:
    return [target] + [target.with_name(f"{target.stem} ({n}){target.suffix}") for n in range(1, FALLBACK_TRIES)]


def _save_atomically(wb: Workbook, target: Path) -> Path:
    """Save next to the target and rename over it: a reader never sees half a workbook.

    A PermissionError on the rename is what Windows says when Excel has the target open; the run's results
    then go to "<name> (1).xlsx" (or the next free-to-write number) instead of being lost.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would survive the rename; a plain exclusive create honours the umask.
    tmp_name = str(target.parent / f".{target.stem}.{secrets.token_hex(6)}.tmp")
    with open(tmp_name, "xb"):
        pass
    try:
        wb.save(tmp_name)
        last_error: OSError | None = None
        for candidate in _candidates(target):
            try:
                os.replace(tmp_name, candidate)
            except (PermissionError, IsADirectoryError) as exc:
                last_error = exc
                continue
            if candidate != target:
                log.warning("%s could not be replaced (open in Excel?): results written to %s (%s)",
                            target, candidate, last_error)
            return candidate
        assert last_error is not None
        raise last_error
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        except OSError as exc:  # pragma: no cover - best effort on a failing disk
            log.warning("could not remove temporary file %s: %s", tmp_name, exc)
        raise
