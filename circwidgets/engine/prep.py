"""How the engine reads a model's weights: LayerNorm folded, finiteness checked, results cached.

Circuits are defined on plain matrices, so a model with LayerNorm is analysed through
`circwidgets.model.fold_layernorm(model)` (LN weights and biases folded into the reading matrices,
writing weights centred; normalization becomes "LNPre"). `weights(model)` gives just the folded
weight matrices (what circuits, composition and virtual weights read; cheap), `prepared(model)` the
whole folded model (what path expansion runs). Both are made once per model object and cached
(a `WeakKeyDictionary`, so they die with the model), keyed on a fingerprint of the parameters
(storage pointer and in-place version counter): training the model or loading new weights
invalidates it.

What folding cannot remove is the per-position LN *scale* (a division by the norm of the residual):
circuits such as `W_E W_OV W_U` leave it out and are therefore approximations for LN models, exact
up to that positive per-token factor. Models with normalization None are used as they are (no
centring: without LN the mean direction of the residual stream matters).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch

from ..model import Transformer, fold_layernorm
from ..model.fold import folded_weights
from ._check import check_finite

__all__ = ["cached", "fingerprint", "prepared", "weights"]

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fingerprint(model: Transformer) -> tuple:
    """Changes whenever a parameter is replaced or modified in place."""
    return tuple((n, p.data_ptr(), p._version, p.dtype, p.device) for n, p in model.named_parameters())


def _check_finite_fast(model: Transformer) -> None:
    """`check_finite` in one reduction per weight (aminmax propagates NaN and keeps inf: ~20x faster
    than `isfinite(p).all()` on GPT-2's embedding); the slow check runs only to name the culprit."""
    for p in model.parameters():
        if p.numel() == 0:
            continue
        try:
            mn, mx = torch.aminmax(p.detach())
            ok = bool(torch.isfinite(mn) & torch.isfinite(mx))
        except RuntimeError:  # dtypes without aminmax on this device
            ok = bool(torch.isfinite(p.detach()).all())
        if not ok:
            check_finite(model)


def _entry(model: Transformer) -> dict[str, Any]:
    if not isinstance(model, Transformer):
        raise TypeError(f"model must be a circwidgets Transformer, got {type(model).__name__}")
    fp = fingerprint(model)
    entry = _CACHE.get(model)
    if entry is None or entry["fp"] != fp:
        _check_finite_fast(model)
        entry = {"fp": fp}
        _CACHE[model] = entry
    return entry


def prepared(model: Transformer) -> Transformer:
    """The model the engine analyses: LN folded (cached), weights checked finite.

    Raises `ValueError` for LN + shortformer models (no exact fold exists: positions enter after
    ln1), and for NaN/inf weights.
    """
    entry = _entry(model)
    if model.cfg.normalization is None:
        return model  # never stored in the cache: a value referring to its key would never be freed
    if "model" not in entry:
        with torch.no_grad():
            entry["model"] = fold_layernorm(model, center_writing=True)
    return entry["model"]


def weights(model: Transformer) -> dict[str, torch.Tensor]:
    """The weight matrices (`W_E, W_pos, W_Q, W_K, W_V, W_O, W_U`, and `W_in, W_out` with MLPs) as
    `fold_layernorm(model)` would have them (`model.fold.folded_weights`: the same fold, without building
    a model copy, so cheaper than `prepared` at GPT-2 size). Cached per model. Biases are not included:
    the circuits are weights-only.

    `W_K`, `W_V` are per query head `[layer, n_heads, d_model, d_head]`; with grouped-query attention
    the shared heads are also given as `_W_K`, `_W_V` `[layer, n_kv_heads, d_model, d_head]` (query head
    h reads `cfg.kv_head_of(h)`), for computations that can be done once per K/V head.

    Beyond the pre-norm fold, what the circuits read is made to match what the residual stream holds
    (`_circuit_folds`): `W_E` times the model's `embed_scale`; per-head q/k norm weights (Qwen3,
    OLMo-2) multiplied into `W_Q` / `W_K`; post-norm weights (Gemma 2/3, OLMo-2) into `W_O` / `W_out`.
    The q/k norms' and post-norms' own `1 / rms` stay out: positive per-token (per head) factors, so
    circuits of such models are exact up to them, as they are for every pre-norm's scale."""
    entry = _entry(model)
    if "weights" not in entry:
        entry["weights"] = _circuit_folds(model, folded_weights(model))
    return entry["weights"]


@torch.no_grad()
def _circuit_folds(model: Transformer, w: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The folds `weights` adds to `folded_weights` (docstring there); new tensors, the model untouched."""
    cfg = model.cfg
    if cfg.embed_scale != 1.0:
        w["W_E"] = w["W_E"] * cfg.embed_scale
    if cfg.qk_norm:
        qn, kn = model.q_norm_w.detach(), model.k_norm_w.detach()
        if cfg.qk_norm_scope == "head":  # [layer, d_head]: the same weight for every head of the layer
            q_scale, k_scale = qn[:, None, None, :], kn[:, None, None, :]
            k_shared = k_scale
        else:  # [layer, heads, d_head]
            q_scale = qn[:, :, None, :]
            k_shared = kn[:, :, None, :]
            k_scale = (model.kv_expand(kn) if cfg.grouped_kv else kn)[:, :, None, :]
        w["W_Q"] = w["W_Q"] * q_scale
        w["W_K"] = w["W_K"] * k_scale
        if "_W_K" in w:
            w["_W_K"] = w["_W_K"] * k_shared
    if cfg.post_norm:  # the post-norm weight multiplies everything a block writes
        w["W_O"] = w["W_O"] * model.ln1_post_w.detach()[:, None, None, :]
        if "W_out" in w:
            w["W_out"] = w["W_out"] * model.ln2_post_w.detach()[:, None, :]
    return w


def cached(model: Transformer, key: Any, fn: Callable[[dict[str, torch.Tensor]], Any]) -> Any:
    """`fn(weights(model))`, computed once per model and weights (e.g. Gram matrices)."""
    entry = _entry(model)
    if key not in entry:
        w = weights(model)
        with torch.no_grad():
            entry[key] = fn(w)
    return entry[key]
