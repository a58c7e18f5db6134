"""Virtual weights between components and virtual attention heads (docs/ARCHITECTURE.md §4-5).

Components (row convention: a component reads `x @ W_in` from the residual stream and writes
`a @ W_out` into it) are named by tuples:

| spec | reads `W_in` | writes `W_out` | position in the stream |
| --- | --- | --- | --- |
| `("embed",)` | - | `W_E [d_vocab, d_model]` | first |
| `("pos",)` | - | `W_pos [n_ctx, d_model]` | first |
| `("head", l, h)` | `W_V [d_model, d_head]` (`W_Q`/`W_K`: `("head", l, h, "q"/"k")`) | `W_O` | layer l, attention |
| `("mlp", l)` | `W_in [d_model, d_mlp]` | `W_out [d_mlp, d_model]` | layer l, after attention |
| `("unembed",)` | `W_U [d_model, d_vocab]` | - | last |

Bare strings "embed", "pos", "unembed" are accepted too. Heads of one layer act in parallel, so
none of them lies between two others of the same layer.

Virtual weights from `src` to `dst` (src strictly before dst), with k running over the components
strictly between them:
- first order (the summary's formula): `W_out^src (I + sum_k W_in^k W_out^k) W_in^dst`;
- exact for the linear part (`order=None`): `W_out^src prod_layers (I + sum_{heads h} W_V^h W_O^h)
  (I + W_in^mlp W_out^mlp) W_in^dst` - heads of one layer enter as one sum, since they read the
  same residual stream.
Both are linear approximations of the network: attention patterns are ignored (each head acts as
its OV matrix), MLP nonlinearities are dropped (`W_in W_out`), and for LN models the per-token LN
scales are ignored (weights are read after LN folding, see `prep`). Biases are not part of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch

from ..model import ActivationCache, Transformer
from ..model.lazy import is_lazy
from . import streaming
from ._check import check_finite_output, check_layer, check_layer_head
from .factored import FactoredMatrix, compute_dtype
from .patterns import AttentionData
from .prep import weights

__all__ = ["VirtualHead", "VirtualWeights", "component", "virtual_heads", "virtual_weights"]


def component(model: Transformer, spec) -> tuple:
    """Validate a component spec and return it in canonical tuple form."""
    if isinstance(spec, str):
        spec = (spec,)
    if not isinstance(spec, tuple) or not spec:
        raise ValueError(f"component spec {spec!r} must be a tuple like ('head', layer, head), ('mlp', layer), "
                         "('embed',), ('pos',) or ('unembed',)")
    kind = spec[0]
    if kind in ("embed", "unembed", "pos") and len(spec) == 1:
        if kind == "pos" and model.cfg.positional != "standard":
            raise ValueError(f"component ('pos',) needs positional='standard' (this model: {model.cfg.positional!r})")
        return spec
    if kind == "head" and len(spec) in (3, 4):
        l, h = check_layer_head(model, spec[1], spec[2])
        side = spec[3] if len(spec) == 4 else "v"
        if side not in ("q", "k", "v"):
            raise ValueError(f"head component read side {side!r} must be 'q', 'k' or 'v'")
        return ("head", l, h, side)
    if kind == "mlp" and len(spec) == 2:
        if model.cfg.attn_only:
            raise ValueError("component ('mlp', layer): this model is attention-only")
        return ("mlp", check_layer(model, spec[1]))
    raise ValueError(f"component spec {spec!r} not understood: use ('head', layer, head[, 'q'|'k'|'v']), "
                     "('mlp', layer), ('embed',), ('pos',) or ('unembed',)")


def _position(model: Transformer, c: tuple) -> int:
    if c[0] in ("embed", "pos"):
        return 0
    if c[0] == "head":
        return 2 * c[1] + 1
    if c[0] == "mlp":
        return 2 * c[1] + 2
    return 2 * model.cfg.n_layers + 1


def _label(c: tuple) -> str:
    if c[0] == "head":
        return f"L{c[1]}H{c[2]}" + ("" if c[3] == "v" else f".{c[3]}")
    if c[0] == "mlp":
        return f"MLP{c[1]}"
    return c[0]


def _w_out(w: dict, c: tuple, dt) -> torch.Tensor:
    if c[0] == "embed":
        return w["W_E"].to(dt)
    if c[0] == "pos":
        return w["W_pos"].to(dt)
    if c[0] == "head":
        return w["W_O"][c[1], c[2]].to(dt)
    if c[0] == "mlp":
        return w["W_out"][c[1]].to(dt)
    raise ValueError("src=('unembed',) does not write to the residual stream; it can only be dst")


def _w_in(w: dict, c: tuple, dt) -> torch.Tensor:
    if c[0] == "unembed":
        return w["W_U"].to(dt)
    if c[0] == "head":
        return w[f"W_{c[3].upper()}"][c[1], c[2]].to(dt)
    if c[0] == "mlp":
        return w["W_in"][c[1]].to(dt)
    raise ValueError(f"dst={c!r} does not read from the residual stream; it can only be src")


def _stage_maps(cfg, w: dict, lo: int, hi: int, dt) -> list[torch.Tensor]:
    """`sum_k W_in^k W_out^k` `[d_model, d_model]` of every stage (a layer's heads, or an MLP) with
    stream position in (lo, hi), in order."""
    out = []
    for l in range(cfg.n_layers):
        if lo < 2 * l + 1 < hi:
            W_V, W_O = w["W_V"][l].to(dt), w["W_O"][l].to(dt)  # [H, D, E], [H, E, D]
            H, D, E = W_V.shape
            out.append(W_V.permute(1, 0, 2).reshape(D, H * E) @ W_O.reshape(H * E, D))
        if not cfg.attn_only and lo < 2 * l + 2 < hi:
            out.append(w["W_in"][l].to(dt) @ w["W_out"][l].to(dt))
    return out


@dataclass
class VirtualWeights:
    """Virtual weights from `src` to `dst`: `matrix` `[d_src, d_dst]` (a `FactoredMatrix`).

    `d_src` is the size of what the source writes from (d_vocab for embed, d_head for a head, d_mlp
    for an MLP); `d_dst` the size of what the destination reads into.
    """

    src: tuple
    dst: tuple
    order: int | None
    matrix: FactoredMatrix
    w_out: torch.Tensor = field(repr=False)  # W_out of src [d_src, d_model]
    w_in: torch.Tensor = field(repr=False)  # W_in of dst [d_model, d_dst]

    @property
    def label(self) -> str:
        return f"{_label(self.src)} -> {_label(self.dst)}"

    @cached_property
    def _svd(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.matrix.svd()

    def svd(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`U [d_src, r]`, `S [r]`, `Vh [r, d_dst]` (thin, descending), `matrix = U diag(S) Vh`."""
        return self._svd

    @property
    def singular_values(self) -> torch.Tensor:
        return self._svd[1]

    def effective_rank(self) -> float:
        """Roy & Vetterli (2007) effective rank: `exp(H(p))`, `p_i = s_i / sum_j s_j` over singular values.

        Between 1 (one direction carries everything) and the number of nonzero singular values
        (all equal). 0 for a zero matrix.
        """
        s = self.singular_values
        total = s.sum()
        if total <= 0:
            return 0.0
        p = s / total
        p = p[p > 0]
        return float(torch.exp(-(p * p.log()).sum()))

    def numerical_rank(self, rtol: float | None = None) -> int:
        """Number of singular values above `rtol * s_max` (default `max(shape) * eps`, as numpy)."""
        s = self.singular_values
        if rtol is None:
            rtol = max(self.matrix.ldim, self.matrix.rdim) * torch.finfo(s.dtype).eps
        return int((s > rtol * s.max()).sum()) if s.numel() and s.max() > 0 else 0

    def src_directions(self, k: int | None = None) -> torch.Tensor:
        """Top-k left singular vectors as rows `[k, d_src]`: what the source must write from
        (e.g. token directions for embed) to be read, strongest first."""
        return self._svd[0][:, :k].T

    def dst_directions(self, k: int | None = None) -> torch.Tensor:
        """Top-k right singular vectors `[k, d_dst]`: where in its own input the destination receives."""
        return self._svd[2][:k]

    def write_subspace(self, k: int | None = None) -> torch.Tensor:
        """Unit residual-stream directions `[k, d_model]` the source writes along for the top-k
        singular components (`u_r^T W_out^src`, normalised), strongest first."""
        d = self._svd[0][:, :k].T @ self.w_out
        return d / d.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(d.dtype).tiny)

    def read_subspace(self, k: int | None = None) -> torch.Tensor:
        """Unit residual-stream directions `[k, d_model]` the destination reads for the top-k singular
        components (`(W_in^dst v_r)^T`, normalised): reading along them yields `v_r`'s coordinates."""
        d = (self.w_in @ self._svd[2][:k].mT).mT
        return d / d.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(d.dtype).tiny)


