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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        return cls(**d)
