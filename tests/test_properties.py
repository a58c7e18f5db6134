"""Property tests (hypothesis) of the forward pass and the engine over random model configurations:
d_head * n_heads != d_model, no / LN / LNPre / RMS / RMSPre normalisation, biases, standard / shortformer /
none / rotary (half and interleaved, partial) positions, attention scale, attention-only or with MLPs.

- the forward pass equals a float64 per-position, per-head reference written here from the paper's
  equations (no code shared with the model);
- the path terms (`engine.paths.path_terms`) add up to the model's logits;
- the engine's circuits and scores are invariant under a rotation of the residual stream.
Kept fast: few examples, tiny models, no deadline (a shared 2-core machine)."""

from __future__ import annotations

import math

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from circwidgets.engine import circuits as C  # noqa: E402
from circwidgets.engine.composition import composition_scores  # noqa: E402
from circwidgets.engine.interventions import logit_attribution  # noqa: E402
from circwidgets.engine.paths import path_terms  # noqa: E402
from circwidgets.model import ModelConfig, fold_layernorm  # noqa: E402
from circwidgets.model.testing import random_model, rotated  # noqa: E402

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def configs(draw) -> ModelConfig:
    positional = draw(st.sampled_from(["standard", "shortformer", "none", "rotary"]))
    d_head = draw(st.sampled_from([2, 4, 6]))
    n_heads = draw(st.integers(1, 3))
    d_model = draw(st.sampled_from([5, 8, 12]))  # mostly != n_heads * d_head
    attn_only = draw(st.booleans())
    kw = dict(n_layers=draw(st.integers(1, 2)), d_model=d_model, n_heads=n_heads, d_head=d_head,
              d_vocab=draw(st.integers(5, 11)), n_ctx=8, positional=positional,
              normalization=draw(st.sampled_from([None, "LN", "LNPre", "RMS", "RMSPre"])),
              biases=draw(st.booleans()), attn_only=attn_only,
              attn_scale=draw(st.sampled_from([None, 0.7, 3.0])))
    if not attn_only:
        kw.update(d_mlp=draw(st.sampled_from([4, 7])),
                  act_fn=draw(st.sampled_from(["gelu_new", "gelu", "relu", "silu"])))
    if positional == "rotary":
        kw.update(rotary_layout=draw(st.sampled_from(["half", "interleaved"])),
                  rotary_dim=draw(st.sampled_from([None, 2])), rotary_base=draw(st.sampled_from([10000.0, 7.0])))
    return ModelConfig(**kw)


def _norm(v: torch.Tensor, kind, w, b, eps: float) -> torch.Tensor:
    if kind is None:
        return v
    if kind in ("LN", "LNPre"):
        v = v - v.mean(-1, keepdim=True)
    v = v / torch.sqrt((v * v).mean(-1, keepdim=True) + eps)
    if kind in ("LN", "RMS"):
        v = v * w
        if b is not None:
            v = v + b
    return v


def _rotate(vec: torch.Tensor, p: int, c: ModelConfig) -> torch.Tensor:
    """Rotate one head vector at position p: pair m turns by p * base^(-2m / r)."""
    r = c.rotary_dim or c.d_head
    out = vec.clone()
    for m in range(r // 2):
        a, b = (m, m + r // 2) if c.rotary_layout == "half" else (2 * m, 2 * m + 1)
        ang = p * c.rotary_base ** (-2.0 * m / r)
        out[a] = vec[a] * math.cos(ang) - vec[b] * math.sin(ang)
        out[b] = vec[b] * math.cos(ang) + vec[a] * math.sin(ang)
    return out


def reference_logits(m, toks: list[int]) -> torch.Tensor:
    """Float64, one position and one head at a time, straight from the definitions."""
    c = m.cfg
    P = len(toks)
    g = lambda name: getattr(m, name, None)  # noqa: E731 - optional parameters (biases, norm weights)
    nk = c.normalization
    x = torch.stack([m.W_E[t] for t in toks]).double()
    pos = m.W_pos[:P].double() if c.positional in ("standard", "shortformer") else None
    if c.positional == "standard":
        x = x + pos
    scale = c.attn_scale if c.attn_scale is not None else math.sqrt(c.d_head)
    for layer in range(c.n_layers):
        w1, b1 = (g(n)[layer] if g(n) is not None else None for n in ("ln1_w", "ln1_b"))
        h_in = _norm(x, nk, w1, b1, c.ln_eps)
        qk_in = h_in + pos if c.positional == "shortformer" else h_in
        attn = torch.zeros_like(x)
        for h in range(c.n_heads):
            bq = g("b_Q")[layer, h] if c.biases else 0.0
            bk = g("b_K")[layer, h] if c.biases else 0.0
            bv = g("b_V")[layer, h] if c.biases else 0.0
            q = [qk_in[i] @ m.W_Q[layer, h] + bq for i in range(P)]
            k = [qk_in[j] @ m.W_K[layer, h] + bk for j in range(P)]
            if c.positional == "rotary":
                q = [_rotate(q[i], i, c) for i in range(P)]
                k = [_rotate(k[j], j, c) for j in range(P)]
            v = [h_in[j] @ m.W_V[layer, h] + bv for j in range(P)]
            for i in range(P):
                s = torch.stack([q[i] @ k[j] / scale for j in range(i + 1)])
                a = torch.softmax(s, 0)
                z = sum(a[j] * v[j] for j in range(i + 1))
                attn[i] = attn[i] + z @ m.W_O[layer, h]
        x = x + attn + (m.b_O[layer] if c.biases else 0.0)
        if not c.attn_only:
            w2, b2 = (g(n)[layer] if g(n) is not None else None for n in ("ln2_w", "ln2_b"))
            h2 = _norm(x, nk, w2, b2, c.ln_eps)
            pre = h2 @ m.W_in[layer] + (m.b_in[layer] if c.biases else 0.0)
            post = {"relu": lambda u: torch.clamp(u, min=0),
                    "gelu": lambda u: 0.5 * u * (1 + torch.erf(u / math.sqrt(2))),
                    "silu": lambda u: u / (1 + torch.exp(-u)),
                    "gelu_new": lambda u: 0.5 * u * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3))),
                    }[c.act_fn](pre)
            x = x + post @ m.W_out[layer] + (m.b_out[layer] if c.biases else 0.0)
    x = _norm(x, nk, g("ln_final_w"), g("ln_final_b"), c.ln_eps)
    return x @ m.W_U + (m.b_U if c.biases else 0.0)


