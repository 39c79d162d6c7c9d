"""Replay pages: one offline HTML file that plays a PO's recorded attempts with rrweb-player.

The player, its stylesheet and the events are inlined, so the page opens from disk with no network
(a Content-Security-Policy also stops the replayed portal page from fetching its images and styles
from the portal: a replay never contacts the portal). Every attempt and every window of an attempt
(the main window across its navigations, each popup on its own) can be picked on the page.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from pobatch.core.workspace import PLAYER_CSS, PLAYER_JS
from pobatch.core.workspace import Workspace
from pobatch.corelib.store import RunStore

log = logging.getLogger(__name__)

class NoRecording(LookupError):
    """The run holds no recording of this PO (it was not run with --record, or never reached a page)."""


def replay_path(out_dir: Path, run_id: str, key: str) -> Path:
    return Workspace(out_dir).replay(run_id, key)


def load_recordings(store: RunStore, run_id: str, key: str, attempt: int | None = None) -> list[dict[str, Any]]:
    """The recorded attempts of one PO in one run, oldest first, each with its windows and events."""
    out = []
    for meta in store.recordings(run_id, key):
        if attempt is not None and meta["attempt"] != attempt:
            continue
        body = store.recording_events(run_id, key, meta["attempt"], meta["worker_id"])
        windows = [w for w in (body or {}).get("windows", []) if w.get("events")]
        if windows:
            out.append({"attempt": meta["attempt"], "worker_id": meta["worker_id"], "count": meta["count"],
                        "windows": windows})
    return out


def write_replay(store: RunStore, run_id: str, key: str, out_dir: Path, path: Path | None = None,
                 attempt: int | None = None) -> Path:
    """Write the replay page of one PO; NoRecording when there is nothing to play."""
    recordings = load_recordings(store, run_id, key, attempt)
    if not recordings:
        known = sorted({r["key"] for r in store.recordings(run_id)})
        hint = (f"recorded POs in this run: {', '.join(known[:20])}" if known
                else "this run recorded nothing: run it again with --record")
        which = f" attempt {attempt}" if attempt is not None else ""
        raise NoRecording(f"no recording of PO {key}{which} in run {run_id} ({hint})")
    path = Path(path) if path else replay_path(out_dir, run_id, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_replay(run_id, key, recordings), encoding="utf-8")
    os.replace(tmp, path)
    log.info("replay page: %s", path)
    return path


def render_replay(run_id: str, key: str, recordings: list[dict[str, Any]]) -> str:
    from html import escape

    title = f"PO {key}, run {run_id}"
    data = {"run_id": run_id, "key": key, "recordings": recordings}
    return "\n".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; img-src data: blob:; font-src data:; media-src data: blob:\">",
        f"<title>pobatch replay: {escape(title)}</title>",
        f"<style>{_inline_safe(PLAYER_CSS.read_text(encoding='utf-8'), 'style')}</style>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Replay of {escape(title)}</h1>",
        "<p class=\"muted\">Inputs were masked while recording. Images and styles the portal served by URL are "
        "not fetched: the replay stays offline.</p>",
        "<div id=\"choices\"></div><div id=\"status\" class=\"muted\"></div><div id=\"player\"></div>",
        f"<script type=\"application/json\" id=\"pobatch-recordings\">{_json_for_html(data)}</script>",
        f"<script>{_inline_safe(PLAYER_JS.read_text(encoding='utf-8'), 'script')}</script>",
        f"<script>{_JS}</script></body></html>\n",
    ])


def _json_for_html(value: Any) -> str:
    """JSON that cannot close its <script> element or start a comment, whatever the portal wrote."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _inline_safe(code: str, tag: str) -> str:
    """A vendored file inside <script>/<style>: nothing in it may end the element early."""
    return re.sub(rf"</({tag})", r"<\\/\1", code, flags=re.IGNORECASE).replace("<!--", "<\\!--")


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:20px;color:#222}
h1{font-size:20px;margin:0 0 10px}.muted{color:#777}
#choices{display:flex;flex-wrap:wrap;gap:6px;margin-bottom:8px}
#choices button{font:inherit;border:1px solid #aaa;border-radius:5px;background:#f6f6f6;padding:4px 10px;cursor:pointer}
#choices button.active{background:#dfe8fb;border-color:#4a6fd1}
#player{margin-top:8px;display:flow-root}
"""

_JS = r"""
(function () {
  var data = JSON.parse(document.getElementById('pobatch-recordings').textContent);
  var lib = window.rrwebPlayer;
  var Player = lib && (lib.default || lib.Player || lib);
  var target = document.getElementById('player');
  var status = document.getElementById('status');
  var choices = document.getElementById('choices');
  var current = null;
  window.pobatchReplay = {ready: false, error: '', events: 0, attempt: 0, window: ''};

  function show(rec, win, button) {
    choices.querySelectorAll('button').forEach(function (b) { b.classList.toggle('active', b === button); });
    if (current && current.$destroy) { try { current.$destroy(); } catch (e) {} }
    target.innerHTML = '';
    var events = win.events;
    var info = window.pobatchReplay = {ready: false, error: '', events: events.length, attempt: rec.attempt,
                                       window: win.window, player: null};
    status.textContent = 'Attempt ' + rec.attempt + ', worker ' + (rec.worker_id || 'main') + ', window ' + win.window +
      (win.url ? ' (' + win.url + ')' : '') + ': ' + events.length + ' events';
    if (!Player) { info.error = 'rrweb-player did not load'; status.textContent = info.error; return; }
    if (events.length < 2) { info.error = 'too few events to replay'; status.textContent += ' - ' + info.error; return; }
    var width = Math.max(480, Math.min(window.innerWidth - 60, 1280));
    var height = Math.max(300, Math.min(Math.round(width * 0.62), window.innerHeight - 240));
    try {
      current = new Player({target: target, props: {events: events, width: width, height: height,
                                                     autoPlay: true, skipInactive: true, showController: true}});
      info.player = current;
      info.ready = true;
    } catch (e) {
      info.error = String(e && e.message || e);
      status.textContent += ' - cannot play: ' + info.error;
    }
  }

  var first = null;
  data.recordings.forEach(function (rec) {
    rec.windows.forEach(function (win) {
      var b = document.createElement('button');
      b.type = 'button';
      b.textContent = 'attempt ' + rec.attempt + (win.window === 'main' ? '' : ' / ' + win.window) +
                      ' (' + win.events.length + ')';
      b.addEventListener('click', function () { show(rec, win, b); });
      choices.appendChild(b);
      if (!first) first = [rec, win, b];
    });
  });
  if (first) show(first[0], first[1], first[2]);
})();
"""
