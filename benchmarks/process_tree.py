"""pobatch's whole process tree, watched from outside while it runs: its processes, by kind, in a thread.

cpu_per_po.py (CPU time by kind) and long_soak.py (memory over a long run) both start pobatch as its
own process and look at everything under it: pobatch's Python (and a parallel run's worker
processes), the driver(s), the browser(s) and their renderers, GPU and utility processes. A process
that leaves the tree (re-parented to init) is not seen; Chromium's processes stay under their browser.
"""
from __future__ import annotations

import logging
import threading

import psutil

log = logging.getLogger(__name__)


def kind_of(proc: psutil.Process) -> str:
    """Who a process of the tree is: pobatch's Python, the driver, or a browser process by its --type."""
    try:
        name = proc.name().lower()
        cmd = proc.cmdline()
    except psutil.Error:
        return "gone"
    if "python" in name:
        return "pobatch"
    if "driver" in name:
        return "driver"
    for arg in cmd:
        if arg.startswith("--type="):
            kind = arg.split("=", 1)[1]
            return "browser: " + ("utility" if kind == "utility" else kind)
    return "browser: main"


def tree_of(root: int) -> list[psutil.Process]:
    """`root` and every process under it now; [] once `root` is gone."""
    try:
        proc = psutil.Process(root)
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


class PeriodicTreeSampler:
    """Every `interval` seconds, from entering `with` until leaving it, `sample()` gets the processes of
    the tree under `root` (the first sample at once). Subclasses say what they keep; a sample that
    fails is logged and the next one is taken, so the sampler never takes a benchmark down."""

    def __init__(self, root: int, interval: float) -> None:
        self.root = root
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{type(self).__name__}", daemon=True)

    def __enter__(self) -> "PeriodicTreeSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=max(5.0, self.interval + 5.0))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample(tree_of(self.root))
            except Exception:
                log.warning("a sample of process %d's tree failed", self.root, exc_info=True)
            self._stop.wait(self.interval)

    def sample(self, procs: list[psutil.Process]) -> None:
        raise NotImplementedError
