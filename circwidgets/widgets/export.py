"""Offline export: `save_html(widget, path)` writes ONE self-contained HTML file (no network, no kernel)
in which the view still answers clicks, over states computed at export time.

How: starting from the widget's current state, the exporter applies the actions a user can take in
the front end (select a head, click a composition cell, toggle a head off, ...: each view's
`export_actions`), in breadth-first order, recording every state the kernel reaches (all synced
traits) until `max_states` or `max_bytes`. Each state is keyed by the values of the traits the front
end sets (the view's `export_inputs`); every distinct trait value is stored once. The page holds the
view's front end (the same esbuild bundle a notebook loads, `circwidgets/static/<view>.js`, inlined
as a module script), its CSS, the data (JSON in a `<script type="application/json">`, every `<`
escaped), and a tiny model shim (`static/export_shim.js`: get / set / on / off / save_changes /
send): `save_changes` looks the new inputs up and applies that state's traits, firing
`change:<name>` as the kernel's messages would; a state that was not exported gets a message in the
view instead (and no "computing" note: nothing is being computed). The shim marks the model
`offline`, so controls only a kernel can answer (a text box to tokenize, token searches, more rows,
the monitor's stop button, the rotary offset and composed-QK controls: the page inputs a view does not
list in `export_inputs`) are disabled with the note "needs a live kernel" (`js/src/lib/offline.js`).
A Content-Security-Policy of `default-src 'none'` (inline scripts and styles only) makes any network
request impossible.
ipywidgets' own embedding is not used: it loads its scripts from public CDNs.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import json
import math
import re
import time
import warnings
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anywidget

from ..engine import quiet_progress
from .base import STATIC_DIR, CircuitWidget

MAX_STATES = 200
MAX_SECONDS = 60.0
MAX_BYTES = 30_000_000
_BASE_TRAITS = set(anywidget.AnyWidget.class_trait_names(sync=True))


# ---------------------------------------------------------------------------- actions per view
def actions_for(w) -> tuple[Callable, tuple[str, ...]]:
    """(actions(widget) -> [dict of trait values], input trait names) for a view: its own
    `export_actions` and `export_inputs` (every CircuitWidget declares them; the base offers head
    selection); any other widget (e.g. a TrainingMonitor) exports its current state only."""
    if isinstance(w, CircuitWidget):
        return type(w).export_actions, tuple(w.export_inputs)
    return (lambda w: []), ()


# ---------------------------------------------------------------------------- state capture
def _jsonable(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"__cw_b64__": base64.b64encode(bytes(v)).decode("ascii")}
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None  # not JSON; a non-finite scalar trait reads as missing
    return v


def _canon(v: Any) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def output_traits(w: CircuitWidget) -> list[str]:
    """Synced traits of the view itself (not ipywidgets' layout machinery, not the front-end code)."""
    return sorted(n for n in w.trait_names(sync=True) if n not in _BASE_TRAITS and not n.startswith("_"))


class _Recorder:
    def __init__(self, w: CircuitWidget, max_states: int, max_bytes: int, max_seconds: float = MAX_SECONDS):
        self.w = w
        self.actions, self.inputs = actions_for(w)
        self.outputs = output_traits(w)
        self.values: dict[str, Any] = {}
        self.states: dict[str, dict[str, str]] = {}
        self.max_states, self.max_bytes, self.n_bytes = max_states, max_bytes, 0
        self.truncated = False
        self.deadline = time.monotonic() + max_seconds

    def key(self) -> str:
        return _canon({k: _jsonable(self.w.get_state(k)[k]) for k in self.inputs})

    def snapshot(self) -> dict[str, str]:
        st = self.w.get_state(self.outputs)
        out = {}
        for name in self.outputs:
            v = _jsonable(st[name])
            s = _canon(v)
            hsh = hashlib.sha1(s.encode("utf-8")).hexdigest()[:16]
            if hsh not in self.values:
                self.values[hsh] = v
                self.n_bytes += len(s)
            out[name] = hsh
        return out

    def inputs_now(self) -> dict[str, Any]:
        return {k: json.loads(_canon(_jsonable(self.w.get_state(k)[k]))) for k in self.inputs}

    def restore(self, vals: dict[str, Any]) -> None:
        for k in self.inputs:
            if _canon(_jsonable(self.w.get_state(k)[k])) != _canon(vals[k]):
                setattr(self.w, k, vals[k])

    def apply(self, act: dict[str, Any]) -> None:
        for k in self.inputs:  # in restore order
            if k in act:
                setattr(self.w, k, act[k])

    def run(self) -> None:
        w = self.w
        start = self.inputs_now()
        self.start_key = self.key()
        self.states[self.start_key] = self.snapshot()
        queue = deque([start])
        err0 = getattr(w, "error", "")
        from ..engine import progress_bar

        # disabled inside save_html's quiet_progress(): a notebook kept a closed bar's output behind
        bar = progress_bar(total=self.max_states, desc=f"export {type(w).__name__}", unit="state", leave=False,
                   disable=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                while queue:
                    here = queue.popleft()
                    self.restore(here)
                    for act in self.actions(w):
                        if (len(self.states) >= self.max_states or self.n_bytes >= self.max_bytes
                                or time.monotonic() > self.deadline):
                            self.truncated = True
                            return
                        self.restore(here)
                        self.apply(act)
                        if getattr(w, "error", ""):  # a state the kernel refused is not a state of the view
                            w.error = ""
                            continue
                        k = self.key()
                        if k not in self.states:
                            self.states[k] = self.snapshot()
                            queue.append(self.inputs_now())
                            bar.update(1)
            finally:
                bar.close()
                self.restore(start)
                if hasattr(w, "error"):
                    w.error = err0

    def spec(self, module: str) -> dict[str, Any]:
        return {"module": module, "inputs": list(self.inputs), "outputs": self.outputs, "start": self.start_key,
                "states": self.states, "truncated": self.truncated}


# ---------------------------------------------------------------------------- the page
_SHIM_FILE = STATIC_DIR / "export_shim.js"  # the in-page model shim, built from js/src/export_shim.js

# how a bundle names its default export: esbuild ends an ES module with `export{x as default};`
_EXPORT_DEFAULT = re.compile(r"\bexport\s*\{\s*([A-Za-z_$][\w$]*)\s+as\s+default\s*\};?\s*\Z")


def _module_script(name: str, esm: str) -> str:
    """The view's bundle as an inline module script that registers its default export."""
    body, n = _EXPORT_DEFAULT.subn(lambda m: f"window.__cwModules[{json.dumps(name)}] = {m.group(1)};", esm)
    if n != 1:
        raise ValueError(f"{name}: expected one `export {{ x as default }}` in the front-end bundle, found {n}")
    body = re.sub(r"</(script)", r"<\\/\1", body, flags=re.I)
    return f'<script type="module">\n{body}\n</script>'


def _css_text(c: str) -> str:
    return c.replace("</", "<\\/")


def _json_script(data: Any) -> str:
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    text = text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return f'<script type="application/json" id="cw-data">{text}</script>'


def save_html(obj, path, title: str | None = None, max_states: int = MAX_STATES, max_bytes: int = MAX_BYTES,
              max_seconds: float = MAX_SECONDS) -> Path:
    """Write `obj` (a circwidgets view, or a CircuitExplorer) to `path` as one self-contained HTML
    file that works offline and without a kernel (module docstring). Returns the path.

    max_states / max_bytes / max_seconds bound the states recorded per view (breadth-first from the
    current one, so the states one click away from what is on screen come first)."""
    views: list[CircuitWidget]
    link = False
    if isinstance(obj, anywidget.AnyWidget):
        views = [obj]
    elif hasattr(obj, "panels"):
        views = list(obj.panels.values())
        link = True
    else:
        raise TypeError(f"save_html exports circwidgets views, got {type(obj).__name__}")
    recs = []
    # each panel's states on their own; no engine progress bar left behind in the notebook's output
    with obj.unlinked() if link else contextlib.nullcontext(), quiet_progress():
        for w in views:
            if hasattr(w, "complete"):  # the file holds everything: data a view deferred is computed now
                w.complete()
            r = _Recorder(w, max_states, max_bytes, max_seconds)
            r.run()
            recs.append(r)
    values: dict[str, Any] = {}
    modules: dict[str, str] = {}
    css: dict[str, str] = {}
    widgets = []
    for w, r in zip(views, recs):
        name = type(w).__name__
        modules.setdefault(name, str(w._esm))  # the bundle's text (anywidget's trait)
        css.setdefault(name, str(w._css or ""))
        values.update(r.values)
        widgets.append(r.spec(name))
    data = {"values": values, "widgets": widgets, "link": link}
    title = title or " + ".join(dict.fromkeys(type(w).__name__ for w in views))
    n_states = sum(len(r.states) for r in recs)
    note = (f"Exported from circwidgets: {n_states} states of {len(views)} view(s), computed when the file was "
            "written; no kernel and no network needed.")
    if any(r.truncated for r in recs):
        note += " Some states were left out (size limit): the view says so when one is asked for."
    csp = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
           "img-src data: blob:; font-src data:; connect-src 'none'")
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:12px;background:#fff;color:#222}"
        ".cw-export-note{font-size:12px;color:#666;margin-bottom:8px}.cw-export-view{margin-bottom:16px}</style>",
        *[f"<style>/* {html.escape(n)} */\n{_css_text(c)}\n</style>" for n, c in css.items()],
        "</head><body>",
        f'<div class="cw-export-note">{html.escape(note)}</div>',
        *[f'<div class="cw-export-view" id="cw-view-{i}"></div>' for i in range(len(views))],
        _json_script(data),
        f"<script>{_SHIM_FILE.read_text(encoding='utf-8')}</script>",
        "<script>window.__cwModules = {};</script>",
        *[_module_script(n, esm) for n, esm in modules.items()],
        '<script type="module">\nconst data = JSON.parse(document.getElementById("cw-data").textContent);\n'
        "window.__cwPage.boot(data, window.__cwModules);\n</script>",
        "</body></html>",
    ]
    path = Path(path)
    from ..model.io import atomic_write_bytes  # a reader never sees half a page

    atomic_write_bytes(path, "\n".join(parts).encode("utf-8"))
    return path
