"""Converters into the project's one weight format (`Transformer`).

- `from_hf(model_or_state_dict)`: Hugging Face `gpt2`, `gpt_neox` (Pythia), `llama`, `mistral`, `qwen2`,
  `qwen3`, `gemma2`, `gemma3_text`, `olmo2`, `phi3`. HF GPT-2 stores its projections as `Conv1D`
  (`y = x @ W + b`, W `[in, out]`), our row convention; the other families use `nn.Linear`
  (`W [out, in]`), transposed here. Grouped-query K/V heads are stored once (`_W_K`), Gemma's
  `(1 + w)` norms become plain RMS weights, rotary tables are computed as HF does (float32).
- `from_transformer_lens(model)`: TransformerLens 3.x `HookedTransformer` and the `TransformerBridge`
  of TransformerLens 4.x (native models, and bridges over the HF families above, raw or after
  `enable_compatibility_mode()`). TransformerLens names and shapes are ours
  (`blocks.{l}.attn.W_Q [head, d_model, d_head]`, ...), so the mapping is a stacking over layers.

Both refuse, with a message naming the feature, what our `Transformer` cannot express (mixture of
experts, unknown rope scaling, ALiBi, ...), and by default run the source and the converted model
on the same random tokens and raise `ConversionError` if the logits differ (`check=True`): a
conversion is either right or an error, never silently wrong.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from .config import ModelConfig
from .tokenizer import Tokenizer
from .transformer import Transformer, from_tensors, param_shapes

__all__ = ["ConversionError", "from_hf", "from_transformer_lens"]


class ConversionError(ValueError):
    """The source model cannot be converted faithfully (unsupported feature, or logits differ).
    `tensor`: the source's tensor at fault (its name in the state dict), when one is."""

    def __init__(self, message: str, tensor: str | None = None):
        super().__init__(message)
        self.tensor = tensor


# activation names of HF / TransformerLens -> ours. gelu_pytorch_tanh and gelu_fast are the same
# tanh approximation as gelu_new, written differently.
_ACT_MAP = {
    "gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "gelu_fast": "gelu_new",
    "gelu": "gelu", "relu": "relu",
}

# TransformerLens act_fn names -> ours
_TL_ACTS = {**_ACT_MAP, "silu": "silu", "gelu_pytorch_tanh": "gelu_pytorch_tanh"}

# relative tolerance of the logits check, by the dtype the comparison runs in
_CHECK_RTOL = {torch.float64: 1e-6, torch.float32: 1e-4}


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (float64)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _build(cfg: ModelConfig, tensors: dict[str, torch.Tensor], dtype: torch.dtype | None) -> Transformer:
    """A `Transformer` holding (copies of) `tensors`, which must match `param_shapes(cfg)` exactly."""
    expected = param_shapes(cfg)
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:  # a bug in a converter, not a user error
        raise AssertionError(f"converter produced wrong tensors: missing {missing}, unexpected {unexpected}")
    for k, shape in expected.items():
        if tuple(tensors[k].shape) != shape:
            raise ConversionError(f"{k} has shape {tuple(tensors[k].shape)}, expected {shape} from the config")
    if dtype is None:
        dtype = tensors["W_E"].dtype
    # copies: the source keeps its own tensors
    return from_tensors(cfg, {k: v.detach().to(dtype=dtype, copy=True) for k, v in tensors.items()})


_CHECK_MAX_WINDOW = 256  # the longest sliding window the logits check runs past


def _check_logits(ours: Transformer, source_logits_fn, source_dtype: torch.dtype, what: str,
                  source: torch.nn.Module | None = None) -> None:
    """Run both models on the same random tokens; raise `ConversionError` if the logits differ.
    `source` is put in eval mode for the check (dropout) and restored afterwards."""
    g = torch.Generator().manual_seed(0)
    # past the sliding window, if any: a window the source does not apply only shows beyond it. Windows of real
    # models (4096 in Mistral / Gemma 2) would make this a 4097-token forward pass of a 7B model, so only small
    # windows (the ones a hand-made or test config has) are run past; large ones come from the source's config.
    window = ours.cfg.sliding_window or 0
    n_pos = min(ours.cfg.n_ctx, window + 1 if 12 <= window < _CHECK_MAX_WINDOW else 12)
    batch = 2 if n_pos <= 12 else 1  # long windows: one sequence is enough, and the check stays affordable
    tokens = torch.randint(0, ours.cfg.d_vocab, (batch, n_pos), generator=g).to(ours.W_E.device)
    was_training = source.training if source is not None else False
    try:
        if source is not None:
            source.eval()
        with torch.no_grad():
            theirs = source_logits_fn(tokens)
            mine = ours(tokens)
    finally:
        if source is not None:
            source.train(was_training)
    dt = source_dtype if ours.W_E.dtype == torch.float64 else ours.W_E.dtype
    rtol = _CHECK_RTOL.get(dt, 2e-2)  # half precision: loose
    err = _rel_err(mine, theirs)
    if not err <= rtol:
        raise ConversionError(
            f"{what}: the converted model's logits differ from the source's by {err:.2e} (relative, "
            f"tolerance {rtol:.0e}). The source uses a feature this converter does not reproduce; "
            f"pass check=False only if you know why."
        )


def _carry_tokenizer(model: Transformer, tokenizer: Any, strict: bool) -> None:
    if tokenizer is None:
        return
    try:
        model.tokenizer = Tokenizer.from_any(tokenizer)
    except TypeError as e:
        if strict:
            raise
        warnings.warn(f"tokenizer not carried over: {e}", stacklevel=3)


# ---------------------------------------------------------------------------------------- HF GPT-2
_HF_IGNORED = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")  # causal-mask buffers of old versions
_HF_LAYER_KEYS = (
    "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
    "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
    "mlp.c_proj.weight", "mlp.c_proj.bias",
)


def _hf_config_fields(config: Any) -> dict:
    """Our config fields from a `transformers.GPT2Config`; refuses what we cannot express."""
    mt = getattr(config, "model_type", None)
    if mt != "gpt2":
        extra = (" (Gemma 3 with vision: pass its text model, Gemma3ForCausalLM / model_type 'gemma3_text')"
                 if mt == "gemma3" else "")
        raise ConversionError(
            f"from_hf supports model_type {['gpt2', *_HF_FAMILIES]}; this model's model_type is {mt!r}{extra}"
        )
    if getattr(config, "add_cross_attention", False):
        raise ConversionError("from_hf: GPT-2 with cross-attention (add_cross_attention=True) is not supported")
    if getattr(config, "scale_attn_by_inverse_layer_idx", False) and config.n_layer > 1:
        raise ConversionError(
            "from_hf: scale_attn_by_inverse_layer_idx=True gives each layer its own attention scale; "
            "our format has one attention scale for all layers"
        )
    act = getattr(config, "activation_function", "gelu_new")
    if act not in _ACT_MAP:
        raise ConversionError(f"from_hf: activation_function {act!r} is not supported (have {sorted(_ACT_MAP)})")
    d_head = config.n_embd // config.n_head
    bos = getattr(config, "bos_token_id", None)
    return dict(
        n_heads=config.n_head, act_fn=_ACT_MAP[act], ln_eps=float(config.layer_norm_epsilon),
        attn_scale=math.sqrt(d_head) if getattr(config, "scale_attn_weights", True) else 1.0,
        bos_token_id=bos if isinstance(bos, int) and 0 <= bos < config.vocab_size else None,
        name=str(getattr(config, "_name_or_path", "") or "gpt2"),
        expect=dict(n_layers=config.n_layer, d_model=config.n_embd, d_vocab=config.vocab_size,
                    n_ctx=config.n_positions),
    )


def _require_head(lm_head: torch.Tensor | None, config: Any, causal_lm: bool, head_key: str) -> None:
    """An untied *ForCausalLM state dict must hold its unembedding: the embedding in its place (as for
    a tied model) would give other logits, silently."""
    if lm_head is None and causal_lm and getattr(config, "tie_word_embeddings", True) is False:
        raise ConversionError(f"from_hf: the config says tie_word_embeddings=False, but the state dict has no "
                              f"{head_key!r} (the unembedding): a truncated or mismatched checkpoint?", tensor=head_key)


