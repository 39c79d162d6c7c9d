"""The benchmark keeps working: its --quick mode runs end to end and writes a well-formed table.

No timing is asserted (the numbers of a quick run on a shared CI machine mean nothing); what is
checked is that every configuration ran, pobatch got every PO right, the table has one well-formed
row per configuration, the hand-written text around the generated section survives, and nothing
(browser, profile clone, scratch folder) is left behind.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.report import BEGIN, END, TABLE_HEADER

REPO = Path(__file__).resolve().parent.parent


HAND_WRITTEN = "# Benchmarks\n\nHand-written.\n"


def run_quick(module: str, tmp_path: Path, *args: str) -> tuple[str, list]:
    """`python -m benchmarks.<module> --quick` into a file with hand-written text of its own: the file's
    text after the run (the hand-written part must survive) and the runs it wrote as JSON."""
    out, results = tmp_path / "BENCH.md", tmp_path / f"{module}.json"
    out.write_text(HAND_WRITTEN, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", "--quick", "--out", str(out), "--json", str(results), *args],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, f"{module} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    text = out.read_text(encoding="utf-8")
    assert text.startswith(HAND_WRITTEN)
    return text, json.loads(results.read_text(encoding="utf-8"))


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _number(cell: str) -> float:
    """'12.3', '12.3 (11.9–13.0)', '36¹' -> the leading number."""
    return float(cell.split(" ")[0].rstrip("¹"))


def test_quick_benchmark_writes_a_well_formed_table(tmp_path, browser_available):
    out = tmp_path / "BENCH.md"
    out.write_text(f"# Benchmarks\n\nHand-written intro.\n\n{BEGIN}\nstale table\n{END}\n\nHand-written notes.\n",
                   encoding="utf-8")
    results = tmp_path / "results.json"
    work = tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out), "--json", str(results),
         "--work-dir", str(work)],
        cwd=REPO, capture_output=True, text=True, timeout=420, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, f"benchmark failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"

    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n\nHand-written intro.\n\n")
    assert text.rstrip().endswith("Hand-written notes.")
    assert "stale table" not in text
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert "QUICK MODE" in text

    lines = text.splitlines()
    head = lines.index(TABLE_HEADER)
    columns = _cells(TABLE_HEADER)
    assert set(lines[head + 1].strip("|").split("|")) == {"---"}
    assert len(_cells(lines[head + 1])) == len(columns)
    rows = {}
    for line in lines[head + 2:]:
        if not line.startswith("|"):
            break
        cells = _cells(line)
        assert len(cells) == len(columns), line
        rows[cells[0]] = dict(zip(columns, cells))
    assert set(rows) == {"pobatch sequential", "pobatch sequential, files-at-once 1", "pobatch parallel, 2 workers",
                         "pobatch sequential, no pages ahead",
                         "naive script (sleep per file)", "lean Selenium loop (no checks)", "ideal, N=1", "ideal, N=2",
                         "overlap ideal, N=1", "overlap ideal, N=2", "pipelined ideal, N=1", "pipelined ideal, N=2"}
    for label, row in rows.items():
        for col in ("N", "Wall s (min–max)", "POs/min", "Efficiency", "Overhead/PO ms", "Worker ready s"):
            assert _number(row[col]) >= 0, (label, col, row[col])
        assert _number(row["Wall s (min–max)"]) > 0
    for label in ("pobatch sequential", "pobatch sequential, files-at-once 1", "pobatch parallel, 2 workers",
                  "naive script (sleep per file)", "lean Selenium loop (no checks)"):
        assert rows[label]["Correct"] == "1/1", rows[label]
        assert _number(rows[label]["Browser USS MB"]) > 0, "the memory sampler found no browser"
        assert _number(rows[label]["Browser PSS MB"]) > 0
    assert _number(rows["pobatch parallel, 2 workers"]["N"]) == 2
    assert _number(rows["ideal, N=1"]["Efficiency"]) == 1.0
    assert _number(rows["overlap ideal, N=1"]["Wall s (min–max)"]) <= _number(rows["ideal, N=1"]["Wall s (min–max)"])
    assert _number(rows["pipelined ideal, N=1"]["Wall s (min–max)"]) <= _number(rows["overlap ideal, N=1"]["Wall s (min–max)"])
    assert rows["pobatch sequential, no pages ahead"]["Correct"] == "1/1"
    assert _number(rows["pobatch sequential"]["Worker PSS MB"]) >= _number(rows["pobatch sequential"]["Browser PSS MB"])
    for target in ("Sequential overhead per PO", "2-worker efficiency", "cache-heavy profile ≤ 1 s",
                   "Sequential faster than the serial ideal", "No configuration slower with the default",
                   "Pages ahead vs none"):
        assert target in text

    data = json.loads(results.read_text(encoding="utf-8"))
    assert set(data["runs"]) == {"sequential", "sequential-f1", "sequential-np", "parallel-2", "naive", "lean"}
    for config, runs in data["runs"].items():
        assert len(runs) == 1 and runs[0]["correct"], (config, runs[0]["problems"])
    seq = data["runs"]["sequential"][0]
    assert seq["files"] == seq["expected_files"] == data["scenario"]["files"]
    assert {"open page", "downloads", "between POs"} <= set(seq["steps_ms_per_po"])
    lean = data["runs"]["lean"][0]
    assert lean["files"] == lean["expected_files"] == data["scenario"]["files"]
    assert {"open page", "find attachments", "downloads"} <= set(lean["steps_ms_per_po"])
    floor = data["browser_floor"]
    assert floor["file_ms"] > 0 and floor["page_ms"] > 0, "with no latency, the browser's own time is all there is"
    assert floor["files_per_po"] == data["scenario"]["files"] / data["scenario"]["pos"]
    assert data["clone"]["bytes_copied"] < data["clone"]["total_bytes"] / 4, "the clone copied the caches"
    assert data["machine"]["chromium"].startswith("Chromium")

    assert work.is_dir() and not any(work.iterdir()), f"left in the work dir: {list(work.iterdir())}"


def test_quick_soak_runs_and_writes_its_section(tmp_path, browser_available):
    """benchmarks/soak.py keeps working: a tiny soak (30 POs with every fault of the full one) gets every
    PO right with exit 0 and writes its own section, leaving the rest of the file alone."""
    text, runs = run_quick("soak", tmp_path, "--work-dir", str(tmp_path / "work"))
    assert "QUICK MODE" in text
    assert [(r["mode"], r["faults"]) for r in runs] == [("sequential", True), ("sequential", False)]
    assert all(r["exit_code"] == 0 and r["right"] == r["pos"] == 30 and not r["wrong"] for r in runs)
    assert runs[0]["hang_requests"] > 0 and runs[1]["hang_requests"] == 0
    assert runs[0]["sso_refreshes"] >= 2 and runs[0]["sso_events"] == runs[0]["sso_refreshes"]
    assert not any((tmp_path / "work").iterdir()), "the soak's scratch folders are removed"


def test_quick_refresh_benchmark_runs_and_writes_its_section(tmp_path, browser_available):
    """benchmarks/refresh.py keeps working: a first run, --force, and two refreshes of 10 POs, each right,
    its own section written; a refresh with nothing new downloads nothing."""
    text, written = run_quick("refresh", tmp_path)
    assert "QUICK MODE" in text
    runs = {r["config"]: r for r in written}
    assert all(r["exit_code"] == 0 and not r["problems"] for r in runs.values())
    assert runs["refresh, nothing new"]["files"] == 0 and runs["refresh, nothing new"]["pages"] == 10
    assert runs["refresh, 10% changed"]["files"] == runs["refresh, 10% changed"]["new_files"] == 1
    assert runs["force"]["files"] == runs["first"]["files"] > 10


def test_quick_cpu_per_po_runs_and_writes_its_section(tmp_path, browser_available):
    """benchmarks/cpu_per_po.py keeps working: one tiny run, the tree's CPU split by kind, its own section."""
    text, [run] = run_quick("cpu_per_po", tmp_path)
    assert "QUICK MODE" in text
    assert run["exit_code"] == 0 and run["per_po"] > 0
    assert {"pobatch", "driver", "browser: main", "browser: renderer"} <= set(run["by_kind"])


