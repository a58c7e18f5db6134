"""Rotary QK circuits, grouped-query K/V and RMSNorm in the engine, against the model's own forward pass.

Brute force: the attention score of every (query i, key j) of a one-layer attention-only rotary model
equals `full_qk(offset=i-j)[token_i, token_j] / attn_scale`; the offset profile equals the mean of the
model's own scores over token pairs; GQA results equal those of the same model with its K/V heads
copied out to full multi-head form; RMSNorm models keep their eigenvalues, composition scores and path
terms under an orthogonal change of residual basis.
"""

from __future__ import annotations

import pytest
import torch

from circwidgets import engine
from circwidgets.model import ModelConfig, Transformer, fold_layernorm, rotary
from circwidgets.model.testing import random_model

D_VOCAB = 11


def rotary_model(layout="half", rotary_dim=None, n_kv_heads=None, n_layers=1, seed=0, **kw) -> Transformer:
    kw = {"rotary_layout": layout, "rotary_dim": rotary_dim, "n_kv_heads": n_kv_heads, **kw}
    return random_model(n_layers=n_layers, d_model=16, n_heads=4, d_head=6, d_vocab=D_VOCAB, n_ctx=12,
                        positional="rotary", rotary_base=30.0, seed=seed, **kw)


CASES = [("half", None, None), ("interleaved", None, None), ("half", 4, None), ("interleaved", 2, None),
         ("half", None, 2), ("interleaved", 4, 1)]


