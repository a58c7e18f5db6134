"""Composition scores against dense float64 brute force, TransformerLens, and invariances."""

from __future__ import annotations

import math

import pytest
import torch

from circwidgets.engine import composition as CO
from circwidgets.model import fold_layernorm
from circwidgets.model.testing import random_model
from circwidgets.model.testing import rotated as rotate

SMALL = dict(n_layers=3, d_model=16, n_heads=3, d_head=4, d_vocab=23, n_ctx=10)


def dense_scores(pm, kind: str) -> torch.Tensor:
    """Brute force: explicit d_model x d_model products, in the order docs/ARCHITECTURE.md §3 states."""
    return dense_pair_scores(pm.W_V @ pm.W_O, pm.W_Q @ pm.W_K.mT, kind)


def dense_pair_scores(OV: torch.Tensor, QK: torch.Tensor, kind: str) -> torch.Tensor:
    """Every pair's ‖W_OV^{h1} · right^{h2}‖_F / (‖W_OV^{h1}‖_F ‖right^{h2}‖_F), one d_model x d_model
    product at a time; `OV`, `QK`: [layer, head, d_model, d_model]."""
    right = {"q": QK, "k": QK.mT, "v": OV}[kind]
    L, H = OV.shape[:2]
    out = torch.full((L, H, L, H), math.nan, dtype=torch.float64)
    for l1 in range(L):
        for h1 in range(H):
            for l2 in range(l1 + 1, L):
                for h2 in range(H):
                    prod = OV[l1, h1] @ right[l2, h2]  # earlier head's OV on the LEFT (row convention)
                    out[l1, h1, l2, h2] = prod.norm() / (OV[l1, h1].norm() * right[l2, h2].norm())
    return out


@pytest.mark.parametrize("kind", ["q", "k", "v"])
@pytest.mark.parametrize("kwargs", [dict(), dict(normalization="LN", attn_only=False, d_mlp=32, biases=True)])
def test_composition_against_dense(kind, kwargs):
    m = random_model(seed=1, **{**SMALL, **kwargs})
    pm = fold_layernorm(m) if m.cfg.normalization else m
    got = CO.composition_scores(m, kind)
    want = dense_scores(pm, kind)
    assert torch.equal(got.isnan(), want.isnan())
    torch.testing.assert_close(got.nan_to_num(), want.nan_to_num())


def test_product_order_matters():
    """The reversed product (later head on the left) gives different numbers: the test can fail."""
    m = random_model(seed=2, **SMALL)
    OV, QK = m.W_V @ m.W_O, m.W_Q @ m.W_K.mT
    wrong = (QK[1, 0] @ OV[0, 0]).norm() / (OV[0, 0].norm() * QK[1, 0].norm())
    right = CO.composition_scores(m, "q")[0, 0, 1, 0]
    assert abs(wrong - right) > 1e-3
    # Q and K composition differ as well (transpose of the later head's QK)
    assert not torch.allclose(CO.composition_scores(m, "q").nan_to_num(), CO.composition_scores(m, "k").nan_to_num())


def test_one_sided_variant():
    m = random_model(seed=3, **SMALL)
    OV = m.W_V @ m.W_O
    for kind, W in (("q", m.W_Q), ("k", m.W_K), ("v", m.W_V)):
        got = CO.composition_scores_one_sided(m, kind)
        torch.testing.assert_close(got[0, 2, 2, 1], (OV[0, 2] @ W[2, 1]).norm())
        assert got[1, 0, 0, 0].isnan() and got[1, 0, 1, 2].isnan()


def dense_random_scores(D: int, E: int, n: int, seed: int) -> torch.Tensor:
    """Monte Carlo of the baseline's quantity written densely in float64: ||L R|| / (||L|| ||R||) for
    L = X1 Y1, R = X2 Y2 with i.i.d. Gaussian factors [D, E] / [E, D]."""
    g = torch.Generator().manual_seed(seed)
    f = [torch.randn(n, *shape, generator=g, dtype=torch.float64) for shape in ((D, E), (E, D), (D, E), (E, D))]
    L, R = f[0] @ f[1], f[2] @ f[3]
    return torch.linalg.matrix_norm(L @ R) / (torch.linalg.matrix_norm(L) * torch.linalg.matrix_norm(R))


