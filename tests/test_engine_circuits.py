"""FactoredMatrix and circuits against dense float64 brute force, plus invariances."""

from __future__ import annotations

import pytest
import torch

from circwidgets.engine import circuits as C
from circwidgets.engine.factored import FactoredMatrix, chain_matmul
from circwidgets.engine.prep import prepared
from circwidgets.model import fold_layernorm
from circwidgets.model.testing import random_model
from circwidgets.model.testing import rotated as rotate

SMALL = dict(n_layers=2, d_model=16, n_heads=3, d_head=4, d_vocab=23, n_ctx=10)


def dense_positivity(M: torch.Tensor) -> torch.Tensor:
    lam = torch.linalg.eigvals(M)
    return lam.real.sum(-1) / lam.abs().sum(-1)


def sorted_nonzero_eigs(M: torch.Tensor, k: int) -> torch.Tensor:
    lam = torch.linalg.eigvals(M)
    lam = lam[lam.abs().argsort(descending=True)][:k]
    return lam


def same_multiset(a: torch.Tensor, b: torch.Tensor, atol=1e-8) -> bool:
    """Complex eigenvalue lists equal up to order (greedy nearest matching)."""
    b = list(b)
    for x in a:
        d = torch.stack([abs(x - y) for y in b])
        i = int(d.argmin())
        if d[i] > atol * max(1.0, float(abs(x))):
            return False
        b.pop(i)
    return True


# ---------------------------------------------------------------- FactoredMatrix
@pytest.fixture
def fm():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(2, 3, 30, 5, generator=g, dtype=torch.float64)
    B = torch.randn(5, 30, generator=g, dtype=torch.float64)  # shared over the batch
    return FactoredMatrix(A, B), A @ B


def test_factored_basic_against_dense(fm):
    f, M = fm
    assert f.shape == M.shape and f.mdim == 5
    torch.testing.assert_close(f.materialize(), M)
    torch.testing.assert_close(f.norm(), torch.linalg.matrix_norm(M))
    torch.testing.assert_close(f.trace(), M.diagonal(dim1=-2, dim2=-1).sum(-1))
    torch.testing.assert_close(f.rows(4, 9), M[..., 4:9, :])
    torch.testing.assert_close(f.cols(7, 8), M[..., :, 7:8])
    torch.testing.assert_close(f.T.materialize(), M.mT)
    torch.testing.assert_close(f[1, 2].materialize(), M[1, 2])
    torch.testing.assert_close(f[:, 1].materialize(), M[:, 1])
    X = torch.randn(30, 7, dtype=torch.float64)
    torch.testing.assert_close((f @ X).materialize(), M @ X)
    torch.testing.assert_close((X.T @ f).materialize(), X.T @ M)
    torch.testing.assert_close((f @ f).materialize(), M @ M)
    v = torch.randn(30, dtype=torch.float64)
    torch.testing.assert_close(f @ v, M @ v)


def test_factored_svd_and_eigenvalues(fm):
    f, M = fm
    U, S, Vh = f.svd()
    torch.testing.assert_close(U @ torch.diag_embed(S) @ Vh, M)
    torch.testing.assert_close(S, torch.linalg.svdvals(M)[..., :5])
    torch.testing.assert_close(f.singular_values(), S)
    torch.testing.assert_close(U.mT @ U, torch.eye(5, dtype=torch.float64).expand(2, 3, 5, 5))
    lam = f.eigenvalues()
    assert lam.shape == (2, 3, 5)
    for i in range(2):
        for j in range(3):
            assert same_multiset(lam[i, j], sorted_nonzero_eigs(M[i, j], 5))


def test_factored_chain_of_four_and_order():
    g = torch.Generator().manual_seed(1)
    fs = [torch.randn(40, 8, generator=g, dtype=torch.float64), torch.randn(4, 8, 3, generator=g, dtype=torch.float64),
          torch.randn(4, 3, 8, generator=g, dtype=torch.float64), torch.randn(8, 40, generator=g, dtype=torch.float64)]
    f = FactoredMatrix(*fs)
    M = fs[0] @ fs[1] @ fs[2] @ fs[3]
    assert f.mdim == 3 and f.A.shape == (4, 40, 3) and f.B.shape == (4, 3, 40)
    torch.testing.assert_close(chain_matmul(fs), M)
    torch.testing.assert_close(f.norm(), torch.linalg.matrix_norm(M))
    torch.testing.assert_close(f.svd()[1], torch.linalg.svdvals(M)[:, :3])
    for b in range(4):
        assert same_multiset(f.eigenvalues()[b], sorted_nonzero_eigs(M[b], 3))


