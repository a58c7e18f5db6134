"""The induction mechanism in the weights (engine.induction) against brute-force dense float64
computations, and detection that a fixed-offset positional head cannot fool."""

import pytest
import torch

from circwidgets import engine
from circwidgets.model import ModelConfig, Transformer, rotary
from circwidgets.model.testing import random_model, rotated


def _model(seed: int = 0, **kw):
    cfg = dict(n_layers=2, d_model=16, n_heads=3, d_head=4, d_vocab=13, n_ctx=10, attn_only=True,
               normalization=None, positional="shortformer", biases=False)
    return random_model(seed=seed, **{**cfg, **kw}).requires_grad_(False)


@pytest.mark.parametrize("h1,h2", [(0, 1), (2, 0)])
def test_k_composition_term_is_how_h1_output_enters_h2_keys(h1, h2):
    """Run the model; take h1's actual output at every key position (its pattern mixes the embeddings
    through W_OV: shortformer values carry no position), push it through h2's W_K, score it against
    h2's query from the query token's embedding: that is the engine's matrix read at
    [query token, token h1 attended to], weighted by h1's pattern."""
    m = _model(seed=3)
    toks = torch.randint(0, 13, (1, 10), generator=torch.Generator().manual_seed(1))
    _, cache = m.run_with_cache(toks)
    out_h1 = cache["result", 0][0, :, h1]                      # [pos, d_model]: what h1 wrote
    q = m.W_E[toks[0]] @ m.W_Q[1, h2]                          # [pos, d_head]: the query's token part
    brute = q @ (out_h1 @ m.W_K[1, h2]).T                      # [query, key]
    M = engine.k_composition_qk(m, (0, h1), (1, h2)).materialize().double()  # [d_vocab, d_vocab]
    pat = cache["pattern", 0][0, h1]                           # [key pos j, pos m h1 attends to]
    via_engine = M[toks[0]][:, toks[0]] @ pat.T                # Σ_m M[tok_i, tok_m] A1[j, m]
    torch.testing.assert_close(via_engine, brute, rtol=1e-9, atol=1e-9)
    # and the transpose (the other orientation) is not it
    assert not torch.allclose(M.T[toks[0]][:, toks[0]] @ pat.T, brute, atol=1e-6)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_rotary_k_composition_term_is_how_h1_output_enters_h2_keys_at_each_offset(layout):
    """Rotary, no normalisation: h1's output at key position j goes through h2's W_K and is rotated by j, the
    query token's part by i; the score term equals the engine's matrix at offset i − j, read at [query token,
    token h1 attended to] and weighted by h1's pattern, for every (i, j). Averaging over offsets averages it."""
    m = _model(seed=3, positional="rotary", rotary_base=100.0, rotary_layout=layout)
    P = 10
    toks = torch.randint(0, 13, (1, P), generator=torch.Generator().manual_seed(1))
    _, cache = m.run_with_cache(toks)
    h1, h2 = 1, 2
    out_h1 = cache["result", 0][0, :, h1]                                   # [pos, d_model]
    pos = torch.arange(P)
    q = rotary.apply_rotary(m.W_E[toks[0]] @ m.W_Q[1, h2], pos, m.cfg)      # [pos, d_head]: query token part
    k = rotary.apply_rotary(out_h1 @ m.W_K[1, h2], pos, m.cfg)              # [pos, d_head]: h1's part of the keys
    brute = q @ k.T                                                          # [query i, key j]
    pat = cache["pattern", 0][0, h1]                                         # [key pos j, pos h1 attends to]
    for i in range(P):
        for j in range(i + 1):
            M = engine.k_composition_qk(m, (0, h1), (1, h2), offset=i - j).materialize().double()
            assert float(M[toks[0, i]][toks[0]] @ pat[j]) == pytest.approx(float(brute[i, j]), abs=1e-9)
    mean = engine.k_composition_qk(m, (0, h1), (1, h2), offset=[2, 5]).materialize()
    both = [engine.k_composition_qk(m, (0, h1), (1, h2), offset=d).materialize() for d in (2, 5)]
    torch.testing.assert_close(mean, (both[0] + both[1]) / 2, rtol=1e-12, atol=1e-12)
    # a random orthogonal change of the residual basis leaves the term unchanged
    from circwidgets.model.testing import rotated

    torch.testing.assert_close(engine.k_composition_qk(rotated(m), (0, h1), (1, h2), offset=[2, 5]).materialize(),
                               mean, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="offset"):
        engine.k_composition_qk(m, (0, h1), (1, h2))
    with pytest.raises(ValueError, match="only for rotary"):
        engine.k_composition_qk(_model(), (0, 0), (1, 0), offset=1)
    # n_ctx 10 holds one repeat length, 4 (BOS + 4 + 4): its induction offset is 3
    assert engine.induction_offsets(m) == [3] and engine.induction_offsets(m, [4, 6]) == [3, 5]
    assert engine.induction_offsets(_model()) is None


