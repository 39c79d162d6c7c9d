"""The static layers of docs/design.md ("Architecture"), held against the code: every module of core/
and corelib/ imports only from its own floor or below, and core's top level holds only the entry
points and the shared contracts. Reads the source (ast); imports nothing of the product."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Floors, from the ground up; a module's floor is that of the longest prefix of its dotted name.
FLOORS: dict[str, int] = {
    "corelib": 0,  # errors, retry, polling, watchdog, throttle, safe_paths, tree_removal
    "corelib.worker_pool": 1,
    "corelib.browser": 1,
    "corelib.store": 2,
    "core": 3,  # the package itself (its version) and the shared contracts on its top level
    "core.sites": 4,
    "core.preparation": 4,
    "core.demo_portal": 4,
    "core.workflow": 5,
    "core.reports": 5,
    "core.modes": 6,
    "core.app": 7,
    "core.run_options": 7,  # the run's options with their click declarations: they name the modes and sites
    "core.preparation.planner": 7,  # MainApp's planning step: it builds the mode's RunPlan
    "core.monitoring": 7,
    "core.cli": 8,
    "core.__main__": 8,
    "core.commands": 8,
}
CORE_TOP_LEVEL = {"__init__", "__main__", "cli", "app",  # entry points
                  "events", "results", "status", "workspace", "exit_codes", "download_progress",  # contracts
                  "run_options", "option_types", "portal_address"}


def floor_of(name: str) -> int:
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in FLOORS:
            return FLOORS[".".join(parts[:n])]
    raise AssertionError(f"{name}: on no floor of tests/test_layers.py")


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for top in ("core", "corelib"):
        for path in (ROOT / top).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            if "vendor" in rel.parts:
                continue
            parts = list(rel.parts)
            if parts[-1] == "__init__" and len(parts) > 1:
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _runtime_nodes(tree: ast.AST):
    """Every node but those under `if TYPE_CHECKING:` (annotations only: no import at run time)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pobatch."):
            names.add(node.module.removeprefix("pobatch."))
        elif isinstance(node, ast.Import):
            names.update(a.name.removeprefix("pobatch.") for a in node.names if a.name.startswith("pobatch."))
    return names


def test_every_import_goes_down_or_stays_on_its_floor() -> None:
    upward = [f"{name} (floor {floor_of(name)}) imports {target} (floor {floor_of(target)})"
              for name, path in sorted(modules().items())
              for target in sorted(imported(path))
              if not target.startswith("experimental") and floor_of(target) > floor_of(name)]
    assert not upward, "\n".join(upward)


def test_nothing_in_core_or_corelib_imports_experimental_or_benchmarks() -> None:
    bad = [f"{name} imports {t}" for name, path in modules().items() for t in imported(path)
           if t.startswith("experimental")]
    assert not bad, bad


def test_cores_top_level_holds_only_entry_points_and_contracts() -> None:
    top = {p.stem for p in (ROOT / "core").glob("*.py")}
    assert top == CORE_TOP_LEVEL, f"unexpected: {sorted(top - CORE_TOP_LEVEL)}; missing: {sorted(CORE_TOP_LEVEL - top)}"


def test_corelib_is_the_pool_and_the_browser_toolkit() -> None:
    packages = {p.parent.name for p in (ROOT / "corelib").glob("*/__init__.py")}
    assert packages == {"worker_pool", "browser"}
