"""A wheel that works: what `pip wheel .` builds, installed without `-e` into a fresh venv, runs the
demo batch from outside the source tree (issue 16).

The folders core/, corelib/, EXPERIMENTAL/ and profiles_template/ install as pobatch.core,
pobatch.corelib, pobatch.experimental and pobatch.profiles_template (setup.cfg's package_dir). The
fresh venv needs the package index for the dependencies, as a person's first install does.
"""
from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import openpyxl
import pytest

from package_index import require_package_index

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"core": "pobatch.core", "corelib": "pobatch.corelib", "EXPERIMENTAL": "pobatch.experimental"}


def declared_packages() -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg", encoding="utf-8")
    return {line.strip() for line in cfg["options"]["packages"].splitlines() if line.strip()}


def test_setup_cfg_names_every_package_folder():
    """A package folder missing from the explicit list would be left out of the wheel without a word."""
    found = {"pobatch.profiles_template"}
    for folder, name in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    assert declared_packages() == found


def run(cmd: list[str], cwd: Path, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, f"{cmd}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.usefixtures("browser_available")
def test_the_wheel_installs_without_editable_and_runs_the_demo(tmp_path):
    require_package_index("the fresh venv cannot install the wheel's dependencies")
    wheels = tmp_path / "wheels"
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources it builds.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "demo_output"))
    # As `pip wheel .` builds it: in an isolated environment with pyproject.toml's build requirements.
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)],
        cwd=tmp_path)
    (wheel,) = wheels.glob("pobatch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"pobatch"}, f"the wheel installs other top-level names: {tops}"
    for needed in ("pobatch/profiles_template/Default/Preferences", "pobatch/profiles_template/Local State",
                   "pobatch/core/sites/coupa.toml", "pobatch/core/demo_portal/data/sample_scenario.json",
                   "pobatch/core/modes/single_session/__init__.py", "pobatch/experimental/__init__.py"):
        assert needed in names, f"{needed} is missing from the wheel"
    assert any(n.startswith("pobatch/core/vendor/rrweb/") for n in names)

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    run([str(bindir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)], cwd=tmp_path)
    # Outside the source tree, nothing of it on the path: the import must come from the venv.
    where = run([str(bindir / "python"), "-c", "import pobatch.core, pobatch.profiles_template as t; "
                 "print(pobatch.core.__file__); print(list(t.__path__)[0])"], cwd=tmp_path).stdout.split()
    assert all(Path(w).is_relative_to(venv) for w in where), where

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["POBATCH_CONFIG_DIR"] = str(tmp_path / "config")
    env["XDG_DATA_HOME"] = str(tmp_path / "data")  # the demo's own profile, seeded from the installed template
    out = tmp_path / "demo_output"
    done = subprocess.run([str(bindir / "pobatch"), "demo", "--out", str(out), "--browser", "chromium"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr
    workbook = next(out.glob("*_results.xlsx"))
    rows = list(openpyxl.load_workbook(workbook, read_only=True).worksheets[0].iter_rows(values_only=True))
    assert len(rows) > 5
    assert any(p.is_file() for p in out.rglob("*") if ".pobatch" not in p.parts)
