"""The run-mode registry: the names the options choose, the one place their rules live, nothing
imported from EXPERIMENTAL, and the attempt budget every mode shares. Pure logic: no browser."""
from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from pobatch.core.cli import main
from pobatch.core.modes.base import RESTART_ALLOWANCE, attempt_budget
from pobatch.core.modes.registry import MODES, STRATEGIES, get_mode, mode_name
from pobatch.core.workflow.job_config import JobConfig
from pobatch.corelib.errors import FatalError


@pytest.mark.parametrize("strategy, parallel, grid, expected", [
    (None, False, None, "sequential"),
    (None, True, None, "parallel"),
    ("parallel", False, None, "parallel"),  # --strategy parallel is --parallel
    (None, True, "http://grid:4444", "grid"),
    ("parallel", False, "http://grid:4444", "grid"),
    (None, False, "http://grid:4444", "grid"),  # --grid implies the pool
    ("single-session", False, None, "single-session"),
])
def test_the_options_choose_one_registered_mode(strategy, parallel, grid, expected):
    assert mode_name(strategy, parallel, grid) == expected
    assert expected in MODES


@pytest.mark.parametrize("strategy, parallel, grid", [
    ("single-session", True, None),
    ("single-session", False, "http://grid:4444"),
    ("no-such-strategy", False, None),
])
def test_a_strategy_that_cannot_be_is_one_line_naming_the_choices(strategy, parallel, grid):
    with pytest.raises(FatalError) as caught:
        mode_name(strategy, parallel, grid)
    message = str(caught.value)
    assert message.startswith(f"--strategy {strategy}:") and "\n" not in message
    assert all(name in message for name in STRATEGIES)


def test_every_registered_mode_is_a_run_mode_under_its_own_name():
    assert set(STRATEGIES) <= set(MODES)
    for name in MODES:
        mode = get_mode(name)
        assert mode.name == name and callable(mode.stream)


def test_nothing_in_core_imports_experimental():
    """EXPERIMENTAL sits on core, never under it: running every mode imports nothing from it."""
    code = ("import sys\n"
            "import pobatch.core.cli, pobatch.core.app\n"
            "from pobatch.core.modes.registry import MODES, get_mode\n"
            "[get_mode(name) for name in MODES]\n"
            "print(sorted(m for m in sys.modules if m.startswith('pobatch.experimental')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["[]"]


def test_the_attempt_budget_covers_every_attempt_its_restart_and_backoff():
    job = JobConfig(site="demo", site_file="", base_url="http://127.0.0.1:1", out_dir="out", po_timeout=100.0,
                    max_attempts=3, backoff_max=30.0)
    assert attempt_budget(job) == 3 * (100.0 + RESTART_ALLOWANCE) + 3 * 30.0


def test_the_cli_offers_the_registrys_strategies_and_refuses_a_contradiction(tmp_path):
    orders = tmp_path / "orders.csv"
    orders.write_text("PO_NUMBER\n100001\n", encoding="utf-8")
    base = ["run", str(orders), "--site", "demo", "--base-url", "http://127.0.0.1:9", "--out", str(tmp_path / "out")]
    unknown = CliRunner().invoke(main, base + ["--strategy", "nope"])
    assert unknown.exit_code == 2 and all(name in unknown.output for name in STRATEGIES), unknown.output
    both = CliRunner().invoke(main, base + ["--strategy", "single-session", "--grid", "http://127.0.0.1:4444"])
    assert both.exit_code == 2, both.output
    assert "--strategy single-session: expected one of parallel, single-session" in both.output
    assert "Traceback" not in both.output
    assert not (tmp_path / "out").exists()  # refused before anything was written
