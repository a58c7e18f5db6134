"""Interventions against brute-force recomputations: ablation (weights zeroed / folded into biases),
path ablation (a reference forward written out head by head), patching, logit attribution."""

import copy
import math

import pytest
import torch

from circwidgets.engine.interventions import (
    ablate_heads,
    ablate_path,
    ablation_hooks,
    ablation_table,
    direct_logit_attribution,
    logit_attribution,
    loss_metric,
    patch_heads,
    patch_residual,
)
from circwidgets.model.testing import random_model, rotated


def ce(logits, toks):
    """Cross-entropy by hand, position by position."""
    tot, n = 0.0, 0
    for b in range(toks.shape[0]):
        for p in range(toks.shape[1] - 1):
            tot += -torch.log_softmax(logits[b, p].double(), 0)[toks[b, p + 1]].item()
            n += 1
    return tot / n


def toks_for(m, b=3, p=8, seed=0):
    return torch.randint(0, m.cfg.d_vocab, (b, p), generator=torch.Generator().manual_seed(seed))


CFGS = {
    "plain": dict(),
    "ln_bias": dict(normalization="LN", biases=True),
    "mlp_ln": dict(attn_only=False, normalization="LN", biases=True, d_mlp=12),
    "shortformer": dict(positional="shortformer", biases=True),
}


@pytest.mark.parametrize("name", list(CFGS))
def test_zero_ablation_equals_zeroed_W_O(name):
    m = random_model(seed=1, n_layers=2, n_heads=3, **CFGS[name])
    t = toks_for(m)
    e = ablate_heads(m, t, [(0, 1), (1, 2)])
    m2 = copy.deepcopy(m)
    with torch.no_grad():
        m2.W_O[0, 1] = 0
        m2.W_O[1, 2] = 0
    assert math.isclose(e.clean, ce(m(t), t), rel_tol=1e-9)
    assert math.isclose(e.intervened, ce(m2(t), t), rel_tol=1e-9)
    assert math.isclose(e.delta, e.intervened - e.clean)
    table = ablation_table(m, t)
    for lay in range(2):
        for h in range(3):
            m3 = copy.deepcopy(m)
            with torch.no_grad():
                m3.W_O[lay, h] = 0
            assert abs(table[lay, h].item() - (ce(m3(t), t) - e.clean)) < 1e-6
    # several copies per forward pass, or one: same numbers
    torch.testing.assert_close(ablation_table(m, t, max_elements=1), table)


@pytest.mark.parametrize("means", ["positions", "batch"])
def test_mean_ablation_equals_mean_output_folded_into_b_O(means):
    m = random_model(seed=2, n_layers=2, n_heads=3, biases=True, normalization="LN")
    t, ref = toks_for(m, 3, 7, seed=1), toks_for(m, 5, 9, seed=2)
    _, cache = m.run_with_cache(ref)
    e = ablate_heads(m, t, [(1, 0)], kind="mean", reference=ref, means=means)
    zbar = cache["z", 1][:, :, 0].mean(0)  # [pos, d_head]
    if means == "positions":
        m2 = copy.deepcopy(m)
        with torch.no_grad():
            m2.b_O[1] += zbar.mean(0) @ m.W_O[1, 0]
            m2.W_O[1, 0] = 0
        assert math.isclose(e.intervened, ce(m2(t), t), rel_tol=1e-9)
    else:  # per position: add the mean output at each position with a hook on attn_out
        out = (zbar[:7] @ m.W_O[1, 0])
        m2 = copy.deepcopy(m)
        with torch.no_grad():
            m2.W_O[1, 0] = 0
        logits = m2.run_with_hooks(t, [(("attn_out", 1), lambda a, hp: a + out)])
        assert math.isclose(e.intervened, ce(logits, t), rel_tol=1e-9)
    table = ablation_table(m, t, kind="mean", reference=ref, means=means)
    assert abs(table[1, 0].item() - e.delta) < 1e-9


