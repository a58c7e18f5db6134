"""AttentionPatterns: click through heads and see each one's attention pattern on a text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import traitlets

from ..engine.patterns import (
    AttentionData,
    attention_patterns,
    pattern_thumbnails,
    shared_patterns,
)
from ..model import Transformer
from ._data import as_model, encode_array, tokens_and_labels
from .base import CircuitWidget, reacts_to

# name -> (label, source); behaviour scores come from engine.heads on BOS + repeated random tokens
SCORES: dict[str, str] = {
    "induction": "induction score (repeated random tokens)",
    "previous_token": "previous-token score (repeated random tokens)",
    "duplicate_token": "duplicate-token score (repeated random tokens)",
    "previous_token_text": "previous-token score (this text)",
    "ov_positivity": "OV eigenvalue positivity (full circuit)",
}
_F16_ABOVE = 16_000_000  # keep patterns in float16 when L*H*n*n exceeds this many entries


SLOW_SCORES = 3e10  # multiply-adds of the repeated-token forward passes above which the grid's colour waits


def slow_scores(model: Transformer, name: str) -> bool:
    """Whether colouring the head grid by score `name` takes seconds: the behaviour scores run the model on
    BOS + r + r over the repeat-length sweep (`engine.heads`; GPT-2 small: ~5 s on one CPU thread)."""
    if name not in ("induction", "previous_token", "duplicate_token"):
        return False
    from ..engine.heads import detection_lengths

    cfg = model.cfg
    positions = 4 * sum(2 * n + 1 for n in detection_lengths(model))  # n_seqs 4, BOS + r + r per length
    width = cfg.d_model * (4 * cfg.d_model + (0 if cfg.attn_only else 2 * (cfg.d_mlp or 4 * cfg.d_model)))
    return positions * cfg.n_layers * width > SLOW_SCORES


class AttentionPatterns(CircuitWidget):
    """Attention patterns of every head on one input.

    Traits (synced): `labels` (one string per position), `text` (editable when the model has a
    tokenizer), `value_weighted` (show `A[i, j] * ‖v_j‖`), `score_name` / `score_names` / `scores`
    (the head grid's colouring, `[n_layers, n_heads]` float32), `pattern` (the selected head's
    `[query, key]` pattern, float16 bytes). Numbers come from `engine.patterns.attention_patterns`
    (the model's own `cache["pattern", l]` and `cache["v", l]`) and `engine.heads`.
    """

    _front_end = "attention"
    export_inputs = ("value_weighted", "score_name", "layer", "head")  # restore order
    page_inputs = ("text",)

    labels = traitlets.List(traitlets.Unicode(), []).tag(sync=True)
    text = traitlets.Unicode("").tag(sync=True)
    has_tokenizer = traitlets.Bool(False).tag(sync=True)
    value_weighted = traitlets.Bool(False).tag(sync=True)
    score_name = traitlets.Unicode("induction").tag(sync=True)
    score_names = traitlets.List([]).tag(sync=True)
    score_label = traitlets.Unicode("").tag(sync=True)
    scores = traitlets.Dict({}).tag(sync=True)
    pattern = traitlets.Dict({}).tag(sync=True)
    thumbs = traitlets.Dict({}).tag(sync=True)  # every head's pattern pooled to <= 16 x 16, uint8

    def __init__(self, model: Transformer, text_or_tokens, labels: Sequence[str] | None = None,
                 layer: int = 0, head: int = 0, score: str = "induction", value_weighted: bool = False,
                 defer_scores: bool | None = None):
        """`defer_scores`: colour the head grid when the page first shows the view (or Python first asks,
        `complete()`), not here; None: when the score needs forward passes that take seconds (`slow_scores`)."""
        self._init_input = (text_or_tokens, labels)
        self._init_score = (score, defer_scores)
        self._score_cache: dict[str, torch.Tensor] = {}
        self.data: AttentionData | None = None
        super().__init__(model, layer=layer, head=head, value_weighted=value_weighted,
                         has_tokenizer=model.tokenizer is not None)

    def _after_setup(self) -> None:
        score, defer_scores = self._init_score
        name = score if score in dict(self.score_names) else self.score_names[0][0]
        if slow_scores(self.model, name) if defer_scores is None else defer_scores:
            self.set_quietly(score_name=name, score_label=SCORES[name])
            self.deferred = True
        else:
            self._set_score(name)

    # ------------------------------------------------------------------ setup / input
    def _setup(self) -> None:
        self.score_names = [list(x) for x in SCORES.items()]
        text_or_tokens, labels = self._init_input
        toks, labs = tokens_and_labels(self.model, text_or_tokens, labels)
        self._load(toks, labs, text_or_tokens if isinstance(text_or_tokens, str) else "")

    def _load(self, toks: torch.Tensor, labs: list[str], text: str) -> None:
        cfg = self.model.cfg
        n = toks.shape[0]
        dtype = torch.float16 if cfg.n_layers * cfg.n_heads * n * n > _F16_ABOVE else None
        # a copy another view (the explorer's) already holds is used as it is: one copy, not two
        self.data = shared_patterns(self.model, toks) or attention_patterns(self.model, toks, dtype=dtype)
        self.tokens = toks
        self.set_quietly(labels=labs, text=text, thumbs=encode_array(pattern_thumbnails(self.data), "float16"))
        self._score_cache.pop("previous_token_text", None)

    @reacts_to("text")
    def _on_text(self, change) -> None:
        if self.data is None:
            return

        def load():
            if self.model.tokenizer is None:
                raise ValueError("this model has no tokenizer: pass token ids to cw.attention")
            toks, labs = tokens_and_labels(self.model, change["new"])
            self._load(toks, labs, change["new"])

        if not self.apply_or_revert(change, load, "text not shown"):
            return
        self.error = ""
        self.invalidate()  # (clears the message: the score's, if any, comes after)
        if self.score_name == "previous_token_text":
            self._set_score(self.score_name)

    # ------------------------------------------------------------------ head scores for the grid
    def _compute_score(self, name: str) -> torch.Tensor:
        from ..engine import heads

        if name in ("induction", "previous_token", "duplicate_token"):
            if name not in self._score_cache:
                self._score_cache.update(heads.all_head_scores(self.model))
            return self._score_cache[name]
        if name == "previous_token_text":
            if name not in self._score_cache:
                s = heads.all_head_scores(self.model, tokens=self.tokens[None], kinds=("previous_token",))
                self._score_cache[name] = s["previous_token"]
            return self._score_cache[name]
        if name == "ov_positivity":
            if name not in self._score_cache:
                from ..engine import circuits

                self._score_cache[name] = circuits.eigen_positivity(self.model, circuit="ov", full=True)
            return self._score_cache[name]
        raise ValueError(f"score {name!r} is not one of {list(SCORES)}")

    def _set_score(self, name: str) -> None:
        """Colour the grid by score `name`; heads whose score is undefined (NaN: nothing to measure, e.g. a
        text without previous-token pairs) are reported in the message and drawn neutral with "·"."""
        s = self._compute_score(name)
        self.set_quietly(scores=encode_array(s.float(), "float32"), score_label=SCORES[name], score_name=name,
                         deferred=False)
        n_bad, n = int((~torch.isfinite(s)).sum()), s.numel()
        if n_bad:
            why = (f"no previous-token pairs in this text ({len(self.labels)} token(s))"
                   if name == "previous_token_text" and n_bad == n else f"undefined for {n_bad} of {n} heads")
            self._report(f"{SCORES[name]}: {why}; those heads have no score (cells marked ·)")

    def _deferred_work(self) -> None:
        super()._deferred_work()
        if not self.scores:
            self._set_score(self.score_name)

    @reacts_to("score_name")
    def _on_score(self, change) -> None:
        if self.data is None:
            return
        self.apply_or_revert(change, lambda: self._set_score(change["new"]),
                             f"cannot colour heads by {change['new']!r}")

    def export_actions(self) -> list[dict[str, Any]]:
        return super().export_actions() + [{"value_weighted": not self.value_weighted}] + [
            {"score_name": n} for n, _ in self.score_names]

    # ------------------------------------------------------------------ per head
    def _variant(self) -> tuple:
        return (self.value_weighted,)

    @traitlets.observe("value_weighted")
    def _on_vw(self, change) -> None:
        if self.data is None:
            return
        self._refresh()

    def _payload(self, layer: int, head: int) -> dict[str, Any]:
        a = self.data.head(layer, head, value_weighted=self.value_weighted)
        return {"pattern": encode_array(a, "float16", layout="tril")}  # causal: half the bytes

    def current_pattern(self) -> torch.Tensor:
        """The engine's pattern `[query, key]` for the shown head (value-weighted if toggled)."""
        return self.data.head(self.layer, self.head, value_weighted=self.value_weighted)

    # ------------------------------------------------------------------ static fallback
    def summary(self) -> str:
        n = len(self.labels)
        shown = ", ".join(repr(s) for s in self.labels[:12]) + (", …" if n > 12 else "")
        kind = "value-weighted pattern" if self.value_weighted else "attention pattern"
        return (f"AttentionPatterns: layer {self.layer} head {self.head} {kind} on {n} tokens [{shown}] "
                f"({self.n_layers} layers x {self.n_heads} heads; live view needs a running kernel)")

    def figure(self):
        from .. import plot

        kind = " value-weighted" if self.value_weighted else ""
        return plot.attention_pattern(self.current_pattern(), self.labels, title=f"L{self.layer}H{self.head}{kind}")


def attention(model, text_or_tokens, labels: Sequence[str] | None = None, layer: int = 0, head: int = 0,
              score: str = "induction", value_weighted: bool = False, tokenizer=None) -> AttentionPatterns:
    """AttentionPatterns widget: every head's pattern on `text_or_tokens`.

    model: a circwidgets `Transformer`, a Hugging Face or TransformerLens model (converted), or a lazy checkpoint.
    text_or_tokens: text (needs a tokenizer) or token ids `[pos]`; `labels`: one string per position.
    score: how the head grid is coloured ("induction", "previous_token", "duplicate_token",
    "previous_token_text", "ov_positivity").
    """
    return AttentionPatterns(as_model(model, tokenizer), text_or_tokens, labels=labels, layer=layer, head=head,
                             score=score, value_weighted=value_weighted)
