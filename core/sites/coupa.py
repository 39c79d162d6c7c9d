"""Coupa: the built-in definition, read from coupa.toml (a site file like any user's)."""
from __future__ import annotations

from pathlib import Path

from pobatch.core.sites.site_file import load_site_file

COUPA_FILE = Path(__file__).with_name("coupa.toml")
COUPA = load_site_file(COUPA_FILE)
