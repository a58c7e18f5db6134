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

A lazy checkpoint or an nnsight / Hugging Face model is expanded by the same enumeration on frozen
activations from one forward pass and weights read one layer at a time (`streamed_paths`).

LN models are analysed after `fold_layernorm` (see `prep`): each head reads
`(x - mean(x)) / scale` with the scale frozen per position, and the final logits are
`(x - mean(x)) / scale_final @ W_U + b_U`; both maps are linear in x, so the split stays exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..model import Transformer
from ..model.fold import FOLDS
from ._check import _index, check_count, check_finite_terms, check_position, check_token
from .factored import compute_dtype
from .patterns import AttentionData, attention_patterns, run_until
from .prep import prepared

__all__ = ["FrozenRun", "LogitPaths", "PathBar", "PathTerms", "frozen_run", "logit_paths", "path_budget", "path_terms"]

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
    (models with biases or a normalisation: folding gives them one), then `remainder`.
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
        batch = _index(batch, 0, B - 1, "batch", "these tokens have sequences")
        pos = check_position(pos, P)
        token = _index(token, 0, self.W_U.shape[1] - 1, "token", "token ids are")
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
        return _bars(self.for_token(pos, token, batch), info, n_one, n_virtual)


def _head_label(l: int, h: int) -> str:
    return f"L{l}H{h}"


def refuse_ln_post_norm(cfg) -> None:
    """Raise NotImplementedError for a LayerNorm post-norm (a bias after each block: its centring and bias
    are not a frozen per-position factor); RMSNorm post-norms are expanded with their scale frozen."""
    if cfg.post_norm and cfg.normalization is not None and FOLDS[cfg.normalization].centres:
        raise NotImplementedError("path expansion: LayerNorm post-norms (a bias after each block) are not "
                                  "supported; RMSNorm post-norms (Gemma 2/3, OLMo-2) are")


