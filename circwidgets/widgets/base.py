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
from ipywidgets.widgets.widget import _put_buffers

from ..engine import check_finite, check_head, check_layer, check_layer_head, check_offset
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


# ------------------------------------------------------------------------------------ page inputs
def _short(value: Any, n: int = 60) -> str:
    r = repr(value)
    return r if len(r) <= n else r[:n - 1] + "…"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


PageCheck = Callable[[Any, Any], "str | None"]  # (value from the page, the widget) -> why it is refused, or None


def _head_problem(w: Any, layer: int, head: int) -> str | None:
    """Why `[layer, head]` from the page is not a head of `w`'s model (0-based: the page never sends
    negative indices), or None."""
    if 0 <= layer < w.n_layers and 0 <= head < w.n_heads:
        return None
    return f"L{layer}H{head} is not a head of this model (layers 0..{w.n_layers - 1}, heads 0..{w.n_heads - 1})"


def int_list(n: int, heads: bool = False) -> PageCheck:
    """Page-value check: `[]` or a list of exactly `n` integers; `heads`: read as `n // 2` consecutive
    `[layer, head]` pairs, each a head of the widget's model (`_head_problem`)."""

    def check(v: Any, w: Any) -> str | None:
        if not (v == [] or (isinstance(v, list) and len(v) == n and all(_is_int(x) for x in v))):
            return f"must be [] or a list of {n} integers"
        if heads:
            return next(filter(None, (_head_problem(w, v[i], v[i + 1]) for i in range(0, len(v), 2))), None)
        return None

    return check


def head_rows(pairs: int = 1, kinds: tuple[str, ...] = (), max_len: int | None = None, heads: bool = True,
              unique: bool = True) -> PageCheck:
    """Page-value check: a list of rows, each `pairs` `[layer, head]` integer pairs in a row
    (`[l1, h1, l2, h2]` for 2), then one string among `kinds` when `kinds` is given
    (`[l1, h1, l2, h2, "k"]`). At most `max_len` rows; `heads`: every pair a head of the widget's
    model (`_head_problem`: no negative indices) and at most as many rows as distinct such rows exist
    ((n_layers * n_heads)^pairs per kind); `unique`: no row twice."""
    width = 2 * pairs + bool(kinds)
    if pairs == 1 and not kinds:
        what = "[layer, head] integer pairs"
    else:
        cols = [f"l{i}, h{i}" for i in range(1, pairs + 1)] + (["kind"] if kinds else [])
        what = f"[{', '.join(cols)}] rows" + (f" (kind one of {', '.join(map(repr, kinds))})" if kinds else "")

    def row_ok(x: Any) -> bool:
        return (isinstance(x, list) and len(x) == width and all(map(_is_int, x[:2 * pairs]))
                and (not kinds or (isinstance(x[-1], str) and x[-1] in kinds)))

    def check(v: Any, w: Any) -> str | None:
        caps = [max_len] + ([(w.n_layers * w.n_heads) ** pairs * max(1, len(kinds))] if heads else [])
        cap = min((c for c in caps if c is not None), default=None)
        if isinstance(v, list) and cap is not None and len(v) > cap:
            return f"must hold at most {cap} rows"
        if not isinstance(v, list) or not all(map(row_ok, v)):
            return f"must be a list of {what}"
        if heads:
            for x in v:
                for i in range(0, 2 * pairs, 2):
                    if why := _head_problem(w, x[i], x[i + 1]):
                        return why
        if unique and len({tuple(x) for x in v}) < len(v):
            return "must not hold the same row twice"
        return None

    return check


def int_pairs(max_len: int | None = None, heads: bool = False, unique: bool = False) -> PageCheck:
    """Page-value check: a list of `[layer, head]` integer pairs (at most `max_len`); `heads` / `unique`
    as in `head_rows`."""
    return head_rows(1, max_len=max_len, heads=heads, unique=unique)


def rotary_offset(model: Transformer, offset: Any, what: str) -> int:
    """The offset Δ = query − key position a view's rotary control may hold: one integer in 0..n_ctx − 1
    (the distances inside the model's context) on a rotary model (`engine.check_offset`); ValueError
    naming `what` and the range for anything else. The one check of the eigenvalue and composition views."""
    off = check_offset(model, offset, what)
    n = model.cfg.n_ctx
    if not isinstance(off, int) or off > n - 1:
        raise ValueError(f"{what}: offset={_short(offset)} is out of range 0..{n - 1} (query − key position "
                         f"inside the {n}-token context)")
    return off


# JSON types a value from the page must have, per trait class (bool is not an int here, an int is
# not a bool: the page sends true/false for toggles and numbers for indices)
_PAGE_TYPES: tuple[tuple[type, Callable[[Any], bool], str], ...] = (
    (traitlets.Bool, lambda v: isinstance(v, bool), "true or false"),
    (traitlets.Int, _is_int, "an integer"),
    (traitlets.Float, lambda v: (_is_int(v) or isinstance(v, float)) and abs(v) < float("inf") and v == v,
     "a finite number"),
    (traitlets.Unicode, lambda v: isinstance(v, str), "a string"),
    (traitlets.List, lambda v: isinstance(v, list), "a list"),
    (traitlets.Dict, lambda v: isinstance(v, dict), "an object"),
)