@torch.no_grad()
def virtual_weights(model: Transformer, src, dst, order: int | None = 1) -> VirtualWeights:
    """Virtual weights from component `src` to a later component `dst` (module docstring).

    `order=1`: first order `W_out^src (I + sum_k W_in^k W_out^k) W_in^dst`; `order=0`: the direct
    term `W_out^src W_in^dst` only; `order=None`: the exact product over the layers in between.
    The middle `d_model x d_model` matrix is formed densely; the result stays factored (never
    `d_vocab x d_vocab` for embed -> unembed).
    """
    model = streaming.resolve(model)  # nnsight / HF models: their weights (lazily where possible)
    if is_lazy(model):  # a checkpoint read layer by layer
        return streaming.virtual_weights(model, src, dst, order)
    w = weights(model)
    s, d = component(model, src), component(model, dst)
    if order not in (None, 0, 1):
        raise ValueError(f"order={order!r} must be 1 (first order), 0 (direct only) or None (exact)")
    dt = compute_dtype(w["W_E"].dtype)
    w_out, w_in = _w_out(w, s, dt), _w_in(w, d, dt)
    ps, pd = _position(model, s), _position(model, d)
    if not ps < pd:
        raise ValueError(f"src={s!r} must come strictly before dst={d!r} in the residual stream "
                         "(heads of one layer are parallel)")
    stages = _stage_maps(model.cfg, w, ps, pd, dt) if order != 0 else []
    if not stages:
        fm = FactoredMatrix(w_out, w_in)
    else:
        eye = torch.eye(model.cfg.d_model, dtype=dt, device=w_out.device)
        if order == 1:
            mid = eye + sum(stages)
        else:
            mid = eye
            for st in stages:  # x -> x (I + S): stages apply left to right in row convention
                mid = mid + mid @ st
        fm = FactoredMatrix(w_out, mid, w_in)
    return VirtualWeights(s, d, order, fm, w_out, w_in)


