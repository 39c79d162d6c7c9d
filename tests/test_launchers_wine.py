"""run.bat under Debian's wine (`cmd /c run.bat`), with stand-ins for py, the venv's python and pobatch.

The stand-ins are shell scripts named .exe (wine starts those as Unix programs) that write down how
they were called. Wine's cmd is not Windows' cmd, and two things limit what this proves:
- wine neither waits for a Unix program nor passes its exit code to %errorlevel%, so the branches
  that hang on a stand-in's exit code or output (a venv that no longer runs, the file dialog's
  answer) are covered by the text checks in tests/test_launchers.py only;
- wine 8's cmd runs the right-hand side of `a || b` even when `a` succeeded, which is why run.bat
  checks `if errorlevel 1` instead (the same on every Windows);
- wine's `where` and `fc` are stubs that always succeed, so the set-up itself (stamp, new venv,
  pip) cannot be exercised here at all.
What does run for real: cmd's parsing of the whole file (labels, CRLF, blocks), pushd from another
folder, the installed path that is not set up again, "run.bat test",
a dropped file, the file dialog that cannot open (no PowerShell here, as on a PC where it is locked
down), and a command passed through without a pause.

Not in CI: wine is about 100 MB to install and a new wine prefix takes about 12 s; run it where wine
is installed (`apt-get install -y wine`).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eventually import wait_for

ROOT = Path(__file__).resolve().parent.parent
WINE = shutil.which("wine")

pytestmark = pytest.mark.skipif(sys.platform == "win32" or not WINE,
                                reason="Debian's wine is not installed (apt-get install -y wine)")


def win(path: Path) -> str:
    """The path as wine's Windows programs see it (Z: is the Unix root)."""
    return "Z:" + str(path).replace("/", "\\")


@pytest.fixture(scope="module")
def wine_env(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("wineprefix")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINE")}
    env.update(WINEPREFIX=str(prefix), WINEDEBUG="-all", WINEDLLOVERRIDES="mscoree,mshtml=")
    subprocess.run([WINE, "cmd", "/c", "ver"], env=env, capture_output=True, timeout=300, check=True)
    yield env
    subprocess.run(["wineserver", "-k"], env=env, capture_output=True, timeout=60)


def stub(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body, encoding="utf-8")
    path.chmod(0o755)


class WineBox:
    """An installed pobatch folder (venv stand-ins and a matching stamp), PATH with the py stand-in."""

    def __init__(self, root: Path, env: dict[str, str], powershell: str | None = None):
        self.root, self.proj, self.bin, self.log = root, root / "proj", root / "wbin", root / "calls.log"
        self.proj.mkdir()
        shutil.copy(ROOT / "run.bat", self.proj / "run.bat")
        shutil.copy(ROOT / "setup.cfg", self.proj / "setup.cfg")
        scripts = self.proj / ".venv" / "Scripts"
        stub(scripts / "python.exe", f'printf "python %s\\n" "$*" >> "{self.log}"\n')
        stub(scripts / "pobatch.exe", f'[ "$1" = "--version" ] && exit 0\nprintf "pobatch %s\\n" "$*" >> "{self.log}"\n')
        stub(self.bin / "py.exe", f'printf "py %s\\n" "$*" >> "{self.log}"\n')  # must not be needed
        shutil.copy(self.proj / "setup.cfg", self.proj / ".venv" / "pobatch-setup.cfg")
        if powershell is not None:  # the file dialog: prints the chosen file
            stub(self.bin / "powershell.exe", f'echo "powershell" >> "{self.log}"\nprintf "%s\\r\\n" "{powershell}"\n')
        self.env = {**env, "WINEPATH": win(self.bin)}

    def run(self, *args: str) -> subprocess.CompletedProcess:
        self.log.unlink(missing_ok=True)
        # From another folder, as a double-click starts it: run.bat must find its own folder.
        return subprocess.run([WINE, "cmd", "/c", win(self.proj / "run.bat"), *args], cwd=self.root,
                              env=self.env, input="\r\n" * 4, capture_output=True, text=True, timeout=180)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def expect_calls(self, expected: list[str], timeout: float = 60) -> None:
        """Wine does not wait for a Unix program to finish, so a stand-in may still be writing (and two
        stand-ins may write in either order)."""
        try:
            wait_for(lambda: sorted(self.calls()) == sorted(expected), timeout, f"the calls {expected}")
        except AssertionError:
            assert sorted(self.calls()) == sorted(expected)


def test_an_installed_venv_with_an_unchanged_setup_cfg_is_not_set_up_again(tmp_path, wine_env):
    box = WineBox(tmp_path, wine_env)
    out = box.run("demo")
    assert "Setting up" not in out.stdout
    box.expect_calls(["pobatch demo"])


def test_test_runs_pytest_once_its_tools_are_installed(tmp_path, wine_env):
    box = WineBox(tmp_path, wine_env)
    shutil.copy(box.proj / "setup.cfg", box.proj / ".venv" / "pobatch-test-setup.cfg")
    out = box.run("test", "-x")
    box.expect_calls(["python -c import pytest", "python -m pytest -x"])
    assert "Press any key" not in out.stdout


def test_a_dropped_file_is_the_orders_file(tmp_path, wine_env):
    box = WineBox(tmp_path, wine_env)
    orders = tmp_path / "my orders.csv"
    orders.write_text("PO_NUMBER\r\n100001\r\n")
    out = box.run(win(orders))
    box.expect_calls([f"pobatch start {win(orders)}"])
    assert "Press any key to close this window." in out.stdout


def test_double_click_without_a_file_dialog_asks_for_the_path(tmp_path, wine_env):
    box = WineBox(tmp_path, wine_env)  # wine has no PowerShell: the dialog cannot open
    out = box.run()
    assert "The file dialog could not open on this PC." in out.stdout
    assert "No file chosen." not in out.stdout
    box.expect_calls(["pobatch start"])


def test_commands_pass_through_without_a_pause(tmp_path, wine_env):
    box = WineBox(tmp_path, wine_env)
    out = box.run("run", "orders.csv", "--base-url", "https://x.coupahost.com")
    box.expect_calls(["pobatch run orders.csv --base-url https://x.coupahost.com"])
    assert "Press any key" not in out.stdout


def test_a_scheduled_command_with_refresh_and_on_finish_passes_through(tmp_path, wine_env):
    """README's weekly task: `run.bat run ORDERS --refresh --on-finish "..."`, no pause."""
    box = WineBox(tmp_path, wine_env)
    hook = "powershell -NoProfile -File C:\\pobatch\\notify.ps1"
    out = box.run("run", "orders.csv", "--refresh", "--on-finish", hook)
    box.expect_calls([f"pobatch run orders.csv --refresh --on-finish {hook}"])
    assert "Press any key" not in out.stdout
