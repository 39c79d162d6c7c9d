"""The bundled demo portal: Coupa's shapes on 127.0.0.1, so the Coupa definition is what gets exercised."""
from __future__ import annotations

import dataclasses

from pobatch.core.sites.definition import SiteDefinition


def demo_of(coupa: SiteDefinition) -> SiteDefinition:
    return dataclasses.replace(coupa, name="demo", default_base_url="http://127.0.0.1:8765")


# The demo portal's own test account; a real portal's password is never typed by pobatch.
DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "demo"
