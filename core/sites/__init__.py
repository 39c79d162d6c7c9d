"""Site definitions: everything portal-specific lives here, so a new portal is data, not workflow code."""
from __future__ import annotations

from core.sites.definition import SiteDefinition
from core.sites.coupa import COUPA
from core.sites.demo import DEMO

SITES: dict[str, SiteDefinition] = {s.name: s for s in (COUPA, DEMO)}


def get_site(name: str) -> SiteDefinition:
    try:
        return SITES[name]
    except KeyError:
        from corelib.errors import FatalError

        raise FatalError(
            f"--site: '{name}' is not a known site; expected one of {', '.join(sorted(SITES))}",
            reason="BAD_CONFIG",
        ) from None


__all__ = ["SiteDefinition", "SITES", "get_site"]