def test_baseline():
    m = random_model(seed=4, **SMALL)
    n = 4000
    mean, std = CO.composition_baseline(m, "q", n_samples=n)
    D, E = 16, 4
    dense = dense_random_scores(D, E, n, seed=5)
    se = float(dense.std()) / n ** 0.5
    assert abs(mean - float(dense.mean())) < 4 * 2 ** 0.5 * se  # two independent means: ~0.005 here
    # at d_model 16 the mean hardly moves with the head size (0.242 / 0.243 / 0.246 for d_head 3 / 4 / 5), the
    # spread does (0.065 / 0.053 / 0.045): a baseline drawn with the wrong head size fails on the spread
    assert abs(std / float(dense.std()) - 1) < 0.06
    for wrong in (E - 1, E + 1):
        assert abs(float(dense_random_scores(D, wrong, n, seed=6).std()) / float(dense.std()) - 1) > 0.1
    assert CO.composition_baseline(m, "k", n_samples=n) == (mean, std)  # cached, shared by kinds
    raw = CO.composition_scores(m, "k")
    default_mean = CO.composition_baseline(m)[0]
    torch.testing.assert_close(CO.composition_scores(m, "k", baseline=True), raw - default_mean, equal_nan=True)


def test_rotation_invariance():
    m = random_model(seed=6, **SMALL)
    r = rotate(m)
    for kind in "qkv":
        torch.testing.assert_close(CO.composition_scores(m, kind), CO.composition_scores(r, kind), equal_nan=True)
        torch.testing.assert_close(CO.composition_scores_one_sided(m, kind), CO.composition_scores_one_sided(r, kind),
                                   equal_nan=True)


def test_rotation_invariance_folded_ln():
    m = fold_layernorm(random_model(seed=16, normalization="LN", **SMALL))
    r = rotate(m, keep_ones=True)
    for kind in "qkv":
        torch.testing.assert_close(CO.composition_scores(m, kind), CO.composition_scores(r, kind), equal_nan=True)


def test_half_precision_and_errors():
    m = random_model(seed=7, **SMALL)
    h = random_model(seed=7, dtype=torch.float16, **SMALL)
    got = CO.composition_scores(h, "v")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), CO.composition_scores(m, "v"), atol=5e-3, rtol=0, equal_nan=True)
    with pytest.raises(ValueError, match="kind='x'"):
        CO.composition_scores(m, "x")
    with torch.no_grad():
        m.W_O[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="W_O"):
        CO.composition_scores(m, "q")


def _tl_composition_scores():
    try:
        from transformer_lens.utils import composition_scores  # 3.x
    except ImportError:
        try:
            from transformer_lens.utilities.matrix import composition_scores  # 4.x
        except ImportError:
            return None
    return composition_scores


@pytest.mark.parametrize("kind", ["q", "k", "v"])
def test_transformer_lens_agrees(kind):
    tl = pytest.importorskip("transformer_lens")
    tl_scores = _tl_composition_scores()
    if tl_scores is None:
        pytest.skip("transformer_lens without composition_scores")
    m = random_model(seed=8, **SMALL)
    # exactly what TransformerLens' all_composition_scores builds
    left = tl.FactoredMatrix(m.W_V.detach(), m.W_O.detach())
    qk = tl.FactoredMatrix(m.W_Q.detach(), m.W_K.detach().mT)
    right = {"q": qk, "k": qk.T, "v": left}[kind]
    want = tl_scores(left[:, :, None, None], right[None, None], broadcast_dims=False)
    got = CO.composition_scores(m, kind)
    mask = ~got.isnan()
    torch.testing.assert_close(got[mask], want[mask])


def test_transformer_lens_hooked_all_composition_scores():
    tl = pytest.importorskip("transformer_lens")
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except (ImportError, AttributeError, ModuleNotFoundError):
        pytest.skip("this transformer_lens has no HookedTransformer (4.x)")
    cfg = HookedTransformerConfig(n_layers=3, d_model=16, n_heads=3, d_head=4, d_vocab=23, n_ctx=10,
                                  attn_only=True, act_fn="gelu_new", normalization_type=None, dtype=torch.float64)
    tlm = HookedTransformer(cfg)
    m = random_model(seed=9, **SMALL)
    with torch.no_grad():
        for l in range(3):
            for n in ("W_Q", "W_K", "W_V", "W_O"):
                getattr(tlm.blocks[l].attn, n).copy_(getattr(m, n)[l])
    for kind in "qkv":
        want = tlm.all_composition_scores(kind.upper())
        want = getattr(want, "scores", want)
        got = CO.composition_scores(m, kind)
        mask = ~got.isnan()
        torch.testing.assert_close(got[mask], want[mask].double())
    del tl


