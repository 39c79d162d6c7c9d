"""A second DevTools connection to the browser, beside ChromeDriver's, for what WebDriver cannot do.

Why a connection of our own: ChromeDriver runs one command at a time per session, and its
`execute_cdp_cmd` cannot deliver events. Every local mode needs the browser's own download events
(pobatch.corelib.browser.download_events: which frame started which download, when it finished or was cut off), and
the single-session strategy also needs window facts (who opened a popup, is a window still there)
without queueing behind another window's WebDriver command. Selenium's own CDP helper needs the
`trio` extra and its BiDi download events need a BiDi session (which changes how popups behave), so
the browser's own endpoint, which ChromeDriver reports as `debuggerAddress`, is used in every mode.

Plain JSON over a websocket (websocket-client, which Selenium itself depends on): one reader thread
matches answers to calls, and one dispatcher thread runs event handlers in arrival order, so a handler
may itself call the browser without deadlocking the reader.
"""
from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import urllib.request
from typing import Any, Callable

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], str | None], None]  # (params, session_id)


class DevToolsError(Exception):
    """The browser answered a call with an error, or the link is gone."""


def debugger_address(driver) -> str:
    """host:port of the browser's DevTools endpoint, as ChromeDriver/EdgeDriver report it."""
    for key, value in (driver.caps or {}).items():
        if key.endswith("Options") and isinstance(value, dict) and value.get("debuggerAddress"):
            return str(value["debuggerAddress"])
    raise DevToolsError("the driver did not report a debuggerAddress (not a Chromium-family browser?)")


def loopback_endpoint(address: str) -> tuple[str, str]:
    """(host, port) of a DevTools address, 'localhost' as 127.0.0.1: never ask a resolver."""
    host, _, port = address.rpartition(":")
    return ("127.0.0.1" if host in ("localhost", "") else host), port


def browser_websocket_url(address: str, timeout: float = 10.0) -> str:
    host, port = loopback_endpoint(address)
    with urllib.request.urlopen(f"http://{host}:{port}/json/version", timeout=timeout) as resp:
        info = json.loads(resp.read().decode("utf-8"))
    url = str(info["webSocketDebuggerUrl"])
    return url.replace("ws://localhost:", f"ws://{host}:")


class DevToolsLink:
    """Calls and events on the browser-level DevTools target (and on attached page sessions)."""

    def __init__(self, ws_url: str, call_timeout: float = 15.0) -> None:
        import websocket  # websocket-client: a dependency of selenium

        self.call_timeout = call_timeout
        self._ws = websocket.create_connection(ws_url, suppress_origin=True, timeout=call_timeout,
                                               enable_multithread=True)
        self._ws.settimeout(None)  # the reader blocks; close() wakes it
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()
        self._handlers: dict[str, list[Handler]] = {}
        self._events: queue.Queue[tuple[str, dict[str, Any], str | None] | threading.Event | None] = queue.Queue()
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, name="devtools-reader", daemon=True)
        self._dispatcher = threading.Thread(target=self._dispatch, name="devtools-events", daemon=True)
        self._reader.start()
        self._dispatcher.start()

    @classmethod
    def to_driver_browser(cls, driver, call_timeout: float = 15.0) -> "DevToolsLink":
        return cls(browser_websocket_url(debugger_address(driver)), call_timeout)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def on(self, method: str, handler: Handler) -> None:
        """Run handler(params, session_id) on the dispatcher thread for every `method` event."""
        with self._lock:
            self._handlers.setdefault(method, []).append(handler)

    def call(self, method: str, params: dict[str, Any] | None = None, session_id: str | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        if self._closed.is_set():
            raise DevToolsError(f"{method}: the DevTools link is closed")
        msg_id = next(self._ids)
        done, box = threading.Event(), []
        with self._lock:
            self._pending[msg_id] = (done, box)
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        try:
            self._ws.send(json.dumps(message))
            if not done.wait(self.call_timeout if timeout is None else timeout):
                raise DevToolsError(f"{method}: no answer within {timeout or self.call_timeout:.0f}s")
        except DevToolsError:
            raise
        except Exception as exc:  # the socket broke: the browser is gone
            raise DevToolsError(f"{method}: {type(exc).__name__}: {exc}") from exc
        finally:
            with self._lock:
                self._pending.pop(msg_id, None)
        answer = box[0] if box else {"error": {"message": "the DevTools link closed"}}
        if "error" in answer:
            err = answer["error"]
            raise DevToolsError(f"{method}: {err.get('message', err)}")
        return answer.get("result", {})

    def send(self, method: str, params: dict[str, Any] | None = None, session_id: str | None = None) -> None:
        """A call whose answer nobody waits for (one that answers late, as a navigation does once the
        page has answered); the reader drops the answer."""
        if self._closed.is_set():
            raise DevToolsError(f"{method}: the DevTools link is closed")
        message: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        try:
            self._ws.send(json.dumps(message))
        except Exception as exc:  # the socket broke: the browser is gone
            raise DevToolsError(f"{method}: {type(exc).__name__}: {exc}") from exc

    def fence(self, timeout: float | None = None) -> None:
        """Return once every event the browser sent before now has been handled.

        The browser answers calls and sends events over one ordered socket: after the answer to a
        call made now, every earlier event is in the queue; a marker behind them tells when the
        dispatcher has run their handlers."""
        if threading.current_thread() is self._dispatcher:
            return
        self.call("Browser.getVersion", timeout=timeout)
        marker = threading.Event()
        self._events.put(marker)
        if not marker.wait(self.call_timeout if timeout is None else timeout):
            raise DevToolsError("the DevTools event handlers did not catch up in time")

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self._ws.close(timeout=1)
        except Exception:
            pass
        self._events.put(None)
        for t in (self._reader, self._dispatcher):
            if t is not threading.current_thread():
                t.join(5.0)
        self._fail_pending()

    # -- threads ----------------------------------------------------------------------------------
    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                raw = self._ws.recv()
            except Exception as exc:
                if not self._closed.is_set():
                    log.debug("DevTools link lost: %s", exc)
                break
            if not raw:
                break
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if "id" in msg:
                with self._lock:
                    waiter = self._pending.get(msg["id"])
                if waiter:
                    waiter[1].append(msg)
                    waiter[0].set()
            elif "method" in msg:
                self._events.put((msg["method"], msg.get("params") or {}, msg.get("sessionId")))
        self._closed.set()
        self._events.put(None)
        self._fail_pending()

    def _fail_pending(self) -> None:
        with self._lock:
            waiters = list(self._pending.values())
        for done, _box in waiters:
            done.set()  # no answer in the box: call() reports the link as closed

    def _dispatch(self) -> None:
        while True:
            item = self._events.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            method, params, session_id = item
            with self._lock:
                handlers = list(self._handlers.get(method, ()))
            for handler in handlers:
                try:
                    handler(params, session_id)
                except Exception:
                    log.exception("DevTools event handler for %s failed", method)
