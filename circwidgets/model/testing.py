"""Random models for tests: every parameter random (biases and LN weights included), so that
a mistake cannot hide behind a zero."""

from __future__ import annotations

import torch

from .config import ModelConfig
from .transformer import Transformer, is_norm_weight


@torch.no_grad()
def random_model(cfg: ModelConfig | None = None, seed: int = 0, dtype: torch.dtype = torch.float64,
                 std: float = 0.5, **cfg_kwargs) -> Transformer:
    """A `Transformer` with all parameters drawn N(0, std^2 / fan-in-ish); LN weights near 1.

    `random_model(n_layers=2, d_model=16, n_heads=3, d_head=4, d_vocab=11, n_ctx=9)`.
    """
    if cfg is None:
        defaults = dict(n_layers=2, d_model=16, n_heads=3, d_head=4, d_vocab=13, n_ctx=10)
        cfg = ModelConfig(**{**defaults, **cfg_kwargs})
    model = Transformer(cfg, seed=None).to(dtype)
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        r = torch.randn(p.shape, generator=g, dtype=torch.float64)
        if is_norm_weight(name):
            p.copy_(1.0 + 0.3 * r)
        elif name.startswith(("b_", "_b_", "ln")):
            p.copy_(0.3 * r)
        else:
            fan_in = 1 if name in ("W_E", "W_pos") else p.shape[-2]
            p.copy_(r * std * (3.0 / fan_in) ** 0.5)
    return model.eval()
