"""Normalisation folding and centring, so that circuits of normalised models read as plain matrices.

A normalisation `y = norm(x) * w + b` is followed, in this model, only by linear maps (W_Q, W_K, W_V
after ln1, W_in after ln2, W_U after ln_final). Its weight `w` can therefore be multiplied into the
d_model rows of those reading matrices and its bias `b` turned into their biases (`b @ W`); what stays
in the model is the weight-free normalisation ("LNPre" for LayerNorm: centre, divide by the scale).
`center_writing` then removes the mean over d_model from everything written to the residual stream,
which a *centring* normalisation removes anyway (only when every reader centres: pre-norms and the final
norm; with a final LayerNorm alone the heads read the mean direction, and the final norm's centring is
put into W_U's rows instead); `center_unembed` shifts every logit at a position by
the same amount (log-probabilities unchanged). All of it leaves the logits unchanged.

The fold is one function, `fold_state_dict`, on a parameter dict: `fold_layernorm` builds a model from
it and the engine (`circwidgets.engine.prep.weights`) takes just its weight matrices. What depends on
the kind of normalisation is the table `FOLDS` (what the folded model's normalisation is called and
whether it centres); the per-site work is the same for every kind: fold `{site}_w` (and `{site}_b` when
the kind has one) into the readers. RMSNorm (weight, no bias, no centring) is the row "RMS" of `FOLDS`:
its fold is exact (`1 / rms(x)` is a positive per-token factor, like LayerNorm's scale), and nothing is
centred.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import torch

from .config import ModelConfig
from .transformer import Transformer, param_shapes

__all__ = ["FOLDS", "NormFold", "circuit_folds", "fold_layernorm", "fold_state_dict", "folded_weights"]


@dataclass(frozen=True)
class NormFold:
    """What folding does for one kind of normalisation.

    folded: the `ModelConfig.normalization` of the folded model (the same normalisation without
        weight and bias).
    centres: whether the normalisation subtracts the mean over d_model; only then may the writing
        weights be centred (their mean direction is invisible to every reader).
    """

    folded: str
    centres: bool


FOLDS: dict[str, NormFold] = {
    "LN": NormFold(folded="LNPre", centres=True),
    "LNPre": NormFold(folded="LNPre", centres=True),  # already weight-free: only the centring is left
    # RMSNorm x / rms(x) * w: w folds like LN's weight; no bias, no centring (the mean direction of the
    # residual stream is seen by the readers, so writing weights must not be centred)
    "RMS": NormFold(folded="RMSPre", centres=False),
    "RMSPre": NormFold(folded="RMSPre", centres=False),
}


@dataclass(frozen=True)
class _Site:
    """A normalisation site `{name}_w`/`{name}_b` and the (weight, bias) pairs that read its output.

    `scale` indexes the weight `[layer, d_model]` (or `[d_model]`) so that it broadcasts over a reader's
    d_model axis; `bias_eq` is the einsum `b @ W` over d_model."""

    name: str
    readers: tuple[tuple[str, str], ...]
    scale: tuple
    bias_eq: str


# shared K/V heads (grouped-query attention) are stored as _W_K / _W_V [layer, n_kv_heads, d_model, d_head]
# and read ln1 like W_K / W_V; a gated MLP's W_gate reads ln2 like W_in. Post-norms (ln1_post, ln2_post)
# and q/k norms are not followed by a linear map of their own: they stay in the model.
_SITES = (
    _Site("ln1", (("W_Q", "b_Q"), ("W_K", "b_K"), ("W_V", "b_V"), ("_W_K", "_b_K"), ("_W_V", "_b_V")),
          (slice(None), None, slice(None), None), "ld,lhde->lhe"),
    _Site("ln2", (("W_in", "b_in"), ("W_gate", "b_gate")), (slice(None), slice(None), None), "ld,ldm->lm"),
    _Site("ln_final", (("W_U", "b_U"),), (slice(None), None), "d,dv->v"),
)


def _bias_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    with_biases = ModelConfig.from_dict({**cfg.to_dict(), "biases": True})
    return {n: s for n, s in param_shapes(with_biases).items() if n.startswith(("b_", "_b_"))}


def fold_state_dict(
    state: dict[str, torch.Tensor], cfg: ModelConfig, *, center_writing: bool = True, center_unembed: bool = False,
    biases: bool = True,
) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """Fold the normalisation weights of a parameter dict into the matrices that read them.

    Returns a new dict (the input and its tensors are not modified; unchanged tensors are shared) and the
    folded model's config (`normalization=FOLDS[kind].folded`, `biases=True`). With `biases=False` the
    biases are neither folded nor created: only the weight matrices (and the normalisation weights, now
    gone) are handled, which is all the weights-only circuits need. Normalization None: returned as it
    is (no centring: without a normalisation the mean direction of the residual stream matters).
    Raises `ValueError` for a weighted normalisation in a shortformer model (positions enter after ln1,
    so scaling W_Q/W_K by the weight would also rescale the positional term: no exact fold exists).
    """
    if cfg.normalization is None:
        return dict(state), cfg
    if cfg.normalization not in FOLDS:
        raise NotImplementedError(f"no fold is defined for normalization {cfg.normalization!r}")
    kind = FOLDS[cfg.normalization]
    sd = dict(state)
    if cfg.positional == "shortformer" and "ln1_w" in sd:
        raise ValueError("fold_layernorm: LN weights cannot be folded exactly into a shortformer model "
                         "(positions enter after ln1); analyse the unfolded model instead")
    untie = cfg.tied_embeddings and "W_U" not in sd and "W_E" in sd  # (a partial dict without W_E: no W_U made)
    if untie:  # W_U = W_E^T until ln_final's weight (or centring) makes them differ: the fold unties them
        sd["W_U"] = sd["W_E"].T
    if biases:
        ref = sd["W_E"] if "W_E" in sd else next(iter(sd.values()))  # (a partial dict: one layer's tensors)
        dev, dt = ref.device, ref.dtype
        for name, shape in _bias_shapes(cfg).items():
            if name not in sd:
                sd[name] = torch.zeros(shape, device=dev, dtype=dt)
    for site in _SITES:
        w, b = sd.pop(f"{site.name}_w", None), sd.pop(f"{site.name}_b", None)
        for W_name, b_name in site.readers:
            if W_name not in sd or w is None:
                continue
            W = sd[W_name]
            if biases and b is not None:
                sd[b_name] = sd[b_name] + torch.einsum(site.bias_eq, b, W)
            sd[W_name] = W * w[site.scale]
    if center_writing and kind.centres and cfg.pre_norm:  # every reader of the stream centres
        writers = ("W_E", "W_O", "W_out") + (("b_O", "b_out") if biases else ())
        for name in writers + (("W_pos",) if cfg.positional == "standard" else ()):
            if name in sd:
                sd[name] = sd[name] - sd[name].mean(-1, keepdim=True)
    elif center_writing and kind.centres and "W_U" in sd:
        # a final LayerNorm alone: the heads read the raw stream (mean direction included), so the writers stay;
        # the final norm's centring C = I - 11ᵀ/d goes into its reader instead, `(Cx) W_U = x (C W_U)`, so that a
        # circuit ending in W_U (W_E W_OV W_U) is what the logits see
        sd["W_U"] = sd["W_U"] - sd["W_U"].mean(0, keepdim=True)
    if center_unembed:
        sd["W_U"] = sd["W_U"] - sd["W_U"].mean(-1, keepdim=True)
        if biases:
            sd["b_U"] = sd["b_U"] - sd["b_U"].mean()
    return sd, ModelConfig.from_dict({**cfg.to_dict(), "normalization": kind.folded, "biases": True,
                                      "tied_embeddings": cfg.tied_embeddings and not untie})


@torch.no_grad()
def fold_layernorm(model: Transformer, center_writing: bool = True, center_unembed: bool = False) -> Transformer:
    """A new model with the normalisation weights folded in (`normalization="LNPre"` for LN, "RMSPre" for
    RMS; a tied unembedding becomes untied once ln_final's weight is in it); the input is untouched. A
    model without normalisation comes back as a copy."""
    if model.cfg.normalization is None:
        return copy.deepcopy(model)
    sd, cfg = fold_state_dict(model.state_dict(), model.cfg, center_writing=center_writing,
                              center_unembed=center_unembed)
    dev, dt = model.W_E.device, model.W_E.dtype
    out = Transformer(cfg, seed=None).to(device=dev, dtype=dt)
    out.load_state_dict(sd)  # copies: the folded model shares no storage with the input
    out.tokenizer = model.tokenizer
    return out.eval()


@torch.no_grad()
def folded_weights(model: Transformer, names: Collection[str] | None = None) -> dict[str, torch.Tensor]:
    """The weight matrices (`W_*`) of `fold_layernorm(model)`, detached, without building a model:
    no copy of the weights folding leaves alone. Biases are not included. Grouped-query K/V weights
    come per query head (`W_K`, `W_V`) and as the shared heads they are copies of (`_W_K`, `_W_V`).
    names: only these matrices (e.g. `("W_in", "W_out")`): the others are neither folded nor copied."""
    want = None if names is None else set(names) | ({"W_E"} if "W_U" in names else set())  # tied: W_U from W_E
    params = {n: p.detach() for n, p in model.named_parameters()
              if want is None or not n.startswith(("W_", "_W_")) or n.lstrip("_") in want}
    sd, _ = fold_state_dict(params, model.cfg, biases=False)
    if model.cfg.tied_embeddings and "W_U" not in sd and "W_E" in sd:
        sd["W_U"] = sd["W_E"].T
    for name in ("W_K", "W_V"):  # grouped-query K/V: per query head, as every circuit reads them
        if "_" + name in sd:
            sd[name] = model.kv_expand(sd["_" + name])
    return {n: t for n, t in sd.items() if n.startswith(("W_", "_W_")) and (names is None or n.lstrip("_") in names)}


@torch.no_grad()
def circuit_folds(cfg: ModelConfig, w: dict[str, torch.Tensor], params: Mapping[str, torch.Tensor]
                  ) -> dict[str, torch.Tensor]:
    """What the circuits read beyond `fold_state_dict`, so that they match what the residual stream holds:
    `W_E` times `embed_scale`; per-head q/k norm weights (Qwen3, Gemma 3, OLMo-2) multiplied into `W_Q` /
    `W_K` / `_W_K`; post-norm weights (Gemma 2/3, OLMo-2) into `W_O` / `W_out`. The one definition for the
    eager engine (`engine.prep.weights`) and a lazy checkpoint's layers and vocabulary blocks, which must
    agree with it. `w`: folded matrices `[layer, ...]` (any of these), updated (new tensors) and returned;
    `params`: the model's `q_norm_w`, `k_norm_w`, `ln1_post_w`, `ln2_post_w` (those it has)."""
    if cfg.embed_scale != 1.0 and "W_E" in w:
        w["W_E"] = w["W_E"] * cfg.embed_scale
    if cfg.qk_norm and any(n in w for n in ("W_Q", "W_K", "_W_K")):
        qn, kn = params["q_norm_w"].detach(), params["k_norm_w"].detach()
        if cfg.qk_norm_scope == "head":  # [layer, d_head]: the same weight for every head of the layer
            q_scale, k_shared = qn[:, None, None, :], kn[:, None, None, :]
            k_scale = k_shared
        else:  # [layer, heads, d_head]; W_K per query head reads its K/V head's weight
            q_scale, k_shared = qn[:, :, None, :], kn[:, :, None, :]
            k_scale = k_shared.repeat_interleave(cfg.kv_group_size, 1) if cfg.grouped_kv else k_shared
        for name, scale in (("W_Q", q_scale), ("W_K", k_scale), ("_W_K", k_shared)):
            if name in w:
                w[name] = w[name] * scale
    if cfg.post_norm and "W_O" in w:  # the post-norm weight multiplies everything a block writes
        w["W_O"] = w["W_O"] * params["ln1_post_w"].detach()[:, None, None, :]
    if cfg.post_norm and "W_out" in w:
        w["W_out"] = w["W_out"] * params["ln2_post_w"].detach()[:, None, :]
    return w
