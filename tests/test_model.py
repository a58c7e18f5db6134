"""The forward pass against a dense reference written independently, hooks, cache, folding, I/O."""

import math

import pytest
import torch

import circwidgets as cw
from circwidgets.model import ModelConfig, ModelFileError, Transformer, fold_layernorm, param_shapes
from circwidgets.model.testing import random_model

CONFIGS = {
    "attn_only": dict(),
    "shortformer": dict(positional="shortformer"),
    "ln_mlp_bias": dict(attn_only=False, normalization="LN", biases=True, d_mlp=20),
    "ln_attn_shortformer": dict(normalization="LN", positional="shortformer", biases=True),
    "no_pos_relu": dict(attn_only=False, positional="none", act_fn="relu", d_mlp=8),
}


def reference_logits(m: Transformer, toks: torch.Tensor) -> torch.Tensor:
    """Per-position loops, one head at a time: slow and obvious."""
    c = m.cfg
    out = []
    for seq in toks:
        P = len(seq)
        x = torch.stack([m.W_E[t] for t in seq])
        pos = m.W_pos[:P] if c.positional != "none" else torch.zeros_like(x)
        if c.positional == "standard":
            x = x + pos

        def ln(v, w, b):
            if c.normalization is None:
                return v
            v = v - v.mean(-1, keepdim=True)
            v = v / torch.sqrt((v * v).mean(-1, keepdim=True) + c.ln_eps)
            return v * w + b if w is not None else v

        for layer in range(c.n_layers):
            h_in = ln(x, *((m.ln1_w[layer], m.ln1_b[layer]) if c.normalization == "LN" else (None, None)))
            qk_in = h_in + pos if c.positional == "shortformer" else h_in
            attn = torch.zeros_like(x)
            for h in range(c.n_heads):
                q = qk_in @ m.W_Q[layer, h] + (m.b_Q[layer, h] if c.biases else 0)
                k = qk_in @ m.W_K[layer, h] + (m.b_K[layer, h] if c.biases else 0)
                v = h_in @ m.W_V[layer, h] + (m.b_V[layer, h] if c.biases else 0)
                for i in range(P):
                    s = torch.stack([q[i] @ k[j] / math.sqrt(c.d_head) for j in range(i + 1)])
                    a = torch.softmax(s, 0)
                    attn[i] += (a[:, None] * v[: i + 1]).sum(0) @ m.W_O[layer, h]
            x = x + attn + (m.b_O[layer] if c.biases else 0)
            if not c.attn_only:
                h2 = ln(x, *((m.ln2_w[layer], m.ln2_b[layer]) if c.normalization == "LN" else (None, None)))
                pre = h2 @ m.W_in[layer] + (m.b_in[layer] if c.biases else 0)
                post = torch.relu(pre) if c.act_fn == "relu" else torch.nn.functional.gelu(pre, approximate="tanh")
                x = x + post @ m.W_out[layer] + (m.b_out[layer] if c.biases else 0)
        x = ln(x, *((m.ln_final_w, m.ln_final_b) if c.normalization == "LN" else (None, None)))
        out.append(x @ m.W_U + (m.b_U if c.biases else 0))
    return torch.stack(out)


