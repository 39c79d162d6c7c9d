"""The flight recorder: rrweb in every window of the browser, one recording per PO attempt.

Why this shape (docs/design.md, "rrweb recording: preload scripts, not DevTools"): a DevTools `Page.addScriptToEvaluateOnNewDocument` script
misses `target=_blank` popups, a WebDriver BiDi preload script reaches them; so `--record` starts
the browser with BiDi and installs rrweb as a preload script on every new driver. Each document has
its own rrweb buffer that dies with the document, so the workflow drains it before it navigates and
before it closes a popup; a page that navigates by itself (a link, a redirect) hands its buffer to
the next page of the same origin through sessionStorage. A popup is given up to POPUP_GRACE seconds
to start recording before it is closed (under load the preload runs only after the page loaded).

A recording travels to the MainApp as an Event (action `recording`, the events as JSON in
`detail`) because only the MainApp writes the run store; `store_recording` puts it there.
Nothing here ever raises into the PO workflow: a recorder that fails says so in the log and the
PO goes on unrecorded.
"""
from __future__ import annotations

import json
import logging
import time
from functools import lru_cache
from typing import Any, Callable

from pobatch.core.events import PoEvent
from pobatch.core.workspace import RECORD_JS
from pobatch.corelib.worker_pool.tasks import Event

log = logging.getLogger(__name__)

RECORDING_FORMAT = "pobatch-rrweb-1"

MAX_PAGE_EVENTS = 20_000  # per document, in the page: past it only snapshots are kept
MAX_ATTEMPT_BYTES = 40 * 1024 * 1024  # per attempt, in Python: past it the rest is dropped
STASH_MAX_AGE_MS = 120_000  # a buffer handed over through sessionStorage older than this is stale

# The global the preload script defines in every recorded document (not enumerable, one per document).
PAGE_KEY = "__pobatchRec"

_PRELOAD_TEMPLATE = r"""function () {
  "use strict";
  var KEY = "%(key)s";
  try {
    // Frames are recorded from their top page; rrweb's own helper iframe must not start a recorder.
    if (window.top !== window) return;
    // A new window starts on about:blank and keeps its Window object when it navigates to the
    // same origin: guard per document, not per window, and leave the blank document alone.
    if (location.protocol === "about:" || location.protocol === "chrome:") return;
    var prev = window[KEY];
    if (prev && prev.doc === document) return;
  } catch (e) { return; }
  var holder = {};
  (function () {
%(lib)s
  }).call(holder);
  var lib = holder.rrwebRecord;
  var record = lib && (lib.record || lib);
  if (typeof record !== "function") return;
  var buf = [], dropped = 0;
  try {
    var stash = sessionStorage.getItem(KEY);
    if (stash) {
      sessionStorage.removeItem(KEY);
      var old = JSON.parse(stash);
      if (old && Date.now() - old.at < %(max_age)d && Array.isArray(old.events)) {
        buf = old.events; dropped = old.dropped || 0;
      }
    }
  } catch (e) {}
  var api = {
    doc: document,
    startedIn: document.readyState,  // diagnostics: when the preload ran
    size: function () { return buf.length; },
    drain: function () {
      var out = JSON.stringify({events: buf, dropped: dropped, url: String(location.href)});
      buf = []; dropped = 0;
      return out;
    }
  };
  Object.defineProperty(window, KEY, {value: api, configurable: true, enumerable: false, writable: true});
  var started = false, timer = null;
  function start() {
    if (started || document.readyState === "loading") return;
    started = true;
    if (timer) clearInterval(timer);
    try {
      record({
        emit: function (e) {
          if (buf.length < %(max_events)d || e.type === 2 || e.type === 4) buf.push(e); else dropped++;
        },
        maskAllInputs: true,
        slimDOMOptions: "all"
      });
    } catch (e) { api.error = String(e && e.stack || e); }
  }
  // rrweb waits for DOMContentLoaded itself, but a page whose script sends it elsewhere while it is
  // parsed (a popup that starts a download) reaches readyState "complete" without that event.
  if (document.readyState !== "loading") start();
  else {
    document.addEventListener("readystatechange", start);
    document.addEventListener("DOMContentLoaded", start);
    timer = setInterval(start, 100);
  }
  window.addEventListener("pagehide", function () {
    try {
      if (buf.length) sessionStorage.setItem(KEY, JSON.stringify({at: Date.now(), events: buf, dropped: dropped}));
    } catch (e) {}
    buf = []; dropped = 0;
  }, true);
}"""

_DRAIN_JS = (f"var r = window.{PAGE_KEY}; "
             "return (r && r.doc === document) ? r.drain() : null;")
# A popup may be closed before its recorder started (its preload runs once the driver has attached to
# the new window, under load after the page loaded): "" asks for a short wait; a blank window never records.
_POPUP_DRAIN_JS = (f"var r = window.{PAGE_KEY}; "
                   "if (location.protocol === 'about:') return null; "
                   "if (!(r && r.doc === document) || !r.size()) return ''; "
                   "return r.drain();")
POPUP_GRACE = 2.0  # seconds a popup may take to start recording before it is closed anyway


@lru_cache(maxsize=1)
def preload_script() -> str:
    """rrweb's record bundle wrapped as a BiDi preload function that starts one recorder per document.

    The UMD bundle registers itself on `this`; calling it on a private object keeps the page's
    globals clean (and works where `this` is undefined, as in a preload function)."""
    lib = RECORD_JS.read_text(encoding="utf-8")
    return _PRELOAD_TEMPLATE % {"key": PAGE_KEY, "lib": lib, "max_age": STASH_MAX_AGE_MS,
                                "max_events": MAX_PAGE_EVENTS}