def test_k_composition_rejects_the_wrong_layer_order():
    m = _model()
    with pytest.raises(ValueError, match="earlier layer"):
        engine.k_composition_qk(m, (1, 0), (1, 1))
    with pytest.raises(IndexError):
        engine.k_composition_qk(m, (0, 5), (1, 0))


def _dense_stats(M: torch.Tensor, idx: torch.Tensor | None = None) -> tuple[float, float]:
    lam = torch.linalg.eigvals(M)
    pos = float(lam.real.sum() / lam.abs().sum())
    sub = M if idx is None else M[idx][:, idx]
    top1 = float((sub.argmax(-1) == torch.arange(len(sub))).double().mean())
    return pos, top1


def test_diagonal_stats_and_ov_copying_match_dense_float64():
    m = _model(seed=5, d_vocab=40)
    for fm in (engine.k_composition_qk(m, (0, 1), (1, 2)), engine.full_ov(m)[1, 0]):
        dense = fm.materialize().double()
        pos, top1 = _dense_stats(dense)
        got = engine.diagonal_stats(fm, block_size=7)  # several blocks
        assert got.positivity == pytest.approx(pos, abs=1e-9) and got.top1 == pytest.approx(top1)
        idx = torch.tensor([3, 1, 17, 30, 8])
        assert engine.diagonal_stats(fm, idx).top1 == pytest.approx(_dense_stats(dense, idx.sort().values)[1])
    ov = engine.ov_copying(m, (1, 0))
    assert (ov.positivity, ov.top1) == pytest.approx(_dense_stats(engine.full_ov(m)[1, 0].materialize().double()))


def test_a_planted_copier_and_a_planted_matcher_score_one():
    """OV = identity on the embedding (W_U = W_Eᵀ-like) copies perfectly; a K-composition built to match
    the moved token has positivity 1 and top-1 1."""
    d, V = 16, 12
    m = _model(seed=0, d_model=d, d_vocab=V, d_head=d, n_heads=1)
    E = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))[0][:V]
    with torch.no_grad():
        m.W_E.copy_(E)
        m.W_U.copy_(E.T)
        for layer in range(2):
            for name in ("W_Q", "W_K", "W_V", "W_O"):
                getattr(m, name)[layer, 0] = torch.eye(d, dtype=torch.float64)
    ov = engine.ov_copying(m, (1, 0))
    kc = engine.diagonal_stats(engine.k_composition_qk(m, (0, 0), (1, 0)))
    assert ov.positivity == pytest.approx(1.0) and ov.top1 == 1.0
    assert kc.positivity == pytest.approx(1.0) and kc.top1 == 1.0


def test_positional_profile_matches_a_loop_and_finds_the_planted_offset():
    m = _model(seed=2, n_ctx=9)
    prof = engine.positional_qk_profile(m, (0, 1))
    P = (m.W_pos @ m.W_Q[0, 1] @ m.W_K[0, 1].T @ m.W_pos.T) / m.cfg.attn_scale
    want = []
    for d in range(-8, 1):
        vals = []
        for i in range(9):
            j = i + d
            if 0 <= j <= i:
                vals.append(float(P[i, j] - P[i, :i + 1].mean()))
        want.append(sum(vals) / len(vals))
    assert prof.offsets.tolist() == list(range(-8, 1))
    torch.testing.assert_close(prof.score.double(), torch.tensor(want, dtype=torch.float64), rtol=1e-5, atol=1e-6)
    planted = _offset_head_model(offset=3, n_ctx=9)
    assert engine.positional_qk_profile(planted, (0, 0)).peak == -3
    assert engine.positional_qk_profile(planted, (0, 0)).count.tolist() == list(range(1, 10))
    # a sink at key position 0 for the last query: the farthest offset's mean (one row) is the highest score,
    # but it is an absolute position; the peak is over offsets averaged over at least half of the queries
    with torch.no_grad():
        planted.W_K[0, 0][0, 8] = 100.0
    sunk = engine.positional_qk_profile(planted, (0, 0))
    assert int(sunk.score.argmax()) == 0 and sunk.offsets[0] == -8
    assert sunk.peak == -3
    with pytest.raises(ValueError, match="learned positions"):
        engine.positional_qk_profile(_model(positional="none"), (0, 0))