class PageInputs:
    """Mixin for anywidget widgets: the one gate every value from the page passes through.

    A comm `update` message is checked before traitlets sees it: each key must be one of the view's
    page inputs (`page_inputs`, plus `export_inputs` where the class has them), its value of the
    trait's JSON type (`_PAGE_TYPES`: `head: 1.5`, `"abc"`, `null` are refused) and, where the class
    lists one in `page_schema` (a `PageCheck` of the value and the widget: `int_list`, `head_rows`), of
    the right structure and range (`pair` four integers, `off` heads of the model). A refused value, and
    any failure while applying an accepted one, becomes the widget's `error` message (and a
    `CircuitWidgetWarning`); the page is sent the kernel's values back, so the selection reverts. No
    exception leaves the comm handler, so no traceback reaches the notebook. Traits of ipywidgets'
    own base classes (layout, tooltip, ...) are left to ipywidgets.
    """

    page_inputs: ClassVar[tuple[str, ...]] = ()
    page_schema: ClassVar[dict[str, PageCheck]] = {}

    def _report(self, msg: str) -> None:
        self.error = msg
        warnings.warn(msg, CircuitWidgetWarning, stacklevel=_user_stacklevel())

    def _settable_from_page(self) -> set[str]:
        return set(self.page_inputs) | set(getattr(self, "export_inputs", ()))

    def page_value_problem(self, name: str, value: Any) -> str | None:
        """Why the page may not set trait `name` to `value` (None: it may)."""
        if name not in self.keys:
            return "not a property of this view"
        if name not in self._settable_from_page():
            owner = next(c for c in type(self).__mro__ if name in c.__dict__)
            if isinstance(owner, type) and issubclass(owner, PageInputs):
                return "set by the kernel only"
            return None  # an ipywidgets base trait: ipywidgets' own handling
        trait = self.traits()[name]
        for cls, ok, what in _PAGE_TYPES:
            if isinstance(trait, cls):
                if not ok(value):
                    return f"must be {what}"
                break
        check = self.page_schema.get(name)
        if check is not None and (why := check(value, self)):
            return why
        try:
            trait.validate(self, value)
        except traitlets.TraitError as e:
            return str(e).split("\n")[0]
        return None

    def set_state(self, sync_data: dict) -> None:
        """Apply the page's values that pass `page_value_problem`; report the rest (never raises)."""
        refused: list[str] = []
        resend: list[str] = []
        accepted = {}
        for name, value in sync_data.items():
            why = self.page_value_problem(name, value)
            if why is None:
                accepted[name] = value
            else:
                refused.append(f"{name}={_short(value)} {why}")
                if name in self.keys:
                    resend.append(name)
        if accepted:
            try:
                super().set_state(accepted)
            except Exception as e:  # noqa: BLE001 - a handler's failure is a message, never a dead comm
                refused.append(f"{', '.join(accepted)}: {type(e).__name__}: {e}")
                resend += list(accepted)
        if refused:
            self._report("not applied (from the page): " + "; ".join(refused))
            with contextlib.suppress(Exception):
                self.send_state(resend)  # the page's copy reverts to the kernel's values

    def _handle_msg(self, msg: dict) -> None:
        """The comm's message handler: malformed messages are reported, `update`s go to `set_state`."""
        try:
            content = msg.get("content") if isinstance(msg, dict) else None
            data = content.get("data") if isinstance(content, dict) else None
            if not isinstance(data, dict) or not isinstance(data.get("method"), str):
                self._report("a message from the page had no method: ignored")
                return
            if data["method"] != "update":
                return super()._handle_msg(msg)  # request_state, custom, unknown (logged by ipywidgets)
            state = data.get("state", {})
            if not isinstance(state, dict):
                self._report(f"an update from the page carried {_short(state)} instead of an object: ignored")
                return
            if "buffer_paths" in data:
                paths, buffers = data["buffer_paths"], msg.get("buffers") or []
                if not isinstance(paths, list) or len(paths) != len(buffers):
                    self._report(f"an update from the page had {_short(paths)} buffer paths for {len(buffers)} "
                                 "buffers: ignored")
                    return
                _put_buffers(state, paths, buffers)
            self.set_state(state)
        except Exception as e:  # noqa: BLE001 - nothing from the page may raise into the comm handler
            with contextlib.suppress(Exception):
                self._report(f"a message from the page was not understood: {type(e).__name__}: {_short(e)}")


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
        if self.static_png and not getattr(self, "deferred", False):  # a picture never waits for deferred data
            try:
                data["image/png"] = base64.b64encode(self.png()).decode("ascii")
            except Exception:  # noqa: BLE001
                pass
        return data, meta


