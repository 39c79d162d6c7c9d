"""The one check that a run reached the demo scenario's truth: statuses, reasons, and each PO's bytes."""
from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

from pobatch.core.app import RunSummary
from pobatch.core.demo_portal import DemoPortal


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_matches_truth(summary: RunSummary, portal: DemoPortal, po_ids: list[str], names: bool = False,
                         refreshed_from: int | None = None) -> None:
    """Status as the scenario says, and each PO folder holds exactly that PO's bytes (and, with
    `names`, under the names the scenario expects). `refreshed_from`: the summary is a --refresh run at
    the portal's revision after a run at that one, so a folder holds the files of both (nothing is deleted)."""
    expected = portal.expected_outcomes()
    got = {po: (summary.outcomes[po].status.value, summary.outcomes[po].reason) for po in po_ids}
    assert got == {po: tuple(expected[po]) for po in po_ids}, \
        {po: summary.outcomes[po].error_message for po in po_ids if got[po] != tuple(expected[po])}
    for po in po_ids:
        outcome = summary.outcomes[po]
        if not outcome.download_folder:
            continue
        on_disk = {p.name: p.read_bytes() for p in Path(outcome.download_folder).iterdir()}
        assert Counter(sha(b) for b in on_disk.values()) == \
            Counter(sha(b) for b in portal.expected_files(po, refreshed_from).values()), f"PO {po}: wrong files"
        assert {f.sha256 for f in outcome.files} == {sha(b) for b in on_disk.values()}
        if names:
            assert sorted(on_disk) == sorted(portal.expected_files(po, refreshed_from)), f"PO {po}: names"
