"""Rotary positions: every piece of rotary maths in one place.

Head vectors are rows (`q = x W_Q`), as everywhere in this package. Position `p` rotates each
pair of dimensions `(a_m, b_m)`, m < rotary_dim / 2, by the angle `p * theta_m`:

    out[a] = x[a] cos - x[b] sin,    out[b] = x[b] cos + x[a] sin,

i.e. `out = x R(p)` with `R[a, a] = R[b, b] = cos`, `R[a, b] = sin`, `R[b, a] = -sin`. The pairs are
`(m, m + rotary_dim/2)` for the "half" layout (GPT-NeoX, Llama, ... in Hugging Face: "rotate half")
and `(2m, 2m + 1)` for "interleaved" (GPT-J); dimensions from rotary_dim on are not rotated.
Rotations in the same planes commute and `R(p)ᵀ = R(-p)`, so with `q_i = x_i W_Q R(i)` and
`k_j = x_j W_K R(j)`:

    q_i · k_j = x_i W_Q R(i) R(j)ᵀ W_Kᵀ x_jᵀ = x_i W_Q R(i - j) W_Kᵀ x_jᵀ,

which is what `rotation_matrix(cfg, delta)` gives: the QK circuit of a rotary model is a function
of the offset Δ = i - j, `W_QK(Δ) = W_Q R(Δ) W_Kᵀ`.

Frequencies: `theta_m = base^(-2m / rotary_dim)`, then the checkpoint's declared scaling
("linear": divided by `factor`; "llama3": Llama 3.1's frequency-dependent rescaling; "yarn": YaRN's ramp
between interpolated and original frequencies, with cos and sin multiplied by `attention_factor`, so the
QK circuit's matrix between W_Q and W_Kᵀ is `attention_factor² R(Δ)` on the rotated dimensions:
`offset_matrix`; "longrope": each frequency divided by its own short-context factor, tables scaled as
YaRN's). Gemma 3's sliding-window layers use `rotary_base_sliding` and no scaling.
"""

from __future__ import annotations

import math

import torch

from .config import ModelConfig

__all__ = ["angles", "apply_rotary", "attention_factor", "cos_sin", "inv_freq", "offset_matrix", "rotate",
           "rotation_matrix"]


def _layer_params(cfg: ModelConfig, layer: int | None) -> tuple[float, dict | None]:
    if cfg.rotary_base_sliding is not None:
        if layer is None:
            raise ValueError("this model's sliding-window layers use another rotary base "
                             f"({cfg.rotary_base_sliding} vs {cfg.rotary_base}): pass layer=")
        if cfg.is_sliding(layer):
            return cfg.rotary_base_sliding, None
    return cfg.rotary_base, cfg.rope_scaling


