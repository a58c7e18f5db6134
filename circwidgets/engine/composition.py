"""Q-, K- and V-composition scores between heads (docs/ARCHITECTURE.md §3).

For an earlier head h1 (layer l1) and a later head h2 (layer l2 > l1), row convention:

    Q: ||W_OV^{h1} W_QK^{h2}||_F   / (||W_OV^{h1}||_F ||W_QK^{h2}||_F)
    K: ||W_OV^{h1} W_QK^{h2 T}||_F / (||W_OV^{h1}||_F ||W_QK^{h2}||_F)
    V: ||W_OV^{h1} W_OV^{h2}||_F   / (||W_OV^{h1}||_F ||W_OV^{h2}||_F)

with `W_OV = W_V W_O` and `W_QK = W_Q W_K^T` (identical to TransformerLens' `all_composition_scores`).

How it is computed without any `d_model x d_model` product per pair: write the left matrix as
`W_V W_O = Q_V (R_V W_O)` (reduced QR of `W_V`); `Q_V` has orthonormal columns, so it drops out of
every Frobenius norm and the left matrix is replaced by the `d_head x d_model` block `R_V W_O`.
Likewise the right matrix `X Y` (`X = W_Q, Y = W_K^T` for Q; `W_K, W_Q^T` for K; `W_V, W_O` for V)
becomes the `d_model x d_head` block `X R_{Y^T}^T`. A pair's numerator is then the Frobenius norm of a
`d_head x d_head` block of one GEMM `[heads_l1 * d_head, d_model] @ [d_model, later heads * d_head]`,
done one earlier layer at a time (peak memory a few tens of MB at GPT-2-small size).
LayerNorm models are folded first (see `prep`); biases do not enter.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from ..model import Transformer
from ..model.lazy import is_lazy
from . import streaming
from ._check import check_finite_output
from .circuits import check_offset, keys_at, offset_matrices
from .factored import compute_dtype
from .prep import weights

__all__ = ["composition_baseline", "composition_scores", "composition_scores_one_sided"]

Kind = Literal["q", "k", "v"]


def _kind(kind: str) -> str:
    k = kind.lower() if isinstance(kind, str) else kind
    if k not in ("q", "k", "v"):
        raise ValueError(f"kind={kind!r} is not one of 'q', 'k', 'v'")
    return k


def _r(x: torch.Tensor) -> torch.Tensor:
    """R of the reduced QR of `x [..., d_model, d_head]`, so that `x^T x = R^T R`."""
    return torch.linalg.qr(x, mode="r")[1]


def _left_block(W_V: torch.Tensor, W_O: torch.Tensor) -> torch.Tensor:
    """`R_V W_O` `[..., d_head, d_model]`: same Frobenius geometry as `W_V W_O` acting on the right."""
    return _r(W_V) @ W_O


def _right_block(kind: str, W_Q, W_K, W_V, W_O) -> torch.Tensor:
    """`X R_{Y^T}^T` `[..., d_model, d_head]` for the later head's right matrix `X Y`."""
    if kind == "q":
        return W_Q @ _r(W_K).mT
    if kind == "k":
        return W_K @ _r(W_Q).mT
    return W_V @ _r(W_O.mT).mT


