"""The run log: `<out>/.pobatch/logs/<run id>.log`, one plain UTF-8 line per thing that happened.

The run store and the HTML report hold the same facts, but a person helping from afar needs one text
file they can read in any editor and search: this one. It is written by the main process alone (the
workers' log records and events already come to it), more detailed than the console: every page
state with its evidence, every retry and why, every download with its time and (in the result line)
size, every worker start and exit. Each line is written and flushed at once, so a main process
killed mid-run leaves a log readable up to the kill. Old logs are pruned when a new one opens.

Line format (columns separated by two spaces, the detail last and free-form):

    2026-01-02 10:11:12.345  w1/popup-0  PO 100001 a1  open                   0.42s  ready           | detail

MainApp opens it once the run has its id (records logged before that are kept and written first)
and feeds it through the view it already calls for every event and result (`RunLogView`), so the
stream loop needs no second listener.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from pobatch.core.events import PoEvent
from pobatch.core.download_progress import SpeedMeter, describe, human_bytes, parse_progress
from pobatch.core.monitoring.redaction import redact, redact_url
from pobatch.corelib.worker_pool.tasks import Event

log = logging.getLogger(__name__)

KEEP_RUNS = 30
KEEP_BYTES = 200 * 1024 * 1024
BUFFER_LIMIT = 5000  # records kept while the run has no id yet (a run that never starts has few)
# Loggers that would flood the log (every WebDriver command) at INFO: kept at WARNING while a run logs.
NOISY_LOGGERS = ("selenium", "urllib3", "WDM", "websocket", "asyncio")
_WORKER_TAG = re.compile(r"^\[([^\]]{1,40})\] ")


def prune_logs(folder: Path, keep_runs: int = KEEP_RUNS, keep_bytes: int = KEEP_BYTES,
               keep: Path | None = None) -> list[Path]:
    """Delete the oldest logs beyond the last `keep_runs` runs or `keep_bytes` bytes, whichever keeps
    fewer; `keep` (the log being written) always stays. Returns what was deleted."""
    try:
        logs = [(p.stat().st_mtime, p.stat().st_size, p) for p in folder.glob("*.log") if p.is_file()]
    except OSError:
        return []
    logs.sort(key=lambda t: (t[0], t[2].name), reverse=True)
    kept = count = 0
    removed: list[Path] = []
    if keep is not None:
        kept = sum(size for _m, size, p in logs if p == keep)
        count = 1 if any(p == keep for _m, _s, p in logs) else 0
    full = False
    for _mtime, size, path in logs:
        if path == keep:
            continue
        if not full and count + 1 <= keep_runs and kept + size <= keep_bytes:
            count, kept = count + 1, kept + size
            continue
        full = True  # everything older goes too: never a gap in the middle of the history
        try:
            path.unlink()
            removed.append(path)
        except OSError as exc:  # open in an editor on Windows: the next run tries again
            log.debug("old log %s not pruned: %s", path, exc)
    return removed


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) if text else ""


class RunLog:
    """One run's log file. `begin()` starts listening to logging at once; `open()` names the file."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self._file: TextIO | None = None
        self._lock = threading.RLock()
        self._buffer: list[logging.LogRecord] = []
        self._handler = _Handler(self)
        self._restore: list[tuple[Any, int]] = []
        self._speed = SpeedMeter()
        self._last: dict[tuple[str, str, int], float] = {}  # (worker, PO, attempt) -> time of its last line
        self._started: dict[tuple[str, str, int], float] = {}  # ... -> when the attempt began

    # -- lifecycle ----------------------------------------------------------------------------------
    @classmethod
    def begin(cls) -> "RunLog":
        """Listen to every log record from now on (INFO and up; the console keeps its own level)."""
        self = cls()
        root = logging.getLogger()
        console_level = root.getEffectiveLevel()
        if console_level > logging.INFO:
            for handler in root.handlers:  # the console shows what it showed before, no more
                if handler.level == logging.NOTSET:
                    self._restore.append((handler, handler.level))
                    handler.setLevel(console_level)
            self._restore.append((root, root.level))
            root.setLevel(logging.INFO)  # also the level the pool hands its workers: they forward INFO
        for name in NOISY_LOGGERS:
            noisy = logging.getLogger(name)
            if noisy.level == logging.NOTSET:
                self._restore.append((noisy, noisy.level))
                noisy.setLevel(logging.WARNING)
        root.addHandler(self._handler)
        return self

    def open(self, path: Path, run_id: str, facts: dict[str, Any] | None = None) -> "RunLog":
        """Create the file, prune old logs, write the header and what was logged so far."""
        path.parent.mkdir(parents=True, exist_ok=True)
        # newline="\n": the same bytes on every OS; line buffering + flush per line: readable after a kill.
        self._file = open(path, "a", encoding="utf-8", errors="replace", newline="\n", buffering=1)
        self.path = path
        prune_logs(path.parent, keep=path)
        self._write(f"# pobatch run {run_id}, log opened {_clock(time.time())}, pid {os.getpid()}")
        self._write("# columns: time  worker[/window]  PO attempt  step  duration  outcome  | detail")
        for key, value in (facts or {}).items():
            self._write(f"# {key}: {redact(_one_line(str(value)))}")
        with self._lock:
            buffered, self._buffer = self._buffer, []
        for record in buffered:
            self.record(record)
        return self

    def close(self, summary: Any = None) -> None:
        """Write the run's end (when there is a summary), stop listening, restore the log levels."""
        root = logging.getLogger()
        root.removeHandler(self._handler)
        for obj, level in reversed(self._restore):
            obj.setLevel(level)
        self._restore.clear()
        if summary is not None:
            counts = ", ".join(f"{k} {v}" for k, v in summary.counts.items() if v)
            self.line(time.time(), "main", "", 0, "run_end", None, f"exit {summary.exit_code}",
                      f"{counts}" + (f"; {summary.message}" if summary.message else ""))
        with self._lock:
            file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError:  # the last lines did not fit (a full disk): the run's own answer stands
                pass

    def crash(self, exc: BaseException) -> None:
        """What stopped the run when it did not finish by itself, with its traceback."""
        import traceback

        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.line(time.time(), "main", "", 0, "run_stopped", None, type(exc).__name__,
                  text.replace("\n", " / "))

    # -- what it writes -----------------------------------------------------------------------------
    def _write(self, text: str) -> None:
        with self._lock:
            if self._file is None:
                return
            try:
                self._file.write(text + "\n")
                self._file.flush()
            except (OSError, ValueError):  # a full disk must not stop the run: the store has it all
                pass

    def line(self, ts: float, who: str, po: str, attempt: int, step: str, duration: float | None,
             outcome: str = "", detail: str = "") -> None:
        po_col = f"PO {po}" + (f" a{attempt}" if attempt else "") if po else "-"
        dur = f"{duration:.2f}s" if duration is not None else "-"
        text = f"{_clock(ts)}  {who or 'main':<12}  {po_col:<16}  {step:<22}  {dur:>8}  {outcome or '-':<16}"
        if detail:
            text += "  | " + redact(_one_line(detail))
        self._write(text)

    def record(self, record: logging.LogRecord) -> None:
        """A log record (the main process's own, or a worker's forwarded one tagged "[w1] ")."""
        if self._file is None:
            with self._lock:
                if len(self._buffer) < BUFFER_LIMIT:
                    self._buffer.append(record)
            return
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not fit its format
            message = str(record.msg)
        who = "main"
        tag = _WORKER_TAG.match(message)
        if tag:
            who, message = tag.group(1), message[tag.end():]
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            message += " | " + record.exc_text.replace("\n", " / ")
        self.line(record.created, who, "", 0, f"log.{record.levelname.lower()}", None, "",
                  f"{record.name}: {message}")

    def event(self, e: Event) -> None:
        """One event from a worker or window, with the time since the previous line of its attempt."""
        who = e.worker_id or "main"
        if e.window and e.window not in ("main", e.worker_id):
            who += f"/{e.window}"
        key = (e.worker_id, e.task_key, e.attempt)
        action = str(getattr(e.action, "value", e.action))
        if action == PoEvent.ATTEMPT_START:
            self._started[key] = e.ts
        previous = self._last.get(key)
        duration = e.ts - previous if previous is not None else None
        if action == PoEvent.ATTEMPT_END and key in self._started:
            duration = e.ts - self._started.pop(key)
        self._last[key] = e.ts
        detail = e.detail or ""
        if action == PoEvent.DOWNLOAD_PROGRESS:
            progress = parse_progress(detail)
            if progress is not None:
                detail = describe(progress, self._speed.update(e.worker_id, progress, e.ts))
        elif action in (PoEvent.DOWNLOAD, PoEvent.ATTEMPT_END):
            self._speed.forget(e.worker_id)
        if e.url:
            detail = (detail + " " if detail else "") + f"url={redact_url(e.url)}"
        self.line(e.ts, who, e.task_key, e.attempt, action, duration, e.outcome, detail)
        if action == PoEvent.ATTEMPT_END:
            self._last.pop(key, None)

    def result(self, worker_id: str, outcome: Any) -> None:
        """A PO's result as recorded: status, reason, attempts, every file with its size, the folder."""
        files = "; ".join(f"{f.name} ({human_bytes(f.size)})" for f in outcome.files)
        took = outcome.finished - outcome.started if outcome.started and outcome.finished else None
        parts = [outcome.reason, f"{outcome.attempts} attempt(s)" if outcome.attempts else "",
                 f"{outcome.attachments_downloaded}/{outcome.attachments_found} file(s)" if outcome.attachments_found
                 else "", files, f"folder {outcome.download_folder}" if outcome.download_folder else "",
                 f"error: {outcome.error_message}" if outcome.error_message else ""]
        self.line(outcome.finished or time.time(), worker_id or "main", outcome.po_number, 0, "result", took,
                  outcome.status.value, ", ".join(p for p in parts if p))


