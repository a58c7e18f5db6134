"""One forward pass of a model on one text, handed to every view of that text.

A dashboard of views on one text (the explorer) needs, from the model's run on it: every head's
pattern and value norms (attention, composition, paths panels), what the path expansion freezes
(LN scales, MLP outputs, the final residual), the clean run's per-token loss and top predictions
(ablation panel) and one head's output (the paths panel's default position). `text_run` computes
all of it in ONE forward pass (stopped before the unembedding); while the `TextRun` is alive, the
engine functions asked for these things on the same model and tokens answer from it instead of
running the model again (`attention_patterns` / `shared_patterns`, `paths.frozen_run`,
`ablation_state.ablated_run` with nothing ablated, `induction.decisive_position`). The values are
the same tensors those functions compute on their own: the hooks that keep them change nothing in
the forward pass (no `hook_result` hook, which would switch the attention output to a per-head sum).

The registry is weak (as `patterns.shared_patterns`): a run is shared while something holds it (the
explorer holds it while it makes its panels); each panel then keeps only what it reads.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

from ..model import Transformer
from ._check import check_finite, check_finite_output
from .ablation_state import AblatedRun, compact_from_final, final_hook_name, full_from_logits, kv_group_notes
from .patterns import AttentionData, lookup_shared, register_shared, run_until, shared_key

__all__ = ["TextRun", "shared_text_run", "supports_text_run", "text_run"]


class TextRun:
    """What the views of one text read from the model's run on it (one forward pass).

    tokens: `[pos]` ids. attention: `AttentionData` (patterns `[layer, head, q, k]` in `dtype`, value
    norms); registered as the shared patterns of these tokens. z: per layer the `hook_z` activation
    `[1, pos, head, d_head]` (each head's mix of values, before W_O). final: `[1, pos, d_model]`, what
    the unembedding reads (`ablation_state.final_hook_name`). `frozen()`: the path expansion's
    `FrozenRun`; `clean_run(keep_logits, top_k)`: the model's own `AblatedRun`; `head_output(layer,
    head)`: `[pos, d_model]`, what the head writes (the forward pass's `hook_result` of it).
    """

    def __init__(self, model: Transformer, tokens: torch.Tensor, attention: AttentionData, z: list[torch.Tensor],
                 final: torch.Tensor, frozen_capture: Any, frozen_error: Exception | None):
        self.model = model
        self.tokens = tokens
        self.attention = attention
        self.z = z
        self.final = final
        self._capture = frozen_capture
        self._frozen_error = frozen_error
        self._frozen = None
        self._clean: dict[tuple[bool, int], AblatedRun] = {}

    def frozen(self):
        """The `paths.FrozenRun` of this pass (patterns shared with `attention`; made once)."""
        if self._frozen_error is not None:
            raise self._frozen_error
        if self._frozen is None:
            self._frozen = self._capture.finish(self.attention.pattern, self.attention)
            self._capture = None
        return self._frozen

    @torch.no_grad()
    def clean_run(self, keep_logits: bool = True, top_k: int = 5) -> AblatedRun:
        """`ablation_state.ablated_run(model, tokens, keep_logits=..., top_k=...)` with nothing ablated, from
        this pass's final residual (the unembedding runs here, once per setting)."""
        key = (bool(keep_logits), int(top_k))
        if key not in self._clean:
            toks, notes = self.tokens[None], kv_group_notes(self.model, [])
            if keep_logits:  # the forward pass's own last step on the kept residual
                run = full_from_logits(self.model, toks, self.model.unembed(self.final), notes)
            else:
                run = compact_from_final(self.model, toks, self.final, top_k, notes)
            self._clean[key] = run
        return self._clean[key]

    @torch.no_grad()
    def head_output(self, layer: int, head: int) -> torch.Tensor:
        """`[pos, d_model]`: what head (layer, head) writes into the residual stream (no b_O), computed as the
        forward pass computes `hook_result` (the same einsum on the same `z`)."""
        result = torch.einsum("bqhe,hed->bqhd", self.z[layer], self.model.W_O[layer])
        return result[0, :, head]


_RUNS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def shared_text_run(model: Transformer, tokens) -> TextRun | None:
    """The live `TextRun` of `model` on `tokens` (`[pos]` or `[1, pos]`), or None."""
    if not isinstance(model, Transformer):
        return None
    toks = model.check_tokens(tokens)
    return lookup_shared(_RUNS, model, toks) if toks.shape[0] == 1 else None


def supports_text_run(model) -> bool:
    """Whether `text_run` runs `model`: an in-memory circwidgets `Transformer` with at least one layer (a lazy
    checkpoint or an nnsight / Hugging Face source is none: their views run their own passes). The one test
    the views ask before they share a run."""
    return isinstance(model, Transformer) and model.cfg.n_layers > 0


@torch.no_grad()
def text_run(model: Transformer, tokens, dtype: torch.dtype | None = None) -> TextRun:
    """The `TextRun` of `model` on one sequence `tokens` (`[pos]` or `[1, pos]`): one forward pass, stopped
    at the final normalised residual (no unembedding). `dtype`: storage dtype of the patterns (default the
    model's). Returns the live one when there is one. Needs an in-memory `Transformer` with at least one
    layer (`supports_text_run`; not a lazy checkpoint or an nnsight source: their views compute their own
    runs)."""
    if not supports_text_run(model):
        if isinstance(model, Transformer):
            raise ValueError("text_run needs a model with at least one layer")
        raise TypeError("text_run needs an in-memory circwidgets Transformer")
    check_finite(model)
    toks = model.check_tokens(tokens)
    if toks.shape[0] != 1:
        raise ValueError(f"tokens must be one sequence, got a batch of {toks.shape[0]}")
    dt = dtype or model.W_E.dtype
    key = shared_key(model, toks, dt)
    hit = _RUNS.get(key)
    if hit is not None:
        return hit
    cfg = model.cfg
    L, n = cfg.n_layers, toks.shape[1]
    pattern = torch.empty(L, cfg.n_heads, n, n, dtype=dt, device=toks.device)
    v_norm = torch.empty(L, cfg.n_heads, n, dtype=dt, device=toks.device)
    z: list[torch.Tensor] = [None] * L  # type: ignore[list-item]
    final: list[torch.Tensor] = []

    def keep_pattern(x, hook):
        pattern[hook.layer()] = x[0].to(dt)

    def keep_v(x, hook):  # x: [batch, pos, head, d_head]; as `attention_patterns` does
        xv = x[0] if x.dtype in (torch.float32, torch.float64) else x[0].float()
        v_norm[hook.layer()] = xv.norm(dim=-1).T.to(dt)

    def keep_z(x, hook):
        z[hook.layer()] = x

    hooks: list = []
    for layer in range(L):
        hooks += [(f"blocks.{layer}.attn.hook_pattern", keep_pattern), (f"blocks.{layer}.attn.hook_v", keep_v),
                  (f"blocks.{layer}.attn.hook_z", keep_z)]
    from .paths import _FrozenCapture

    capture, frozen_error = None, None
    try:
        capture = _FrozenCapture(model, toks)
        hooks += capture.hooks
    except Exception as e:  # noqa: BLE001 - a model path expansion does not support: the other parts still work
        frozen_error = e
    last = final_hook_name(model)
    run_until(model, toks, [*hooks, (last, lambda x, hp: final.append(x))], last=last)
    check_finite_output("attention patterns", pattern, model=model, tokens=toks)
    attention = AttentionData(pattern=pattern, v_norm=v_norm, tokens=toks[0].clone())
    run = TextRun(model, toks[0].clone(), attention, z, final[0], capture, frozen_error)
    register_shared(key, attention)
    _RUNS[key] = run
    return run