def test_factored_half_upcast_and_errors():
    g = torch.Generator().manual_seed(2)
    A, B = torch.randn(20, 4, generator=g), torch.randn(4, 20, generator=g)
    f = FactoredMatrix(A.half(), B.half())
    assert f.eigenvalues().dtype == torch.complex64
    assert f.norm().dtype == torch.float32
    dense = A.half().float() @ B.half().float()
    torch.testing.assert_close(f.norm(), torch.linalg.matrix_norm(dense), rtol=1e-4, atol=0)
    with pytest.raises(ValueError, match="inner dimensions"):
        FactoredMatrix(A, A)
    with pytest.raises(ValueError, match="square"):
        FactoredMatrix(A, B[:, :5]).eigenvalues()
    with pytest.raises(IndexError, match="rows"):
        f.rows(0, 21)
    with pytest.raises(IndexError):
        FactoredMatrix(A, B)[0]


# ---------------------------------------------------------------- circuits
@pytest.mark.parametrize("kwargs", [dict(), dict(positional="shortformer"), dict(normalization="LN", attn_only=False,
                                                                                  d_mlp=32, biases=True)])
def test_circuits_against_dense(kwargs):
    m = random_model(seed=3, **{**SMALL, **kwargs})
    pm = fold_layernorm(m) if m.cfg.normalization else m
    WE, WP, WU = pm.W_E, pm.W_pos, pm.W_U
    QK = pm.W_Q @ pm.W_K.mT
    OV = pm.W_V @ pm.W_O
    full_qk, pos_qk, full_ov = WE @ QK @ WE.T, WP @ QK @ WP.T, WE @ OV @ WU
    torch.testing.assert_close(C.W_QK(m).materialize(), QK)
    torch.testing.assert_close(C.W_OV(m).materialize(), OV)
    torch.testing.assert_close(C.full_qk(m).materialize(), full_qk)
    torch.testing.assert_close(C.positional_qk(m).materialize(), pos_qk)
    torch.testing.assert_close(C.full_ov(m).materialize(), full_ov)
    for circuit, full, dense in [("ov", True, full_ov), ("ov", False, OV), ("qk", True, full_qk), ("qk", False, QK),
                                 ("qk_pos", True, pos_qk)]:
        torch.testing.assert_close(C.eigen_positivity(m, circuit, full), dense_positivity(dense))
        lam = C.eigenvalues(m, 1, 2, circuit, full)
        assert lam.shape == (4,)
        assert same_multiset(lam, sorted_nonzero_eigs(dense[1, 2], 4))
    tr = OV.diagonal(dim1=-2, dim2=-1).sum(-1) / torch.linalg.matrix_norm(OV)
    torch.testing.assert_close(C.trace_copying_score(m), tr)


def test_ln_fold_is_cached_and_invalidated():
    m = random_model(seed=4, normalization="LN", **SMALL)
    p1 = prepared(m)
    assert prepared(m) is p1 and p1.cfg.normalization == "LNPre"
    before = C.eigen_positivity(m)
    with torch.no_grad():
        m.W_O.mul_(-1.0)  # in place: the fold must be redone
    assert prepared(m) is not p1
    torch.testing.assert_close(C.eigen_positivity(m), -before)


def test_rotation_invariance():
    m = random_model(seed=5, **SMALL)
    r = rotate(m)
    torch.testing.assert_close(m(torch.arange(8)), r(torch.arange(8)))  # the rotation is a symmetry
    for circuit in ("ov", "qk", "qk_pos"):
        torch.testing.assert_close(C.eigen_positivity(m, circuit), C.eigen_positivity(r, circuit))
        assert same_multiset(C.eigenvalues(m, 0, 1, circuit), C.eigenvalues(r, 0, 1, circuit))
    torch.testing.assert_close(C.trace_copying_score(m), C.trace_copying_score(r))