@dataclass
class VirtualHead:
    """Virtual attention head h1 -> h2: `pattern` `[batch, query, key]` = `A^{h2} A^{h1}` and
    `ov` = `W_OV^{h1} W_OV^{h2}` (`FactoredMatrix [d_model, d_model]`, rank <= d_head)."""

    head1: tuple[int, int]
    head2: tuple[int, int]
    pattern: torch.Tensor
    ov: FactoredMatrix

    def full_ov(self, model: Transformer) -> FactoredMatrix:
        """`W_E W_OV^{h1} W_OV^{h2} W_U` `[d_vocab, d_vocab]`, factored."""
        w = weights(model)
        dt = self.ov.dtype
        return FactoredMatrix(w["W_E"].to(dt), self.ov, w["W_U"].to(dt))


@torch.no_grad()
def virtual_heads(model: Transformer, cache_or_tokens, head1: tuple[int, int], head2: tuple[int, int]) -> VirtualHead:
    """Virtual head from `head1 = (l1, h1)` into `head2 = (l2, h2)`, l1 < l2.

    `cache_or_tokens`: patterns already computed (an `ActivationCache` of this model, or the
    `AttentionData` of `patterns.attention_patterns`, one sequence: batch 1), or token ids
    `[batch, pos]` (the model is run once). The pattern is the attention of the composed path: the
    value at key k reaches query q through every intermediate position m, `sum_m A2[q, m] A1[m, k]`.
    """
    from ..model.nnsight_source import as_source, is_source

    runs = model  # what runs on tokens (an nnsight / HF model: through its activation source)
    model = streaming.resolve(model)  # the weights
    l1, h1 = check_layer_head(model, *head1)
    l2, h2 = check_layer_head(model, *head2)
    if not l1 < l2:
        raise ValueError(f"head1={head1!r} must be in an earlier layer than head2={head2!r}")
    toks = None  # the tokens of an in-memory model's own run (to locate an overflow)
    if isinstance(cache_or_tokens, AttentionData):
        A1, A2 = cache_or_tokens.pattern[l1, h1][None], cache_or_tokens.pattern[l2, h2][None]
    else:
        if isinstance(cache_or_tokens, ActivationCache):
            cache = cache_or_tokens
        elif is_lazy(runs) or is_source(runs):  # layer by layer (lazy) or one trace: the two patterns only
            src = as_source(runs)
            pats = src.patterns(src.check_tokens(cache_or_tokens), [l1, l2])
            cache = {("pattern", l): p for l, p in pats.items()}
        else:
            toks = model.check_tokens(cache_or_tokens)
            _, cache = model.run_with_cache(toks)  # patterns: the same with or without LN folding
        A1, A2 = cache["pattern", l1][:, h1], cache["pattern", l2][:, h2]
    pattern = A2 @ A1  # head 1 mixes positions first, then head 2
    check_finite_output(f"virtual head L{l1}H{h1}->L{l2}H{h2} pattern", pattern, axes=("batch",),
                        model=model if toks is not None else None, tokens=toks)
    if is_lazy(model):  # a checkpoint read layer by layer: the two layers' folded weights only
        w1, w2 = model.layer_weights(l1), model.layer_weights(l2)
        cfg = model.cfg
        ov = FactoredMatrix(w1["W_V"][cfg.kv_head_of(h1)], w1["W_O"][h1], w2["W_V"][cfg.kv_head_of(h2)], w2["W_O"][h2])
        return VirtualHead((l1, h1), (l2, h2), pattern, ov)
    dt = compute_dtype(weights(model)["W_E"].dtype)
    w = {n: weights(model)[n].to(dt) for n in ("W_V", "W_O")}
    ov = FactoredMatrix(w["W_V"][l1, h1], w["W_O"][l1, h1], w["W_V"][l2, h2], w["W_O"][l2, h2])
    return VirtualHead((l1, h1), (l2, h2), pattern, ov)