def _offset_head_model(offset: int, n_ctx: int) -> Transformer:
    """A 2-layer attention-only model whose head L0H0 attends exactly `offset` positions back (its
    positional QK circuit is a sharp off-diagonal), every other head uniform-ish and small."""
    d_pos, d_tok = n_ctx, 8
    cfg = ModelConfig(n_layers=2, d_model=d_pos + d_tok, n_heads=2, d_head=n_ctx, d_vocab=300, n_ctx=n_ctx,
                      attn_only=True, normalization=None, positional="shortformer", biases=False, bos_token_id=0)
    m = Transformer(cfg, seed=0).double().requires_grad_(False)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(0.01)
        m.W_pos.zero_()
        m.W_pos[:, :d_pos] = torch.eye(n_ctx, dtype=torch.float64)         # position i -> e_i
        m.W_Q[0, 0].zero_()
        m.W_K[0, 0].zero_()
        m.W_Q[0, 0][:d_pos, :] = 12.0 * torch.eye(n_ctx, dtype=torch.float64)  # query i -> 12 e_i
        shift = torch.zeros(n_ctx, n_ctx, dtype=torch.float64)
        for j in range(n_ctx - offset):
            shift[j, j + offset] = 12.0                                       # key j -> 12 e_{j + offset}
        m.W_K[0, 0][:d_pos, :] = shift                                        # score(i, j) high iff j = i - offset
    return m


def test_a_fixed_offset_head_is_not_called_induction():
    """The trap of a single repeat length: a head attending exactly L − 1 back scores ~1 on `BOS + r + r`
    with |r| = L, though it copies nothing in context. Averaged over the sweep it does not pass."""
    L = 23
    m = _offset_head_model(offset=L - 1, n_ctx=128)
    lens = engine.detection_lengths(m)
    assert lens == (10, 23, 50) and L in lens
    single = engine.head_scores(m, "induction", seq_len=L, n_seqs=4)[0, 0]
    assert single > 0.9  # fooled at the one length it matches
    swept = engine.head_scores(m, "induction", n_seqs=4)[0, 0]
    assert swept < 0.4 and swept == pytest.approx(float(single) / len(lens), abs=0.05)
    by_len = engine.scores_by_length(m, n_seqs=4, kinds=("induction",))
    assert [n for n, s in by_len.items() if s["induction"][0, 0] > 0.5] == [L]


def test_detection_lengths_fit_the_context():
    assert engine.detection_lengths(_model(n_ctx=128)) == (10, 23, 50)
    assert engine.detection_lengths(_model(n_ctx=256)) == engine.REPEAT_LENS
    assert engine.detection_lengths(_model(n_ctx=32)) == (10, 15)  # fewer than two fit: add the longest
    assert engine.detection_lengths(_model(n_ctx=10)) == (4,)
    assert engine.detection_lengths(_model(n_ctx=128), 7) == (7,)
    icl = engine.in_context_loss(_model(n_ctx=64), n_seqs=2)
    assert sorted(icl.by_length) == [10, 23]
    assert icl.first == pytest.approx(sum(f for f, _ in icl.by_length.values()) / 2)
    assert icl.repeated == pytest.approx(sum(r for _, r in icl.by_length.values()) / 2)


