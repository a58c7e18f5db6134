"""Q-, K- and V-composition scores between heads (docs/ARCHITECTURE.md §3).

For an earlier head h1 (layer l1) and a later head h2 (layer l2 > l1), row convention:

    Q: ||W_OV^{h1} W_QK^{h2}||_F   / (||W_OV^{h1}||_F ||W_QK^{h2}||_F)
    K: ||W_OV^{h1} W_QK^{h2 T}||_F / (||W_OV^{h1}||_F ||W_QK^{h2}||_F)
    V: ||W_OV^{h1} W_OV^{h2}||_F   / (||W_OV^{h1}||_F ||W_OV^{h2}||_F)

with `W_OV = W_V W_O` and `W_QK = W_Q W_K^T` (identical to TransformerLens' `all_composition_scores`).

How it is computed without any `d_model x d_model` product per pair: only Frobenius norms enter, and
`||x y||_F = ||F y||_F` for any `F` with `FᵀF = xᵀx`, so each `d_model x d_head` factor on the outside of
a product is replaced by a `d_head x d_head` one (`_sqrt_gram`: the Cholesky factor of the Gram matrix,
formed in float64; R of a QR would do as well, at several times the cost on a CPU). The earlier head's left
matrix `W_V W_O` becomes `F_V W_O` (`d_head x d_model`); the later head's right matrix `X Y` (`X = W_Q,
Y = W_K^T` for Q; `W_K, W_Q^T` for K; `W_V, W_O` for V; with the rotary offset matrix on the inside)
becomes `X T` with `T` a small per-head factor (`_factors`). A pair's numerator is the Frobenius norm of
`F_V (W_O X) T`: the `W_O X` blocks of all pairs come from one GEMM `[heads_l1 * d_head, d_model] @
[d_model, later heads * d_head]` per earlier layer, against the shared K/V heads on grouped-query models
(g times fewer FLOPs), then `T` per query head on `d_head x d_head` blocks. `composition_for_head` does
the same for the pairs of one head only.
LayerNorm models are folded first (see `prep`); biases do not enter.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch

from ..model import Transformer
from ..model.lazy import is_lazy
from . import streaming
from ._check import check_count, check_finite_output, check_layer_head
from .circuits import check_offset, keys_at, offset_matrices
from .factored import compute_dtype
from .prep import cached, weights

__all__ = ["HeadComposition", "composition_baseline", "composition_for_head", "composition_scores",
           "composition_scores_one_sided"]

Kind = Literal["q", "k", "v"]


def _kind(kind: str) -> str:
    k = kind.lower() if isinstance(kind, str) else kind
    if k not in ("q", "k", "v"):
        raise ValueError(f"kind={kind!r} is not one of 'q', 'k', 'v'")
    return k


def _r(x: torch.Tensor) -> torch.Tensor:
    """R of the reduced QR of `x [..., d_model, d_head]`, so that `x^T x = R^T R`."""
    return torch.linalg.qr(x, mode="r")[1]


def _sqrt_gram(x: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """`F [..., E, E]` with `FᵀF = xᵀx` for `x [..., D, E]`, returned in x's dtype: the Cholesky factor
    `Lᵀ` of the Gram matrix formed in float64 (for a singular Gram, e.g. a zero head, the symmetric
    square root `U Λ^½ Uᵀ` from `eigh`). Stands in for R of a QR wherever only norms `||F y|| = ||x y||`
    matter (module docstring). Measured on the Llama-3.2-1B shape (2,048 x 64 heads; 2-core CPU, load
    ~10): batched QR of W_V and W_Q per query head 12 s, batched eigh about the same, this 2.7 s for
    W_V, W_K (per K/V head) and W_Q, most of it the float64 copy and Gram (Cholesky itself 0.15 s).
    The float64 Gram of float32 data is exact to rounding, so F is as accurate as R; chunks of heads
    bound the float64 copy."""
    lead, (D, E) = x.shape[:-2], x.shape[-2:]
    out = []
    for xs in x.reshape(-1, D, E).split(chunk):
        xd = xs.to(torch.float64)
        G = xd.mT @ xd
        Lc, info = torch.linalg.cholesky_ex(G)
        F = Lc.mT
        bad = (info != 0).nonzero().flatten()
        if bad.numel():  # not positive definite: the symmetric square root, exact for any PSD matrix
            lam, U = torch.linalg.eigh(G[bad])
            F[bad] = (U * lam.clamp_min(0).sqrt()[:, None, :]) @ U.mT
        out.append(F)
    return torch.cat(out).reshape(*lead, E, E).to(x.dtype)


def _left_block(W_V: torch.Tensor, W_O: torch.Tensor) -> torch.Tensor:
    """`R_V W_O` `[..., d_head, d_model]`: same Frobenius geometry as `W_V W_O` acting on the right."""
    return _r(W_V) @ W_O


def _pair_norms(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """`||left[l1,h1] @ right[l2,h2]||_F` for l1 < l2, NaN elsewhere; `left [L,H,a,D]`, `right [L,H,D,b]`."""
    L, H, a, D = left.shape
    b = right.shape[-1]
    out = torch.full((L, H, L, H), float("nan"), dtype=left.dtype, device=left.device)
    rhs_all = right.permute(2, 0, 1, 3).reshape(D, L * H * b)  # one copy; each l1 reads a column slice
    for l1 in range(L - 1):
        n2 = L - l1 - 1
        prod = (left[l1].reshape(H * a, D) @ rhs_all[:, (l1 + 1) * H * b:]).view(H, a, n2, H, b)
        out[l1, :, l1 + 1:, :] = torch.linalg.vector_norm(prod, dim=(1, 4))
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


def _sqrt_grams(model: Transformer, name: str) -> torch.Tensor:
    """`_sqrt_gram` of every head's `W_Q`, `W_K`, `W_V` or `W_Oᵀ` (`name` "Q", "K", "V", "O"), per query
    head `[L, H, E, E]`, cached per model: with shared K/V heads computed once per K/V head."""
    def make(w: dict[str, torch.Tensor]) -> torch.Tensor:
        dt = compute_dtype(w["W_Q"].dtype)
        if name in ("K", "V") and f"_W_{name}" in w:
            return _sqrt_gram(w[f"_W_{name}"].to(dt))[:, _kv_index(model)]
        W = w[f"W_{name}"].to(dt)
        return _sqrt_gram(W.mT if name == "O" else W)

    return cached(model, ("composition sqrt gram", name), make)


def _kv_index(model: Transformer) -> torch.Tensor:
    """The K/V head each query head reads, `[H]`."""
    return torch.arange(model.cfg.n_heads) // model.cfg.kv_group_size


@torch.no_grad()
def _factors(model: Transformer, kind: str, off) -> dict[str, torch.Tensor]:
    """What every score of `kind` (at the checked offset `off`) is made of, cached per model:

    left (earlier head): `||W_OV M||_F = ||FV W_O M||_F` with `FV [L,H,E,E]` (`FVᵀFV = W_VᵀW_V`);
    right (later head): its right matrix `X Y` has the same Frobenius geometry on the left as
    `X[l, xi[h]] @ T[l, h]` with `X [L, n_x, D, E]` the raw factor (the shared K/V heads for K/V kinds
    on grouped-query models, n_x = n_kv, so that the big products run once per K/V head), `xi [H]`
    and `T [L,H,E,E]`: Q: `X = W_Q`, `T = M F_Kᵀ`; K: `X = W_K`, `T = Mᵀ F_Qᵀ`; V: `X = W_V`, `T = F_Oᵀ`,
    with `M` the rotary offset matrix (identity without rotary positions).
    Norms `ln [L,H] = ||W_OV||_F`, `rn [L,H] = ||X Y||_F`."""
    def make(w: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        dt = compute_dtype(w["W_Q"].dtype)
        H = model.cfg.n_heads
        grouped = "_W_K" in w
        M = offset_matrices(model, off, dt) if off is not None else None  # [L, 1, E, E]
        if kind == "q":
            X, xi, T = w["W_Q"].to(dt), torch.arange(H), _sqrt_grams(model, "K").mT
            T = T if M is None else M @ T
        else:
            name = "K" if kind == "k" else "V"
            X = w[f"_W_{name}" if grouped else f"W_{name}"].to(dt)
            xi = _kv_index(model) if grouped else torch.arange(H)
            T = _sqrt_grams(model, "Q" if kind == "k" else "O").mT
            T = M.mT @ T if (kind == "k" and M is not None) else T
        FV = _sqrt_grams(model, "V")
        W_O = w["W_O"].to(dt)
        ln = torch.stack([torch.linalg.matrix_norm(FV[l] @ W_O[l]) for l in range(model.cfg.n_layers)])
        FX = _sqrt_grams(model, {"q": "Q", "k": "K", "v": "V"}[kind])  # per query head: ||X T|| = ||FX T||
        rn = torch.linalg.matrix_norm(FX @ T)
        return {"X": X, "xi": xi, "T": T, "FV": FV, "W_O": W_O, "ln": ln, "rn": rn}

    return cached(model, ("composition factors", kind, off), make)


def _all_pair_norms(f: dict[str, torch.Tensor], max_bytes: float = 2**28) -> torch.Tensor:
    """Numerators `||W_OV^{h1} Right^{h2}||_F` `[L, H, L, H]` for l1 < l2 (NaN elsewhere) from `_factors`.

    One K/V head per group of g query heads (`X` shared): the big GEMM `[H E, D] @ [D, n_kv E]` per
    earlier layer runs against the K/V heads only (g times fewer FLOPs); each query head's own `T` is
    then applied on `E x E` blocks (batched GEMMs laid out so that no big operand is permuted), in
    chunks of later layers whose product stays under `max_bytes`. Otherwise `X T` is formed once per
    head and the pair norms are blocks of one GEMM per earlier layer."""
    X, xi, T, W_O = f["X"], f["xi"], f["T"], f["W_O"]
    L, n_x, D, E = X.shape
    H = T.shape[1]
    left = f["FV"] @ W_O  # [L, H, E, D]
    if n_x == H:
        return _pair_norms(left, X[:, xi] @ T)
    g = H // n_x
    out = torch.full((L, H, L, H), float("nan"), dtype=left.dtype, device=left.device)
    X_all = X.permute(0, 1, 3, 2).reshape(L * n_x * E, D)  # rows (layer, K/V head, e)
    Tt = T.mT.reshape(L, n_x, g * E, E)  # T[l, (k, j)]ᵀ stacked per K/V head: [L, n_x, g c, b]
    per_layer = n_x * g * E * H * E * left.element_size() * 2
    step = max(1, int(max_bytes // per_layer))
    for l1 in range(L - 1):
        lhsT = left[l1].reshape(H * E, D).T  # [D, H a] (a view: BLAS reads it transposed)
        for s in range(l1 + 1, L, step):
            e = min(s + step, L)
            n = e - s
            prodT = (X_all[s * n_x * E:e * n_x * E] @ lhsT).view(n * n_x, E, H * E)  # [(l2, k), b, (h1, a)]
            res = torch.bmm(Tt[s:e].reshape(n * n_x, g * E, E), prodT)  # [(l2, k), (j, c), (h1, a)]
            num = torch.linalg.vector_norm(res.view(n, n_x, g, E, H, E), dim=(3, 5))  # [l2, k, j, h1]
            out[l1, :, s:e, :] = num.reshape(n, H, H).permute(2, 0, 1)
    return out


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
    with torch.no_grad():
        f = _factors(model, kind, off)
        scores = _all_pair_norms(f) / (f["ln"][:, :, None, None] * f["rn"][None, None])
    if baseline:
        mean, _ = composition_baseline(model, kind)
        scores = scores - mean
    return _check_scores(f"composition scores ({kind})", scores)


class HeadComposition(NamedTuple):
    """One head's composition scores with every other head, both `[layer, head]` (NaN where no pair)."""

    into: torch.Tensor  # [l1, h1]: earlier head (l1, h1) -> this head (l1 < layer)
    out_of: torch.Tensor  # [l2, h2]: this head -> later head (l2, h2) (l2 > layer)