def reference_path_logits(m, toks, src, dst, kinds):
    """Two-layer attention-only forward written out; head dst's `kinds` inputs omit head src's output."""
    c = m.cfg
    P = toks.shape[1]

    def ln(v, layer=None, final=False):
        if c.normalization is None:
            return v
        v = v - v.mean(-1, keepdim=True)
        v = v / torch.sqrt((v * v).mean(-1, keepdim=True) + c.ln_eps)
        if c.normalization == "LN":
            w, b = (m.ln_final_w, m.ln_final_b) if final else (m.ln1_w[layer], m.ln1_b[layer])
            v = v * w + b
        return v

    out = []
    for seq in toks:
        x = m.W_E[seq] + (m.W_pos[:P] if c.positional == "standard" else 0)
        pos = m.W_pos[:P] if c.positional == "shortformer" else 0
        head_out = {}
        for layer in range(2):
            new = torch.zeros_like(x)
            for h in range(c.n_heads):
                ins = {}
                for kind in "qkv":
                    r = x - head_out[src] if ((layer, h) == dst and kind in kinds) else x
                    ins[kind] = ln(r, layer) + (pos if kind != "v" else 0)
                bq = m.b_Q[layer, h] if c.biases else 0
                bk = m.b_K[layer, h] if c.biases else 0
                bv = m.b_V[layer, h] if c.biases else 0
                q = ins["q"] @ m.W_Q[layer, h] + bq
                k = ins["k"] @ m.W_K[layer, h] + bk
                v = ins["v"] @ m.W_V[layer, h] + bv
                o = torch.zeros_like(x)
                for i in range(P):
                    a = torch.softmax(torch.stack([q[i] @ k[j] for j in range(i + 1)]) / c.attn_scale, 0)
                    o[i] = (a[:, None] * v[: i + 1]).sum(0) @ m.W_O[layer, h]
                head_out[layer, h] = o
                new = new + o
            x = x + new + (m.b_O[layer] if c.biases else 0)
        out.append(ln(x, final=True) @ m.W_U + (m.b_U if c.biases else 0))
    return torch.stack(out)


@pytest.mark.parametrize("name", ["plain", "ln_bias", "shortformer"])
@pytest.mark.parametrize("kinds", ["k", "q", "v", ("q", "k", "v")])
def test_path_ablation_matches_reference_forward(name, kinds):
    m = random_model(seed=3, n_layers=2, n_heads=2, **CFGS[name])
    t = toks_for(m, 2, 6)
    e = ablate_path(m, t, src=(0, 1), dst=(1, 0), kind=kinds)
    ref = reference_path_logits(m, t, (0, 1), (1, 0), kinds if isinstance(kinds, tuple) else (kinds,))
    assert math.isclose(e.intervened, ce(ref, t), rel_tol=1e-9)
    assert math.isclose(e.clean, ce(m(t), t), rel_tol=1e-9)
    assert abs(e.delta) > 1e-6  # the path matters in a random model


def test_mean_path_ablation_and_no_effect_when_src_writes_nothing():
    m = random_model(seed=4, n_layers=2, n_heads=2)
    t = toks_for(m)
    with torch.no_grad():
        m.W_O[0, 1] = 0
    assert ablate_path(m, t, (0, 1), (1, 1), "k").delta == 0.0
    m = random_model(seed=4, n_layers=2, n_heads=2)
    _, cache = m.run_with_cache(t)
    mean_out = cache["result", 0][:, :, 1].mean((0, 1))
    # subtracting (src − mean) from K's input = the reference forward with src's output shifted by its mean
    e = ablate_path(m, t, (0, 1), (1, 1), "k", ablation="mean")
    m2 = copy.deepcopy(m)
    shift = {}

    def grab(res, hp):
        shift["src"] = res[:, :, 1] - mean_out

    def fix_k(k, hp):
        k = k.clone()  # model.normalize = the forward's ln1 (test_model.py::test_normalize_is_the_forward_norm)
        k[:, :, 1] = m2.normalize(shift["resid"] - shift["src"], "ln1", 1) @ m2.W_K[1, 1]
        return k

    def grab_resid(r, hp):
        shift["resid"] = r

    logits = m2.run_with_hooks(t, [(("result", 0), grab), (("resid_pre", 1), grab_resid), (("k", 1), fix_k)])
    assert math.isclose(e.intervened, ce(logits, t), rel_tol=1e-9)


