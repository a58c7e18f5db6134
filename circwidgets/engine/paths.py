"""Path expansion of the logits (docs/ARCHITECTURE.md §6).

With every attention pattern and every LayerNorm scale frozen at its value on the input, an
attention-only transformer is linear in its residual-stream contributions, and the logits split
exactly into a sum over paths:

    logits = x0 W_U + sum_h A^h x0 W_OV^h W_U + sum_{h1 < h2} A^{h2} A^{h1} x0 W_OV^{h1} W_OV^{h2} W_U + ...

`path_terms` enumerates these terms up to `max_order` heads per path. Each term starts at a
*source* written into the residual stream:
- `embed` (token embeddings) and `pos` (positional embeddings, standard positional models only;
  shortformer positions only shape the frozen patterns),
- `bias L{l}`: layer l's attention biases, `b_O + sum_h b_V^h W_O^h` (a head's value bias reaches
  the output unchanged because its attention row sums to one),
- `mlp L{l}` (models with MLPs): layer l's MLP output, taken as a frozen contribution (its value on
  this input); its paths through later heads are enumerated like any other source's, but what
  happens inside MLPs is not decomposed,
(bias terms that are exactly zero are left out) and is followed
by heads in strictly increasing layers ("embed → L0H3 → L1H5"). The unembedding
bias `b_U` is a term of its own. Everything not enumerated - paths longer than `max_order`, and
paths pruned by `top_k` together with all their extensions - is carried exactly in a `remainder`
term, so `total()` always equals the logits; with `max_order >= n_layers` and no pruning the
remainder is exactly zero.

LN models are analysed after `fold_layernorm` (see `prep`): each head reads
`(x - mean(x)) / scale` with the scale frozen per position, and the final logits are
`(x - mean(x)) / scale_final @ W_U + b_U`; both maps are linear in x, so the split stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..model import Transformer
from ..model.fold import FOLDS
from ._check import check_finite_terms
from .factored import compute_dtype
from .prep import prepared

__all__ = ["PathBar", "PathTerms", "path_budget", "path_terms"]

# Refuse enumerations whose term tensor would exceed this many elements (pass top_k instead).
MAX_ELEMENTS = 400_000_000
# Candidate terms are computed in chunks of at most about this many elements.
CHUNK_ELEMENTS = 50_000_000


# what the bars of one logit's expansion are grouped into, by the number of heads on the path
SECTIONS = {0: "direct / sources", 1: "one head", 2: "virtual heads (two)"}


@dataclass
class PathBar:
    """One bar of a logit's expansion (`PathTerms.bars`): a term, or the sum of several.

    order: heads on the path (0 = a source's direct path), -1 for a summary bar ("other terms",
    "remainder"); heads: the path's `(layer, head)`s, earliest first; section: `SECTIONS[min(order, 2)]`
    or "rest"."""

    label: str
    value: float
    order: int
    heads: list[tuple[int, int]]
    section: str


@dataclass
class PathTerms:
    """Logits split into path terms.

    `labels[i]`, `paths[i]` = `(source, ((layer, head), ...))`, `orders[i]` (number of heads) describe
    enumerated term i, whose residual-stream contribution is `resid[i]` `[batch, pos, d_model]`.
    The term list returned by `labels_all` / `logits()` is the enumerated terms, then `b_U`
    (models with biases), then `remainder`.
    """

    labels: list[str]
    paths: list[tuple]
    orders: list[int]
    resid: torch.Tensor  # [term, batch, pos, d_model]
    remainder_resid: torch.Tensor = field(repr=False)  # [batch, pos, d_model]
    W_U: torch.Tensor = field(repr=False)
    b_U: torch.Tensor | None = field(repr=False)
    final_scale: torch.Tensor | None = field(repr=False)  # [batch, pos, 1] or None (no LN)
    model_logits: torch.Tensor = field(repr=False)  # the model's own logits [batch, pos, d_vocab] (pre-soft-cap)
    final_centre: bool = field(default=True, repr=False)  # whether the final norm centres (LN) or not (RMS)

    def __len__(self) -> int:
        return len(self.labels_all)

    def __repr__(self) -> str:
        B, P, V = self.model_logits.shape
        return (f"PathTerms({len(self)} terms (max order {max(self.orders)}), batch={B}, pos={P}, d_vocab={V}; "
                f"remainder |max|={float(self.remainder_resid.abs().max()):.3g} in the residual stream)")

    @property
    def labels_all(self) -> list[str]:
        return self.labels + (["b_U"] if self.b_U is not None else []) + ["remainder"]

    def _unembed(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen final map of residual contributions `[..., batch, pos, d_model]` to logits."""
        if self.final_scale is not None:
            x = ((x - x.mean(-1, keepdim=True)) if self.final_centre else x) / self.final_scale
        return x @ self.W_U

    @property
    def remainder(self) -> torch.Tensor:
        """Logits of everything not enumerated `[batch, pos, d_vocab]` (exactly 0 if all paths are)."""
        return self._unembed(self.remainder_resid)

    def logits(self) -> torch.Tensor:
        """All terms' logits `[term, batch, pos, d_vocab]`, in `labels_all` order (can be large:
        prefer `for_token` or `term_logits` on big vocabularies)."""
        parts = [self._unembed(self.resid)]
        if self.b_U is not None:
            parts.append(self.b_U.expand_as(self.model_logits)[None])
        parts.append(self.remainder[None])
        return torch.cat(parts)

    def term_logits(self, i: int) -> torch.Tensor:
        """Logits `[batch, pos, d_vocab]` of term `i` of `labels_all`."""
        n = len(self.labels)
        if not -len(self) <= i < len(self):
            raise IndexError(f"term index {i} out of range: there are {len(self)} terms")
        i %= len(self)
        if i < n:
            return self._unembed(self.resid[i])
        if self.b_U is not None and i == n:
            return self.b_U.expand_as(self.model_logits)
        return self.remainder

    def total(self) -> torch.Tensor:
        """Sum of all terms `[batch, pos, d_vocab]`; equals the model's logits up to float error."""
        out = self._unembed(self.resid.sum(0) + self.remainder_resid)
        return out + self.b_U if self.b_U is not None else out

    def for_token(self, pos: int, token: int, batch: int = 0, k: int | None = None) -> list[tuple[str, float]]:
        """`(label, logit contribution)` of every term to `token` at position `pos`, largest |value|
        first (the top `k` if given). Costs one `d_model`-vector product per term."""
        B, P, _ = self.model_logits.shape
        if not 0 <= batch < B:
            raise IndexError(f"batch={batch} out of range: 0..{B - 1}")
        if not -P <= pos < P:
            raise IndexError(f"pos={pos} out of range: 0..{P - 1}")
        V = self.W_U.shape[1]
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < V:
            raise IndexError(f"token={token!r} is out of range: token ids are 0..{V - 1}")
        x = torch.cat([self.resid[:, batch, pos], self.remainder_resid[None, batch, pos]])  # [T+1, D]
        if self.final_scale is not None:
            x = ((x - x.mean(-1, keepdim=True)) if self.final_centre else x) / self.final_scale[batch, pos]
        vals = (x @ self.W_U[:, token]).tolist()
        out = list(zip(self.labels, vals[:-1]))
        if self.b_U is not None:
            out.append(("b_U", float(self.b_U[token])))
        out.append(("remainder", vals[-1]))
        out.sort(key=lambda t: -abs(t[1]))
        return out[:k] if k is not None else out


    def bars(self, pos: int, token: int, n_one: int = 16, n_virtual: int = 8, batch: int = 0) -> list[PathBar]:
        """The expansion of one logit as a short list of bars (what the path view and `plot.path_terms`
        show): every order-0 term (direct path of each source, `b_U`), the `n_one` largest one-head terms,
        the `n_virtual` largest terms of two or more heads, the other enumerated terms summed into one bar,
        and the remainder. The bars add up to the logit's total (`sum(for_token(...))`)."""
        info = {lab: (o, list(p[1])) for lab, o, p in zip(self.labels, self.orders, self.paths)}
        groups: dict[int, list[PathBar]] = {0: [], 1: [], 2: []}
        rem = 0.0
        for lab, v in self.for_token(pos, token, batch):  # largest |value| first
            if lab == "remainder":
                rem = v
                continue
            order, heads = info.get(lab, (0, []))
            groups[min(order, 2)].append(PathBar(lab, v, order, heads, SECTIONS[min(order, 2)]))
        out = groups[0] + groups[1][:n_one] + groups[2][:n_virtual]
        rest = groups[1][n_one:] + groups[2][n_virtual:]
        if rest:
            out.append(PathBar(f"other terms ({len(rest)})", sum(b.value for b in rest), -1, [], "rest"))
        out.append(PathBar("remainder (longer paths)", rem, -1, [], "rest"))
        return out


