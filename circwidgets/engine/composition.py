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
def _weights(model: Transformer) -> tuple[torch.Tensor, ...]:
    w = weights(model)
    dt = compute_dtype(w["W_Q"].dtype)
    return tuple(w[n].to(dt) for n in ("W_Q", "W_K", "W_V", "W_O"))


@torch.no_grad()
def _raw_scores(W_Q, W_K, W_V, W_O, kind: str) -> torch.Tensor:
    left = _left_block(W_V, W_O)
    right = _right_block(kind, W_Q, W_K, W_V, W_O)
    num = _pair_norms(left, right)
    ln = torch.linalg.matrix_norm(left)  # ||W_OV^{h1}||_F  [L, H]
    rn = torch.linalg.matrix_norm(right)  # ||right^{h2}||_F [L, H]
    return num / (ln[:, :, None, None] * rn[None, None])


def composition_scores(model: Transformer, kind: Kind = "q", baseline: bool = False) -> torch.Tensor:
    """Normalised composition scores `[layer1, head1, layer2, head2]` (NaN where layer1 >= layer2).

    `kind`: "q", "k" or "v" (module docstring). Raw scores lie in [0, 1] and equal TransformerLens'
    `all_composition_scores`. `baseline=True` subtracts the mean score of random matrices of the same
    shapes (`composition_baseline`), as the paper does, so that 0 means "no more than chance".
    """
    model = streaming.resolve(model)  # nnsight / HF models: their weights (lazily where possible)
    if is_lazy(model):  # a checkpoint read layer by layer
        return streaming.composition_scores(model, kind, baseline)
    kind = _kind(kind)
    scores = _raw_scores(*_weights(model), kind)
    if baseline:
        mean, _ = composition_baseline(model, kind)
        scores = scores - mean
    return _check_scores(f"composition scores ({kind})", scores)


def _check_scores(name: str, scores: torch.Tensor) -> torch.Tensor:
    """NaN/inf where layer1 < layer2 (where a score exists) is an overflow: an error naming the pair."""
    L = scores.shape[0]
    ar = torch.arange(L, device=scores.device)
    valid = (ar[:, None] < ar[None, :])[:, None, :, None]
    return check_finite_output(name, scores, axes=("layer1", "head1", "layer2", "head2"), valid=valid)


def composition_scores_one_sided(model: Transformer, kind: Kind = "q") -> torch.Tensor:
    """The summary's unnormalised variant `||W_OV^{h1} W_X^{h2}||_F`, X = Q, K or V, `[L, H, L, H]`.

    It reads only one side of the later head's QK (or OV) circuit and is not scale free; the default
    score is `composition_scores`. NaN where layer1 >= layer2.
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
    from tqdm.auto import tqdm

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
