"""QK and OV circuits of every head, their eigenvalues and copying scores (docs/ARCHITECTURE.md §1-2).

Row-vector convention (docs/ARCHITECTURE.md, Conventions): `W_QK = W_Q W_K^T` and `W_OV = W_V W_O`,
both `d_model x d_model`; the attention score of query position i on key position j is
`x_i W_QK x_j^T / sqrt(d_head)` (the `1/sqrt(d_head)` is not part of `W_QK`, as in TransformerLens).
Full circuits:
- `full_qk = W_E W_QK W_E^T` `[layer, head, d_vocab, d_vocab]`: row = destination (query) token,
  column = source (key) token;
- `positional_qk = W_pos W_QK W_pos^T` `[layer, head, n_ctx, n_ctx]`: row = query position;
- `full_ov = W_E W_OV W_U` `[layer, head, d_vocab, d_vocab]`: row = attended-to source token,
  column = the logit it raises.
All are `FactoredMatrix` objects (never materialised).

Conventions every function here shares:
- **weights only**: biases (b_Q, b_K, b_V, b_O, b_U) are not part of any circuit;
- **LayerNorm**: models with LN are analysed after folding (`prep.weights`, as `fold_layernorm`); the
  per-position LN scale cannot be folded, so for LN models the full circuits are approximations
  (exact up to a positive per-token factor at each LN); positivity ignores that factor.
- weights must be finite (else `ValueError`); maths in float32 for half-precision weights; results
  on the weights' device.
"""

from __future__ import annotations

from typing import Literal

import torch

from ..model import Transformer
from ..model.lazy import is_lazy
from . import streaming
from ._check import check_finite_output, check_layer_head
from .factored import FactoredMatrix, compute_dtype, eigvals
from .prep import cached, weights

__all__ = [
    "W_OV", "W_QK", "circuit_cores", "eigen_positivity", "eigenvalues", "full_ov", "full_qk",
    "positional_qk", "trace_copying_score",
]

Circuit = Literal["ov", "qk", "qk_pos"]


def _w(model: Transformer, name: str) -> torch.Tensor:
    w = weights(model)
    if name not in w:
        raise ValueError(f"this model has no {name} (positional={model.cfg.positional!r})")
    return w[name]


def W_QK(model: Transformer) -> FactoredMatrix:
    """Per-head `W_Q W_K^T`, `[layer, head, d_model, d_model]` (factors `W_Q`, `W_K^T`)."""
    return FactoredMatrix(_w(model, "W_Q"), _w(model, "W_K").mT)


def W_OV(model: Transformer) -> FactoredMatrix:
    """Per-head `W_V W_O`, `[layer, head, d_model, d_model]` (factors `W_V`, `W_O`)."""
    return FactoredMatrix(_w(model, "W_V"), _w(model, "W_O"))


def full_qk(model: Transformer) -> FactoredMatrix:
    """`W_E W_Q W_K^T W_E^T`, `[layer, head, d_vocab, d_vocab]`; row = query token, column = key token."""
    W_E = _w(model, "W_E")
    return FactoredMatrix(W_E, _w(model, "W_Q"), _w(model, "W_K").mT, W_E.T)


def positional_qk(model: Transformer) -> FactoredMatrix:
    """`W_pos W_Q W_K^T W_pos^T`, `[layer, head, n_ctx, n_ctx]`; row = query position, column = key position."""
    W_pos = _w(model, "W_pos")
    return FactoredMatrix(W_pos, _w(model, "W_Q"), _w(model, "W_K").mT, W_pos.T)


def full_ov(model: Transformer) -> FactoredMatrix:
    """`W_E W_V W_O W_U`, `[layer, head, d_vocab, d_vocab]`; row = source token, column = logit raised."""
    return FactoredMatrix(_w(model, "W_E"), _w(model, "W_V"), _w(model, "W_O"), _w(model, "W_U"))


# Gram matrices shared by all heads, computed once per model (d_model x d_model).
def _gram(model: Transformer, which: str) -> torch.Tensor:
    def make(w: dict[str, torch.Tensor]) -> torch.Tensor:
        dt = compute_dtype(w["W_E"].dtype)
        if which == "EE":
            W = w["W_E"].to(dt)
            return W.T @ W
        if which == "UE":
            return w["W_U"].to(dt) @ w["W_E"].to(dt)
        W = w["W_pos"].to(dt)
        return W.T @ W

    if which == "PP" and model.cfg.positional == "none":
        raise ValueError("circuit='qk_pos' needs positional embeddings; this model has positional='none'")
    return cached(model, ("gram", which), make)


