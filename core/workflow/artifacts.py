"""Failure artifacts: what the browser showed when a PO attempt failed, kept for the report.

For every failed attempt: a screenshot, the page's HTML, the browser console log and a note of the
error, under `<out>/.pobatch/artifacts/<run_id>/<PO>-a<attempt>/`. Capturing runs after the failure,
when the browser may be dead, hung or half-closed: every step is tried on its own, a step that fails
is noted in `capture.json`, nothing is ever raised, and a watchdog kills a browser that would block
the capture (the attempt loop restarts it, as for any dead browser).

An attempt that runs past its time limit is captured before its browser is killed
(`capture_before_kill`): WebDriver is then stuck behind the command that hangs (ChromeDriver runs one
command at a time), so the page is read over the browser's own DevTools endpoint, within a short
deadline, and only then is the browser killed.
"""
from __future__ import annotations

import base64
import json
import logging
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from pobatch.core.workspace import CONSOLE_LOG, ERROR_TXT, MANIFEST, PAGE_HTML, SCREENSHOT
from pobatch.corelib.browser.devtools import debugger_address, loopback_endpoint
from pobatch.corelib.browser.session import BrowserSession
from pobatch.corelib.watchdog import Watchdog

log = logging.getLogger(__name__)

CAPTURE_TIMEOUT = 30.0  # seconds for the whole capture before the browser is killed
MAX_CONSOLE_ENTRIES = 2000
# ChromeDriver's BiDi mapper logs its own start into the page console: not the page's words.
_DRIVER_NOISE = ("Launching Mapper instance",)



def drain_console(driver) -> None:
    """Empty the browser's console buffer at the start of an attempt, so a failure's log is its own
    (and ChromeDriver does not hoard a long run's messages). Never raises."""
    try:
        driver.get_log("browser")
    except Exception as exc:
        log.debug("console log not available: %s", str(exc).splitlines()[0] if str(exc) else exc)


def capture_failure(session: BrowserSession, folder: Path, *, key: str, attempt: int, error: BaseException | str,
                    reason: str = "", worker_id: str = "", started: float | None = None,
                    timeout: float = CAPTURE_TIMEOUT, captured: dict[str, Any] | None = None) -> Path | None:
    """Write what is known about a failed attempt into `folder`; returns the folder, None if even
    that could not be written. `session`'s browser may be gone.
    `captured`: what capture_before_kill already took from the browser (it is not asked again)."""
    t0 = time.monotonic()
    manifest: dict[str, Any] = {"key": key, "attempt": attempt, "worker_id": worker_id, "reason": reason,
                                "captured_at": time.time(), "files": [], "failed": {}}
    if captured is not None:
        manifest.update({k: v for k, v in captured.items() if k not in ("files", "failed")})
        manifest["files"] = list(captured.get("files", []))
        manifest["failed"] = dict(captured.get("failed", {}))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_error(folder, key, attempt, worker_id, reason, error)
        manifest["files"].append(ERROR_TXT)
    except Exception as exc:  # a full disk, a read-only folder: the run goes on without artifacts
        log.warning("PO %s attempt %d: cannot write failure artifacts to %s: %s", key, attempt, folder, exc)
        return None
    if captured is not None:
        pass  # taken before the browser was killed
    elif session.started:
        watchdog = Watchdog(timeout, session.abort, f"failure capture of PO {key}")
        try:
            with watchdog:
                _capture_browser(session.driver, folder, manifest, started)
        except Exception as exc:  # belt and braces: _capture_browser already guards each step
            manifest["failed"]["browser"] = _short(exc)
        if watchdog.expired:
            manifest["failed"]["timeout"] = f"capture ran past {timeout:.0f}s; the browser was killed"
    else:
        manifest["failed"]["browser"] = "no browser was running"
    manifest["seconds"] = round(time.monotonic() - t0, 3)
    try:
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    except Exception as exc:
        log.debug("manifest not written: %s", exc)
    log.info("PO %s attempt %d: failure artifacts in %s (%s)", key, attempt, folder,
             ", ".join(manifest["files"]) or "none")
    return folder