def test_quick_long_soak_runs_and_writes_its_section(tmp_path, browser_available):
    """benchmarks/long_soak.py keeps working: 40 POs in each mode, every PO its truth, none lost or fetched
    twice, the tree's memory and the progress sampled, the end measured, a verdict per target, its own
    section; its scratch folder (profile clones included) is removed."""
    from benchmarks.long_soak import LONG_SOAK_MARKERS, MODES

    text, runs = run_quick("long_soak", tmp_path, "--work-dir", str(tmp_path / "work"))
    assert "QUICK MODE" in text and text.count(LONG_SOAK_MARKERS[0]) == 1
    assert [r["mode"] for r in runs] == list(MODES) == ["parallel-4", "single-session-4"]
    for r in runs:
        assert r["exit_code"] == 0 and r["right"] == r["pos"] == r["answered"] == 40 and not r["wrong"], r["mode"]
        assert not r["lost"] and not r["duplicated"], (r["lost"], r["duplicated"])
        # 40 POs over ten tenths: the first may hold none (results come in bursts), and then there
        # is nothing to compare with; at full size every tenth holds hundreds.
        assert len(r["rates"]) == 10 and (r["deviation"] is not None or r["rates"][0] == 0)
        samples = r["samples"]
        assert len(samples) >= 3 and all(s["rss"] > 0 for s in samples)
        assert max(s["processes"] for s in samples) >= 3, "pobatch, a driver and a browser at least"
        assert any(k.startswith("browser") for s in samples for k in s["by_kind"]), "the browsers are in the tree"
        assert max(s["answered"] or 0 for s in samples) > 0, "the progress is read from the store"
        assert 0 <= r["end_s"] <= r["exit_s"], "the workbook and report are written before pobatch exits"
        assert len(r["verdicts"]) == 4
        assert f"| {r['mode']} | 40 |" in text
    assert text.count("| within |") + text.count("| beyond |") == 4 * len(runs)
    assert not any((tmp_path / "work").iterdir()), "the long soak's scratch folder is removed"


