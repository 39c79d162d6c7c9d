"""Site definitions: everything portal-specific lives here, so a new portal is data, not workflow code.

`resolve_site` is the one way the application gets a definition: a built-in one by name, extended or
replaced by a site file (`--site-file`, else `site.toml` in the user's config folder).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from pobatch.core.preparation.user_config import config_dir
from pobatch.core.sites.builtin import load_builtin_sites
from pobatch.core.sites.definition import SiteDefinition
from pobatch.core.sites.demo import demo_of
from pobatch.core.sites.site_file import SiteFileError, load_site_file
from pobatch.corelib.errors import FatalError

# Every core/sites/<name>.toml (sites/builtin.py), and the demo portal: Coupa on this PC.
SITES: dict[str, SiteDefinition] = load_builtin_sites()
COUPA = SITES["coupa"]
DEMO = SITES["demo"] = demo_of(COUPA)
USER_SITE_FILE = "site.toml"


def get_site(name: str) -> SiteDefinition:
    try:
        return SITES[name]
    except KeyError:
        raise FatalError(
            f"--site: '{name}' is not a known site; expected one of {', '.join(sorted(SITES))}",
            reason="BAD_CONFIG",
        ) from None


def default_site_file() -> Path | None:
    """The user's own site file, picked up without an option (e.g. %LOCALAPPDATA%\\pobatch\\site.toml)."""
    path = config_dir() / USER_SITE_FILE
    return path if path.is_file() else None


def resolve_site(name: str, site_file: str | Path | None = None) -> SiteDefinition:
    """The built-in site `name`, or the definition a site file builds on it. A file that does not
    say `extends` defines its portal from scratch and replaces the built-in one whole."""
    if not site_file:
        return get_site(name)
    base = get_site(name)
    try:
        site = load_site_file(site_file, builtins=get_site)
    except SiteFileError as exc:
        raise FatalError(str(exc), reason="BAD_SITE_FILE") from None
    if not site.default_base_url and base.default_base_url:
        site = dataclasses.replace(site, default_base_url=base.default_base_url)
    return site


__all__ = ["COUPA", "DEMO", "SiteDefinition", "SITES", "get_site", "resolve_site", "default_site_file", "SiteFileError"]
