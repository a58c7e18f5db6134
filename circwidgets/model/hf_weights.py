"""The weights of a Hugging Face module, also one dispatched by accelerate (`device_map=...`, layers on
several devices, in CPU memory or offloaded to disk), read tensor by tensor.

A model loaded with `device_map` has accelerate hooks on its modules; a layer offloaded to the CPU or
to disk (`offload_folder`) keeps its parameters on the `meta` device and its values in the hook's
`weights_map` (a dict or memory-mapped files), moved in only for the module's own forward pass. So
`model.state_dict()` holds meta tensors there. `resolve_tensor` reads the value from the hook, and
`resolved_state_dict` gives the whole state dict with real tensors (on the CPU), a tied parameter
resolved once (the embedding and the unembedding stay one tensor, as in the undispatched model).

`ModuleWeights` is the lazy model's per-layer converter (`lazy.LazyModel`) over a module's tensors
instead of a checkpoint's files: path expansion of an nnsight / Hugging Face model reads one layer's
weights at a time through it, offloaded layers included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .lazy import LazyModel

__all__ = ["ModuleWeights", "is_dispatched", "resolve_tensor", "resolved_state_dict"]


def is_dispatched(module: Any) -> bool:
    """Whether `module` was placed by accelerate (`device_map`): it has an `hf_device_map` or hooks."""
    if not isinstance(module, torch.nn.Module):
        return False
    return bool(getattr(module, "hf_device_map", None)) or any(hasattr(m, "_hf_hook") for m in module.modules())


def _hooks(module: torch.nn.Module) -> list:
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    return list(getattr(hook, "hooks", None) or [hook])  # a SequentialHook holds several


def resolve_tensor(root: torch.nn.Module, name: str, tensor: torch.Tensor) -> torch.Tensor:
    """The value of parameter / buffer `name` of `root`: `tensor` itself, or, when accelerate offloaded
    it (a meta tensor), the copy its module's hook holds (CPU memory or a file in `offload_folder`)."""
    if not tensor.is_meta:
        return tensor.detach()
    owner, _, leaf = name.rpartition(".")
    module = root.get_submodule(owner) if owner else root
    for hook in _hooks(module):
        wm = getattr(hook, "weights_map", None)
        if wm is None:
            continue
        try:
            value = wm[leaf]
        except KeyError:
            continue
        return torch.as_tensor(value).detach().to(tensor.dtype)
    raise ValueError(f"{name} is on the meta device and no accelerate hook holds its value: the model's weights "
                     "are not here (a remote nnsight model? load it locally, or pass weights= a checkpoint "
                     "directory read lazily)")


def resolved_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`module.state_dict()` with offloaded (meta) tensors replaced by their values, on the CPU; a tied
    parameter is read once, so tied entries stay one tensor."""
    done: dict[int, torch.Tensor] = {}
    out = {}
    for name, t in module.state_dict(keep_vars=True).items():
        key = id(t)
        if key not in done:
            done[key] = resolve_tensor(module, name, t).to("cpu")
        out[name] = done[key]
    return out


class ModuleWeights(LazyModel):
    """A Hugging Face module's weights through the lazy model's per-layer converter (`LazyModel`): one
    layer converted and folded at a time from the module's own tensors (offloaded ones read from their
    accelerate hook, one tensor at a time). No disk cache is written for it by path expansion."""

    def __init__(self, hf_model: torch.nn.Module, tokenizer: Any = None):
        self.hf = hf_model
        self.path = Path(f"<{type(hf_model).__name__} in memory>")
        self.hf_config = hf_model.config
        self._tensors = dict(hf_model.state_dict(keep_vars=True))  # references; meta where offloaded
        self._resolved: dict[int, torch.Tensor] = {}  # during the config's tie check only
        self._where = {n: "" for n in self._tensors}
        from .lazy import default_cache_dir

        self.cache_dir = default_cache_dir()
        self.block_rows = 8192
        self.reads = {}
        self._stored_dtype = None
        self._identity = f"module:{id(hf_model)}"
        self._memo = {}
        self.cfg = self._convert(layer=None, rows=None).cfg
        self._resolved.clear()  # (offloaded embeddings read for the tie check: not kept)
        self.tokenizer = None
        if tokenizer is not None:
            self._carry_tokenizer(tokenizer)

    def __repr__(self) -> str:
        c = self.cfg
        return f"ModuleWeights({type(self.hf).__name__}, n_layers={c.n_layers}, n_heads={c.n_heads})"

    def _spec(self, name: str) -> tuple[torch.dtype, tuple[int, ...]]:
        t = self._tensors[name]
        return t.dtype, tuple(t.shape)

    def _view(self, name: str) -> torch.Tensor:
        """The tensor's value; tied parameters give one tensor (the converter's tie check compares them)."""
        t = self._tensors[name]
        if id(t) not in self._resolved:
            self._resolved[id(t)] = resolve_tensor(self.hf, name, t).to("cpu")
        return self._resolved[id(t)]

    def raw(self, name: str, rows: slice | torch.Tensor | None = None) -> torch.Tensor:
        """The module's tensor `name` (or its rows `rows`; a reference when in memory; read from its hook
        when offloaded)."""
        self.reads[name] = self.reads.get(name, 0) + 1
        t = resolve_tensor(self.hf, name, self._tensors[name]).to("cpu")
        return t if rows is None else t[rows]
