"""PathExpansion: one logit split into path terms (direct path, one-head terms, virtual-head terms),
their sum beside the model's own logit; click a bar for that head's pattern."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import traitlets

from ..engine.induction import decisive_position, opening_head
from ..engine.paths import FrozenRun, LogitPaths, frozen_run, logit_paths
from ..engine.patterns import attention_patterns
from ..engine.text_run import supports_text_run, text_run
from ..engine.virtual import virtual_heads
from ..model import Transformer
from ._data import as_model, encode_array, find_token, token_label, tokens_and_labels
from .base import CircuitWidget, int_pairs, reacts_to


def logit_label(cfg) -> str:
    """What the path terms add up to: the model's own logit, or with a final soft-cap (Gemma 2) the logit
    before its `c * tanh(x / c)` (the terms are linear; the capped logit is not their sum)."""
    cap = cfg.final_softcap
    return "model's own logit" if cap is None else f"model's logit before its final soft-cap (c·tanh(x/c), c = {cap:g})"


class PathExpansion(CircuitWidget):
    """The logit of `target` at `position`, split into path terms by `engine.paths.logit_paths`
    (computed for the shown logit only, on one frozen forward pass: memory O(sources x pos x d_model),
    never `[terms, pos, d_model]`).

    Traits (synced): `labels`, `position`, `target` (token id), `target_label`, `predictions`
    (the model's top tokens at `position`: [label, id, logit]), `terms` (bars: direct-path and
    source terms, the `n_one` largest one-head terms, the `n_virtual` largest virtual-head terms,
    the rest summed as "other terms", the engine's remainder; each {label, value, order, heads,
    section}), `total` (sum of every term's contribution), `model_logit` (the model's own logit:
    they agree to float error), `query` (a token string or #id to use as target), `pattern` (the
    selected head's pattern, float16, for the bar clicked: its last head).
    """

    _front_end = "paths"
    export_inputs = ("position", "target", "path", "layer", "head")  # restore order
    page_inputs = ("query",)
    page_schema = {"path": int_pairs()}

    labels = traitlets.List(traitlets.Unicode(), []).tag(sync=True)
    position = traitlets.Int(0).tag(sync=True)
    target = traitlets.Int(0).tag(sync=True)
    target_label = traitlets.Unicode("").tag(sync=True)
    predictions = traitlets.List([]).tag(sync=True)
    terms = traitlets.List([]).tag(sync=True)
    total = traitlets.Float(0.0).tag(sync=True)
    model_logit = traitlets.Float(0.0).tag(sync=True)
    logit_label = traitlets.Unicode("model's own logit").tag(sync=True)  # says "before the soft-cap" where one is
    query = traitlets.Unicode("").tag(sync=True)
    pattern = traitlets.Dict({}).tag(sync=True)
    path = traitlets.List([]).tag(sync=True)
    virtual = traitlets.Dict({}).tag(sync=True)
    # not synced (the page only draws the bars it gets): how many bars, how long the enumerated paths
    n_one = traitlets.Int(16)
    n_virtual = traitlets.Int(8)
    max_order = traitlets.Int(2)

    def __init__(self, model: Transformer, text_or_tokens, labels: Sequence[str] | None = None,
                 position: int | None = None, target: int | str | None = None, layer: int = 0, head: int = 0,
                 n_one: int = 16, n_virtual: int = 8, max_order: int | None = None, defer: bool = False):
        """`defer`: prepare the view when the page first shows it (or at `complete()`), not here."""
        if max_order is None:  # virtual-head terms by default up to 64 heads (beyond: minutes on a CPU)
            max_order = 2 if model.cfg.n_layers * model.cfg.n_heads <= 64 else 1
        self._init_input = (text_or_tokens, labels, position, target)
        self._init_head = (layer, head)  # (the selection traits are set after `_setup`)
        self.run: FrozenRun | None = None
        super().__init__(model, layer=layer, head=head, n_one=n_one, n_virtual=n_virtual,
                         max_order=max(0, min(max_order, model.cfg.n_layers)), defer_setup=defer)

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        text_or_tokens, labels, position, target = self._init_input
        toks, labs = tokens_and_labels(self.model, text_or_tokens, labels)
        self.tokens = toks
        # one forward pass on the text (engine.text_run), held while the view is set up: the frozen run, the
        # patterns and the decisive position answer from it (a lazy checkpoint / nnsight source: its own pass)
        shared = text_run(self.model, toks) if supports_text_run(self.model) else None
        self.run = frozen_run(self.model, toks[None])
        self.data = self.run.attention or attention_patterns(self.model, toks)  # (a shared hit: no new run)
        P = toks.shape[0]
        if position is None:  # where induction decides the next token (the evidence worth showing first)
            # (a deferred setup reads the selection traits: they may have changed since construction)
            layer, head = (self.layer, self.head) if self.deferred else self._init_head
            # a layer-0 selection: the text's induction head (engine.opening_head; else the length sweep), chosen
            # only if the text has an induction position (decisive_position calls it lazily)
            own = (layer, head) if layer >= 1 else (
                (lambda: opening_head(self.model, toks, self.data)) if self.model.cfg.n_layers > 1 else None)
            position = decisive_position(self.model, toks, own)
        del shared
        if not -P <= position < P:
            raise IndexError(f"position={position} is out of range: 0..{P - 1}")
        pos = position % P
        self.set_quietly(labels=labs, position=pos, target=self._resolve_target(target, pos),
                         logit_label=logit_label(self.model.cfg))
        self._update_terms()

    def _resolve_target(self, target, pos: int) -> int:
        if target is None:  # the next token of the text, or the model's top prediction at the end
            if pos + 1 < self.tokens.shape[0]:
                return int(self.tokens[pos + 1])
            return int(self.run.model_logits(pos).argmax())
        if isinstance(target, str):
            return find_token(self.model, target)
        t = int(target)
        if not 0 <= t < self.model.cfg.d_vocab:
            raise IndexError(f"target={t} is out of range: token ids are 0..{self.model.cfg.d_vocab - 1}")
        return t

    def _streamed(self) -> bool:
        """A lazy checkpoint or an nnsight / HF source: weights read one layer at a time."""
        return self.run is not None and self.run.reader is not None

    # ------------------------------------------------------------------ terms
    def logit_paths(self) -> LogitPaths:
        """The engine's expansion of the shown logit (cached per position, target)."""
        pos, tgt = self.position, self.target
        return self.cached(("logit", pos, tgt, self.max_order, self._version),
                           lambda: logit_paths(self.run, pos, tgt, max_order=self.max_order))

    def term_values(self) -> list[tuple[str, float]]:
        """Every term's contribution to the target's logit at the position (largest first)."""
        return self.logit_paths().for_token()

    def _update_terms(self) -> None:
        lp = self.logit_paths()
        bars = [{"label": b.label, "value": b.value, "order": b.order, "heads": [list(x) for x in b.heads],
                 "section": b.section} for b in lp.bars(self.n_one, self.n_virtual)]
        logits = self.run.model_logits(self.position)
        top = logits.topk(min(10, logits.shape[0]))
        with self.hold_sync():
            self.terms = bars
            self.total = lp.total
            self.model_logit = float(logits[self.target])
            self.target_label = token_label(self.model, self.target)
            self.predictions = [[token_label(self.model, int(i)), int(i), float(v)]
                                for v, i in zip(top.values.tolist(), top.indices.tolist())]

    @reacts_to("position", "target", "n_one", "n_virtual")
    def _on_change(self, change) -> None:
        if self.run is None:
            return
        P = self.tokens.shape[0]

        def update():
            if change["name"] == "position" and not 0 <= change["new"] < P:
                raise IndexError(f"position={change['new']} is out of range: 0..{P - 1}")
            if change["name"] == "target" and not 0 <= change["new"] < self.model.cfg.d_vocab:
                raise IndexError(f"target={change['new']} is out of range: "
                                 f"token ids are 0..{self.model.cfg.d_vocab - 1}")
            self._update_terms()

        if self.apply_or_revert(change, update, "not shown"):
            self.error = ""

    @reacts_to("query")
    def _on_query(self, change) -> None:
        if self.run is None or not change["new"].strip():
            return
        try:
            self.target = find_token(self.model, change["new"])
        except LookupError as e:
            self._report(str(e))

    # ------------------------------------------------------------------ per head
    def _payload(self, layer: int, head: int) -> dict[str, Any]:
        return {"pattern": encode_array(self.data.head(layer, head).float(), "float16")}

    @traitlets.observe("path")
    def _on_path(self, change) -> None:
        """A two-head bar: also send the virtual head's pattern A^{h2} A^{h1} (engine.virtual_heads)."""
        if self.run is None:
            return
        heads = [tuple(int(x) for x in lh) for lh in change["new"]]
        if len(heads) != 2:
            self.virtual = {}
            return
        try:
            def compute():
                weights = self.run.reader.weights if self._streamed() else self.model  # (streamed: two layers)
                vh = virtual_heads(weights, self.data, heads[0], heads[1])
                return {"heads": [list(h) for h in heads], **encode_array(vh.pattern[0].float(), "float16")}

            self.virtual = self.cached(("virtual", *heads, self._version), compute)
        except Exception as e:  # noqa: BLE001 - a bad request is a message, never a dead comm
            self._report(f"virtual head not shown: {e}")
            self.virtual = {}

    def export_actions(self) -> list[dict[str, Any]]:
        bars = [{"path": t["heads"], "layer": t["heads"][-1][0], "head": t["heads"][-1][1]}
                for t in self.terms if t["heads"]]
        return (bars + super().export_actions() + [{"position": p} for p in range(len(self.labels))]
                + [{"target": int(p[1])} for p in self.predictions])

    def current_pattern(self) -> torch.Tensor:
        return self.data.head(self.layer, self.head)

    # ------------------------------------------------------------------ static fallback
    def summary(self) -> str:
        lab = self.labels[self.position] if self.labels else ""
        top = ", ".join(f"{t['label']} {t['value']:+.3f}" for t in self.terms[:5])
        return (f"PathExpansion: logit of {self.target_label!r} at position {self.position} ({lab!r}): "
                f"{self.logit_label} {self.model_logit:.4f}, sum of terms {self.total:.4f}; largest: {top} "
                "(live view needs a running kernel)")

    def figure(self):
        from .. import plot

        return plot.path_terms(self.logit_paths(), self.position, self.target, n_one=self.n_one,
                               n_virtual=self.n_virtual, logit_label=self.logit_label,
                               title=f"logit of {self.target_label!r} at position {self.position}")


def paths(model, text_or_tokens, labels: Sequence[str] | None = None, position: int | None = None,
          target: int | str | None = None, max_order: int | None = None, tokenizer=None) -> PathExpansion:
    """PathExpansion widget: the logit of `target` (default: the next token of the text, or the
    model's top prediction at the last position) at `position` (default: `engine.decisive_position`, an
    induction position where the strongest induction head decides the next token; the last position when
    the text repeats nothing), split into the direct path, one-head
    terms and virtual-head terms (engine.paths), with their sum next to the model's own logit.
    max_order: heads per enumerated path (default 2 up to 64 heads, else 1: enumerating every
    virtual head of a 144-head model takes minutes on a CPU; what is not enumerated is the
    "remainder" bar, so the sum stays exact).

    `model`: our `Transformer` (or a HF / TransformerLens model, converted), a lazy checkpoint
    (`cw.from_hf(path, lazy=True)`) or an nnsight `LanguageModel` / `NNsightSource`: these two run one
    forward pass (layer by layer, or one trace) and read the weights one layer at a time
    (`engine.streamed_paths`)."""
    from ..model.lazy_source import LazySource
    from ..model.nnsight_source import NNsightSource, as_source

    if type(model).__module__.startswith("nnsight") or isinstance(model, NNsightSource):
        model = as_source(model)  # an nnsight model: patterns from a trace, weights one layer at a time
    elif not isinstance(model, LazySource):
        model = as_model(model, tokenizer)
    return PathExpansion(model, text_or_tokens, labels=labels, position=position, target=target,
                         max_order=max_order)
