"""Every engine function on every supported architecture: Hugging Face models of each family built
offline from small random configs (tests/test_architectures.py's builders, every parameter randomised),
converted with `cw.from_hf`, in float64. Exact identities are checked where they exist (path terms and
logit attribution add up to the logits; one-head ablation table = ablate_heads; QK circuits against the
model's own attention scores up to the norms' positive factors); the rest must run and be finite."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import circwidgets as cw
from circwidgets import engine

sys.path.insert(0, str(Path(__file__).parent))
import test_architectures as ta  # noqa: E402  (the offline random HF builders)

ARCHS = ta.HF_ARCHS
_MODELS: dict = {}


def model(arch: str):
    if arch not in _MODELS:
        _MODELS[arch] = cw.from_hf(ta.hf_model(arch, torch.float64), check=False)
    return _MODELS[arch]


def toks(seed: int = 1, n: int = 12) -> torch.Tensor:
    return torch.randint(3, ta.VOCAB, (2, n), generator=torch.Generator().manual_seed(seed))


def pre_cap_logits(m, t: torch.Tensor) -> torch.Tensor:
    logits = m(t)
    cap = m.cfg.final_softcap
    return logits if cap is None else cap * torch.atanh(logits / cap)


@pytest.mark.parametrize("arch", ARCHS)
def test_weight_circuits(arch):
    m = model(arch)
    cfg = m.cfg
    L, H = cfg.n_layers, cfg.n_heads
    rot = {"offset": 1} if cfg.positional == "rotary" else {}
    for circ, o in (("ov", {}), ("qk", rot)):
        p = engine.eigen_positivity(m, circ, **o)
        assert p.shape == (L, H) and bool(torch.isfinite(p).all()) and bool((p.abs() <= 1 + 1e-9).all())
        lam = engine.eigenvalues(m, L - 1, H - 1, circ, **o)
        assert lam.shape == (cfg.d_head,)
    for kind in "qkv":
        c = engine.composition_scores(m, kind, **(rot if kind != "v" else {}))
        v = c[0, :, 1, :]
        assert v.shape == (H, H) and bool(((v >= 0) & (v <= 1 + 1e-9)).all())
    if cfg.positional == "rotary":
        prof = engine.offset_profile(m, offsets=range(6))
        assert prof.shape == (L, H, 6) and bool(torch.isfinite(prof).all())
    table = engine.skip_trigrams(m, 0, H - 1, k=5)
    row = table.for_source(5)
    assert len(row.dests) == 10 and all(map(lambda x: x == x, row.dest_values))
    vw = engine.virtual_weights(m, ("head", 0, 0), ("head", 1, H - 1, "k"), order=None)
    assert bool(torch.isfinite(vw.singular_values).all())
    if not cfg.attn_only:
        vm = engine.virtual_weights(m, ("mlp", 0), ("unembed",))
        assert bool(torch.isfinite(vm.singular_values).all())


@pytest.mark.parametrize("arch", ["mistral", "phi3"])
def test_qk_circuit_is_the_score_up_to_the_norm_scales(arch):
    """Pre-norm RMS models without biases or q/k norms: the layer-0 score of (i, j) times both ln1 scales
    is full_qk(offset=i-j)[t_i, t_j] / attn_scale (the scale is the only thing the circuit leaves out).
    HF rotary tables are float32, hence the tolerance."""
    m = model(arch)
    t = toks(2)[:1]
    _, cache = m.run_with_cache(t)
    sc, s = cache["attn_scores", 0][0], cache["scale", 0, "ln1"][0, :, 0]  # [head, q, k], [pos]
    n = t.shape[1]
    for delta in (0, 1, 3):
        fq = engine.full_qk(m, offset=delta)[0].materialize() / m.cfg.attn_scale
        i = torch.arange(delta, n)
        j = i - delta
        got = sc[:, i, j] * s[i] * s[j]
        want = fq[:, t[0, i], t[0, j]]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_paths_attribution_and_interventions(arch):
    m = model(arch)
    cfg = m.cfg
    L, H = cfg.n_layers, cfg.n_heads
    t = toks()
    logits = pre_cap_logits(m, t)
    pt = engine.path_terms(m, t, max_order=2)
    torch.testing.assert_close(pt.total(), logits, rtol=1e-8, atol=1e-8)
    if not cfg.attn_only:
        assert any(lab.startswith("mlp L") for lab in pt.labels)
    la = engine.logit_attribution(m, t[0], pos=7, token=5)
    torch.testing.assert_close(la.total(), logits[0, 7, 5], rtol=1e-8, atol=1e-8)
    table = engine.ablation_table(m, t)
    one = engine.ablate_heads(m, t, [(1, H - 1)])
    assert abs(float(table[1, H - 1]) - one.delta) < 1e-9
    mean = engine.ablate_heads(m, t, [(0, 0), (1, 1)], kind="mean")
    assert torch.isfinite(torch.tensor(mean.delta))
    cut = engine.ablate_path(m, t, (0, 0), (1, H - 1), kind=("q", "k", "v"))
    assert abs(cut.delta) > 0 and (len(cut.notes) == 2) == cfg.grouped_kv
    corrupt = toks(3)
    rep = engine.patching_report(m, t, corrupt)
    assert rep.heads.shape == (L, H) and bool(torch.isfinite(rep.heads).all())
    kv = engine.patch_kv_heads(m, t, corrupt, kind="k", metric=engine.logit_diff_metric(-1, 5, 6))
    assert kv.shape == (L, cfg.n_kv) and bool(torch.isfinite(kv).all())
    scores = engine.all_head_scores(m, seq_len=8, n_seqs=2)
    assert all(v.shape == (L, H) for v in scores.values())
    att = engine.attention_patterns(m, t[0])
    vh = engine.virtual_heads(m, att, (0, 0), (1, H - 1))
    assert vh.pattern.shape[-1] == t.shape[1]


@pytest.mark.parametrize("arch", ["qwen3", "olmo2", "gemma2"])
def test_qk_circuit_with_qk_norms_post_norms_and_softcaps_is_the_score_up_to_positive_factors(arch):
    """What the folded circuit leaves out of a layer-0 score are positive per-token factors: ln1's scale
    (pre-norm models), the q / k norms' RMS (Qwen3 per head; OLMo-2 over all heads of the projection, K per
    shared K/V head) and, with a soft-cap, its tanh (undone here). Recomputed from the cached stream, they
    turn the model's own scores into full_qk(offset=i-j)[t_i, t_j] / attn_scale."""
    m = model(arch)
    cfg = m.cfg
    t = toks(2)[:1]
    _, cache = m.run_with_cache(t)
    sc = cache["attn_scores", 0][0].double()  # [head, q, k]
    if cfg.attn_softcap is not None:
        sc = cfg.attn_softcap * torch.atanh(sc / cfg.attn_softcap)
    n, H = t.shape[1], cfg.n_heads
    x = cache["blocks.0.ln1.hook_normalized"][0] if cfg.pre_norm else cache["blocks.0.hook_resid_pre"][0]
    s = cache["scale", 0, "ln1"][0, :, 0] if cfg.pre_norm else torch.ones(n)
    rq, rk = torch.ones(n, H), torch.ones(n, H)
    if cfg.qk_norm:  # the RMS each norm divides by, from the raw projections
        dims = (-1,) if cfg.qk_norm_scope == "head" else (-2, -1)

        def rms(W, b):  # W [heads, d_model, d_head] -> [pos, heads] (one value per head or per token)
            raw = torch.einsum("pd,hde->phe", x, W[0]) + (b[0] if b is not None else 0)
            return (raw.pow(2).mean(dims, keepdim=True) + cfg.ln_eps).sqrt().expand_as(raw)[..., 0]

        rq = rms(m.W_Q, m.b_Q if cfg.biases else None)
        stored = "_" if cfg.grouped_kv else ""
        rk = rms(getattr(m, f"{stored}W_K"), getattr(m, f"{stored}b_K") if cfg.biases else None)
        if cfg.grouped_kv:
            rk = rk.repeat_interleave(cfg.kv_group_size, dim=1)
    for delta in (0, 1, 3):
        fq = engine.full_qk(m, offset=delta)[0].materialize().double() / cfg.attn_scale
        i = torch.arange(delta, n)
        j = i - delta
        got = sc[:, i, j] * (s[i] * s[j])[None] * (rq[i] * rk[j]).T
        want = fq[:, t[0, i], t[0, j]]
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["gemma2", "olmo2"])
def test_path_terms_through_post_norms_are_what_the_heads_wrote(arch):
    """Single path terms (not only their sum) of post-norm models, against the forward pass's own cache: at
    layer 0 the embedding is all a head reads, so 'embed → L0Hh' is the head's output through ln1_post's
    frozen scale and weight, and 'mlp L0' the MLP block's output; 'embed → L1Hg' is recomputed by hand from
    the embedding through layer 1's frozen ln1 scale, the head's cached pattern, W_V, W_O and ln1_post."""
    m = model(arch)
    cfg = m.cfg
    t = toks(2)[:1]
    pt = engine.path_terms(m, t, max_order=2)
    _, cache = m.run_with_cache(t)
    term = {lab: pt.resid[i][0].double() for i, lab in enumerate(pt.labels)}
    f = {k: v.double() for k, v in cache.items()}

    def post(x, layer):  # through the block's post-norm, its scale frozen
        w = m.ln1_post_w[layer].double() if hasattr(m, "ln1_post_w") else 1.0
        return x / f[f"blocks.{layer}.ln1_post.hook_scale"][0] * w

    for h in range(cfg.n_heads):
        torch.testing.assert_close(term[f"embed → L0H{h}"], post(f["blocks.0.attn.hook_result"][0, :, h], 0),
                                   rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(term["mlp L0"], f["blocks.0.hook_mlp_out"][0], rtol=1e-5, atol=1e-6)
    e = f["blocks.0.hook_resid_pre"][0]  # the embedding, as the stream carries it
    x = e / f["blocks.1.ln1.hook_scale"][0] * m.ln1_w[1].double() if cfg.pre_norm else e
    W_V = getattr(m, "_W_V" if cfg.grouped_kv else "W_V")[1].double()
    for g in range(cfg.n_heads):
        kv = cfg.kv_head_of(g) if cfg.grouped_kv else g
        z = f["blocks.1.attn.hook_pattern"][0, g] @ (x @ W_V[kv])
        torch.testing.assert_close(term[f"embed → L1H{g}"], post(z @ m.W_O[1, g].double(), 1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["gemma2", "gpt_neox", "olmo2"])
def test_patching_and_mean_ablation_match_hooked_runs(arch):
    """patch_heads / patch_kv_heads / mean ablation on post-norm, soft-capped, sliding-window and parallel
    families, each entry against one explicitly hooked forward pass of the model itself."""
    m = model(arch)
    cfg = m.cfg
    clean, corrupt = toks(2)[:1], toks(3)[:1]
    metric = engine.logit_diff_metric(-1, 5, 7)
    _, cache = m.run_with_cache(clean)

    def hooked(name, edit):
        def hook(act, hp):
            act = act.clone()
            edit(act)
            return act
        with torch.no_grad():
            return float(metric(m.run_with_hooks(corrupt, [(name, hook)]), corrupt))

    lay, h = cfg.n_layers - 1, cfg.n_heads - 1
    table = engine.patch_heads(m, clean, corrupt, metric=metric)

    def put_z(act):
        act[:, :, h] = cache[f"blocks.{lay}.attn.hook_z"][:, :, h]

    assert float(table[lay, h]) == pytest.approx(hooked(f"blocks.{lay}.attn.hook_z", put_z), rel=1e-6, abs=1e-6)
    kv = cfg.n_kv - 1
    group = cfg.kv_group(kv) if cfg.grouped_kv else [kv]
    kv_table = engine.patch_kv_heads(m, clean, corrupt, kind="v", metric=metric)

    def put_v(act):
        act[:, :, group] = cache[f"blocks.{lay}.attn.hook_v"][:, :, group]

    assert float(kv_table[lay, kv]) == pytest.approx(hooked(f"blocks.{lay}.attn.hook_v", put_v), rel=1e-6, abs=1e-6)
    ref = toks(4, 12)
    _, ref_cache = m.run_with_cache(ref)
    mean_z = ref_cache[f"blocks.{lay}.attn.hook_z"][:, :, h].mean((0, 1))  # over the reference's batch and positions
    eff = engine.ablate_heads(m, corrupt, [(lay, h)], kind="mean", metric=metric, reference=ref)

    def put_mean(act):
        act[:, :, h] = mean_z

    assert eff.intervened == pytest.approx(hooked(f"blocks.{lay}.attn.hook_z", put_mean), rel=1e-6, abs=1e-6)