class _Handler(logging.Handler):
    def __init__(self, run_log: RunLog) -> None:
        super().__init__(logging.INFO)
        self.run_log = run_log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.run_log.record(record)
        except Exception:
            self.handleError(record)


class RunLogView:
    """The view MainApp already tells about every event and result, passing each to the run log first
    and then to the console view (if any)."""

    def __init__(self, run_log: RunLog, inner: Any = None) -> None:
        self.run_log, self.inner = run_log, inner

    def start(self, run_id: str, total: int, skipped: int, mode: str) -> None:
        self.run_log.line(time.time(), "main", "", 0, "run_start", None, mode,
                          f"{total} PO(s) to process, {skipped} already completed and skipped")
        if self.inner:
            self.inner.start(run_id, total, skipped, mode)

    def event(self, event: Event) -> None:
        self.run_log.event(event)
        if self.inner:
            self.inner.event(event)

    def task_done(self, worker_id: str, outcome: Any) -> None:
        self.run_log.result(worker_id, outcome)
        if self.inner:
            self.inner.task_done(worker_id, outcome)

    def finish(self, summary: Any) -> None:
        if self.inner:
            self.inner.finish(summary)

    def __getattr__(self, name: str) -> Any:  # anything else a view offers
        if self.inner is None:
            raise AttributeError(name)
        return getattr(self.inner, name)


def run_facts(options: Any, mode: str, base_url: str) -> dict[str, Any]:
    """The options of the run as header lines: what was asked for, to compare with what happened."""
    facts: dict[str, Any] = {"mode": mode, "base_url": base_url}
    if dataclasses.is_dataclass(options):
        for f in dataclasses.fields(options):
            facts[f.name] = getattr(options, f.name)
    return facts


def append_after_run(path: Path | None, step: str, outcome: str = "", detail: str = "") -> None:
    """One more line in the log of a run that has ended (its file is closed): what happened after it,
    e.g. the --on-finish command. A log that cannot be written costs nothing: the console said it too."""
    if path is None:
        return
    run_log = RunLog()
    try:
        run_log._file = open(path, "a", encoding="utf-8", errors="replace", newline="\n", buffering=1)
    except OSError:
        return
    run_log.path = path
    try:
        run_log.line(time.time(), "main", "", 0, step, None, outcome, detail)
    finally:
        with run_log._lock:
            run_log._file.close()
            run_log._file = None
