"""QK and OV circuits of every head, their eigenvalues and copying scores (docs/ARCHITECTURE.md §1-2).

Row-vector convention (docs/ARCHITECTURE.md, Conventions): `W_QK = W_Q W_K^T` and `W_OV = W_V W_O`,
both `d_model x d_model`; the attention score of query position i on key position j is
`x_i W_QK x_j^T / attn_scale` (`attn_scale` = sqrt(d_head) unless the model sets another, e.g. Gemma's
`query_pre_attn_scalar`; it is not part of `W_QK`, as in TransformerLens).
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

from collections.abc import Iterable, Sequence
from typing import Literal

import torch

from ..model import Transformer, rotary
from ..model.lazy import is_lazy
from . import streaming
from ._check import check_count, check_finite_output, check_layer_head
from .factored import FactoredMatrix, compute_dtype, eigvals
from .prep import cached, weights

__all__ = [
    "W_OV", "W_QK", "by_magnitude", "check_offset", "circuit_cores", "eigen_positivity", "eigenvalues", "full_ov",
    "full_qk", "head_full_qk", "keys_at", "offset_matrices", "offset_profile", "positional_qk", "positivity",
    "trace_copying_score",
]

Circuit = Literal["ov", "qk", "qk_pos"]
Offset = int | Sequence[int] | None

_ROTARY_HINT = ("this model has rotary positions, so its QK circuit depends on the offset Δ = query position "
                "− key position: W_QK(Δ) = W_Q R_Δ W_Kᵀ. Pass offset=Δ (an integer >= 0: 0 = a token "
                "attending to itself, 1 = to the previous token; or a sequence of offsets for the circuit "
                "averaged over them), or see offset_profile(model) for how each head's scores change with Δ")


def _w(model: Transformer, name: str) -> torch.Tensor:
    w = weights(model)
    if name not in w:
        if name == "W_pos" and model.cfg.positional == "rotary":
            raise ValueError("this model has rotary positions and no W_pos, so there is no positional QK "
                             "circuit W_pos W_QK W_posᵀ: positions enter the QK circuit as the rotation R_Δ by "
                             "the offset Δ = query − key position. Use W_QK(model, offset=Δ), "
                             "full_qk(model, offset=Δ), eigen_positivity(model, 'qk', offset=Δ), or "
                             "offset_profile(model) (each head's mean attention score per offset)")
        raise ValueError(f"this model has no {name} (positional={model.cfg.positional!r})")
    return w[name]


def check_offset(model: Transformer, offset: Offset, what: str = "the QK circuit") -> int | tuple[int, ...] | None:
    """Validate the `offset` of a QK quantity: required (an int >= 0, or a non-empty sequence of them)
    for rotary models, refused for the others (their QK circuit does not depend on it). Returns the
    offset as an int or a tuple, None for non-rotary models."""
    rotary_model = model.cfg.positional == "rotary"
    if offset is None:
        if rotary_model:
            raise ValueError(f"{what}: {_ROTARY_HINT}")
        return None
    if not rotary_model:
        raise ValueError(f"{what}: offset={offset!r} is only for rotary models; this model has "
                         f"positional={model.cfg.positional!r} and one QK circuit for all positions: leave offset out")

    def one(d) -> int:
        if isinstance(d, torch.Tensor) and d.numel() == 1:
            d = d.item()
        if isinstance(d, bool) or not isinstance(d, int) and not (hasattr(d, "__index__") and not isinstance(d, float)):
            raise ValueError(f"{what}: offset values must be integers >= 0 (query − key position), got {d!r}")
        d = int(d.__index__())
        if d < 0:
            raise ValueError(f"{what}: offset={d} is negative; Δ = query − key position is >= 0 in a causal model")
        return d

    if isinstance(offset, (str, bytes)):
        raise ValueError(f"{what}: offset={offset!r} must be an integer >= 0 or a sequence of them")
    if isinstance(offset, Iterable) and not (isinstance(offset, torch.Tensor) and offset.ndim == 0):
        offs = tuple(one(d) for d in offset)
        if not offs:
            raise ValueError(f"{what}: offset is an empty sequence")
        return offs
    return one(offset)


def offset_matrices(model: Transformer, offset: Offset, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`M_l` with `W_QK^l(Δ) = W_Q^l M_l W_K^lᵀ`, `[layer, 1, d_head, d_head]` (broadcasts over heads):
    the rotation `R_Δ` of `model.rotary.offset_matrix` (mean over offsets for a sequence), per layer
    only where the rotary base differs between layers (Gemma 3). Rotary models only."""
    off = check_offset(model, offset)
    cfg = model.cfg
    dt = dtype or compute_dtype(weights(model)["W_Q"].dtype)
    dev = weights(model)["W_Q"].device
    if cfg.rotary_base_sliding is None:
        M = rotary.offset_matrix(cfg, off).to(device=dev, dtype=dt)
        return M.expand(cfg.n_layers, 1, *M.shape)
    return torch.stack([rotary.offset_matrix(cfg, off, layer) for layer in range(cfg.n_layers)]
                       )[:, None].to(device=dev, dtype=dt)


