"""Input files of PO numbers, as a user would hand them to pobatch."""
from __future__ import annotations

from pathlib import Path


def write_orders(directory: Path, ids: list[str], name: str = "orders.csv", prefix: str = "") -> Path:
    """A one-column CSV (`PO_NUMBER`) with `prefix + id` per row."""
    path = directory / name
    path.write_text("PO_NUMBER\n" + "".join(f"{prefix}{i}\n" for i in ids), encoding="utf-8")
    return path
