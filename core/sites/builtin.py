"""The built-in portals: every site file in core/sites/ is one, named after its file.

Adding a portal is adding `core/sites/<name>.toml` (docs/design.md, "How to add a portal"): the file
is read like a user's site file and may `extends` another built-in one. No code names a portal.
"""
from __future__ import annotations

from pathlib import Path

from pobatch.core.sites.definition import SiteDefinition
from pobatch.core.sites.site_file import SiteFileError, load_site_file

BUILTIN_DIR = Path(__file__).resolve().parent


def load_builtin_sites(folder: Path = BUILTIN_DIR) -> dict[str, SiteDefinition]:
    """Every `<name>.toml` of the folder by its name; one that extends another is read after it."""
    sites: dict[str, SiteDefinition] = {}
    reading: list[str] = []

    def builtin(name: str) -> SiteDefinition:
        if name in sites:
            return sites[name]
        path = folder / f"{name}.toml"
        if not path.is_file():
            raise LookupError(name)  # the file that extends it names its line (site_file.parse_site_text)
        if name in reading:
            raise SiteFileError(f"site file {path}: extends come back to '{name}' "
                                f"({' -> '.join(reading + [name])}); expected a chain that ends")
        reading.append(name)
        site = load_site_file(path, builtins=builtin)
        reading.pop()
        if site.name != name:
            raise SiteFileError(f"site file {path}: name = '{site.name}'; expected '{name}', the file's name")
        sites[name] = site
        return site

    for path in sorted(folder.glob("*.toml")):
        builtin(path.stem)
    return sites