class SessionRecorder:
    """Records one worker's browser, attempt by attempt; hands each attempt's events to `emit`."""

    def __init__(self, emit: Callable[[Event], None], worker_id: str = "main") -> None:
        self._emit = emit
        self.worker_id = worker_id
        self._installed_on: str | None = None  # WebDriver session id the preload script is on
        self._unavailable = False
        self._key = ""
        self._attempt = 0
        self._windows: list[dict[str, Any]] = []
        self._popups = 0
        self._bytes = 0
        self._dropped = 0

    # -- the attempt ------------------------------------------------------------------------------
    def begin(self, key: str, attempt: int) -> None:
        self._key, self._attempt = key, attempt
        self._windows = [{"window": "main", "events": []}]
        self._popups = 0
        self._bytes = 0
        self._dropped = 0

    def before_navigation(self, driver) -> None:
        """Call right before driver.get(): keeps what the page recorded, and makes sure the browser
        (perhaps restarted since the last call) records the page that comes next."""
        self.collect(driver)
        self.install(driver)

    def collect(self, driver, popup: bool = False) -> int:
        """Drain the current window's recorder into this attempt; returns the number of events taken."""
        if driver is None or self._unavailable or not self._key:
            return 0
        deadline = time.monotonic() + POPUP_GRACE
        while True:
            try:
                raw = driver.execute_script(_POPUP_DRAIN_JS if popup else _DRAIN_JS)
            except Exception as exc:  # no page, a dead browser, a closed window: nothing to take
                log.debug("recorder: nothing collected (%s)", str(exc).splitlines()[0] if str(exc) else exc)
                return 0
            if raw != "" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if not raw:
            return 0
        try:
            data = json.loads(raw)
        except ValueError:
            return 0
        events = [e for e in data.get("events") or [] if isinstance(e, dict) and "timestamp" in e]
        self._dropped += int(data.get("dropped") or 0)
        if self._bytes + len(raw) > MAX_ATTEMPT_BYTES:
            self._dropped += len(events)
            log.warning("recorder: PO %s attempt %d is past %d MB of events; the rest is not kept",
                        self._key, self._attempt, MAX_ATTEMPT_BYTES // (1024 * 1024))
            return 0
        self._bytes += len(raw)
        if popup:
            self._popups += 1
            self._windows.append({"window": f"popup-{self._popups}", "url": data.get("url", ""), "events": events})
        else:
            self._windows[0]["events"].extend(events)
        return len(events)

    def install(self, driver) -> None:
        """Add the preload script to this browser once (a restarted browser is a new session)."""
        if driver is None or self._unavailable:
            return
        session_id = getattr(driver, "session_id", None)
        if session_id and session_id == self._installed_on:
            return
        try:
            driver.script.add_preload_script(preload_script())
            self._installed_on = session_id
            release_bidi_connection(driver)
        except Exception as exc:
            # No BiDi (a browser started without it, an old driver): run on, unrecorded, and say so once.
            self._unavailable = True
            log.warning("--record: cannot install the recorder in this browser (%s); this worker records "
                        "nothing", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    def finish(self, driver=None) -> Event | None:
        """Take the last page's events and emit the attempt's recording (nothing if it recorded nothing)."""
        if not self._key:
            return None
        if driver is not None:
            self.collect(driver)
        windows = [w for w in self._windows if w["events"]]
        key, attempt = self._key, self._attempt
        self._key, self._windows = "", []
        if not windows:
            return None
        for w in windows:
            w["events"].sort(key=lambda e: e.get("timestamp", 0))
        stamps = [e["timestamp"] for w in windows for e in w["events"]]
        body = {"format": RECORDING_FORMAT, "windows": windows, "dropped": self._dropped}
        event = Event(action=PoEvent.RECORDING, task_key=key, worker_id=self.worker_id, attempt=attempt,
                      outcome=str(len(stamps)), detail=json.dumps(body, separators=(",", ":")),
                      ts=min(stamps) / 1000.0)
        try:
            self._emit(event)
        except Exception as exc:  # the recording is lost, the PO is not
            log.warning("recorder: PO %s attempt %d not delivered (%s)", key, attempt, exc)
        return event


def release_bidi_connection(driver) -> None:
    """Close the BiDi WebSocket once the preload script is in: the script stays with the browser.

    Why: Selenium 4.51 closes that socket in quit(), and its reader thread (websocket-client,
    blocked in epoll on a socket that close() has already released) then often sits out the full
    WebSocket timeout: quit took 10 s instead of 0.2 s in about half of the tries here. Shutting the
    socket down first wakes the reader at once. Private Selenium attributes: any surprise leaves the
    connection as it was (a slow quit, nothing worse)."""
    conn = getattr(driver, "_websocket_connection", None)
    if conn is None:
        return
    try:
        app = getattr(conn, "_ws", None)
        sock = getattr(app, "sock", None)
        if sock is not None:
            sock.abort()  # shutdown(SHUT_RDWR): wakes the reader thread, which then ends
        conn.close()
        driver._websocket_connection = None
    except Exception as exc:
        log.debug("BiDi connection left open: %s", exc)


def is_recording(event: Event) -> bool:
    return event.action == PoEvent.RECORDING


def store_recording(store, run_id: str, event: Event) -> None:
    """Put a recording event (from any worker) into the run store's recordings table."""
    body = json.loads(event.detail)
    stamps = [e["timestamp"] for w in body.get("windows", []) for e in w.get("events", [])]
    store.record_recording(run_id, event.task_key, event.attempt, body, len(stamps),
                           min(stamps) / 1000.0 if stamps else None, max(stamps) / 1000.0 if stamps else None,
                           worker_id=event.worker_id)

