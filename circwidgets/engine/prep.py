"""How the engine reads a model's weights: LayerNorm folded, finiteness checked, results cached.

Circuits are defined on plain matrices, so a model with LayerNorm is analysed through
`circwidgets.model.fold_layernorm(model)` (LN weights and biases folded into the reading matrices,
writing weights centred; normalization becomes "LNPre"). The folded copy is made once per model
object and cached (a `WeakKeyDictionary`, so it dies with the model); the cache is keyed on a
fingerprint of the parameters (storage pointer and in-place version counter), so training the
model or loading new weights invalidates it.

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
from ._check import check_finite

__all__ = ["cached", "fingerprint", "prepared"]

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fingerprint(model: Transformer) -> tuple:
    """Changes whenever a parameter is replaced or modified in place."""
    return tuple((n, p.data_ptr(), p._version, p.dtype, p.device) for n, p in model.named_parameters())


def _entry(model: Transformer) -> dict[str, Any]:
    if not isinstance(model, Transformer):
        raise TypeError(f"model must be a circwidgets Transformer, got {type(model).__name__}")
    fp = fingerprint(model)
    entry = _CACHE.get(model)
    if entry is None or entry["fp"] != fp:
        check_finite(model)
        entry = {"fp": fp}
        _CACHE[model] = entry
    return entry


def prepared(model: Transformer) -> Transformer:
    """The model the engine analyses: LN folded (cached), weights checked finite.

    Raises `ValueError` for LN + shortformer models (no exact fold exists: positions enter after
    ln1), and for NaN/inf weights.
    """
    entry = _entry(model)
    if "model" not in entry:
        if model.cfg.normalization is None:
            entry["model"] = model
        else:
            with torch.no_grad():
                entry["model"] = fold_layernorm(model, center_writing=True)
    return entry["model"]


def cached(model: Transformer, key: Any, fn: Callable[[Transformer], Any]) -> Any:
    """`fn(prepared(model))`, computed once per model and weights (e.g. Gram matrices)."""
    entry = _entry(model)
    if key not in entry:
        pm = prepared(model)
        with torch.no_grad():
            entry[key] = fn(pm)
    return entry[key]
