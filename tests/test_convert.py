"""Converters: Hugging Face GPT-2 and TransformerLens (3.x HookedTransformer, 4.x TransformerBridge).

Every source model is built offline from a config and has EVERY parameter randomised (the libraries
initialise LN weights to 1 and biases to 0, which would hide a dropped or misplaced tensor). Logits
are compared here, independently of the converters' own built-in check.

TransformerLens: one major version is installed in the environment, the other (by
`.ci/install_interop.py`) in `.ci/tl3/` (or $CW_TL_ALT_PATH). `test_other_transformer_lens_version`
re-runs this file's `tl_` tests in a subprocess with that directory first on PYTHONPATH.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import pytest
import torch

import circwidgets as cw
from circwidgets.model import ConversionError
from circwidgets.model.convert import _check_logits

ROOT = Path(__file__).resolve().parents[1]
ALT_TL = Path(os.environ.get("CW_TL_ALT_PATH", ROOT / ".ci" / "tl3"))
IN_SUBPROCESS = os.environ.get("CW_TL_SUBPROCESS") == "1"


def need(module: str):
    """Import `module` or skip: absent, or installed but failing to import (a broken optional install)."""
    try:
        return pytest.importorskip(module, exc_type=ImportError)
    except TypeError:  # pytest < 8.2 has no exc_type and skips on any ImportError anyway
        return pytest.importorskip(module)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max())


TOL = {torch.float32: 1e-4, torch.float64: 1e-10}


@torch.no_grad()
def randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter random: norm weights near 1, everything else N(0, ~1/fan_in), embeddings N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        r = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
        leaf = name.split(".")[-1]
        is_norm = any(s in name for s in ("ln", "norm")) and p.ndim == 1
        if is_norm and leaf in ("w", "weight"):
            p.copy_(1.0 + 0.3 * r)
        elif p.ndim == 1:
            p.copy_(0.3 * r)
        elif any(s in name for s in ("W_E", "W_pos", "wte", "wpe", "embed")) and "unembed" not in name:
            p.copy_(r)
        else:
            p.copy_(r * (1.5 / min(p.shape[-2:])) ** 0.5)


# ---------------------------------------------------------------------------------------- Hugging Face
def hf_gpt2(dtype=torch.float32, seed=0, **kw):
    transformers = need("transformers")
    cfg = transformers.GPT2Config(
        **{**dict(n_layer=2, n_embd=64, n_head=4, vocab_size=101, n_positions=32, bos_token_id=0,
                  eos_token_id=0), **kw}
    )
    torch.manual_seed(seed)
    m = transformers.GPT2LMHeadModel(cfg).to(dtype).eval()
    randomise(m, seed)
    return m


def tokens(vocab: int, n_pos: int, batch: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, n_pos), generator=torch.Generator().manual_seed(seed))


HF_VARIANTS = {
    "default": {},
    "relu_n_inner": dict(activation_function="relu", n_inner=48),
    "gelu_unscaled": dict(activation_function="gelu", scale_attn_weights=False, layer_norm_epsilon=1e-3),
    "untied_head": dict(tie_word_embeddings=False),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant", list(HF_VARIANTS))
def test_from_hf_logits(variant, dtype):
    m = hf_gpt2(dtype, **HF_VARIANTS[variant])
    if variant == "untied_head":
        assert not torch.equal(m.lm_head.weight, m.transformer.wte.weight)
    ours = cw.from_hf(m)
    c = ours.cfg
    assert (c.n_layers, c.d_model, c.n_heads, c.d_head, c.d_vocab, c.n_ctx) == (2, 64, 4, 16, 101, 32)
    assert (c.normalization, c.biases, c.attn_only, c.positional) == ("LN", True, False, "standard")
    assert ours.W_E.dtype == dtype
    toks = tokens(101, 32)
    with torch.no_grad():
        err = rel_err(ours(toks), m(toks).logits)
    assert err < TOL[dtype], err


def test_from_hf_train_mode_source():
    """The check runs the source in eval mode (GPT-2 has dropout) and leaves its mode as it was."""
    m = hf_gpt2(torch.float64).train()
    ours = cw.from_hf(m)
    assert m.training and not ours.training


def test_from_hf_patterns_match_hf_attentions():
    """Head h of ours is head h of HF (not just the same sum): compare per-head attention patterns."""
    m = hf_gpt2(torch.float64, attn_implementation="eager")
    ours = cw.from_hf(m)
    toks = tokens(101, 20)
    _, cache = ours.run_with_cache(toks)
    with torch.no_grad():
        hf_att = m(toks, output_attentions=True).attentions
    for layer in range(2):
        assert torch.allclose(cache["pattern", layer], hf_att[layer], atol=1e-12)


def test_from_hf_state_dict():
    m = hf_gpt2(torch.float64)
    toks = tokens(101, 16)
    with torch.no_grad():
        ref = m(toks).logits
    ours = cw.from_hf(m.state_dict(), n_heads=4)  # keys "transformer.*" + lm_head
    assert rel_err(ours(toks), ref) < 1e-10
    bare = cw.from_hf(m.transformer.state_dict(), n_heads=4)  # GPT2Model keys, no lm_head: tied
    assert rel_err(bare(toks), ref) < 1e-10
    with pytest.raises(ValueError, match="n_heads="):
        cw.from_hf(m.state_dict())
    assert rel_err(cw.from_hf(m.state_dict(), config=m.config)(toks), ref) < 1e-10  # heads from the config
    with pytest.raises(ValueError, match="dividing d_model=64"):
        cw.from_hf(m.state_dict(), n_heads=5)
    wrong = cw.from_hf(m.state_dict(), n_heads=8)  # shapes alone cannot tell: heads really matter
    assert rel_err(wrong(toks), ref) > 1e-3


def test_from_hf_gpt2model_checked():
    transformers = need("transformers")
    m = hf_gpt2(torch.float64)
    base = transformers.GPT2Model(m.config).to(torch.float64).eval()
    base.load_state_dict(m.transformer.state_dict())
    ours = cw.from_hf(base)  # GPT2Model: checked through the tied unembedding
    toks = tokens(101, 10)
    with torch.no_grad():
        assert rel_err(ours(toks), m(toks).logits) < 1e-10


def test_from_hf_refuses_other_architectures():
    transformers = need("transformers")
    cfg = transformers.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=16)
    llama = transformers.LlamaForCausalLM(cfg)
    bloom = transformers.BloomForCausalLM(transformers.BloomConfig(hidden_size=16, n_layer=1, n_head=2, vocab_size=20))
    with pytest.raises(ConversionError, match="model_type is 'bloom'"):  # llama is supported since issue 11
        cw.from_hf(bloom)
    with pytest.raises(ConversionError, match="not a GPT-2 state dict"):
        cw.from_hf(llama.state_dict(), n_heads=4)
    with pytest.raises(TypeError, match="expects a Hugging Face GPT-2 model"):
        cw.from_hf(torch.nn.Linear(3, 3))
    with pytest.raises(TypeError, match="expects a Hugging Face GPT-2 model"):
        cw.from_hf("gpt2")
    with pytest.raises(ConversionError, match="scale_attn_by_inverse_layer_idx"):
        cw.from_hf(hf_gpt2(scale_attn_by_inverse_layer_idx=True))
    with pytest.raises(ConversionError, match="activation_function 'silu'"):
        cw.from_hf(hf_gpt2(activation_function="silu"))
    sd = hf_gpt2().state_dict()
    sd["transformer.h.0.crossattention.c_attn.weight"] = torch.zeros(64, 128)
    with pytest.raises(ConversionError, match="unexpected.*crossattention"):
        cw.from_hf(sd, n_heads=4)
    sd = hf_gpt2().state_dict()
    sd["transformer.h.1.attn.c_attn.weight"] = sd["transformer.h.1.attn.c_attn.weight"].T.contiguous()
    sd["transformer.h.0.attn.c_attn.weight"] = sd["transformer.h.0.attn.c_attn.weight"].T.contiguous()
    with pytest.raises(ConversionError, match="Conv1D layout"):
        cw.from_hf(sd, n_heads=4)


def test_from_hf_tokenizer_carried():
    transformers = need("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<bos>", "<unk>", "the", "cat", "sat", "<b>x</b>"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", unk_token="<unk>")
    m = hf_gpt2(vocab_size=6, bos_token_id=0, eos_token_id=0)
    ours = cw.from_hf(m, tokenizer=tok)
    assert ours.cfg.bos_token_id == 0
    assert ours.to_tokens("the cat sat").tolist() == [[0, 2, 3, 4]]
    assert ours.to_str_tokens("the cat <b>x</b>") == ["<bos>", "the", "cat", "<b>x</b>"]
    with pytest.raises(TypeError, match="tokenizer"):
        cw.from_hf(m, tokenizer=object())


def test_logits_check_catches_a_wrong_conversion():
    m = hf_gpt2(torch.float64)
    ours = cw.from_hf(m)
    with torch.no_grad():
        ours.W_Q[1, 2] += 0.05
    with pytest.raises(ConversionError, match="logits differ"):
        _check_logits(ours, lambda t: m(t).logits, torch.float64, "test")


# ---------------------------------------------------------------------------------------- TransformerLens
def tl_major() -> int:
    tl = need("transformer_lens")
    from importlib.metadata import version

    del tl
    return int(version("transformer-lens").split(".")[0])


def tl_model(attn_only=True, normalization=None, positional="standard", act_fn="gelu_new", dtype=torch.float64,
             seed=0, tokenizer=None, **extra):
    """A random TransformerLens model of the installed major version (3.x: HookedTransformer,
    4.x: TransformerBridge.boot_native). d_head * n_heads != d_model on purpose."""
    major = tl_major()
    kw = dict(n_layers=2, d_model=16, n_heads=3, d_head=5, d_vocab=23, n_ctx=10, attn_only=attn_only,
              normalization_type=normalization, positional_embedding_type=positional, act_fn=act_fn, **extra)
    if not attn_only:
        kw["d_mlp"] = 24
    if major < 4:
        from transformer_lens import HookedTransformer, HookedTransformerConfig

        with warnings.catch_warnings():  # "HookedTransformer is deprecated": we test it on purpose
            warnings.simplefilter("ignore", DeprecationWarning)
            model = HookedTransformer(HookedTransformerConfig(dtype=dtype, seed=seed, **kw), tokenizer=tokenizer)
    else:
        if positional == "shortformer":
            pytest.skip("TransformerLens 4.x has no shortformer positions (its native model supports "
                        "'standard' and 'rotary' only; tl_legacy refuses shortformer checkpoints)")
        import transformer_lens.model_bridge.sources  # noqa: F401  (attaches boot_native)
        from transformer_lens.config import TransformerBridgeConfig
        from transformer_lens.model_bridge import TransformerBridge

        cfg = TransformerBridgeConfig(seed=seed, **kw)
        model = TransformerBridge.boot_native(cfg, tokenizer=tokenizer, dtype=dtype)
    randomise(model, seed)
    return model.eval()


TL_VARIANTS = {
    "attn_only_shortformer": dict(positional="shortformer"),
    "attn_only_ln_shortformer": dict(normalization="LN", positional="shortformer"),
    "attn_only_standard": dict(),
    "ln_mlp": dict(attn_only=False, normalization="LN"),
    "lnpre_mlp_relu": dict(attn_only=False, normalization="LNPre", act_fn="relu"),
    "mlp_gelu_no_norm": dict(attn_only=False, act_fn="gelu"),
    "ln_mlp_custom_scale": dict(attn_only=False, normalization="LN", attn_scale=3.0),
    # 3.x then divides by 1; 4.x's native attention ignores use_attn_scale=False (sqrt(d_head)): we read the modules
    "ln_mlp_use_attn_scale_false": dict(attn_only=False, normalization="LN", use_attn_scale=False),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant", list(TL_VARIANTS))
def test_tl_logits(variant, dtype):
    v = TL_VARIANTS[variant]
    model = tl_model(dtype=dtype, **v)
    ours = cw.from_transformer_lens(model)
    c = ours.cfg
    assert (c.n_layers, c.d_model, c.n_heads, c.d_head, c.d_vocab, c.n_ctx) == (2, 16, 3, 5, 23, 10)
    assert c.positional == v.get("positional", "standard")
    assert c.normalization == v.get("normalization")
    assert c.attn_only == v.get("attn_only", True)
    if "use_attn_scale" not in v:
        assert math.isclose(c.attn_scale, v.get("attn_scale", math.sqrt(5)))
    toks = tokens(23, 10)
    with torch.no_grad():
        err = rel_err(ours(toks), model(toks))
    assert err < TOL[dtype], err


def test_tl_every_parameter_matters():
    """The randomised source has no parameter left at TransformerLens' init of 0 or 1, so a dropped
    or misplaced LN weight or bias cannot hide (b_U excepted where the source has none)."""
    model = tl_model(attn_only=False, normalization="LN")
    ours = cw.from_transformer_lens(model)
    for name, p in ours.named_parameters():
        if name == "b_U" and tl_major() >= 4:
            continue  # TL 4's native head has no bias: the bridge reports zeros
        for const in (0.0, 1.0):
            assert not torch.allclose(p, torch.full_like(p, const)), name


def test_tl_processed_weights():
    """Folded / centred weights (3.x process_weights_, 4.x enable_compatibility_mode) convert too,
    and give the original model's distribution (logits up to a per-position constant)."""
    model = tl_model(attn_only=False, normalization="LN")
    toks = tokens(23, 10)
    with torch.no_grad():
        before = model(toks).clone()
    if tl_major() < 4:
        model.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=True)
    else:
        model.enable_compatibility_mode(disable_warnings=True)
    ours = cw.from_transformer_lens(model)
    assert ours.cfg.normalization in ("LN", "LNPre")
    with torch.no_grad():
        after = model(toks)
        mine = ours(toks)
    assert rel_err(mine, after) < 1e-6  # the bridge's LNPre runs in float32
    centred = [x - x.mean(-1, keepdim=True) for x in (mine, before)]
    assert rel_err(*centred) < 1e-5  # TL's own processing moves float64 logits by ~1.4e-6 (3.9) / 1.5e-7 (4.3)