def test_patch_heads_one_layer_from_caches():
    m = random_model(seed=5, n_layers=1, n_heads=3)
    clean, corr = toks_for(m, 2, 6, seed=1), toks_for(m, 2, 6, seed=2)
    got = patch_heads(m, clean, corr)
    _, cc = m.run_with_cache(clean)
    _, cx = m.run_with_cache(corr)
    for h in range(3):
        res = cx["result", 0].clone()
        res[:, :, h] = cc["result", 0][:, :, h]
        logits = (cx["resid_pre", 0] + res.sum(2)) @ m.W_U
        assert abs(got[0, h].item() - ce(logits, corr)) < 1e-9
    # identical inputs: every patch leaves the metric at its clean value
    same = patch_heads(m, clean, clean)
    assert torch.allclose(same, torch.full_like(same, loss_metric(m(clean), clean).item()))


def test_patch_heads_multi_layer_and_normalized():
    m = random_model(seed=6, n_layers=2, n_heads=2, normalization="LN")
    clean, corr = toks_for(m, 2, 5, seed=1), toks_for(m, 2, 5, seed=2)
    got = patch_heads(m, clean, corr, max_elements=1)
    _, cc = m.run_with_cache(clean)
    for lay in range(2):
        for h in range(2):
            def fn(z, hp, h=h, lay=lay):
                z = z.clone()
                z[:, :, h] = cc["z", lay][:, :, h]
                return z
            assert abs(got[lay, h].item() - ce(m.run_with_hooks(corr, [(("z", lay), fn)]), corr)) < 1e-9
    nrm = patch_heads(m, clean, corr, normalize=True)
    lc, lx = loss_metric(m(clean), corr).item(), loss_metric(m(corr), corr).item()
    torch.testing.assert_close(nrm, (got - lx) / (lc - lx))


def test_patch_residual_layer0_is_swapping_the_token():
    m = random_model(seed=7, n_layers=2, n_heads=2, normalization="LN", biases=True)
    clean, corr = toks_for(m, 2, 6, seed=1), toks_for(m, 2, 6, seed=2)
    got = patch_residual(m, clean, corr)
    assert got.shape == (2, 6)
    for p in range(6):
        t = corr.clone()
        t[:, p] = clean[:, p]
        assert abs(got[0, p].item() - ce(m(t), corr)) < 1e-9
    # last layer, last position: the whole residual at the end is clean there
    _, cc = m.run_with_cache(clean)

    def fn(r, hp):
        r = r.clone()
        r[:, 3] = cc["resid_pre", 1][:, 3]
        return r
    assert abs(got[1, 3].item() - ce(m.run_with_hooks(corr, [(("resid_pre", 1), fn)]), corr)) < 1e-9
    torch.testing.assert_close(patch_residual(m, clean, corr, max_elements=1), got)


@pytest.mark.parametrize("name", list(CFGS) + ["lnpre_none"])
def test_logit_attribution_sums_to_the_logit(name):
    cfg = CFGS.get(name, dict(normalization="LNPre", positional="none"))
    m = random_model(seed=8, n_layers=2, n_heads=3, **cfg)
    t = toks_for(m, 3, 7)
    logits = m(t)
    la = logit_attribution(m, t, pos=4, token=5)
    assert la.heads.shape == (3, 2, 3)
    torch.testing.assert_close(la.total(), logits[:, 4, 5])
    d = logit_attribution(m, t[1], pos=-1, token=(5, 2))
    torch.testing.assert_close(d.total(), logits[1, -1, 5] - logits[1, -1, 2])
    assert d.heads.shape == (2, 3)
    torch.testing.assert_close(direct_logit_attribution(m, t[1], -1, (5, 2)), d.heads)