class CircuitWidget(PageInputs, StaticFallback, anywidget.AnyWidget):
    """Base of every circwidgets view: a selected (layer, head) and that head's data only.

    Synced traits: `layer`, `head` (the selection; the front end sets them on click / arrow keys),
    `n_layers`, `n_heads`, `error` (a message shown in the widget; "" when all is well),
    `shown` ({"layer", "head", ...}: what the data traits currently hold).
    A bad request (out-of-range head, engine error) sets `error`, emits a `CircuitWidgetWarning`,
    restores the last good selection, and never raises into the kernel's comm handler; values from
    the page are type-checked first (`PageInputs`).

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
    # part of the view's data is not computed yet (`_deferred_work`): the page asks for it with a
    # {"type": "complete"} message when it first draws the view and shows "computing…" meanwhile;
    # Python readers (`complete()`, the static fallback, the export) compute it when they need it
    deferred = traitlets.Bool(False).tag(sync=True)

    def __init_subclass__(cls, **kwargs):
        if cls.__dict__.get("_front_end"):  # before anywidget's hook, which turns the paths into FileContents
            cls._esm, cls._css = front_end_files(cls._front_end)
        super().__init_subclass__(**kwargs)

    def __init__(self, model: Transformer, layer: int = 0, head: int = 0, defer_head: bool = False,
                 defer_setup: bool = False, **kwargs):
        """`defer_head`: do not compute the first head's data here; `defer_setup`: do not prepare the view
        here at all (`_setup`, the first head, `_after_setup`). Either way the view is `deferred`: the page
        asks for the rest when it first draws the view, Python readers call `complete()`."""
        self.model = model
        self._defer_head = defer_head
        self._defer_setup = defer_setup
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
        self.on_msg(self._on_page_message)
        if defer_setup:  # the selection only; `complete()` prepares the rest
            try:
                self.set_quietly(layer=check_layer(model, layer), head=check_head(model, head))
            except IndexError as e:
                self._report(str(e))
            self.deferred = True
            return
        self._prepare(layer, head)

    def _prepare(self, layer: int, head: int) -> None:
        """`_setup`, then the first head's data (unless deferred), then `_after_setup`."""
        try:
            self._setup()
        except Exception as e:  # noqa: BLE001 - show the reason in the widget instead of no widget
            self._report(f"could not prepare {type(self).__name__}: {type(e).__name__}: {e}")
            return
        self._broken = False
        try:
            layer, head = check_layer_head(self.model, layer, head)
        except IndexError as e:
            self._report(str(e))
            layer, head = 0, 0
        self.set_quietly(layer=layer, head=head)
        if self._defer_head:
            self.deferred = True
        else:
            self._refresh(keep_error=True)
        self._after_setup()

    # ------------------------------------------------------------------ for subclasses
    def _setup(self) -> None:
        """Compute what does not depend on the selection (called once, before the first head)."""

    def _after_setup(self) -> None:
        """What the constructor asked for beyond the first head (a pair, a mode...), applied once prepared."""

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
        self._defer_head = False  # a head's data is on its way: nothing of it is deferred any more
        with self.hold_sync():
            if (layer, head) != (self.layer, self.head):  # negative indices normalised
                self.set_quietly(layer=layer, head=head)
            for k, v in payload.items():
                setattr(self, k, v)
            self.shown = want
            if not keep_error:
                self.error = ""

    # ------------------------------------------------------------------ deferred data
    def _deferred_work(self) -> None:
        """Compute what the view deferred: the selected head's data (`defer_head`); subclasses that defer
        something else extend this."""
        if self._defer_head:
            self._refresh(keep_error=True)

    def complete(self) -> None:
        """Compute the view's deferred data now (a no-op when nothing is deferred). Failures become the
        view's message, as any request's."""
        if not self.deferred:
            return
        try:
            if self._defer_setup:
                self._defer_setup = False
                self._prepare(self.layer, self.head)
            if not self._broken:
                self._deferred_work()
        except Exception as e:  # noqa: BLE001 - a failure is a message, never a dead comm
            self._report(f"could not compute {type(self).__name__}'s data: {type(e).__name__}: {e}")
        self.deferred = False

    def _on_page_message(self, _widget, content, _buffers) -> None:
        """Custom messages from the page. `{"type": "prefetch", "heads": [[layer, head], ...]}`: the page
        keeps a bounded cache of per-head payloads and asks for the selected head's neighbours in the
        background, so a later click on one of them redraws at once (the selection is still sent as
        traits). Each head is answered by one `{"type": "payload", "shown", "values", "buffer_paths"}`
        message with the payload's bytes as binary buffers; `shown` is what the `shown` trait would
        be for that head, the page's cache key. Heads out of range or failing are skipped silently."""
        if not isinstance(content, dict):
            return
        if content.get("type") == "complete":  # the page drew a deferred view: compute what it waits for
            self.complete()
            return
        if self._broken or content.get("type") != "prefetch":
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

