"""The run store: one SQLite file (WAL) per output folder, the memory that makes a rerun resume.

Only the MainApp writes it; workers send results and events instead. Every write is its own short
transaction, so a crash loses at most the item in flight and never corrupts what was recorded.
"""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable

from pobatch.corelib.worker_pool.tasks import Event, TaskResult

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started REAL NOT NULL, finished REAL, mode TEXT, status TEXT,
    pid INTEGER, host TEXT, args TEXT, last_seen REAL
);
CREATE TABLE IF NOT EXISTS tasks (
    key TEXT PRIMARY KEY, status TEXT NOT NULL, reason TEXT DEFAULT '', error TEXT DEFAULT '',
    error_class TEXT DEFAULT '', attempts INTEGER DEFAULT 0, started REAL, finished REAL,
    run_id TEXT, worker_id TEXT DEFAULT '', data TEXT DEFAULT '{}', updated REAL
);
CREATE TABLE IF NOT EXISTS files (
    key TEXT NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
    source TEXT DEFAULT '', run_id TEXT, identity TEXT DEFAULT '', mtime_ns INTEGER DEFAULT 0,
    removed_by TEXT DEFAULT '', refetched INTEGER DEFAULT 0, PRIMARY KEY (key, name)
);
CREATE TABLE IF NOT EXISTS attempts (
    run_id TEXT NOT NULL, key TEXT NOT NULL, attempt INTEGER NOT NULL, worker_id TEXT DEFAULT '',
    started REAL, finished REAL, status TEXT, reason TEXT DEFAULT '', error TEXT DEFAULT ''
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, ts REAL NOT NULL, worker_id TEXT, window TEXT,
    task_key TEXT, attempt INTEGER, action TEXT NOT NULL, url TEXT, outcome TEXT, detail TEXT
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (run_id, ts);
CREATE INDEX IF NOT EXISTS attempts_by_key ON attempts (run_id, key);
CREATE TABLE IF NOT EXISTS activities (
    run_id TEXT NOT NULL, key TEXT NOT NULL, attempt INTEGER NOT NULL, worker_id TEXT DEFAULT '',
    started REAL, finished REAL, duration REAL, outcome TEXT DEFAULT '', detail TEXT DEFAULT '',
    PRIMARY KEY (run_id, key, attempt, worker_id)
);
CREATE TABLE IF NOT EXISTS recordings (
    run_id TEXT NOT NULL, key TEXT NOT NULL, attempt INTEGER NOT NULL, worker_id TEXT DEFAULT '',
    events BLOB NOT NULL, encoding TEXT NOT NULL, bytes INTEGER NOT NULL, count INTEGER NOT NULL,
    first_ts REAL, last_ts REAL, PRIMARY KEY (run_id, key, attempt, worker_id)
);
"""


# Columns the files table gained with refreshes: what a file is on the portal, when it was published,
# the run that found it gone from the portal, whether it was fetched again.
_FILE_COLUMNS_ADDED = {"identity": "TEXT DEFAULT ''", "mtime_ns": "INTEGER DEFAULT 0",
                       "removed_by": "TEXT DEFAULT ''", "refetched": "INTEGER DEFAULT 0"}


class RunStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(runs)")}
        if "last_seen" not in columns:  # a store written before runs had a heartbeat
            self._db.execute("ALTER TABLE runs ADD COLUMN last_seen REAL")
        have = {r["name"] for r in self._db.execute("PRAGMA table_info(files)")}
        for column, decl in _FILE_COLUMNS_ADDED.items():  # a store written before refreshes
            if column not in have:
                self._db.execute(f"ALTER TABLE files ADD COLUMN {column} {decl}")
        self._db.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )

    def _insert(self, table: str, replace: bool = False, **row: Any) -> None:
        """One row; the column names are this module's own, never a caller's text."""
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        self._db.execute(f"{verb} INTO {table}({', '.join(row)}) VALUES ({','.join('?' * len(row))})",
                         tuple(row.values()))

    # -- runs -----------------------------------------------------------------------------------
    def begin_run(self, mode: str, args: dict[str, Any] | None = None) -> str:
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        now = time.time()
        self._insert("runs", run_id=run_id, started=now, mode=mode, status="RUNNING", pid=os.getpid(),
                     host=socket.gethostname(), args=json.dumps(args or {}, default=str), last_seen=now)
        return run_id

    def finish_run(self, run_id: str, status: str) -> None:
        now = time.time()
        self._db.execute("UPDATE runs SET finished=?, last_seen=?, status=? WHERE run_id=?",
                         (now, now, status, run_id))

    def touch_run(self, run_id: str) -> None:
        """The run is alive now (its heartbeat): what a run killed without a word is last known by."""
        self._db.execute("UPDATE runs SET last_seen=? WHERE run_id=? AND status='RUNNING'", (time.time(), run_id))

    def interrupt_dead_runs(self, is_alive: Callable[[dict[str, Any]], bool]) -> list[str]:
        """Runs still RUNNING whose process is gone (killed, power cut) become INTERRUPTED, finished at
        the time they were last seen. `is_alive` gets the run's row and says whether its process lives."""
        dead = [dict(r) for r in self._db.execute("SELECT * FROM runs WHERE status='RUNNING'")
                if not is_alive(dict(r))]
        for run in dead:
            self._db.execute("UPDATE runs SET status='INTERRUPTED', finished=? WHERE run_id=? AND status='RUNNING'",
                             (run["last_seen"] or run["started"], run["run_id"]))
        return [r["run_id"] for r in dead]

    def runs(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute("SELECT * FROM runs ORDER BY started")]

    def run(self, run_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if not row:
            return None
        d = dict(row)
        d["args"] = json.loads(d.get("args") or "{}")
        return d

    def last_run_id(self) -> str | None:
        row = self._db.execute("SELECT run_id FROM runs ORDER BY started DESC LIMIT 1").fetchone()
        return row["run_id"] if row else None

    # -- tasks ----------------------------------------------------------------------------------
    def task(self, key: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM tasks WHERE key=?", (key,)).fetchone()
        return _task_row(row) if row else None

    def tasks(self) -> dict[str, dict[str, Any]]:
        return {r["key"]: _task_row(r) for r in self._db.execute("SELECT * FROM tasks")}

    def keys_with_status(self, statuses: Iterable[str]) -> set[str]:
        wanted = list(statuses)
        marks = ",".join("?" * len(wanted))
        return {r[0] for r in self._db.execute(f"SELECT key FROM tasks WHERE status IN ({marks})", wanted)}

    def mark_status(self, run_id: str, key: str, status: str, *, worker_id: str = "", started: float | None = None,
                    reason: str = "") -> None:
        """Record that a task changed state without a final result (RUNNING, PENDING, INTERRUPTED)."""
        now = time.time()
        self._db.execute(
            """INSERT INTO tasks(key, status, reason, run_id, worker_id, started, updated) VALUES (?,?,?,?,?,?,?)
               ON CONFLICT(key) DO UPDATE SET status=excluded.status, reason=excluded.reason,
               run_id=excluded.run_id, worker_id=excluded.worker_id,
               started=COALESCE(excluded.started, tasks.started), updated=excluded.updated""",
            (key, status, reason, run_id, worker_id, started, now),
        )

    def record_result(self, run_id: str, result: TaskResult, files: Iterable[dict[str, Any]] = ()) -> None:
        """The final word on one task for this run, with its files, in one transaction."""
        with self._tx():
            self._db.execute(
                """INSERT INTO tasks(key, status, reason, error, error_class, attempts, started, finished,
                   run_id, worker_id, data, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(key) DO UPDATE SET status=excluded.status, reason=excluded.reason,
                   error=excluded.error, error_class=excluded.error_class, attempts=excluded.attempts,
                   started=excluded.started, finished=excluded.finished, run_id=excluded.run_id,
                   worker_id=excluded.worker_id, data=excluded.data, updated=excluded.updated""",
                (result.key, result.status, result.reason, result.error, result.error_class, result.attempts,
                 result.started, result.finished, run_id, result.worker_id, json.dumps(result.data, default=str),
                 time.time()),
            )
            self._db.execute("DELETE FROM files WHERE key=?", (result.key,))
            self._db.executemany(
                "INSERT OR REPLACE INTO files(key, name, size, sha256, source, run_id, identity, mtime_ns, "
                "removed_by, refetched) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(result.key, f["name"], f["size"], f["sha256"], f.get("source", ""),
                  f.get("brought_by") or run_id, f.get("identity", ""), int(f.get("mtime_ns") or 0),
                  f.get("removed_on_portal", ""), int(bool(f.get("refetched")))) for f in files],
            )

    def files(self, key: str) -> list[dict[str, Any]]:
        """One task's files; `run_id` is the run that brought each (kept across refreshes)."""
        return [_file_row(r) for r in self._db.execute("SELECT * FROM files WHERE key=? ORDER BY name", (key,))]

    def file_changes(self, run_id: str) -> list[dict[str, Any]]:
        """What one run changed in the archive: the files it brought (new or fetched again) and those it
        found gone from the portal, by task and name."""
        return [_file_row(r) for r in self._db.execute(
            "SELECT * FROM files WHERE run_id=? OR removed_by=? ORDER BY key, name", (run_id, run_id))]

    # -- attempts and events ---------------------------------------------------------------------
    def record_attempt(self, run_id: str, key: str, attempt: int, worker_id: str, started: float,
                       finished: float, status: str, reason: str = "", error: str = "") -> None:
        self._insert("attempts", run_id=run_id, key=key, attempt=attempt, worker_id=worker_id, started=started,
                     finished=finished, status=status, reason=reason, error=error)

    def attempts(self, run_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute(
            "SELECT * FROM attempts WHERE run_id=? ORDER BY started", (run_id,))]

    def record_events(self, run_id: str, events: Iterable[Event]) -> None:
        rows = [(run_id, e.ts, e.worker_id, e.window, e.task_key, e.attempt, e.action, e.url, e.outcome, e.detail)
                for e in events]
        if rows:
            with self._tx():
                self._db.executemany(
                    "INSERT INTO events(run_id, ts, worker_id, window, task_key, attempt, action, url, outcome, detail)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?)", rows)

    def timeline(self, run_id: str) -> list[Event]:
        """Every worker's and window's events merged into one stream ordered by time."""
        rows = self._db.execute(
            "SELECT ts, worker_id, window, task_key, attempt, action, url, outcome, detail FROM events "
            "WHERE run_id=? ORDER BY ts, id", (run_id,))
        return [Event(action=r["action"], task_key=r["task_key"] or "", worker_id=r["worker_id"] or "",
                      window=r["window"] or "", url=r["url"] or "", outcome=r["outcome"] or "",
                      detail=r["detail"] or "", attempt=r["attempt"] or 0, ts=r["ts"]) for r in rows]

    # -- activities and recordings -------------------------------------------------------------
    def record_activity(self, run_id: str, key: str, attempt: int, worker_id: str, started: float,
                        finished: float | None, outcome: str = "", detail: str = "") -> None:
        """One attempt at one task on one worker, from start to end (finished None: it never ended)."""
        duration = None if finished is None else max(0.0, finished - started)
        self._insert("activities", replace=True, run_id=run_id, key=key, attempt=attempt, worker_id=worker_id,
                     started=started, finished=finished, duration=duration, outcome=outcome, detail=detail)

    def activities(self, run_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute(
            "SELECT * FROM activities WHERE run_id=? ORDER BY started, key, attempt", (run_id,))]

    def record_recording(self, run_id: str, key: str, attempt: int, events: Any, count: int,
                         first_ts: float | None, last_ts: float | None, worker_id: str = "") -> None:
        """A session recording of one attempt: any JSON value, stored compressed (it is mostly DOM text)."""
        raw = json.dumps(events, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        self._insert("recordings", replace=True, run_id=run_id, key=key, attempt=attempt, worker_id=worker_id,
                     events=zlib.compress(raw, 6), encoding="zlib+json", bytes=len(raw), count=count,
                     first_ts=first_ts, last_ts=last_ts)

    def recordings(self, run_id: str, key: str | None = None) -> list[dict[str, Any]]:
        """What was recorded (without the events themselves), in attempt order."""
        sql = ("SELECT run_id, key, attempt, worker_id, encoding, bytes, count, first_ts, last_ts, "
               "length(events) AS stored_bytes FROM recordings WHERE run_id=?")
        args: list[Any] = [run_id]
        if key is not None:
            sql += " AND key=?"
            args.append(key)
        return [dict(r) for r in self._db.execute(sql + " ORDER BY key, attempt", args)]

    def recording_events(self, run_id: str, key: str, attempt: int, worker_id: str | None = None) -> Any:
        """The events of one recorded attempt, as recorded; None when there is no such recording."""
        sql = "SELECT events, encoding FROM recordings WHERE run_id=? AND key=? AND attempt=?"
        args: list[Any] = [run_id, key, attempt]
        if worker_id is not None:
            sql += " AND worker_id=?"
            args.append(worker_id)
        row = self._db.execute(sql, args).fetchone()
        if not row:
            return None
        data = row["events"]
        if row["encoding"] == "zlib+json":
            data = zlib.decompress(data)
        return json.loads(data)

    # -- plumbing --------------------------------------------------------------------------------
    def _tx(self):
        return _Transaction(self._db)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Heartbeat:
    """Marks a run as alive every `interval` seconds from its own thread and connection, so the time a
    killed run was last seen is known to within `interval` even while the main thread waits on a PO."""

    def __init__(self, path: str | Path, run_id: str, interval: float = 5.0) -> None:
        self.path, self.run_id, self.interval = Path(path), run_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="run-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _beat(self) -> None:
        store = RunStore(self.path)
        try:
            while not self._stop.wait(self.interval):
                try:
                    store.touch_run(self.run_id)
                except sqlite3.Error:  # a busy store: the next beat will do
                    pass
        finally:
            store.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _file_row(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["brought_by"] = d.get("run_id") or ""
    d["removed_on_portal"] = d.get("removed_by") or ""
    d["refetched"] = bool(d.get("refetched"))
    return d


def _task_row(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["data"] = json.loads(d.get("data") or "{}")
    return d

