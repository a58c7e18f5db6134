"""`ModelConfig`: the shapes and architecture switches of a `Transformer`."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

NORMALIZATIONS = (None, "LN", "LNPre", "RMS", "RMSPre")
POSITIONALS = ("standard", "shortformer", "none", "rotary")
ACT_FNS = ("gelu_new", "gelu", "relu", "silu", "gelu_pytorch_tanh")
ROTARY_LAYOUTS = ("half", "interleaved")
ROPE_SCALING_KEYS = {"linear": ("factor",),
                     "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
                     "yarn": ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow",
                              "attention_factor"),
                     # (and "short_factor": one positive number per rotated pair)
                     "longrope": ("original_max_position_embeddings", "attention_factor")}
QK_NORM_SCOPES = ("head", "all")


@dataclass
class ModelConfig:
    """Architecture of a decoder-only transformer (row-vector convention, as in TransformerLens).

    normalization: None (no LayerNorm), "LN" (LayerNorm with weight and bias), "LNPre"
    (centre and scale only: what `fold_layernorm` leaves behind), "RMS" (`x / rms(x) * w`, no
    centring, no bias; Gemma's `(1 + w)` is converted to `w` at load time) or "RMSPre" (`x / rms(x)`:
    what folding an RMS model leaves behind).
    positional: "standard" (W_pos added to the residual stream), "shortformer" (W_pos added
    only to the inputs of W_Q and W_K, never written to the residual stream), "rotary" (queries
    and keys rotated by position, see `rotary.py`; no W_pos) or "none".
    biases: whether the attention (b_Q, b_K, b_V, b_O), MLP and unembedding biases exist.
    attn_scale: attention scores are divided by this; defaults to sqrt(d_head).

    Architectures beyond GPT-2 (every default keeps the GPT-2 / attention-only behaviour):
    n_kv_heads: K/V heads shared by groups of n_heads // n_kv_heads query heads (grouped-query;
        1 = multi-query); None = n_heads. Query head h reads K/V head `kv_head_of(h)`.
    rotary_dim (None = d_head; fewer = partial rotary, the rest unrotated), rotary_base,
    rotary_layout ("half": pairs (m, m + rotary_dim/2) as GPT-NeoX / Llama in Hugging Face;
        "interleaved": pairs (2m, 2m+1) as GPT-J), rope_scaling (None, {"rope_type": "linear",
        "factor"} or Llama 3's {"rope_type": "llama3", "factor", "low_freq_factor",
        "high_freq_factor", "original_max_position_embeddings"} or YaRN's {"rope_type": "yarn", "factor",
        "original_max_position_embeddings", "beta_fast", "beta_slow", "attention_factor"}: the
        frequencies ramp between interpolated and original, and cos/sin are multiplied by
        attention_factor, so the rotated part of every attention score by its square; or LongRoPE's
        {"rope_type": "longrope", "short_factor", "original_max_position_embeddings", "attention_factor"}:
        each frequency divided by its own factor, the tables scaled as YaRN's; the short-context factors
        only, so n_ctx may not exceed original_max_position_embeddings),
    rotary_base_sliding: the base of sliding-window layers when it differs (Gemma 3; no scaling there),
    rotary_table_dtype: None (cos/sin in the model's dtype: exact) or "float32" (computed in
        float32 then cast, as Hugging Face does even for float64 models; set by `from_hf`).
    gated_mlp: MLP is `(act(x W_gate + b_gate) * (x W_in + b_in)) W_out` (SwiGLU, GeGLU).
    parallel_attn_mlp: attention and MLP both read the block input (GPT-NeoX, GPT-J, Phi).
    qk_norm: RMS-normalise queries and keys before rotary (weights q_norm_w, k_norm_w);
        qk_norm_scope "head" (over each head's d_head: Qwen3, Gemma 3) or "all" (over all heads
        of the projection together: OLMo-2).
    pre_norm / post_norm: normalise the input of attention and MLP (ln1, ln2) / their outputs
        before they are added to the residual stream (ln1_post, ln2_post: Gemma 2/3; OLMo-2 has
        post-norms only). Post-norm weights are never folded ("LNPre"/"RMSPre" keep them).
    embed_scale: the embedding is multiplied by this (Gemma: sqrt(d_model)).
    attn_softcap, final_softcap: `cap * tanh(x / cap)` on attention scores / logits (Gemma 2).
    sliding_window: a query at i sees keys j with i - j < sliding_window, on the layers
        sliding_window_layers (None = every layer).
    tied_embeddings: W_U is W_E transposed (one tensor, `model.W_U` is a view of `W_E`).
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
    n_kv_heads: int | None = None
    rotary_dim: int | None = None
    rotary_base: float = 10000.0
    rotary_layout: str = "half"
    rope_scaling: dict | None = None
    rotary_base_sliding: float | None = None
    rotary_table_dtype: str | None = None
    gated_mlp: bool = False
    parallel_attn_mlp: bool = False
    qk_norm: bool = False
    qk_norm_scope: str = "head"
    pre_norm: bool = True
    post_norm: bool = False
    embed_scale: float = 1.0
    attn_softcap: float | None = None
    final_softcap: float | None = None
    sliding_window: int | None = None
    sliding_window_layers: list[int] | None = None
    tied_embeddings: bool = False

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
        self._check_architecture()

    # ------------------------------------------------------------------ architectures beyond GPT-2
    def _check_architecture(self) -> None:
        def positive_int(f: str, hi: int | None = None) -> None:
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1 or (hi is not None and v > hi):
                rng = f"in [1, {hi}]" if hi is not None else "a positive integer"
                raise ValueError(f"ModelConfig.{f} must be {rng}, got {v!r}")

        def positive_float(f: str) -> None:
            v = getattr(self, f)
            if not _positive_finite(v):  # also an int beyond any float (10**400)
                raise ValueError(f"ModelConfig.{f} must be a positive finite number, got {v!r}")
            setattr(self, f, float(v))

        for f in ("gated_mlp", "parallel_attn_mlp", "qk_norm", "pre_norm", "post_norm", "tied_embeddings"):
            if not isinstance(getattr(self, f), bool):
                raise ValueError(f"ModelConfig.{f} must be True or False, got {getattr(self, f)!r}")
        if self.n_kv_heads is not None:
            positive_int("n_kv_heads", self.n_heads)
            if self.n_heads % self.n_kv_heads:
                raise ValueError(f"ModelConfig.n_kv_heads must divide n_heads={self.n_heads}, got {self.n_kv_heads}")
        if self.rotary_dim is not None:
            positive_int("rotary_dim", self.d_head)
            if self.rotary_dim % 2:
                raise ValueError(f"ModelConfig.rotary_dim must be even (rotation pairs), got {self.rotary_dim}")
        elif self.positional == "rotary" and self.d_head % 2:
            raise ValueError(f"ModelConfig.d_head must be even for rotary positions (or set an even "
                             f"rotary_dim), got {self.d_head}")
        positive_float("rotary_base")
        if self.rotary_base_sliding is not None:
            positive_float("rotary_base_sliding")
        if self.rotary_layout not in ROTARY_LAYOUTS:
            raise ValueError(f"ModelConfig.rotary_layout must be one of {ROTARY_LAYOUTS}, got {self.rotary_layout!r}")
        if self.rotary_table_dtype not in (None, "float32"):
            raise ValueError(
                f"ModelConfig.rotary_table_dtype must be None or 'float32', got {self.rotary_table_dtype!r}")
        if self.rope_scaling is not None:
            rs = self.rope_scaling
            kind = rs.get("rope_type") if isinstance(rs, dict) else None
            if not isinstance(kind, str) or kind not in ROPE_SCALING_KEYS:  # (a list is unhashable)
                raise ValueError(f"ModelConfig.rope_scaling must be None or a dict with rope_type in "
                                 f"{tuple(ROPE_SCALING_KEYS)}, got {rs!r}")
            for k in ROPE_SCALING_KEYS[kind]:
                v = rs.get(k)
                if not _positive_finite(v):
                    raise ValueError(f"ModelConfig.rope_scaling[{k!r}] must be a positive number for "
                                     f"rope_type {kind!r}, got {v!r}")
            extra = {}
            if kind == "longrope":
                sf, n = rs.get("short_factor"), self.rotary_dims // 2 if self.positional == "rotary" else None
                if not isinstance(sf, (list, tuple)) or len(sf) != n or not all(_positive_finite(v) for v in sf):
                    raise ValueError(f"ModelConfig.rope_scaling['short_factor'] must be {n} positive numbers (one "
                                     f"per rotated pair) for rope_type 'longrope', got {sf!r}")
                if self.n_ctx > rs["original_max_position_embeddings"]:
                    raise ValueError(f"ModelConfig.n_ctx={self.n_ctx} exceeds rope_scaling"
                                     f"['original_max_position_embeddings']={rs['original_max_position_embeddings']}: "
                                     "only LongRoPE's short-context factors are supported")
                extra = {"short_factor": [float(v) for v in sf]}
            if kind == "yarn" and not rs["beta_fast"] > rs["beta_slow"]:
                raise ValueError("ModelConfig.rope_scaling['beta_fast'] must exceed 'beta_slow', "
                                 f"got {rs['beta_fast']} <= {rs['beta_slow']}")
            if kind == "llama3" and not rs["high_freq_factor"] > rs["low_freq_factor"]:
                raise ValueError("ModelConfig.rope_scaling['high_freq_factor'] must exceed 'low_freq_factor', "
                                 f"got {rs['high_freq_factor']} <= {rs['low_freq_factor']}")
            self.rope_scaling = {"rope_type": kind, **{k: float(rs[k]) for k in ROPE_SCALING_KEYS[kind]}, **extra}
        if self.qk_norm_scope not in QK_NORM_SCOPES:
            raise ValueError(f"ModelConfig.qk_norm_scope must be one of {QK_NORM_SCOPES}, got {self.qk_norm_scope!r}")
        for f, v in (("pre_norm", False), ("post_norm", True)):
            if getattr(self, f) is v and self.normalization is None:
                raise ValueError(f"ModelConfig.{f}={v} needs a normalization ('LN', 'LNPre', 'RMS' or 'RMSPre'), "
                                 "got None")
        if self.gated_mlp and self.attn_only:
            raise ValueError("ModelConfig.gated_mlp=True needs an MLP (attn_only=False)")
        if self.parallel_attn_mlp and self.attn_only:
            raise ValueError("ModelConfig.parallel_attn_mlp=True needs an MLP (attn_only=False)")
        positive_float("embed_scale")
        for f in ("attn_softcap", "final_softcap"):
            if getattr(self, f) is not None:
                positive_float(f)
        if self.sliding_window is not None:  # beyond n_ctx's limit it is no window (and overflows int64)
            positive_int("sliding_window", INT_RANGES["n_ctx"][1])
        if self.sliding_window_layers is not None:
            if self.sliding_window is None:
                raise ValueError("ModelConfig.sliding_window_layers needs sliding_window to be set")
            layers = self.sliding_window_layers
            if not isinstance(layers, (list, tuple)) or any(
                    not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < self.n_layers for i in layers):
                raise ValueError(f"ModelConfig.sliding_window_layers must be a list of layer indices in "
                                 f"[0, {self.n_layers}), got {layers!r}")
            self.sliding_window_layers = sorted(set(layers))
        if self.rotary_base_sliding is not None and self.sliding_window is None:
            raise ValueError("ModelConfig.rotary_base_sliding needs sliding_window to be set")

    @property
    def n_kv(self) -> int:
        """Number of stored K/V heads (n_kv_heads, or n_heads when None)."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def grouped_kv(self) -> bool:
        """Whether K/V heads are shared (stored once as `_W_K`/`_W_V` `[layer, n_kv_heads, ...]`)."""
        return self.n_kv != self.n_heads

    @property
    def kv_group_size(self) -> int:
        """Query heads per K/V head."""
        return self.n_heads // self.n_kv

    def kv_head_of(self, head: int) -> int:
        """The K/V head query head `head` reads (Hugging Face's `repeat_kv` order: consecutive heads share)."""
        if not 0 <= head < self.n_heads:
            raise ValueError(f"head must be in [0, {self.n_heads}), got {head}")
        return head // self.kv_group_size

    def kv_group(self, kv_head: int) -> list[int]:
        """The query heads that read K/V head `kv_head`."""
        if not 0 <= kv_head < self.n_kv:
            raise ValueError(f"kv_head must be in [0, {self.n_kv}), got {kv_head}")
        g = self.kv_group_size
        return list(range(kv_head * g, (kv_head + 1) * g))

    @property
    def rotary_dims(self) -> int:
        """Dimensions of each head that rotate (rotary_dim, or d_head when None)."""
        return self.d_head if self.rotary_dim is None else self.rotary_dim

    def is_sliding(self, layer: int) -> bool:
        """Whether attention in `layer` is restricted to a sliding window."""
        if self.sliding_window is None:
            return False
        return self.sliding_window_layers is None or layer in self.sliding_window_layers

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
