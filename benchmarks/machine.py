"""What the numbers were measured on, and waiting until nothing else competes for the CPU."""
from __future__ import annotations

import logging
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import psutil

from pobatch.corelib.browser.factory import BrowserSpec, resolve_browser_binary, resolve_driver

log = logging.getLogger(__name__)


@dataclass
class MachineInfo:
    date: str
    cpu_model: str
    logical_cpus: int
    physical_cores: int
    ram_gib: float
    os: str
    kernel: str
    chromium: str
    chromedriver: str
    python: str
    selenium: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class QuietCheck:
    """The load when the benchmark started, and whether the machine got quiet before it did."""

    load1: float
    cpu_percent: float
    waited_seconds: float
    quiet: bool
    checked: bool  # False when the wait was skipped (--no-wait, --quick)


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
        return out.splitlines()[0] if out else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "not found"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}"


def machine_info() -> MachineInfo:
    import selenium

    spec = BrowserSpec(browser="chromium")
    binary = resolve_browser_binary(spec)
    driver = resolve_driver(spec, binary).path
    return MachineInfo(
        date=datetime.now().astimezone().isoformat(timespec="seconds"),
        cpu_model=_cpu_model(),
        logical_cpus=psutil.cpu_count(logical=True) or 0,
        physical_cores=psutil.cpu_count(logical=False) or 0,
        ram_gib=round(psutil.virtual_memory().total / 2**30, 1),
        os=_os_name(),
        kernel=platform.release(),
        chromium=_version([binary, "--version"]) if binary else "not found",
        chromedriver=_version([driver, "--version"]) if driver else "not found",
        python=platform.python_version(),
        selenium=selenium.__version__,
    )


def load1() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def wait_for_quiet(max_wait: float, load_below: float = 0.6, cpu_below: float = 20.0,
                   pause: float = 20.0) -> QuietCheck:
    """Poll the 1-minute load and a 5 s CPU sample until both are low, for at most max_wait seconds."""
    t0 = time.monotonic()
    while True:
        cpu = psutil.cpu_percent(interval=5)
        load = load1()
        waited = time.monotonic() - t0
        if load < load_below and cpu < cpu_below:
            log.info("machine quiet after %.0f s: load %.2f, CPU %.0f%%", waited, load, cpu)
            return QuietCheck(load, cpu, waited, True, True)
        if waited >= max_wait:
            log.warning("machine never got quiet within %.0f s (load %.2f, CPU %.0f%%): running anyway",
                        waited, load, cpu)
            return QuietCheck(load, cpu, waited, False, True)
        log.info("waiting for a quiet machine: load %.2f (< %.1f), CPU %.0f%% (< %.0f%%), %.0f s so far",
                 load, load_below, cpu, cpu_below, waited)
        time.sleep(pause)


def current_load() -> QuietCheck:
    return QuietCheck(load1(), psutil.cpu_percent(interval=1), 0.0, False, False)
