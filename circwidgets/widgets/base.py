"""The widget base: selection traits, per-head cache, binary payloads, errors that never raise into
the kernel, quiet trait updates, and a static fallback (PNG + text) in the mimebundle.

Subclasses set `_front_end` (a view name: its bundle `circwidgets/static/<name>.js` + `.css`, built
by esbuild from `js/src/<name>.js`; see js/README.md) and implement `_payload(layer, head)` (ask the
engine, return trait values for that head), `summary()` (text) and `figure()` (the matplotlib twin).
`_esm` / `_css` are the bundle files as `pathlib.Path`s: anywidget reads them, and with
`ANYWIDGET_HMR=1` (and `npm run dev` rebuilding them) reloads a view when its bundle changes.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import sys
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import anywidget
import ipywidgets
import traitlets

from ..engine import check_finite, check_layer_head
from ..model import Transformer

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"  # the built front ends (committed)


class CircuitWidgetWarning(UserWarning):
    """A request the widget could not answer (shown in the widget too; the kernel keeps running)."""


_LIB_DIRS = tuple(str(Path(m.__file__).resolve().parent) for m in (traitlets, anywidget, ipywidgets)) + (
    str(Path(__file__).resolve().parent.parent), str(Path(contextlib.__file__).resolve()))


def _user_stacklevel() -> int:
    """Stack level of the first caller outside circwidgets / traitlets / (any|ipy)widgets / contextlib, so a
    warning points at the user's line (`w.head = 99`); 2 when there is none (a click in the page)."""
    frame, level = sys._getframe(1), 1
    while frame is not None:
        if not frame.f_code.co_filename.startswith(_LIB_DIRS):
            return level
        frame, level = frame.f_back, level + 1
    return 2


def front_end_files(view: str) -> tuple[Path, Path]:
    """The built bundle of a view: (`static/<view>.js`, `static/<view>.css`)."""
    js, css = STATIC_DIR / f"{view}.js", STATIC_DIR / f"{view}.css"
    if not js.exists():
        raise FileNotFoundError(f"{js} is missing: build the front ends with `npm ci && npm run build` in js/")
    return js, css


def reacts_to(*names: str) -> Callable:
    """`traitlets.observe(*names)` for requests (a click in the page, an assignment from Python):
    the handler is skipped while the widget itself sets one of those traits (`set_quietly`)."""

    def deco(fn: Callable) -> Any:
        @functools.wraps(fn)
        def handler(self, change) -> None:
            if change["name"] in self._quiet_names:
                return
            fn(self, change)

        return traitlets.observe(*names)(handler)

    return deco


class StaticFallback:
    """Mixin for widgets: adds `text/plain` (from `summary()`) and, when `static_png`, `image/png`
    (from `png()`, i.e. the matplotlib twin `figure()`) beside the widget view in the mimebundle, so
    static viewers show something; `repr()` is the text summary too (a plain REPL)."""

    static_png: ClassVar[bool] = False

    def summary(self) -> str:
        return type(self).__name__

    def png(self, dpi: int = 80) -> bytes:
        """PNG bytes of the matplotlib twin (`figure()`)."""
        fig = self.figure()  # a pyplot-free Figure: no global state, no backend switch
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        return buf.getvalue()

    def __repr__(self) -> str:
        # a plain REPL (no widget manager) prints the text summary, not `<... object at 0x...>`
        try:
            return self.summary()
        except Exception:  # noqa: BLE001 - repr must never raise
            return object.__repr__(self)

    def _repr_mimebundle_(self, **kwargs):
        out = super()._repr_mimebundle_(**kwargs)
        if out is None:
            return None
        data, meta = out if isinstance(out, tuple) else (out, {})
        data = dict(data)
        try:
            data["text/plain"] = self.summary()
        except Exception:  # noqa: BLE001 - the fallback must never break display
            pass
        if self.static_png:
            try:
                data["image/png"] = base64.b64encode(self.png()).decode("ascii")
            except Exception:  # noqa: BLE001
                pass
        return data, meta