def test_long_soak_figures():
    """The long soak's arithmetic: tenths of the time from the first result to the last, the deviation
    from the first tenth, the growth from the second tenth to the last, and the verdicts."""
    from benchmarks.long_soak import LongSoakRun, Sample, growth, memory_tenths, rate_deviation, tenth_rates

    steady = [i * 0.5 for i in range(201)]  # a result every 0.5 s for 100 s
    rates = tenth_rates(steady)
    assert rates == pytest.approx([120.0] * 10), "a steady run: ten equal rates, the first result the start"
    assert rate_deviation(rates) == pytest.approx(0.0)
    assert rate_deviation([100, 95, 112]) == pytest.approx(0.12)
    assert tenth_rates([5.0]) == [] and rate_deviation([]) is None
    samples = [Sample(ts=t, rss=1000 + int(t), pss=500, processes=5, by_kind={}, answered=0, load1=0.0)
               for t in range(0, 101, 2)]
    tenths = memory_tenths(samples, 0.0, 100.0)
    assert growth(tenths) == pytest.approx(1096 / 1016 - 1)  # the median of (90, 100] over that of (10, 20]
    assert growth(memory_tenths(samples[:2], 0.0, 100.0)) is None, "a tenth without a sample is not measured"
    run = LongSoakRun("parallel-4", 10, 0, 60.0, 0.0, 60.0, growth=0.05, deviation=0.12, workbook_s=2.0,
                      report_s=11.0, duplicated=["200001/a.pdf: served whole 2 times"])
    assert [within for _t, _m, within in run.verdicts()] == [True, False, False, False]
    assert run.end_s == 11.0 and not run.correct


def test_run_is_the_one_entry(capsys):
    """`python -m benchmarks.run long-soak ...` is `python -m benchmarks.long_soak ...` (and so for each
    section another module writes)."""
    from benchmarks import run

    for name, module in run.SECTIONS.items():
        with pytest.raises(SystemExit) as stop:
            run.main([name, "--help"])
        assert stop.value.code == 0
        assert f"python -m {module}" in capsys.readouterr().out