def _check_circuit(circuit: str, full: bool) -> None:
    if circuit not in ("ov", "qk", "qk_pos"):
        raise ValueError(f"circuit={circuit!r} is not one of 'ov', 'qk', 'qk_pos'")
    if circuit == "qk_pos" and not full:
        raise ValueError("full=False is only defined for circuit='ov' or 'qk' ('qk_pos' is always W_pos W_QK W_pos^T)")


def circuit_cores(model: Transformer, circuit: Circuit = "ov", full: bool = True,
                  layer: int | None = None, head: int | None = None) -> torch.Tensor:
    """Small square matrices with the same nonzero eigenvalues and trace as the circuit.

    `[layer, head, d_head, d_head]` (or `[d_head, d_head]` for one `layer, head`), by cyclic rotation:
    full OV `W_O (W_U W_E) W_V`; full QK `W_K^T (W_E^T W_E) W_Q`; positional QK `W_K^T (W_pos^T W_pos) W_Q`;
    `full=False`: `W_O W_V` and `W_K^T W_Q`. The bracketed Gram matrices are cached per model.
    """
    model = streaming.resolve(model)  # nnsight / HF models: their weights (lazily where possible)
    if is_lazy(model):  # a checkpoint read layer by layer
        return streaming.circuit_cores(model, circuit, full, layer, head)
    _check_circuit(circuit, full)
    w = weights(model)
    dt = compute_dtype(w["W_E"].dtype)
    if (layer is None) != (head is None):
        raise ValueError("give both layer and head, or neither")
    idx: tuple = (slice(None), slice(None))
    if layer is not None:
        idx = check_layer_head(model, layer, head)
    if circuit == "ov":
        left, right = w["W_O"][idx].to(dt), w["W_V"][idx].to(dt)
        mid = _gram(model, "UE") if full else None
    else:
        left, right = w["W_K"][idx].to(dt).mT, w["W_Q"][idx].to(dt)
        mid = (_gram(model, "EE" if circuit == "qk" else "PP")) if full else None
    with torch.no_grad():
        core = (left @ mid) @ right if mid is not None else left @ right
    where = f"L{idx[0]}H{idx[1]}'s " if layer is not None else ""
    return check_finite_output(f"{where}{circuit} circuit", core, axes=() if layer is not None else ("layer", "head"))


def eigenvalues(model: Transformer, layer: int, head: int, circuit: Circuit = "ov", full: bool = True) -> torch.Tensor:
    """Eigenvalues of one head's circuit, complex `[d_head]`, sorted by decreasing magnitude.

    `circuit="ov"`: `W_E W_OV W_U` (`full=False`: `W_OV`); `"qk"`: `W_E W_QK W_E^T` (`full=False`:
    `W_QK`); `"qk_pos"`: `W_pos W_QK W_pos^T`. These are the (at most d_head) eigenvalues of the
    rank-<=d_head matrix other than its remaining zeros.
    """
    model = streaming.resolve(model)  # nnsight / HF models: their weights (lazily where possible)
    if is_lazy(model):  # a checkpoint read layer by layer
        return streaming.eigenvalues(model, layer, head, circuit, full)
    core = circuit_cores(model, circuit, full, layer, head)
    lam = eigvals(core)
    return lam[lam.abs().argsort(descending=True)]


def eigen_positivity(model: Transformer, circuit: Circuit = "ov", full: bool = True) -> torch.Tensor:
    """`Re(sum lambda) / sum |lambda|` of every head's circuit, `[layer, head]`, in [-1, 1].

    +1: all eigenvalues positive real (copying for OV, attending to the same token for QK);
    random matrices sit near 0. NaN for a head whose circuit is zero.
    """
    model = streaming.resolve(model)  # nnsight / HF models: their weights (lazily where possible)
    if is_lazy(model):  # a checkpoint read layer by layer
        return streaming.eigen_positivity(model, circuit, full)
    lam = eigvals(circuit_cores(model, circuit, full))
    num, den = lam.real.sum(-1), lam.abs().sum(-1)
    return torch.where(den > 0, num / den, torch.full_like(num, float("nan")))


def trace_copying_score(model: Transformer) -> torch.Tensor:
    """`tr(W_OV) / ||W_OV||_F` per head, `[layer, head]` (the summary's score; unbounded, grows with
    d_model: views show `eigen_positivity` by default)."""
    ov = W_OV(model)
    return ov.trace() / ov.norm()