@pytest.mark.parametrize("layout,rotary_dim,n_kv", CASES)
def test_full_qk_is_the_models_attention_score(layout, rotary_dim, n_kv):
    """Every (query i, key j) score of the model = full_qk(offset=i-j)[tok_i, tok_j] / attn_scale."""
    m = rotary_model(layout, rotary_dim, n_kv)
    toks = torch.randint(0, D_VOCAB, (3, 12), generator=torch.Generator().manual_seed(1))
    _, cache = m.run_with_cache(toks)
    scores = cache["attn_scores", 0]  # [batch, head, q, k]
    for delta in range(12):
        fq = engine.full_qk(m, offset=delta)[0].materialize() / m.cfg.attn_scale  # [head, V, V]
        i = torch.arange(delta, 12)
        j = i - delta
        got = scores[:, :, i, j]  # [batch, head, n]
        want = fq[:, toks[:, i], toks[:, j]].permute(1, 0, 2)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # W_QK at an offset is W_Q R W_K^T with the model's own rotation (rotary.rotation_matrix)
    R = rotary.rotation_matrix(m.cfg, 3)
    torch.testing.assert_close(engine.W_QK(m, offset=3)[0, 1].materialize(),
                               m.W_Q[0, 1] @ R @ m.W_K[0, 1].T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout,rotary_dim,n_kv", CASES[:3] + CASES[4:5])
def test_eigenvalues_and_positivity_per_offset(layout, rotary_dim, n_kv):
    """Cores and positivity at an offset = dense eigenvalues of W_E W_Q R_Δ W_K^T W_E^T; offset lists average."""
    m = rotary_model(layout, rotary_dim, n_kv, n_layers=2)
    for delta in (0, 1, 5):
        dense = engine.full_qk(m, offset=delta).materialize()
        pos = engine.eigen_positivity(m, "qk", offset=delta)
        for layer in range(2):
            for h in range(4):
                lam = torch.linalg.eigvals(dense[layer, h])
                lam = lam[lam.abs() > 1e-9 * lam.abs().max()]
                ours = engine.eigenvalues(m, layer, h, "qk", offset=delta)
                ours = ours[ours.abs() > 1e-9 * ours.abs().max()]
                torch.testing.assert_close(ours.abs().sort().values, lam.abs().sort().values, rtol=1e-8, atol=1e-10)
                want = float(lam.real.sum() / lam.abs().sum())
                assert abs(float(pos[layer, h]) - want) < 1e-8
    mean = engine.full_qk(m, offset=[1, 2, 3]).materialize()
    parts = sum(engine.full_qk(m, offset=d).materialize() for d in (1, 2, 3)) / 3
    torch.testing.assert_close(mean, parts, rtol=1e-10, atol=1e-12)


def test_rotary_needs_an_offset_and_others_refuse_one():
    m = rotary_model()
    for call in (lambda: engine.full_qk(m), lambda: engine.W_QK(m), lambda: engine.eigen_positivity(m, "qk"),
                 lambda: engine.eigenvalues(m, 0, 0, "qk"), lambda: engine.composition_scores(m, "k")):
        with pytest.raises(ValueError, match="offset"):
            call()
    with pytest.raises(ValueError, match="rotary positions and no W_pos.*offset_profile"):
        engine.positional_qk(m)
    with pytest.raises(ValueError, match="no W_pos"):
        engine.eigen_positivity(m, "qk_pos")
    with pytest.raises(ValueError, match="negative"):
        engine.full_qk(m, offset=-1)
    with pytest.raises(ValueError, match="QK circuits"):
        engine.eigen_positivity(m, "ov", offset=1)
    assert engine.eigen_positivity(m, "ov").shape == (1, 4)  # OV needs no offset
    plain = random_model(n_layers=1, d_model=16, n_heads=4, d_head=6, d_vocab=D_VOCAB, n_ctx=12)
    with pytest.raises(ValueError, match="only for rotary"):
        engine.full_qk(plain, offset=1)
    with pytest.raises(ValueError, match="rotary models"):
        engine.offset_profile(plain)


@pytest.mark.parametrize("kw", [dict(), dict(normalization="RMS", biases=True), dict(n_kv_heads=2, qk_norm=True),
                                dict(n_kv_heads=2, qk_norm=True, qk_norm_scope="all", normalization="LN"),
                                dict(rotary_dim=4, layout="interleaved", embed_scale=2.0)])
def test_offset_profile_is_the_mean_model_score(kw):
    """profile[0, h, Δ] = mean over all (query token, key token) pairs of the model's own layer-0 score
    at offset Δ (every pair of tokens at positions Δ and 0)."""
    m = rotary_model(**kw)
    offs = [0, 1, 2, 5, 9]
    prof = engine.offset_profile(m, offsets=offs)
    assert prof.shape == (1, 4, len(offs))
    V = D_VOCAB
    t, s = torch.meshgrid(torch.arange(V), torch.arange(V), indexing="ij")
    for i, d in enumerate(offs):
        if d == 0:  # at Δ = 0 the key is the query token itself; the profile still averages independent pairs
            if not kw:
                fq = engine.full_qk(m, offset=0)[0].materialize()
                torch.testing.assert_close(prof[0, :, i], fq.mean((-2, -1)) / m.cfg.attn_scale, rtol=1e-9, atol=1e-12)
            continue
        toks = torch.zeros(V * V, d + 1, dtype=torch.long)
        toks[:, 0], toks[:, d] = s.reshape(-1), t.reshape(-1)
        _, cache = m.run_with_cache(toks)
        want = cache["attn_scores", 0][:, :, d, 0].mean(0)  # [head]
        torch.testing.assert_close(prof[0, :, i], want, rtol=1e-9, atol=1e-12)


def test_previous_token_head_peaks_at_one():
    """A head built to attend to the previous token (constant q, k directions rotated by one step) has
    its offset profile's maximum at Δ = 1."""
    cfg = ModelConfig(n_layers=1, d_model=8, n_heads=1, d_head=4, d_vocab=5, n_ctx=16, positional="rotary",
                      rotary_base=10.0)
    m = Transformer(cfg, seed=None).double()
    with torch.no_grad():
        m.W_E.zero_()
        m.W_E[:, 0] = 1.0  # every token has the same component along dimension 0
        m.W_Q.zero_(), m.W_K.zero_(), m.W_V.zero_(), m.W_O.zero_(), m.W_U.zero_()
        R1 = rotary.rotation_matrix(cfg, 1)
        m.W_Q[0, 0, 0] = 3.0 * torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64) @ R1.T  # q R_1 = k
        m.W_K[0, 0, 0] = 3.0 * torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    prof = engine.offset_profile(m, offsets=range(8))[0, 0]
    assert int(prof.argmax()) == 1
    _, cache = m.run_with_cache(torch.arange(8) % 5)
    assert bool((cache["pattern", 0][0, 0, 2:].argmax(-1) == torch.arange(1, 7)).all())


def expanded_mha(m: Transformer) -> Transformer:
    """The same model with each shared K/V head copied to every query head of its group (n_kv_heads = n_heads)."""
    cfg = ModelConfig.from_dict({**m.cfg.to_dict(), "n_kv_heads": None})
    out = Transformer(cfg, seed=None).to(m.W_E.dtype)
    sd = {}
    for k, v in m.state_dict().items():
        if k.startswith("_"):
            sd[k[1:]] = m.kv_expand(v)
        elif k in ("k_norm_w",) and cfg.qk_norm_scope == "all":
            sd[k] = m.kv_expand(v)
        else:
            sd[k] = v
    out.load_state_dict(sd)
    return out.eval()


