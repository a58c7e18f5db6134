"""`ModelConfig`: the shapes and architecture switches of a `Transformer`."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

NORMALIZATIONS = (None, "LN", "LNPre")
POSITIONALS = ("standard", "shortformer", "none")
ACT_FNS = ("gelu_new", "gelu", "relu")


@dataclass
class ModelConfig:
    """Architecture of a decoder-only transformer (row-vector convention, as in TransformerLens).

    normalization: None (no LayerNorm), "LN" (LayerNorm with weight and bias) or "LNPre"
    (centre and scale only: what `fold_layernorm` leaves behind).
    positional: "standard" (W_pos added to the residual stream), "shortformer" (W_pos added
    only to the inputs of W_Q and W_K, never written to the residual stream) or "none".
    biases: whether the attention (b_Q, b_K, b_V, b_O), MLP and unembedding biases exist.
    attn_scale: attention scores are divided by this; defaults to sqrt(d_head).
    """

    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_vocab: int
    n_ctx: int
    attn_only: bool = True
    d_mlp: int | None = None
    act_fn: str = "gelu_new"
    normalization: str | None = None
    positional: str = "standard"
    biases: bool = False
    ln_eps: float = 1e-5
    attn_scale: float | None = None
    bos_token_id: int | None = None
    name: str = ""

    def __post_init__(self) -> None:
        _check_fields(self)  # types and ranges of every field, each error naming the field
        for f in ("n_layers", "d_model", "n_heads", "d_head", "d_vocab", "n_ctx"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if f == "n_layers" else 1):
                raise ValueError(f"ModelConfig.{f} must be a positive integer, got {v!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"ModelConfig.normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.positional not in POSITIONALS:
            raise ValueError(f"ModelConfig.positional must be one of {POSITIONALS}, got {self.positional!r}")
        if not self.attn_only:
            if self.d_mlp is None:
                self.d_mlp = 4 * self.d_model
            if self.act_fn not in ACT_FNS:
                raise ValueError(f"ModelConfig.act_fn must be one of {ACT_FNS}, got {self.act_fn!r}")
        if self.attn_scale is None:
            self.attn_scale = math.sqrt(self.d_head)
        if self.bos_token_id is not None and not 0 <= self.bos_token_id < self.d_vocab:
            raise ValueError(f"ModelConfig.bos_token_id must be in [0, {self.d_vocab}), got {self.bos_token_id}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        if not isinstance(d, dict):
            raise ValueError(f"a ModelConfig is a JSON object (dict) of fields, got {type(d).__name__}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [f for f in required if f not in d]
        if missing:
            raise ValueError(f"ModelConfig.{missing[0]} is required (required fields: {required})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(map(str, unknown))}")
        return cls(**d)


# Allowed ranges. The upper bounds are far beyond any model this library can analyse; they exist so
# that a corrupt or hostile config (n_ctx 1e12) is refused up front instead of allocating forever.
INT_RANGES = {"n_layers": (0, 1024), "d_model": (1, 2**16), "n_heads": (1, 1024), "d_head": (1, 2**14),
              "d_vocab": (1, 2**22), "n_ctx": (1, 2**20), "d_mlp": (1, 2**20)}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive_finite(v) -> bool:
    if not _is_real(v):
        return False
    try:
        x = float(v)
    except OverflowError:  # an int beyond any float
        return False
    return math.isfinite(x) and x > 0


def _check_fields(cfg: ModelConfig) -> None:
    """Raise `ValueError` naming the first field whose type or value is out of its allowed range."""
    for f, (lo, hi) in INT_RANGES.items():
        v = getattr(cfg, f)
        if f == "d_mlp" and v is None:
            continue
        if not _is_int(v) or not lo <= v <= hi:
            raise ValueError(f"ModelConfig.{f} must be an integer in [{lo}, {hi}]"
                             f"{' or None' if f == 'd_mlp' else ''}, got {v!r}")
    for f in ("attn_only", "biases"):
        if not isinstance(getattr(cfg, f), bool):
            raise ValueError(f"ModelConfig.{f} must be true or false (a bool), got {getattr(cfg, f)!r}")
    for f in ("normalization", "positional", "act_fn", "name"):
        v = getattr(cfg, f)
        if not (isinstance(v, str) or (v is None and f == "normalization")):
            raise ValueError(f"ModelConfig.{f} must be a string{' or None' if f == 'normalization' else ''}, "
                             f"got {v!r}")
    if not _positive_finite(cfg.ln_eps):
        raise ValueError(f"ModelConfig.ln_eps must be a finite number > 0, got {cfg.ln_eps!r}")
    s = cfg.attn_scale
    if s is not None and not _positive_finite(s):
        raise ValueError(f"ModelConfig.attn_scale must be a finite number > 0 (attention scores are divided by "
                         f"it) or None for sqrt(d_head), got {s!r}")
    if cfg.bos_token_id is not None and not _is_int(cfg.bos_token_id):
        raise ValueError(f"ModelConfig.bos_token_id must be an integer in [0, {cfg.d_vocab}) or None, "
                         f"got {cfg.bos_token_id!r}")