LIVE_CAPTURE_TIMEOUT = 10.0  # seconds a timed-out attempt's capture may add before its browser is killed
CONSOLE_GRACE = 1.5  # of which the console, which a hung page may never hand over


def _html_of_mhtml(mhtml: str) -> str:
    """The page's own HTML out of the MHTML snapshot the browser makes (the first text/html part)."""
    import email
    from email import policy

    try:
        message = email.message_from_string(mhtml, policy=policy.default)
        for part in message.walk():
            if part.get_content_type() == "text/html":
                return str(part.get_content())
    except Exception as exc:  # a snapshot we cannot read is still worth keeping as it is
        log.debug("MHTML snapshot not parsed: %s", exc)
    return mhtml


def capture_before_kill(session: BrowserSession, folder: Path, *, started: float | None = None,
                        timeout: float = LIVE_CAPTURE_TIMEOUT) -> dict[str, Any]:
    """Screenshot, HTML and console of the page over the browser's DevTools endpoint, while WebDriver
    is blocked; at most `timeout` seconds, never raises. Returns the manifest part for capture_failure."""
    manifest: dict[str, Any] = {"files": [], "failed": {}, "before_kill": True}
    deadline = time.monotonic() + timeout
    ws = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        driver = session.driver if session.started else None
        if driver is None:
            manifest["failed"]["browser"] = "no browser was running"
            return manifest
        # Not a tab loading the next PO's page ahead (corelib/browser/background_tab.py): the page in front.
        target = _page_target(debugger_address(driver), timeout, exclude=getattr(driver, "hidden_tabs", frozenset()))
        manifest["url"], manifest["title"] = target.get("url", ""), target.get("title", "")
        import websocket  # websocket-client, a dependency of selenium

        ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=max(0.5, deadline - time.monotonic()),
                                         suppress_origin=True)
        cdp = _Cdp(ws, deadline)
        # The browser answers these itself; calls that need the page's own thread (Runtime, DOM, Log)
        # wait behind a navigation that hangs, so they come last and get only a moment.
        shot = cdp.call("Page.captureScreenshot", {"format": "png"})
        (folder / SCREENSHOT).write_bytes(base64.b64decode(shot["data"]))
        manifest["files"].append(SCREENSHOT)
        snapshot = cdp.call("Page.captureSnapshot", {"format": "mhtml"})
        (folder / PAGE_HTML).write_text(_html_of_mhtml(str(snapshot.get("data") or "")), encoding="utf-8")
        manifest["files"].append(PAGE_HTML)
        note = ""
        try:
            cdp.deadline = min(deadline, time.monotonic() + CONSOLE_GRACE)
            cdp.call("Runtime.enable")  # replays the console messages the page has kept
        except Exception as exc:
            note = f"(the page did not hand over its console while it hung: {_short(exc)})\n"
        text = _console_text(cdp.console, started) if cdp.console or not note else ""
        (folder / CONSOLE_LOG).write_text(text + note, encoding="utf-8")
        manifest["files"].append(CONSOLE_LOG)
    except Exception as exc:
        manifest["failed"]["before_kill"] = _short(exc)
    finally:
        if ws is not None:
            try:
                ws.close(timeout=1)
            except Exception:
                pass
    return manifest