def _pair_norms(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """`||left[l1,h1] @ right[l2,h2]||_F` for l1 < l2, NaN elsewhere; `left [L,H,a,D]`, `right [L,H,D,b]`."""
    L, H, a, D = left.shape
    b = right.shape[-1]
    out = torch.full((L, H, L, H), float("nan"), dtype=left.dtype, device=left.device)
    for l1 in range(L - 1):
        n2 = L - l1 - 1
        lhs = left[l1].reshape(H * a, D)
        rhs = right[l1 + 1:].permute(2, 0, 1, 3).reshape(D, n2 * H * b)
        prod = (lhs @ rhs).view(H, a, n2, H, b)
        out[l1, :, l1 + 1:, :] = prod.square().sum((1, 4)).sqrt()
    return out


@torch.no_grad()
def _weights(model: Transformer, offset=None) -> tuple[torch.Tensor, ...]:
    """`W_Q, W_K, W_V, W_O` per query head in the compute dtype; `W_K` as the QK circuit at `offset`
    reads it (rotary models: `W_K R_Δᵀ`, so that `W_Q W_Kᵀ` is `W_QK(Δ)`)."""
    w = weights(model)
    dt = compute_dtype(w["W_Q"].dtype)
    W_K = w["W_K"] if offset is None else keys_at(model, offset)
    return w["W_Q"].to(dt), W_K.to(dt), w["W_V"].to(dt), w["W_O"].to(dt)


def _offset(model: Transformer, kind: str, offset):
    """The offset a composition score of `kind` needs: required for Q/K on rotary models (their W_QK
    depends on it), ignored for V there, refused for models without rotary positions."""
    if model.cfg.positional == "rotary" and kind == "v":
        if offset is not None:
            check_offset(model, offset, "V-composition")
        return None
    return check_offset(model, offset, f"{kind.upper()}-composition")


def _pair_norms_grouped(left: torch.Tensor, shared: torch.Tensor, per_head: torch.Tensor) -> torch.Tensor:
    """`_pair_norms(left, right)` for a right block `right[l, h] = shared[l, h // g] @ per_head[l, h]`
    whose `d_model`-side factor is shared by groups of g heads (grouped-query K/V): the big GEMM runs
    against the K/V heads only (g times fewer FLOPs), then each group member's small `d_head x d_head`
    factor is applied. `left [L,H,a,D]`, `shared [L,K,D,b]`, `per_head [L,H,b,c]`."""
    L, H, a, D = left.shape
    K, b = shared.shape[1], shared.shape[-1]
    g, c = H // K, per_head.shape[-1]
    out = torch.full((L, H, L, H), float("nan"), dtype=left.dtype, device=left.device)
    for l1 in range(L - 1):
        n2 = L - l1 - 1
        lhs = left[l1].reshape(H * a, D)
        rhs = shared[l1 + 1:].permute(2, 0, 1, 3).reshape(D, n2 * K * b)
        prod = (lhs @ rhs).view(H, a, n2, K, b)
        full = torch.einsum("hankb,nkgbc->hankgc", prod, per_head[l1 + 1:].reshape(n2, K, g, b, c))
        out[l1, :, l1 + 1:, :] = full.square().sum((1, 5)).sqrt().reshape(H, n2, H)
    return out


@torch.no_grad()
def _raw_scores(W_Q, W_K, W_V, W_O, kind: str, shared: torch.Tensor | None = None) -> torch.Tensor:
    """Scores `[L, H, L, H]`; `shared`: for K/V kinds on grouped-query models, the shared K (kind "k",
    rotated to the offset) or V ("v") heads `[L, n_kv, D, E]`, so the pair GEMM runs per K/V head."""
    left = _left_block(W_V, W_O)
    ln = torch.linalg.matrix_norm(left)  # ||W_OV^{h1}||_F  [L, H]
    if shared is not None and kind in ("k", "v"):
        per_head = _r(W_Q).mT if kind == "k" else _r(W_O.mT).mT  # [L, H, E, E]
        num = _pair_norms_grouped(left, shared, per_head)
        g = W_Q.shape[1] // shared.shape[1]
        gram = (shared.mT @ shared).repeat_interleave(g, dim=1)  # X^T X per query head [L, H, E, E]
        rn = ((per_head.mT @ gram) * per_head.mT).sum((-2, -1)).clamp_min(0).sqrt()  # ||X Y||_F
        return num / (ln[:, :, None, None] * rn[None, None])
    right = _right_block(kind, W_Q, W_K, W_V, W_O)
    num = _pair_norms(left, right)
    rn = torch.linalg.matrix_norm(right)  # ||right^{h2}||_F [L, H]
    return num / (ln[:, :, None, None] * rn[None, None])


@torch.no_grad()
def _shared_kv(model: Transformer, kind: str, offset) -> torch.Tensor | None:
    """The shared K (at `offset`) or V heads of a grouped-query model, compute dtype; None otherwise."""
    w = weights(model)
    if kind not in ("k", "v") or "_W_K" not in w:
        return None
    dt = compute_dtype(w["W_Q"].dtype)
    if kind == "v":
        return w["_W_V"].to(dt)
    K = w["_W_K"].to(dt)
    return K if offset is None else K @ offset_matrices(model, offset, dt).mT


def composition_scores(model: Transformer, kind: Kind = "q", baseline: bool = False, offset=None) -> torch.Tensor:
    """Normalised composition scores `[layer1, head1, layer2, head2]` (NaN where layer1 >= layer2).

    The NaN entries are pairs that cannot compose (the later head must sit in a later layer), so
    `scores.argmax()` is meaningless (it lands on a NaN); `top_composition_pairs(scores, k)` lists the
    k strongest valid pairs.
    `kind`: "q", "k" or "v" (module docstring). Raw scores lie in [0, 1] and equal TransformerLens'
    `all_composition_scores`. `baseline=True` subtracts the mean score of random matrices of the same
    shapes (`composition_baseline`), as the paper does, so that 0 means "no more than chance".

    Rotary models: the later head's QK circuit is `W_QK(Δ) = W_Q R_Δ W_Kᵀ`, so Q- and K-scores need
    `offset=Δ` (the query − key distance at which the later head's scores are read, an int >= 0, or
    a sequence of offsets to average its circuit over); V-scores do not depend on it.
    Grouped-query K/V: a later head's K (and V) input is its group's shared K/V head, so every head of
    a group shares the K- (V-) composition with a given earlier head
    through the same `W_K` (`W_V`); the scores are per query head, exactly those of the model with the
    K/V heads copied out. Per-head q/k norms are folded into `W_Q`/`W_K` (exact up to positive
    per-token factors).
    """
    model = streaming.resolve(model)  # nnsight / HF models: their weights (lazily where possible)
    if is_lazy(model):  # a checkpoint read layer by layer
        return streaming.composition_scores(model, kind, baseline, offset)
    kind = _kind(kind)
    off = _offset(model, kind, offset)
    shared = _shared_kv(model, kind, off)
    # with shared K/V heads the per-query-head keys are not read: no need to rotate them
    scores = _raw_scores(*_weights(model, off if shared is None else None), kind, shared=shared)
    if baseline:
        mean, _ = composition_baseline(model, kind)
        scores = scores - mean
    return _check_scores(f"composition scores ({kind})", scores)


def top_composition_pairs(scores: torch.Tensor, k: int = 10) -> list[tuple[tuple[int, int], tuple[int, int], float]]:
    """The `k` largest entries of a `[L, H, L, H]` score tensor over the valid pairs (layer1 < layer2;
    NaN entries ignored), strongest first: `[((layer1, head1), (layer2, head2), score), ...]`. Ties keep
    index order. Fewer than `k` when fewer valid pairs exist."""
    if scores.dim() != 4 or scores.shape[0] != scores.shape[2] or scores.shape[1] != scores.shape[3]:
        raise ValueError(f"scores must be [L, H, L, H], got {tuple(scores.shape)}")
    L, H = scores.shape[:2]
    ar = torch.arange(L, device=scores.device)
    valid = (ar[:, None] < ar[None, :])[:, None, :, None].expand(L, H, L, H) & ~torch.isnan(scores)
    flat = scores.reshape(-1).to(torch.float64)
    idx = valid.reshape(-1).nonzero().squeeze(1)
    order = torch.sort(flat[idx], descending=True, stable=True).indices[: max(int(k), 0)]
    out = []
    for i in idx[order].tolist():
        l1, h1, l2, h2 = (i // (H * L * H), (i // (L * H)) % H, (i // H) % L, i % H)
        out.append(((l1, h1), (l2, h2), float(flat[i])))
    return out


def _check_scores(name: str, scores: torch.Tensor) -> torch.Tensor:
    """NaN/inf where layer1 < layer2 (where a score exists) is an overflow: an error naming the pair."""
    L = scores.shape[0]
    ar = torch.arange(L, device=scores.device)
    valid = (ar[:, None] < ar[None, :])[:, None, :, None]
    return check_finite_output(name, scores, axes=("layer1", "head1", "layer2", "head2"), valid=valid)


def composition_scores_one_sided(model: Transformer, kind: Kind = "q") -> torch.Tensor:
    """The summary's unnormalised variant `||W_OV^{h1} W_X^{h2}||_F`, X = Q, K or V, `[L, H, L, H]`.

    It reads only one side of the later head's QK (or OV) circuit and is not scale free; the default
    score is `composition_scores`. NaN where layer1 >= layer2. Needs no rotary offset: `R_Δ` acts
    on the other side of `W_Q` / `W_K` and is orthogonal, so it leaves these norms unchanged.
    """
    kind = _kind(kind)
    W_Q, W_K, W_V, W_O = _weights(model)
    right = {"q": W_Q, "k": W_K, "v": W_V}[kind]
    with torch.no_grad():
        return _check_scores(f"one-sided composition scores ({kind})", _pair_norms(_left_block(W_V, W_O), right))


_BASELINES: dict[tuple, tuple[float, float]] = {}


@torch.no_grad()
def random_composition_scores(d_model: int, d_head: int, n_samples: int = 128, seed: int = 0,
                              dtype: torch.dtype = torch.float32, chunk: int = 32) -> torch.Tensor:
    """Scores `[n_samples]` of random pairs: left `X1 Y1`, right `X2 Y2`, all factors i.i.d. Gaussian
    with shapes `[d_model, d_head]` / `[d_head, d_model]`.

    The same distribution serves all three kinds: every right matrix (`W_Q W_K^T`, its transpose,
    `W_V W_O`) is such a product. Progress bar when the work is large.
    """
    from ._progress import tqdm

    g = torch.Generator().manual_seed(seed)
    out = []
    n_chunks = math.ceil(n_samples / chunk)
    big = n_samples * d_model * d_head * d_head > 2e8
    for i in tqdm(range(n_chunks), desc="composition baseline", disable=not big):
        n = min(chunk, n_samples - i * chunk)
        X1, X2, Y1t, Y2t = (torch.randn(n, d_model, d_head, generator=g, dtype=dtype) for _ in range(4))
        left = _r(X1) @ Y1t.mT  # [n, E, D]
        right = X2 @ _r(Y2t).mT  # [n, D, E]
        num = torch.linalg.matrix_norm(left @ right)
        out.append(num / (torch.linalg.matrix_norm(left) * torch.linalg.matrix_norm(right)))
    return torch.cat(out)


def composition_baseline(model: Transformer, kind: Kind = "q", n_samples: int = 128, seed: int = 0
                         ) -> tuple[float, float]:
    """`(mean, std)` of the composition score of random matrices of this model's shapes.

    Computed once per `(d_model, d_head, n_samples, seed)` and cached for the session; the same for
    all kinds (see `random_composition_scores`). Measured: the mean is close to `1/sqrt(d_model)`
    (0.036 at d_model 768, d_head 64; std 0.0004). The std is the spread between random pairs,
    useful to read a baseline-subtracted score in units of chance.
    """
    _kind(kind)
    cfg = model.cfg
    key = (cfg.d_model, cfg.d_head, n_samples, seed)
    if key not in _BASELINES:
        s = random_composition_scores(cfg.d_model, cfg.d_head, n_samples, seed)
        _BASELINES[key] = (float(s.mean()), float(s.std()))
    return _BASELINES[key]
