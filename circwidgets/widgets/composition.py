"""Composition: Q / K / V composition scores of every earlier head x later head; click a pair for
both heads' patterns on a text, the virtual head's pattern `A^{h2} A^{h1}`, the score and its baseline."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import traitlets

from ..engine import check_layer_head
from ..engine.composition import (
    HeadComposition,
    composition_baseline,
    composition_for_head,
    composition_scores,
)
from ..engine.heads import induction_tokens
from ..engine.patterns import attention_patterns
from ..engine.virtual import virtual_heads
from ..model import Transformer
from ._data import as_model, encode_array, tokens_and_labels
from .base import CircuitWidget, int_list, reacts_to, rotary_offset

KINDS = {"q": "Q-composition", "k": "K-composition", "v": "V-composition"}


class Composition(CircuitWidget):
    """Composition scores between heads (`engine.composition`), with pair details.

    Traits (synced): `kind` ("q" | "k" | "v"), `subtract_baseline` (show score minus the random
    baseline's mean), `focus` (the selected head's scores, the only scores the page receives:
    `{"layer", "head", "kind", "minus", "offset", "scores"}` with `scores` float32 `[L, H]`: entry
    `[l, h]` is the score of the pair (l, h) -> selected head for l < layer, selected head -> (l, h)
    for l > layer, NaN in the head's own layer; from `engine.composition_for_head`, computed on demand
    and cached per head in the kernel, so a 32 x 32-head model sends 32 x 32 numbers per selection,
    not (32 x 32)^2), `baseline` ([mean, std] from `composition_baseline`), `labels` (tokens of the
    text used for the details), `pair` ([l1, h1, l2, h2] or []), `details` (for the pair: `score`,
    `raw`, `baseline_mean`, `baseline_std` and float16 patterns `p1`, `p2`, `pv` = `A^{h2} A^{h1}`
    from `engine.virtual.virtual_heads`). Clicking a cell selects the pair and makes its later head
    the widget's selected head (`layer`, `head`): the map then shows that head's partners.
    `score_matrix()` gives all pairs `[L, H, L, H]` in Python (computed when asked, never sent).

    Rotary models (`rotary` True): Q- and K-scores read the later head's QK circuit at the offset
    `offset` (Δ = query − key position, default 1). Grouped-query models: `kv_group_size` > 1 and the
    pair's `details` carry `kv_group` (the query heads that share the later head's K/V head) and
    `kv_note` (what that means for K- and V-composition).
    """

    _front_end = "composition"
    export_inputs = ("kind", "subtract_baseline", "pair", "layer", "head")  # restore order
    page_inputs = ("offset",)  # the rotary offset box: answered by a kernel only (the offline page disables it)
    page_schema = {"pair": int_list(4)}
    cache_size = 512  # per-head focus maps and per-pair patterns (three float16 [pos, pos] arrays each)

    kind = traitlets.Unicode("k").tag(sync=True)
    subtract_baseline = traitlets.Bool(False).tag(sync=True)
    focus = traitlets.Dict({}).tag(sync=True)
    baseline = traitlets.List([]).tag(sync=True)
    labels = traitlets.List(traitlets.Unicode(), []).tag(sync=True)
    pair = traitlets.List([]).tag(sync=True)
    details = traitlets.Dict({}).tag(sync=True)
    rotary = traitlets.Bool(False).tag(sync=True)
    offset = traitlets.Int(1).tag(sync=True)
    kv_group_size = traitlets.Int(1).tag(sync=True)

    def __init__(self, model: Transformer, text_or_tokens=None, labels: Sequence[str] | None = None,
                 kind: str = "k", subtract_baseline: bool = False, pair: Sequence[int] | None = None,
                 layer: int | None = None, head: int | None = None, offset: int = 1, defer: bool = False):
        """`defer`: prepare the view when the page first shows it (or at `complete()`), not here."""
        self._init_input = (text_or_tokens, labels)
        self._scores: dict[tuple, torch.Tensor] = {}
        self.data = None
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r} is not one of {list(KINDS)}")
        L = model.cfg.n_layers
        if pair is None and L >= 2:
            pair = [0, 0, 1, 0]
        if layer is None or head is None:
            layer, head = (pair[2], pair[3]) if pair else (0, 0)
        rotary = model.cfg.positional == "rotary"
        if rotary:
            rotary_offset(model, offset, "the composition view")  # an integer in 0..n_ctx − 1
        self._init_pair = pair
        super().__init__(model, layer=layer, head=head, kind=kind, subtract_baseline=subtract_baseline,
                         rotary=rotary, offset=offset if rotary else 0, kv_group_size=model.cfg.kv_group_size,
                         defer_setup=defer)

    def _after_setup(self) -> None:
        if self.model.cfg.n_layers < 2:
            self._report("composition needs at least two layers: this model has one")
            return
        if self.deferred:  # prepared late: the selection made meanwhile stays, the pair follows it
            if self._init_pair:
                self._set_pair(list(self._init_pair), select=False)
            self._pair_for_selection()
        elif self._init_pair:
            self._set_pair(list(self._init_pair))

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        text_or_tokens, labels = self._init_input
        if text_or_tokens is None:
            text_or_tokens = induction_tokens(self.model, bos=self.model.cfg.bos_token_id, max_seq_len=12)[0]
        toks, labs = tokens_and_labels(self.model, text_or_tokens, labels)
        self.tokens = toks
        self.data = attention_patterns(self.model, toks)
        self.labels = labs
        mean, std = composition_baseline(self.model, self.kind)
        self.baseline = [mean, std]

    def _offset_for(self, kind: str) -> int | None:
        return self.offset if self.rotary and kind != "v" else None

    def score_matrix(self, kind: str | None = None, baseline: bool | None = None) -> torch.Tensor:
        """The engine's scores of all pairs `[L, H, L, H]` for `kind` (raw, or minus the baseline
        mean): computed when asked (the static figure, notebooks), never sent to the page."""
        key = (kind or self.kind, self.subtract_baseline if baseline is None else baseline)
        off = self._offset_for(key[0])
        if (*key, off) not in self._scores:
            self._scores[(*key, off)] = composition_scores(self.model, key[0], baseline=key[1],
                                                           offset=off).detach().float().cpu()
        return self._scores[(*key, off)]

    def head_scores(self, layer: int, head: int, kind: str | None = None, baseline: bool = False) -> HeadComposition:
        """Head (layer, head)'s scores with every earlier and later head (`engine.composition_for_head`,
        float32, cached per head, kind, baseline and offset)."""
        kind = kind or self.kind
        off = self._offset_for(kind)

        def compute() -> HeadComposition:
            r = composition_for_head(self.model, layer, head, kind, baseline=baseline, offset=off)
            return HeadComposition(r.into.detach().float().cpu(), r.out_of.detach().float().cpu())

        return self.cached(("head scores", layer, head, kind, baseline, off, self._version), compute)

    def focus_scores(self, layer: int, head: int) -> torch.Tensor:
        """What the map shows for a selected head, `[L, H]`: its earlier partners' scores in the layers
        below it, its later partners' in the layers above (for `kind`, minus the baseline if asked)."""
        r = self.head_scores(layer, head, self.kind, self.subtract_baseline)
        return torch.where(torch.arange(self.model.cfg.n_layers)[:, None] < layer, r.into, r.out_of)

    def _variant(self) -> tuple:
        return (self.kind, self.subtract_baseline, self._offset_for(self.kind))

    def _payload(self, layer: int, head: int) -> dict[str, Any]:
        if self.model.cfg.n_layers < 2:
            return {"focus": {}}
        kind, minus, off = self._variant()
        return {"focus": {"layer": layer, "head": head, "kind": kind, "minus": minus, "offset": off,
                          "scores": encode_array(self.focus_scores(layer, head), "float32")}}

    @reacts_to("kind", "subtract_baseline", "offset")
    def _on_kind(self, change) -> None:
        if self.data is None or self.model.cfg.n_layers < 2:
            return
        if change["name"] == "kind" and change["new"] not in KINDS:
            self._report(f"kind={change['new']!r} is not one of {list(KINDS)}")
            self.set_quietly(kind=change["old"])
            return
        if change["name"] == "offset":
            try:
                rotary_offset(self.model, change["new"], "the composition view")
            except ValueError as e:
                self._report(f"offset={change['new']!r} not applied: {e}")
                self.set_quietly(offset=change["old"])
                return
        try:
            with self.hold_sync():
                self._refresh()
                if self.pair:
                    self.details = self.pair_details(*self.pair)
        except Exception as e:  # noqa: BLE001 - a failure is a message, never a dead comm
            self._report(f"could not compute {change['new']!r} composition: {type(e).__name__}: {e}")

    # ------------------------------------------------------------------ pair
    def pair_details(self, l1: int, h1: int, l2: int, h2: int) -> dict[str, Any]:
        """Details of one pair: the engine's score (raw and minus the baseline mean, for `kind`) and
        the patterns (encoded; cached per pair)."""
        raw = float(self.head_scores(l2, h2).into[l1, h1])
        mean, std = self.baseline
        out = {"pair": [l1, h1, l2, h2], "kind": self.kind, "raw": raw, "score": raw - mean,
               "baseline_mean": mean, "baseline_std": std, **self._pair_patterns(l1, h1, l2, h2)}
        if self.rotary and self.kind != "v":
            out["offset"] = self.offset
        cfg = self.model.cfg
        if cfg.grouped_kv:
            kv = cfg.kv_head_of(h2)
            group = cfg.kv_group(kv)
            out["kv_group"] = group
            same = {"k": "keys (their K-composition differs only through their queries)",
                    "v": "values (the same V-composition)", "q": "keys and values"}[self.kind]
            out["kv_note"] = (f"L{l2}H{h2} reads K/V head {kv}, shared by heads "
                              f"{', '.join(f'L{l2}H{g}' for g in group)}: they have the same {same}")
        return out

    def _pair_patterns(self, l1: int, h1: int, l2: int, h2: int) -> dict[str, Any]:
        def compute():
            vh = virtual_heads(self.model, self.data, (l1, h1), (l2, h2))
            return {"p1": encode_array(self.data.head(l1, h1).float(), "float16"),
                    "p2": encode_array(self.data.head(l2, h2).float(), "float16"),
                    "pv": encode_array(vh.pattern[0].float(), "float16")}

        return self.cached(("pair", l1, h1, l2, h2, self._version), compute)

    def _check_pair(self, pair) -> list[int]:
        cfg = self.model.cfg
        if not isinstance(pair, (list, tuple)) or len(pair) != 4:
            raise ValueError(f"pair={pair!r} must be [layer1, head1, layer2, head2]")
        l1, h1, l2, h2 = (int(x) for x in pair)
        for name, v, n in (("layer1", l1, cfg.n_layers), ("head1", h1, cfg.n_heads),
                           ("layer2", l2, cfg.n_layers), ("head2", h2, cfg.n_heads)):
            if not 0 <= v < n:
                raise IndexError(f"{name}={v} is out of range: 0..{n - 1}")
        if not l1 < l2:
            raise ValueError(f"the earlier head's layer ({l1}) must be below the later head's ({l2})")
        return [l1, h1, l2, h2]

    def _set_pair(self, pair, select: bool = True) -> None:
        self.set_quietly(pair=pair)
        self._on_pair({"name": "pair", "new": pair, "old": [], "select": select})

    def pair_for_head(self, layer: int, head: int) -> list[int]:
        """The pair shown when head (layer, head) is selected elsewhere: the head as the later head with
        its most strongly composing earlier head (for `kind`); a layer-0 head as the earlier head with
        its strongest later partner."""
        r = self.head_scores(layer, head)
        H = self.model.cfg.n_heads
        if layer > 0:
            i = int(torch.nan_to_num(r.into[:layer], nan=-math.inf).flatten().argmax())
            return [i // H, i % H, layer, head]
        i = int(torch.nan_to_num(r.out_of[1:], nan=-math.inf).flatten().argmax())
        return [0, head, 1 + i // H, i % H]

    @reacts_to("layer", "head")
    def _follow_selection(self, change) -> None:
        """A head selected from outside (explorer, `select()`): show a pair that contains it, so the
        details never stay on a pair the selection has left."""
        self._pair_for_selection()

    def _pair_for_selection(self) -> None:
        if self.data is None or self._broken or self.model.cfg.n_layers < 2:
            return
        sel = (self.layer, self.head)
        if self.pair and sel in ((self.pair[0], self.pair[1]), (self.pair[2], self.pair[3])):
            return
        try:
            check_layer_head(self.model, *sel)
        except IndexError:
            return  # the base reports and reverts the selection
        self._set_pair(self.pair_for_head(*sel), select=False)

    @reacts_to("pair")
    def _on_pair(self, change) -> None:
        if self.data is None:
            return
        if not change["new"]:
            self.details = {}
            return
        try:
            pair = self._check_pair(change["new"])
            det = self.pair_details(*pair)
        except Exception as e:  # noqa: BLE001 - a bad pair is a message, never a dead comm
            self._report(f"pair not shown: {e}")
            self.set_quietly(pair=change["old"])
            return
        with self.hold_sync():
            if pair != list(change["new"]):
                self.set_quietly(pair=pair)
            self.details = det
            self.error = ""
        if change.get("select", True) and (self.layer, self.head) != (pair[2], pair[3]):
            self.select(pair[2], pair[3])

    def export_actions(self) -> list[dict[str, Any]]:
        """The cells of the map on the page (the selected head's pairs), head selections, the other
        kinds, the baseline toggle."""
        cfg = self.model.cfg
        layer, head = self.layer, self.head
        pairs = [{"pair": [l, h, layer, head] if l < layer else [layer, head, l, h]}
                 for l in range(cfg.n_layers) if l != layer for h in range(cfg.n_heads)]
        return (pairs + super().export_actions() + [{"kind": k} for k in KINDS if k != self.kind]
                + [{"subtract_baseline": not self.subtract_baseline}])

    def pair_pattern(self, which: str = "virtual") -> torch.Tensor:
        """The engine's pattern for the selected pair: "first" (A^{h1}), "second" (A^{h2}) or
        "virtual" (A^{h2} A^{h1}), `[query, key]`."""
        l1, h1, l2, h2 = self.pair
        if which == "first":
            return self.data.head(l1, h1)
        if which == "second":
            return self.data.head(l2, h2)
        return virtual_heads(self.model, self.data, (l1, h1), (l2, h2)).pattern[0]

    # ------------------------------------------------------------------ static fallback
    def summary(self) -> str:
        if self.model.cfg.n_layers < 2:
            return "Composition: this model has one layer (no composition)"
        mean, std = self.baseline
        top = ""
        if self.n_layers * self.n_heads <= 256:  # all pairs are cheap: the strongest of them
            s = self.score_matrix(self.kind, False)
            if torch.isfinite(s).any():
                idx = torch.nan_to_num(s, nan=-1.0).flatten().argmax()
                l1, h1, l2, h2 = (int(x) for x in torch.unravel_index(idx, s.shape))
                top = f"; strongest L{l1}H{h1} → L{l2}H{h2} = {float(s[l1, h1, l2, h2]):.3f}"
        else:  # big models: the selected head's strongest partners (what the page has)
            r = self.head_scores(self.layer, self.head)
            for name, v, earlier in (("earlier", r.into, True), ("later", r.out_of, False)):
                if torch.isfinite(v).any():
                    i = int(torch.nan_to_num(v, nan=-math.inf).flatten().argmax())
                    other, me = f"L{i // self.n_heads}H{i % self.n_heads}", f"L{self.layer}H{self.head}"
                    a, b = (other, me) if earlier else (me, other)
                    top += f"; strongest with an {name} head {a} → {b} = {float(v.flatten()[i]):.3f}"
        p = ""
        if self.pair:
            d = self.details
            p = f"; selected pair {self.pair}: score {d.get('raw', float('nan')):.3f}"
        at = f" at offset {self.offset}" if self.rotary and self.kind != "v" else ""
        return (f"Composition ({KINDS[self.kind]}{at}): baseline {mean:.3f} ± {std:.3f}{top}{p} "
                f"({self.n_layers} layers x {self.n_heads} heads; live view needs a running kernel)")

    def figure(self):
        from .. import plot

        mean, std = self.baseline if self.baseline else (0.0, 0.0)
        return plot.composition(self.score_matrix(), kind=KINDS[self.kind], baseline=(mean, std),
                                subtracted=self.subtract_baseline, selected=(self.layer, self.head),
                                pair=tuple(self.pair) if self.pair else None)


def composition(model, text_or_tokens=None, labels: Sequence[str] | None = None, kind: str = "k",
                subtract_baseline: bool = False, pair: Sequence[int] | None = None, tokenizer=None,
                offset: int = 1) -> Composition:
    """Composition widget: Q / K / V composition scores of every earlier head x later head.

    Click a cell for the pair's details on `text_or_tokens` (default: BOS + random tokens repeated,
    where induction heads show): both heads' patterns, the virtual head's pattern `A^{h2} A^{h1}`,
    the score and the random baseline. `subtract_baseline=True` shows score minus the baseline mean.
    Rotary models: Q/K scores at the offset `offset` (a control in the view).
    """
    return Composition(as_model(model, tokenizer), text_or_tokens, labels=labels, kind=kind,
                       subtract_baseline=subtract_baseline, pair=pair, offset=offset)
