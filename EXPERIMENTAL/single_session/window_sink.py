"""The download sink of one window (corelib.download_sink.DownloadSink): the workflow's three questions,
answered from the folder the download router fills for the window's current instance.

- clear(): before an attempt and after a failure. Besides emptying the folder, nothing this window
  still has in flight may reach it any more (the router cancels and disowns it), so a late file
  from an earlier click or PO is never taken for this one's.
- wait_for_new(): the usual completion and stall checks on that folder; a popup or download of this
  window that ended on the sign-in page is reported at once as a sign-in, not after the timeout.
- fetch(): the file moves out, and anything else of this window still in flight is disowned: one click,
  one file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from corelib.downloads import DownloadFolder
from corelib.errors import LoginRequiredError

if TYPE_CHECKING:
    from EXPERIMENTAL.single_session.window_session import WindowSession


class WindowDownloadSink:
    def __init__(self, session: "WindowSession") -> None:
        self.session = session

    @property
    def path(self) -> Path:
        return Path(self.session.spec.download_dir)

    def _folder(self) -> DownloadFolder:
        return DownloadFolder(self.path)

    def clear(self) -> None:
        router, handle = self.session.browser.router, self.session.handle
        if router is not None and handle:
            router.disown(handle, clear_folder=True)
        self._folder().clear()

    def wait_for_new(self, count: int = 1, timeout: float = 60.0, stall_timeout: float = 20.0,
                     on_poll: Callable[[], None] | None = None) -> list[str]:
        router, handle = self.session.browser.router, self.session.handle

        def poll() -> None:
            seen = router.take_login_seen(handle) if router is not None and handle else ""
            if seen:
                raise LoginRequiredError(f"The portal asked for a sign-in in a window this PO opened ({seen}).")
            if on_poll:
                on_poll()

        return self._folder().wait_for_new(set(), count, timeout=timeout, stall_timeout=stall_timeout, on_poll=poll)

    def fetch(self, name: str, target: Path) -> Path:
        os.replace(self.path / name, target)
        router, handle = self.session.browser.router, self.session.handle
        if router is not None and handle:
            router.disown(handle)
        return target