class CircuitWidget(StaticFallback, anywidget.AnyWidget):
    """Base of every circwidgets view: a selected (layer, head) and that head's data only.

    Synced traits: `layer`, `head` (the selection; the front end sets them on click / arrow keys),
    `n_layers`, `n_heads`, `error` (a message shown in the widget; "" when all is well),
    `shown` ({"layer", "head", ...}: what the data traits currently hold).
    A bad request (out-of-range head, engine error) sets `error`, emits a `CircuitWidgetWarning`,
    restores the last good selection, and never raises into the kernel's comm handler.

    Trait updates: `set_quietly(**values)` sets traits without running this widget's own `reacts_to`
    handlers for them; `apply_or_revert(change, apply)` runs a request and, if it fails, reports
    why and puts the trait back. Offline export (`save_html`): `export_inputs` are the traits the
    page sets (in the order they are restored), `export_actions()` the requests a user can make.
    """

    _front_end: ClassVar[str] = ""
    export_inputs: ClassVar[tuple[str, ...]] = ("layer", "head")
    cache_size: ClassVar[int] = 32
    prefetch_max: ClassVar[int] = 8  # heads answered per page "prefetch" request
    static_png: ClassVar[bool] = True  # add image/png from the matplotlib twin to the mimebundle

    layer = traitlets.Int(0).tag(sync=True)
    head = traitlets.Int(0).tag(sync=True)
    n_layers = traitlets.Int(1).tag(sync=True)
    n_heads = traitlets.Int(1).tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    shown = traitlets.Dict({}).tag(sync=True)

    def __init_subclass__(cls, **kwargs):
        if cls.__dict__.get("_front_end"):  # before anywidget's hook, which turns the paths into FileContents
            cls._esm, cls._css = front_end_files(cls._front_end)
        super().__init_subclass__(**kwargs)

    def __init__(self, model: Transformer, layer: int = 0, head: int = 0, **kwargs):
        self.model = model
        self._results: OrderedDict = OrderedDict()
        self._good = (0, 0)
        self._quiet_names: set[str] = set()
        self._version = 0
        self._broken = True  # no data sent until the setup below is done
        cfg = model.cfg
        super().__init__(n_layers=cfg.n_layers, n_heads=cfg.n_heads, title=cfg.name or "", **kwargs)
        if cfg.n_layers == 0 or cfg.n_heads == 0:
            self._report(f"{cfg.name or 'this model'} has no attention heads (n_layers={cfg.n_layers}): "
                         "nothing to show here (a zero-layer model is its bigram table W_E W_U)")
            return
        try:
            check_finite(model)
        except ValueError as e:
            self._report(f"{e}: nothing to show")
            return
        try:
            self._setup()
        except Exception as e:  # noqa: BLE001 - show the reason in the widget instead of no widget
            self._report(f"could not prepare {type(self).__name__}: {type(e).__name__}: {e}")
            return
        self._broken = False
        self.on_msg(self._on_page_message)
        try:
            layer, head = check_layer_head(model, layer, head)
        except IndexError as e:
            self._report(str(e))
            layer, head = 0, 0
        self.set_quietly(layer=layer, head=head)
        self._refresh(keep_error=True)

    # ------------------------------------------------------------------ for subclasses
    def _setup(self) -> None:
        """Compute what does not depend on the selection (called once, before the first head)."""

    def _variant(self) -> tuple:
        """Extra state the per-head data depends on (e.g. a value-weighted toggle)."""
        return ()

    def _payload(self, layer: int, head: int) -> dict[str, Any]:
        """Trait values (engine numbers, encoded) for one head. May raise; the base reports it."""
        return {}

    def summary(self) -> str:
        """Plain-text summary of the current view (the text/plain fallback)."""
        return f"{type(self).__name__}: layer {self.layer}, head {self.head}"

    def figure(self):
        """The matplotlib twin of the current view (a `matplotlib.figure.Figure`)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ machinery
    def _report(self, msg: str) -> None:
        self.error = msg
        warnings.warn(msg, CircuitWidgetWarning, stacklevel=_user_stacklevel())

    @contextlib.contextmanager
    def quiet(self, *names: str) -> Iterator[None]:
        """Inside: assignments to `names` run none of this widget's `reacts_to` handlers, and the
        changes go to the page in one message."""
        added = set(names) - self._quiet_names
        self._quiet_names |= added
        try:
            with self.hold_sync():
                yield
        finally:
            self._quiet_names -= added

    def set_quietly(self, **values: Any) -> None:
        """Set traits (in the given order) as the widget's own update, not as a request."""
        with self.quiet(*values):
            for k, v in values.items():
                setattr(self, k, v)

    def apply_or_revert(self, change: dict, apply: Callable[[], Any], what: str = "not applied") -> bool:
        """Run `apply()` for a requested trait change; on any error report "`what`: error" (message in
        the widget + `CircuitWidgetWarning`) and quietly restore the old value. True when applied."""
        try:
            apply()
        except Exception as e:  # noqa: BLE001 - a bad request is a message, never a dead comm
            self._report(f"{what}: {e}")
            self.set_quietly(**{change["name"]: change["old"]})
            return False
        return True

    def export_actions(self) -> list[dict[str, Any]]:
        """Requests a user can make in the page, as trait values (the offline export replays them)."""
        return [{"layer": layer, "head": head} for layer in range(self.n_layers) for head in range(self.n_heads)]

    def cached(self, key: tuple, compute):
        """Per-widget LRU cache (`cache_size` entries) for per-head results."""
        if key in self._results:
            self._results.move_to_end(key)
            return self._results[key]
        val = compute()
        self._results[key] = val
        while len(self._results) > self.cache_size:
            self._results.popitem(last=False)
        return val

    @reacts_to("layer", "head")
    def _on_selection(self, change) -> None:
        self._refresh()

    def _refresh(self, keep_error: bool = False) -> None:
        """Send the selected head's data (from cache or the engine); on failure report and revert."""
        if self._broken:
            return
        try:
            layer, head = check_layer_head(self.model, self.layer, self.head)
        except IndexError as e:
            self._report(str(e))
            self._revert()
            return
        want = {"layer": layer, "head": head, "variant": list(self._variant()), "version": self._version}
        if self.shown == want and (layer, head) == (self.layer, self.head):
            return
        try:
            payload = self.cached((layer, head, *self._variant()), lambda: self._payload(layer, head))
        except Exception as e:  # noqa: BLE001 - any engine failure becomes a message, not a dead comm
            self._report(f"could not compute layer {layer} head {head}: {type(e).__name__}: {e}")
            self._revert()
            return
        self._good = (layer, head)
        with self.hold_sync():
            if (layer, head) != (self.layer, self.head):  # negative indices normalised
                self.set_quietly(layer=layer, head=head)
            for k, v in payload.items():
                setattr(self, k, v)
            self.shown = want
            if not keep_error:
                self.error = ""

    def _on_page_message(self, _widget, content, _buffers) -> None:
        """Custom messages from the page. `{"type": "prefetch", "heads": [[layer, head], ...]}`: the page
        keeps a bounded cache of per-head payloads and asks for the selected head's neighbours in the
        background, so a later click on one of them redraws at once (the selection is still sent as
        traits). Each head is answered by one `{"type": "payload", "shown", "values", "buffer_paths"}`
        message with the payload's bytes as binary buffers; `shown` is what the `shown` trait would
        be for that head, the page's cache key. Heads out of range or failing are skipped silently."""
        if self._broken or not isinstance(content, dict) or content.get("type") != "prefetch":
            return
        from ipywidgets.widgets.widget import _remove_buffers

        heads = content.get("heads")
        if not isinstance(heads, list):
            return
        variant = self._variant()
        for item in heads[: self.prefetch_max]:
            try:
                layer, head = check_layer_head(self.model, int(item[0]), int(item[1]))
                values = self.cached((layer, head, *variant), lambda layer=layer, head=head: self._payload(layer, head))
            except Exception:  # noqa: BLE001 - a prefetch is a hint: never a message, never an error
                continue
            state, paths, buffers = _remove_buffers(dict(values))
            shown = {"layer": layer, "head": head, "variant": list(variant), "version": self._version}
            self.send({"type": "payload", "shown": shown, "values": state, "buffer_paths": paths}, buffers)

    def invalidate(self) -> None:
        """Forget cached per-head results (the input changed) and resend the selected head."""
        self._results.clear()
        self._version += 1
        self._refresh()

    def _revert(self) -> None:
        layer, head = self._good
        self.set_quietly(layer=layer, head=head)

    def select(self, layer: int, head: int) -> None:
        """Select a head from Python (same path as a click in the front end)."""
        with self.hold_trait_notifications():
            self.layer, self.head = layer, head

    def save_html(self, path, **kwargs):
        """Write this view as one self-contained offline HTML file that still answers clicks
        (`circwidgets.widgets.export.save_html`)."""
        from .export import save_html

        return save_html(self, path, **kwargs)

