"""Site files: a portal's definition as TOML, validated up front.

The built-in Coupa definition is itself such a file (core/sites/coupa.toml). A user's file either
`extends` a built-in definition (replacing a list with `key = [...]`, or appending with
`key = { add = [...] }`) or defines a portal from scratch. Every problem names the file, the key and
its line, because the person reading it edits the file by hand (README, "Site files").
"""
from __future__ import annotations

import dataclasses
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pobatch.core.sites.definition import SiteDefinition

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

log = logging.getLogger(__name__)


class SiteFileError(ValueError):
    """A site file that cannot be used; the message names the file, key and line."""


@dataclass(frozen=True)
class _Key:
    field: str
    kind: str  # "selectors", "texts", "paths", "str", "path", "selector", "bool", "int", "float"
    low: float = 0
    high: float = 0


# section -> key -> what it sets. The empty section is the file's top level.
SCHEMA: dict[str, dict[str, _Key]] = {
    "": {"name": _Key("name", "str")},
    "urls": {
        "po_path": _Key("po_path", "path"),
        "requisition_path": _Key("requisition_path", "path"),
        "login_paths": _Key("login_paths", "paths"),
        "id_prefixes": _Key("id_prefixes", "texts"),
        "default_base_url": _Key("default_base_url", "str"),
        "sso_leaves_host": _Key("sso_leaves_host", "bool"),
    },
    "login": {"selectors": _Key("login_selectors", "selectors")},
    "identity": {
        "po_number_selectors": _Key("po_number_selectors", "selectors"),
        "po_markers": _Key("po_markers", "selectors"),
        "requisition_number_selectors": _Key("requisition_number_selectors", "selectors"),
        "requisition_markers": _Key("requisition_markers", "selectors"),
    },
    "supplier": {"selectors": _Key("supplier_selectors", "selectors")},
    "attachments": {
        "selectors": _Key("attachment_selectors", "selectors"),
        "area": _Key("attachment_area_selectors", "selectors"),
        "loading": _Key("loading_selectors", "selectors"),
        "loaded": _Key("loaded_selectors", "selectors"),
        "quiet_ms": _Key("quiet_ms", "int", 0, 60_000),
        "empty_quiet_ms": _Key("empty_quiet_ms", "int", 0, 120_000),
        "settle_timeout_s": _Key("settle_timeout_s", "float", 1, 600),
        "pointer_clicks": _Key("pointer_clicks", "bool"),
    },
    "requisition": {"link_selector": _Key("requisition_selector", "selector")},
    "errors": {
        "not_found_texts": _Key("not_found_texts", "texts"),
        "not_authorized_texts": _Key("not_authorized_texts", "texts"),
        "server_error_texts": _Key("server_error_texts", "texts"),
        "error_selectors": _Key("error_selectors", "selectors"),
    },
}
# Keys that once meant something and now change nothing: said once, then ignored, so an older site file
# still runs.
RETIRED = {
    ("errors", "overlay_selectors"): "no longer used (attachments are clicked inside the page, which no "
                                     "floating bar can cover); remove the line",
}
# What a definition written from scratch must say: without these no page can prove it is a PO page.
REQUIRED = ("name", "po_path", "po_number_selectors", "attachment_selectors", "attachment_area_selectors")
_DEFAULTS: dict[str, Any] = {
    "login_paths": (), "login_selectors": (), "po_markers": (), "supplier_selectors": (),
    "requisition_selector": "", "not_found_texts": (), "not_authorized_texts": (), "server_error_texts": (),
    "error_selectors": (),
}