def _tokens(cfg: ModelConfig, seed: int, n: int = 6) -> list[int]:
    return torch.randint(0, cfg.d_vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@SETTINGS
@given(cfg=configs(), seed=st.integers(0, 3))
def test_forward_equals_the_per_position_reference(cfg, seed):
    m = random_model(cfg, seed=seed)
    toks = _tokens(cfg, seed)
    with torch.no_grad():
        got = m(torch.tensor([toks]))[0]
        want = reference_logits(m, toks)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@SETTINGS
@given(cfg=configs(), seed=st.integers(0, 3))
def test_path_terms_add_up_to_the_logits(cfg, seed):
    assume(not (cfg.positional == "shortformer" and cfg.normalization is not None))  # no exact LN fold
    m = random_model(cfg, seed=seed)
    toks = torch.tensor([_tokens(cfg, seed)])
    with torch.no_grad():
        pt = path_terms(m, toks, max_order=2)
        logits = m(toks)
        torch.testing.assert_close(pt.total(), logits, rtol=1e-8, atol=1e-8)
        # the single terms, summed one by one, are the same split
        torch.testing.assert_close(pt.logits().sum(0), logits, rtol=1e-8, atol=1e-8)
        # and the direct logit attribution of one logit adds up to it
        pos, tok = toks.shape[1] - 1, int(toks[0, 0])
        la = logit_attribution(m, toks, pos, tok)
        torch.testing.assert_close(la.total(), logits[0, pos, tok], rtol=1e-8, atol=1e-8)


@SETTINGS
@given(cfg=configs(), seed=st.integers(0, 3))
def test_rotating_the_residual_stream_changes_no_result(cfg, seed):
    """Logits, circuit eigenvalues and composition scores are basis-free: the same in a rotated residual
    basis (LN / RMS models folded first: their elementwise weights pick a basis; LNPre keeps the ones
    direction)."""
    assume(not (cfg.positional == "shortformer" and cfg.normalization in ("LN", "RMS")))
    m = random_model(cfg, seed=seed)
    if cfg.normalization in ("LN", "RMS"):
        m = fold_layernorm(m)
    r = rotated(m, seed=seed + 7, keep_ones=m.cfg.normalization == "LNPre")
    toks = torch.tensor([_tokens(cfg, seed)])
    with torch.no_grad():
        torch.testing.assert_close(r(toks), m(toks), rtol=1e-8, atol=1e-8)
        for circuit in ("ov", "qk") + (("qk_pos",) if cfg.positional in ("standard", "shortformer") else ()):
            if circuit == "qk_pos" and cfg.normalization is not None:
                continue
            off = {"offset": 1} if cfg.positional == "rotary" and circuit == "qk" else {}  # W_QK(Δ) of a rotary model
            torch.testing.assert_close(C.eigen_positivity(r, circuit, **off), C.eigen_positivity(m, circuit, **off),
                                       rtol=1e-6, atol=1e-8, equal_nan=True)
        if cfg.n_layers > 1:
            for kind in ("q", "k", "v"):
                off = {"offset": 1} if cfg.positional == "rotary" and kind in ("q", "k") else {}
                torch.testing.assert_close(composition_scores(r, kind, **off), composition_scores(m, kind, **off),
                                           rtol=1e-6, atol=1e-9, equal_nan=True)