def test_planted_copying_head():
    V, D = 12, 16
    m = random_model(seed=6, n_layers=1, d_model=D, n_heads=2, d_head=V, d_vocab=V, n_ctx=8)
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(D, V, generator=g, dtype=torch.float64))  # orthonormal columns
    with torch.no_grad():
        m.W_E.copy_(Q.T + 0.02 * torch.randn(V, D, generator=g, dtype=torch.float64))
        m.W_U.copy_(Q + 0.02 * torch.randn(D, V, generator=g, dtype=torch.float64))
        m.W_V[0, 0].copy_(Q)
        m.W_O[0, 0].copy_(Q.T)
        m.W_V[0, 1].copy_(Q)
        m.W_O[0, 1].copy_(-Q.T)  # anti-copying
        m.W_Q[0, 0].copy_(Q)
        m.W_K[0, 0].copy_(Q)
    pos = C.eigen_positivity(m, "ov")
    assert pos[0, 0] > 0.95 and pos[0, 1] < -0.95
    assert C.eigen_positivity(m, "qk")[0, 0] > 0.95


def test_half_precision_weights():
    m = random_model(seed=7, **SMALL)
    h = random_model(seed=7, dtype=torch.float16, **SMALL)
    p = C.eigen_positivity(h)
    assert p.dtype == torch.float32
    torch.testing.assert_close(p.double(), C.eigen_positivity(m), atol=1e-2, rtol=0)
    assert C.eigenvalues(h, 0, 0).dtype == torch.complex64


def test_circuit_errors():
    m = random_model(seed=8, **SMALL)
    with pytest.raises(ValueError, match="circuit='xx'"):
        C.eigen_positivity(m, "xx")
    with pytest.raises(IndexError, match="layer=2"):
        C.eigenvalues(m, 2, 0)
    with pytest.raises(IndexError, match="head=3"):
        C.eigenvalues(m, 0, 3)
    with pytest.raises(ValueError, match="full=False"):
        C.eigen_positivity(m, "qk_pos", full=False)
    nopos = random_model(seed=8, positional="none", **SMALL)
    with pytest.raises(ValueError, match="positional"):
        C.eigen_positivity(nopos, "qk_pos")
    with torch.no_grad():
        m.W_V[1, 1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="W_V"):
        C.eigen_positivity(m)


def test_transformer_lens_eigenvalues_agree():
    tl = pytest.importorskip("transformer_lens")
    m = random_model(seed=9, **SMALL)
    for l, h in [(0, 0), (1, 2)]:
        f = tl.FactoredMatrix(m.W_E @ m.W_V[l, h], m.W_O[l, h] @ m.W_U)
        assert same_multiset(C.eigenvalues(m, l, h, "ov").detach(), f.eigenvalues.detach(), atol=1e-6)


def test_cache_does_not_keep_models_alive():
    import gc
    import weakref

    for kw in (dict(), dict(normalization="LN")):
        m = random_model(seed=10, **{**SMALL, **kw})
        C.eigen_positivity(m)
        ref = weakref.ref(m)
        del m
        gc.collect()
        assert ref() is None


@pytest.mark.parametrize("kwargs", [dict(), dict(normalization="LN", attn_only=False, d_mlp=32, biases=True),
                                    dict(normalization="LNPre"), dict(normalization="LN", positional="none")])
def test_weights_equal_fold_layernorm(kwargs):
    from circwidgets.engine.prep import weights

    m = random_model(seed=11, **{**SMALL, **kwargs})
    pm = fold_layernorm(m)
    w = weights(m)
    names = {n for n, _ in pm.named_parameters() if n.startswith("W_")}
    assert set(w) == names
    for n in names:
        torch.testing.assert_close(w[n], getattr(pm, n).detach(), rtol=1e-12, atol=1e-12)


def test_ln_shortformer_is_refused():
    m = random_model(seed=12, normalization="LN", positional="shortformer", **SMALL)
    with pytest.raises(ValueError, match="shortformer"):
        C.eigen_positivity(m)


