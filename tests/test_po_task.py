"""The PO task payload crosses the process boundary as a dict: what the planner writes, a worker reads."""
from __future__ import annotations

import pickle

from pobatch.core.workflow.po_job import PoTaskPayload as ReExported
from pobatch.core.workflow.po_task import PoTaskPayload


def test_payload_round_trips_through_the_task_dict() -> None:
    payload = PoTaskPayload("PO100001", row=7, folder_levels=("Acme", "2024"), previous_folders=("/out/a",))
    data = pickle.loads(pickle.dumps(payload.to_dict()))  # what a spawned worker receives
    assert data == {"po_number": "PO100001", "row": 7, "folder_levels": ["Acme", "2024"],
                    "previous_folders": ["/out/a"], "refresh": False, "held": []}
    assert PoTaskPayload.from_dict(data) == payload


def test_the_workflow_module_still_exports_the_payload() -> None:
    assert ReExported is PoTaskPayload