def test_induction_positions_and_the_decisive_one():
    toks = torch.tensor([0, 5, 3, 7, 2, 5, 3, 7, 9, 5, 3])
    # p predicts toks[p + 1] by induction when (toks[p], toks[p + 1]) occurred before
    assert engine.induction_positions(toks).tolist() == [5, 6, 9]
    assert engine.induction_positions(torch.tensor([1, 2, 3])).numel() == 0
    m = _model(seed=4, d_vocab=13, n_ctx=12)
    head = engine.strongest_induction_head(m)
    assert head[0] == 1
    p = engine.decisive_position(m, toks, head)
    # brute force: the head's output at each induction position, dotted with the centred unembedding
    _, cache = m.run_with_cache(toks[None])
    out = cache["result", 1][0, :, head[1]]
    score = {q: float(out[q] @ (m.W_U[:, toks[q + 1]] - m.W_U.mean(1))) for q in (5, 6, 9)}
    assert p == max(score, key=score.get)
    assert engine.decisive_position(m, torch.tensor([1, 2, 3, 4])) == 3  # nothing repeats: the last position
    # a head given as a callable is resolved only when there is an induction position to choose from
    asked = []
    assert engine.decisive_position(m, toks, lambda: asked.append(1) or head) == p and asked == [1]

    def must_not_be_asked():
        raise AssertionError("the head was resolved for a text without induction positions")

    assert engine.decisive_position(m, torch.tensor([1, 2, 3, 4]), must_not_be_asked) == 3


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("offset", [3, [2, 5]])
def test_rotary_composed_cores_have_the_dense_circuits_eigenvalues(layout, offset):
    """`k_composition_cores` (the `[d_head, d_head]` rotations through W_Eᵀ W_E that the positivity grid, the
    eigenvalues and a lazy checkpoint use) against the dense `[d_vocab, d_vocab]` float64 circuit at the
    offset, the one the test above ties to the model's own scores: the same nonzero eigenvalues, positivity
    and trace, for each head of layer 1 and grouped K/V heads too."""
    m = _model(seed=5, positional="rotary", rotary_base=100.0, rotary_layout=layout, n_heads=4, n_kv_heads=2,
               d_vocab=29)
    cores = engine.k_composition_cores(m, (0, 3), 1, offset=offset)
    lam = cores.eigenvalues().to(torch.complex128)  # [4, d_head]
    pos = engine.k_composition_positivity(m, (0, 3), offset=offset)
    assert lam.shape == (4, 4) and pos[0].isnan().all()
    key = lambda z: z[torch.argsort(z.real * 1e3 + z.imag)]  # noqa: E731  conjugate pairs in one order
    for h2 in range(4):
        dense = engine.k_composition_qk(m, (0, 3), (1, h2), offset=offset).materialize().double()
        full = torch.linalg.eigvals(dense)
        big = full[full.abs().argsort(descending=True)][:4]
        assert full.abs().sort().values[:-4].max() < 1e-9 * float(big.abs().max())  # the rest are zeros
        torch.testing.assert_close(key(lam[h2]), key(big), rtol=1e-4, atol=1e-4 * float(big.abs().max()))
        assert float(pos[1, h2]) == pytest.approx(float(full.real.sum() / full.abs().sum()), abs=1e-5)
        assert float(cores[h2].trace()) == pytest.approx(float(dense.trace()), rel=1e-4, abs=1e-6)
        got = engine.k_composition_eigenvalues(m, (0, 3), (1, h2), offset=offset).to(torch.complex128)
        torch.testing.assert_close(key(got), key(lam[h2]))  # the same numbers, sorted by magnitude
    with pytest.raises(ValueError, match="offset"):
        engine.k_composition_cores(m, (0, 3), 1)


def test_k_composition_positivity_matches_dense_float64_eigenvalues_and_survives_a_rotation():
    """Every later head's K-composition positivity through L0H1 equals Re Σλ / Σ|λ| of the dense
    [d_vocab, d_vocab] float64 matrix W_E W_Q^{h2} W_K^{h2}ᵀ W_OV^{h1}ᵀ W_Eᵀ (built here by hand); the
    eigenvalues agree with the dense ones (the dense matrix's extra eigenvalues are zeros); layer-0 heads
    have no term (NaN); an orthogonal change of the residual basis leaves all of it unchanged."""
    m = _model(seed=7, d_vocab=24)
    got = engine.k_composition_positivity(m, (0, 1))
    assert got.shape == (2, 3) and got[0].isnan().all()
    W_E = m.W_E.double()
    W_OV = m.W_V[0, 1].double() @ m.W_O[0, 1].double()                      # [d_model, d_model]
    for h2 in range(3):
        dense = W_E @ m.W_Q[1, h2].double() @ m.W_K[1, h2].double().T @ W_OV.T @ W_E.T
        lam = torch.linalg.eigvals(dense)
        assert float(got[1, h2]) == pytest.approx(float(lam.real.sum() / lam.abs().sum()), abs=1e-5)
        ev = engine.k_composition_eigenvalues(m, (0, 1), (1, h2)).to(torch.complex128)
        big = lam[lam.abs().argsort(descending=True)][: len(ev)]
        assert (big.abs()[len(ev):] if len(big) > len(ev) else big.abs()).numel() and lam.abs().sort().values[
            : len(lam) - len(ev)].max() < 1e-9 * float(big.abs().max())     # the rest are zeros
        key = lambda z: z[torch.argsort(z.real * 1e3 + z.imag)]               # noqa: E731  conjugate pairs in one order
        torch.testing.assert_close(key(ev), key(big), rtol=1e-4, atol=1e-4 * float(big.abs().max()))
    torch.testing.assert_close(engine.k_composition_positivity(rotated(m), (0, 1)), got, rtol=1e-4, atol=1e-5,
                               equal_nan=True)
    with pytest.raises(ValueError, match="no later head"):
        engine.k_composition_positivity(m, (1, 0))