def through_post_norm(out: torch.Tensor, scale: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """A block's write `out [..., pos, d_model]` through its RMS post-norm with the scale frozen:
    `out / scale * w` (`scale [..., pos, 1]` the post-norm's scale on the input, `w [d_model]` its
    weight); `out` itself without a post-norm (`w` None)."""
    return out if w is None else out / scale * w


def path_budget(model: Transformer, n_positions: int, max_order: int, max_elements: int = MAX_ELEMENTS // 2
                ) -> int | None:
    """The `top_k` that keeps `path_terms` within about `max_elements` values of term tensors on
    `n_positions` (batch x positions) residual vectors: None when the full enumeration fits (no
    pruning), else a per-layer budget for the order >= 2 terms. Counts `2 + n_layers` sources (plus one
    per MLP layer), each extended by every head and, for `max_order >= 2`, by every pair of heads."""
    n_positions, max_order = check_count(n_positions, "n_positions"), check_count(max_order, "max_order", lo=0)
    max_elements = check_count(max_elements, "max_elements")
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
    extensions); `"auto"`: `path_budget`'s choice (prune only when the full enumeration is too big; it counts paths
    of at most two heads, so with `max_order >= 3` pass an explicit `top_k`).
    Candidates are computed in bounded chunks, so deep models fit in memory with top_k.
    Patterns and LN scales are frozen at their values on `tokens`; computed in the weights' dtype
    (float32 for half weights).
    """
    if isinstance(max_order, bool) or not isinstance(max_order, int) or max_order < 0:
        raise ValueError(f"max_order={max_order!r} must be an integer >= 0")
    if top_k is not None and top_k != "auto" and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k={top_k!r} must be None, 'auto' or an integer >= 1")
    from ..model.lazy import is_lazy
    from ..model.nnsight_source import is_source

    if is_lazy(model) or is_source(model):  # a lazy checkpoint or an nnsight / HF model: streamed
        from .streamed_paths import streamed_path_terms

        return streamed_path_terms(model, tokens, max_order, top_k)
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
    post_w = pm.ln1_post_w.detach().to(dt) if cfg.post_norm else None
    b_V = pm.b_V.detach().to(dt) if cfg.biases else None
    b_O = pm.b_O.detach().to(dt) if cfg.biases else None

    def layer(l: int) -> dict:
        return {"W_V": W_V[l], "W_O": W_O[l], "post_w": None if post_w is None else post_w[l],
                "b_V": None if b_V is None else b_V[l], "b_O": None if b_O is None else b_O[l]}

    P = tokens.shape[1]
    embed = pm.W_E.detach().to(dt)[tokens] * cfg.embed_scale
    pos_embed = pm.W_pos.detach().to(dt)[:P] if cfg.positional == "standard" else None
    return _expand(cfg, tokens, dt, cache, layer, embed, pos_embed, pm.W_U.detach().to(dt),
                   pm.b_U.detach().to(dt) if cfg.biases else None, logits.detach().to(dt), max_order, top_k, pm)


def _expand(cfg, tokens: torch.Tensor, dt: torch.dtype, cache, layer, embed: torch.Tensor,
            pos_embed: torch.Tensor | None, W_U, b_U: torch.Tensor | None, logits: torch.Tensor,
            max_order: int, top_k: int | None, check_model=None) -> PathTerms:
    """The enumeration of `path_terms` on frozen activations: `cache` gives `("pattern", l)`,
    `("scale", l, "ln1")`, `("mlp_out", l)`, `"scale"` (final) and the post-norm scales;
    `layer(l)` the folded weights of layer l (`W_V`, `W_O`, `b_V`, `b_O`, `post_w`; read once per layer,
    in order, so a streamed model holds one layer); `embed [B, P, D]`, `pos_embed [P, D]`; `W_U` the
    folded unembedding (a tensor, or a blockwise `streamed_paths.BlockUnembed`)."""
    B, P = tokens.shape
    D, H = cfg.d_model, cfg.n_heads
    ln = cfg.normalization is not None
    centre = ln and FOLDS[cfg.normalization].centres  # LayerNorm centres, RMSNorm does not
    refuse_ln_post_norm(cfg)
    cur: dict = {}  # the current layer's weights

    labels: list[str] = []
    paths: list[tuple] = []
    orders: list[int] = []
    vecs: list[torch.Tensor] = []

    def add(label, path, order, vec):
        labels.append(label)
        paths.append(path)
        orders.append(order)
        vecs.append(vec)

    add("embed", ("embed", ()), 0, embed)
    if pos_embed is not None:
        add("pos", ("pos", ()), 0, pos_embed.expand(B, P, D))
    remainder = torch.zeros(B, P, D, dtype=dt, device=tokens.device)
    remainder_live = False  # stays an exact zero tensor until something is put into it

    def heads(x: torch.Tensor, l: int) -> torch.Tensor:
        """Frozen layer-l heads on contributions `x [T, B, P, D]` -> per-head outputs `[T, H, B, P, D]`."""
        if ln and cfg.pre_norm:
            x = ((x - x.mean(-1, keepdim=True)) if centre else x) / cache["scale", l, "ln1"].to(dt)
        v = torch.einsum("tbpd,hde->tbhpe", x, cur["W_V"])
        z = cache["pattern", l].to(dt) @ v  # [B, H, q, k] @ [T, B, H, k, E]
        return post(torch.einsum("tbhqe,hed->thbqd", z, cur["W_O"]), l)

    def post(out: torch.Tensor, l: int) -> torch.Tensor:
        """The attention post-norm, its scale frozen: `out / scale_post * w_post` (identity without one)."""
        if cur.get("post_w") is None:
            return out
        return through_post_norm(out, cache[f"blocks.{l}.ln1_post.hook_scale"].to(dt), cur["post_w"])

    from ._progress import tqdm

    big = (cfg.n_layers * H) ** min(max_order, cfg.n_layers) * B * P * D > 1e8  # roughly > 2 s of work
    for l in tqdm(range(cfg.n_layers), desc="path terms", disable=not big):
        cur.clear()
        cur.update(layer(l))
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
        if cur.get("b_O") is not None:
            b = cur["b_O"] + torch.einsum("he,hed->d", cur["b_V"], cur["W_O"])
            if bool(b.ne(0).any()):  # folded models carry all-zero biases: no term for those
                add(f"bias L{l}", (f"bias L{l}", ()), 0, post(b.expand(B, P, D), l))
        if not cfg.attn_only:
            add(f"mlp L{l}", (f"mlp L{l}", ()), 0, cache["mlp_out", l].to(dt))

    cur.clear()
    check_finite_terms("path terms", labels + ["remainder"], vecs + [remainder], model=check_model, tokens=tokens)
    return PathTerms(
        labels=labels, paths=paths, orders=orders, resid=torch.stack(vecs), remainder_resid=remainder,
        W_U=W_U, b_U=b_U, final_scale=cache["scale"].to(dt) if ln else None, model_logits=logits,
        final_centre=centre,
    )


# ------------------------------------------------------------------------ one logit, streamed
@dataclass
class FrozenRun:
    """What the path expansion of single logits needs from one forward pass (patterns, LN scales and
    MLP outputs frozen), and nothing of size `terms x pos x d_model`.

    `model` is the model as given (its own forward pass: LN scales are the same before and after
    folding, and what folding changes in the sources - their mean - is removed by every centring read);
    `W_V` is folded (ln1's weight on its rows), `W_O` the model's, `lnf_w` the final norm's weight (the
    folded unembedding column of a token is `lnf_w * W_U[:, token]`: no folded copy of W_U); each layer's
    constant attention output (`b_O + sum_h (b_ln1 W_V + b_V) W_O`) is a source `bias L{l}` in `sources`
    when it is not zero; `b_U` the folded unembedding bias (None for a model with neither biases nor a
    normalisation: folding gives every normalised model one). `patterns [layer, head, q, k]`
    (given by a view, so held once), `ln_scale [layer, pos]` (ln1's scale; None without a pre-norm),
    `final_scale [pos]`, `sources [n_sources, pos, d_model]` with `source_labels` and `source_layer` (the
    layer before which each is written: embed/pos 0, `bias L{l}`/`mlp L{l}` l + 1), `final_resid [pos,
    d_model]` (the last layer's output stream; `model_logits(pos)` gives the model's own logits). Computed
    in `dt` (float32 for half weights).

    A run of a lazy checkpoint or an nnsight / HF model (`streamed_paths.streamed_frozen_run`) holds no
    weights: `W_V`, `W_O`, `b_U`, `lnf_w`, `post_w` are None and `reader` gives one layer's folded weights
    (the post-norm's weight with them), one token's unembedding column and blockwise logits (`layer`,
    `layer_weights`, `unembed_column`, `unembed_bias`, `model_logits` go through it); its sources come
    from the folded weights (equal after every centring read)."""

    model: Transformer
    tokens: torch.Tensor  # [pos]
    patterns: torch.Tensor
    ln_scale: torch.Tensor | None
    final_scale: torch.Tensor | None
    source_labels: list[str]
    source_layer: list[int]
    sources: torch.Tensor
    final_resid: torch.Tensor
    W_V: torch.Tensor | None
    W_O: torch.Tensor | None
    lnf_w: torch.Tensor | None
    b_U: torch.Tensor | None
    dt: torch.dtype
    attention: AttentionData | None = None  # the patterns with value norms, when this run computed them
    post_scale: torch.Tensor | None = None  # [layer, pos]: the attention post-norm's scale (RMS post-norms)
    post_w: torch.Tensor | None = None  # [layer, d_model]: its weight
    # a lazy checkpoint or an nnsight / HF model: W_V, W_O, b_U, post_w are None and the folded weights are read
    # one layer (or vocabulary block) at a time through this (`streamed_paths.FoldedReader`)
    reader: object | None = field(default=None, repr=False)
    _logits_memo: dict = field(default_factory=dict, repr=False)

    def layer(self, layer: int) -> dict[str, torch.Tensor | None]:
        """One layer's weights as `logit_paths` reads them: `W_V [head, d_model, d_head]` with ln1's weight
        folded in, `W_O [head, d_head, d_model]`, `post_w [d_model]` (the attention post-norm's weight;
        None without one). A streamed run reads the layer here (one layer at a time)."""
        if self.reader is not None:
            w = self.reader.layer(layer)
            return {"W_V": w["W_V"], "W_O": w["W_O"], "post_w": w["post_w"]}
        return {"W_V": self.W_V[layer], "W_O": self.W_O[layer],
                "post_w": None if self.post_w is None else self.post_w[layer]}

    def layer_weights(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`(W_V [head, d_model, d_head]` with ln1's weight folded in, `W_O [head, d_head, d_model])` of one layer."""
        w = self.layer(layer)
        return w["W_V"], w["W_O"]

    def unembed_column(self, token: int) -> torch.Tensor:
        """The folded unembedding's column of `token` `[d_model]`."""
        if self.reader is not None:
            return self.reader.column(token)[0]
        col = self.model.W_U.detach()[:, token].to(self.dt)
        return col * self.lnf_w if self.lnf_w is not None else col

    def unembed_bias(self, token: int) -> float | None:
        """The folded unembedding bias of `token` (None when the model has none)."""
        if self.reader is not None:
            return self.reader.column(token)[1]
        return None if self.b_U is None else float(self.b_U[token])

    def model_logits(self, pos: int) -> torch.Tensor:
        """The model's own logits at `pos` `[d_vocab]` (one position's unembedding; before a final
        soft-cap's tanh, which the terms add up to, as in `path_terms`)."""
        if self.reader is not None:  # the final residual through the frozen final norm, blocks of W_U
            if pos not in self._logits_memo:  # (a pass over the vocabulary: the last few positions kept)
                x = self.final_resid[pos].to(self.dt)
                if self.final_scale is not None:
                    x = self.reader.centre(x) / self.final_scale[pos]
                while len(self._logits_memo) >= 4:
                    self._logits_memo.pop(next(iter(self._logits_memo)))
                self._logits_memo[pos] = self.reader.unembed(x)
            return self._logits_memo[pos]
        m, cfg = self.model, self.model.cfg
        x = m.normalize(self.final_resid[pos].to(m.W_E.dtype), "ln_final")
        out = x @ m.W_U
        if cfg.biases:
            out = out + m.b_U
        return out.detach().to(self.dt)


@dataclass
class LogitPaths:
    """One logit (`token` at `pos`) split into path terms, computed for that logit alone.

    `values[i]` is the contribution of term `labels[i]` (with `paths[i]`, `orders[i]` as in
    `PathTerms`), then "b_U" (models with biases or a normalisation) and "remainder" (every path longer than
    `max_order`: the exact backward pass's total minus the enumerated terms). `total` is the sum of
    all values (the frozen expansion's logit), `model_logit` the model's own logit."""

    pos: int
    token: int
    labels: list[str]
    paths: list[tuple]
    orders: list[int]
    values: list[float]
    total: float
    model_logit: float

    def for_token(self) -> list[tuple[str, float]]:
        """`(label, value)` of every term, b_U and the remainder, largest |value| first."""
        return sorted(zip(self.labels, self.values), key=lambda t: -abs(t[1]))

    def bars(self, n_one: int = 16, n_virtual: int = 8) -> list[PathBar]:
        """The bars of the path view (see `PathTerms.bars`)."""
        info = {lab: (o, list(p[1])) for lab, o, p in zip(self.labels, self.orders, self.paths)}
        return _bars(self.for_token(), info, n_one, n_virtual)


def _bars(vals: list[tuple[str, float]], info: dict, n_one: int, n_virtual: int) -> list[PathBar]:
    groups: dict[int, list[PathBar]] = {0: [], 1: [], 2: []}
    rem = 0.0
    for lab, v in vals:  # largest |value| first
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


@torch.no_grad()
def frozen_run(model: Transformer, tokens, patterns: torch.Tensor | None = None) -> FrozenRun:
    """One forward pass of `model` on one sequence `tokens` (`[pos]` or `[1, pos]`), keeping only what
    `logit_paths` reads: LN scales `[layer, pos]`, MLP outputs, the final residual, and the patterns
    unless given (`patterns [layer, head, pos, pos]` of this model on these tokens, e.g. a view's
    `AttentionData.pattern`, so they are held once). No folded copy of the model: only W_V is
    folded here (`[layer, head, d_model, d_head]`); the forward pass stops before the unembedding.
    When a `TextRun` of the model on these tokens is alive (`engine.text_run`, e.g. the explorer's),
    its pass is used: no forward pass here."""
    from ..model.lazy import is_lazy
    from ..model.nnsight_source import is_source

    if is_lazy(model) or is_source(model):  # a lazy checkpoint or an nnsight / HF model: streamed
        from .streamed_paths import streamed_frozen_run

        return streamed_frozen_run(model, tokens, patterns)
    cap = _FrozenCapture(model, tokens)
    if patterns is None:
        from .text_run import shared_text_run

        shared = shared_text_run(model, cap.toks)
        if shared is not None:
            return shared.frozen()
    attention = None
    if patterns is None:  # one forward pass for the patterns (shared with other views) and the rest
        attention = attention_patterns(model, cap.toks, extra_hooks=cap.hooks, until=cap.last)
        patterns = attention.pattern
    if not cap.ran:  # patterns given, or shared from an earlier run: a pass of our own
        run_until(model, cap.toks, cap.hooks, last=cap.last)
    return cap.finish(patterns, attention)


class _FrozenCapture:
    """The hooks of `frozen_run`'s forward pass and what they keep (LN scales, MLP outputs, sources, the
    final residual); `finish(patterns)` builds the `FrozenRun`. Made before the forward pass, so the
    hooks can ride along in a pass that keeps other things too (`engine.text_run`)."""

    def __init__(self, model: Transformer, tokens):
        from ..model.lazy import is_lazy
        from ..model.nnsight_source import is_source

        if is_lazy(model) or is_source(model):  # their frozen run is streamed (`streamed_paths`)
            raise TypeError("the frozen-run hooks need an in-memory Transformer")
        if model.cfg.normalization is not None and model.cfg.positional == "shortformer":
            prepared(model)  # raises: no exact fold of LN + shortformer
        cfg = model.cfg
        refuse_ln_post_norm(cfg)
        toks = model.check_tokens(tokens)
        if toks.shape[0] != 1:
            raise ValueError(f"tokens must be one sequence, got a batch of {toks.shape[0]}")
        self.model, self.toks = model, toks
        P, L, D = toks.shape[1], cfg.n_layers, cfg.d_model
        dt = self.dt = compute_dtype(model.W_E.dtype)
        ln = cfg.normalization is not None
        pre = ln and cfg.pre_norm  # heads read a normalised residual
        keep: dict[str, torch.Tensor] = {}
        ln_scale = torch.empty(L, P, dtype=dt) if pre else None
        post_scale = torch.empty(L, P, dtype=dt) if cfg.post_norm else None
        mlp = None if cfg.attn_only else torch.empty(L, P, D, dtype=dt)

        def grab(x, hp):
            n, layer = hp.name, hp.layer()
            if n.endswith("ln1.hook_scale"):
                ln_scale[layer] = x[0, :, 0].to(dt)
            elif n.endswith("ln1_post.hook_scale"):
                post_scale[layer] = x[0, :, 0].to(dt)
            elif n.endswith("hook_mlp_out"):
                mlp[layer] = x[0].to(dt)
            else:
                keep[n] = x[0].to(dt)

        names = ["hook_embed"] + (["hook_pos_embed"] if cfg.positional == "standard" else [])
        names += [f"blocks.{L - 1}.hook_resid_post"] if L else []
        names += ["ln_final.hook_scale"] if ln else []
        for layer in range(L):
            names += ([f"blocks.{layer}.ln1.hook_scale"] if pre else []) + (
                [f"blocks.{layer}.hook_mlp_out"] if mlp is not None else []) + (
                [f"blocks.{layer}.ln1_post.hook_scale"] if cfg.post_norm else [])
        self.hooks = [(n, grab) for n in names]
        # the hook point after which nothing more is needed (the forward pass may stop there)
        self.last = ("ln_final.hook_scale" if ln else f"blocks.{L - 1}.hook_resid_post" if L
                     else names[0 if cfg.positional != "standard" else 1])
        self.keep, self.ln_scale, self.post_scale, self.mlp = keep, ln_scale, post_scale, mlp

    @property
    def ran(self) -> bool:
        """Whether a forward pass with `hooks` has run."""
        return "hook_embed" in self.keep

    def finish(self, patterns: torch.Tensor, attention: AttentionData | None = None) -> FrozenRun:
        """The `FrozenRun` from what the hooks kept and the patterns `[layer, head, pos, pos]` of the same run."""
        model, toks, dt, keep = self.model, self.toks, self.dt, self.keep
        ln_scale, post_scale, mlp = self.ln_scale, self.post_scale, self.mlp
        cfg = model.cfg
        P, L, D = toks.shape[1], cfg.n_layers, cfg.d_model
        ln = cfg.normalization is not None
        if tuple(patterns.shape) != (L, cfg.n_heads, P, P):
            raise ValueError(f"patterns of shape {tuple(patterns.shape)} do not fit {L} layers x {cfg.n_heads} heads "
                             f"on {P} tokens")
        pat = patterns
        params = dict(model.named_parameters())
        post_w = params["ln1_post_w"].detach().to(dt) if cfg.post_norm else None
        ln1_w, ln1_b = params.get("ln1_w"), params.get("ln1_b")
        lnf_w, lnf_b = params.get("ln_final_w"), params.get("ln_final_b")
        W_V, W_O = model.W_V.detach().to(dt), model.W_O.detach().to(dt)
        if ln1_w is not None and cfg.pre_norm:  # fold ln1's weight into the rows of W_V (what `fold_layernorm` does)
            W_V = W_V * ln1_w.detach().to(dt)[:, None, :, None]
        labels, layers, vecs = ["embed"], [0], [keep["hook_embed"]]
        if cfg.positional == "standard":
            labels.append("pos"), layers.append(0), vecs.append(keep["hook_pos_embed"])
        for layer in range(L):
            if cfg.biases or ln1_b is not None:  # the constant part of the layer's attention output
                b_v = model.b_V.detach()[layer].to(dt) if cfg.biases else torch.zeros(W_O.shape[1:3], dtype=dt)
                if ln1_b is not None:  # ln1's bias, read through the unfolded W_V
                    b_v = b_v + torch.einsum("d,hde->he", ln1_b.detach()[layer].to(dt),
                                             model.W_V.detach()[layer].to(dt))
                b = torch.einsum("he,hed->d", b_v, W_O[layer])
                if cfg.biases:
                    b = b + model.b_O.detach()[layer].to(dt)
                if bool(b.ne(0).any()):
                    b = b.expand(P, D)
                    if post_scale is not None:  # through the frozen post-norm, like the heads' outputs
                        b = through_post_norm(b, post_scale[layer, :, None], post_w[layer])
                    labels.append(f"bias L{layer}"), layers.append(layer + 1), vecs.append(b)
            if mlp is not None:
                labels.append(f"mlp L{layer}"), layers.append(layer + 1), vecs.append(mlp[layer])
        b_U = None
        if cfg.biases or ln:  # as the folded model has it (folding gives every LN model a b_U)
            b_U = model.b_U.detach().to(dt) if cfg.biases else torch.zeros(cfg.d_vocab, dtype=dt)
            if lnf_b is not None:
                b_U = b_U + lnf_b.detach().to(dt) @ model.W_U.detach().to(dt)
        resid = keep[f"blocks.{L - 1}.hook_resid_post"] if L else sum(vecs)
        return FrozenRun(model=model, tokens=toks[0].clone(), patterns=pat, ln_scale=ln_scale,
                         final_scale=keep["ln_final.hook_scale"][:, 0] if ln else None, source_labels=labels,
                         source_layer=layers, sources=torch.stack(vecs), final_resid=resid, W_V=W_V, W_O=W_O,
                         lnf_w=lnf_w.detach().to(dt) if lnf_w is not None else None, b_U=b_U, dt=dt,
                         attention=attention, post_scale=post_scale, post_w=post_w)


@torch.no_grad()
def logit_paths(run: FrozenRun, pos: int, token: int, max_order: int = 2) -> LogitPaths:
    """The path expansion of one logit (`token` at `pos`) on a `frozen_run`, equal to
    `path_terms(...).for_token(pos, token)` without pruning, in memory `O(sources x pos x d_model)`.

    Works backwards from the logit: a term's value is `(w @ X_src) . v` with `w [pos]` the product of
    its heads' attention rows and LN scales and `v [d_model]` the unembedding column carried back
    through their OV circuits (centred where LN reads), so no `[terms, pos, d_model]` tensor is
    formed. Only positions <= `pos` matter (causal). The remainder (paths longer than `max_order`)
    is the exact backward pass's total minus the enumerated terms."""
    cfg = run.model.cfg
    P = run.tokens.shape[0]
    if isinstance(max_order, bool) or not isinstance(max_order, int) or max_order < 0:
        raise ValueError(f"max_order={max_order!r} must be an integer >= 0")
    pos = check_position(pos, P)
    token = check_token(run.model, token)
    dt, n = run.dt, pos + 1  # positions 0..pos only
    ln = run.ln_scale is not None  # heads read a normalised residual
    centred = cfg.normalization is not None and FOLDS[cfg.normalization].centres  # RMS norms do not centre

    def centre(x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(-1, keepdim=True) if centred else x

    u = run.unembed_column(token)
    if run.final_scale is not None:
        u = centre(u) / run.final_scale[pos]
    X = run.sources[:, :n]  # [S, n, D]
    src_layer = torch.tensor(run.source_layer)
    labels = list(run.source_labels)
    paths: list[tuple] = [(s, ()) for s in labels]
    orders = [0] * len(labels)
    values = (X[:, pos] @ u).tolist()

    # One pass over the layers, last to first, each layer's weights read once (a streamed run reads
    # them one layer at a time). Chains run from the logit backwards: (w [n], v [D], heads earliest
    # first); at layer l every chain made at a later layer (fewer than max_order heads) is extended by
    # each head of l, giving the terms of its sources written before l. The exact total is the logit's
    # gradient carried down the same frozen layers, read by every source.
    H = cfg.n_heads
    chains_w = torch.nn.functional.one_hot(torch.tensor(pos), n).to(dt)[None]  # [C, n]
    chains_v = u[None]  # [C, D]
    chains_heads: list[tuple] = [()]
    found: list[tuple] = []  # (sort key, label, path, order, value)
    g = torch.zeros(n, cfg.d_model, dtype=dt)
    g[pos] = u
    total = 0.0
    for layer in reversed(range(cfg.n_layers)):
        written = (src_layer == layer + 1).nonzero()[:, 0]
        total += float((X[written] * g).sum())
        weights = run.layer(layer)  # W_V [H, D, E] (ln1's weight folded), W_O [H, E, D], post_w [D] or None
        W_V, W_O, post_w = weights["W_V"], weights["W_O"], weights["post_w"]
        del weights
        A = run.patterns[layer, :, :n, :n].to(dt)  # [H, n, n]
        live = [c for c, hs in enumerate(chains_heads) if len(hs) < max_order]
        new_w, new_v, new_heads = [], [], []
        srcs = (src_layer <= layer).nonzero()[:, 0].tolist()
        step = max(1, CHUNK_ELEMENTS // max(1, len(srcs) * n * H + H * cfg.d_model))
        for c0 in range(0, len(live), step):
            idx = live[c0:c0 + step]
            w, v = chains_w[idx], chains_v[idx]
            if run.post_scale is not None:  # the frozen post-norm: / scale per query, * weight
                w, v = w / run.post_scale[layer, :n], v * post_w
            w2 = torch.einsum("cq,hqk->chk", w, A)  # [C, H, n]
            if ln:
                w2 = w2 / run.ln_scale[layer, :n]
            v2 = torch.einsum("hde,che->chd", W_V, torch.einsum("hed,cd->che", W_O, v))  # never W_V W_O
            if ln:
                v2 = centre(v2)
            vals = torch.einsum("chp,csph->csh", w2, torch.einsum("spd,chd->csph", X[srcs], v2)).tolist()
            for a, c in enumerate(idx):
                heads = chains_heads[c]
                for b, s in enumerate(srcs):
                    for h in range(H):
                        hs = ((layer, h), *heads)
                        key = (len(hs), *[x for lh in reversed(hs[1:]) for x in lh], layer, s, h)
                        label = " → ".join([run.source_labels[s], *(_head_label(*x) for x in hs)])
                        found.append((key, label, (run.source_labels[s], hs), len(hs), vals[a][b][h]))
                if len(heads) + 1 < max_order:
                    new_w.append(w2[a]), new_v.append(v2[a])
                    new_heads += [((layer, h), *heads) for h in range(H)]
        g_out = g if run.post_scale is None else through_post_norm(g, run.post_scale[layer, :n, None], post_w)
        t = A.transpose(-1, -2) @ torch.einsum("pd,hed->hpe", g_out, W_O)  # [H, n, E]
        back = torch.einsum("hpe,hde->pd", t, W_V)
        g = g + (centre(back) / run.ln_scale[layer, :n, None] if ln else back)
        del W_V, W_O, post_w
        if new_heads:
            chains_w = torch.cat([chains_w, *new_w])
            chains_v = torch.cat([chains_v, *new_v])
            chains_heads += new_heads
    total += float((X[src_layer == 0] * g).sum())
    found.sort(key=lambda t: t[0])  # the enumeration order of `path_terms`
    for _, label, path, order, value in found:
        labels.append(label), paths.append(path), orders.append(order), values.append(value)
    b = run.unembed_bias(token)
    if b is not None:
        labels.append("b_U"), paths.append(("b_U", ())), orders.append(0)
        values.append(b)
        total += b
    labels.append("remainder"), paths.append(("remainder", ())), orders.append(-1)
    values.append(total - sum(values))
    if not all(math.isfinite(x) for x in values):
        check_finite_terms("path terms", labels, [torch.tensor(x) for x in values], model=run.model,
                           tokens=run.tokens[None])
    return LogitPaths(pos=pos, token=token, labels=labels, paths=paths, orders=orders, values=values, total=total,
                      model_logit=float(run.model_logits(pos)[token]))
