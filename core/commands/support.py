"""`pobatch support`: one zip with what a helper needs to see what went wrong in a run, and nothing else.

Inside: the run's log, its HTML report, its events and attempts from the run store (CSV) with the
run's row and its POs (JSON), the artifacts of its POs that did not get a final answer, any
`pobatch check` snapshots in the output folder, the doctor's output (without its browser check), the
options the run used, and a README.txt that lists it all. Never inside: cookies, Authorization
headers, the browser profile, the downloaded files; the results workbook only with --with-results.
Only files named here go in (no folder is copied whole), and every text file passes through
core/monitoring/redaction.py on the way, so a session cookie or a signed URL in a page or a log is blanked.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pobatch.core.commands.doctor import DoctorOptions, report_text, run_doctor
from pobatch.core.download_progress import human_bytes
from pobatch.core.monitoring.redaction import redact
from pobatch.core.reports.report import render_report
from pobatch.core.reports.report_data import load_report_data
from pobatch.core.status import FINAL_STATUSES
from pobatch.core.workspace import Workspace
from pobatch.corelib.store import RunStore

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".log", ".txt", ".html", ".htm", ".json", ".csv", ".toml", ".xml", ".js"}
CHECK_SNAPSHOTS = "pobatch-check-*.json"
# An artifact larger than this is left out (and said so): a support zip must stay small enough to e-mail.
MAX_FILE = 20 * 1024 * 1024


@dataclass
class Bundle:
    path: Path
    parts: list[tuple[str, int, str]] = field(default_factory=list)  # name in the zip, bytes, what it is
    left_out: list[str] = field(default_factory=list)

    def summary(self) -> str:
        size = self.path.stat().st_size
        groups: dict[str, tuple[int, int]] = {}
        for _name, n, what in self.parts:
            count, total = groups.get(what, (0, 0))
            groups[what] = (count + 1, total + n)
        lines = [f"Support bundle: {self.path} ({human_bytes(size)}, {len(self.parts)} file(s))"]
        lines += [f"  {what}: {count} file(s), {human_bytes(total)}" for what, (count, total) in groups.items()]
        lines += [f"  left out: {why}" for why in self.left_out]
        lines.append("  never inside: cookies, Authorization headers, the browser profile, the downloaded files")
        return "\n".join(lines)


def build_bundle(store: RunStore, run_id: str, out_dir: Path, target: Path, with_results: bool = False,
                 doctor: DoctorOptions | None = None) -> Bundle:
    """Write the zip for `run_id` of the output folder `out_dir` to `target` (atomically)."""
    workspace = Workspace(out_dir)
    run = store.run(run_id) or {}
    bundle = Bundle(target)
    tmp = target.with_name(target.name + ".tmp")
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        def add_text(name: str, text: str, what: str) -> None:
            data = redact(text).encode("utf-8")
            zf.writestr(name, data)
            bundle.parts.append((name, len(data), what))

        def add_file(name: str, path: Path, what: str) -> None:
            try:
                size = path.stat().st_size
                if size > MAX_FILE:
                    bundle.left_out.append(f"{path.name} ({human_bytes(size)}: too big to send)")
                    return
                if path.suffix.lower() in TEXT_SUFFIXES:
                    add_text(name, path.read_text(encoding="utf-8", errors="replace"), what)
                else:
                    zf.write(path, name)
                    bundle.parts.append((name, size, what))
            except OSError as exc:
                bundle.left_out.append(f"{path.name} ({exc.strerror or exc})")

        # The run log.
        log_path = workspace.run_log(run_id)
        if log_path.is_file():
            add_file(f"log/{log_path.name}", log_path, "run log")
        else:
            bundle.left_out.append(f"the run log ({log_path.name}: not written; runs before issue 25 had none)")
        # The report, drawn again from the store (links point into the output folder, as on the PC).
        try:
            data = load_report_data(store, run_id, out_dir)
            add_text("report.html", render_report(data, out_dir), "report")
        except Exception as exc:  # a damaged store still gives the rest
            bundle.left_out.append(f"the report ({type(exc).__name__}: {exc})")
            data = None
        # The store's view of the run.
        add_text("store/run.json", json.dumps(run, indent=2, default=str), "run store")
        events = store.timeline(run_id)
        add_text("store/events.csv", _csv(["ts", "time", "worker_id", "window", "task_key", "attempt", "action",
                                           "outcome", "url", "detail"],
                                          [[e.ts, _clock(e.ts), e.worker_id, e.window, e.task_key, e.attempt,
                                            str(getattr(e.action, "value", e.action)), e.outcome, e.url, e.detail]
                                           for e in events]), "run store")
        attempts = store.attempts(run_id)
        add_text("store/attempts.csv", _csv(["key", "attempt", "worker_id", "started", "finished", "status",
                                             "reason", "error"],
                                            [[a["key"], a["attempt"], a["worker_id"], _clock(a["started"]),
                                              _clock(a["finished"]), a["status"], a["reason"], a["error"]]
                                             for a in attempts]), "run store")
        tasks = {k: t for k, t in store.tasks().items() if t.get("run_id") == run_id}
        add_text("store/pos.json", json.dumps(tasks, indent=2, default=str), "run store")
        # Artifacts of the POs without a final answer.
        unanswered = {k for k, t in tasks.items() if t["status"] not in {s.value for s in FINAL_STATUSES}}
        artifacts_root = workspace.work_dir / "artifacts" / run_id
        if artifacts_root.is_dir():
            for folder in sorted(artifacts_root.iterdir()):
                po = folder.name.rsplit("-a", 1)[0]
                if not folder.is_dir() or po not in unanswered:
                    continue
                for f in sorted(folder.iterdir()):
                    if f.is_file() and not f.is_symlink():
                        add_file(f"artifacts/{folder.name}/{f.name}", f, "failure artifacts")
        # `pobatch check` snapshots kept in the output folder.
        for snap in sorted(out_dir.glob(CHECK_SNAPSHOTS)):
            add_file(f"checks/{snap.name}", snap, "check snapshots")
        # The site file the run used (selectors and texts: what a maintainer changes).
        site_file = (run.get("args") or {}).get("site_file")
        if site_file and Path(site_file).is_file():
            add_file(f"site/{Path(site_file).name}", Path(site_file), "site file")
        # The options: the store's record of the run, and the full list from the log's header.
        add_text("options.json", json.dumps(_options(run, log_path), indent=2, default=str), "options")
        # The doctor, as this PC is now (without the browser page: the bundle must not need one).
        if doctor is not None:
            try:
                doctor.sign_in = False
                add_text("doctor.txt", report_text(run_doctor(doctor)), "doctor")
            except Exception as exc:
                bundle.left_out.append(f"the doctor's output ({type(exc).__name__}: {exc})")
        if with_results:
            orders = (run.get("args") or {}).get("orders")
            workbook = out_dir / f"{Path(orders).stem}_results.xlsx" if orders else None
            if workbook and workbook.is_file():
                add_file(f"results/{workbook.name}", workbook, "results workbook")
            else:
                bundle.left_out.append("the results workbook (not found)")
        else:
            bundle.left_out.append("the results workbook (add it with --with-results)")
        zf.writestr("README.txt", _readme(run_id, out_dir, bundle))
    tmp.replace(target)
    return bundle


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _clock(ts: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(ts)))
    except (TypeError, ValueError):
        return ""


def _options(run: dict[str, Any], log_path: Path) -> dict[str, Any]:
    """What the run was asked to do: the store's record, and every option the log's header lists."""
    options: dict[str, Any] = {"run": {k: run.get(k) for k in ("run_id", "mode", "status", "host", "args")}}
    header: dict[str, str] = {}
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.startswith("#"):
                    break
                key, sep, value = line[1:].strip().partition(": ")
                if sep and " " not in key:
                    header[key] = value
    except OSError:
        pass
    options["options"] = header
    return options


def _readme(run_id: str, out_dir: Path, bundle: Bundle) -> str:
    lines = [f"pobatch support bundle for run {run_id}", f"output folder: {out_dir}",
             f"made: {time.strftime('%Y-%m-%d %H:%M:%S')}", "",
             "Inside (text files have cookies, Authorization headers, tokens and passwords blanked as [REDACTED]):"]
    lines += [f"  {name}  ({human_bytes(n)}, {what})" for name, n, what in bundle.parts]
    lines += ["", "Left out:"] + [f"  {why}" for why in bundle.left_out]
    lines += ["  the browser profile, cookies and the downloaded files: never part of a support bundle"]
    return "\n".join(lines) + "\n"


def bundle_path(out_dir: Path, run_id: str) -> Path:
    return out_dir / f"pobatch-support-{run_id}.zip"


def summary_dict(bundle: Bundle) -> dict[str, Any]:
    return asdict(bundle)