def keys_at(model: Transformer, offset: Offset = None, layer: int | None = None, head: int | None = None
            ) -> torch.Tensor:
    """`W_K` as the QK circuit at `offset` reads it, `[layer, head, d_model, d_head]` (or `[d_model, d_head]`
    for one `layer, head`): `W_K M_lᵀ` for rotary models (so that `W_QK(Δ) = W_Q (W_K R_Δᵀ)ᵀ =
    W_Q R_Δ W_Kᵀ`), `W_K` itself otherwise."""
    off = check_offset(model, offset)
    W_K = _w(model, "W_K")
    if layer is not None:
        layer, head = check_layer_head(model, layer, head)
        W_K = W_K[layer, head]
    if off is None:
        return W_K
    M = offset_matrices(model, off, W_K.dtype)
    return W_K @ (M[layer, 0] if layer is not None else M).mT


def head_full_qk(model: Transformer, layer: int, head: int, offset: Offset = None) -> FactoredMatrix:
    """`full_qk(model, offset)[layer, head]` without rotating every head's keys, `[d_vocab, d_vocab]`."""
    layer, head = check_layer_head(model, layer, head)
    W_E = _w(model, "W_E")
    return FactoredMatrix(W_E, _w(model, "W_Q")[layer, head], keys_at(model, offset, layer, head).mT, W_E.T)


def W_QK(model: Transformer, offset: Offset = None) -> FactoredMatrix:
    """Per-head `W_Q W_K^T`, `[layer, head, d_model, d_model]` (factors `W_Q`, `W_K^T`).

    Rotary models: `W_Q R_Δ W_Kᵀ` at `offset=Δ` (required; module docstring). Per-head q/k norms
    (Qwen3, OLMo-2) have their weights folded into `W_Q`/`W_K`: scores are this circuit times
    positive per-token factors (the norms' `1/rms`)."""
    return FactoredMatrix(_w(model, "W_Q"), keys_at(model, offset).mT)


def W_OV(model: Transformer) -> FactoredMatrix:
    """Per-head `W_V W_O`, `[layer, head, d_model, d_model]` (factors `W_V`, `W_O`)."""
    return FactoredMatrix(_w(model, "W_V"), _w(model, "W_O"))


def full_qk(model: Transformer, offset: Offset = None) -> FactoredMatrix:
    """`W_E W_Q W_K^T W_E^T`, `[layer, head, d_vocab, d_vocab]`; row = query token, column = key token.

    Rotary models: `W_E W_Q R_Δ W_Kᵀ W_Eᵀ` at `offset=Δ` (required): entry `[t, s]` divided by
    `cfg.attn_scale` is the score of query token t on key token s at Δ positions before it (exactly
    the model's own score in layer 0 of a model without normalisation; up to the positive per-token
    normalisation factors otherwise, q/k norms included)."""
    W_E = _w(model, "W_E")
    return FactoredMatrix(W_E, _w(model, "W_Q"), keys_at(model, offset).mT, W_E.T)


def positional_qk(model: Transformer) -> FactoredMatrix:
    """`W_pos W_Q W_K^T W_pos^T`, `[layer, head, n_ctx, n_ctx]`; row = query position, column = key position.
    Rotary models have no `W_pos`: the error says what to use instead (`offset_profile`, `offset=`)."""
    W_pos = _w(model, "W_pos")
    return FactoredMatrix(W_pos, _w(model, "W_Q"), _w(model, "W_K").mT, W_pos.T)


def full_ov(model: Transformer) -> FactoredMatrix:
    """`W_E W_V W_O W_U`, `[layer, head, d_vocab, d_vocab]`; row = source token, column = logit raised."""
    return FactoredMatrix(_w(model, "W_E"), _w(model, "W_V"), _w(model, "W_O"), _w(model, "W_U"))