def _tl_gqa_model(seed: int = 0):
    """A TransformerLens grouped-query model (3 layers, 6 query heads sharing 2 K/V heads, rotary,
    float64) with every parameter random, and the version it came from.

    TransformerLens 3.x: a `HookedTransformer` with `n_key_value_heads` (its `all_composition_scores`
    expands the shared K/V heads per query head); 4.x removed `HookedTransformer`, so there it is the
    native `TransformerBridge` (`boot_native`), whose `all_composition_scores` does the same. `RMSPre`
    (weights already folded): TransformerLens scores the raw `W_Q`/`W_K`/`W_V`/`W_O` and ignores a norm's
    weight, while we score what the model computes, with the weight folded in; with `RMSPre` both are
    the same matrices. TransformerLens' `W_Q W_Kᵀ` ignores rotary positions: our scores at offset 0."""
    from importlib.metadata import version

    major = int(version("transformer-lens").split(".")[0])
    kw = dict(n_layers=3, d_model=24, n_heads=6, n_key_value_heads=2, d_head=4, d_vocab=23, n_ctx=16,
              attn_only=True, normalization_type="RMSPre", positional_embedding_type="rotary", rotary_dim=4,
              act_fn="silu", seed=seed)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if major < 4:
            from transformer_lens import HookedTransformer, HookedTransformerConfig

            model = HookedTransformer(HookedTransformerConfig(dtype=torch.float64, **kw))
        else:
            import transformer_lens.model_bridge.sources  # noqa: F401  (attaches boot_native)
            from transformer_lens.config import TransformerBridgeConfig
            from transformer_lens.model_bridge import TransformerBridge

            model = TransformerBridge.boot_native(TransformerBridgeConfig(**kw), dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return model.eval(), major


@pytest.mark.parametrize("kind", ["q", "k", "v"])
def test_tl_gqa_all_composition_scores(kind):
    """TransformerLens agreement on a grouped-query model (both major versions: this file's `tl_` tests
    run again against the other one in `test_other_transformer_lens_version`)."""
    pytest.importorskip("transformer_lens")
    import circwidgets as cw

    tlm, major = _tl_gqa_model()
    ours = cw.from_transformer_lens(tlm)
    assert ours.cfg.n_kv_heads == 2 and ours.cfg.positional == "rotary"
    want = tlm.all_composition_scores(kind.upper())
    want = getattr(want, "scores", want).detach()  # 4.x: a CompositionScores
    got = CO.composition_scores(ours, kind, offset=0 if kind != "v" else None)
    L = ours.cfg.n_layers
    later = (torch.arange(L)[:, None] < torch.arange(L)[None, :])[:, None, :, None].expand_as(got)
    assert not got[later].isnan().any() and got[~later].isnan().all()
    print(f"TransformerLens {major}.x, GQA {kind}: max |Δ| {float((got[later] - want[later]).abs().max()):.1e}")
    torch.testing.assert_close(got[later], want[later], rtol=1e-12, atol=1e-12)
    assert float(want[later].std()) > 0.01  # scores that differ between pairs: the comparison can fail


def test_other_transformer_lens_version(run_tl_tests_on_other_version):
    """This file's tl_ tests again against the TransformerLens in .ci/tl3 (the other major version)."""
    from pathlib import Path

    run_tl_tests_on_other_version(str(Path(__file__)))


def dense_rotary_scores(m, kind: str, offset) -> torch.Tensor:
    """Brute force on the folded float64 weights: `W_QK(Δ) = W_Q M W_Kᵀ` with `M` the offset matrix
    (a rotation; the mean of rotations for a sequence of offsets), K/V heads copied out per query head."""
    from circwidgets.engine.circuits import offset_matrices
    from circwidgets.engine.prep import weights

    w = weights(m)
    M = offset_matrices(m, offset, torch.float64) if kind != "v" else None
    OV = w["W_V"] @ w["W_O"]
    QK = w["W_Q"] @ (M if M is not None else torch.eye(m.cfg.d_head, dtype=torch.float64)) @ w["W_K"].mT
    return dense_pair_scores(OV, QK, kind)


@pytest.mark.parametrize("offset", [2, (0, 1, 5)])
@pytest.mark.parametrize("n_kv", [None, 2, 1])
def test_rotary_gqa_scores_and_one_head_against_dense(offset, n_kv):
    """All pairs and `composition_for_head` (the pairs of one head) equal the dense float64 brute force on
    rotary models (full / grouped / multi-query K/V; one offset, and a mean over offsets, whose matrix is
    not a rotation), RMSNorm weights folded."""
    m = random_model(seed=21, n_layers=3, d_model=16, n_heads=4, n_kv_heads=n_kv, d_head=4, d_vocab=23, n_ctx=10,
                     positional="rotary", normalization="RMS")
    for kind in "qkv":
        off = offset if kind != "v" else None
        want = dense_rotary_scores(m, kind, offset)
        got = CO.composition_scores(m, kind, offset=off)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, equal_nan=True)
        for layer, head in [(0, 1), (1, 3), (2, 0)]:
            one = CO.composition_for_head(m, layer, head, kind, offset=off)
            torch.testing.assert_close(one.into, want[:, :, layer, head], rtol=1e-10, atol=1e-12, equal_nan=True)
            torch.testing.assert_close(one.out_of, want[layer, head], rtol=1e-10, atol=1e-12, equal_nan=True)
        minus = CO.composition_for_head(m, 1, 2, kind, baseline=True, offset=off)
        mean, _ = CO.composition_baseline(m, kind)
        torch.testing.assert_close(minus.into, want[:, :, 1, 2] - mean, equal_nan=True)


