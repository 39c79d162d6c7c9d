"""run.sh and run.bat: what a person double-clicking or typing ./run.sh gets, case by case (issue 17).

run.sh runs for real, in a sandbox folder, with stand-ins for the venv's python and pobatch, for
apt-get, sudo and id, and a PATH that holds nothing else: every branch is then visible in a log, and
nothing is installed. run.bat cannot run here (no cmd), so its text is checked for each case; the
behaviour it hands over to (`pobatch start`) is tested in Python (tests/test_desk.py).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SH = shutil.which("sh") or "/bin/sh"
TOOLS = ("dirname", "cmp", "cp", "rm")  # what run.sh itself calls, besides the shell's builtins


def stub(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body, encoding="utf-8")
    path.chmod(0o755)


class Sandbox:
    """A copy of run.sh and setup.cfg with a stand-in venv, and a log of every command they ran."""

    def __init__(self, root: Path, uid: int = 0, browser: bool = True, installed: bool = True) -> None:
        self.root, self.bin, self.log = root / "proj", root / "bin", root / "calls.log"
        self.root.mkdir()
        shutil.copy(ROOT / "run.sh", self.root / "run.sh")
        shutil.copy(ROOT / "setup.cfg", self.root / "setup.cfg")
        for tool in TOOLS:
            real = shutil.which(tool)
            assert real, f"{tool} is needed by run.sh"
            (self.bin / tool).parent.mkdir(parents=True, exist_ok=True)
            (self.bin / tool).symlink_to(real)
        log = self.log
        stub(self.bin / "id", f'[ "$1" = "-u" ] && echo {uid}\n')
        stub(self.bin / "apt-get", f'echo "apt-get $*" >> "{log}"\n')
        stub(self.bin / "sudo", f'echo "sudo $*" >> "{log}"\n"$@"\n')
        if browser:
            stub(self.bin / "chromium", "exit 0\n")
        venv = self.root / ".venv" / "bin"
        # The base python: `-m venv --clear .venv` makes a working venv python again.
        stub(self.bin / "python3", f'echo "base-python $*" >> "{log}"\n'
                                   f'[ "$1 $2" = "-m venv" ] && rm -f "{self.root}/python-broken"\nexit 0\n')
        stub(venv / "python", f'[ -e "{self.root}/python-broken" ] && exit 1\n'
                              f'case "$1 $2" in\n'
                              f'  "-c import pytest") [ -e "{self.root}/pytest-installed" ]; exit $? ;;\n'
                              f'  "-c ") exit 0 ;;\n'
                              f'esac\n'
                              f'echo "venv-python $*" >> "{log}"\n'
                              f'case "$*" in *".[test]"*) : > "{self.root}/pytest-installed" ;; esac\n'
                              f'rm -f "{self.root}/pobatch-broken"\nexit 0\n')
        stub(venv / "pobatch", f'[ -e "{self.root}/pobatch-broken" ] && exit 1\n'
                               f'[ "$1" = "--version" ] && exit 0\necho "pobatch $*" >> "{log}"\n')
        if installed:
            shutil.copy(self.root / "setup.cfg", self.root / ".venv" / ".pobatch-setup.cfg")

    def run(self, *args: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess:
        self.log.unlink(missing_ok=True)
        base = {"PATH": str(self.bin), "HOME": str(self.root), "PYTHON": str(self.bin / "python3")}
        return subprocess.run([SH, str(self.root / "run.sh"), *args], input=stdin, capture_output=True, text=True,
                              env={**base, **(env or {})}, timeout=60, cwd=self.root.parent)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="run.sh is for Linux and macOS")


def test_no_arguments_asks_through_pobatch_start(tmp_path):
    box = Sandbox(tmp_path)
    assert box.run().returncode == 0
    assert box.calls() == ["pobatch start"]


def test_an_orders_file_as_the_only_argument_starts_with_it(tmp_path):
    box = Sandbox(tmp_path)
    (box.root / "my orders.csv").write_text("PO_NUMBER\n1\n")
    box.run(str(box.root / "my orders.csv"))
    assert box.calls() == [f"pobatch start {box.root / 'my orders.csv'}"]


def test_commands_pass_through(tmp_path):
    box = Sandbox(tmp_path)
    box.run("run", "o.csv", "--base-url", "https://x.coupahost.com")
    assert box.calls() == ["pobatch run o.csv --base-url https://x.coupahost.com"]


def test_first_run_installs_pobatch_without_the_test_tools(tmp_path):
    box = Sandbox(tmp_path, installed=False)
    box.run("demo")
    calls = box.calls()
    assert calls[0].startswith("venv-python -m pip install") and calls[0].endswith("-e .")
    assert calls[1:] == ["pobatch demo"]
    assert (box.root / ".venv" / ".pobatch-setup.cfg").read_bytes() == (box.root / "setup.cfg").read_bytes()
    box.run("demo")
    assert box.calls() == ["pobatch demo"]  # installed once, not on every run


def test_a_changed_setup_cfg_reinstalls(tmp_path):
    box = Sandbox(tmp_path)
    with open(box.root / "setup.cfg", "a") as f:
        f.write("\n# an update with a new dependency\n")
    box.run("demo")
    assert [c for c in box.calls() if "pip install" in c] and box.calls()[-1] == "pobatch demo"


def test_a_venv_that_no_longer_runs_is_repaired(tmp_path):
    box = Sandbox(tmp_path)
    (box.root / "pobatch-broken").touch()  # e.g. the folder was moved: the script's python path is gone
    box.run("demo")
    assert [c for c in box.calls() if "pip install" in c] and box.calls()[-1] == "pobatch demo"
    (box.root / "python-broken").touch()  # the venv's python itself is gone: a new venv
    (box.root / "pobatch-broken").touch()
    box.run("demo")
    calls = box.calls()
    assert calls[0] == "base-python -m venv --clear .venv" and "pip install" in calls[1]
    assert calls[-1] == "pobatch demo"


def test_test_installs_the_test_tools_once(tmp_path):
    box = Sandbox(tmp_path)
    box.run("test", "-x")
    calls = box.calls()
    assert "pip install" in calls[0] and calls[0].endswith('-e .[test]')
    assert calls[1] == "venv-python -m pytest -x"
    box.run("test")
    assert box.calls() == ["venv-python -m pytest"]


def test_missing_browser_is_not_installed_without_asking(tmp_path):
    box = Sandbox(tmp_path, uid=1000, browser=False)
    result = box.run("demo")  # stdin is not a terminal and nobody said yes: nothing is installed
    assert not [c for c in box.calls() if "apt-get" in c]
    assert "apt-get install -y chromium chromium-driver" in result.stderr and "--yes" in result.stderr
    assert box.calls() == ["pobatch demo"]


@pytest.mark.parametrize("how", ["--yes", "CI=true"])
def test_yes_or_ci_installs_the_browser_and_says_the_command(tmp_path, how):
    box = Sandbox(tmp_path, uid=1000, browser=False)
    result = box.run(*(["--yes"] if how == "--yes" else []), "demo", env={"CI": "true"} if how == "CI=true" else {})
    calls = box.calls()
    assert "sudo apt-get update -qq" in calls and "sudo apt-get install -y -qq chromium chromium-driver" in calls
    assert "Running: sudo apt-get" in result.stderr  # never silently
    assert calls[-1] == "pobatch demo"


def test_root_needs_no_sudo(tmp_path):
    box = Sandbox(tmp_path, uid=0, browser=False)
    box.run("--yes", "demo")
    assert "apt-get install -y -qq chromium chromium-driver" in box.calls()
    assert not [c for c in box.calls() if c.startswith("sudo")]


def test_a_browser_without_its_driver_needs_no_system_packages(tmp_path):
    box = Sandbox(tmp_path, uid=1000, browser=True)  # no chromedriver on PATH: pobatch fetches one
    box.run("--yes", "demo")
    assert box.calls() == ["pobatch demo"]


@pytest.mark.parametrize("answer,installed", [("n", False), ("y", True)])
def test_a_person_at_the_terminal_is_asked_first(tmp_path, answer, installed):
    from desk_pty import PtySession

    box = Sandbox(tmp_path, uid=1000, browser=False)
    session = PtySession([SH, str(box.root / "run.sh"), "demo"],
                         env={"PATH": str(box.bin), "HOME": str(box.root), "PYTHON": str(box.bin / "python3")})
    try:
        session.expect(r"Install Chromium with \"sudo apt-get install -y chromium chromium-driver\"\? \(Y/N\)", 60)
        session.send(answer)
        assert session.wait(60) == 0
    finally:
        session.close()
    assert bool([c for c in box.calls() if "apt-get install" in c]) is installed
    assert box.calls()[-1] == "pobatch demo"


# ------------------------------------------------------------------------------------------------ run.bat

BAT = (ROOT / "run.bat").read_bytes()
BAT_TEXT = BAT.decode("ascii")


def bat_lines() -> list[str]:
    return [line.strip() for line in BAT_TEXT.split("\r\n")]


def test_bat_has_crlf_line_endings_and_sh_has_lf():
    assert BAT.count(b"\n") == BAT.count(b"\r\n") > 10  # cmd mis-reads labels in a .bat with bare LF
    sh = (ROOT / "run.sh").read_bytes()
    assert b"\r" not in sh and sh.startswith(b"#!")


def test_gitattributes_pin_the_line_endings():
    rules = (ROOT / ".gitattributes").read_text().splitlines()
    assert "*.bat text eol=crlf" in rules and "*.sh text eol=lf" in rules
    if shutil.which("git") and (ROOT / ".git").exists():
        out = subprocess.run(["git", "check-attr", "eol", "run.bat", "run.sh"], cwd=ROOT, capture_output=True,
                             text=True).stdout
        assert "run.bat: eol: crlf" in out and "run.sh: eol: lf" in out


def test_bat_works_from_a_network_share():
    assert 'pushd "%~dp0"' in BAT_TEXT
    assert "cd /d" not in BAT_TEXT.replace("rem pushd, not cd /d", "")


def test_bat_reinstalls_when_setup_cfg_changes_or_the_venv_no_longer_runs():
    lines = bat_lines()
    fc = lines.index('fc /b setup.cfg "%STAMP%" >nul 2>nul')
    assert lines[fc + 1:fc + 4] == ["if errorlevel 1 goto :setup", '"%POBATCH%" --version >nul 2>nul',
                                    "if errorlevel 1 goto :setup"]
    # a broken venv python gets a new venv; the stamp is written only after a successful install
    setup = lines.index(":setup")
    assert 'if exist ".venv\\Scripts\\python.exe" ".venv\\Scripts\\python.exe" -c "" >nul 2>nul && set "VENV_OK=1"' \
        in lines[setup:]
    pip = lines.index('".venv\\Scripts\\python.exe" -m pip install -q --disable-pip-version-check -e .')
    assert lines[pip + 1] == "if errorlevel 1 goto :setup_failed"
    assert lines[pip + 2] == 'copy /y setup.cfg "%STAMP%" >nul'


def test_bat_gives_users_no_test_tools_and_test_installs_them():
    assert '-e ".[test]"' in BAT_TEXT
    test_label = BAT_TEXT.index(":test\r\n")
    assert BAT_TEXT.index('-e ".[test]"') > test_label  # only under :test
    assert 'fc /b setup.cfg "%TEST_STAMP%"' in BAT_TEXT and "import pytest" in BAT_TEXT


def test_bat_treats_a_dropped_file_as_the_orders_file():
    lines = bat_lines()
    assert 'set "ATTR=%~a1"' in lines
    assert 'if defined ATTR if /i not "%ATTR:~0,1%"=="d" goto :dropped' in lines
    dropped = BAT_TEXT.index(":dropped\r\n")
    assert BAT_TEXT.index('"%POBATCH%" start "%~f1"', dropped) == BAT_TEXT.index('"%POBATCH%" start', dropped)
    # checked before any pass-through, which would answer "No such command"
    assert BAT_TEXT.index("goto :dropped") < BAT_TEXT.index('"%POBATCH%" %*')


def test_bat_interactive_paths_all_go_through_pobatch_start():
    """pobatch start asks the address ("use https://...? (Y/N)") and the mode, and signs in when the
    run stops for it (run --sign-in-if-needed): tested in tests/test_desk.py."""
    starts = re.findall(r'"%POBATCH%" start[^\r\n]*', BAT_TEXT)
    assert starts == ['"%POBATCH%" start "%~f1"', '"%POBATCH%" start', '"%POBATCH%" start "%ORDERS%"']
    assert "base_url.txt" not in BAT_TEXT and "set /p" not in BAT_TEXT  # no second copy of the questions
    assert "finished with problems" not in BAT_TEXT  # the verdict comes from pobatch


def test_bat_file_dialog_failure_falls_back_to_typing_the_path():
    ps = next(line for line in bat_lines() if line.startswith("powershell "))
    assert "try { Add-Type -AssemblyName System.Windows.Forms -ErrorAction Stop;" in ps and "catch { exit 3 }" in ps
    assert "else { exit 1 }" in ps
    lines = bat_lines()
    assert 'set "DIALOG_RC=%errorlevel%"' in lines
    no_file = BAT_TEXT.index("echo No file chosen.")
    assert BAT_TEXT.rindex('if "%DIALOG_RC%"=="1" (', 0, no_file) > BAT_TEXT.index('set "DIALOG_RC=%errorlevel%"')
    fallback = BAT_TEXT.index("echo The file dialog could not open on this PC.")
    assert BAT_TEXT.index('"%POBATCH%" start\r\n', fallback) - fallback < 80


def test_bat_keeps_the_exit_code_and_waits_for_a_key_only_when_double_clicked():
    assert BAT_TEXT.rstrip().endswith("exit /b %RC%")
    end = BAT_TEXT.index(":end\r\n")
    assert "pause >nul" in BAT_TEXT[end:]
    passthrough = BAT_TEXT.index('"%POBATCH%" %*')
    assert BAT_TEXT.index("exit /b %RC%", passthrough) < end  # command-line use returns without a pause


def test_a_scheduled_command_passes_through_with_its_arguments_whole(tmp_path):
    """What a weekly task runs (README, "Weekly with Windows Task Scheduler"; on Linux from cron): every
    argument reaches pobatch as it was, an --on-finish command with spaces and quotes as one."""
    box = Sandbox(tmp_path)
    stub(box.root / ".venv" / "bin" / "pobatch", f'[ "$1" = "--version" ] && exit 0\n'
                                                f'for a in "$@"; do printf "[%s]" "$a" >> "{box.log}"; done\n'
                                                f'echo >> "{box.log}"\nexit 3\n')
    hook = 'echo "$POBATCH_MESSAGE" | mail -s "pobatch: $POBATCH_OUTCOME" me@example.com'
    result = box.run("run", "my orders.csv", "--refresh", "--on-finish", hook)
    assert result.returncode == 3  # pobatch's exit code is the launcher's (sign-in required)
    assert box.calls() == [f"[run][my orders.csv][--refresh][--on-finish][{hook}]"]


def test_bat_hands_a_scheduled_command_over_whole_and_without_a_pause():
    """README's weekly.bat calls `run.bat run ... --refresh --on-finish "..."`: that is the pass-through
    path, which hands %* over as typed, keeps pobatch's exit code and never waits for a key."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    weekly = readme.split("`C:\\pobatch\\weekly.bat`:", 1)[1].split("```bat\n", 1)[1].split("```", 1)[0]
    call = weekly.splitlines()[-1]
    assert call.startswith('call "C:\\pobatch\\run.bat" run "C:\\POs\\orders.xlsx" ')
    assert " --refresh " in call and ' --on-finish "' in call and "%" not in call
    passthrough = BAT_TEXT.index('"%POBATCH%" %*')
    after = BAT_TEXT[passthrough:BAT_TEXT.index("exit /b %RC%", passthrough)]
    assert 'set "RC=%errorlevel%"' in after and "pause" not in after
    assert "schtasks /Create " in readme and " /SC WEEKLY " in readme and " /IT" in readme
