"""Architectures beyond GPT-2: rotary, RMSNorm, grouped-query K/V, gated / parallel MLPs, q/k norms,
Gemma's post-norms and soft caps, sliding windows, tied embeddings.

Sources are built offline from configs with EVERY parameter randomised (norm weights too), and run
on inputs longer than their sliding windows. Hugging Face float64 models compute their RMSNorms and
softmax in float32; the float64 comparisons run them through `hf_exact_float64`, which removes those
float32 islands (nothing else), so a float64 reference exists.

TransformerLens: one major version is installed, the other in `.ci/tl3` (`test_other_transformer_lens_version`
re-runs this file's `tl_` tests there in a subprocess, as tests/test_convert.py does).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import pytest
import torch

import circwidgets as cw
from circwidgets.model import ConversionError, ModelConfig, Transformer, param_shapes, rotary
from circwidgets.model.convert import hf_exact_float64
from circwidgets.model.testing import random_model

ROOT = Path(__file__).resolve().parents[1]
ALT_TL = Path(os.environ.get("CW_TL_ALT_PATH", ROOT / ".ci" / "tl3"))
IN_SUBPROCESS = os.environ.get("CW_TL_SUBPROCESS") == "1"
TOL = {torch.float32: 1e-4, torch.float64: 1e-10}
N_POS = 20  # longer than every sliding window below (5)


def need(module: str):
    try:
        return pytest.importorskip(module, exc_type=ImportError)
    except TypeError:
        return pytest.importorskip(module)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max())


def tokens(vocab: int, n_pos: int = N_POS, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, n_pos), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter random: norm weights 1 + 0.3 N (Gemma's zero-centred ones 0.3 N), biases 0.3 N,
    embeddings N(0, 1), matrices N(0, 1.5 / fan)."""
    g = torch.Generator().manual_seed(seed)
    gemma = "gemma" in type(module).__name__.lower()
    for name, p in module.named_parameters():
        r = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
        leaf = name.split(".")[-1]
        if ("norm" in name or name.split(".")[-2:-1] in (["ln1"], ["ln2"], ["ln_final"], ["ln1_post"], ["ln2_post"])) \
                and leaf in ("w", "weight") and p.ndim == 1:
            p.copy_(0.3 * r if gemma else 1.0 + 0.3 * r)
        elif p.ndim == 1:
            p.copy_(0.3 * r)
        elif "embed" in name and "unembed" not in name or "W_E" in name:
            p.copy_(r)
        else:
            p.copy_(r * (1.5 / min(p.shape[-2:])) ** 0.5)


# ---------------------------------------------------------------------------------------- Hugging Face
VOCAB = 57
COMMON = dict(hidden_size=48, intermediate_size=40, num_hidden_layers=2, num_attention_heads=6, vocab_size=VOCAB,
              max_position_embeddings=32, attn_implementation="eager", bos_token_id=1, eos_token_id=2, pad_token_id=0)


def _hf_builders():
    tf = need("transformers")
    return {
        "gpt_neox": lambda: tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(**COMMON, rotary_pct=0.5,
                                                                   use_parallel_residual=True)),
        "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(
            **COMMON, num_key_value_heads=2, attention_bias=True, mlp_bias=True,
            rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                                 high_freq_factor=4.0, original_max_position_embeddings=8))),
        "mistral": lambda: tf.MistralForCausalLM(tf.MistralConfig(**COMMON, num_key_value_heads=3, sliding_window=5)),
        "qwen2": lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(
            **COMMON, num_key_value_heads=2, use_sliding_window=True, sliding_window=5, max_window_layers=1)),
        "qwen3": lambda: tf.Qwen3ForCausalLM(tf.Qwen3Config(**COMMON, num_key_value_heads=3, head_dim=10)),
        "gemma2": lambda: tf.Gemma2ForCausalLM(tf.Gemma2Config(
            **COMMON, num_key_value_heads=2, head_dim=10, sliding_window=5, query_pre_attn_scalar=12,
            attn_logit_softcapping=3.0, final_logit_softcapping=5.0)),
        "gemma3_text": lambda: tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(
            **{**COMMON, "num_hidden_layers": 3}, num_key_value_heads=1, head_dim=10, sliding_window=5,
            query_pre_attn_scalar=12, sliding_window_pattern=2,
            rope_parameters={"full_attention": dict(rope_type="linear", factor=4.0, rope_theta=1e6),
                             "sliding_attention": dict(rope_type="default", rope_theta=1e4)})),
        "olmo2": lambda: tf.Olmo2ForCausalLM(tf.Olmo2Config(**COMMON, num_key_value_heads=2)),
        "phi3": lambda: tf.Phi3ForCausalLM(tf.Phi3Config(**COMMON, num_key_value_heads=2)),
    }


