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


@torch.no_grad()
def rotated(model: Transformer, seed: int = 1, keep_ones: bool = False) -> Transformer:
    """The same function in another basis of the residual stream: every weight that reads the stream
    multiplied by `Rᵀ` on the left, every weight that writes it by `R` on the right, for a random
    orthogonal `R` drawn from `seed` (the QR of a standard normal `[d_model, d_model]` float64 matrix).

    Without LN any R works. LN centres and normalises: it commutes with R only when R maps the
    all-ones direction to itself (`keep_ones=True`), and LN's elementwise weights never commute, so
    LN models are rotated after folding (normalization "LNPre")."""
    g = torch.Generator().manual_seed(seed)
    D = model.cfg.d_model
    R, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    if keep_ones:
        basis, _ = torch.linalg.qr(torch.cat([torch.ones(D, 1, dtype=torch.float64),
                                              torch.randn(D, D - 1, generator=g, dtype=torch.float64)], 1))
        inner, _ = torch.linalg.qr(torch.randn(D - 1, D - 1, generator=g, dtype=torch.float64))
        block = torch.block_diag(torch.eye(1, dtype=torch.float64), inner)
        R = basis @ block @ basis.T  # orthogonal, R 1 = 1
    m = random_model(model.cfg, seed=99)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["W_E"] = sd["W_E"] @ R
    if "W_pos" in sd:
        sd["W_pos"] = sd["W_pos"] @ R
    for n in ("W_Q", "W_K", "W_V"):
        sd[n] = R.T @ sd[n]
    sd["W_O"] = sd["W_O"] @ R
    sd["W_U"] = R.T @ sd["W_U"]
    if "b_O" in sd:
        sd["b_O"] = sd["b_O"] @ R
    if "W_in" in sd:
        sd["W_in"] = R.T @ sd["W_in"]
        sd["W_out"] = sd["W_out"] @ R
        if "b_out" in sd:
            sd["b_out"] = sd["b_out"] @ R
    m.load_state_dict(sd)
    return m


def half_repeated_tokens(n_pos: int, d_vocab: int, seed: int = 0) -> torch.Tensor:
    """`[n_pos]` random token ids whose second half repeats the first: a text with induction positions."""
    t = torch.randint(0, d_vocab, (n_pos,), generator=torch.Generator().manual_seed(seed))
    t[n_pos // 2:] = t[: n_pos - n_pos // 2]
    return t


def varied_repeat_tokens(n_pos: int, d_vocab: int, seed: int = 0, stretch: tuple[int, int] = (4, 24)) -> torch.Tensor:
    """`[n_pos]` random token ids in which stretches of `stretch` tokens are copies of random earlier
    stretches (every other stretch), so that repeats occur at many distances, as in natural text."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, d_vocab, (n_pos,), generator=g)
    p, copy = stretch[1], False
    while p < n_pos:
        n = int(torch.randint(stretch[0], stretch[1] + 1, (1,), generator=g))
        n = min(n, n_pos - p)
        if copy:
            src = int(torch.randint(0, p - n + 1, (1,), generator=g))
            t[p:p + n] = t[src:src + n].clone()
        p, copy = p + n, not copy
    return t