def composition_for_head(model: Transformer, layer: int, head: int, kind: Kind = "q", baseline: bool = False,
                         offset=None) -> HeadComposition:
    """`composition_scores(model, kind, baseline, offset)` restricted to the pairs that contain head
    (layer, head): `into[l1, h1] = scores[l1, h1, layer, head]` and `out_of[l2, h2] = scores[layer, head,
    l2, h2]`, without computing the other pairs (one pass over the weights instead of all
    `(L H)^2 / 2` pairs; the per-head factors are cached per model, kind and offset).
    What a view of a big model needs when one head is selected."""
    model = streaming.resolve(model)
    if is_lazy(model):  # streamed checkpoints: the full scores (computed layer by layer), sliced
        s = composition_scores(model, kind, baseline, offset)
        layer, head = check_layer_head(model, layer, head)
        return HeadComposition(s[:, :, layer, head], s[layer, head])
    kind = _kind(kind)
    off = _offset(model, kind, offset)
    layer, head = check_layer_head(model, layer, head)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    with torch.no_grad():
        f = _factors(model, kind, off)
        X, xi, T, FV, W_O, ln, rn = (f[k] for k in ("X", "xi", "T", "FV", "W_O", "ln", "rn"))
        into = torch.full((L, H), float("nan"), dtype=ln.dtype, device=ln.device)
        out_of = torch.full_like(into, float("nan"))
        if layer > 0:  # earlier heads i: ||FV_i (W_O_i X_S) T_S||
            right = X[layer, int(xi[head])] @ T[layer, head]  # [D, E]
            num = torch.linalg.matrix_norm(FV[:layer] @ (W_O[:layer] @ right))
            into[:layer] = num / (ln[:layer] * rn[layer, head])
        if layer < L - 1:  # later heads j: ||(FV_S W_O_S X_j) T_j||
            left = FV[layer, head] @ W_O[layer, head]  # [E, D]
            num = torch.linalg.matrix_norm((left @ X[layer + 1:])[:, xi] @ T[layer + 1:])
            out_of[layer + 1:] = num / (ln[layer, head] * rn[layer + 1:])
        if baseline:
            mean, _ = composition_baseline(model, kind)
            into, out_of = into - mean, out_of - mean
    ar = torch.arange(L, device=into.device)[:, None].expand(L, H)
    name = f"composition scores ({kind}) of L{layer}H{head}"
    return HeadComposition(check_finite_output(f"{name} with earlier heads", into, valid=ar < layer),
                           check_finite_output(f"{name} with later heads", out_of, valid=ar > layer))


