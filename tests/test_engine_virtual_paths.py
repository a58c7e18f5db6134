"""Virtual weights, virtual heads and path terms against dense float64 brute force."""

from __future__ import annotations

import itertools

import pytest
import torch

from circwidgets.engine.paths import path_terms
from circwidgets.engine.virtual import virtual_heads, virtual_weights
from circwidgets.model import fold_layernorm
from circwidgets.model.testing import random_model
from circwidgets.model.testing import rotated as rotate

SMALL = dict(n_layers=3, d_model=16, n_heads=3, d_head=4, d_vocab=13, n_ctx=10)
MLP = dict(SMALL, attn_only=False, d_mlp=24, normalization="LN", biases=True)


def tokens(B=2, P=7, V=13, seed=0):
    return torch.randint(0, V, (B, P), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- virtual weights
def dense_virtual(pm, W_out, W_in, lo, hi, order):
    """Brute force: lo/hi are stream positions (0 = embed, 2l+1 = heads of layer l, 2l+2 = MLP l)."""
    D = pm.cfg.d_model
    eye = torch.eye(D, dtype=torch.float64)
    terms = []  # per stage: list of W_in^k W_out^k of its components
    for l in range(pm.cfg.n_layers):
        if lo < 2 * l + 1 < hi:
            terms.append([pm.W_V[l, h] @ pm.W_O[l, h] for h in range(pm.cfg.n_heads)])
        if not pm.cfg.attn_only and lo < 2 * l + 2 < hi:
            terms.append([pm.W_in[l] @ pm.W_out[l]])
    if order == 1:
        mid = eye + sum((t for st in terms for t in st), torch.zeros(D, D, dtype=torch.float64))
    else:
        mid = eye
        for st in terms:
            mid = mid @ (eye + sum(st))
    return W_out @ mid @ W_in


@pytest.mark.parametrize("kwargs", [SMALL, MLP])
@pytest.mark.parametrize("order", [1, None])
def test_virtual_weights_against_dense(kwargs, order):
    m = random_model(seed=1, **kwargs)
    pm = fold_layernorm(m) if m.cfg.normalization else m
    cases = [
        (("embed",), ("unembed",), pm.W_E, pm.W_U, 0, 7),
        (("head", 0, 1), ("head", 2, 2), pm.W_O[0, 1], pm.W_V[2, 2], 1, 5),
        (("head", 0, 1), ("head", 2, 0, "k"), pm.W_O[0, 1], pm.W_K[2, 0], 1, 5),
        ("pos", ("head", 1, 0, "q"), pm.W_pos, pm.W_Q[1, 0], 0, 3),
        (("head", 1, 2), "unembed", pm.W_O[1, 2], pm.W_U, 3, 7),
    ]
    if not m.cfg.attn_only:
        cases.append((("mlp", 0), ("mlp", 2), pm.W_out[0], pm.W_in[2], 2, 6))
    for src, dst, W_out, W_in, lo, hi in cases:
        vw = virtual_weights(m, src, dst, order=order)
        want = dense_virtual(pm, W_out, W_in, lo, hi, order)
        torch.testing.assert_close(vw.matrix.materialize(), want)
        s = torch.linalg.svdvals(want)[: vw.singular_values.shape[0]]
        torch.testing.assert_close(vw.singular_values, s)
        U, S, Vh = vw.svd()
        torch.testing.assert_close(U @ torch.diag(S) @ Vh, want)
    direct = virtual_weights(m, "embed", "unembed", order=0).matrix.materialize()
    torch.testing.assert_close(direct, pm.W_E @ pm.W_U)


def test_exact_virtual_weights_match_the_network_with_identity_patterns():
    """With every head attending only to itself, an attention-only model without LN or biases is the
    linear map W_E prod(I + sum_h W_OV) W_U: the exact virtual weights must give its logits."""
    m = random_model(seed=2, **SMALL)
    t = tokens()
    eye_hooks = [(("pattern", l), lambda a, hook: torch.eye(a.shape[-1], dtype=a.dtype).expand_as(a))
                 for l in range(3)]
    logits = m.run_with_hooks(t, fwd_hooks=eye_hooks)
    pos_part = m.W_pos[: t.shape[1]]
    vw_e = virtual_weights(m, "embed", "unembed", order=None).matrix
    vw_p = virtual_weights(m, "pos", "unembed", order=None).matrix
    want = vw_e.materialize()[t] + vw_p.materialize()[: t.shape[1]]
    torch.testing.assert_close(logits, want)
    assert pos_part.shape[0] == t.shape[1]
    # and the first-order weights are different (the test can tell the two apart)
    first = virtual_weights(m, "embed", "unembed", order=1).matrix.materialize()
    assert not torch.allclose(first, vw_e.materialize())


def test_effective_rank_and_subspaces():
    m = random_model(seed=3, **SMALL)
    vw = virtual_weights(m, ("head", 0, 0), ("head", 1, 1))
    s = vw.singular_values
    p = s / s.sum()
    assert vw.effective_rank() == pytest.approx(float(torch.exp(-(p * p.log()).sum())))
    assert 1.0 <= vw.effective_rank() <= 4.0
    assert vw.numerical_rank() == 4
    # a rank-1 middle: effective rank 1
    with torch.no_grad():
        m.W_O[0, 0] = torch.outer(torch.randn(4, dtype=torch.float64), torch.randn(16, dtype=torch.float64))
    vw1 = virtual_weights(m, ("head", 0, 0), ("head", 1, 1), order=0)
    assert vw1.numerical_rank() == 1 and vw1.effective_rank() == pytest.approx(1.0, abs=1e-6)
    W = vw.write_subspace(2)
    R = vw.read_subspace(2)
    assert W.shape == (2, 16) and R.shape == (2, 16)
    torch.testing.assert_close(W.norm(dim=1), torch.ones(2, dtype=torch.float64))
    U, S, Vh = vw.svd()
    d = U[:, 0] @ m.W_O[0, 0]
    torch.testing.assert_close(W[0], d / d.norm())
    d = m.W_V[1, 1] @ Vh[0]
    torch.testing.assert_close(R[0], d / d.norm())
    torch.testing.assert_close(vw.src_directions(2), U[:, :2].T)
    torch.testing.assert_close(vw.dst_directions(2), Vh[:2])


def test_virtual_weight_rotation_invariance():
    m = random_model(seed=4, **SMALL)
    r = rotate(m)
    for src, dst in [("embed", "unembed"), (("head", 0, 2), ("head", 2, 1, "q")), ("pos", ("head", 1, 1, "k"))]:
        for order in (1, None):
            torch.testing.assert_close(virtual_weights(m, src, dst, order).singular_values,
                                       virtual_weights(r, src, dst, order).singular_values)


def test_virtual_weight_errors():
    m = random_model(seed=5, **SMALL)
    with pytest.raises(ValueError, match="strictly before"):
        virtual_weights(m, ("head", 1, 0), ("head", 1, 2))
    with pytest.raises(ValueError, match="only be dst"):
        virtual_weights(m, "unembed", ("head", 1, 2))
    with pytest.raises(ValueError, match="only be src"):
        virtual_weights(m, ("head", 0, 0), "embed")
    with pytest.raises(IndexError, match="layer=5"):
        virtual_weights(m, ("head", 5, 0), "unembed")
    with pytest.raises(ValueError, match="attention-only"):
        virtual_weights(m, ("mlp", 0), "unembed")
    with pytest.raises(ValueError, match="order"):
        virtual_weights(m, "embed", "unembed", order=2)
    with pytest.raises(ValueError, match="spec"):
        virtual_weights(m, ("attn", 0), "unembed")


# ---------------------------------------------------------------- virtual heads
def test_virtual_heads():
    m = random_model(seed=6, **SMALL)
    t = tokens()
    _, cache = m.run_with_cache(t)
    vh = virtual_heads(m, cache, (0, 1), (2, 0))
    A1, A2 = cache["pattern", 0][:, 1], cache["pattern", 2][:, 0]
    want = torch.einsum("bqm,bmk->bqk", A2, A1)
    torch.testing.assert_close(vh.pattern, want)
    torch.testing.assert_close(vh.pattern.sum(-1), torch.ones(2, 7, dtype=torch.float64))  # still a pattern
    torch.testing.assert_close(vh.ov.materialize(), m.W_V[0, 1] @ m.W_O[0, 1] @ m.W_V[2, 0] @ m.W_O[2, 0])
    torch.testing.assert_close(vh.full_ov(m).materialize(), m.W_E @ vh.ov.materialize() @ m.W_U)
    torch.testing.assert_close(virtual_heads(m, t, (0, 1), (2, 0)).pattern, want)  # from tokens
    with pytest.raises(ValueError, match="earlier layer"):
        virtual_heads(m, cache, (1, 0), (1, 1))


# ---------------------------------------------------------------- path terms
@pytest.mark.parametrize("kwargs", [
    SMALL, dict(SMALL, biases=True), dict(SMALL, normalization="LN", biases=True),
    dict(SMALL, normalization="LNPre"), dict(SMALL, positional="shortformer", biases=True),
    dict(SMALL, positional="none"),
    dict(SMALL, normalization="LN", pre_norm=False, positional="shortformer"),  # a final LayerNorm only
])
def test_path_terms_total_is_the_logits(kwargs):
    m = random_model(seed=7, **kwargs)
    t = tokens()
    pt = path_terms(m, t, max_order=3)
    logits = m(t).detach()
    assert torch.equal(pt.remainder, torch.zeros_like(logits))  # everything enumerated: exactly zero
    torch.testing.assert_close(pt.total(), logits)
    torch.testing.assert_close(pt.logits().sum(0), logits)
    n_src = 1 + (m.cfg.positional == "standard")
    H = 3
    # sources: embed (+pos) at the start, one bias term per layer if biases
    n_terms = n_src * (1 + H) ** 3
    if m.cfg.biases:
        n_terms += sum((1 + H) ** (2 - l) for l in range(3))
    assert len(pt.labels) == n_terms


def test_path_terms_against_dense_terms():
    """Individual terms written out by hand (no LN, no biases)."""
    m = random_model(seed=8, **SMALL)
    t = tokens()
    pt = path_terms(m, t, max_order=2)
    _, cache = m.run_with_cache(t)
    A = [cache["pattern", l] for l in range(3)]
    x0 = m.W_E[t]
    OV = m.W_V @ m.W_O
    terms = dict(zip(pt.labels, range(len(pt.labels))))
    torch.testing.assert_close(pt.term_logits(terms["embed"]), x0 @ m.W_U)
    torch.testing.assert_close(pt.term_logits(terms["pos"]), m.W_pos[:7].expand(2, 7, 16) @ m.W_U)
    for l, h in [(0, 2), (2, 1)]:
        want = A[l][:, h] @ x0 @ OV[l, h] @ m.W_U
        torch.testing.assert_close(pt.term_logits(terms[f"embed → L{l}H{h}"]), want)
    for (l1, h1), (l2, h2) in [((0, 1), (1, 2)), ((0, 0), (2, 0)), ((1, 2), (2, 2))]:
        want = A[l2][:, h2] @ A[l1][:, h1] @ x0 @ OV[l1, h1] @ OV[l2, h2] @ m.W_U
        torch.testing.assert_close(pt.term_logits(terms[f"embed → L{l1}H{h1} → L{l2}H{h2}"]), want)
        # consistency with virtual_heads: same pattern and OV
        vh = virtual_heads(m, cache, (l1, h1), (l2, h2))
        torch.testing.assert_close(vh.pattern @ x0 @ vh.ov.materialize() @ m.W_U, want)
    # remainder = exactly the order-3 paths
    full = path_terms(m, t, max_order=3)
    order3 = sum(full.term_logits(i) for i, o in enumerate(full.orders) if o == 3)
    torch.testing.assert_close(pt.remainder, order3)


@pytest.mark.parametrize("pre_norm", [True, False])
def test_path_terms_ln_terms_against_dense(pre_norm):
    """LN model: a head reads (x - mean)/scale with the scale frozen; a final LayerNorm alone (no pre-norms,
    shortformer positions in q / k only): the heads read the raw stream. Every path goes through the final
    norm's frozen scale (centred, its weight folded into W_U). A one-head and a two-head term by hand, float64."""
    kw = dict(normalization="LN") if pre_norm else dict(normalization="LN", pre_norm=False, positional="shortformer")
    m = random_model(seed=9 if pre_norm else 21, **dict(SMALL, **kw)).double()
    pm = fold_layernorm(m)
    t = tokens()
    _, cache = pm.run_with_cache(t)
    pt = path_terms(m, t, max_order=2)

    def c(x):
        return x - x.mean(-1, keepdim=True)

    def read(x, layer):
        return c(x) / cache["scale", layer, "ln1"] if pre_norm else x

    x0 = pm.W_E[t]
    h1 = cache["pattern", 0][:, 2] @ read(x0, 0) @ pm.W_V[0, 2] @ pm.W_O[0, 2]
    h2 = cache["pattern", 2][:, 1] @ read(h1, 2) @ pm.W_V[2, 1] @ pm.W_O[2, 1]
    for label, write in (("embed → L0H2", h1), ("embed → L0H2 → L2H1", h2)):
        want = (c(write) / cache["scale"]) @ pm.W_U
        torch.testing.assert_close(pt.term_logits(pt.labels.index(label)), want)
    torch.testing.assert_close(pt.total(), m(t))  # the unfolded model's logits (the fold must not change them)


def test_path_terms_mlp_models_and_pruning():
    m = random_model(seed=10, **MLP)
    t = tokens()
    logits = m(t).detach()
    full = path_terms(m, t, max_order=3)
    assert torch.equal(full.remainder, torch.zeros_like(logits))
    torch.testing.assert_close(full.total(), logits)
    assert "mlp L0" in full.labels and "mlp L0 → L1H2" in full.labels
    pruned = path_terms(m, t, max_order=3, top_k=5)
    torch.testing.assert_close(pruned.total(), logits)
    for l in range(3):  # at most top_k new order>=2 terms per layer
        n = sum(1 for p, o in zip(pruned.paths, pruned.orders) if o >= 2 and p[1][-1][0] == l)
        assert n <= 5
    assert len(pruned.labels) < len(full.labels)
    # kept terms are identical to the unpruned ones; the remainder holds exactly the rest
    idx = {lab: i for i, lab in enumerate(full.labels)}
    for i, lab in enumerate(pruned.labels):
        torch.testing.assert_close(pruned.resid[i], full.resid[idx[lab]])
    dropped = [idx[lab] for lab in full.labels if lab not in set(pruned.labels)]
    torch.testing.assert_close(pruned.remainder, sum(full.term_logits(i) for i in dropped))


def test_path_terms_rotation_invariance():
    m = random_model(seed=11, **dict(SMALL, biases=True))
    r = rotate(m)
    t = tokens()
    a, b = path_terms(m, t, max_order=2), path_terms(r, t, max_order=2)
    assert a.labels == b.labels
    torch.testing.assert_close(a.logits(), b.logits())


def test_for_token_and_errors():
    m = random_model(seed=12, **dict(SMALL, biases=True))
    t = tokens()
    pt = path_terms(m, t, max_order=1)
    ranked = pt.for_token(4, 6, batch=1)
    assert len(ranked) == len(pt)
    assert [abs(v) for _, v in ranked] == sorted((abs(v) for _, v in ranked), reverse=True)
    torch.testing.assert_close(torch.tensor(sum(v for _, v in ranked), dtype=torch.float64), m(t)[1, 4, 6].detach())
    lab, val = ranked[0]
    i = pt.labels_all.index(lab)
    assert val == pytest.approx(float(pt.term_logits(i)[1, 4, 6]))
    assert len(pt.for_token(4, 6, k=3)) == 3
    with pytest.raises(IndexError, match="token=13"):
        pt.for_token(0, 13)
    with pytest.raises(IndexError, match="pos=9"):
        pt.for_token(9, 0)
    with pytest.raises(ValueError, match="max_order"):
        path_terms(m, t, max_order=-1)
    with pytest.raises(ValueError, match="top_k"):
        path_terms(m, t, top_k=0)
    with pytest.raises(ValueError, match="n_ctx"):
        path_terms(m, torch.zeros(1, 11, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        path_terms(m, torch.tensor([[0, 13]]))


def test_path_terms_half_precision():
    m = random_model(seed=13, dtype=torch.float16, **SMALL)
    t = tokens()
    pt = path_terms(m, t, max_order=3)
    assert pt.resid.dtype == torch.float32
    torch.testing.assert_close(pt.total(), m(t).detach().float(), atol=2e-2, rtol=1e-2)


def test_labels_are_unique_and_ordered():
    m = random_model(seed=14, **SMALL)
    pt = path_terms(m, tokens(), max_order=2)
    assert len(set(pt.labels)) == len(pt.labels)
    for p, o in zip(pt.paths, pt.orders):
        layers = [l for l, _ in p[1]]
        assert len(layers) == o and layers == sorted(set(layers))
    assert all(isinstance(x, str) for x in itertools.chain(pt.labels_all))


def test_path_terms_rotation_invariance_ln():
    m = fold_layernorm(random_model(seed=15, **dict(SMALL, normalization="LN", biases=True)))
    r = rotate(m, keep_ones=True)
    t = tokens()
    a, b = path_terms(m, t, max_order=2), path_terms(r, t, max_order=2)
    assert a.labels == b.labels
    torch.testing.assert_close(a.logits(), b.logits())
    torch.testing.assert_close(virtual_weights(m, "embed", "unembed", None).singular_values,
                               virtual_weights(r, "embed", "unembed", None).singular_values)


def test_path_terms_chunking_does_not_change_results(monkeypatch):
    import circwidgets.engine.paths as P

    m = random_model(seed=17, **dict(SMALL, biases=True))
    t = tokens()
    ref_full, ref_pruned = path_terms(m, t, max_order=3), path_terms(m, t, max_order=3, top_k=4)
    monkeypatch.setattr(P, "CHUNK_ELEMENTS", 1)  # one candidate source per chunk
    full, pruned = path_terms(m, t, max_order=3), path_terms(m, t, max_order=3, top_k=4)
    assert full.labels == ref_full.labels and pruned.labels == ref_pruned.labels
    torch.testing.assert_close(full.resid, ref_full.resid)
    torch.testing.assert_close(pruned.resid, ref_pruned.resid)
    torch.testing.assert_close(pruned.remainder, ref_pruned.remainder)
    monkeypatch.setattr(P, "MAX_ELEMENTS", 1000)
    with pytest.raises(ValueError, match="top_k"):
        path_terms(m, t, max_order=3)


# ---------------------------------------------------------------- analysis the views ask the engine for
def test_virtual_heads_from_given_patterns_equal_a_fresh_run():
    from circwidgets.engine.patterns import attention_patterns

    m = random_model(seed=21, **SMALL)
    t = tokens(1, 8)
    data = attention_patterns(m, t)
    _, cache = m.run_with_cache(t)
    from circwidgets.model.hooks import ActivationCache, get_act_name

    # the same patterns wrapped as a cache (what the views used to build): the same virtual head, to the bit
    as_cache = ActivationCache({get_act_name("pattern", lay): data.pattern[lay][None] for lay in range(3)})
    for h1, h2 in (((0, 1), (2, 0)), ((1, 2), (2, 2))):
        given = virtual_heads(m, data, h1, h2)
        assert torch.equal(given.pattern, virtual_heads(m, as_cache, h1, h2).pattern)
        fresh = virtual_heads(m, t, h1, h2)  # its own run: equal up to the order of float operations
        torch.testing.assert_close(given.pattern, fresh.pattern, rtol=1e-12, atol=1e-12)
        assert torch.equal(given.ov.materialize(), fresh.ov.materialize())
        dense = cache["pattern", h2[0]][0, h2[1]] @ cache["pattern", h1[0]][0, h1[1]]
        torch.testing.assert_close(fresh.pattern[0], dense, rtol=1e-12, atol=1e-12)


def test_path_budget_prunes_only_what_does_not_fit():
    from circwidgets.engine.paths import MAX_ELEMENTS, path_budget

    m = random_model(seed=22, **SMALL)
    assert path_budget(m, 7, max_order=2) is None  # tiny: the full enumeration fits
    t = tokens(1, 7)
    full, auto = path_terms(m, t, max_order=3), path_terms(m, t, max_order=3, top_k="auto")
    assert full.labels == auto.labels
    torch.testing.assert_close(auto.logits(), full.logits())
    # a budget of a few terms: order >= 2 terms are pruned to k per layer, the total is still exact
    LH, n_src = 9, 2 + 3
    elements = (n_src * (1 + LH) + 3 * 2) * 7 * 16  # room for the sources, the one-head terms and 2 per layer
    k = path_budget(m, 7, max_order=3, max_elements=elements)
    assert k == 2
    pruned = path_terms(m, t, max_order=3, top_k=k)
    assert max(pruned.orders) == 3 and len(pruned.labels) < len(full.labels)
    torch.testing.assert_close(pruned.total(), full.total())
    with pytest.raises(ValueError, match="top_k"):
        path_terms(m, t, top_k="all")
    assert MAX_ELEMENTS // 2 > 0


def test_induction_tokens_are_the_repeated_tokens_sized_for_the_model():
    from circwidgets.engine.heads import induction_tokens, repeated_tokens

    m = random_model(seed=23, **dict(SMALL, n_ctx=30, bos_token_id=3))
    t = induction_tokens(m, max_seq_len=12)
    assert t.shape == (1, 1 + 2 * 12) and torch.equal(t, repeated_tokens(13, 12, bos=3))
    assert induction_tokens(m).shape == (1, 1 + 2 * 14)  # (30 - 1) // 2 = 14 < 64
    no_bos = random_model(seed=23, **dict(SMALL, n_ctx=30))
    assert torch.equal(induction_tokens(no_bos, bos=None, max_seq_len=12), repeated_tokens(13, 12))
    with pytest.raises(ValueError, match="seq_len"):
        induction_tokens(m, seq_len=15)
