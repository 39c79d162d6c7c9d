"""A real Selenium Grid 4.20 (standalone) for the tests: fetched once, started per module, nothing left after.

The jar comes from the npm package `@nightwatch/selenium-server` (`npm pack` into a cache folder,
then the jar is taken out of the tarball). The Grid runs with the machine's Java, chromedriver on
PATH, and a node configuration whose stereotype names Debian's Chromium binary and the headless
flags. Everything the Grid and its browsers write to a temp folder (managed downloads, Chromium's
`org.chromium.Chromium.*` profiles of sessions without --user-data-dir) goes to one folder of ours
(TMPDIR and java.io.tmpdir), which stop() deletes after killing the Grid's whole process tree.

The Grid is started detached (its launcher shell exits at once), so it is not a descendant of the
test process: conftest's per-test leak check then sees only the Grid's browsers (by the
--user-data-dir under the pytest temp folder), which must be gone after each test, while the
module-scoped Grid itself lives on until stop().
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tarfile
from pathlib import Path

import psutil

from pobatch.corelib.browser.grid import wait_until_ready

log = logging.getLogger(__name__)

SELENIUM_VERSION = "4.20.0"
NPM_PACKAGE = f"@nightwatch/selenium-server@{SELENIUM_VERSION}"
JAR_NAME = f"selenium-server-{SELENIUM_VERSION}.jar"
CHROMIUM_BINARIES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")
NODE_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync")


def cache_dir() -> Path:
    """Where the jar is kept between runs (POBATCH_GRID_CACHE overrides)."""
    env = os.environ.get("POBATCH_GRID_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pobatch"
    return base / f"selenium-server-{SELENIUM_VERSION}"


def missing_tools() -> list[str]:
    return [t for t in ("java", "npm", "chromedriver") if not shutil.which(t)] + (
        [] if any(Path(b).exists() for b in CHROMIUM_BINARIES) else ["chromium"])


def selenium_jar() -> Path:
    """The Grid jar, from the cache or fetched with `npm pack` (npm checks the package's integrity)."""
    folder = cache_dir()
    jar = folder / JAR_NAME
    if jar.is_file():
        return jar
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".fetch-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        done = subprocess.run(["npm", "pack", NPM_PACKAGE, "--pack-destination", str(staging), "--silent"],
                              capture_output=True, text=True, timeout=300)
        tarballs = list(staging.glob("*.tgz"))
        if done.returncode != 0 or len(tarballs) != 1:
            raise RuntimeError(f"npm pack {NPM_PACKAGE} failed ({done.returncode}): {done.stderr[-800:]}")
        with tarfile.open(tarballs[0]) as tar:
            member = tar.getmember(f"package/lib/{JAR_NAME}")
            src = tar.extractfile(member)
            assert src is not None
            part = staging / (JAR_NAME + ".part")
            with src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(part, jar)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return jar


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_config(path: Path, max_sessions: int, binary: str) -> Path:
    """Node TOML: no driver auto-detection, one Chromium stereotype with our binary and flags."""
    args = ", ".join(f'"{a}"' for a in NODE_ARGS)
    stereotype = f'{{"browserName": "chrome", "goog:chromeOptions": {{"binary": "{binary}", "args": [{args}]}}}}'
    path.write_text(f"""[node]
detect-drivers = false
max-sessions = {max_sessions}
override-max-sessions = true
enable-managed-downloads = true

[[node.driver-configuration]]
display-name = "Debian Chromium"
webdriver-executable = "{shutil.which('chromedriver')}"
max-sessions = {max_sessions}
stereotype = '{stereotype}'
""", encoding="utf-8")
    return path