# Gram matrices shared by all heads, computed once per model (d_model x d_model).
def _tied_uncentred(model: Transformer) -> bool:
    """Tied embeddings whose fold leaves `W_U = diag(ln_final_w) W_Eᵀ` (RMSNorm or none: nothing centred)."""
    cfg = model.cfg
    return cfg.tied_embeddings and cfg.normalization in (None, "RMS", "RMSPre")


def _gram_of(W: torch.Tensor, blocks: int = 4) -> torch.Tensor:
    """`Wᵀ W` `[D, D]` for `W [n, D]`, computing only the blocks on and above the diagonal (the rest
    is their transpose): `(blocks + 1) / (2 blocks)` of a full GEMM's FLOPs (62% with 4 blocks;
    measured 1.5x faster than `W.T @ W` for the 128,256 x 2,048 embedding of a Llama-3.2-1B shape)."""
    D = W.shape[1]
    if D < 512:
        return W.T @ W
    edges = [D * i // blocks for i in range(blocks + 1)]
    G = torch.empty(D, D, dtype=W.dtype, device=W.device)
    for i in range(blocks):
        a, b = edges[i], edges[i + 1]
        Wi = W[:, a:b]
        row = Wi.T @ W[:, a:]  # [b - a, D - a]: the diagonal block and everything right of it
        G[a:b, a:] = row
        G[a:, a:b] = row.T
        d = row[:, : b - a]
        G[a:b, a:b] = (d + d.T) / 2  # exactly symmetric (a GEMM's own diagonal block need not be)
    return G


def _gram(model: Transformer, which: str) -> torch.Tensor:
    """`W_Eᵀ W_E` ("EE"), `W_U W_E` ("UE") or `W_posᵀ W_pos` ("PP"), `[d_model, d_model]`, cached per model."""
    def make(w: dict[str, torch.Tensor]) -> torch.Tensor:
        dt = compute_dtype(w["W_E"].dtype)
        if which == "EE":
            return _gram_of(w["W_E"].to(dt))
        if which == "UE":
            if _tied_uncentred(model):  # W_U = diag(w_final) W_Eᵀ / embed_scale: reuse W_Eᵀ W_E (d_vocab-long GEMM)
                fw = model._parameters.get("ln_final_w")
                EE = _gram(model, "EE") / model.cfg.embed_scale
                return EE * fw.detach().to(dt)[:, None] if fw is not None else EE
            return w["W_U"].to(dt) @ w["W_E"].to(dt)
        return _gram_of(w["W_pos"].to(dt))

    if which == "PP" and model.cfg.positional == "none":
        raise ValueError("circuit='qk_pos' needs positional embeddings; this model has positional='none'")
    return cached(model, ("gram", which), make)


def _check_circuit(circuit: str, full: bool) -> None:
    if circuit not in ("ov", "qk", "qk_pos"):
        raise ValueError(f"circuit={circuit!r} is not one of 'ov', 'qk', 'qk_pos'")
    if circuit == "qk_pos" and not full:
        raise ValueError("full=False is only defined for circuit='ov' or 'qk' ('qk_pos' is always W_pos W_QK W_pos^T)")


def _grouped_product(left: torch.Tensor, right: torch.Tensor, model: Transformer, shared_left: bool) -> torch.Tensor:
    """Per query head `left @ right` `[L, H, a, b]` where one side is shared by each K/V group: `left
    [L, K, a, m]` (shared_left) with `right [L, H, m, b]`, or `left [L, H, a, m]` with `right [L, K, m, b]`.
    Computed once per group member without copying the shared side out to every head."""
    L, H, g = model.cfg.n_layers, model.cfg.n_heads, model.cfg.kv_group_size
    if shared_left:
        K, a, m = left.shape[1:]
        out = torch.einsum("lkam,lkgmb->lkgab", left, right.reshape(L, K, g, m, right.shape[-1]))
    else:
        K, m, b = right.shape[1:]
        out = torch.einsum("lkgam,lkmb->lkgab", left.reshape(L, K, g, left.shape[-2], m), right)
    return out.reshape(L, H, *out.shape[-2:])


def _base_cores(model: Transformer, circuit: str, full: bool) -> torch.Tensor:
    """Cores of every head `[layer, head, d_head, d_head]` at offset 0 (cached per model): full OV
    `W_O (W_U W_E) W_V`, full QK `W_K^T (W_E^T W_E) W_Q`, ... (see `circuit_cores`). With grouped-query
    K/V the product with the Gram matrix is taken once per shared K/V head."""
    def make(w: dict[str, torch.Tensor]) -> torch.Tensor:
        dt = compute_dtype(w["W_E"].dtype)
        grouped = "_W_K" in w
        if circuit == "ov":
            mid = _gram(model, "UE") if full else None
            W_O = w["W_O"].to(dt)
            if grouped and mid is not None:  # W_O [(UE) W_V]: the bracket once per K/V head
                return _grouped_product(W_O, mid @ w["_W_V"].to(dt), model, shared_left=False)
            return W_O @ mid @ w["W_V"].to(dt) if mid is not None else W_O @ w["W_V"].to(dt)
        mid = _gram(model, "EE" if circuit == "qk" else "PP") if full else None
        W_Q = w["W_Q"].to(dt)
        if grouped and mid is not None:  # [W_Kᵀ (EᵀE)] W_Q: the bracket once per K/V head
            return _grouped_product(w["_W_K"].to(dt).mT @ mid, W_Q, model, shared_left=True)
        left = w["W_K"].to(dt).mT
        return left @ mid @ W_Q if mid is not None else left @ W_Q

    return cached(model, ("cores", circuit, full), make)


def circuit_cores(model: Transformer, circuit: Circuit = "ov", full: bool = True,
                  layer: int | None = None, head: int | None = None, offset: Offset = None) -> torch.Tensor:
    """Small square matrices with the same nonzero eigenvalues and trace as the circuit.

    `[layer, head, d_head, d_head]` (or `[d_head, d_head]` for one `layer, head`), by cyclic rotation:
    full OV `W_O (W_U W_E) W_V`; full QK `W_K^T (W_E^T W_E) W_Q`; positional QK `W_K^T (W_pos^T W_pos) W_Q`;
    `full=False`: `W_O W_V` and `W_K^T W_Q`. The bracketed Gram matrices and the offset-0 cores are
    cached per model. Rotary models, QK (`offset=Δ` required): the core of `W_E W_Q R_Δ W_Kᵀ W_Eᵀ` is
    `R_Δ W_Kᵀ (W_Eᵀ W_E) W_Q`, i.e. `R_Δ` times the offset-0 core (one small product per offset).
    """
    model = streaming.resolve(model)  # nnsight / HF models: their weights (lazily where possible)
    if is_lazy(model):  # a checkpoint read layer by layer
        return streaming.circuit_cores(model, circuit, full, layer, head, offset)
    _check_circuit(circuit, full)
    if circuit == "qk_pos" and model.cfg.positional == "rotary":
        _w(model, "W_pos")  # raises, saying what to use instead
    if circuit == "ov" and offset is not None:
        raise ValueError("offset= is for QK circuits (circuit='qk'); the OV circuit does not depend on positions")
    off = check_offset(model, offset, "circuit='qk'") if circuit == "qk" else None
    if (layer is None) != (head is None):
        raise ValueError("give both layer and head, or neither")
    idx: tuple = (slice(None), slice(None))
    if layer is not None:
        idx = check_layer_head(model, layer, head)
    with torch.no_grad():
        core = _base_cores(model, circuit, full)
        if off is not None:
            M = offset_matrices(model, off, core.dtype)
            core = M[idx[0], 0] @ core[idx] if layer is not None else M @ core
        else:
            core = core[idx]
    where = f"L{idx[0]}H{idx[1]}'s " if layer is not None else ""
    return check_finite_output(f"{where}{circuit} circuit", core, axes=() if layer is not None else ("layer", "head"))


def eigenvalues(model: Transformer, layer: int, head: int, circuit: Circuit = "ov", full: bool = True,
                offset: Offset = None) -> torch.Tensor:
    """Eigenvalues of one head's circuit, complex `[d_head]`, sorted by decreasing magnitude.

    `circuit="ov"`: `W_E W_OV W_U` (`full=False`: `W_OV`); `"qk"`: `W_E W_QK W_E^T` (`full=False`:
    `W_QK`; rotary models: at `offset=Δ`, required); `"qk_pos"`: `W_pos W_QK W_pos^T`. These are the
    (at most d_head) eigenvalues of the rank-<=d_head matrix other than its remaining zeros.
    """
    core = circuit_cores(model, circuit, full, layer, head, offset=offset)  # lazy / nnsight models: streamed there
    return by_magnitude(eigvals(core))


def by_magnitude(lam: torch.Tensor) -> torch.Tensor:
    """Eigenvalues `[k]` sorted by decreasing magnitude (the order every view and figure shows them in)."""
    return lam[lam.abs().argsort(descending=True)]


def positivity(lam: torch.Tensor, name: str = "eigenvalue positivity", axes: tuple[str, ...] = ()) -> torch.Tensor:
    """`Re(sum lambda) / sum |lambda|` over the last axis of eigenvalues `lam` (complex `[*axes, k]`), in
    [-1, 1]; NaN where every eigenvalue is 0 (a zero circuit: no value). The one definition of eigenvalue
    positivity in the engine. Eigenvalues that came out NaN / inf (an overflow) raise
    `NonFiniteResultError` naming `name` and the first bad index over `axes` (`check_finite_output`)."""
    check_finite_output(name, lam, axes=axes)
    num, den = lam.real.sum(-1), lam.abs().sum(-1)
    return torch.where(den > 0, num / den, torch.full_like(num, float("nan")))


def eigen_positivity(model: Transformer, circuit: Circuit = "ov", full: bool = True,
                     offset: Offset = None) -> torch.Tensor:
    """`Re(sum lambda) / sum |lambda|` of every head's circuit, `[layer, head]`, in [-1, 1].

    +1: all eigenvalues positive real (copying for OV, attending to the same token for QK);
    random matrices sit near 0. NaN for a head whose circuit is zero. Rotary models, QK: at
    `offset=Δ` (required; Δ = 0 asks whether a token attends to itself, at distance 0).
    """
    lam = eigvals(circuit_cores(model, circuit, full, offset=offset))  # lazy / nnsight models: streamed there
    return positivity(lam, f"{circuit} eigenvalue positivity", axes=("layer", "head"))


@torch.no_grad()
def offset_profile(model: Transformer, offsets: Sequence[int] = range(64),
                   token_weights: torch.Tensor | None = None, chunk: int = 4096) -> torch.Tensor:
    """How each head's attention score changes with the offset Δ = query − key position, `[layer, head,
    n_offsets]`, for a rotary model.

    `profile[l, h, i]` = the mean, over query tokens t and key tokens s, of head (l, h)'s attention
    score (pre-softmax, divided by `attn_scale`, before any soft-cap) of query token t on key token s
    at `offsets[i]` positions before it, when the layer reads the token embeddings directly:

        profile[l, h, Δ] = q̄ R_Δ k̄ᵀ / attn_scale,  q̄ = mean_t q(e_t),  k̄ = mean_s k(e_s),

    `q(e_t)` = the query the layer computes from token t's embedding (times `embed_scale`, through
    the layer's ln1 with its weight and bias, plus `b_Q`, through the q norm if any; likewise k). The
    score is bilinear in q and k, so this mean is exact: in layer 0 it *is* the mean of the model's own
    scores over all token pairs. Tokens are weighted uniformly, or by `token_weights [d_vocab]` (e.g.
    corpus frequencies). For later layers it is the direct path from the embeddings only.
    A previous-token head peaks at Δ = 1; a head that prefers nearby tokens decays with Δ.
    """
    model = streaming.resolve(model)  # nnsight / HF models: their weights (lazily where possible)
    cfg = model.cfg
    if cfg.positional != "rotary":
        raise ValueError(f"offset_profile is for rotary models (this one: positional={cfg.positional!r}); "
                         "with learned positions see positional_qk(model)")
    offs = check_offset(model, list(offsets), "offset_profile")
    chunk = check_count(chunk, "chunk")
    if is_lazy(model):  # a checkpoint read layer by layer
        return streaming.offset_profile(model, offs, token_weights)
    weights(model)  # finiteness check
    dt = compute_dtype(model.W_E.dtype)
    p = _token_distribution(cfg.d_vocab, token_weights, dt, model.W_E.device)
    L, H = cfg.n_layers, cfg.n_heads
    q_mean = torch.zeros(L, H, cfg.d_head, dtype=dt, device=model.W_E.device)
    k_mean = torch.zeros_like(q_mean)
    if not cfg.qk_norm:  # q, k linear in the normalised input: project its (weighted) mean
        n_mean = sum((p[c0:c0 + chunk, None] * _normalised_embeddings(model, c0, chunk, dt)).sum(0)
                     for c0 in range(0, cfg.d_vocab, chunk))
        for layer in range(L):
            q, k = _profile_qk(model, layer, n_mean[None], dt)
            q_mean[layer], k_mean[layer] = q[0], k[0]
    else:  # the q/k norms act per token: average the queries and keys themselves
        for c0 in range(0, cfg.d_vocab, chunk):
            x0, pw = _normalised_embeddings(model, c0, chunk, dt), p[c0:c0 + chunk, None, None]
            for layer in range(L):
                q, k = _profile_qk(model, layer, x0, dt)
                q_mean[layer] += (pw * q).sum(0)
                k_mean[layer] += (pw * k).sum(0)
    return torch.stack([_profile_at_offsets(cfg, layer, q_mean[layer], k_mean[layer], offs)
                        for layer in range(L)])


def _token_distribution(V: int, token_weights, dt: torch.dtype, device=None) -> torch.Tensor:
    """`[V]` probabilities: uniform, or `token_weights` normalised (checked)."""
    if token_weights is None:
        return torch.full((V,), 1.0 / V, dtype=dt, device=device)
    p = torch.as_tensor(token_weights, dtype=dt, device=device)
    if p.shape != (V,) or not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or float(p.sum()) <= 0:
        raise ValueError(f"token_weights must be {V} finite non-negative numbers, not all zero")
    return p / p.sum()


def _normalised_embeddings(model: Transformer, c0: int, chunk: int, dt: torch.dtype) -> torch.Tensor:
    """Embeddings `c0..c0+chunk` of `model` (times `embed_scale`) through a weight-free pre-norm, `[t, D]`."""
    cfg = model.cfg
    e = model.W_E.detach()[c0:c0 + chunk].to(dt) * cfg.embed_scale
    return model._norm(e, None, None) if cfg.pre_norm else e


def _profile_qk(model: Transformer, layer: int, x: torch.Tensor, dt: torch.dtype
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer `layer`'s queries and keys `[t, H, E]` (keys per query head) of normalised inputs `x [t, D]`:
    ln1's weight and bias, then `Transformer.project` (the forward pass's arithmetic) in `dt`."""
    cfg = model.cfg
    params = dict(model.named_parameters())
    if cfg.pre_norm:
        w, b = params.get("ln1_w"), params.get("ln1_b")
        x = x * w[layer].detach().to(dt) if w is not None else x
        x = x + b[layer].detach().to(dt) if b is not None else x
    q = model.project(x, layer, "q", dt)
    k = model.project(x, layer, "k", dt)  # [t, stored K/V heads, E]: normalised before they are shared
    if cfg.grouped_kv:
        k = k.repeat_interleave(cfg.kv_group_size, dim=1)
    return q, k


def _profile_at_offsets(cfg, layer: int, q_mean: torch.Tensor, k_mean: torch.Tensor, offs: list[int]
                        ) -> torch.Tensor:
    """`[H, n_offsets]`: `q̄ R_Δ k̄ᵀ / attn_scale` of one layer's mean query and key `[H, E]`."""
    H, dt = cfg.n_heads, q_mean.dtype
    lay = layer if cfg.rotary_base_sliding is not None else None
    a = rotary.angles(cfg, torch.tensor(offs), lay, torch.float64)
    s2 = rotary.attention_factor(cfg, lay) ** 2  # YaRN / LongRoPE: q and k each carry the factor (else 1)
    cos, sin = (a.cos() * s2).to(dt), (a.sin() * s2).to(dt)
    q_rot = rotary.rotate(q_mean[:, None, :].expand(H, len(offs), cfg.d_head), cos, sin, cfg)
    return (q_rot * k_mean[:, None, :]).sum(-1) / cfg.attn_scale


def trace_copying_score(model: Transformer) -> torch.Tensor:
    """`tr(W_OV) / ||W_OV||_F` per head, `[layer, head]` (the summary's score; unbounded, grows with
    d_model: views show `eigen_positivity` by default). NaN for a head whose OV circuit is zero (no value);
    an overflow to NaN/inf raises `NonFiniteResultError`."""
    ov = W_OV(model)
    norm = ov.norm()
    return check_finite_output("trace copying score", ov.trace() / norm, valid=norm != 0)