def test_dla_heads_by_hand():
    m = random_model(seed=9, n_layers=1, n_heads=2, normalization="LN", biases=True)
    t = toks_for(m, 1, 5)
    _, cache = m.run_with_cache(t)
    resid = cache["resid_post", 0][0, 3]
    scale = torch.sqrt(((resid - resid.mean()) ** 2).mean() + m.cfg.ln_eps)
    for h in range(2):
        r = cache["result", 0][0, 3, h]
        want = ((r - r.mean()) / scale * m.ln_final_w) @ m.W_U[:, 7]
        assert abs(direct_logit_attribution(m, t, 3, 7)[0, h].item() - want.item()) < 1e-10


def test_bad_input():
    m = random_model(seed=0)
    t = toks_for(m)
    with pytest.raises(IndexError, match="layer"):
        ablate_heads(m, t, [(2, 0)])
    with pytest.raises(IndexError, match="head"):
        ablate_heads(m, t, [(0, 3)])
    with pytest.raises(ValueError, match="kind"):
        ablate_heads(m, t, [(0, 0)], kind="resample")
    with pytest.raises(ValueError, match="earlier layer"):
        ablate_path(m, t, (1, 0), (0, 1))
    with pytest.raises(ValueError, match="kind"):
        ablate_path(m, t, (0, 0), (1, 1), kind="o")
    with pytest.raises(ValueError, match="same shape"):
        patch_heads(m, t, t[:, :5])
    with pytest.raises(IndexError, match="pos"):
        direct_logit_attribution(m, t, 8, 0)
    with pytest.raises(IndexError, match="token"):
        direct_logit_attribution(m, t, 0, 13)
    with pytest.raises(ValueError, match="outside"):
        ablation_table(m, torch.full((1, 4), 99))
    with pytest.raises(ValueError, match="at least 8 positions"):
        ablate_heads(m, t, [(0, 0)], kind="mean", means="batch", reference=t[:, :4])
    with pytest.raises(ValueError, match="normalize"):
        patch_heads(m, t, t, normalize=True)


def test_invariant_under_orthogonal_change_of_residual_basis():
    m = random_model(seed=12, n_layers=2, n_heads=2)
    m2 = rotated(m, seed=3)  # the same model in another orthonormal basis of the residual stream
    clean, corr = toks_for(m, 2, 6, seed=1), toks_for(m, 2, 6, seed=2)
    torch.testing.assert_close(ablation_table(m, clean), ablation_table(m2, clean))
    torch.testing.assert_close(patch_heads(m, clean, corr), patch_heads(m2, clean, corr))
    torch.testing.assert_close(direct_logit_attribution(m, clean, 3, 4), direct_logit_attribution(m2, clean, 3, 4))
    d1, d2 = ablate_path(m, clean, (0, 0), (1, 1), "k").delta, ablate_path(m2, clean, (0, 0), (1, 1), "k").delta
    assert abs(d1 - d2) < 1e-9 and abs(d1) > 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    m = random_model(seed=15, n_layers=2, n_heads=2, normalization="LN", biases=True)
    clean, corr = toks_for(m, 2, 6, seed=1), toks_for(m, 2, 6, seed=2)
    cpu = (ablation_table(m, clean, kind="mean"), patch_heads(m, clean, corr), patch_residual(m, clean, corr),
           direct_logit_attribution(m, clean, 3, 4).cpu(), ablate_path(m, clean, (0, 0), (1, 1), "q").delta)
    m = m.to("cuda")
    gpu = (ablation_table(m, clean, kind="mean"), patch_heads(m, clean, corr), patch_residual(m, clean, corr),
           direct_logit_attribution(m, clean, 3, 4).cpu(), ablate_path(m, clean, (0, 0), (1, 1), "q").delta)
    for x, y in zip(cpu[:4], gpu[:4]):
        torch.testing.assert_close(x, y)
    assert abs(cpu[4] - gpu[4]) < 1e-9