HF_ARCHS = ["gpt_neox", "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "olmo2", "phi3"]
# what each builder must turn into: (n_kv_heads, tied, sliding layers or None, normalization, feature checks)
HF_EXPECT = {
    "gpt_neox": dict(n_kv_heads=None, normalization="LN", parallel_attn_mlp=True, rotary_dim=4, gated_mlp=False),
    "llama": dict(n_kv_heads=2, normalization="RMS", biases=True, gated_mlp=True),
    "mistral": dict(n_kv_heads=3, sliding_window=5, sliding_window_layers=None),
    "qwen2": dict(n_kv_heads=2, sliding_window=5, sliding_window_layers=[1], biases=True),
    "qwen3": dict(n_kv_heads=3, qk_norm=True, qk_norm_scope="head", d_head=10),
    "gemma2": dict(n_kv_heads=2, tied_embeddings=True, post_norm=True, attn_softcap=3.0, final_softcap=5.0,
                   sliding_window_layers=[0], act_fn="gelu_pytorch_tanh"),
    "gemma3_text": dict(n_kv_heads=1, tied_embeddings=True, qk_norm=True, sliding_window_layers=[0, 2],
                        rotary_base_sliding=1e4, rotary_base=1e6),
    "olmo2": dict(n_kv_heads=2, pre_norm=False, post_norm=True, qk_norm=True, qk_norm_scope="all"),
    "phi3": dict(n_kv_heads=2, gated_mlp=True, biases=False),
}
_HF_CACHE: dict = {}


def hf_model(arch: str, dtype=torch.float32, seed: int = 0):
    key = (arch, dtype, seed)
    if key not in _HF_CACHE:
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = _hf_builders()[arch]().to(dtype).eval()
        randomise(m, seed)
        _HF_CACHE[key] = m
    return _HF_CACHE[key]


def hf_logits(m, toks: torch.Tensor) -> torch.Tensor:
    exact = hf_exact_float64(m) if next(m.parameters()).dtype == torch.float64 else torch.no_grad()
    with torch.no_grad(), exact:
        return m(toks).logits


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("arch", HF_ARCHS)
def test_hf_logits(arch, dtype):
    m = hf_model(arch, dtype)
    ours = cw.from_hf(m)  # the built-in check runs too
    for k, v in HF_EXPECT[arch].items():
        assert getattr(ours.cfg, k) == v, (k, getattr(ours.cfg, k))
    assert ours.cfg.positional == "rotary" and ours.W_E.dtype == dtype
    toks = tokens(VOCAB)
    with torch.no_grad():
        err = rel_err(ours(toks), hf_logits(m, toks))
    print(f"{arch} {dtype}: rel. error {err:.2e}")
    assert err < TOL[dtype], err


@pytest.mark.parametrize("arch", ["llama", "gemma2", "olmo2"])
def test_hf_patterns_per_head(arch):
    """Query head h of ours is head h of HF, K/V groups in HF's repeat_kv order: compare per-head patterns."""
    m = hf_model(arch, torch.float64)
    ours = cw.from_hf(m)
    toks = tokens(VOCAB)
    _, cache = ours.run_with_cache(toks)
    with torch.no_grad(), hf_exact_float64(m):
        att = m(toks, output_attentions=True).attentions
    for layer in range(ours.cfg.n_layers):
        torch.testing.assert_close(cache["pattern", layer], att[layer], atol=1e-12, rtol=0)
    assert cache["k", 0].shape == cache["q", 0].shape == (2, N_POS, 6, ours.cfg.d_head)


def test_hf_sliding_window_matters():
    """The window is real: the same model without it gives other logits on inputs longer than it."""
    m = hf_model("mistral", torch.float64)
    ours = cw.from_hf(m)
    toks = tokens(VOCAB)
    full = Transformer(ModelConfig.from_dict({**ours.cfg.to_dict(), "sliding_window": None}), seed=None).double()
    full.load_state_dict(ours.state_dict())
    assert rel_err(full(toks), ours(toks)) > 1e-3
    assert rel_err(full(toks[:, :5]), ours(toks[:, :5])) < 1e-14  # within the window: identical


def test_hf_state_dict_with_config_and_tokenizer():
    transformers = need("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    m = hf_model("llama", torch.float64)
    toks = tokens(VOCAB)
    ours = cw.from_hf(m.state_dict(), config=m.config)
    assert rel_err(ours(toks), hf_logits(m, toks)) < 1e-10
    with pytest.raises(ValueError, match="n_heads=4 contradicts"):
        cw.from_hf(m.state_dict(), config=m.config, n_heads=4)
    vocab = {f"w{i}": i for i in range(VOCAB)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="w0", bos_token="w1")
    ours = cw.from_hf(m, tokenizer=tok)
    assert ours.cfg.bos_token_id == 1
    assert ours.to_tokens("w5 w7").tolist() == [[1, 5, 7]]
    assert ours.to_str_tokens([3, 4]) == ["w3", "w4"]


def test_hf_refusals():
    tf = need("transformers")
    small = dict(hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, vocab_size=20,
                 max_position_embeddings=16)
    moe = tf.MixtralForCausalLM(tf.MixtralConfig(**small, num_key_value_heads=2, num_local_experts=2))
    with pytest.raises(ConversionError, match="model_type is 'mixtral'"):
        cw.from_hf(moe)
    dynamic = tf.LlamaForCausalLM(tf.LlamaConfig(**small, rope_parameters=dict(
        rope_type="dynamic", rope_theta=10000.0, factor=4.0)))  # frequencies that change with the input's length
    with pytest.raises(ConversionError, match="rope scaling rope_type='dynamic'"):
        cw.from_hf(dynamic)
    qwen_moe_like = tf.Qwen2ForCausalLM(tf.Qwen2Config(**small))
    qwen_moe_like.config.num_experts = 4
    with pytest.raises(ConversionError, match="mixture of experts"):
        cw.from_hf(qwen_moe_like)
    sd = hf_model("llama").state_dict()
    sd["model.layers.0.mlp.experts.0.weight"] = torch.zeros(3)
    with pytest.raises(ConversionError, match="does not know.*experts"):
        cw.from_hf(sd, config=hf_model("llama").config)
    bloom = tf.BloomForCausalLM(tf.BloomConfig(hidden_size=16, n_layer=1, n_head=2, vocab_size=20))
    with pytest.raises(ConversionError, match="model_type is 'bloom'"):
        cw.from_hf(bloom)


@pytest.mark.parametrize("arch", HF_ARCHS)
def test_save_load_roundtrip(arch, tmp_path):
    ours = cw.from_hf(hf_model(arch), check=False)
    path = cw.save(ours, tmp_path / f"{arch}.safetensors")
    back = cw.load(path)
    assert back.cfg == ours.cfg
    sd, sd2 = ours.state_dict(), back.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    if ours.cfg.grouped_kv:  # shared K/V stored once
        assert "W_K" not in shapes and shapes["_W_K"] == [ours.cfg.n_layers, ours.cfg.n_kv, 48, ours.cfg.d_head]
    keys = set(shapes)
    assert ("W_U" in keys) == (not ours.cfg.tied_embeddings)
    toks = tokens(VOCAB)
    assert torch.equal(back(toks), ours(toks))


@pytest.mark.parametrize("arch", HF_ARCHS)
def test_fold_exact(arch):
    """Folding the (pre-)norm weights gives the same logits; RMS folds to RMSPre without centring."""
    from circwidgets.model import fold_layernorm
    from circwidgets.model.fold import folded_weights

    ours = cw.from_hf(hf_model(arch, torch.float64), check=False)
    folded = fold_layernorm(ours)
    c = folded.cfg
    assert c.normalization == ("LNPre" if arch == "gpt_neox" else "RMSPre")
    assert not c.tied_embeddings and c.n_kv_heads == ours.cfg.n_kv_heads
    assert ("ln1_post_w" in dict(folded.named_parameters())) == ours.cfg.post_norm  # post-norms stay
    toks = tokens(VOCAB)
    with torch.no_grad():
        assert rel_err(folded(toks), ours(toks)) < 1e-12
    w = folded_weights(ours)
    for name in ("W_Q", "W_K", "W_V", "W_O", "W_U", "W_E"):
        torch.testing.assert_close(w[name], getattr(folded, name), rtol=1e-13, atol=1e-13)
    assert w["W_K"].shape == (ours.cfg.n_layers, 6, 48, ours.cfg.d_head)
    if arch != "gpt_neox":  # no centring for RMS: the writing weights keep their mean
        assert torch.equal(folded.W_E, ours.W_E)


def test_rms_residual_rotation_invariance():
    """RMSPre is invariant under an orthogonal change of residual basis: rotate every writer and reader."""
    from circwidgets.model import fold_layernorm

    m = fold_layernorm(cw.from_hf(hf_model("llama", torch.float64), check=False))
    q, _ = torch.linalg.qr(torch.randn(48, 48, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    sd = dict(m.state_dict())
    for name in ("W_E", "W_O", "W_out", "b_O", "b_out"):
        sd[name] = sd[name] @ q
    for name in ("W_Q", "_W_K", "_W_V", "W_in", "W_gate", "W_U"):
        sd[name] = q.T @ sd[name]
    rotated = Transformer(m.cfg, seed=None).double()
    rotated.load_state_dict(sd)
    toks = tokens(VOCAB)
    with torch.no_grad():
        assert rel_err(rotated(toks), m(toks)) < 1e-12


# ---------------------------------------------------------------------------------------- our own model
def test_gqa_views_share_storage():
    m = random_model(n_layers=2, d_model=16, n_heads=6, d_head=4, d_vocab=13, n_ctx=10, n_kv_heads=2,
                     positional="rotary", biases=True, normalization="RMS", attn_only=False, d_mlp=8,
                     gated_mlp=True, act_fn="silu", tied_embeddings=True)
    c = m.cfg
    assert {n for n, _ in m.named_parameters()} == set(param_shapes(c))
    assert m._W_K.shape == (2, 2, 16, 4) and m.W_K.shape == (2, 6, 16, 4) and m.b_V.shape == (2, 6, 4)
    assert [c.kv_head_of(h) for h in range(6)] == [0, 0, 0, 1, 1, 1] and c.kv_group(1) == [3, 4, 5]
    grouped = m.kv_grouped(m._W_K)
    assert grouped.shape == (2, 2, 3, 16, 4) and grouped.data_ptr() == m._W_K.data_ptr()
    for h in range(6):
        assert torch.equal(m.W_K[:, h], m._W_K[:, c.kv_head_of(h)])
        assert torch.equal(m.b_V[:, h], m._b_V[:, c.kv_head_of(h)])
    assert m.W_U.data_ptr() == m.W_E.data_ptr() and m.W_U.shape == (16, 13)
    with torch.no_grad():
        m.W_E[3, 5] = 7.0
    assert m.W_U[5, 3] == 7.0  # tied: one tensor
    mqa = random_model(n_heads=4, n_kv_heads=1, positional="rotary")
    assert mqa.W_V.shape == (2, 4, 16, 4) and mqa.W_V.data_ptr() == mqa._W_V.data_ptr()  # MQA: a true view
    assert "W_K" in dict(random_model(n_kv_heads=3).named_parameters())  # n_kv_heads == n_heads: plain MHA


def test_gqa_equals_copied_out_multihead():
    """A GQA model computes what the same model with K/V heads copied out per query head computes."""
    m = random_model(n_heads=6, n_kv_heads=2, positional="rotary", normalization="RMS", biases=True, qk_norm=True)
    full = Transformer(ModelConfig.from_dict({**m.cfg.to_dict(), "n_kv_heads": None}), seed=None).double()
    sd = {k: v for k, v in m.state_dict().items() if not k.startswith("_")}
    full.load_state_dict({**sd, "W_K": m.W_K, "W_V": m.W_V, "b_K": m.b_K, "b_V": m.b_V})
    toks = tokens(13, 10)
    _, c1 = m.run_with_cache(toks)
    _, c2 = full.run_with_cache(toks)
    for name in ("k", "rot_k", "v", "pattern", "resid_post"):
        torch.testing.assert_close(c1[name, 1], c2[name, 1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("rotary_dim", [None, 4])
def test_rotary_identity(layout, rotary_dim):
    """(x_i W_Q R(i)) · (x_j W_K R(j)) = x_i W_Q R(i - j) W_Kᵀ x_jᵀ, R orthogonal, R(0) = I."""
    cfg = ModelConfig(n_layers=1, d_model=12, n_heads=1, d_head=8, d_vocab=5, n_ctx=40, positional="rotary",
                      rotary_dim=rotary_dim, rotary_layout=layout, rotary_base=50.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 12, generator=g, dtype=torch.float64)
    W_Q, W_K = torch.randn(2, 12, 8, generator=g, dtype=torch.float64)
    pos = torch.arange(30)
    q, k = rotary.apply_rotary(x @ W_Q, pos, cfg), rotary.apply_rotary(x @ W_K, pos, cfg)
    scores = q @ k.T
    for i, j in [(0, 0), (5, 2), (29, 0), (17, 17), (3, 9)]:
        R = rotary.rotation_matrix(cfg, i - j)
        want = x[i] @ W_Q @ R @ W_K.T @ x[j]
        assert abs(float(scores[i, j] - want)) < 1e-12 * float(scores.abs().max())
    R = rotary.rotation_matrix(cfg, 7)
    torch.testing.assert_close(R @ R.T, torch.eye(8, dtype=torch.float64), rtol=0, atol=1e-14)
    torch.testing.assert_close(rotary.rotation_matrix(cfg, 0), torch.eye(8, dtype=torch.float64))
    torch.testing.assert_close(rotary.apply_rotary(x @ W_Q, pos, cfg)[4], (x @ W_Q)[4] @ rotary.rotation_matrix(cfg, 4))
    if rotary_dim is not None:  # dimensions past rotary_dim are not rotated
        assert torch.equal(q[:, 4:], (x @ W_Q)[:, 4:])
    pairs = {"half": [(0, 4 if rotary_dim is None else 2)], "interleaved": [(0, 1)]}[layout]
    for a, b in pairs:  # the layout decides which dimensions rotate together
        assert R[a, b] != 0 and R[b, a] == -R[a, b]


def test_rotary_scores_in_forward():
    """Brute force: each attention score of a one-layer rotary model (no norm) is x_i W_Q R(i-j) W_Kᵀ x_jᵀ / scale."""
    m = random_model(n_layers=1, n_heads=2, n_kv_heads=1, positional="rotary", rotary_dim=2,
                     rotary_layout="interleaved", n_ctx=12)
    toks = tokens(13, 12, batch=1)
    with torch.no_grad():
        _, cache = m.run_with_cache(toks)
    x = m.W_E[toks[0]]
    for h in range(2):
        for i in range(12):
            for j in range(i + 1):
                R = rotary.rotation_matrix(m.cfg, i - j)
                want = x[i] @ m.W_Q[0, h] @ R @ m.W_K[0, h].T @ x[j] / m.cfg.attn_scale
                assert abs(float(cache["attn_scores", 0][0, h, i, j].detach() - want.detach())) < 1e-12


def test_llama3_rope_scaling_frequencies():
    """Llama 3 scaling: long wavelengths divided by factor, short ones kept, a smooth ramp between."""
    cfg = ModelConfig(n_layers=1, d_model=8, n_heads=1, d_head=64, d_vocab=5, n_ctx=8, positional="rotary",
                      rotary_base=500000.0, rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                                              high_freq_factor=4.0,
                                                              original_max_position_embeddings=8192))
    plain = ModelConfig.from_dict({**cfg.to_dict(), "rope_scaling": None})
    f, f0 = rotary.inv_freq(cfg), rotary.inv_freq(plain)
    wavelen = 2 * math.pi / f0
    assert torch.equal(f[wavelen < 8192 / 4], f0[wavelen < 8192 / 4])
    torch.testing.assert_close(f[wavelen > 8192], f0[wavelen > 8192] / 8)
    mid = (wavelen >= 8192 / 4) & (wavelen <= 8192)
    assert mid.any() and ((f[mid] < f0[mid]) & (f[mid] > f0[mid] / 8)).all()


YARN = dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=16, beta_fast=32.0, beta_slow=1.0,
            attention_factor=1.25)


def test_yarn_frequencies_and_the_engines_qk_circuit():
    """YaRN: fast dimensions keep their frequency, slow ones are divided by factor, a ramp between; cos and sin
    carry attention_factor, so the model's own scores equal x_i W_Q M(i - j) W_Kᵀ x_jᵀ / scale with the engine's
    offset matrix (attention_factor² on the rotated block), and full_qk / offset_profile follow it."""
    cfg = ModelConfig(n_layers=1, d_model=8, n_heads=1, d_head=32, d_vocab=5, n_ctx=8, positional="rotary",
                      rotary_base=10000.0, rope_scaling={**YARN, "original_max_position_embeddings": 4096})
    plain = ModelConfig.from_dict({**cfg.to_dict(), "rope_scaling": None})
    f, f0 = rotary.inv_freq(cfg), rotary.inv_freq(plain)
    turns = 4096 * f0 / (2 * math.pi)  # rotations over the original context
    assert torch.equal(f[turns > 32], f0[turns > 32]) and (turns > 32).any()
    torch.testing.assert_close(f[turns < 1], f0[turns < 1] / 4)
    assert (turns < 1).any()
    assert ((f >= f0 / 4 - 1e-15) & (f <= f0)).all()
    with pytest.raises(ValueError, match="beta_fast"):
        ModelConfig.from_dict({**cfg.to_dict(), "rope_scaling": {**YARN, "beta_fast": 0.5}})
    m = random_model(n_layers=1, n_heads=2, d_head=8, rotary_dim=6, positional="rotary", n_ctx=12, rope_scaling=YARN,
                     attn_only=True, normalization=None)
    assert rotary.attention_factor(m.cfg) == 1.25
    toks = tokens(13, 12, batch=1)
    with torch.no_grad():
        _, cache = m.run_with_cache(toks)
    x = m.W_E[toks[0]].detach()
    for h in range(2):
        for i in range(12):
            for j in range(i + 1):
                M = rotary.offset_matrix(m.cfg, i - j)
                want = x[i] @ m.W_Q[0, h].detach() @ M @ m.W_K[0, h].detach().T @ x[j] / m.cfg.attn_scale
                assert abs(float(cache["attn_scores", 0][0, h, i, j] - want)) < 1e-12
                fq = cw.engine.full_qk(m, offset=i - j)[0, h].materialize() / m.cfg.attn_scale
                assert abs(float(fq[toks[0, i], toks[0, j]] - want)) < 1e-12
    # the unrotated dimensions (6, 7) carry no factor; the rotated block carries its square
    M0 = rotary.offset_matrix(m.cfg, 0)
    torch.testing.assert_close(M0, torch.diag(torch.tensor([1.5625] * 6 + [1.0] * 2, dtype=torch.float64)))
    # offset profile: the mean of layer 0's own scores over all token pairs at each offset
    V = m.cfg.d_vocab
    a, b = torch.meshgrid(torch.arange(V), torch.arange(V), indexing="ij")
    seqs = torch.zeros(V * V, 4, dtype=torch.long)
    seqs[:, 0], seqs[:, 3] = a.reshape(-1), b.reshape(-1)
    with torch.no_grad():
        _, c = m.run_with_cache(seqs)
    torch.testing.assert_close(c["attn_scores", 0][:, :, 3, 0].mean(0), cw.engine.offset_profile(m, [3])[0, :, 0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_hf_yarn_logits(arch, dtype, tmp_path):
    """Hugging Face models declaring YaRN (its defaults for beta_fast / beta_slow / attention_factor, and
    DeepSeek-style mscale) convert with the source's logits; truncate=False is refused by name."""
    tf = need("transformers")
    rope = dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=8)
    if arch == "qwen3":
        rope.update(mscale=0.8, mscale_all_dim=0.6)
        config = tf.Qwen3Config(**COMMON, num_key_value_heads=3, head_dim=10, rope_parameters=rope)
        cls = tf.Qwen3ForCausalLM
    else:
        config = tf.LlamaConfig(**COMMON, num_key_value_heads=2, rope_parameters=rope)
        cls = tf.LlamaForCausalLM
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = cls(config).to(dtype).eval()
    randomise(m)
    ours = cw.from_hf(m)
    assert ours.cfg.rope_scaling["rope_type"] == "yarn"
    assert ours.cfg.rope_scaling["attention_factor"] == pytest.approx(float(m.model.rotary_emb.attention_scaling))
    toks = tokens(VOCAB)
    with torch.no_grad():
        err = rel_err(ours(toks), hf_logits(m, toks))
    print(f"{arch} yarn {dtype}: rel. error {err:.2e}")
    assert err < TOL[dtype], err
    cw.save(ours, tmp_path / "yarn.safetensors")
    again = cw.load(tmp_path / "yarn.safetensors", dtype=dtype)
    assert again.cfg == ours.cfg and again.W_E.dtype == dtype
    sd, back = ours.state_dict(), again.state_dict()
    assert sd.keys() == back.keys() and all(torch.equal(sd[k], back[k]) for k in sd)  # bit-exact parameters
    with torch.no_grad():  # (the converted W_U is a transposed view, the loaded one contiguous: BLAS may round apart)
        assert rel_err(again(toks), ours(toks)) < TOL[dtype] * 1e-2
    config.rope_parameters = {**rope, "truncate": False}
    with pytest.raises(ConversionError, match="truncate=False"):
        cw.from_hf(cls(config).eval())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("partial", [1.0, 0.5])
def test_hf_longrope_logits_up_to_the_original_context(partial, dtype, tmp_path):
    """Phi-3's LongRoPE (Phi-3-mini-128k, Phi-3.5, Phi-4-mini): the short-context factors and HF's attention
    factor reproduce the source's logits; the converted model's context stops at original_max_position_embeddings
    (past it HF switches to the long factors), and a longer input is refused."""
    tf = need("transformers")
    n = int(8 * partial) // 2  # rotated pairs of a head (d_head 8)
    g = torch.Generator().manual_seed(5)
    rope = dict(rope_type="longrope", rope_theta=10000.0, original_max_position_embeddings=16,
                short_factor=(1 + 3 * torch.rand(n, generator=g)).tolist(),
                long_factor=(4 + 8 * torch.rand(n, generator=g)).tolist(), partial_rotary_factor=partial)
    config = tf.Phi3Config(**{**COMMON, "max_position_embeddings": 64}, num_key_value_heads=2, rope_parameters=rope,
                           partial_rotary_factor=partial, original_max_position_embeddings=16)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = tf.Phi3ForCausalLM(config).to(dtype).eval()
    randomise(m)
    ours = cw.from_hf(m)
    sc = ours.cfg.rope_scaling
    assert sc["rope_type"] == "longrope" and ours.cfg.n_ctx == 16 and len(sc["short_factor"]) == n
    assert sc["attention_factor"] == pytest.approx(float(m.model.rotary_emb.attention_scaling))
    assert sc["attention_factor"] == pytest.approx(math.sqrt(1 + math.log(4) / math.log(16)))  # 64 / 16
    toks = tokens(VOCAB, n_pos=16)
    with torch.no_grad():
        err = rel_err(ours(toks), hf_logits(m, toks))
    print(f"phi3 longrope partial {partial} {dtype}: rel. error {err:.2e}")
    assert err < TOL[dtype], err
    with pytest.raises(ValueError, match="n_ctx"):
        ours(tokens(VOCAB, n_pos=17))
    cw.save(ours, tmp_path / "longrope.safetensors")
    assert cw.load(tmp_path / "longrope.safetensors", dtype=dtype).cfg == ours.cfg
    with pytest.raises(ValueError, match="only LongRoPE's short-context factors"):
        ModelConfig.from_dict({**ours.cfg.to_dict(), "n_ctx": 17})
    with pytest.raises(ValueError, match="short_factor"):
        ModelConfig.from_dict({**ours.cfg.to_dict(), "rope_scaling": {**sc, "short_factor": sc["short_factor"][1:]}})


def test_rms_forward_and_post_norm_reference():
    """RMSNorm / post-norm / soft-cap / parallel forward against a per-position loop."""
    m = random_model(n_layers=2, n_heads=2, d_head=4, d_model=8, positional="rotary", normalization="RMS",
                     attn_only=False, d_mlp=6, post_norm=True, attn_softcap=2.0, final_softcap=3.0,
                     parallel_attn_mlp=True, gated_mlp=True, act_fn="gelu_pytorch_tanh", embed_scale=2.5)
    c = m.cfg
    toks = tokens(13, 7, batch=1)[0]

    def rms(v, w):
        return v / torch.sqrt((v * v).mean(-1, keepdim=True) + c.ln_eps) * w

    x = m.W_E[toks] * 2.5
    for layer in range(2):
        h = rms(x, m.ln1_w[layer])
        attn = torch.zeros_like(x)
        for head in range(2):
            q = rotary.apply_rotary(h @ m.W_Q[layer, head], torch.arange(7), c)
            k = rotary.apply_rotary(h @ m.W_K[layer, head], torch.arange(7), c)
            v = h @ m.W_V[layer, head]
            for i in range(7):
                s = torch.stack([2.0 * torch.tanh(q[i] @ k[j] / math.sqrt(4) / 2.0) for j in range(i + 1)])
                attn[i] += (torch.softmax(s, 0)[:, None] * v[: i + 1]).sum(0) @ m.W_O[layer, head]
        h2 = rms(x, m.ln2_w[layer])
        gate = torch.nn.functional.gelu(h2 @ m.W_gate[layer], approximate="tanh")
        mlp = (gate * (h2 @ m.W_in[layer])) @ m.W_out[layer]
        x = x + rms(attn, m.ln1_post_w[layer]) + rms(mlp, m.ln2_post_w[layer])
    logits = rms(x, m.ln_final_w) @ m.W_U
    torch.testing.assert_close(m(toks)[0], 3.0 * torch.tanh(logits / 3.0), rtol=1e-10, atol=1e-10)


def test_config_validation_messages():
    base = dict(n_layers=2, d_model=8, n_heads=4, d_head=4, d_vocab=5, n_ctx=8)
    bad = [
        (dict(n_kv_heads=3), r"n_kv_heads must divide n_heads=4"),
        (dict(n_kv_heads=0), r"n_kv_heads must be in \[1, 4\]"),
        (dict(positional="rotary", rotary_dim=3), "rotary_dim must be even"),
        (dict(positional="rotary", rotary_dim=6), r"rotary_dim must be in \[1, 4\]"),
        (dict(rotary_layout="gptj"), "rotary_layout must be one of"),
        (dict(rope_scaling={"rope_type": "dynamic", "factor": 2.0}),
         "rope_scaling must be None or a dict with rope_type"),
        (dict(rope_scaling={"rope_type": "yarn", "factor": 2.0}),
         r"rope_scaling\['original_max_position_embeddings'\]"),
        (dict(rope_scaling={"rope_type": "linear"}), r"rope_scaling\['factor'\] must be a positive number"),
        (dict(rotary_base=-1.0), "rotary_base must be a positive finite number"),
        (dict(normalization="RMSx"), "normalization must be one of"),
        (dict(act_fn="swiglu", attn_only=False), "act_fn must be one of"),
        (dict(gated_mlp=True), "gated_mlp=True needs an MLP"),
        (dict(parallel_attn_mlp=True), "parallel_attn_mlp=True needs an MLP"),
        (dict(qk_norm_scope="layer"), "qk_norm_scope must be one of"),
        (dict(post_norm=True), "post_norm=True needs? a normalization"),
        (dict(attn_softcap=0.0), "attn_softcap must be a positive finite number"),
        (dict(sliding_window=0), r"sliding_window must be in \[1, 1048576\]"),
        (dict(sliding_window=3, sliding_window_layers=[2]), r"sliding_window_layers must be a list of layer indices"),
        (dict(sliding_window_layers=[0]), "sliding_window_layers needs sliding_window"),
        (dict(rotary_base_sliding=100.0), "rotary_base_sliding needs sliding_window"),
        (dict(tied_embeddings=1), "tied_embeddings must be True or False"),
        (dict(embed_scale=float("inf")), "embed_scale must be a positive finite number"),
        (dict(rotary_table_dtype="bfloat16"), "rotary_table_dtype must be None or 'float32'"),
    ]
    for kw, match in bad:
        with pytest.raises(ValueError, match=match):
            ModelConfig(**{**base, **kw})
    cfg = ModelConfig(**base, n_kv_heads=2)
    with pytest.raises(ValueError, match=r"head must be in \[0, 4\)"):
        cfg.kv_head_of(4)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


# ---------------------------------------------------------------------------------------- TransformerLens
def tl_major() -> int:
    need("transformer_lens")
    from importlib.metadata import version

    return int(version("transformer-lens").split(".")[0])


TL_VARIANTS = {  # TransformerLens cfg switches (HookedTransformerConfig / native TransformerBridgeConfig)
    "rotary_rms_gqa_gated": dict(normalization_type="RMS", positional_embedding_type="rotary", rotary_dim=2,
                                 n_key_value_heads=2, gated_mlp=True, act_fn="silu"),
    "rotary_ln_parallel": dict(normalization_type="LN", positional_embedding_type="rotary", parallel_attn_mlp=True,
                               rotary_adjacent_pairs=True, act_fn="gelu"),
    "gemma_like": dict(normalization_type="RMS", positional_embedding_type="rotary", n_key_value_heads=1,
                       gated_mlp=True, act_fn="gelu_pytorch_tanh", use_normalization_before_and_after=True,
                       attn_scores_soft_cap=3.0, output_logits_soft_cap=5.0, use_qk_norm=True, use_local_attn=True,
                       window_size=5, attn_types=["local", "global"], rotary_base_local=100.0, rotary_base=1e4,
                       rotary_scaling_factor=4.0),
    "llama3_rope": dict(normalization_type="RMS", positional_embedding_type="rotary", use_NTK_by_parts_rope=True,
                        NTK_by_parts_factor=8.0, NTK_original_ctx_len=8, rotary_base=5e5, gated_mlp=True,
                        act_fn="silu"),
    "olmo2_like": dict(normalization_type="RMS", positional_embedding_type="rotary", n_key_value_heads=2,
                       gated_mlp=True, act_fn="silu", original_architecture="Olmo2ForCausalLM"),
}
TL4_NATIVE = ("rotary_rms_gqa_gated",)  # the 4.x native model has no parallel / qk-norm / post-norm / local attention


def tl_model(variant: str, dtype=torch.float64, seed=0):
    kw = dict(n_layers=2, d_model=24, n_heads=6, d_head=4, d_vocab=30, n_ctx=N_POS, d_mlp=16, attn_only=False,
              **TL_VARIANTS[variant])
    if tl_major() < 4:
        from transformer_lens import HookedTransformer, HookedTransformerConfig

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            model = HookedTransformer(HookedTransformerConfig(dtype=dtype, seed=seed, **kw))
    else:
        if variant not in TL4_NATIVE:
            pytest.skip(f"TransformerLens 4's native model has no {variant} switches (see the bridges over HF)")
        import transformer_lens.model_bridge.sources  # noqa: F401  (attaches boot_native)
        from transformer_lens.config import TransformerBridgeConfig
        from transformer_lens.model_bridge import TransformerBridge

        kw.pop("rotary_adjacent_pairs", None)
        model = TransformerBridge.boot_native(TransformerBridgeConfig(seed=seed, **kw), dtype=dtype)
    randomise(model, seed)
    return model.eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant", list(TL_VARIANTS))
def test_tl_architecture_logits(variant, dtype):
    model = tl_model(variant, dtype)
    ours = cw.from_transformer_lens(model)
    v = TL_VARIANTS[variant]
    assert ours.cfg.positional == "rotary" and ours.cfg.n_kv_heads == v.get("n_key_value_heads")
    toks = tokens(30)
    with torch.no_grad():
        err = rel_err(ours(toks), model(toks))
    print(f"TL {tl_major()} {variant} {dtype}: rel. error {err:.2e}")
    # float32 inside float64 sources: TL 4's native model (RMSNorm variance, rotary tables) and TL 3's
    # Llama-3 frequencies; our model computes them in float64
    loose = tl_major() >= 4 or variant == "llama3_rope"
    tol = 1e-6 if loose and dtype == torch.float64 else TOL[dtype]
    assert err < tol, err


def test_tl_refuses_unsupported_rope():
    if tl_major() >= 4:
        pytest.skip("3.x switches")
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        m = HookedTransformer(HookedTransformerConfig(
            n_layers=1, d_model=8, n_heads=2, d_head=4, d_vocab=10, n_ctx=8, attn_only=True,
            positional_embedding_type="rotary", use_yarn_rope=True))
    with pytest.raises(ConversionError, match="use_yarn_rope=True"):
        cw.from_transformer_lens(m)


TL4_BRIDGE_ARCHS = {"gpt_neox": "GPTNeoXForCausalLM", "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                    "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "gemma2": "Gemma2ForCausalLM",
                    "gemma3_text": "Gemma3ForCausalLM", "olmo2": "Olmo2ForCausalLM", "phi3": "Phi3ForCausalLM"}


# compatibility mode on the two paths it takes (weights processed in place: llama, gemma2; processed into
# the bridge's split copies of fused q/k/v: gpt_neox, phi3), raw mode on every family
TL4_BRIDGE_CASES = [(a, False) for a in TL4_BRIDGE_ARCHS] + [(a, True) for a in ("gpt_neox", "phi3", "llama", "gemma2")]


@pytest.mark.parametrize("arch, compat", TL4_BRIDGE_CASES)
def test_tl4_bridge_over_hf(arch, compat):
    """A 4.x bridge around each HF family (raw, and after enable_compatibility_mode): same logits as the bridge."""
    if tl_major() < 4:
        pytest.skip("TransformerBridge over HF modules is TransformerLens 4.x")
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = _hf_builders()[arch]().to(torch.float64).eval()
    randomise(m)
    bridge = build_bridge_from_module(m, TL4_BRIDGE_ARCHS[arch], hf_config=m.config)
    if compat:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bridge.enable_compatibility_mode(disable_warnings=True)
    ours = cw.from_transformer_lens(bridge)
    toks = tokens(VOCAB)
    with torch.no_grad():
        err = rel_err(ours(toks), bridge(toks))
    print(f"TL4 bridge {arch} compat={compat}: rel. error {err:.2e}")
    assert err < 1e-6, err  # the bridge runs HF's float32 islands (RMSNorm, softmax) even in float64
    with torch.no_grad(), hf_exact_float64(m):
        exact = rel_err(ours(toks), bridge(toks))
    print(f"  with the float32 islands removed: {exact:.2e}")
    assert exact < 1e-10, exact


def test_other_transformer_lens_version(run_tl_tests_on_other_version):
    """Run this file's tl_ tests again against the TransformerLens installed in ALT_TL (the other major version)."""
    run_tl_tests_on_other_version(str(Path(__file__)))
