"""The download sink of one window: corelib's EventDownloadSink on the shared browser's download
tracker, narrowed to the downloads the router says this window's current instance started.

One implementation for every local mode: a window's PoJob clicks, matches and awaits its files
exactly as a browser of its own would (pobatch.corelib.browser.download_sink.DownloadBatch). What sharing adds is the
owner filter: a download of another window, or of a replaced instance of this one, is never seen.
The shared spool folder is never emptied by one window (the others' files are in it).
"""
from __future__ import annotations

from pobatch.corelib.browser.download_events import BrowserDownload, DownloadTracker
from pobatch.corelib.browser.download_sink import EventDownloadSink
from pobatch.core.modes.single_session.shared_browser import BrowserGone
from pobatch.core.modes.single_session.window_session import WindowSession


def window_download_sink(session: WindowSession) -> EventDownloadSink:
    browser = session.browser

    def tracker() -> DownloadTracker:
        t = browser.tracker
        if t is None:
            raise BrowserGone("the shared browser is not running")
        return t

    def owns(d: BrowserDownload) -> bool:
        router, handle = browser.router, session.handle
        return router is not None and bool(handle) and router.owns(handle)(d)

    return EventDownloadSink(session, browser.spool, owns=owns, tracker_of=tracker)
