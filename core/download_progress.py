"""Download progress as the workflow reports it, read the same way by the console and the run log.

The workflow sends PoEvent.DOWNLOAD_PROGRESS for a download still running after about 2 s, at most
one every 2 s per download, with the detail "<received bytes>/<total bytes or 0> <file name>" (total 0:
the portal sent no length). The speed is worked out here from two reports of the same file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_DETAIL = re.compile(r"^\s*(\d+)/(\d+)(?:\s+(.*))?$", re.S)


@dataclass(frozen=True)
class Progress:
    received: int
    total: int  # 0 when unknown
    name: str

    @property
    def fraction(self) -> float | None:
        return self.received / self.total if self.total > 0 else None


def format_progress(received: int, total: int, name: str) -> str:
    """The detail of a download_progress event: the one shape both sides agree on."""
    return f"{received}/{total} {name}"[:300]


def parse_progress(detail: str) -> Progress | None:
    """The detail of a download_progress event, or None when it is not in the agreed shape."""
    m = _DETAIL.match(detail or "")
    if not m:
        return None
    return Progress(int(m.group(1)), int(m.group(2)), (m.group(3) or "").strip())


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KB': sizes as a person reads them (binary units, like Windows Explorer)."""
    n = float(max(0, n))
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{int(n)} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def describe(p: Progress, speed: float | None = None) -> str:
    """'12.0 MB of 50.0 MB (24%), 2.1 MB/s, scan.pdf': one line for the console and the log."""
    text = human_bytes(p.received)
    if p.total > 0:
        text += f" of {human_bytes(p.total)} ({p.received * 100 // p.total}%)"
    if speed is not None:
        text += f", {human_bytes(speed)}/s"
    return text + (f", {p.name}" if p.name else "")


class SpeedMeter:
    """Bytes per second of each running download, from successive reports of the same file."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def update(self, who: str, p: Progress, ts: float) -> float | None:
        key = (who, p.name)
        prev = self._last.get(key)
        self._last[key] = (ts, p.received)
        if prev is None or ts <= prev[0] or p.received < prev[1]:
            return None
        return (p.received - prev[1]) / (ts - prev[0])

    def forget(self, who: str) -> None:
        for key in [k for k in self._last if k[0] == who]:
            del self._last[key]