def _page_target(address: str, timeout: float, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    import urllib.request

    host, port = loopback_endpoint(address)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    with opener.open(f"http://{host}:{port}/json/list", timeout=timeout) as resp:
        targets = json.loads(resp.read().decode("utf-8"))
    pages = [t for t in targets if t.get("type") == "page" and t.get("webSocketDebuggerUrl") and t.get("id") not in exclude]
    if not pages:
        raise RuntimeError("the browser shows no page")
    url = pages[0]["webSocketDebuggerUrl"]
    pages[0]["webSocketDebuggerUrl"] = url.replace("ws://localhost:", f"ws://{host}:")
    return pages[0]


class _Cdp:
    """Calls on one page target, answered in order; console events seen meanwhile are kept."""

    def __init__(self, ws, deadline: float) -> None:
        self.ws, self.deadline, self._id = ws, deadline, 0
        self.console: list[dict[str, Any]] = []

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params or {}}))
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{method}: no answer before the capture deadline")
            self.ws.settimeout(left)
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error'].get('message', msg['error'])}")
                return msg.get("result", {})
            self._note(msg)

    def _note(self, msg: dict[str, Any]) -> None:
        params = msg.get("params") or {}
        if msg.get("method") == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append({"level": str(params.get("type", "log")).upper(), "source": "console-api",
                                 "message": text, "timestamp": params.get("timestamp")})
        elif msg.get("method") == "Log.entryAdded":
            e = params.get("entry") or {}
            self.console.append({"level": str(e.get("level", "")).upper(), "source": e.get("source", ""),
                                 "message": e.get("text", ""), "timestamp": e.get("timestamp")})


# -- the steps ----------------------------------------------------------------------------------------
def _capture_browser(driver, folder: Path, manifest: dict[str, Any], started: float | None) -> None:
    _focus_a_window(driver, manifest)
    try:
        manifest["url"] = driver.current_url
        manifest["title"] = driver.title
    except Exception as exc:
        manifest["failed"]["url"] = _short(exc)
    try:
        manifest["windows"] = len(driver.window_handles)
    except Exception:
        pass
    _step(manifest, SCREENSHOT, lambda: (folder / SCREENSHOT).write_bytes(driver.get_screenshot_as_png()))
    _step(manifest, PAGE_HTML, lambda: (folder / PAGE_HTML).write_text(driver.page_source or "", encoding="utf-8"))
    _step(manifest, CONSOLE_LOG, lambda: (folder / CONSOLE_LOG).write_text(
        _console_text(driver.get_log("browser"), started), encoding="utf-8"))


def _focus_a_window(driver, manifest: dict[str, Any]) -> None:
    """A failure inside a popup can leave the driver on a closed window: go back to a live one."""
    try:
        driver.current_window_handle
    except Exception:
        try:
            handles = driver.window_handles
            if handles:
                driver.switch_to.window(handles[0])
        except Exception as exc:
            manifest["failed"]["window"] = _short(exc)


def _step(manifest: dict[str, Any], name: str, action: Callable[[], Any]) -> None:
    try:
        action()
        manifest["files"].append(name)
    except Exception as exc:
        manifest["failed"][name] = _short(exc)


def _console_text(entries: list[dict[str, Any]], started: float | None) -> str:
    """One line per console entry of this attempt: time, level, source, message."""
    since_ms = (started - 1.0) * 1000 if started else 0
    lines = []
    for e in entries[-MAX_CONSOLE_ENTRIES:]:
        msg = str(e.get("message", ""))
        if any(noise in msg for noise in _DRIVER_NOISE):
            continue
        ts = e.get("timestamp") or 0
        if ts and ts < since_ms:
            continue
        when = datetime.fromtimestamp(ts / 1000).isoformat(timespec="milliseconds") if ts else "?"
        lines.append(f"{when} {e.get('level', '?'):7} {e.get('source', '')}: {msg}")
    return "\n".join(lines) + ("\n" if lines else "(the console was empty)\n")


def _write_error(folder: Path, key: str, attempt: int, worker_id: str, reason: str,
                 error: BaseException | str) -> None:
    if isinstance(error, BaseException):
        message = f"{type(error).__name__}: {error}"
        trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    else:
        message, trace = str(error), ""
    text = (f"PO:       {key}\nattempt:  {attempt}\nworker:   {worker_id}\nreason:   {reason}\n"
            f"time:     {datetime.now().isoformat(timespec='seconds')}\n\n{message}\n")
    if trace:
        text += f"\n{trace}"
    (folder / ERROR_TXT).write_text(text, encoding="utf-8")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"
