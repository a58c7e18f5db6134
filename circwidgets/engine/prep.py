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
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from ..model import Transformer, fold_layernorm
from ..model.fold import circuit_folds, folded_weights
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


def weights(model: Transformer) -> Mapping[str, torch.Tensor]:
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
    circuits of such models are exact up to them, as they are for every pre-norm's scale.

    The MLP matrices `W_in`, `W_out` are folded on first use (`w["W_in"]`; `"W_in" in w` is True), not
    up front: few circuits read them, and at GPT-2 size they are a third of the folded copy (226 MB)."""
    entry = _entry(model)
    if "weights" not in entry:
        mlp = tuple(n for n in _MLP if n in model._parameters)
        entry["weights"] = _Weights(_circuit_folds(model, folded_weights(model, [n for n in _names(model)
                                                                                 if n not in mlp])), model, mlp)
    return entry["weights"]


_MLP = ("W_in", "W_out")


def _names(model: Transformer) -> list[str]:
    """The weight matrices' names as `weights` gives them (`_W_K` stays `_W_K`; W_U even when tied)."""
    return sorted({n.lstrip("_") for n in model._parameters if n.startswith(("W_", "_W_"))} | {"W_U"})


class _Weights(Mapping):
    """The folded weights of `weights`: a read-only mapping whose `lazy` matrices are folded on first access
    (`w["W_in"]`, or iterating over values); names, `in` and `len` count them without folding them."""

    def __init__(self, data: dict[str, torch.Tensor], model: Transformer, lazy: tuple[str, ...]):
        self._data = data
        self._model = weakref.ref(model)  # the cache holds this mapping per model: no strong reference back
        self._lazy = [n for n in lazy if n not in data]

    def __getitem__(self, key: str) -> torch.Tensor:
        if key in self._data:
            return self._data[key]
        model = self._model()
        if key not in self._lazy or model is None:
            raise KeyError(key)
        self._data.update(_circuit_folds(model, folded_weights(model, self._lazy)))
        self._lazy = []
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter([*self._data, *self._lazy])

    def __len__(self) -> int:
        return len(self._data) + len(self._lazy)

    def __contains__(self, key: object) -> bool:
        return key in self._data or key in self._lazy


def _circuit_folds(model: Transformer, w: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The folds `weights` adds to `folded_weights` (`model.fold.circuit_folds`); new tensors, the model untouched."""
    return circuit_folds(model.cfg, w, model._parameters)


def cached(model: Transformer, key: Any, fn: Callable[[dict[str, torch.Tensor]], Any]) -> Any:
    """`fn(weights(model))`, computed once per model and weights (e.g. Gram matrices)."""
    entry = _entry(model)
    if key not in entry:
        w = weights(model)
        with torch.no_grad():
            entry[key] = fn(w)
    return entry[key]
