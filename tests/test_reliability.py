"""Issue 14: pobatch under hostile conditions (final answers on resume, dead runs, unwritable folders,
dead portals, a live profile, demo options, session messages, failure capture, killed workers).

Real demo portal, real headless Chromium, real files; each test failed before its fix."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import openpyxl
import pytest

from core.app import EXIT_OK, MainApp, RunOptions
from core.demo_login import prepare_demo_profile
from core.demo_portal import DemoPortal
from tests.orders_files import write_orders

pytestmark = pytest.mark.usefixtures("browser_available")


def write_scenario(path: Path, pos: list[dict], **extra) -> Path:
    data = {"name": "t", "seed": 3, "stall_seconds": 20, "latency": {"page_ms": 10, "attachment_ms": 5},
            "pos": pos}
    data.update(extra)
    path.write_text(json.dumps(data))
    return path


def run_app(portal: DemoPortal, orders: Path, out: Path, profile: Path, view=None, **kw):
    kw.setdefault("backoff_base", 0.1)
    opts = RunOptions(orders=orders, out=out, site="demo", base_url=portal.base_url, browser="chromium",
                      profile=profile, local_only=True, stall_timeout=5, profiles_root=out.parent / "clones",
                      **kw)
    return MainApp(opts, view=view).run()


def store_statuses(out: Path) -> dict[str, str]:
    db = sqlite3.connect(f"file:{out / '.pobatch' / 'runs.sqlite'}?mode=ro", uri=True, timeout=5)
    try:
        return dict(db.execute("SELECT key, status FROM tasks").fetchall())
    finally:
        db.close()


def workbook_statuses(path: Path) -> dict[str, str]:
    ws = openpyxl.load_workbook(path)["Results"]
    header = [c.value for c in ws[1]]
    return {str(r[header.index("PO_NUMBER")]): r[header.index("STATUS")]
            for r in ws.iter_rows(min_row=2, values_only=True)}


class StoreWatcher:
    """A console view that reads the run store (from outside, as a user would) whenever the run speaks."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.seen: list[dict[str, str]] = []

    def _look(self) -> None:
        self.seen.append(store_statuses(self.out))

    def start(self, *a) -> None:
        self._look()

    def event(self, _e) -> None:
        self._look()

    def task_done(self, *a) -> None:
        self._look()

    def finish(self, _s) -> None:
        pass


# -- item 3: final answers are kept on resume ---------------------------------------------------------
ANSWERS = [
    {"id": "510001", "supplier": "Acme", "attachments": [{"name": "a.pdf", "kind": "link", "size": 3000}]},
    {"id": "510002", "supplier": "Acme", "missing": True},
    {"id": "510003", "supplier": "Beta"},
]


def test_final_answers_are_kept_and_only_force_or_recheck_redo_them(tmp_path):
    scenario = write_scenario(tmp_path / "s.json", ANSWERS)
    orders = write_orders(tmp_path, [p["id"] for p in ANSWERS])
    out = tmp_path / "out"
    with DemoPortal(scenario) as portal:
        profile = prepare_demo_profile(tmp_path / "p", portal.base_url)
        first = run_app(portal, orders, out, profile)
        truth = {"510001": "COMPLETED", "510002": "PO_NOT_FOUND", "510003": "NO_ATTACHMENTS"}
        assert {po: o.status.value for po, o in first.outcomes.items()} == truth
        hits = {po: portal.page_hits(po) for po in truth}

        again = run_app(portal, orders, out, profile)
        assert again.exit_code == EXIT_OK and again.skipped == 3
        assert {po: portal.page_hits(po) for po in truth} == hits  # nothing redone

        watcher = StoreWatcher(out)
        recheck = run_app(portal, orders, out, profile, view=watcher, recheck=True)
        assert recheck.skipped == 1
        assert portal.page_hits("510001") == hits["510001"]
        assert portal.page_hits("510002") == hits["510002"] + 1
        assert portal.page_hits("510003") == hits["510003"] + 1
        # a stored answer never went back to PENDING (or anything else) before it was replaced
        for snapshot in watcher.seen:
            assert snapshot == truth, snapshot
        assert workbook_statuses(recheck.results_path) == truth

        forced = run_app(portal, orders, out, profile, force=True)
        assert forced.skipped == 2
        assert portal.page_hits("510001") == hits["510001"] + 1
        assert portal.page_hits("510002") == hits["510002"] + 1
        assert {po: o.status.value for po, o in forced.outcomes.items()} == truth
        assert store_statuses(out) == truth
