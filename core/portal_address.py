"""A portal's address, checked once: every command, the planner and the checks before a browser
read it from here (what it must look like, and whether it is on this machine).

A `str`, so it goes wherever an address went before (the run store, a BrowserSpec, a pickled
JobConfig); the CLI's `PortalURL` parameter type (core/option_types.py) makes one from `--base-url`.
"""
from __future__ import annotations

from urllib.parse import urlsplit

# Loopback names: a portal here (the demo) is asked directly and needs no name resolution at all.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
EXAMPLE = "https://yourcompany.coupahost.com"


class NotAPortalAddress(ValueError):
    """The text is no http(s) address; the message says what was expected (no option name: the
    caller knows which option or file it came from)."""


def is_local_address(url: str) -> bool:
    """Whether the address names this machine (loopback)."""
    return urlsplit(url).hostname in LOCAL_HOSTS


class PortalAddress(str):
    """An http(s) address without its trailing slash; `PortalAddress(text)` raises NotAPortalAddress."""

    def __new__(cls, text: str) -> PortalAddress:
        address = (text or "").strip().rstrip("/")
        if not address.lower().startswith(("http://", "https://")) or not urlsplit(address).hostname:
            raise NotAPortalAddress(f"'{text or ''}' is not a portal address; expected e.g. {EXAMPLE}")
        return super().__new__(cls, address)

    def __reduce__(self):  # pickled as the checked text: a worker process gets the same address
        return (PortalAddress, (str(self),))

    @property
    def is_local(self) -> bool:
        return is_local_address(self)
