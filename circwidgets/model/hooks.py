"""Hook names (TransformerLens-compatible) and the activation cache."""

from __future__ import annotations

from collections.abc import Callable

import torch

_ATTN = {"q", "k", "v", "rot_q", "rot_k", "z", "result", "attn_scores", "pattern"}
_BLOCK = {"resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"}
_MLP = {"pre", "pre_linear", "post"}
_TOP = {"embed", "pos_embed"}


def get_act_name(name: str, layer: int | None = None, sub: str | None = None) -> str:
    """Full hook name from a short one, as TransformerLens' `utils.get_act_name`.

    `get_act_name("pattern", 0)` -> "blocks.0.attn.hook_pattern";
    `get_act_name("scale", 0, "ln1")` -> "blocks.0.ln1.hook_scale";
    `get_act_name("scale")` -> "ln_final.hook_scale".
    """
    if "." in name or name.startswith("hook_"):
        return name
    if name in _TOP:
        return f"hook_{name}"
    if name in ("scale", "normalized"):
        if layer is None:
            return f"ln_final.hook_{name}"
        return f"blocks.{layer}.{sub or 'ln1'}.hook_{name}"
    if layer is None:
        raise KeyError(f"activation {name!r} needs a layer index")
    if name in _ATTN:
        return f"blocks.{layer}.attn.hook_{name}"
    if name in _BLOCK:
        return f"blocks.{layer}.hook_{name}"
    if name in _MLP:
        return f"blocks.{layer}.mlp.hook_{name}"
    raise KeyError(f"unknown activation name {name!r}")


class HookPoint:
    """What a hook function receives as its second argument (name and layer of the activation)."""

    def __init__(self, name: str):
        self.name = name

    def layer(self) -> int | None:
        parts = self.name.split(".")
        return int(parts[1]) if parts[0] == "blocks" else None

    def __repr__(self) -> str:
        return f"HookPoint({self.name!r})"


HookFn = Callable[[torch.Tensor, HookPoint], "torch.Tensor | None"]


class ActivationCache(dict):
    """Dict of activations keyed by full hook name; also indexable as `cache["pattern", layer]`.

    Shapes (batch first): resid_* / attn_out / mlp_out / embed `[batch, pos, d_model]`;
    q, k, v, z `[batch, pos, head, d_head]` (k, v per query head with grouped-query attention;
    rotary models also have rot_q, rot_k: after the rotation); result `[batch, pos, head, d_model]`;
    attn_scores, pattern `[batch, head, query, key]`; scale `[batch, pos, 1]`;
    mlp pre/post (and pre_linear for gated MLPs) `[batch, pos, d_mlp]`.
    """

    def __getitem__(self, key):
        if isinstance(key, tuple):
            key = get_act_name(*key)
        elif isinstance(key, str) and key not in self and "." not in key:
            key = get_act_name(key)
        return super().__getitem__(key)

    def __contains__(self, key) -> bool:
        if isinstance(key, tuple):
            key = get_act_name(*key)
        return super().__contains__(key)

    def to(self, device) -> ActivationCache:
        return ActivationCache({k: v.to(device) for k, v in self.items()})

    def remove_batch_dim(self) -> ActivationCache:
        return ActivationCache({k: v[0] for k, v in self.items()})
