"""The bundled demo portal: Coupa's page shapes (or a second markup) on 127.0.0.1, driven by a seeded scenario.

`pobatch demo` runs against it and the tests exercise it; `python -m pobatch.core.demo_portal` serves it alone.
"""
from __future__ import annotations

from pobatch.core.demo_portal.scenario import (
    AttachmentEntry,
    AttachmentSpec,
    LatencySpec,
    PoChange,
    PoSpec,
    RefreshDelta,
    RequisitionSpec,
    Revision,
    Scenario,
    ScenarioError,
    SessionOptions,
    generate_scenario,
    hostile_names_scenario_path,
    load_scenario,
    many_attachment_pos,
    many_attachments_scenario_path,
    sample_orders_path,
    sample_scenario_path,
    unfamiliar_scenario_path,
    variant_scenario_path,
    variant_site_path,
)
from pobatch.core.demo_portal.server import DEMO_PASSWORD, SESSION_COOKIE, DemoPortal, main

__all__ = [
    "AttachmentEntry", "AttachmentSpec", "DEMO_PASSWORD", "DemoPortal", "LatencySpec", "PoChange", "PoSpec",
    "RefreshDelta", "RequisitionSpec", "Revision",
    "SESSION_COOKIE", "Scenario", "ScenarioError", "SessionOptions", "generate_scenario", "load_scenario", "main",
    "many_attachment_pos", "many_attachments_scenario_path",
    "sample_orders_path", "sample_scenario_path", "unfamiliar_scenario_path", "hostile_names_scenario_path",
    "variant_scenario_path", "variant_site_path",
]
