"""The run-mode registry: the names the options choose, the one place their rules live, nothing
imported from EXPERIMENTAL, and the attempt budget every mode shares. Pure logic: no browser."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pobatch.core.app import MainApp
from pobatch.core.cli import main
from pobatch.core.modes import registry
from pobatch.core.modes.base import RESTART_ALLOWANCE, ModeTraits, attempt_budget
from pobatch.core.modes.registry import MODES, STRATEGIES, get_mode, mode_name, traits_of
from pobatch.core.portal_address import NotAPortalAddress, PortalAddress
from pobatch.core.run_options import RunOptions, option, run_options
from pobatch.core.workflow.job_config import JobConfig
from pobatch.corelib.errors import FatalError
from pobatch.corelib.worker_pool.tasks import TaskResult


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


# -- docs/design.md, "How to add a run mode", followed step by step with a toy mode (no browser) ---------------

@dataclasses.dataclass
class ToyOptions(RunOptions):
    """Step 3: the mode's own option is a field with its click declaration (here in a subclass, so the
    product's RunOptions stays as it is)."""

    toy_pace: int = option("--toy-pace", default=2, type=click.IntRange(1, 9), show_default=True,
                           help="How fast the toy mode goes.")


class ToyMode:
    """Step 1: a class with its name, its traits and stream(plan); it answers every PO at once."""

    name = "toy"
    traits = ModeTraits(worker_lines=True)

    def stream(self, plan):
        for task in plan.tasks:
            yield TaskResult(task.key, "NO_ATTACHMENTS", reason=f"pace {plan.options.toy_pace}, "
                             f"{plan.worker.job.files_at_once} at once", worker_id="toy")


def test_a_mode_added_as_the_design_says_gets_its_option_in_its_plan(tmp_path, monkeypatch):
    monkeypatch.setitem(MODES, "toy", ToyMode)  # step 2: one line in MODES, the name in STRATEGIES
    monkeypatch.setattr(registry, "STRATEGIES", (*STRATEGIES, "toy"))
    orders = tmp_path / "orders.csv"
    orders.write_text("PO_NUMBER\n100001\n100002\n", encoding="utf-8")
    seen: list[ToyOptions] = []

    # The CLI's options come from the fields; --strategy's choices were read from STRATEGIES when
    # core/run_options.py was imported, before this toy was registered: this command offers it too.
    @click.command()
    @click.argument("orders", type=click.Path(path_type=Path))
    @run_options(ToyOptions, strategy={"type": click.Choice(registry.STRATEGIES)})
    def toy_run(**params):
        seen.append(ToyOptions.from_params(**params, profiles_root=tmp_path / "profiles"))

    result = CliRunner().invoke(toy_run, [str(orders), "--strategy", "toy", "--toy-pace", "7", "--files-at-once", "2",
                                          "--site", "demo", "--base-url", "http://127.0.0.1:9", "--no-preflight",
                                          "--profile", str(tmp_path / "profile"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "--toy-pace INTEGER RANGE" in CliRunner().invoke(toy_run, ["--help"]).output
    summary = MainApp(seen[0]).run()
    assert {po: o.reason for po, o in summary.outcomes.items()} == {"100001": "pace 7, 2 at once",
                                                                   "100002": "pace 7, 2 at once"}
    assert traits_of("toy").worker_lines and not traits_of("sequential").worker_lines


def test_the_portal_address_is_checked_once_and_knows_whether_it_is_local():
    assert PortalAddress("http://127.0.0.1:8765/") == "http://127.0.0.1:8765"
    assert PortalAddress("http://127.0.0.1:8765").is_local and PortalAddress("http://localhost:1").is_local
    assert not PortalAddress("https://acme.coupahost.com").is_local
    with pytest.raises(NotAPortalAddress, match="'acme' is not a portal address"):
        PortalAddress("acme")
    bad = CliRunner().invoke(main, ["login", "--base-url", "acme.coupahost.com"])
    assert bad.exit_code == 2 and bad.output.strip().splitlines() == [
        "Error: --base-url: 'acme.coupahost.com' is not a portal address; expected e.g. "
        "https://yourcompany.coupahost.com"], bad.output
