"""Path expansion (`paths.path_terms`, `paths.frozen_run` / `logit_paths`, the paths view) of a model that
is never in memory whole: a lazy checkpoint (`cw.from_hf(path, lazy=True)`) or an nnsight / Hugging Face
model (also one dispatched by accelerate).

Path expansion freezes, on one input, every layer's attention pattern, the first norm's scale, the
attention post-norm's scale (RMS post-norms: Gemma 2/3, OLMo-2), the MLP output (after its post-norm)
and the final residual; everything else is weights. So it splits into:

- *frozen activations*, from one forward pass that sends back only those: for a lazy checkpoint the
  layer-by-layer pass (`LazySource`: one layer's weights in memory at a time); for nnsight one trace
  that saves each layer's pattern, its first norm's and attention post-norm's scales (computed inside
  the trace: `[batch, pos]`), its MLP output and the final norm's input
  (`NNsightSource.frozen_activations`);
- *folded weights*, read one layer at a time by the lazy converter (`FoldedReader`: `LazyModel._folded`
  with biases, the same fold as `engine.prep`), from the checkpoint's files or, for nnsight / HF, from
  the module's own tensors (`hf_weights.ModuleWeights`; offloaded ones read from accelerate's hooks).
  The unembedding is read in blocks of vocabulary rows (`BlockUnembed`), one token's column for one logit.

The enumeration itself is the eager engine's (`paths._expand`, `paths.logit_paths`), which reads each
layer's weights once, in order; a post-norm is applied there too (`paths.through_post_norm`: the head
outputs and the attention biases divided by the frozen scale, times the post-norm's weight, read with
the layer's other weights). Memory: one layer's attention weights, the frozen activations
(`[layer, head, pos, pos]` patterns and `[layer, pos, d_model]` MLP outputs) and the terms asked for.
Dtype: float32, or the `dtype` of a `LazySource(lazy, dtype=torch.float64)` passed instead of the
lazy model (exact comparisons); nnsight: float32 (the model runs in its own dtype).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from ..model.config import ModelConfig
from ..model.fold import FOLDS
from ..model.lazy import LazyModel, is_lazy

__all__ = ["BlockUnembed", "FoldedReader", "streamed_frozen_run", "streamed_path_terms"]


class FoldedReader:
    """Folded weights (`engine.prep`'s fold, biases included) of a `LazyModel` in `dt`, one layer or one
    block of vocabulary rows at a time."""

    def __init__(self, weights: LazyModel, dt: torch.dtype):
        self.weights, self.dt, self.cfg = weights, dt, weights.cfg
        cfg = self.cfg
        self.ln = cfg.normalization is not None
        self.centres = self.ln and FOLDS[cfg.normalization].centres
        self.has_b_U = cfg.biases or self.ln  # the folded model has a b_U (zeros where the source has none)

    def centre(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(-1, keepdim=True) if self.centres else x

    def layer(self, layer: int) -> dict[str, torch.Tensor | None]:
        """`W_V [H, D, E]` (grouped K/V expanded to the query heads), `W_O [H, E, D]`, `b_V [H, E]`,
        `b_O [D]` (None without biases), `post_w [D]` (the attention post-norm's weight, which folding
        leaves in place; None without post-norms)."""
        cfg = self.cfg
        sd = self.weights._folded(layer, None, self.dt, biases=True)
        kv = "_" if cfg.grouped_kv else ""
        idx = torch.arange(cfg.n_heads) // cfg.kv_group_size
        W_V = sd[kv + "W_V"][0]
        b_V = sd.get(kv + "b_V")
        b_V = None if b_V is None else b_V[0]
        if cfg.grouped_kv:
            W_V, b_V = W_V[idx], (None if b_V is None else b_V[idx])
        b_O = sd.get("b_O")
        post_w = sd["ln1_post_w"][0] if cfg.post_norm else None
        return {"W_V": W_V, "W_O": sd["W_O"][0], "b_V": b_V, "b_O": None if b_O is None else b_O[0],
                "post_w": post_w}

    def rows(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Folded `W_E` rows of the token ids `ids` (any shape, in that order: `[*ids.shape, D]`), `W_U`
        columns `[D, *ids.shape]`, `b_U` (if any) and `W_pos` (learned positions)."""
        uniq, inv = ids.flatten().unique(return_inverse=True)
        sd = self.weights._folded(None, uniq, self.dt, biases=True)
        out = {"W_E": sd["W_E"][inv].reshape(*ids.shape, -1), "W_U": sd["W_U"][:, inv].reshape(-1, *ids.shape)}
        if "b_U" in sd:
            out["b_U"] = sd["b_U"][inv].reshape(ids.shape)
        if "W_pos" in sd:
            out["W_pos"] = sd["W_pos"]
        return out

    def column(self, token: int) -> tuple[torch.Tensor, float | None]:
        """`(W_U[:, token] [D]`, `b_U[token]` or None) of the folded unembedding."""
        r = self.rows(torch.tensor([int(token)]))
        bias = float(r["b_U"][0]) if "b_U" in r else (0.0 if self.has_b_U else None)
        return r["W_U"][:, 0], bias

    def blocks(self):
        """`(rows slice, W_U [D, b], b_U [b] or None)`, one block of `block_rows` vocabulary rows at a time."""
        V, step = self.cfg.d_vocab, self.weights.block_rows
        for s in range(0, V, step):
            rows = slice(s, min(s + step, V))
            sd = self.weights._folded(None, rows, self.dt, biases=True)
            yield rows, sd["W_U"], sd.get("b_U")

    def unembed(self, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
        """`x @ W_U (+ b_U)` `[..., d_vocab]` for normalised residuals `x [..., D]`, blockwise."""
        out = torch.empty(*x.shape[:-1], self.cfg.d_vocab, dtype=self.dt)
        for rows, W_U, b_U in self.blocks():
            out[..., rows] = x.to(self.dt) @ W_U + (b_U if bias and b_U is not None else 0.0)
        return out

    def b_U(self) -> torch.Tensor | None:
        """The folded unembedding bias `[d_vocab]` (zeros for a normalised model without one; None without)."""
        if not self.has_b_U:
            return None
        out = torch.zeros(self.cfg.d_vocab, dtype=self.dt)
        for rows, _, b_U in self.blocks():
            if b_U is not None:
                out[rows] = b_U
        return out


class BlockUnembed:
    """The folded unembedding `[d_model, d_vocab]` as `PathTerms.W_U` sees it (`x @ W_U`, `W_U[:, token]`,
    `.shape`), read in blocks of vocabulary rows: never held whole."""

    def __init__(self, reader: FoldedReader):
        self.reader = reader
        self.shape = (reader.cfg.d_model, reader.cfg.d_vocab)

    def __rmatmul__(self, x: torch.Tensor) -> torch.Tensor:
        return self.reader.unembed(x, bias=False)

    def __getitem__(self, index) -> torch.Tensor:
        if not (isinstance(index, tuple) and len(index) == 2 and index[0] == slice(None)):
            raise IndexError("a streamed unembedding gives columns only: W_U[:, token]")
        return self.reader.column(int(index[1]))[0]

    def __repr__(self) -> str:
        return f"BlockUnembed(d_model={self.shape[0]}, d_vocab={self.shape[1]}, read in blocks)"


# ------------------------------------------------------------------ the model, its weights, its activations
def _resolve(model) -> tuple[Any, LazyModel, torch.dtype]:
    """(activation source, weights read layer by layer, compute dtype) of a lazy model or an nnsight / HF model."""
    from ..model.hf_weights import ModuleWeights
    from ..model.lazy_source import LazySource
    from ..model.nnsight_source import NNsightSource, TransformerSource, as_source
    from .paths import refuse_ln_post_norm

    if isinstance(model, LazySource):
        src, weights, dt = model, model.lazy, model.dtype
    elif is_lazy(model):
        src, weights, dt = LazySource(model), model, torch.float32
    else:
        src = as_source(model)
        if isinstance(src, TransformerSource):
            raise TypeError("an in-memory Transformer: call path_terms / frozen_run on the model itself")
        if not isinstance(src, NNsightSource):
            raise TypeError(f"path expansion cannot run on {type(model).__name__}")
        src.check_expansion_supported()
        weights = src.weights if is_lazy(src.weights) else getattr(src, "_module_weights", None)
        if weights is None:
            weights = src._module_weights = ModuleWeights(src.lm._module)
        dt = torch.float32
    cfg = weights.cfg
    refuse_ln_post_norm(cfg)  # (before any forward pass)
    if cfg.normalization is not None and cfg.positional == "shortformer":
        raise ValueError("path expansion: LN weights cannot be folded exactly into a shortformer model")
    return src, weights, dt


@torch.no_grad()
def frozen_activations(src, tokens: torch.Tensor, dt: torch.dtype) -> dict[str, Any]:
    """`{"pattern": [L, B, H, P, P], "ln1_scale": [L, B, P] or None, "post_scale": [L, B, P] or None (the
    attention post-norm's scale), "mlp_out": [L, B, P, D] or None (after its post-norm), "final_resid":
    [B, P, D]}` of one forward pass (in `dt`)."""
    from ..model.lazy_source import LazySource

    if not isinstance(src, LazySource):
        acts = src.frozen_activations(tokens)
        return {k: (None if v is None else v.to(dt)) for k, v in acts.items()}
    cfg = src.cfg
    L = cfg.n_layers
    pats: dict[int, torch.Tensor] = {}
    scales: dict[int, torch.Tensor] = {}
    posts: dict[int, torch.Tensor] = {}
    mlps: dict[int, torch.Tensor] = {}
    final: dict[str, torch.Tensor] = {}
    pre = cfg.normalization is not None and cfg.pre_norm

    def keep(store, layer, fn=lambda x: x):
        def hook(x):
            store[layer] = fn(x.detach()).to(dt).clone()
        return hook

    hooks: dict[int, list] = {}
    for l in range(L):
        hooks[l] = [("pattern", keep(pats, l))]
        if pre:
            hooks[l].append(("scale", keep(scales, l, lambda x: x[..., 0])))
        if cfg.post_norm:  # (the one-layer module is layer 0)
            hooks[l].append(("blocks.0.ln1_post.hook_scale", keep(posts, l, lambda x: x[..., 0])))
        if not cfg.attn_only:
            hooks[l].append(("mlp_out", keep(mlps, l)))
    if L:
        hooks[L - 1].append(("resid_post", keep(final, "final")))
        src.forward(tokens, hooks, last_layer=L - 1)
    else:
        raise ValueError("path expansion of a model without layers: nothing to expand")
    return {"pattern": torch.stack([pats[l] for l in range(L)]),
            "ln1_scale": torch.stack([scales[l] for l in range(L)]) if pre else None,
            "post_scale": torch.stack([posts[l] for l in range(L)]) if cfg.post_norm else None,
            "mlp_out": torch.stack([mlps[l] for l in range(L)]) if not cfg.attn_only else None,
            "final_resid": final["final"]}


def _final_scale(cfg, resid: torch.Tensor) -> torch.Tensor | None:
    """The final norm's scale `[..., 1]` of residuals `[..., D]` (the model's own arithmetic), None without one."""
    if cfg.normalization is None:
        return None
    x = resid - resid.mean(-1, keepdim=True) if FOLDS[cfg.normalization].centres else resid
    return (x.pow(2).mean(-1, keepdim=True) + cfg.ln_eps).sqrt()


# ------------------------------------------------------------------ the two entry points
@torch.no_grad()
def streamed_path_terms(model, tokens, max_order: int, top_k):
    """`paths.path_terms` of a lazy checkpoint or an nnsight / HF model (module docstring)."""
    from .paths import _expand, path_budget

    src, weights, dt = _resolve(model)
    cfg = weights.cfg
    toks = src.check_tokens(tokens)
    if top_k == "auto":
        top_k = path_budget(SimpleNamespace(cfg=cfg), toks.numel(), max_order)
    acts = frozen_activations(src, toks, dt)
    reader = FoldedReader(weights, dt)
    B, P = toks.shape
    cache: dict[Any, torch.Tensor] = {}
    for l in range(cfg.n_layers):
        cache["pattern", l] = acts["pattern"][l]
        if acts["ln1_scale"] is not None:
            cache["scale", l, "ln1"] = acts["ln1_scale"][l][..., None]
        if acts["post_scale"] is not None:  # the key the eager run's cache has
            cache[f"blocks.{l}.ln1_post.hook_scale"] = acts["post_scale"][l][..., None]
        if acts["mlp_out"] is not None:
            cache["mlp_out", l] = acts["mlp_out"][l]
    final = acts["final_resid"]
    scale = _final_scale(cfg, final)
    if scale is not None:
        cache["scale"] = scale
    rows = reader.rows(toks)
    embed = rows["W_E"] * cfg.embed_scale
    pos_embed = rows["W_pos"][:P] if cfg.positional == "standard" else None
    x = reader.centre(final) / scale if scale is not None else final
    logits = reader.unembed(x)  # the model's logits (before a final soft-cap), from its final residual
    return _expand(cfg, toks, dt, cache, reader.layer, embed, pos_embed, BlockUnembed(reader), reader.b_U(),
                   logits, max_order, top_k)


@torch.no_grad()
def streamed_frozen_run(model, tokens, patterns: torch.Tensor | None = None):
    """`paths.frozen_run` of a lazy checkpoint or an nnsight / HF model: a `FrozenRun` whose weights are
    read one layer at a time (`FrozenRun.reader`). Bias sources read every layer's biases once here."""
    from .paths import FrozenRun, through_post_norm
    from .patterns import AttentionData

    src, weights, dt = _resolve(model)
    cfg = weights.cfg
    toks = src.check_tokens(tokens)
    if toks.shape[0] != 1:
        raise ValueError(f"tokens must be one sequence, got a batch of {toks.shape[0]}")
    P, L, D = toks.shape[1], cfg.n_layers, cfg.d_model
    acts = frozen_activations(src, toks, dt)
    post_scale = acts["post_scale"][:, 0] if acts["post_scale"] is not None else None  # [L, P]
    if patterns is not None and tuple(patterns.shape) != (L, cfg.n_heads, P, P):
        raise ValueError(f"patterns of shape {tuple(patterns.shape)} do not fit {L} layers x {cfg.n_heads} heads "
                         f"on {P} tokens")
    attention = None
    if patterns is None:
        patterns = acts["pattern"][:, 0]
        attention = AttentionData(pattern=patterns.float(), tokens=toks[0].clone(),
                                  v_norm=torch.full((L, cfg.n_heads, P), float("nan")))
    reader = FoldedReader(weights, dt)
    rows = reader.rows(toks[0])
    labels, layers, vecs = ["embed"], [0], [rows["W_E"] * cfg.embed_scale]
    if cfg.positional == "standard":
        labels.append("pos"), layers.append(0), vecs.append(rows["W_pos"][:P])
    for layer in range(L):
        if cfg.biases or cfg.normalization == "LN":  # the layer's constant attention output (ln1's bias folded in)
            w = reader.layer(layer)
            b = w["b_O"] + torch.einsum("he,hed->d", w["b_V"], w["W_O"])
            post_w = w["post_w"]
            del w  # (one layer's weights at a time)
            if bool(b.ne(0).any()):  # through the frozen post-norm, like the heads' outputs
                b = b.expand(P, D) if post_scale is None else through_post_norm(b, post_scale[layer, :, None], post_w)
                labels.append(f"bias L{layer}"), layers.append(layer + 1), vecs.append(b)
        if acts["mlp_out"] is not None:
            labels.append(f"mlp L{layer}"), layers.append(layer + 1), vecs.append(acts["mlp_out"][layer, 0])
    final = acts["final_resid"][0]
    scale = _final_scale(cfg, final)
    return FrozenRun(model=model if isinstance(getattr(model, "cfg", None), ModelConfig) else src,
                     tokens=toks[0].clone(), patterns=patterns,
                     ln_scale=acts["ln1_scale"][:, 0] if acts["ln1_scale"] is not None else None,
                     final_scale=scale[:, 0] if scale is not None else None, source_labels=labels,
                     source_layer=layers, sources=torch.stack(vecs), final_resid=final, W_V=None, W_O=None,
                     lnf_w=None, b_U=None, dt=dt, attention=attention, post_scale=post_scale, reader=reader)
