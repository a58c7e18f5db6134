"""Argument checks shared by the engine: every bad input names the argument and its allowed range."""

from __future__ import annotations

import torch

from ..model import Transformer


def check_layer(model: Transformer, layer: int, name: str = "layer") -> int:
    n = model.cfg.n_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not -n <= layer < n:
        raise IndexError(f"{name}={layer!r} is out of range: this model has layers 0..{n - 1}")
    return layer % n


def check_head(model: Transformer, head: int, name: str = "head") -> int:
    n = model.cfg.n_heads
    if isinstance(head, bool) or not isinstance(head, int) or not -n <= head < n:
        raise IndexError(f"{name}={head!r} is out of range: this model has heads 0..{n - 1}")
    return head % n


def check_layer_head(model: Transformer, layer: int, head: int) -> tuple[int, int]:
    return check_layer(model, layer), check_head(model, head)


def check_token(model: Transformer, token: int, name: str = "token") -> int:
    v = model.cfg.d_vocab
    if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < v:
        raise IndexError(f"{name}={token!r} is out of range: token ids are 0..{v - 1}")
    return token


def check_finite(model: Transformer) -> None:
    """Raise if any weight is NaN or infinite (a silent wrong number is worse than an error)."""
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise ValueError(f"model weight {name} contains NaN or inf values")
