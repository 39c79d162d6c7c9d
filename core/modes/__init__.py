"""Run modes: how a run's tasks become a stream of results and events (docs/design.md, "Data flow").

Every mode implements `base.RunMode`: `stream(plan) -> Iterator[TaskResult | Event]` over the same
per-PO workflow; MainApp consumes any of them alike. `registry.py` maps a mode's name to it.

To add a mode: a module here with a class that has `name` and `stream(plan)`, and one line in
`registry.MODES` (plus the name in `registry.STRATEGIES` if `--strategy` may choose it).

This file imports nothing on purpose: core/modes/po_handler.py imports `pobatch.core.modes.worker_notes`, and the
pool modes import po_worker, so the package itself stays free of both.
"""
