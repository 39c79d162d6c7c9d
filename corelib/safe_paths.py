"""Windows-safe file and folder names, decided the same way on every platform.

The output is opened on Windows even when a run happens elsewhere, so Windows rules apply everywhere:
no <>:"/\\|?*, no control characters, no trailing dot or space, no reserved device names, and the whole
path under a length budget. A name from a portal must never leave the folder it is meant for.
"""
from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote, urlsplit

_ILLEGAL = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"COM{i}" for i in range(1, 10)} | {f"LPT{i}" for i in range(1, 10)}
MAX_PATH = 240
MAX_COMPONENT = 120
# Linux and macOS limit a name to 255 *bytes*: 120 characters of emoji or CJK are up to 480. Kept well
# under 255 so that unique_name's " (12)" still fits.
MAX_COMPONENT_BYTES = 200


# A document's extension followed only by the underscores a browser put in place of trailing spaces or dots.
_MANGLED_TAIL = re.compile(r"(\.(?:pdf|docx?|xlsx?|xlsm|pptx?|msg|eml|txt|csv|rtf|odt|ods|xml|zip|png|jpe?g|tiff?|gif))"
                           r"[_\s.]+$", re.IGNORECASE)


def safe_component(
    name: str, fallback: str = "unnamed", max_len: int = MAX_COMPONENT, basename: bool = False
) -> str:
    """One path component that Windows accepts and that cannot climb out of its parent.

    basename=True treats the name as a path and keeps its last part, as browsers do with a
    download's name ("../../x.pdf" -> "x.pdf"); otherwise separators become "_" ("A/B Ltd" -> "A_B Ltd").
    """
    name = unicodedata.normalize("NFC", str(name or ""))
    if basename:
        name = re.split(r"[\\/]", name)[-1]
        # Chromium turns a name's trailing spaces or dots into "_" ("summary .pdf " -> "summary .pdf_"),
        # which Windows would no longer open as a PDF; Windows itself drops them, and so do we.
        name = _MANGLED_TAIL.sub(r"\1", name)
    name = _ILLEGAL.sub("_", name)
    name = re.sub(r"\s+", " ", name).strip()
    name = name.rstrip(". ")
    name = name.lstrip(".") if set(name) <= {"."} else name
    if not name or name in (".", ".."):
        name = fallback
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    if stem.split(".")[0].upper().rstrip() in _RESERVED:
        stem = "_" + stem
    ext = ext[:16]
    name = f"{stem}.{ext}" if ext else stem
    return _shorten(name, max_len)


def _shorten(name: str, max_len: int, max_bytes: int = MAX_COMPONENT_BYTES) -> str:
    """Shorten the stem, keep the extension, so a long name stays recognisable and openable; at most
    max_len characters and max_bytes UTF-8 bytes (never cutting a character in two)."""
    if len(name) <= max_len and len(name.encode("utf-8")) <= max_bytes:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 16:
        stem, ext = name, ""
    tail = f".{ext}" if ext else ""
    keep = max(1, max_len - len(tail))
    room = max_bytes - len(tail.encode("utf-8"))
    cut = stem[:keep]
    while len(cut) > 1 and len(cut.encode("utf-8")) > room:
        cut = cut[:-1]
    return f"{cut.rstrip('. ') or cut}{tail}"


def fit_in_path(folder: Path, name: str, max_path: int = MAX_PATH) -> str:
    """Shorten `name` so that folder/name stays under the Windows path budget."""
    room = max_path - len(str(folder)) - 1
    if room < 8:
        raise ValueError(f"output folder path is too long for Windows ({len(str(folder))} characters): {folder}")
    return _shorten(name, min(room, MAX_COMPONENT))


def unique_name(folder: Path, name: str, taken: set[str]) -> str:
    """'name.pdf', then 'name (1).pdf', ... case-insensitively, as Windows compares names."""
    lowered = {t.lower() for t in taken}
    if folder.is_dir():
        lowered |= {p.name.lower() for p in folder.iterdir()}
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    cand, i = name, 0
    while cand.lower() in lowered:
        i += 1
        cand = f"{stem} ({i}).{ext}" if ext else f"{stem} ({i})"
    return cand


def contained(parent: Path, child: Path) -> bool:
    """True when child resolves inside parent: the last guard before writing a portal's name."""
    parent_r = Path(os.path.abspath(parent))
    child_r = Path(os.path.abspath(child))
    return parent_r == child_r.parent or parent_r in child_r.parents


_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,8}$")


def name_from_page(served: str, label: str, url: str) -> str:
    """The name a file should keep: the one the server gave, unless the browser only made it up
    from the URL (no Content-Disposition name), in which case the page's label for the attachment
    (its download attribute, title or text) wins when it carries a file extension.

    A browser names a file without Content-Disposition after the URL's last segment, adding an
    extension from the MIME type ("/files/9/attachment_file" -> "attachment_file.pdf"), or
    "download" when the URL has no usable segment.
    """
    label = (label or "").strip()
    if not label or not _EXTENSION.search(label) or label == served:
        return served
    segment = unquote(urlsplit(url or "").path.rstrip("/").rpartition("/")[2])
    served_stem = served.rpartition(".")[0] if "." in served else served
    seg_stem = segment.rpartition(".")[0] if "." in segment else segment
    made_up = served_stem.lower() in {"download", seg_stem.lower(), segment.lower()} if served_stem else True
    return label if made_up else served