@pytest.mark.parametrize("name", CONFIGS)
def test_forward_matches_reference(name):
    m = random_model(seed=1, **CONFIGS[name])
    toks = torch.randint(0, m.cfg.d_vocab, (2, 7), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(m(toks), reference_logits(m, toks), rtol=1e-10, atol=1e-10)


def test_cache_keys_and_shapes():
    m = random_model(attn_only=False, normalization="LN", biases=True, d_mlp=20)
    toks = torch.randint(0, 13, (3, 6))
    logits, cache = m.run_with_cache(toks)
    B, P, H, D, E = 3, 6, 3, 16, 4
    assert cache["pattern", 1].shape == (B, H, P, P)
    assert cache["attn_scores", 0].shape == (B, H, P, P)
    for k in "qkvz":
        assert cache[k, 0].shape == (B, P, H, E)
    assert cache["result", 1].shape == (B, P, H, D)
    assert cache["resid_pre", 0].shape == (B, P, D)
    assert cache["scale"].shape == (B, P, 1)
    assert cache["scale", 0, "ln2"].shape == (B, P, 1)
    assert cache["pre", 0].shape == (B, P, 20)
    torch.testing.assert_close(cache["pattern", 0].sum(-1), torch.ones(B, H, P, dtype=torch.float64))
    assert torch.all(cache["pattern", 0].triu(1) == 0)
    # the residual stream is the sum of what was written to it
    resid = cache["resid_post", 0]
    torch.testing.assert_close(resid, cache["resid_pre", 0] + cache["attn_out", 0] + cache["mlp_out", 0])
    torch.testing.assert_close(cache["attn_out", 0], cache["result", 0].sum(2) + m.b_O[0])
    torch.testing.assert_close(logits, m(toks))


def test_hook_replaces_activation():
    m = random_model()
    toks = torch.randint(0, 13, (1, 8))
    base = m(toks)

    def zero_head(z, hook):
        z = z.clone()
        z[:, :, 1] = 0
        return z

    ablated = m.run_with_hooks(toks, fwd_hooks=[(("z", 0), zero_head)])
    assert not torch.allclose(ablated, base)
    # same as removing the head's write by hand
    _, cache = m.run_with_cache(toks)
    with m.hooks([("blocks.0.hook_attn_out", lambda x, h: x - cache["result", 0][:, :, 1])]):
        torch.testing.assert_close(m(toks), ablated)
    assert not m._hooks  # hooks removed after the context
    torch.testing.assert_close(m(toks), base)


def test_bad_tokens_raise_clear_errors():
    m = random_model()
    with pytest.raises(ValueError, match="n_ctx"):
        m(torch.zeros(1, 11, dtype=torch.long))
    with pytest.raises(ValueError, match=r"outside \[0, 13\)"):
        m(torch.tensor([[1, 13]]))
    with pytest.raises(TypeError, match="integer"):
        m(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="no tokenizer"):
        m.to_tokens("hi")


def test_fold_of_a_final_layernorm_alone_keeps_the_writers_and_centres_the_unembedding():
    """A final LayerNorm and no pre-norms (attention reads the raw stream): centring what is written to the
    stream changed what the heads read (path terms missed the logits by up to 1.6 on a random model). The
    writers stay as they are; the final norm's centring C = I - 11ᵀ/d and weight go into W_U's rows:
    `W_U' = C diag(w) W_U`, computed here by hand."""
    m = random_model(seed=5, normalization="LN", pre_norm=False, positional="shortformer", biases=True)
    toks = torch.randint(0, 13, (2, 9), generator=torch.Generator().manual_seed(0))
    folded = fold_layernorm(m)
    torch.testing.assert_close(folded(toks), m(toks), rtol=1e-9, atol=1e-9)
    for name in ("W_E", "W_pos", "W_O", "b_O"):  # read raw by the heads: unchanged
        torch.testing.assert_close(getattr(folded, name), getattr(m, name), rtol=0, atol=0)
    D = m.cfg.d_model
    centring = torch.eye(D, dtype=torch.float64) - 1.0 / D
    torch.testing.assert_close(folded.W_U, centring @ torch.diag(m.ln_final_w) @ m.W_U, rtol=1e-12, atol=1e-12)


def test_fold_refuses_shortformer_ln():
    with pytest.raises(ValueError, match="shortformer"):
        fold_layernorm(random_model(**CONFIGS["ln_attn_shortformer"]))


@pytest.mark.parametrize("name", ["ln_mlp_bias"])
def test_fold_layernorm_preserves_logits(name):
    m = random_model(seed=3, **CONFIGS[name])
    toks = torch.randint(0, 13, (2, 9))
    folded = fold_layernorm(m)
    assert folded.cfg.normalization == "LNPre" and not hasattr(folded, "ln1_w")
    torch.testing.assert_close(folded(toks), m(toks), rtol=1e-9, atol=1e-9)
    # writing weights are centred
    torch.testing.assert_close(folded.W_O.mean(-1), torch.zeros_like(folded.W_O.mean(-1)), atol=1e-12, rtol=0)
    cu = fold_layernorm(m, center_unembed=True)
    torch.testing.assert_close(cu(toks).log_softmax(-1), m(toks).log_softmax(-1), rtol=1e-9, atol=1e-9)


def test_save_load_roundtrip_bit_exact(tmp_path):
    m = random_model(dtype=torch.float32, **CONFIGS["ln_mlp_bias"])
    p = cw.save(m, tmp_path / "m.safetensors")
    m2 = cw.load(p)
    assert m2.cfg == m.cfg
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    toks = torch.randint(0, 13, (1, 5))
    assert torch.equal(m(toks), m2(toks))


def test_bad_files(tmp_path):
    m = random_model(dtype=torch.float32)
    p = cw.save(m, tmp_path / "m.safetensors")
    data = p.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupted"):
        cw.load(tmp_path / "trunc.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ModelFileError, match="truncated or corrupted"):
        cw.load(tmp_path / "garbage.safetensors")
    with pytest.raises(ModelFileError, match="no such model file"):
        cw.load(tmp_path / "missing.safetensors")
    # wrong shape: same metadata, a tensor with the wrong shape
    from safetensors.torch import save_file

    sd = {k: v.clone() for k, v in m.state_dict().items()}
    sd["W_Q"] = sd["W_Q"][:, :, :, :2].contiguous()
    save_file(sd, str(tmp_path / "shape.safetensors"), metadata={"format": "circwidgets-1", "config": m.cfg.to_json()})
    with pytest.raises(ModelFileError, match=r"W_Q has shape \(2, 3, 16, 2\), config requires \(2, 3, 16, 4\)"):
        cw.load(tmp_path / "shape.safetensors")
    save_file(sd, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ModelFileError, match="not a circwidgets model"):
        cw.load(tmp_path / "foreign.safetensors")
    del sd["W_Q"]
    meta = {"format": "circwidgets-1", "config": m.cfg.to_json()}
    save_file(sd, str(tmp_path / "missing_t.safetensors"), metadata=meta)
    with pytest.raises(ModelFileError, match=r"missing \['W_Q'\]"):
        cw.load(tmp_path / "missing_t.safetensors")


def test_config_validation():
    with pytest.raises(ValueError, match="positional"):
        ModelConfig(n_layers=1, d_model=4, n_heads=1, d_head=4, d_vocab=5, n_ctx=4, positional="alibi")
    with pytest.raises(ValueError, match="d_model"):
        ModelConfig(n_layers=1, d_model=0, n_heads=1, d_head=4, d_vocab=5, n_ctx=4)
    cfg = ModelConfig(n_layers=0, d_model=8, n_heads=2, d_head=4, d_vocab=5, n_ctx=4)
    assert set(param_shapes(cfg)) >= {"W_E", "W_U"}
    assert Transformer(cfg)(torch.tensor([[1, 2]])).shape == (1, 2, 5)


def test_fold_state_dict_is_the_one_fold():
    """`fold_layernorm` (models) and `folded_weights` (the engine's weights) are one fold: the same
    matrices to the bit, and the input parameters are left untouched."""
    from circwidgets.model.fold import fold_state_dict, folded_weights

    m = random_model(seed=5, **CONFIGS["ln_mlp_bias"])
    before = {k: v.clone() for k, v in m.state_dict().items()}
    sd, cfg = fold_state_dict(m.state_dict(), m.cfg)
    assert cfg.normalization == "LNPre" and cfg.biases and not any(k.startswith("ln") for k in sd)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    folded, weights_only = fold_layernorm(m), folded_weights(m)
    assert set(weights_only) == {k for k in sd if k.startswith("W_")}
    for k, v in weights_only.items():
        assert torch.equal(v, getattr(folded, k).detach()) and torch.equal(v, sd[k])


@pytest.mark.parametrize("name", ["ln_mlp_bias", "ln_attn_shortformer"])
def test_normalize_is_the_forward_norm(name):
    """`Transformer.normalize` (what interventions use to recompute a layer's input) is the forward's own
    normalisation, to the bit, and fires no hooks."""
    m = random_model(seed=6, **CONFIGS[name])
    toks = torch.randint(0, 13, (2, 7))
    _, cache = m.run_with_cache(toks)
    sites = [("ln1", lay, "resid_pre") for lay in range(m.cfg.n_layers)]
    if not m.cfg.attn_only:
        sites += [("ln2", lay, "resid_mid") for lay in range(m.cfg.n_layers)]
    for site, lay, resid in sites:
        got = m.normalize(cache[resid, lay], site, lay)
        assert torch.equal(got, cache[f"blocks.{lay}.{site}.hook_normalized"])
    final = cache[f"blocks.{m.cfg.n_layers - 1}.hook_resid_post"]
    assert torch.equal(m.normalize(final, "ln_final"), cache["ln_final.hook_normalized"])
    fired = []
    with m.hooks([("blocks.0.ln1.hook_scale", lambda x, hp: fired.append(hp))]):
        m.normalize(final, "ln1", 0)
    assert not fired
    with pytest.raises(ValueError, match="site"):
        m.normalize(final, "ln3", 0)
    assert torch.equal(random_model(seed=6, **CONFIGS["attn_only"]).normalize(final, "ln1", 0), final)