def test_patching_report_chooses_the_metric_from_the_two_runs():
    from circwidgets.engine.interventions import logit_diff_metric, patching_report

    m = random_model(seed=9, n_layers=2, n_heads=2)
    clean, corr = toks_for(m, 1, 7, seed=3), toks_for(m, 1, 7, seed=4)
    r = patching_report(m, clean, corr)
    good, bad = int(m(clean)[0, -1].argmax()), int(m(corr)[0, -1].argmax())
    assert (r.good, r.bad, r.pos) == (good, bad, -1)
    diff = lambda lg: float(lg[0, -1, good].detach() - lg[0, -1, bad].detach())  # noqa: E731
    assert math.isclose(r.clean, diff(m(clean)), rel_tol=1e-12)
    assert math.isclose(r.corrupted, diff(m(corr)), rel_tol=1e-12)
    assert r.normalized == (abs(r.clean - r.corrupted) > 1e-9)
    metric = logit_diff_metric(-1, good, bad)
    torch.testing.assert_close(r.heads, patch_heads(m, clean, corr, metric, normalize=r.normalized))
    torch.testing.assert_close(r.resid, patch_residual(m, clean, corr, metric, normalize=r.normalized))
    assert r.heads.shape == (2, 2) and r.resid.shape == (2, 7)
    same = patching_report(m, clean, clean)
    assert not same.normalized and same.good == same.bad


@pytest.mark.parametrize("kw", [
    dict(normalization="RMS"), dict(normalization="RMS", pre_norm=False),
    dict(normalization="RMS", positional="rotary"),
    # Gemma-like: rotary, grouped K/V, per-head q/k norms, a gated MLP after attention
    dict(normalization="RMS", positional="rotary", n_kv_heads=2, qk_norm=True, attn_only=False, gated_mlp=True,
         d_mlp=12),
    # OLMo-2-like: post-norms only, q/k norms over all heads of the projection, grouped K/V, an MLP
    dict(normalization="RMS", pre_norm=False, positional="rotary", n_kv_heads=2, qk_norm=True, qk_norm_scope="all",
         attn_only=False, d_mlp=12),
    # attention and MLP reading the same input
    dict(normalization="RMS", n_kv_heads=2, attn_only=False, parallel_attn_mlp=True, d_mlp=12),
])
def test_path_cuts_through_a_post_norm_remove_what_the_heads_wrote(kw):
    """Gemma 2/3 and OLMo-2 put an RMSNorm after attention: a head's write is its output through that norm's
    (frozen) scale. Cutting every layer-0 head out of a layer-1 head's queries, keys and values then leaves
    the stream entering layer 1 minus layer 0's whole attention output (no biases), which a brute-force run
    recomputes that head from (with grouped K/V: the K/V head it shares with its group, for all of them)."""
    m = random_model(seed=6, n_layers=2, n_heads=4, post_norm=True, **kw)
    cfg, dst = m.cfg, 3
    t = toks_for(m, 2, 7)
    hooks = ablation_hooks(m, paths=[((0, h), (1, dst), kind) for h in range(4) for kind in "qkv"])
    got = m.run_with_hooks(t, hooks)
    _, cache = m.run_with_cache(t)
    x = m.normalize(cache["blocks.1.hook_resid_pre"] - cache["blocks.0.hook_attn_out"], "ln1", 1)

    def from_stream(which):
        stored = cfg.kv_head_of(dst) if cfg.grouped_kv and which != "q" else dst
        readers = cfg.kv_group(stored) if cfg.grouped_kv and which != "q" else [dst]

        def hook(act, hp):
            act = act.clone()
            act[:, :, readers] = m.project(x, 1, which)[:, :, [stored]]  # broadcast over the group
            return act
        return hook

    want = m.run_with_hooks(t, [(f"blocks.1.attn.hook_{w}", from_stream(w)) for w in "qkv"])
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(got, m(t))  # the cut changes the logits


def test_path_cuts_refuse_a_layernorm_post_norm():
    m = random_model(seed=6, n_layers=2, n_heads=2, post_norm=True, normalization="LN")
    with pytest.raises(NotImplementedError, match="RMSNorm post-norms only"):
        ablate_path(m, toks_for(m, 1, 5), (0, 0), (1, 1), "k")