def _module_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's state dict; for a model dispatched by accelerate (`device_map`, layers offloaded to
    the CPU or to disk: meta tensors in the module) the offloaded values, read from accelerate's hooks."""
    from .hf_weights import is_dispatched, resolved_state_dict

    if is_dispatched(module):
        return resolved_state_dict(module)
    return dict(module.state_dict(keep_vars=False))


def from_hf(
    model_or_state_dict: Any,
    n_heads: int | None = None,
    *,
    tokenizer: Any = None,
    dtype: torch.dtype | None = None,
    check: bool = True,
    act_fn: str = "gelu_new",
    ln_eps: float = 1e-5,
    name: str | None = None,
    config: Any = None,
    lazy: bool = False,
    cache_dir: Any = None,
) -> Transformer:
    """Convert a Hugging Face model (or its state dict, or a checkpoint directory) into a `Transformer`.

    A checkpoint directory (`config.json` + `model.safetensors` or sharded `*.safetensors` with
    `model.safetensors.index.json`, optionally tokenizer files) is read through `lazy.LazyModel`:
    `lazy=True` returns that `LazyModel` (weights left on disk in their stored dtype, read layer by
    layer; the engine's weights-only analyses stream over it; Gram matrices cached in `cache_dir`,
    default `$CIRCWIDGETS_CACHE` or `~/.cache/circwidgets`); `lazy=False` loads the whole model.

    Families: `gpt2`, `gpt_neox` (Pythia), `llama`, `mistral`, `qwen2`, `qwen3`, `gemma2`,
    `gemma3_text` (Gemma3ForCausalLM), `olmo2`, `phi3` (`*ForCausalLM` or the base `*Model`; a state
    dict of these needs `config=` its HF config). Their features map to `ModelConfig` fields
    (rotary, RMS, grouped-query K/V stored once, gated MLPs, Gemma's `1 + w` norms converted to
    plain RMS weights, ...). Anything else (mixture of experts, unknown rope scaling, ALiBi, ...)
    raises `ConversionError` naming it. The logits check runs the source with eager attention and,
    in float64, without its float32 islands (`hf_exact_float64`).

    GPT-2 details:

    Args:
        model_or_state_dict: a `GPT2LMHeadModel` or `GPT2Model` (config read from `model.config`),
            or a GPT-2 state dict (keys with or without the `transformer.` prefix; shapes inferred).
        n_heads: number of heads; required for a bare state dict (it cannot be read from the
            shapes), checked against the config for a model.
        tokenizer: optional HF fast tokenizer (or `tokenizers.Tokenizer`) to carry along.
        dtype: dtype of the result (default: the source's).
        check: run source and result on random tokens and raise `ConversionError` if the logits
            differ (models only; a state dict has no forward pass to compare with).
        act_fn, ln_eps: for a bare state dict only (GPT-2's are "gelu_new" and 1e-5).
        name: stored in the config (default: the HF model's name).

    Returns a model with normalization "LN", biases, an MLP, standard positions: `W_Q[l, h]` is
    columns `h*d_head:(h+1)*d_head` of the Q third of `c_attn.weight`, `W_O[l, h]` the matching rows
    of `c_proj.weight`, `W_U = lm_head.weight.T` (tied to `wte` in GPT-2), `b_U = 0`.
    """
    if isinstance(model_or_state_dict, (str, os.PathLike)):
        if not os.path.isdir(model_or_state_dict):
            raise TypeError(
                f"from_hf expects a Hugging Face GPT-2 model (or another supported family), its state dict, or a "
                f"checkpoint directory; {str(model_or_state_dict)!r} is not a directory (a Hub name must be "
                f"downloaded first, e.g. huggingface_hub.snapshot_download(name), then pass that path)")
        from .lazy import LazyModel

        lm = LazyModel(model_or_state_dict, cache_dir=cache_dir, tokenizer=tokenizer)
        return lm if lazy else lm.to_transformer(dtype=dtype)
    if lazy:
        raise ValueError("lazy=True needs a checkpoint directory (a path), not a model object")
    hf_model = None
    family_cfg = getattr(model_or_state_dict, "config", None) if isinstance(model_or_state_dict, torch.nn.Module) \
        else config
    if getattr(family_cfg, "model_type", None) in _HF_FAMILIES:
        if n_heads is not None and n_heads != family_cfg.num_attention_heads:
            raise ValueError(f"n_heads={n_heads} contradicts the config (num_attention_heads="
                             f"{family_cfg.num_attention_heads})")
        if isinstance(model_or_state_dict, torch.nn.Module):
            src, sd = model_or_state_dict, _module_state_dict(model_or_state_dict)
        elif isinstance(model_or_state_dict, Mapping):
            src, sd = None, dict(model_or_state_dict)
        else:
            raise TypeError(
                f"from_hf expects a Hugging Face model or state dict, got {type(model_or_state_dict).__name__}")
        return _from_hf_family(sd, family_cfg, src, tokenizer, dtype, check, name)
    if config is not None and getattr(config, "model_type", None) != "gpt2":
        _hf_config_fields(config)  # raises, naming the model_type
    if isinstance(model_or_state_dict, torch.nn.Module):
        hf_model = model_or_state_dict
        config = getattr(hf_model, "config", None)
        if config is None:
            raise TypeError(
                f"from_hf expects a Hugging Face GPT-2 model or state dict, got a {type(hf_model).__name__} "
                f"with no .config"
            )
        fields = _hf_config_fields(config)
        if n_heads is not None and n_heads != fields["n_heads"]:
            raise ValueError(f"n_heads={n_heads} contradicts the model's config (n_head={fields['n_heads']})")
        sd = _module_state_dict(hf_model)
    elif isinstance(model_or_state_dict, Mapping) and config is not None:  # a GPT-2 state dict with its config
        fields = _hf_config_fields(config)
        if n_heads is not None and n_heads != fields["n_heads"]:
            raise ValueError(f"n_heads={n_heads} contradicts the config (n_head={fields['n_heads']})")
        sd = dict(model_or_state_dict)
    elif isinstance(model_or_state_dict, Mapping):
        sd = dict(model_or_state_dict)
        if n_heads is None:
            raise ValueError(
                "from_hf: a bare state dict does not say how many attention heads the model has; pass "
                "n_heads= (12 for GPT-2 small, 16 for medium, 20 for large, 25 for XL)"
            )
        if act_fn not in _ACT_MAP:
            raise ValueError(f"act_fn must be one of {sorted(_ACT_MAP)}, got {act_fn!r}")
        fields = dict(n_heads=n_heads, act_fn=_ACT_MAP[act_fn], ln_eps=float(ln_eps), attn_scale=None,
                      bos_token_id=None, name="gpt2", expect={})
    else:
        raise TypeError(
            f"from_hf expects a Hugging Face GPT-2 model or its state dict, got {type(model_or_state_dict).__name__}"
        )

    # --- normalise key names: drop the `transformer.` prefix of GPT2LMHeadModel
    lm_head = sd.pop("lm_head.weight", None)
    causal_lm = any(k.startswith("transformer.") for k in sd)
    _require_head(lm_head, config, causal_lm, "lm_head.weight")
    source_key = {k.removeprefix("transformer."): k for k in sd}  # for messages: the source's own names
    sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
    if "wte.weight" not in sd:
        raise ConversionError(
            "from_hf: not a GPT-2 state dict (no 'wte.weight' / 'transformer.wte.weight'); "
            f"first keys: {sorted(sd)[:5]}"
        )
    layer_ids = sorted({int(m.group(1)) for k in sd if (m := re.match(r"^h\.(\d+)\.", k))})
    L = len(layer_ids)
    if layer_ids != list(range(L)):
        raise ConversionError(f"from_hf: layer indices in the state dict are not 0..L-1: {layer_ids}")
    need = {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"} | {
        f"h.{l}.{k}" for l in range(L) for k in _HF_LAYER_KEYS
    }
    missing = sorted(need - set(sd))
    unexpected = sorted(k for k in set(sd) - need if not _HF_IGNORED.match(k))
    if missing or unexpected:
        raise ConversionError(
            f"from_hf: not a plain GPT-2 state dict: missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )

    W_E = sd["wte.weight"]
    if W_E.ndim != 2 or sd["wpe.weight"].ndim != 2:
        bad = "wte.weight" if W_E.ndim != 2 else "wpe.weight"
        raise ConversionError(f"from_hf: {source_key[bad]} has shape {tuple(sd[bad].shape)}; a matrix expected",
                              tensor=source_key[bad])
    V, D = W_E.shape
    n_ctx = sd["wpe.weight"].shape[0]
    H = fields["n_heads"]
    if not isinstance(H, int) or H < 1 or D % H:
        raise ValueError(f"n_heads={H} must be a positive integer dividing d_model={D}")
    E = D // H
    fc = sd["h.0.mlp.c_fc.weight"] if L else None
    M = int(fc.shape[-1]) if fc is not None and fc.ndim else 4 * D
    # every shape, before any reshape: a wrong one is named, never a reshape's RuntimeError
    want = {"wpe.weight": (n_ctx, D), "ln_f.weight": (D,), "ln_f.bias": (D,)}
    layer_shapes = {"ln_1.weight": (D,), "ln_1.bias": (D,), "attn.c_attn.weight": (D, 3 * D),
                    "attn.c_attn.bias": (3 * D,), "attn.c_proj.weight": (D, D), "attn.c_proj.bias": (D,),
                    "ln_2.weight": (D,), "ln_2.bias": (D,), "mlp.c_fc.weight": (D, M), "mlp.c_fc.bias": (M,),
                    "mlp.c_proj.weight": (M, D), "mlp.c_proj.bias": (D,)}
    want.update({f"h.{l}.{k}": v for l in range(L) for k, v in layer_shapes.items()})
    for k, shape in want.items():
        if tuple(sd[k].shape) != shape:
            hint = (" (GPT-2's Conv1D layout, x @ W); an nn.Linear layout [out, in] is not GPT-2"
                    if k.endswith("c_attn.weight") else f" (d_model={D} from wte.weight, d_mlp={M} from h.0.mlp.c_fc)")
            raise ConversionError(f"from_hf: {source_key[k]} has shape {tuple(sd[k].shape)}, expected {shape}{hint}",
                                  tensor=source_key[k])
    got = dict(n_layers=L, d_model=D, d_vocab=V, n_ctx=n_ctx)
    for k, v in fields["expect"].items():
        if got[k] != v:
            raise ConversionError(f"from_hf: the config says {k}={v}, the weights say {got[k]}")
    if lm_head is not None and tuple(lm_head.shape) != (V, D):
        raise ConversionError(f"from_hf: lm_head.weight has shape {tuple(lm_head.shape)}, expected {(V, D)}",
                              tensor="lm_head.weight")

    cfg = ModelConfig(
        n_layers=L, d_model=D, n_heads=H, d_head=E, d_vocab=V, n_ctx=n_ctx, attn_only=False, d_mlp=M,
        act_fn=fields["act_fn"], normalization="LN", positional="standard", biases=True,
        ln_eps=fields["ln_eps"], attn_scale=fields["attn_scale"], bos_token_id=fields["bos_token_id"],
        name=name if name is not None else fields["name"],
    )
    shapes = param_shapes(cfg)

    def layers(key: str, reshape=None) -> list[torch.Tensor]:
        return [reshape(sd[f"h.{l}.{key}"]) if reshape else sd[f"h.{l}.{key}"] for l in range(L)]

    # c_attn.weight [D, 3D] = [W_Q | W_K | W_V]; within each third, column h*E + e is head h, dim e
    qkv = layers("attn.c_attn.weight", lambda w: w.reshape(D, 3, H, E).permute(1, 2, 0, 3))  # [3, H, D, E]
    qkv_b = layers("attn.c_attn.bias", lambda b: b.reshape(3, H, E))
    per_layer = {
        "W_Q": [x[0] for x in qkv], "W_K": [x[1] for x in qkv], "W_V": [x[2] for x in qkv],
        "b_Q": [x[0] for x in qkv_b], "b_K": [x[1] for x in qkv_b], "b_V": [x[2] for x in qkv_b],
        # c_proj.weight: z_flat [.., H*E] @ W [H*E, D]; rows h*E:(h+1)*E belong to head h
        "W_O": layers("attn.c_proj.weight", lambda w: w.reshape(H, E, D)), "b_O": layers("attn.c_proj.bias"),
        "W_in": layers("mlp.c_fc.weight"), "b_in": layers("mlp.c_fc.bias"),
        "W_out": layers("mlp.c_proj.weight"), "b_out": layers("mlp.c_proj.bias"),
        "ln1_w": layers("ln_1.weight"), "ln1_b": layers("ln_1.bias"),
        "ln2_w": layers("ln_2.weight"), "ln2_b": layers("ln_2.bias"),
    }
    t = {k: torch.stack(v) if L else W_E.new_zeros(shapes[k]) for k, v in per_layer.items()}
    t.update(
        W_E=W_E, W_pos=sd["wpe.weight"], ln_final_w=sd["ln_f.weight"], ln_final_b=sd["ln_f.bias"],
        W_U=(lm_head if lm_head is not None else W_E).T,  # tied to wte unless a separate head exists
        b_U=W_E.new_zeros(V),
    )
    model = _build(cfg, t, dtype)
    _carry_tokenizer(model, tokenizer, strict=True)

    if check and hf_model is not None:
        if hasattr(hf_model, "lm_head"):
            def fn(tok):
                return hf_model(input_ids=tok).logits
        else:  # GPT2Model: last hidden state through the tied unembedding
            def fn(tok):
                return hf_model(input_ids=tok).last_hidden_state @ W_E.T
        _check_logits(model, fn, W_E.dtype, "from_hf", source=hf_model)
    return model


# ---------------------------------------------------------------------------------------- TransformerLens
def _is_bridge(model: Any) -> bool:
    return any(c.__name__ == "TransformerBridge" for c in type(model).__mro__)


def _is_hooked_transformer(model: Any) -> bool:
    return any(c.__name__ == "HookedTransformer" for c in type(model).__mro__)


def _cfg_get(cfg: Any, name: str, default: Any = None) -> Any:
    return getattr(cfg, name, default)


_TL_POST_NORM = ("Olmo2ForCausalLM", "Olmo3ForCausalLM")  # TransformerLens: ln1/ln2 are post-norms there


def _tl_refuse_unsupported(cfg: Any) -> None:
    """Raise `ConversionError` naming each TransformerLens cfg feature our format cannot express."""
    problems = []
    norm = _cfg_get(cfg, "normalization_type")
    if norm not in (None, "LN", "LNPre", "RMS", "RMSPre"):
        problems.append(f"normalization_type={norm!r} (supported: 'LN', 'LNPre', 'RMS', 'RMSPre', None)")
    pos = _cfg_get(cfg, "positional_embedding_type", "standard")
    if pos not in ("standard", "shortformer", "rotary"):
        problems.append(f"positional_embedding_type={pos!r} (supported: 'standard', 'shortformer', 'rotary')")
    if not _cfg_get(cfg, "attn_only", False) and _cfg_get(cfg, "act_fn") not in _TL_ACTS:
        problems.append(f"act_fn={_cfg_get(cfg, 'act_fn')!r} (supported: {sorted(_TL_ACTS)})")
    if _cfg_get(cfg, "final_rms", False) and norm not in ("RMS", "RMSPre"):
        problems.append(f"final_rms=True with normalization_type={norm!r} (an RMS final norm after LayerNorm blocks)")
    if _cfg_get(cfg, "use_normalization_before_and_after", False) and norm not in ("RMS", "RMSPre"):
        problems.append(f"use_normalization_before_and_after=True with normalization_type={norm!r}")
    for flag in ("post_embedding_ln", "use_attention_sinks", "use_yarn_rope", "use_dynamic_ntk_rope",
                 "load_in_4bit"):
        if _cfg_get(cfg, flag, False):
            problems.append(f"{flag}=True")
    if _cfg_get(cfg, "use_local_attn", False):
        types = _cfg_get(cfg, "attn_types") or []
        if not isinstance(_cfg_get(cfg, "window_size"), int) or set(types) - {"global", "local"}:
            problems.append(f"use_local_attn with window_size={_cfg_get(cfg, 'window_size')!r}, attn_types={types!r}")
    kv = _cfg_get(cfg, "n_key_value_heads")
    if kv is not None and (kv < 1 or cfg.n_heads % kv):
        problems.append(f"n_key_value_heads={kv} does not divide n_heads={cfg.n_heads}")
    if _cfg_get(cfg, "num_experts"):
        problems.append(f"num_experts={_cfg_get(cfg, 'num_experts')} (mixture of experts)")
    if _cfg_get(cfg, "clip_qkv") is not None:
        problems.append(f"clip_qkv={_cfg_get(cfg, 'clip_qkv')}")
    if _cfg_get(cfg, "attention_dir", "causal") != "causal":
        problems.append(f"attention_dir={_cfg_get(cfg, 'attention_dir')!r} (only causal attention)")
    d_out = _cfg_get(cfg, "d_vocab_out", -1)
    if d_out not in (None, -1) and d_out != cfg.d_vocab:
        problems.append(f"d_vocab_out={d_out} differs from d_vocab={cfg.d_vocab}")
    if problems:
        arch = _cfg_get(cfg, "original_architecture") or _cfg_get(cfg, "model_name") or "this model"
        raise ConversionError(
            f"from_transformer_lens: {arch} uses features our Transformer does not have: " + "; ".join(problems)
        )


def _tl_arch_fields(cfg: Any, native_bridge: bool = False) -> dict:
    """Our config fields for TransformerLens' rotary / RMS / GQA / Gemma-style switches.
    `native_bridge`: TransformerLens 4's native model, whose rotary always rotates adjacent pairs
    (interleaved), with float32 tables, scaled as its `cfg.rope_scaling` says."""
    H = cfg.n_heads
    kv = _cfg_get(cfg, "n_key_value_heads")
    post_only = _cfg_get(cfg, "original_architecture") in _TL_POST_NORM
    f: dict[str, Any] = dict(
        n_kv_heads=kv if kv not in (None, H) else None,
        gated_mlp=bool(_cfg_get(cfg, "gated_mlp", False)),
        parallel_attn_mlp=bool(_cfg_get(cfg, "parallel_attn_mlp", False)),
        qk_norm=bool(_cfg_get(cfg, "use_qk_norm", False)) or post_only,
        qk_norm_scope="all" if post_only else "head",
        pre_norm=not post_only,
        post_norm=bool(_cfg_get(cfg, "use_normalization_before_and_after", False)) or post_only,
    )
    for ours, theirs in (("attn_softcap", "attn_scores_soft_cap"), ("final_softcap", "output_logits_soft_cap")):
        v = _cfg_get(cfg, theirs, -1.0)
        f[ours] = float(v) if v is not None and v > 0 else None
    local = []
    if _cfg_get(cfg, "use_local_attn", False):
        local = [i for i, t in enumerate(_cfg_get(cfg, "attn_types") or []) if t == "local"]
        if local:
            f["sliding_window"] = int(cfg.window_size)
            f["sliding_window_layers"] = local if len(local) < cfg.n_layers else None
    if _cfg_get(cfg, "positional_embedding_type") == "rotary":
        rd = _cfg_get(cfg, "rotary_dim")
        f.update(rotary_dim=rd if rd not in (None, cfg.d_head) else None,
                 rotary_base=float(_cfg_get(cfg, "rotary_base", 10000)),
                 rotary_layout="interleaved" if _cfg_get(cfg, "rotary_adjacent_pairs", False) else "half")
        rs = _cfg_get(cfg, "rope_scaling") if native_bridge else None
        if native_bridge:
            f.update(rotary_layout="interleaved", rotary_table_dtype="float32")
        if isinstance(rs, dict) and (rs.get("rope_type") or rs.get("type")) not in (None, "default"):
            _, scaling, _ = _hf_rope({"rope_theta": f["rotary_base"], **rs}, "from_transformer_lens: TransformerBridge")
            if scaling is not None:
                f["rope_scaling"] = scaling
        elif _cfg_get(cfg, "use_NTK_by_parts_rope", False):
            f["rope_scaling"] = {
                "rope_type": "llama3", "factor": cfg.NTK_by_parts_factor,
                "low_freq_factor": cfg.NTK_by_parts_low_freq_factor,
                "high_freq_factor": cfg.NTK_by_parts_high_freq_factor,
                "original_max_position_embeddings": cfg.NTK_original_ctx_len,
            }
        elif (_cfg_get(cfg, "rotary_scaling_factor", 1.0) or 1.0) != 1.0:  # linear, global layers only
            f["rope_scaling"] = {"rope_type": "linear", "factor": float(cfg.rotary_scaling_factor)}
        base_local = _cfg_get(cfg, "rotary_base_local")
        if local and (base_local is not None or "rope_scaling" in f):
            f["rotary_base_sliding"] = float(base_local if base_local is not None else f["rotary_base"])
    return f


def _tl3_attn_scale(model: Any) -> float:
    """The attention scale HookedTransformer divides scores by (read from the modules: it folds
    use_attn_scale, attn_scale and scale_attn_by_inverse_layer_idx together)."""
    scales = [float(b.attn.attn_scale) for b in model.blocks]
    if scales and max(scales) - min(scales) > 1e-9 * max(scales):
        raise ConversionError(
            f"from_transformer_lens: layers use different attention scales {sorted(set(scales))} "
            "(scale_attn_by_inverse_layer_idx?); our format has one attention scale"
        )
    return scales[0] if scales else math.sqrt(model.cfg.d_head)


def _bridge_attn_scale(bridge: Any) -> float:
    """The attention scale of a TransformerBridge, read from the wrapped attention modules:
    TL-native attention has `.scale` (divides), HF GPT-2 `scale_attn_weights`, other HF modules
    `.scaling` (multiplies). Falls back to the cfg; the logits check catches a wrong guess."""
    cfg = bridge.cfg
    scales: list[float] = []
    for layer, block in enumerate(bridge.blocks):
        orig = getattr(block.attn, "original_component", None)
        if orig is None:
            continue
        if isinstance(getattr(orig, "scale", None), (int, float)):
            s = float(orig.scale)
        elif hasattr(orig, "scale_attn_weights"):  # HF GPT2Attention
            s = math.sqrt(getattr(orig, "head_dim", cfg.d_head)) if orig.scale_attn_weights else 1.0
            if getattr(orig, "scale_attn_by_inverse_layer_idx", False):
                s *= float(layer + 1)
        elif isinstance(getattr(orig, "scaling", None), (int, float)) and orig.scaling > 0:
            s = 1.0 / float(orig.scaling)
        else:
            continue
        scales.append(s)
    if scales and max(scales) - min(scales) > 1e-9 * max(scales):
        raise ConversionError(
            f"from_transformer_lens: layers use different attention scales {sorted(set(scales))}; "
            "our format has one attention scale"
        )
    if scales:
        return scales[0]
    a = _cfg_get(cfg, "attn_scale", -1.0)
    if _cfg_get(cfg, "use_attn_scale", True) and a is not None and a > 0:
        return float(a)
    return math.sqrt(cfg.d_head)


def from_transformer_lens(
    model: Any,
    *,
    tokenizer: Any = None,
    dtype: torch.dtype | None = None,
    check: bool = True,
    name: str | None = None,
) -> Transformer:
    """Convert a TransformerLens model into a `Transformer`.

    Accepts a 3.x `HookedTransformer` (weights from its state dict) or a `TransformerBridge`
    (4.x; weights from `bridge.get_params()`, i.e. as currently processed: after
    `enable_compatibility_mode()` the folded / centred weights, which compute the bridge's own
    logits). Supported: normalization_type "LN" / "LNPre" / "RMS" / "RMSPre" / None,
    positional_embedding_type "standard" / "shortformer" (TransformerLens adds W_pos after ln1 to the
    query and key inputs, as we do) / "rotary" (both layouts, partial, Llama-3 and linear scaling, a
    local base), attn_only, gated and parallel MLPs, n_key_value_heads, q/k norms, norms before and
    after, soft caps, local attention, any single attention scale. A bridge over a Hugging Face model
    is converted from that model (`from_hf`) and checked against the bridge. Anything else (yarn or
    dynamic rope, post-embedding LN, attention sinks, mixture of experts, ...) raises
    `ConversionError` naming it.

    Args:
        tokenizer: overrides the model's own tokenizer (by default `model.tokenizer` is carried
            when it is a fast tokenizer; a slow one is skipped with a warning).
        dtype: dtype of the result (default: the source's).
        check: compare logits on random tokens and raise `ConversionError` if they differ.
    """
    arch_override = None
    if _is_bridge(model):
        hf = getattr(model, "original_model", None)
        if getattr(getattr(hf, "config", None), "model_type", None) in _HF_FAMILIES:
            # a bridge over a Hugging Face model runs that model (with its processed weights after
            # enable_compatibility_mode): convert the model itself, checked against the bridge
            tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
            out = _from_hf_family(dict(hf.state_dict()), hf.config, hf, None, dtype, False, name, extra_ok=True)
            _carry_tokenizer(out, tok, strict=tokenizer is not None)
            if not check:
                return out

            def bridge_fn(tokens):
                with hf_eager(hf):
                    return model(tokens)
            try:
                _check_logits(out, bridge_fn, out.W_E.dtype, "from_transformer_lens (TransformerBridge)", source=model)
                return out
            except ConversionError:
                if hf.config.model_type not in ("gpt_neox", "phi3"):
                    raise
            # fused q/k/v models after enable_compatibility_mode: the processed weights live in the
            # bridge's own split copies, which get_params reports; positions are still HF's
            hf_fields = _hf_family_fields(hf.config)
            rotary_keys = ("rotary_dim", "rotary_base", "rope_scaling", "rotary_table_dtype", "sliding_window",
                           "rotary_layout")
            arch_override = {k: hf_fields[k] for k in rotary_keys}
        params = {k: v for k, v in model.get_params().items()}
        attn_scale = _bridge_attn_scale(model)
        what = "TransformerBridge"
    elif _is_hooked_transformer(model):
        params = dict(model.state_dict())
        attn_scale = _tl3_attn_scale(model)
        what = "HookedTransformer"
    else:
        raise TypeError(
            "from_transformer_lens expects a TransformerLens HookedTransformer (3.x) or TransformerBridge "
            f"(4.x), got {type(model).__name__}"
        )
    cfg_tl = model.cfg
    if type(getattr(model, "original_model", None)).__name__ == "NativeModel" and _cfg_get(cfg_tl, "use_local_attn"):
        # TransformerLens 4's native attention never reads use_local_attn / window_size: every layer is global
        raise ConversionError(
            "from_transformer_lens: this native TransformerBridge has use_local_attn=True, which its own forward "
            "pass ignores (every layer attends globally): converting it either way would contradict the cfg or "
            "the bridge. Build it with use_local_attn=False (what it computes), or use a HookedTransformer")
    _tl_refuse_unsupported(cfg_tl)
    L, D, H, E = cfg_tl.n_layers, cfg_tl.d_model, cfg_tl.n_heads, cfg_tl.d_head
    attn_only = bool(_cfg_get(cfg_tl, "attn_only", False))
    norm = _cfg_get(cfg_tl, "normalization_type")
    positional = _cfg_get(cfg_tl, "positional_embedding_type", "standard")
    if norm in ("LN", "RMS") and "ln_final.w" not in params:
        # a bridge whose norm weights were folded away reports none: what is left is LNPre / RMSPre
        norm += "Pre"
    arch = _tl_arch_fields(cfg_tl, native_bridge=what == "TransformerBridge" and arch_override is None)
    arch.update(arch_override or {})

    def get(key: str) -> torch.Tensor:
        if key not in params:
            raise ConversionError(f"from_transformer_lens: {what} has no parameter {key!r}")
        return params[key].detach()

    W_E = get("embed.W_E")
    V = W_E.shape[0]
    d_mlp = None
    if not attn_only:
        d_mlp = int(get("blocks.0.mlp.W_in").shape[-1]) if L else int(_cfg_get(cfg_tl, "d_mlp") or 4 * D)
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    bos = None
    if tok is not None and _cfg_get(cfg_tl, "default_prepend_bos", True):
        b = getattr(tok, "bos_token_id", None)
        bos = b if isinstance(b, int) and 0 <= b < V else None
    cfg = ModelConfig(
        n_layers=L, d_model=D, n_heads=H, d_head=E, d_vocab=V, n_ctx=cfg_tl.n_ctx, attn_only=attn_only,
        d_mlp=d_mlp, act_fn=_TL_ACTS.get(_cfg_get(cfg_tl, "act_fn"), "gelu_new"), normalization=norm,
        positional=positional, biases=True, ln_eps=float(_cfg_get(cfg_tl, "eps", 1e-5)),
        attn_scale=float(attn_scale), bos_token_id=bos,
        name=name if name is not None else str(_cfg_get(cfg_tl, "model_name", "") or ""), **arch,
    )
    shapes = param_shapes(cfg)
    K, g = cfg.n_kv, cfg.kv_group_size

    # TransformerLens key (per layer: "{l}" filled in) of each of our parameters
    tl_key = {"W_E": "embed.W_E", "W_pos": "pos_embed.W_pos", "W_U": "unembed.W_U",
              "ln_final_w": "ln_final.w", "ln_final_b": "ln_final.b"}
    tl_key.update({n: "blocks.{l}.attn." + n for n in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")})
    tl_key.update({n: "blocks.{l}.mlp." + n for n in ("W_in", "b_in", "W_out", "b_out", "W_gate", "b_gate")})
    lns = ("ln1", "ln2", "ln1_post", "ln2_post")
    tl_key.update({f"{ln}_{x}": f"blocks.{{l}}.{ln}.{x}" for ln in lns for x in ("w", "b")})
    if not cfg.pre_norm:  # TransformerLens' OLMo-2: ln1 / ln2 are the post-norms
        tl_key.update({f"{ln}_post_{x}": f"blocks.{{l}}.{ln}.{x}" for ln in ("ln1", "ln2") for x in ("w", "b")})
    tl_key.update(q_norm_w="blocks.{l}.attn.q_norm.w", k_norm_w="blocks.{l}.attn.k_norm.w")

    def layer_tensor(ours: str, l: int) -> torch.Tensor:
        base = ours.lstrip("_")
        if ours.startswith("_"):  # shared K/V: TL 3 stores them as _W_K [n_kv, ...]; a bridge per query head
            key = tl_key[base].format(l=l).replace(f".{base}", f"._{base}")
            if key in params:
                return get(key)
            full = get(tl_key[base].format(l=l))
            shared = full[::g]
            if not torch.equal(full, shared.repeat_interleave(g, dim=0)):
                raise ConversionError(f"from_transformer_lens: {what} reports {base} heads that differ within "
                                      f"a K/V group (n_key_value_heads={K})")
            return shared
        x = get(tl_key[ours].format(l=l))
        if ours in ("q_norm_w", "k_norm_w") and cfg.qk_norm_scope == "all":
            x = x.reshape(shapes[ours][1:])
        return x

    t: dict[str, torch.Tensor] = {}
    for ours, shape in shapes.items():
        key = tl_key.get(ours.lstrip("_"), "")
        if ours == "b_U":  # TL 3 always has it; a bridge over a bias-free head may report none
            t[ours] = params["unembed.b_U"].detach() if "unembed.b_U" in params else W_E.new_zeros(shape)
        elif ours == "b_gate" and not any(k.endswith("mlp.b_gate") for k in params):
            t[ours] = W_E.new_zeros(shape)  # TransformerLens' gated MLP has no gate bias
        elif "{l}" not in key:
            t[ours] = get(key)
        elif L:
            t[ours] = torch.stack([layer_tensor(ours, l) for l in range(L)])
        else:
            t[ours] = W_E.new_zeros(shape)
    if cfg.gated_mlp and what == "HookedTransformer" and L:
        # TransformerLens 3's gated MLP adds b_in after the gate product: (act(x W_gate) * x W_in + b_in) W_out;
        # that bias reaches the residual stream as the constant b_in W_out
        t["b_out"] = t["b_out"] + torch.einsum("lm,lmd->ld", t["b_in"], t["W_out"])
        t["b_in"] = torch.zeros_like(t["b_in"])
    out = _build(cfg, t, dtype)
    _carry_tokenizer(out, tok, strict=tokenizer is not None)

    if check:
        def fn(tokens):
            return model(tokens)
        _check_logits(out, fn, W_E.dtype, f"from_transformer_lens ({what})", source=model)
    return out



# ---------------------------------------------------------------------------------------- HF: other families
# model_type -> (key prefix of the CausalLM's base model, lm head key)
_HF_FAMILIES = {
    "gpt_neox": ("gpt_neox.", "embed_out.weight"),
    "llama": ("model.", "lm_head.weight"), "mistral": ("model.", "lm_head.weight"),
    "qwen2": ("model.", "lm_head.weight"), "qwen3": ("model.", "lm_head.weight"),
    "gemma2": ("model.", "lm_head.weight"), "gemma3_text": ("model.", "lm_head.weight"),
    "olmo2": ("model.", "lm_head.weight"), "phi3": ("model.", "lm_head.weight"),
}
_HF_ACTS = {"silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_new": "gelu_new", "relu": "relu",
            "gelu_pytorch_tanh": "gelu_pytorch_tanh", "gelu_fast": "gelu_new"}
_HF_IGNORED_BUFFERS = re.compile(r"(rotary_emb|embed_scale|inv_freq|attention\.bias$|attention\.masked_bias$)")


def _hf_rope(rp: Mapping | None, what: str, max_positions: int | None = None) -> tuple[float, dict | None, float]:
    """(base, our rope_scaling, partial_rotary_factor) from a transformers-5 `rope_parameters` dict
    (`max_positions`: the config's max_position_embeddings, which LongRoPE's default factor reads)."""
    rp = dict(rp or {})
    kind = rp.get("rope_type", rp.get("type", "default")) or "default"
    base = float(rp.get("rope_theta", 10000.0))
    partial = float(rp.get("partial_rotary_factor", 1.0) or 1.0)
    if kind == "default":
        return base, None, partial
    if kind == "linear":
        return base, {"rope_type": "linear", "factor": rp["factor"]}, partial
    if kind == "llama3":
        keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
        return base, {"rope_type": "llama3", **{k: rp[k] for k in keys}}, partial
    if kind == "yarn":
        return base, _hf_yarn(rp, what), partial
    if kind == "longrope":
        return base, _hf_longrope(rp, what, max_positions), partial
    raise ConversionError(
        f"{what} uses rope scaling rope_type={kind!r}, which is not supported "
        f"(supported: 'default', 'linear', 'llama3', 'yarn', 'longrope' up to its original context)"
    )


def _hf_longrope(rp: Mapping, what: str, max_positions: int | None) -> dict:
    """Our LongRoPE scaling: the short-context factors (Hugging Face switches to the long ones only past
    original_max_position_embeddings, which the converted model's n_ctx does not exceed) and HF's attention
    factor (given, or sqrt(1 + log(factor) / log(original)) with factor = max_positions / original)."""
    old = rp.get("original_max_position_embeddings")
    if old is None or rp.get("short_factor") is None:
        raise ConversionError(f"{what}: LongRoPE without 'short_factor' and 'original_max_position_embeddings' "
                              "is not supported")
    att = rp.get("attention_factor")
    if att is None:
        factor = rp.get("factor") or (max_positions / old if max_positions else 1.0)
        att = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(old))
    return {"rope_type": "longrope", "short_factor": list(rp["short_factor"]),
            "original_max_position_embeddings": old, "attention_factor": att}


def _hf_yarn(rp: Mapping, what: str) -> dict:
    """Our YaRN scaling from Hugging Face's `rope_parameters`, with its defaults (beta_fast 32, beta_slow 1)
    and its attention factor when the checkpoint leaves it out (from `factor`, `mscale`, `mscale_all_dim`)."""
    if rp.get("factor") is None or rp.get("original_max_position_embeddings") is None:
        raise ConversionError(f"{what}: YaRN rope scaling without 'factor' and 'original_max_position_embeddings' "
                              "is not supported")
    if not rp.get("truncate", True):
        raise ConversionError(f"{what}: YaRN rope scaling with truncate=False is not supported")
    factor = float(rp["factor"])

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    att = rp.get("attention_factor")
    if att is None:
        m, m_all = rp.get("mscale"), rp.get("mscale_all_dim")
        att = float(mscale(factor, m) / mscale(factor, m_all)) if m and m_all else mscale(factor)
    return {"rope_type": "yarn", "factor": factor,
            "original_max_position_embeddings": rp["original_max_position_embeddings"],
            "beta_fast": rp.get("beta_fast") or 32, "beta_slow": rp.get("beta_slow") or 1, "attention_factor": att}


def _hf_family_fields(config: Any) -> dict:
    """Our config fields for a non-GPT-2 HF decoder; refuses (naming it) what we cannot express."""
    mt = config.model_type
    what = f"model_type {mt!r}"
    for attr in ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size"):
        if getattr(config, attr, None):
            raise ConversionError(f"from_hf: {what} is a mixture of experts ({attr}={getattr(config, attr)}), "
                                  "which is not supported")
    if getattr(config, "alibi", False) or getattr(config, "position_embedding_type", "") == "alibi":
        raise ConversionError(f"from_hf: {what} uses ALiBi positions, which are not supported")
    if getattr(config, "use_bidirectional_attention", False):  # Gemma 2/3 (e.g. EmbeddingGemma): not causal
        raise ConversionError(f"from_hf: {what} with use_bidirectional_attention=True (attention to later "
                              "positions) is not supported: our attention is causal")
    if getattr(config, "use_qk_norm", False) and mt not in ("qwen3", "olmo2", "gemma3_text"):
        raise ConversionError(f"from_hf: {what} with use_qk_norm is not supported")
    H = config.num_attention_heads
    D = config.hidden_size
    E = getattr(config, "head_dim", None) or D // H
    K = getattr(config, "num_key_value_heads", None) or H
    act = getattr(config, "hidden_activation", None) if mt.startswith("gemma") else None
    act = act or getattr(config, "hidden_act", "silu")
    if act not in _HF_ACTS:
        raise ConversionError(f"from_hf: {what} uses activation {act!r} (supported: {sorted(_HF_ACTS)})")
    rp = getattr(config, "rope_parameters", None)
    if rp is None:  # transformers 4: rope_theta / rope_scaling / partial_rotary_factor attributes
        rp = dict(getattr(config, "rope_scaling", None) or {})
        rp.setdefault("rope_theta", getattr(config, "rope_theta", getattr(config, "rotary_emb_base", 10000.0)))
        prf = getattr(config, "partial_rotary_factor", getattr(config, "rotary_pct", 1.0))
        rp.setdefault("partial_rotary_factor", prf)
    base_sliding = None
    if mt == "gemma3_text" and "full_attention" in rp:
        base, scaling, partial = _hf_rope(rp["full_attention"], "from_hf: " + what)
        if "sliding_attention" in rp:
            b2, s2, p2 = _hf_rope(rp["sliding_attention"], "from_hf: " + what)
            if s2 is not None or p2 != partial:
                raise ConversionError(f"from_hf: {what}: rope scaling on sliding-window layers is not supported")
            base_sliding = b2
    else:
        base, scaling, partial = _hf_rope(rp, "from_hf: " + what, getattr(config, "max_position_embeddings", None))
    rotary_dim = int(E * partial) if partial != 1.0 else None

    sliding_window, sliding_layers = getattr(config, "sliding_window", None), None
    layer_types = getattr(config, "layer_types", None)
    if mt in ("mistral", "phi3"):
        pass  # every layer, when sliding_window is set
    elif layer_types:
        unknown = sorted(set(layer_types) - {"full_attention", "sliding_attention"})
        if unknown:
            raise ConversionError(f"from_hf: {what} has attention layer types {unknown} (supported: "
                                  "'full_attention', 'sliding_attention')")
        sliding_layers = [i for i, t in enumerate(layer_types) if t == "sliding_attention"]
        if not sliding_layers or sliding_window is None:
            sliding_window, sliding_layers = None, None
        elif len(sliding_layers) == config.num_hidden_layers:
            sliding_layers = None
    else:
        sliding_window = None
    if sliding_window is None:
        base_sliding = None
    elif base_sliding is not None and base_sliding == base and scaling is None:
        base_sliding = None
    gemma = mt in ("gemma2", "gemma3_text")
    n_ctx = int(config.max_position_embeddings)
    if scaling is not None and scaling["rope_type"] == "longrope":  # past it HF switches to the long factors
        n_ctx = min(n_ctx, int(scaling["original_max_position_embeddings"]))
    eps = getattr(config, "rms_norm_eps", None) if mt != "gpt_neox" else config.layer_norm_eps
    bos = getattr(config, "bos_token_id", None)
    return dict(
        n_layers=config.num_hidden_layers, d_model=D, n_heads=H, d_head=E, d_vocab=config.vocab_size,
        n_ctx=n_ctx, attn_only=False, d_mlp=config.intermediate_size,
        act_fn=_HF_ACTS[act], normalization="LN" if mt == "gpt_neox" else "RMS", positional="rotary",
        ln_eps=float(eps if eps is not None else 1e-6),
        attn_scale=math.sqrt(config.query_pre_attn_scalar) if gemma else math.sqrt(E),
        bos_token_id=bos if isinstance(bos, int) and 0 <= bos < config.vocab_size else None,
        name=str(getattr(config, "_name_or_path", "") or mt),
        n_kv_heads=K if K != H else None, rotary_dim=rotary_dim, rotary_base=base, rope_scaling=scaling,
        rotary_base_sliding=base_sliding, rotary_table_dtype="float32", rotary_layout="half",
        gated_mlp=mt != "gpt_neox", parallel_attn_mlp=bool(getattr(config, "use_parallel_residual", False)),
        qk_norm=mt in ("qwen3", "olmo2", "gemma3_text"), qk_norm_scope="all" if mt == "olmo2" else "head",
        pre_norm=mt != "olmo2", post_norm=mt in ("gemma2", "gemma3_text", "olmo2"),
        embed_scale=float(torch.tensor(D ** 0.5, dtype=torch.float32)) if gemma else 1.0,  # HF: a float32 buffer
        attn_softcap=getattr(config, "attn_logit_softcapping", None) if gemma else None,
        final_softcap=getattr(config, "final_logit_softcapping", None) if gemma else None,
        sliding_window=sliding_window, sliding_window_layers=sliding_layers,
    )


def _hf_family_tensors(sd: dict[str, torch.Tensor], config: Any, f: dict,
                       extra_ok: bool = False) -> tuple[dict, dict]:
    """Our tensors from a HF state dict of a supported family; returns (tensors, config updates).
    `extra_ok`: tolerate unknown keys (a TransformerLens bridge adds split copies of fused weights;
    its logits check then decides)."""
    mt = config.model_type
    prefix, head_key = _HF_FAMILIES[mt]
    # a TransformerLens 4 bridge wraps each HF module, which then reports `<name>._original_component.<leaf>`
    sd = {k.replace("._original_component", "").removeprefix("_original_component."): v for k, v in sd.items()}
    if head_key not in sd and head_key != "lm_head.weight" and "lm_head.weight" in sd:
        head_key = "lm_head.weight"  # GPT-NeoX's head is `embed_out` in older transformers, `lm_head` in newer
    lm_head = sd.pop(head_key, None)
    causal_lm = any(k.startswith(prefix) for k in sd)
    _require_head(lm_head, config, causal_lm, head_key)
    source_key = {k.removeprefix(prefix): k for k in sd}  # for messages: the source's own names
    sd = {k.removeprefix(prefix): v for k, v in sd.items()}
    L, H, E, D = f["n_layers"], f["n_heads"], f["d_head"], f["d_model"]
    K = f["n_kv_heads"] or H
    V, M = f["d_vocab"], f["d_mlp"]
    used: set[str] = set()
    gemma = mt in ("gemma2", "gemma3_text")

    def get(key: str, shape: tuple[int, ...], required: bool = True) -> torch.Tensor | None:
        """`key`, checked against the shape the config gives it (before any reshape)."""
        name = source_key.get(key, (prefix if causal_lm else "") + key)
        if key not in sd:
            if required:
                raise ConversionError(f"from_hf: {mt} state dict has no {name!r} (first keys: {sorted(sd)[:4]})",
                                      tensor=name)
            return None
        if tuple(sd[key].shape) != shape:
            raise ConversionError(f"from_hf: {mt} tensor {name!r} has shape {tuple(sd[key].shape)}, the config "
                                  f"(d_model={D}, heads={H}, kv heads={K}, d_head={E}, d_mlp={M}, vocab={V}) "
                                  f"requires {shape}", tensor=name)
        used.add(key)
        return sd[key].detach()

    def norm_w(key: str, shape: tuple[int, ...] = (D,)) -> torch.Tensor:
        w = get(key, shape)
        return 1.0 + w if gemma else w  # Gemma's RMSNorm multiplies by (1 + w)

    def lin_in(w: torch.Tensor, n: int) -> torch.Tensor:  # nn.Linear [n*E, D] -> [n, D, E]
        return w.reshape(n, E, D).transpose(1, 2)

    emb_key = "embed_in.weight" if mt == "gpt_neox" else "embed_tokens.weight"
    W_E = get(emb_key, (V, D))
    per: dict[str, list[torch.Tensor]] = {}

    def put(name: str, t: torch.Tensor | None) -> None:
        if t is not None:
            per.setdefault(name, []).append(t)

    for l in range(L):
        p = f"layers.{l}."
        if mt == "gpt_neox":
            w = get(p + "attention.query_key_value.weight", (3 * H * E, D)).reshape(H, 3, E, D)
            put("W_Q", w[:, 0].transpose(1, 2)), put("W_K", w[:, 1].transpose(1, 2))
            put("W_V", w[:, 2].transpose(1, 2))
            b = get(p + "attention.query_key_value.bias", (3 * H * E,), False)
            if b is not None:
                b = b.reshape(H, 3, E)
                put("b_Q", b[:, 0]), put("b_K", b[:, 1]), put("b_V", b[:, 2])
            o, ob = get(p + "attention.dense.weight", (D, H * E)), get(p + "attention.dense.bias", (D,), False)
            put("W_in", get(p + "mlp.dense_h_to_4h.weight", (M, D)).T)
            put("b_in", get(p + "mlp.dense_h_to_4h.bias", (M,), False))
            put("W_out", get(p + "mlp.dense_4h_to_h.weight", (D, M)).T)
            put("b_out", get(p + "mlp.dense_4h_to_h.bias", (D,), False))
            for ours, theirs in (("ln1", "input_layernorm"), ("ln2", "post_attention_layernorm")):
                put(f"{ours}_w", get(p + theirs + ".weight", (D,))), put(f"{ours}_b", get(p + theirs + ".bias", (D,)))
        else:
            a = p + "self_attn."
            if mt == "phi3":
                qkv = get(a + "qkv_proj.weight", ((H + 2 * K) * E, D))
                q, k, v = qkv.split([H * E, K * E, K * E], dim=0)
                qb = kb = vb = None
            else:
                q, k, v = (get(a + f"{m}_proj.weight", (n * E, D)) for m, n in zip("qkv", (H, K, K)))
                qb, kb, vb = (get(a + f"{m}_proj.bias", (n * E,), False) for m, n in zip("qkv", (H, K, K)))
            put("W_Q", lin_in(q, H)), put("W_K", lin_in(k, K)), put("W_V", lin_in(v, K))
            put("b_Q", None if qb is None else qb.reshape(H, E))
            put("b_K", None if kb is None else kb.reshape(K, E)), put("b_V", None if vb is None else vb.reshape(K, E))
            o, ob = get(a + "o_proj.weight", (D, H * E)), get(a + "o_proj.bias", (D,), False)
            if mt == "phi3":
                gate, up = get(p + "mlp.gate_up_proj.weight", (2 * M, D)).chunk(2, dim=0)
                gb = ub = None
            else:
                gate, up = get(p + "mlp.gate_proj.weight", (M, D)), get(p + "mlp.up_proj.weight", (M, D))
                gb, ub = get(p + "mlp.gate_proj.bias", (M,), False), get(p + "mlp.up_proj.bias", (M,), False)
            put("W_gate", gate.T), put("W_in", up.T), put("W_out", get(p + "mlp.down_proj.weight", (D, M)).T)
            put("b_gate", gb), put("b_in", ub), put("b_out", get(p + "mlp.down_proj.bias", (D,), False))
            if mt == "olmo2":
                names = (("ln1_post", "post_attention_layernorm"), ("ln2_post", "post_feedforward_layernorm"))
            elif gemma:
                names = (("ln1", "input_layernorm"), ("ln1_post", "post_attention_layernorm"),
                         ("ln2", "pre_feedforward_layernorm"), ("ln2_post", "post_feedforward_layernorm"))
            else:
                names = (("ln1", "input_layernorm"), ("ln2", "post_attention_layernorm"))
            for ours, theirs in names:
                put(f"{ours}_w", norm_w(p + theirs + ".weight"))
            if f["qk_norm"]:
                per_head = f["qk_norm_scope"] != "all"
                qn = norm_w(a + "q_norm.weight", (E,) if per_head else (H * E,))
                kn = norm_w(a + "k_norm.weight", (E,) if per_head else (K * E,))
                if not per_head:
                    qn, kn = qn.reshape(H, E), kn.reshape(K, E)
                put("q_norm_w", qn), put("k_norm_w", kn)
        put("W_O", o.T.reshape(H, E, D)), put("b_O", ob)

    t = {k: torch.stack(v) for k, v in per.items()}
    if mt == "gpt_neox":
        t["ln_final_w"] = get("final_layer_norm.weight", (D,))
        t["ln_final_b"] = get("final_layer_norm.bias", (D,))
    else:
        t["ln_final_w"] = norm_w("norm.weight")
    t["W_E"] = W_E
    unexpected = sorted(k for k in set(sd) - used if not _HF_IGNORED_BUFFERS.search(k))
    if unexpected and not extra_ok:
        raise ConversionError(f"from_hf: {mt} state dict has parameters this converter does not know "
                              f"(an unsupported feature?): {unexpected[:8]}")
    if lm_head is not None and tuple(lm_head.shape) != (V, D):
        raise ConversionError(f"from_hf: {mt} tensor {head_key!r} has shape {tuple(lm_head.shape)}, the config "
                              f"requires {(V, D)}", tensor=head_key)
    # a meta head (a lazy model's config pass: no data to compare) is a head of its own
    tied = lm_head is None or (not lm_head.is_meta and lm_head.data_ptr() == W_E.data_ptr())
    if not tied:
        t["W_U"] = lm_head.detach().T
    upd = {"tied_embeddings": tied}
    bias_names = [n for n in ("b_Q", "b_K", "b_V", "b_O", "b_in", "b_out", "b_gate") if n in t]
    if bias_names:  # some biases exist: all of ours do, zeros where the source has none
        upd["biases"] = True
    else:
        upd["biases"] = False
    for n in bias_names:
        if len(per[n]) != L:
            raise ConversionError(f"from_hf: {mt}: bias {n} present in some layers only")
    return t, upd


@contextlib.contextmanager
def hf_exact_float64(hf_model: torch.nn.Module) -> Iterator[None]:
    """Run a Hugging Face model with its float32 islands removed: RMSNorms (which upcast to
    float32) and the eager attention softmax (`dtype=torch.float32`) compute in the input's dtype.
    Hugging Face float64 models are otherwise accurate to float32 only; this gives a float64
    reference (rotary tables stay float32: `rotary_table_dtype="float32"` reproduces them)."""
    import torch.nn.functional as F

    patched = []
    for mod in hf_model.modules():
        cls = type(mod).__name__
        if not cls.endswith("RMSNorm") or not isinstance(getattr(mod, "weight", None), torch.Tensor):
            continue
        gemma = cls.startswith("Gemma")
        eps = getattr(mod, "variance_epsilon", getattr(mod, "eps", 1e-6))

        def fwd(x, mod=mod, gemma=gemma, eps=eps):
            y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
            return y * ((1.0 + mod.weight) if gemma else mod.weight)
        mod.forward = fwd
        patched.append(mod)
    softmax = F.softmax

    def exact_softmax(input, dim=None, _stacklevel=3, dtype=None):
        if dtype is not None and input.dtype == torch.float64:
            dtype = None
        return softmax(input, dim=dim, _stacklevel=_stacklevel, dtype=dtype)
    F.softmax = exact_softmax
    try:
        yield
    finally:
        F.softmax = softmax
        for mod in patched:
            del mod.forward


@contextlib.contextmanager
def hf_eager(hf_model: torch.nn.Module) -> Iterator[None]:
    """Run a Hugging Face model with eager attention (the reference implementation), restoring after."""
    cfg = getattr(hf_model, "config", None)
    before = getattr(cfg, "_attn_implementation", None)
    switch = before not in (None, "eager") and hasattr(hf_model, "set_attn_implementation")
    if switch:
        hf_model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            hf_model.set_attn_implementation(before)


def _from_hf_family(sd: dict, config: Any, hf_model: torch.nn.Module | None, tokenizer: Any,
                    dtype: torch.dtype | None, check: bool, name: str | None, extra_ok: bool = False) -> Transformer:
    f = _hf_family_fields(config)
    if hf_model is not None:
        emb = getattr(getattr(hf_model, "model", hf_model), "embed_tokens", None)
        if isinstance(getattr(emb, "embed_scale", None), torch.Tensor):  # the exact value HF multiplies by
            f["embed_scale"] = float(emb.embed_scale)
    t, upd = _hf_family_tensors(sd, config, f, extra_ok)
    f.update(upd)
    if name is not None:
        f["name"] = name
    cfg = ModelConfig(**f)
    shapes = param_shapes(cfg)
    kv = "_" if cfg.grouped_kv else ""
    if cfg.grouped_kv:
        for m in ("W_K", "W_V", "b_K", "b_V"):
            if m in t:
                t[kv + m] = t.pop(m)
    W_E = t["W_E"]
    for k, shape in shapes.items():  # biases the source does not have: zeros
        if k not in t and (k.startswith(("b_", "_b_"))):
            t[k] = W_E.new_zeros(shape)
    model = _build(cfg, t, dtype)
    _carry_tokenizer(model, tokenizer, strict=True)
    if check and hf_model is not None and any(hasattr(hf_model, a) for a in ("lm_head", "embed_out")):
        def fn(tok):
            with hf_eager(hf_model), (hf_exact_float64(hf_model) if W_E.dtype == torch.float64
                                      else contextlib.nullcontext()):
                return hf_model(input_ids=tok).logits
        _check_logits(model, fn, W_E.dtype, f"from_hf ({config.model_type})", source=hf_model)
    return model
