"""What a refresh already holds of a PO: the files of its earlier answer, checked on disk, and the
identity that tells an attachment on the page it is one of them (docs/design.md, "Refresh").

The planner (core/preparation/planner.py) reads the run store and the folder and hands the result to the worker in
the task's payload; the workflow skips the attachments whose identity is held and intact, and the
publisher carries every held file into the new folder. Nothing here talks to a browser.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pobatch.corelib.browser.downloads import sha256_file

# Query parameters that change from one page view to the next while the file stays the same: signed
# and expiring links (S3, Azure SAS, CloudFront), cache busters. An attachment's identity leaves them out.
VOLATILE_PARAMS = frozenset({
    "expires", "signature", "key-pair-id", "policy", "se", "sig", "sp", "sv", "st", "sr", "spr", "skoid",
    "sktid", "skt", "ske", "sks", "skv", "_", "t", "ts", "timestamp", "nonce", "cache", "cb",
})


def attachment_identity(source: str, ref: str, label: str) -> str:
    """An attachment's name on the portal across visits: where it was found (the PO or its requisition),
    what it points at (its link without fragment and volatile parameters, else its id or data values),
    and its label. Two attachments of one PO never share all three; one attachment keeps them."""
    return f"{source}|{_stable_ref(ref)}|{' '.join((label or '').split())}"


def _stable_ref(ref: str) -> str:
    ref = (ref or "").strip()
    if "://" not in ref:
        return ref
    parts = urlsplit(ref)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k.lower() not in VOLATILE_PARAMS and not k.lower().startswith("x-amz-")]
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, urlencode(query), ""))


@dataclass(frozen=True)
class HeldFile:
    """One file of a PO's earlier answer, as the run store recorded it and as the disk now has it."""

    name: str
    size: int
    sha256: str
    identity: str = ""  # "" for a file recorded before identities were kept: matched by its bytes
    source: str = "po"
    brought_by: str = ""  # the run that downloaded it
    mtime_ns: int = 0
    removed_on_portal: str = ""  # the run that first found it gone from the portal ("" = still there)
    intact: bool = True  # on disk with its recorded size and bytes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HeldFile":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def check_held(folder: str | Path, records: Iterable[dict[str, Any]]) -> list[HeldFile]:
    """The stored files of a PO checked against its folder: cheaply (size and modification time) and by
    sha256 only when the time differs. A missing or changed file is not intact: the refresh fetches it again."""
    out: list[HeldFile] = []
    base = Path(folder) if folder else None
    for r in records:
        held = HeldFile.from_dict({**r, "brought_by": r.get("brought_by") or r.get("run_id") or ""})
        out.append(held if base is not None and _intact(base / held.name, held) else replace(held, intact=False))
    return out


def _intact(path: Path, held: HeldFile) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_size != held.size:
        return False
    if held.mtime_ns and st.st_mtime_ns == held.mtime_ns:
        return True
    return sha256_file(path) == held.sha256