def top_composition_pairs(scores: torch.Tensor, k: int = 10) -> list[tuple[tuple[int, int], tuple[int, int], float]]:
    """The `k` largest entries of a `[L, H, L, H]` score tensor over the valid pairs (layer1 < layer2;
    NaN entries ignored), strongest first: `[((layer1, head1), (layer2, head2), score), ...]`. Ties keep
    index order. Fewer than `k` when fewer valid pairs exist."""
    if scores.dim() != 4 or scores.shape[0] != scores.shape[2] or scores.shape[1] != scores.shape[3]:
        raise ValueError(f"scores must be [L, H, L, H], got {tuple(scores.shape)}")
    k = check_count(k, "k", 0)
    L, H = scores.shape[:2]
    ar = torch.arange(L, device=scores.device)
    valid = (ar[:, None] < ar[None, :])[:, None, :, None].expand(L, H, L, H) & ~torch.isnan(scores)
    flat = scores.reshape(-1).to(torch.float64)
    idx = valid.reshape(-1).nonzero().squeeze(1)
    order = torch.sort(flat[idx], descending=True, stable=True).indices[:k]
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
    n_samples = check_count(n_samples, "n_samples", 2)  # the std of one sample is NaN
    cfg = model.cfg
    key = (cfg.d_model, cfg.d_head, n_samples, seed)
    if key not in _BASELINES:
        s = random_composition_scores(cfg.d_model, cfg.d_head, n_samples, seed)
        _BASELINES[key] = (float(s.mean()), float(s.std()))
    return _BASELINES[key]
