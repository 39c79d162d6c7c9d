"""Which browser profile a run starts from.

The profile carries the user's single sign-on session, so it is the one thing pobatch must get right
without ever seeing a password: a named folder, the browser's own profile ("browser"), or pobatch's
own persistent profile seeded from profiles_template/ on first use.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from pobatch.corelib.errors import FatalError
from pobatch.corelib.browser.profile_manager import profile_in_use_error

log = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "profiles_template"  # pobatch/profiles_template


def browser_user_data_dir(browser: str) -> Path:
    """Where Edge/Chrome/Chromium keep their own profiles for the current user."""
    if sys.platform == "win32":
        local = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
        return local / {"edge": r"Microsoft\Edge\User Data", "chrome": r"Google\Chrome\User Data",
                        "chromium": r"Chromium\User Data"}[browser]
    if sys.platform == "darwin":
        sup = Path.home() / "Library" / "Application Support"
        return sup / {"edge": "Microsoft Edge", "chrome": "Google/Chrome", "chromium": "Chromium"}[browser]
    cfg = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return cfg / {"edge": "microsoft-edge", "chrome": "google-chrome", "chromium": "chromium"}[browser]


def pobatch_data_dir() -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "pobatch"
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "pobatch"


def seed_profile(target: Path) -> Path:
    """Create a profile from profiles_template/ (download prompts, first-run pages and background
    networking switched off) unless one is already there."""
    if not (target / "Default" / "Preferences").exists():
        if not TEMPLATE_DIR.is_dir():
            raise FatalError(f"the base profile template is missing: {TEMPLATE_DIR}", reason="BAD_INSTALL")
        target.mkdir(parents=True, exist_ok=True)
        shutil.copytree(TEMPLATE_DIR, target, dirs_exist_ok=True)
        log.info("created a pobatch browser profile at %s", target)
    return target


def profile_location(profile: Path | str | None, browser: str) -> Path:
    """Where the base profile is, without creating anything: pobatch's own profile, the browser's
    own ("browser"), or a named folder."""
    if profile is None or str(profile) == "":
        return pobatch_data_dir() / "profile"
    if str(profile).lower() == "browser":
        return browser_user_data_dir(browser)
    return Path(profile).expanduser().resolve()


def resolve_base_profile(profile: Path | str | None, browser: str) -> Path:
    path = profile_location(profile, browser)
    if profile is None or str(profile) == "":
        return seed_profile(path)
    if str(profile).lower() == "browser":
        if not path.is_dir():
            raise FatalError(f"--profile browser: no {browser} profile found at {path}; expected the browser to "
                             "have been used on this PC at least once", reason="BAD_CONFIG")
        return path
    if path.exists() and not path.is_dir():
        raise FatalError(f"--profile: '{profile}' is a file; expected a browser profile folder", reason="BAD_CONFIG")
    if not path.exists():
        # A new named folder becomes a fresh pobatch profile: the user signs in there once.
        return seed_profile(path)
    return path


def refuse_profile_in_use(profile: Path) -> None:
    """Never start a browser on a profile a running browser holds (closing ours could not be told
    apart from closing the user's): one line asking the user to close it."""
    message = profile_in_use_error(profile) if profile.exists() else None
    if message:
        raise FatalError(f"--profile: {message}", reason="PROFILE_IN_USE")