def load_site_file(path: str | Path, builtins: Callable[[str], SiteDefinition] | None = None) -> SiteDefinition:
    """Read, check and build one site file. `builtins` resolves `extends = "<name>"`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SiteFileError(f"site file {path}: cannot be read ({exc.strerror or exc}); expected a TOML file") from None
    except UnicodeDecodeError:
        raise SiteFileError(f"site file {path}: is not UTF-8 text; expected a TOML file") from None
    return parse_site_text(text, str(path), builtins)


def parse_site_text(text: str, source: str, builtins: Callable[[str], SiteDefinition] | None = None) -> SiteDefinition:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SiteFileError(f"site file {source}: not valid TOML: {exc}") from None
    where = _Locator(text, source)
    base: dict[str, Any] = {}
    extends = data.pop("extends", None)
    if extends is not None:
        if not isinstance(extends, str) or builtins is None:
            raise SiteFileError(where.at("", "extends", "expected the name of a built-in site, e.g. \"coupa\""))
        try:
            base = dataclasses.asdict(builtins(extends))
        except SiteFileError:  # the site it extends is itself wrong: that file says why
            raise
        except Exception:
            raise SiteFileError(where.at("", "extends", f"'{extends}' is not a built-in site")) from None
    values = dict(base)
    for section, body in data.items():
        if section in SCHEMA and section != "" and isinstance(body, dict):
            for key, raw in body.items():
                _apply(values, section, key, raw, where)
        elif section in SCHEMA[""]:
            _apply(values, "", section, body, where)
        else:
            known = ", ".join(sorted([k for k in SCHEMA if k] + list(SCHEMA[""]) + ["extends"]))
            raise SiteFileError(where.at("", section, f"unknown key or section; expected one of {known}"))
    values["source"] = source
    if not base:
        missing = [f for f in REQUIRED if not values.get(f)]
        if missing:
            names = ", ".join(_key_name(f) for f in missing)
            raise SiteFileError(f"site file {source}: a site defined from scratch must set {names}")
        for f, default in _DEFAULTS.items():
            values.setdefault(f, default)
    if "{id}" not in values.get("po_path", ""):
        raise SiteFileError(where.at("urls", "po_path", "expected a path with {id}, e.g. \"/order_headers/{id}\""))
    return SiteDefinition(**values)


def _apply(values: dict[str, Any], section: str, key: str, raw: Any, where: "_Locator") -> None:
    if (section, key) in RETIRED:
        log.warning("%s", where.at(section, key, RETIRED[section, key]))
        return
    spec = SCHEMA[section].get(key)
    if spec is None:
        known = ", ".join(sorted(SCHEMA[section]))
        raise SiteFileError(where.at(section, key, f"unknown key; expected one of {known}"))
    kind = spec.kind
    if kind in ("selectors", "texts", "paths"):
        add = isinstance(raw, dict)
        if add:
            if set(raw) != {"add"}:
                raise SiteFileError(where.at(section, key, "expected a list, or { add = [...] } to extend it"))
            raw = raw["add"]
        if not isinstance(raw, list) or not all(isinstance(v, str) and v.strip() for v in raw):
            raise SiteFileError(where.at(section, key, "expected a list of non-empty strings"))
        items = tuple(v.strip() if kind != "texts" else v for v in raw)
        for item in items:
            problem = selector_problem(item) if kind == "selectors" else path_problem(item) if kind == "paths" else ""
            if problem:
                raise SiteFileError(where.at(section, key, f"{item!r}: {problem}", needle=item))
        values[spec.field] = tuple(values.get(spec.field) or ()) + items if add else items
    elif kind in ("str", "path", "selector"):
        if not isinstance(raw, str):
            raise SiteFileError(where.at(section, key, "expected a string"))
        problem = (selector_problem(raw) if kind == "selector" and raw else
                   path_problem(raw) if kind == "path" and raw else "")
        if problem:
            raise SiteFileError(where.at(section, key, f"{raw!r}: {problem}", needle=raw))
        values[spec.field] = raw.strip()
    elif kind == "bool":
        if not isinstance(raw, bool):
            raise SiteFileError(where.at(section, key, "expected true or false"))
        values[spec.field] = raw
    else:
        number_ok = isinstance(raw, int) if kind == "int" else isinstance(raw, (int, float))
        if isinstance(raw, bool) or not number_ok or not spec.low <= raw <= spec.high:
            what = "a whole number" if kind == "int" else "a number"
            raise SiteFileError(where.at(section, key, f"expected {what} from {spec.low:g} to {spec.high:g}"))
        values[spec.field] = int(raw) if kind == "int" else float(raw)


def _key_name(field: str) -> str:
    for section, keys in SCHEMA.items():
        for key, spec in keys.items():
            if spec.field == field:
                return f"{section}.{key}" if section else key
    return field


class _Locator:
    """Finds the line of a key (or of a value inside its list) for messages; tomllib gives none."""

    def __init__(self, text: str, source: str) -> None:
        self.lines = text.splitlines()
        self.source = source

    def line_of(self, section: str, key: str, needle: str = "") -> int:
        current = ""
        found = 0
        for no, line in enumerate(self.lines, 1):
            stripped = line.strip()
            header = re.match(r"^\[\s*([A-Za-z0-9_.-]+)\s*\]", stripped)
            if header:
                current = header.group(1)
                if not section and current == key:  # an unknown [section] itself
                    return no
                continue
            if current != section:
                continue
            if not found and re.match(rf"^{re.escape(key)}\s*=", stripped):
                found = no
                if not needle:
                    return no
            if found and needle and needle in line:
                return no
        return found

    def at(self, section: str, key: str, message: str, needle: str = "") -> str:
        line = self.line_of(section, key, needle)
        name = f"{section}.{key}" if section else key
        return f"site file {self.source}, line {line or '?'}: {name}: {message}"


_BRACKETS = {"(": ")", "[": "]"}


def selector_problem(selector: str) -> str:
    """A quick check of a CSS selector's shape, so most typos are reported before any browser starts.
    The browser still has the last word (pobatch.core.workflow.page_probes.BAD_SELECTORS_JS runs on the first page)."""
    s = selector.strip()
    if not s:
        return "an empty selector"
    if s[0] in ">+~," or s[-1] in ">+~,":
        return "starts or ends with a combinator or comma"
    stack: list[str] = []
    quote = ""
    escaped = False
    for ch in s:
        if escaped:
            escaped = False
            continue
        if ch == "\\":
            escaped = True
            continue
        if quote:
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch in _BRACKETS:
            stack.append(_BRACKETS[ch])
        elif ch in ")]":
            if not stack or stack.pop() != ch:
                return f"an unmatched '{ch}'"
    if quote:
        return f"an unclosed {quote} quote"
    if stack:
        return f"a missing '{stack[-1]}'"
    if ",," in s.replace(" ", ""):
        return "an empty part between commas"
    return ""


def path_problem(path: str) -> str:
    return "" if path.startswith("/") else "expected a path that starts with /"


def describe_selector(site: SiteDefinition, field: str, selector: str, problem: str) -> str:
    """A problem with one selector of a definition, named as its site file spells it (key and line)."""
    key = _key_name(field)
    section, _, name = key.rpartition(".")
    if site.source and Path(site.source).is_file():
        try:
            where = _Locator(Path(site.source).read_text(encoding="utf-8"), site.source)
            return where.at(section, name, f"{selector!r}: {problem}", needle=selector)
        except OSError:
            pass
    return f"site '{site.name}': {key}: {selector!r}: {problem}"