def inv_freq(cfg: ModelConfig, layer: int | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """`theta_m`, `[rotary_dim // 2]`, computed in `dtype` (the same operations as Hugging Face's)."""
    if cfg.positional != "rotary":
        raise ValueError(f"this model has no rotary positions (positional={cfg.positional!r})")
    base, scaling = _layer_params(cfg, layer)
    r = cfg.rotary_dims
    pos_freqs = base ** (torch.arange(0, r, 2, dtype=dtype) / r)  # base^(2m / rotary_dim)
    inv = 1.0 / pos_freqs
    if scaling is None:
        return inv
    if scaling["rope_type"] == "longrope":  # one factor per frequency (the short-context set)
        return 1.0 / (torch.tensor(scaling["short_factor"], dtype=dtype) * pos_freqs)
    if scaling["rope_type"] == "yarn":
        return _yarn_inv_freq(base, r, pos_freqs, scaling)
    factor = scaling["factor"]
    if scaling["rope_type"] == "linear":
        return inv / factor
    # llama3: long wavelengths slowed down by `factor`, short ones kept, a smooth ramp in between
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_ctx = scaling["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = old_ctx / low, old_ctx / high
    wavelen = 2 * math.pi / inv
    inv_scaled = torch.where(wavelen > low_freq_wavelen, inv / factor, inv)
    smooth = (old_ctx / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * inv_scaled / factor + smooth * inv_scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, inv_scaled)


def _yarn_inv_freq(base: float, dim: int, pos_freqs: torch.Tensor, scaling: dict) -> torch.Tensor:
    """YaRN: dimensions that turn fewer than `beta_slow` times over the original context are interpolated
    (divided by `factor`), those turning more than `beta_fast` times kept, a linear ramp between (the
    correction range truncated to whole dimensions). Hugging Face's operations, in `pos_freqs`' dtype."""
    factor, old_ctx = scaling["factor"], scaling["original_max_position_embeddings"]

    def correction_dim(n_rotations: float) -> float:
        return (dim * math.log(old_ctx / (n_rotations * 2 * math.pi))) / (2 * math.log(base))

    low = max(math.floor(correction_dim(scaling["beta_fast"])), 0)
    high = min(math.ceil(correction_dim(scaling["beta_slow"])), dim - 1)
    if low == high:
        high += 0.001  # (as Hugging Face: no division by zero)
    ramp = ((torch.arange(dim // 2, dtype=pos_freqs.dtype) - low) / (high - low)).clamp(0, 1)
    extrapolation = 1 - ramp  # the share of the original frequency
    return 1.0 / (factor * pos_freqs) * (1 - extrapolation) + 1.0 / pos_freqs * extrapolation


def attention_factor(cfg: ModelConfig, layer: int | None = None) -> float:
    """The factor YaRN and LongRoPE multiply cos and sin by (1.0 otherwise): the rotated part of a query and
    of a key each carry it, so the rotated part of `q · k` carries its square."""
    scaling = _layer_params(cfg, layer)[1]
    return float(scaling.get("attention_factor", 1.0)) if scaling else 1.0


def angles(cfg: ModelConfig, positions: torch.Tensor, layer: int | None = None,
           dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """`positions[:, None] * theta[None, :]`, `[pos, rotary_dim // 2]`."""
    freq = inv_freq(cfg, layer, dtype).to(torch.as_tensor(positions).device)
    return torch.as_tensor(positions).to(dtype)[..., None] * freq


def cos_sin(cfg: ModelConfig, positions: torch.Tensor, layer: int | None = None,
            dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of `angles`, `[pos, rotary_dim // 2]` each, in `dtype`. With
    `cfg.rotary_table_dtype == "float32"` they are computed in float32 and cast (Hugging Face's
    tables, reproduced exactly); otherwise in `dtype`, but never in a 16-bit type: bfloat16 spaces
    numbers 1 apart between 128 and 256, so angles `position * inv_freq` computed in it are off by up
    to half a radian there (cos off by 0.5), and a model run under bfloat16 autocast would compute
    its attention scores from the wrong rotations."""
    half = dtype in (torch.float16, torch.bfloat16)
    table = torch.float32 if cfg.rotary_table_dtype == "float32" or half else dtype
    a = angles(cfg, positions, layer, table)
    s = attention_factor(cfg, layer)
    if s != 1.0:  # YaRN / LongRoPE (Hugging Face scales the tables in their own dtype, then casts)
        return (a.cos() * s).to(dtype), (a.sin() * s).to(dtype)
    return a.cos().to(dtype), a.sin().to(dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Rotate `x [..., pos, d_head]` by the tables `cos, sin [pos, rotary_dim // 2]`."""
    r = cfg.rotary_dims
    xr, rest = x[..., :r], x[..., r:]
    if cfg.rotary_layout == "half":
        x1, x2 = xr[..., : r // 2], xr[..., r // 2:]
        out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    else:
        x1, x2 = xr[..., 0::2], xr[..., 1::2]
        out = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
    return torch.cat((out, rest), dim=-1) if rest.shape[-1] else out


def apply_rotary(x: torch.Tensor, positions: torch.Tensor, cfg: ModelConfig, layer: int | None = None) -> torch.Tensor:
    """`x [..., pos, d_head]` with the row at position `positions[p]` rotated: `x[p] R(positions[p])`."""
    cos, sin = cos_sin(cfg, positions, layer, x.dtype)
    return rotate(x, cos.to(x.device), sin.to(x.device), cfg)


def rotation_matrix(cfg: ModelConfig, delta: int | float, layer: int | None = None,
                    dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """`R(delta)`, `[d_head, d_head]`, with `x R(delta)` = `x` rotated by offset `delta`, so that
    `(x_i W_Q R(i)) · (x_j W_K R(j)) = x_i W_Q R(i - j) W_Kᵀ x_jᵀ`. Angles in `dtype` (exact; a
    model with `rotary_table_dtype="float32"` rotates with float32-rounded angles in its forward)."""
    a = angles(cfg, torch.tensor([delta], dtype=dtype), layer, dtype)[0]
    c, s = a.cos(), a.sin()
    half = cfg.rotary_dims // 2
    idx = torch.arange(half)
    a_idx, b_idx = (idx, idx + half) if cfg.rotary_layout == "half" else (2 * idx, 2 * idx + 1)
    R = torch.eye(cfg.d_head, dtype=dtype)
    R[a_idx, a_idx] = c
    R[b_idx, b_idx] = c
    R[a_idx, b_idx] = s
    R[b_idx, a_idx] = -s
    return R


def offset_matrix(cfg: ModelConfig, offset, layer: int | None = None,
                  dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The matrix between `W_Q` and `W_Kᵀ` in the QK circuit at `offset`, `[d_head, d_head]`:
    `R(Δ)` for one offset Δ (an int), the mean of `R(Δ)` over Δ for a sequence of offsets (the QK
    circuit averaged over those query - key distances; not a rotation). `W_QK(Δ) = W_Q M W_Kᵀ`.
    YaRN / LongRoPE: the rotated block times `attention_factor(cfg)²` (what the forward's scaled tables give)."""
    if isinstance(offset, (int, float)) and not isinstance(offset, bool):
        M = rotation_matrix(cfg, offset, layer, dtype)
    else:
        offs = list(offset)
        if not offs:
            raise ValueError("offset: an empty sequence of offsets")
        M = torch.stack([rotation_matrix(cfg, d, layer, dtype) for d in offs]).mean(0)
    s = attention_factor(cfg, layer)
    if s != 1.0:  # YaRN / LongRoPE: query and key each carry the factor on their rotated dimensions
        r = cfg.rotary_dims
        M[:r, :r] *= s * s
    return M