def test_zero_head_positivity_is_nan():
    m = random_model(seed=13, **SMALL)
    with torch.no_grad():
        m.W_O[1, 0].zero_()
    p = C.eigen_positivity(m, "ov")
    assert p[1, 0].isnan() and not p[0, 0].isnan() and not p[1, 1].isnan()
    assert C.eigen_positivity(m, "qk")[1, 0].isfinite()  # the QK side of that head is untouched


def test_rotation_invariance_of_folded_ln_model():
    """LN model -> fold (LNPre) -> rotate keeping the ones direction: same function, same circuits."""
    m = fold_layernorm(random_model(seed=14, normalization="LN", attn_only=False, d_mlp=32, biases=True, **SMALL))
    r = rotate(m, keep_ones=True)
    t = torch.arange(8)
    torch.testing.assert_close(m(t), r(t))
    assert not torch.allclose(m.W_E, r.W_E)
    for circuit in ("ov", "qk", "qk_pos"):
        torch.testing.assert_close(C.eigen_positivity(m, circuit), C.eigen_positivity(r, circuit))


def test_a_final_layernorm_alone_circuits_against_dense_and_rotation():
    """Attention-only with a final LayerNorm and no pre-norms (shortformer): the full OV circuit is
    `W_E W_OV C diag(w) W_U` (C the final norm's centring; the heads read the raw stream, so W_E and W_O are
    not centred), dense in float64; the circuits are unchanged by a rotation of the residual stream that keeps
    the all-ones direction (the final norm's centring commutes with it)."""
    m = random_model(seed=16, normalization="LN", pre_norm=False, positional="shortformer", **SMALL)
    D = m.cfg.d_model
    u = (torch.eye(D, dtype=torch.float64) - 1.0 / D) @ torch.diag(m.ln_final_w.double()) @ m.W_U.double()
    for layer, head in ((0, 1), (1, 2)):
        dense = m.W_E.double() @ m.W_V[layer, head].double() @ m.W_O[layer, head].double() @ u
        lam = C.eigenvalues(m, layer, head, "ov", True)
        ref = sorted_nonzero_eigs(dense, lam.shape[0])
        torch.testing.assert_close(lam.abs().double(), ref.abs().sort(descending=True).values, rtol=1e-6, atol=1e-9)
    f = fold_layernorm(m)
    r = rotate(f, keep_ones=True)
    t = torch.arange(8)
    torch.testing.assert_close(f(t), r(t))
    for circuit in ("ov", "qk", "qk_pos"):
        torch.testing.assert_close(C.eigen_positivity(m, circuit), C.eigen_positivity(r, circuit))


@pytest.mark.parametrize("circuit,full", [("ov", True), ("ov", False), ("qk", True), ("qk", False), ("qk_pos", True)])
def test_eigenvalues_come_sorted_by_decreasing_magnitude(circuit, full):
    """The docstring's order, not only the multiset: |λ| is non-increasing and equals the dense float64
    eigenvalues' magnitudes sorted in decreasing order."""
    m = random_model(seed=5, **SMALL)
    pm = m
    QK, OV = pm.W_Q @ pm.W_K.mT, pm.W_V @ pm.W_O
    dense = {("ov", True): pm.W_E @ OV @ pm.W_U, ("ov", False): OV, ("qk", True): pm.W_E @ QK @ pm.W_E.T,
             ("qk", False): QK, ("qk_pos", True): pm.W_pos @ QK @ pm.W_pos.T}[(circuit, full)]
    for layer, head in ((0, 0), (1, 2), (0, 1)):
        lam = C.eigenvalues(m, layer, head, circuit, full)
        mags = lam.abs().double()
        assert (mags[:-1] >= mags[1:] - 1e-9).all(), mags
        ref = sorted_nonzero_eigs(dense[layer, head].double(), lam.shape[0]).abs().sort(descending=True).values
        torch.testing.assert_close(mags, ref.to(mags.dtype), rtol=1e-6, atol=1e-9)
        assert mags[0] > 1.01 * mags[-1]  # distinct magnitudes: an ascending order would fail above