class GridServer:
    """One standalone Grid on 127.0.0.1; use as a context manager."""

    def __init__(self, work_dir: Path, max_sessions: int = 2, start_timeout: float = 90.0) -> None:
        self.work_dir = Path(work_dir)
        self.tmp = self.work_dir / "tmp"  # TMPDIR and java.io.tmpdir of the Grid and its browsers
        self.max_sessions = max_sessions
        self.start_timeout = start_timeout
        self.port = 0
        self.pid = 0
        self.log_path = self.work_dir / "grid.log"
        self._create_time = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "GridServer":
        jar = selenium_jar()
        binary = next(b for b in CHROMIUM_BINARIES if Path(b).exists())
        self.tmp.mkdir(parents=True, exist_ok=True)
        config = node_config(self.work_dir / "node.toml", self.max_sessions, binary)
        self.port = free_port()
        cmd = ["java", f"-Djava.io.tmpdir={self.tmp}", "-jar", str(jar), "standalone", "--config", str(config),
               "--selenium-manager", "false", "--enable-managed-downloads", "true",
               "--host", "127.0.0.1", "--port", str(self.port), "--session-timeout", "120"]
        env = dict(os.environ, TMPDIR=str(self.tmp), TMP=str(self.tmp), TEMP=str(self.tmp))
        env["PATH"] = os.pathsep.join([str(Path(shutil.which("chromedriver") or "/usr/bin/chromedriver").parent),
                                       env.get("PATH", "")])
        # Detached: the launcher shell starts java in the background, prints its pid, and exits.
        launcher = subprocess.run(["sh", "-c", 'log="$1"; shift; "$@" >"$log" 2>&1 </dev/null & echo $!',
                                   "sh", str(self.log_path), *cmd],
                                  env=env, capture_output=True, text=True, timeout=30, check=True)
        self.pid = int(launcher.stdout.strip())
        self._create_time = psutil.Process(self.pid).create_time()
        try:
            wait_until_ready(self.url, self.start_timeout)
        except Exception:
            tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            self.stop()
            raise RuntimeError(f"the Grid did not start:\n{tail}")
        return self

    # -- what runs under it --------------------------------------------------------------------------
    def _java(self) -> psutil.Process | None:
        try:
            proc = psutil.Process(self.pid)
            return proc if proc.create_time() == self._create_time else None
        except psutil.NoSuchProcess:
            return None

    def processes(self) -> list[psutil.Process]:
        """The Grid's java, its chromedrivers and their browsers, plus any browser on our temp folder."""
        found: dict[int, psutil.Process] = {}
        java = self._java()
        if java is not None:
            found[java.pid] = java
            for p in java.children(recursive=True):
                found[p.pid] = p
        tmp = os.path.realpath(self.tmp)
        for p in psutil.process_iter(["cmdline"]):
            for arg in p.info["cmdline"] or []:
                if arg.startswith("--user-data-dir=") and os.path.realpath(arg.split("=", 1)[1]).startswith(tmp + os.sep):
                    found[p.pid] = p
        return [p for p in found.values() if _alive(p)]

    def browser_main_processes(self) -> list[psutil.Process]:
        """The node's main browser processes: Chromium processes whose parent is the Grid's chromedriver."""
        out = []
        for p in self.processes():
            try:
                parent = p.parent()
                if "chromium" in p.name() and parent is not None and "chromedriver" in parent.name():
                    out.append(p)
            except psutil.NoSuchProcess:
                pass
        return out

    def partial_downloads(self) -> list[Path]:
        """Downloads in flight on the node (the managed-downloads folders live under our temp folder)."""
        return [p for p in self.tmp.rglob("*.crdownload")] if self.tmp.exists() else []

    # -- stop ---------------------------------------------------------------------------------------
    def stop(self) -> None:
        """SIGTERM the Grid (it ends its sessions), then kill whatever of its tree is left; delete tmp."""
        procs = self.processes()
        java = self._java()
        if java is not None:
            try:
                java.terminate()
                java.wait(15)
            except (psutil.NoSuchProcess, psutil.TimeoutExpired):
                pass
        left = [p for p in procs + self.processes() if _alive(p)]
        for p in left:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(left, timeout=15)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "GridServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
