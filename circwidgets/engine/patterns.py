"""Attention patterns of a model on one input, and the value-weighted pattern.

The pattern of head (l, h) is the model's own `cache["pattern", l][0, h]`: row = query
(destination) position, column = key (source) position, rows sum to 1, causal (zero above the
diagonal). The value-weighted pattern (Kobayashi et al. 2020, used in the framework paper's
figures) scales each source column by the norm of the value vector the head reads there:
`A[i, j] * ‖v_j‖`, with `v = cache["v", l][0, :, h]` (LN-scaled input times W_V, plus b_V).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from ..model import Transformer
from ..model.nnsight_source import is_source
from ._check import check_finite


class _Stop(Exception):
    """Raised by the last hook `run_until` needs: the rest of the forward pass is not computed."""


def run_until(model: Transformer, tokens: torch.Tensor, hooks: list, last: str) -> None:
    """`model.run_with_hooks(tokens, hooks)`, stopped right after hook point `last` has run (no
    unembedding: `[pos, d_vocab]` logits are the largest tensor of a long input)."""
    def stop(x, hp):
        raise _Stop

    try:
        model.run_with_hooks(tokens, [*hooks, (last, stop)])
    except _Stop:
        return


@dataclass
class AttentionData:
    """Patterns and value norms of every head on one sequence.

    pattern: `[layer, head, query_pos, key_pos]` (rows sum to 1, causal).
    v_norm: `[layer, head, key_pos]`, ‖v‖ of each source position for each head.
    tokens: `[pos]` token ids the model was run on.
    """

    pattern: torch.Tensor
    v_norm: torch.Tensor
    tokens: torch.Tensor

    def head(self, layer: int, head: int, value_weighted: bool = False) -> torch.Tensor:
        """Pattern of one head `[query_pos, key_pos]`; with `value_weighted`, `A[i, j] * ‖v_j‖`."""
        a = self.pattern[layer, head]
        if value_weighted:
            return value_weighted_pattern(a.float(), self.v_norm[layer, head].float())
        return a


def value_weighted_pattern(pattern: torch.Tensor, v_norm: torch.Tensor) -> torch.Tensor:
    """`pattern[..., q, k] * v_norm[..., None, k]`: attention scaled by the size of what is moved.

    pattern `[..., query_pos, key_pos]`, v_norm `[..., key_pos]` -> `[..., query_pos, key_pos]`.
    """
    return pattern * v_norm.unsqueeze(-2)


@torch.no_grad()
def attention_patterns(model: Transformer, tokens, dtype: torch.dtype | None = None, extra_hooks: list = (),
                       until: str | None = None) -> AttentionData:
    """Run `model` on one sequence and keep every head's pattern and value norms (nothing else).
    `extra_hooks` ride along in the same forward pass (stopped after hook point `until`, default the
    last layer's pattern) - but only when the patterns are computed, not when they are shared.

    tokens: `[pos]` or `[1, pos]` ids (or text when the model has a tokenizer).
    dtype: storage dtype of the returned patterns (default: the model's); `torch.float16` halves the
    memory for long inputs on big models (12 x 12 heads x 1,024^2 positions: 300 MB instead of 600 MB).
    Returns `AttentionData(pattern [L, H, q, k], v_norm [L, H, k], tokens [pos])`.
    """
    if is_source(model):  # nnsight / Hugging Face model: through traces
        from . import activations

        return activations.attention_patterns(model, tokens, dtype)
    check_finite(model)
    toks = model.check_tokens(tokens)
    if toks.shape[0] != 1:
        raise ValueError(f"tokens must be one sequence, got a batch of {toks.shape[0]}")
    cfg = model.cfg
    n = toks.shape[1]
    dt = dtype or model.W_E.dtype
    # one copy per (model, weights, tokens, dtype) while anything holds it: the views of a dashboard
    # on one text share their patterns (12 x 12 heads x 1,024^2 positions: 600 MB each otherwise)
    key = shared_key(model, toks, dt)
    hit = _SHARED.get(key)
    if hit is not None:
        return hit
    pattern = torch.empty(cfg.n_layers, cfg.n_heads, n, n, dtype=dt, device=toks.device)
    v_norm = torch.empty(cfg.n_layers, cfg.n_heads, n, dtype=dt, device=toks.device)

    def keep_pattern(x, hook):
        pattern[hook.layer()] = x[0].to(dt)

    def keep_v(x, hook):  # x: [batch, pos, head, d_head]
        xv = x[0] if x.dtype in (torch.float32, torch.float64) else x[0].float()  # half: norm in float32
        v_norm[hook.layer()] = xv.norm(dim=-1).T.to(dt)

    hooks = []
    for layer in range(cfg.n_layers):
        hooks += [(("pattern", layer), keep_pattern), (("v", layer), keep_v)]
    if cfg.n_layers:
        run_until(model, toks, [*hooks, *extra_hooks], last=until or f"blocks.{cfg.n_layers - 1}.attn.hook_pattern")
    from ._check import check_finite_output

    check_finite_output("attention patterns", pattern, model=model, tokens=toks)
    out = AttentionData(pattern=pattern, v_norm=v_norm, tokens=toks[0].clone())
    _SHARED[key] = out
    return out


_SHARED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def shared_key(model: Transformer, toks: torch.Tensor, dtype: torch.dtype) -> tuple:
    """The key of a model's run on `toks` (`[1, pos]`) with patterns stored in `dtype`: the model, the
    version of its weights, the tokens (shared-run registries, here and in `text_run`)."""
    from .prep import fingerprint

    return (id(model), fingerprint(model), dtype, str(toks.device), toks.cpu().numpy().tobytes())


def register_shared(key: tuple, data: AttentionData) -> None:
    """Make `data` the shared patterns under `key` (`shared_key`) while something holds it."""
    _SHARED[key] = data


def shared_patterns(model: Transformer, tokens) -> AttentionData | None:
    """The patterns of `model` on `tokens` if some view already holds them (any dtype), else None."""
    if is_source(model):  # a lazy checkpoint / nnsight model: its patterns are never shared (no W_E to key on)
        return None
    return lookup_shared(_SHARED, model, model.check_tokens(tokens))


def lookup_shared(registry: weakref.WeakValueDictionary, model: Transformer, toks: torch.Tensor):
    """What `registry` holds for `model` on `toks` under `shared_key` in any dtype (the model's own first), or None."""
    for dt in (model.W_E.dtype, torch.float32, torch.float16, torch.bfloat16, torch.float64):
        hit = registry.get(shared_key(model, toks, dt))
        if hit is not None:
            return hit
    return None


@torch.no_grad()
def pattern_thumbnails(data: AttentionData, size: int = 16) -> torch.Tensor:
    """Every head's pattern block-averaged to at most `size` x `size`: `[layer, head, s, s]` float32
    with `s = min(size, n_pos)` (adaptive average pooling: block (a, b) is the mean of
    `pattern[i, j]` over the query rows i and key columns j that fall in it). For overview grids."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size={size!r} must be a positive integer")
    L, H, n, _ = data.pattern.shape
    s = min(size, n)
    out = torch.empty(L, H, s, s, dtype=torch.float32)
    for layer in range(L):  # one layer at a time: no float32 copy of every pattern at once
        out[layer] = torch.nn.functional.adaptive_avg_pool2d(data.pattern[layer].float(), s).cpu()
    return out