GQA = [dict(positional="rotary"), dict(positional="standard"), dict(positional="rotary", normalization="RMS",
                                                                   attn_only=False, gated_mlp=True, act_fn="silu")]


@pytest.mark.parametrize("kw", GQA)
def test_gqa_equals_copied_out_multi_head(kw):
    """Composition, eigenvalues, virtual weights and path terms of a GQA model = those of its MHA copy."""
    m = random_model(n_layers=3, d_model=16, n_heads=4, d_head=4, d_vocab=D_VOCAB, n_ctx=10, n_kv_heads=2,
                     seed=3, **kw)
    full = expanded_mha(m)
    toks = torch.randint(0, D_VOCAB, (2, 8), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(m(toks), full(toks), rtol=1e-12, atol=1e-12)
    off = {"offset": 1} if kw["positional"] == "rotary" else {}
    for kind in "qkv":
        o = off if kind != "v" else {}
        torch.testing.assert_close(engine.composition_scores(m, kind, **o),
                                   engine.composition_scores(full, kind, **o), equal_nan=True, rtol=1e-10, atol=1e-12)
    for circ in ("ov", "qk"):
        o = off if circ == "qk" else {}
        torch.testing.assert_close(engine.eigen_positivity(m, circ, **o), engine.eigen_positivity(full, circ, **o),
                                   rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(engine.circuit_cores(m, circ, **o), engine.circuit_cores(full, circ, **o),
                                   rtol=1e-10, atol=1e-12)
    vw = engine.virtual_weights(m, ("head", 0, 1), ("head", 2, 3, "k"), order=None).matrix.materialize()
    vf = engine.virtual_weights(full, ("head", 0, 1), ("head", 2, 3, "k"), order=None).matrix.materialize()
    torch.testing.assert_close(vw, vf, rtol=1e-10, atol=1e-12)
    pt, pf = engine.path_terms(m, toks, max_order=2), engine.path_terms(full, toks, max_order=2)
    assert pt.labels == pf.labels
    torch.testing.assert_close(pt.resid, pf.resid, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(pt.total(), m(toks), rtol=1e-9, atol=1e-9)


def rotate_rms(m: Transformer, seed: int = 4) -> tuple[Transformer, Transformer]:
    """The folded model (RMSPre) and the same in a random orthogonal residual basis."""
    f = fold_layernorm(m)
    g = torch.Generator().manual_seed(seed)
    D = f.cfg.d_model
    R, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    sd = dict(f.state_dict())
    for n in ("W_E", "W_O", "W_out", "b_O", "b_out", "W_pos"):
        if n in sd:
            sd[n] = sd[n] @ R
    for n in ("W_Q", "W_K", "W_V", "_W_K", "_W_V", "W_in", "W_gate", "W_U"):
        if n in sd:
            sd[n] = R.T @ sd[n]
    out = Transformer(f.cfg, seed=None).double()
    out.load_state_dict(sd)
    return f, out.eval()


@pytest.mark.parametrize("kw", [dict(attn_only=True), dict(attn_only=False, gated_mlp=True, act_fn="silu")])
def test_rms_rotation_invariance(kw):
    """RMS models: eigenvalues, composition, path terms are unchanged in a rotated residual basis."""
    m = random_model(n_layers=2, d_model=16, n_heads=4, d_head=4, d_vocab=D_VOCAB, n_ctx=10, n_kv_heads=2,
                     positional="rotary", normalization="RMS", seed=5, **kw)
    f, r = rotate_rms(m)
    toks = torch.randint(0, D_VOCAB, (2, 8), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(r(toks), m(toks), rtol=1e-10, atol=1e-10)
    for circ, o in (("ov", {}), ("qk", {"offset": 0}), ("qk", {"offset": 2})):
        torch.testing.assert_close(engine.eigen_positivity(r, circ, **o), engine.eigen_positivity(m, circ, **o),
                                   rtol=1e-8, atol=1e-9)
    for kind in "qkv":
        o = {"offset": 1} if kind != "v" else {}
        torch.testing.assert_close(engine.composition_scores(r, kind, **o), engine.composition_scores(m, kind, **o),
                                   equal_nan=True, rtol=1e-9, atol=1e-10)
    pr, pm = engine.path_terms(r, toks), engine.path_terms(m, toks)
    torch.testing.assert_close(pr.logits(), pm.logits(), rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(engine.offset_profile(r), engine.offset_profile(m), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("kw", [dict(), dict(attn_only=False, gated_mlp=True, act_fn="silu", parallel_attn_mlp=True),
                                dict(attn_only=False, post_norm=True, qk_norm=True, embed_scale=3.0),
                                dict(attn_only=False, biases=True, normalization="LN"),
                                dict(attn_only=False, post_norm=True, pre_norm=False)])
def test_path_terms_and_dla_sum_to_the_logits(kw):
    """Rotary + RMS + GQA (+ MLPs, post-norms, q/k norms, embedding scale): path terms and the logit
    attribution add up to the model's logits."""
    kw = {"normalization": "RMS", **kw}
    m = random_model(n_layers=3, d_model=16, n_heads=4, d_head=4, d_vocab=D_VOCAB, n_ctx=10, n_kv_heads=2,
                     positional="rotary", seed=6, **kw)
    toks = torch.randint(0, D_VOCAB, (2, 9), generator=torch.Generator().manual_seed(4))
    logits = m(toks)
    pt = engine.path_terms(m, toks, max_order=1)
    torch.testing.assert_close(pt.total(), logits, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(pt.logits().sum(0), logits, rtol=1e-9, atol=1e-9)
    full = engine.path_terms(m, toks, max_order=3)
    assert float(full.remainder.abs().max()) < 1e-9
    la = engine.logit_attribution(m, toks[0], pos=5, token=3)
    torch.testing.assert_close(la.total(), logits[0, 5, 3], rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------------ interventions
def gqa_model(**kw) -> Transformer:
    kw = {"positional": "rotary", "normalization": "RMS", "n_kv_heads": 2, **kw}
    return random_model(n_layers=2, d_model=16, n_heads=4, d_head=4, d_vocab=D_VOCAB, n_ctx=10, seed=7, **kw)


@pytest.mark.parametrize("kind", ["k", "v", "q"])
def test_gqa_path_cut_acts_on_the_group(kind):
    """A cut into dst's keys/values on a GQA model = the same cut into every head of dst's group in the
    copied-out MHA model (the shared K/V head is recomputed); queries stay per head. Effect.notes says so."""
    m = gqa_model(biases=True)
    full = expanded_mha(m)
    toks = torch.randint(0, D_VOCAB, (2, 8), generator=torch.Generator().manual_seed(5))
    eff = engine.ablate_path(m, toks, (0, 1), (1, 2), kind=kind)
    group = m.cfg.kv_group(m.cfg.kv_head_of(2)) if kind != "q" else [2]
    hooks = engine.ablation_hooks(full, paths=[((0, 1), (1, g), kind) for g in group])
    want = engine.loss_metric(full.run_with_hooks(toks, hooks), toks)
    assert abs(eff.intervened - float(want)) < 1e-10
    assert abs(eff.delta) > 1e-6  # the cut does something
    if kind == "q":
        assert eff.notes == ()
    else:
        assert len(eff.notes) == 1 and "L1H2, L1H3" in eff.notes[0] and "shared" in eff.notes[0]
        run = engine.ablated_run(m, toks, paths=[((0, 1), (1, 2), kind)])
        assert run.notes == eff.notes and abs(run.loss - eff.intervened) < 1e-10


@pytest.mark.parametrize("kw", [dict(qk_norm=True), dict(qk_norm=True, qk_norm_scope="all"), dict(biases=True)])
def test_cut_from_a_silent_head_changes_nothing(kw):
    """Cutting a path from a head whose output is zero is a no-op: the recomputed q/k/v go through the
    same biases and q/k norms as the forward pass."""
    m = gqa_model(**kw)
    with torch.no_grad():
        m.W_O[0, 1] = 0.0
    toks = torch.randint(0, D_VOCAB, (2, 8), generator=torch.Generator().manual_seed(6))
    for kind in "qkv":
        assert abs(engine.ablate_path(m, toks, (0, 1), (1, 3), kind=kind).delta) < 1e-12


def test_patch_kv_heads_patches_the_whole_group():
    m = gqa_model()
    g = torch.Generator().manual_seed(8)
    clean, corrupt = torch.randint(0, D_VOCAB, (2, 8), generator=g), torch.randint(0, D_VOCAB, (2, 8), generator=g)
    metric = engine.logit_diff_metric(-1, 3, 4)
    for kind in "kv":
        out = engine.patch_kv_heads(m, clean, corrupt, kind=kind, metric=metric)
        assert out.shape == (2, 2)
        _, cache = m.run_with_cache(clean)
        for lay in range(2):
            for kv in range(2):
                grp = m.cfg.kv_group(kv)

                def hook(a, hp, lay=lay, grp=grp, kind=kind, cache=cache):
                    a = a.clone()
                    a[:, :, grp] = cache[kind, lay][:, :, grp]
                    return a

                with torch.no_grad():
                    want = metric(m.run_with_hooks(corrupt, [((kind, lay), hook)]), corrupt)
                assert abs(float(out[lay, kv]) - float(want)) < 1e-10
        same = engine.patch_kv_heads(m, clean, clean, kind=kind, metric=metric)
        with torch.no_grad():
            assert torch.allclose(same, torch.full_like(same, float(metric(m(clean), clean))), atol=1e-10)


@pytest.mark.parametrize("norm", [None, "RMS"])
def test_tied_unembedding_gram_shortcut(norm):
    """Tied embeddings: W_U W_E is derived from W_Eᵀ W_E (one d_vocab-long GEMM less); the OV cores equal
    the dense W_O (W_U W_E) W_V."""
    from circwidgets.engine.prep import weights

    m = random_model(n_layers=2, d_model=16, n_heads=4, d_head=4, d_vocab=D_VOCAB, n_ctx=10, tied_embeddings=True,
                     normalization=norm, positional="rotary", n_kv_heads=2, embed_scale=1.7)
    w = weights(m)
    want = w["W_O"] @ (w["W_U"] @ w["W_E"]) @ w["W_V"]
    torch.testing.assert_close(engine.circuit_cores(m, "ov"), want, rtol=1e-10, atol=1e-12)


def test_head_full_qk_is_one_head_of_full_qk():
    m = rotary_model(n_kv_heads=2, n_layers=2)
    for off in (0, 3, [1, 2]):
        torch.testing.assert_close(engine.circuits.head_full_qk(m, 1, 3, off).materialize(),
                                   engine.full_qk(m, offset=off)[1, 3].materialize(), rtol=1e-12, atol=1e-12)
    table = engine.skip_trigrams(m, 1, 3, offset=2)
    dense = engine.full_qk(m, offset=2)[1, 3].materialize() / m.cfg.attn_scale
    centred = dense - dense.mean(1, keepdim=True)  # QK centred per query row, as the table ranks destinations
    row = table.for_source(4)
    assert row.dests[0] == int(centred[:, 4].argmax())
    assert abs(row.dest_values[0] - float(centred[:, 4].max())) < 1e-5


def test_rotary_tables_in_16_bit_types_are_computed_in_float32():
    """Under bfloat16 autocast the queries are bfloat16, and the tables follow their dtype: the angles must
    not be computed in it (spacing 1 between 128 and 256: cos off by up to 0.5), or the model's attention
    scores come from the wrong rotations. The table, and the attention scores of a model under autocast, must
    match float32 to 16-bit rounding at every position."""
    cfg = random_model(n_layers=1, d_model=32, n_heads=2, d_head=16, d_vocab=20, n_ctx=512,
                       positional="rotary").cfg
    pos = torch.arange(512)
    c64, s64 = rotary.cos_sin(cfg, pos, 0, torch.float64)
    for dt in (torch.bfloat16, torch.float16):
        c, s = rotary.cos_sin(cfg, pos, 0, dt)
        assert c.dtype == s.dtype == dt
        assert float((c.double() - c64).abs().max()) < 0.01 and float((s.double() - s64).abs().max()) < 0.01
    m = random_model(n_layers=1, d_model=64, n_heads=2, d_head=32, d_vocab=50, n_ctx=300, positional="rotary",
                     seed=1, dtype=torch.float32).requires_grad_(False)  # autocast leaves float64 alone
    toks = torch.randint(0, 50, (2, 300), generator=torch.Generator().manual_seed(0))
    _, ref = m.run_with_cache(toks)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, bf = m.run_with_cache(toks)
    assert bf["attn_scores", 0].dtype == torch.bfloat16  # the forward did run in bfloat16
    late = torch.isfinite(ref["attn_scores", 0]) & (torch.arange(300) >= 128)[:, None]  # causal, queries past 128
    diff = (bf["attn_scores", 0].float() - ref["attn_scores", 0])[late.expand_as(ref["attn_scores", 0])].abs()
    assert float(diff.max()) < 0.1  # 16-bit rounding: 0.02; with angles computed in bfloat16: 1.4
