"""Where pobatch keeps what a user sets once (the remembered portal address, their site file)."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def config_dir() -> Path:
    """%LOCALAPPDATA%\\pobatch on Windows, $XDG_CONFIG_HOME/pobatch (~/.config/pobatch) elsewhere;
    POBATCH_CONFIG_DIR overrides both (tests, portable installs)."""
    override = os.environ.get("POBATCH_CONFIG_DIR")
    if override:
        return Path(override)
    if sys.platform == "win32":
        root = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(root) / "pobatch"
    root = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(root) / "pobatch"