def _head_label(l: int, h: int) -> str:
    return f"L{l}H{h}"


def path_budget(model: Transformer, n_positions: int, max_order: int, max_elements: int = MAX_ELEMENTS // 2
                ) -> int | None:
    """The `top_k` that keeps `path_terms` within about `max_elements` values of term tensors on
    `n_positions` (batch x positions) residual vectors: None when the full enumeration fits (no
    pruning), else a per-layer budget for the order >= 2 terms. Counts `2 + n_layers` sources (plus one
    per MLP layer), each extended by every head and, for `max_order >= 2`, by every pair of heads."""
    cfg = model.cfg
    D, LH = cfg.d_model, cfg.n_layers * cfg.n_heads
    n_src = 2 + cfg.n_layers * (1 + (not cfg.attn_only))
    n_full = n_src * (1 + LH + (LH * LH // 2 if max_order >= 2 else 0))
    if n_full * n_positions * D <= max_elements:
        return None
    budget = max(1, max_elements // (n_positions * D) - n_src * (1 + LH))
    return max(1, budget // max(cfg.n_layers, 1))


@torch.no_grad()
def path_terms(model: Transformer, tokens, max_order: int = 2, top_k: int | str | None = None) -> PathTerms:
    """Split the logits on `tokens` (`[batch, pos]` or `[pos]`) into path terms (module docstring).

    `max_order`: the most heads on an enumerated path (0 = direct path only). `top_k`: keep at most
    this many new terms of order >= 2 per layer, ranked by the norm of their residual-stream
    contribution (over batch and positions); the rest go to the remainder (and so do their
    extensions); `"auto"`: `path_budget`'s choice (prune only when the full enumeration is too big).
    Candidates are computed in bounded chunks, so deep models fit in memory with top_k.
    Patterns and LN scales are frozen at their values on `tokens`; computed in the weights' dtype
    (float32 for half weights).
    """
    if isinstance(max_order, bool) or not isinstance(max_order, int) or max_order < 0:
        raise ValueError(f"max_order={max_order!r} must be an integer >= 0")
    if top_k is not None and top_k != "auto" and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k={top_k!r} must be None, 'auto' or an integer >= 1")
    pm = prepared(model)
    cfg = pm.cfg
    tokens = pm.check_tokens(tokens)
    if top_k == "auto":
        top_k = path_budget(pm, tokens.numel(), max_order)
    logits, cache = pm.run_with_cache(tokens)
    if cfg.final_softcap is not None:  # the terms add up to the logits before the soft-cap's tanh
        logits = cache["normalized"] @ pm.W_U + (pm.b_U if cfg.biases else 0.0)
    dt = compute_dtype(pm.W_E.dtype)
    W_V, W_O = pm.W_V.detach().to(dt), pm.W_O.detach().to(dt)
    B, P = tokens.shape
    D, H = cfg.d_model, cfg.n_heads
    ln = cfg.normalization is not None
    centre = ln and FOLDS[cfg.normalization].centres  # LayerNorm centres, RMSNorm does not
    if cfg.post_norm and centre:
        raise NotImplementedError("path_terms: LayerNorm post-norms (a bias after each block) are not supported; "
                                  "RMSNorm post-norms (Gemma 2/3, OLMo-2) are")
    post_w = pm.ln1_post_w.detach().to(dt) if cfg.post_norm else None

    labels: list[str] = []
    paths: list[tuple] = []
    orders: list[int] = []
    vecs: list[torch.Tensor] = []

    def add(label, path, order, vec):
        labels.append(label)
        paths.append(path)
        orders.append(order)
        vecs.append(vec)

    add("embed", ("embed", ()), 0, pm.W_E.detach().to(dt)[tokens] * cfg.embed_scale)
    if cfg.positional == "standard":
        add("pos", ("pos", ()), 0, pm.W_pos.detach().to(dt)[:P].expand(B, P, D))
    remainder = torch.zeros(B, P, D, dtype=dt, device=tokens.device)
    remainder_live = False  # stays an exact zero tensor until something is put into it

    def heads(x: torch.Tensor, l: int) -> torch.Tensor:
        """Frozen layer-l heads on contributions `x [T, B, P, D]` -> per-head outputs `[T, H, B, P, D]`."""
        if ln and cfg.pre_norm:
            x = ((x - x.mean(-1, keepdim=True)) if centre else x) / cache["scale", l, "ln1"].to(dt)
        v = torch.einsum("tbpd,hde->tbhpe", x, W_V[l])
        z = cache["pattern", l].to(dt) @ v  # [B, H, q, k] @ [T, B, H, k, E]
        return post(torch.einsum("tbhqe,hed->thbqd", z, W_O[l]), l)

    def post(out: torch.Tensor, l: int) -> torch.Tensor:
        """The attention post-norm, its scale frozen: `out / scale_post * w_post` (identity without one)."""
        if post_w is None:
            return out
        return out / cache[f"blocks.{l}.ln1_post.hook_scale"].to(dt) * post_w[l]

    from ._progress import tqdm

    big = (cfg.n_layers * H) ** min(max_order, cfg.n_layers) * B * P * D > 1e8  # roughly > 2 s of work
    for l in tqdm(range(cfg.n_layers), desc="path terms", disable=not big):
        ext = [i for i, o in enumerate(orders) if o < max_order]
        full = [i for i, o in enumerate(orders) if o == max_order]
        n_low = sum(1 for i in ext if orders[i] == 0) * H  # new order-1 terms: always kept
        n_high = len(ext) * H - n_low
        n_keep = n_low + (n_high if top_k is None else min(top_k, n_high))
        if (len(vecs) + n_keep) * B * P * D > MAX_ELEMENTS:
            raise ValueError(f"path_terms would hold {len(vecs) + n_keep} terms of {B}x{P}x{D} values at layer {l}: "
                             "lower max_order, pass a (smaller) top_k, or use fewer tokens")
        # what is not enumerated still flows through this layer's heads, into the remainder
        if full or remainder_live:
            r_in = remainder + sum(vecs[i] for i in full) if full else remainder
            remainder = remainder + heads(r_in[None], l)[0].sum(0)
            remainder_live = True
        # extend the enumerated terms by one head, in chunks of bounded memory; with top_k keep a
        # running top-k (by residual norm) of the order >= 2 candidates, the rest go to the remainder
        chunk = max(1, CHUNK_ELEMENTS // (H * B * P * D))
        kept: list[tuple[int, int, torch.Tensor]] = []  # (ext position, head, vec)
        cand: list[tuple[float, int, int, torch.Tensor]] = []  # (norm, ext position, head, vec)
        for c0 in range(0, len(ext), chunk):
            part = ext[c0:c0 + chunk]
            out = heads(torch.stack([vecs[i] for i in part]), l)  # [c, H, B, P, D]
            norms = out.flatten(2).norm(dim=2).tolist() if top_k is not None else None  # [c, H]
            for a, i in enumerate(part):
                for h in range(H):
                    if top_k is None or orders[i] == 0:
                        kept.append((c0 + a, h, out[a, h]))
                    else:
                        cand.append((norms[a][h], c0 + a, h, out[a, h]))
            if top_k is not None and len(cand) > top_k:
                cand.sort(key=lambda c: -c[0])
                remainder = remainder + torch.stack([c[3] for c in cand[top_k:]]).sum(0)
                remainder_live = True
                cand = cand[:top_k]
        kept += [(a, h, v) for _, a, h, v in cand]
        for a, h, v in sorted(kept, key=lambda k: (k[0], k[1])):  # enumeration order, pruned or not
            i = ext[a]
            src, hs = paths[i]
            add(f"{labels[i]} → {_head_label(l, h)}", (src, hs + ((l, h),)), orders[i] + 1, v.clone())
        if cfg.biases:
            b = pm.b_O.detach().to(dt)[l] + torch.einsum("he,hed->d", pm.b_V.detach().to(dt)[l], W_O[l])
            if bool(b.ne(0).any()):  # folded models carry all-zero biases: no term for those
                add(f"bias L{l}", (f"bias L{l}", ()), 0, post(b.expand(B, P, D), l))
        if not cfg.attn_only:
            add(f"mlp L{l}", (f"mlp L{l}", ()), 0, cache["mlp_out", l].to(dt))

    check_finite_terms("path terms", labels + ["remainder"], vecs + [remainder], model=pm, tokens=tokens)
    return PathTerms(
        labels=labels, paths=paths, orders=orders, resid=torch.stack(vecs), remainder_resid=remainder,
        W_U=pm.W_U.detach().to(dt), b_U=pm.b_U.detach().to(dt) if cfg.biases else None,
        final_scale=cache["scale"].to(dt) if ln else None, model_logits=logits.detach().to(dt),
        final_centre=centre,
    )