@pytest.mark.parametrize("bad, match", [  # rotary, RMS, gated MLPs, GQA: supported (tests/test_architectures.py)
    (dict(attn_only=False, normalization="LN", final_rms=True), "final_rms=True with normalization_type='LN'"),
    (dict(d_vocab_out=11), "d_vocab_out=11 differs from d_vocab=23"),
])
def test_tl_refuses_unsupported(bad, match):
    model = tl_model(**bad)
    with pytest.raises(ConversionError, match=match):
        cw.from_transformer_lens(model)


def test_tl_bad_input_and_tokenizer():
    need("transformer_lens")
    with pytest.raises(TypeError, match="HookedTransformer .3.x. or TransformerBridge"):
        cw.from_transformer_lens(torch.nn.Linear(2, 2))
    transformers = need("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel({f"t{i}": i for i in range(23)}, unk_token="t1"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # name_or_path / add_bos_token: else TransformerLens tries to reload the tokenizer from the Hub
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="t0", unk_token="t1",
                                               name_or_path="local", add_bos_token=True)
    ours = cw.from_transformer_lens(tl_model(), tokenizer=tok)  # given explicitly
    assert ours.cfg.bos_token_id == 0
    assert ours.to_str_tokens([0, 5, 7]) == ["t0", "t5", "t7"]
    ours = cw.from_transformer_lens(tl_model(tokenizer=tok))  # carried from model.tokenizer
    assert ours.tokenizer is not None and ours.cfg.bos_token_id == 0
    assert ours.to_tokens("t3 t4").tolist() == [[0, 3, 4]]


def test_tl4_bridge_over_hf_gpt2():
    """A 4.x bridge around a HF GPT-2 reads its weights through the GPT-2 adapter: same logits as HF."""
    if tl_major() < 4:
        pytest.skip("TransformerBridge over a HF module is tested with TransformerLens 4.x")
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    m = hf_gpt2(torch.float64)
    toks = tokens(101, 20)
    with torch.no_grad():
        ref = m(toks).logits.clone()
    bridge = build_bridge_from_module(m, "GPT2LMHeadModel", hf_config=m.config)
    ours = cw.from_transformer_lens(bridge)
    with torch.no_grad():
        assert rel_err(ours(toks), ref) < 1e-10


def test_other_transformer_lens_version(run_tl_tests_on_other_version):
    """Run this file's tl_ tests again against the TransformerLens installed in ALT_TL (the other major version)."""
    run_tl_tests_on_other_version(str(Path(__file__)))