def test_one_head_float32_and_errors():
    """float32 models: one head's scores equal the all-pairs scores' slices to float32 rounding; bad
    heads and kinds are refused; an overflowing head is named."""
    m = random_model(seed=22, n_layers=4, d_model=32, n_heads=4, n_kv_heads=2, d_head=8, d_vocab=23, n_ctx=10,
                     dtype=torch.float32)
    for kind in "qkv":
        full = CO.composition_scores(m, kind)
        one = CO.composition_for_head(m, 2, 1, kind)
        assert one.into.dtype == torch.float32
        torch.testing.assert_close(one.into, full[:, :, 2, 1], equal_nan=True)
        torch.testing.assert_close(one.out_of, full[2, 1], equal_nan=True)
    with pytest.raises(IndexError):
        CO.composition_for_head(m, 4, 0, "k")
    with pytest.raises(ValueError, match="kind='x'"):
        CO.composition_for_head(m, 1, 0, "x")


def test_sqrt_gram_factor_for_full_rank_and_singular_heads():
    """`_sqrt_gram`: FᵀF = xᵀx (float64 dense) for full-rank heads (Cholesky) and rank-deficient or zero
    heads (the eigh fallback), so every norm ||F y|| equals ||x y||."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 12, 4, generator=g, dtype=torch.float64)
    x[1] = 0  # a zero head
    x[2, :, 3] = x[2, :, 0]  # rank 3
    F = CO._sqrt_gram(x)
    torch.testing.assert_close(F.mT @ F, x.mT @ x, rtol=1e-12, atol=1e-12)
    y = torch.randn(5, 4, 7, generator=g, dtype=torch.float64)
    torch.testing.assert_close(torch.linalg.matrix_norm(F @ y), torch.linalg.matrix_norm(x @ y))
    f32 = CO._sqrt_gram(x.float())
    assert f32.dtype == torch.float32
    torch.testing.assert_close((f32.mT @ f32).double(), x.mT @ x, rtol=1e-5, atol=1e-5)


def test_blocked_gram_equals_the_full_product():
    """`circuits._gram_of` (upper blocks only, mirrored) equals `Wᵀ W` for widths above and below its
    blocking threshold and a width that does not divide into the blocks."""
    from circwidgets.engine.circuits import _gram_of

    g = torch.Generator().manual_seed(4)
    for D in (16, 515, 1024):
        W = torch.randn(300, D, generator=g, dtype=torch.float64)
        G = _gram_of(W)
        torch.testing.assert_close(G, W.T @ W, rtol=1e-12, atol=1e-10)
        assert D < 512 or torch.equal(G, G.T)  # the blocked path mirrors: exactly symmetric
