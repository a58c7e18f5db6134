"""Skip-trigram tables against a dense float64 reference, planted rules, invariance, tokenizer lookups."""

import pytest
import torch

from circwidgets.engine.skip_trigrams import skip_trigrams
from circwidgets.model import ModelConfig, Tokenizer, Transformer, fold_layernorm
from circwidgets.model.testing import random_model, rotated


def dense_reference(m, layer, head):
    """The full circuits as dense float64 d_vocab x d_vocab matrices, centred per row."""
    WE, WU = m.W_E.double(), m.W_U.double()
    qk = WE @ m.W_Q[layer, head].double() @ m.W_K[layer, head].double().T @ WE.T / m.cfg.attn_scale
    ov = WE @ m.W_V[layer, head].double() @ m.W_O[layer, head].double() @ WU
    qkc = qk - qk.mean(1, keepdim=True)  # row = query/destination
    ovc = ov - ov.mean(1, keepdim=True)  # row = source
    top_qk = qkc.max(0).values  # over destinations, per source column
    top_ov = ovc.max(1).values
    return qkc, ovc, top_qk, top_ov, top_qk.clamp(min=0) * top_ov


@pytest.mark.parametrize("block_size,col_block", [(1, None), (7, 5), (256, 3), (2048, 1024), (None, None)])
def test_matches_dense_reference(block_size, col_block):
    m = random_model(seed=4, n_layers=2, d_model=12, n_heads=3, d_head=5, d_vocab=37)
    layer, head = 1, 2
    t = skip_trigrams(m, layer, head, k=8, n_dest=4, n_out=3, block_size=block_size, col_block=col_block)
    qkc, ovc, top_qk, top_ov, strength = dense_reference(m, layer, head)
    torch.testing.assert_close(t.top_qk.double(), top_qk, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(t.top_ov.double(), top_ov, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(t.strength.double(), strength, rtol=1e-4, atol=1e-5)
    assert t.order[:8].tolist() == torch.argsort(strength, descending=True)[:8].tolist()
    rows = list(t)
    assert len(rows) == 8 and [r.rank for r in rows] == list(range(8))
    for r in rows + t.rows(20, 17):
        a = r.source
        assert r.dests == qkc[:, a].topk(4).indices.tolist()
        torch.testing.assert_close(torch.tensor(r.dest_values, dtype=torch.float64), qkc[:, a].topk(4).values,
                                   rtol=1e-4, atol=1e-5)
        assert r.outs == ovc[a].topk(3).indices.tolist()
        torch.testing.assert_close(torch.tensor(r.out_values, dtype=torch.float64), ovc[a].topk(3).values,
                                   rtol=1e-4, atol=1e-5)
    assert t.for_source(5).dests == qkc[:, 5].topk(4).indices.tolist()
    assert t.for_source(torch.tensor(5)).source == 5
    assert len(t.rows(30, 100)) == 7  # runs off the end of the vocabulary gracefully


def test_layernorm_models_use_the_folded_circuits():
    m = random_model(seed=5, normalization="LN", biases=True, d_vocab=21)
    t = skip_trigrams(m, 1, 0, k=5, n_dest=3, n_out=3)
    qkc, ovc, top_qk, top_ov, strength = dense_reference(fold_layernorm(m), 1, 0)
    torch.testing.assert_close(t.strength.double(), strength, rtol=1e-4, atol=1e-5)
    assert [r.outs for r in t] == [ovc[a].topk(3).indices.tolist() for a in t.order[:5].tolist()]


def test_invariant_under_orthogonal_change_of_residual_basis():
    m = random_model(seed=1, d_model=10, d_vocab=25)
    m2 = rotated(m, seed=7)  # the same model in another orthonormal basis of the residual stream
    a, b = skip_trigrams(m, 0, 1, k=10), skip_trigrams(m2, 0, 1, k=10)
    torch.testing.assert_close(a.strength, b.strength, rtol=1e-4, atol=1e-5)
    assert [r.dests for r in a] == [r.dests for r in b]
    assert [r.outs for r in a] == [r.outs for r in b]


RULES = [(3, 17, 25), (8, 11, 4), (20, 6, 29)]  # (A source, B destination, C output)


def planted_model(V=32, noise=0.02, seed=0):
    """One layer, one head whose QK attends from B to A and whose OV maps A to C, for each rule."""
    D = V
    cfg = ModelConfig(n_layers=1, d_model=D, n_heads=1, d_head=len(RULES), d_vocab=V, n_ctx=16)
    m = Transformer(cfg, seed=0).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(noise * torch.randn(p.shape, generator=g, dtype=torch.float64))
        m.W_E += torch.eye(V, dtype=torch.float64)
        m.W_U += torch.eye(V, dtype=torch.float64)
        for r, (a, b, c) in enumerate(RULES):
            m.W_Q[0, 0, b, r] += 4.0
            m.W_K[0, 0, a, r] += 4.0
            m.W_V[0, 0, a, r] += 3.0
            m.W_O[0, 0, r, c] += 3.0
    return m


def test_planted_rules_are_recovered():
    m = planted_model()
    t = skip_trigrams(m, 0, 0, k=3, n_dest=1, n_out=1)
    got = {(r.source, r.dests[0], r.outs[0]) for r in t}
    assert got == set(RULES)
    assert {x[:3] for x in t.triples(3)} == set(RULES)
    # everything else is far weaker than the planted sources
    assert t.strength[t.order[3]] < 0.1 * t.strength[t.order[2]]


def word_tokenizer(V):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    tok = HFTokenizer(WordLevel({f"w{i}": i for i in range(V)}, unk_token="w0"))
    tok.pre_tokenizer = Whitespace()
    return Tokenizer.from_any(tok)


def test_string_tokens_when_a_tokenizer_exists():
    m = planted_model()
    m.tokenizer = word_tokenizer(32)
    t = skip_trigrams(m, 0, 0, k=3)
    r = t.for_source("w8")
    assert r.source == 8 and r.source_str == "w8" and r.dest_strs[0] == "w11" and r.out_strs[0] == "w4"
    assert "w8" in repr(t)
    with pytest.raises(ValueError, match="single token"):
        t.for_source("w1 w2")


def test_bad_input():
    m = random_model(seed=0)
    with pytest.raises(IndexError, match="layer"):
        skip_trigrams(m, 2, 0)
    with pytest.raises(IndexError, match="head"):
        skip_trigrams(m, 0, 3)
    with pytest.raises(ValueError, match="k="):
        skip_trigrams(m, 0, 0, k=0)
    with pytest.raises(ValueError, match="col_block"):
        skip_trigrams(m, 0, 0, col_block=0)
    t = skip_trigrams(m, 0, 0)
    with pytest.raises(IndexError, match="token"):
        t.for_source(13)
    with pytest.raises(ValueError, match="no tokenizer"):
        t.for_source("a")
    with pytest.raises(IndexError, match="start"):
        t.rows(13, 2)
    with pytest.raises(IndexError, match="row"):
        t[13]
    with torch.no_grad():
        m.W_K[0, 0, 1, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        skip_trigrams(m, 0, 0)


def test_half_precision_weights_use_float32_maths():
    m = random_model(seed=2, d_vocab=40)
    ref = skip_trigrams(m, 1, 1, k=5)
    t = skip_trigrams(m.to(torch.bfloat16), 1, 1, k=5)
    assert t.strength.dtype == torch.float32
    assert len(set(r.source for r in t) & set(r.source for r in ref)) >= 3


# ------------------------------------------------------------------------------ corpus statistics
from collections import Counter  # noqa: E402

from circwidgets.engine.corpus_stats import (  # noqa: E402
    empirical_bigrams,
    empirical_skip_trigrams,
    pearson,
    precision_at_k,
    rank_correlation,
)


def brute_counts(seqs, window):
    big, tri, pair, uni = Counter(), Counter(), Counter(), Counter()
    for s in seqs:
        for i in range(len(s) - 1):
            b, c = s[i], s[i + 1]
            big[b, c] += 1
            uni[b] += 1
            for a in set(s[max(0, i - window):i]):
                tri[a, b, c] += 1
                pair[a, b] += 1
    return big, tri, pair, uni


def test_empirical_counts_match_brute_force():
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, 6, (n,), generator=g) for n in (1, 2, 9, 25)] + [torch.randint(0, 6, (3, 17), generator=g)]
    flat = [s.tolist() for s in seqs[:4]] + seqs[4].tolist()
    big, tri, pair, uni = brute_counts(flat, window=4)
    bg = empirical_bigrams(seqs, d_vocab=7)
    st = empirical_skip_trigrams(seqs, window=4, d_vocab=7, chunk=10)  # tiny chunks: several per batch
    for b in range(7):
        assert bg.unigram[b] == uni[b]
        for c in range(7):
            assert bg.count(b, c) == big[b, c]
            for a in range(7):
                assert st.count(a, b, c) == tri[a, b, c]
            assert st.pair_count(c, b) == pair[c, b]
    assert int(st.counts.sum()) == sum(tri.values())
    dense = bg.to_sparse().to_dense()
    assert all(dense[b, c] == big[b, c] for b in range(7) for c in range(7))
    lp = bg.dense_log_probs(alpha=0.5)
    assert torch.allclose(lp[2], bg.row(2, alpha=0.5))
    assert abs(lp[2, 3].exp().item() - (big[2, 3] + 0.5) / (uni[2] + 3.5)) < 1e-12
    # lift by hand
    a, b, c = 1, 2, 3
    want = ((tri[a, b, c] + 1) / (pair[a, b] + 7)) / ((big[b, c] + 1) / (uni[b] + 7))
    assert abs(st.lift(a, b, c).item() - want) < 1e-12
    top = st.top(5, by="count")
    assert [t[3] for t in top] == sorted((float(v) for v in tri.values()), reverse=True)[:5]
    assert all(t[0] == 2 for t in st.top(5, source=2))


def planted_corpus(n_seqs=300, P=64, V=32, window=8, p=0.9, seed=0):
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(0, V, (n_seqs, P), generator=g)
    coin = torch.rand(n_seqs, P, generator=g)
    for s in range(n_seqs):
        row = toks[s].tolist()
        for i in range(P - 1):
            for a, b, c in RULES:
                if row[i] == b and a in row[max(0, i - window):i] and coin[s, i] < p:
                    row[i + 1] = c
        toks[s] = torch.tensor(row)
    return toks


def test_planted_corpus_rules_are_found_by_counts_and_by_the_planted_model():
    toks = planted_corpus()
    st = empirical_skip_trigrams(toks, window=8, d_vocab=32)
    emp = st.top(3, by="lift", min_count=20)
    assert {t[:3] for t in emp} == set(RULES)
    assert all(t[3] > 2.5 for t in emp)
    # the circuits of a model that plants the same rules agree with the corpus
    table = skip_trigrams(planted_model(), 0, 0, k=3, n_dest=1, n_out=1)
    assert precision_at_k([t[:3] for t in table.triples(3)], [t[:3] for t in emp], k=3) == 1.0
    # strengths rank the rule sources above the rest; the corpus lift of (A, best B, best C) agrees in rank
    rows = table.rows(0, 32)
    lifts = [st.lift(r.source, r.dests[0], r.outs[0]).item() for r in rows]
    assert rank_correlation([r.strength for r in rows], lifts) > 0.2
    assert min(lifts[:3]) > max(lifts[3:])


def test_comparison_helpers():
    assert precision_at_k([1, 2, 3, 4], {2, 4, 9}, 4) == 0.5
    assert precision_at_k([(1, 2), (3, 4)], [torch.tensor([3, 4])], 1) == 0.0
    assert precision_at_k([(1, 2), (3, 4)], [torch.tensor([3, 4])], 2) == 0.5
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, generator=g, dtype=torch.float64), torch.randn(30, generator=g, dtype=torch.float64)
    ref = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()).pow(2).sum() * (y - y.mean()).pow(2).sum()).sqrt()
    assert abs(pearson(x, y) - ref.item()) < 1e-12
    # Spearman without ties: 1 - 6 Σd² / (n(n² - 1))
    rx = torch.tensor([sorted(x.tolist()).index(v) for v in x.tolist()], dtype=torch.float64)
    ry = torch.tensor([sorted(y.tolist()).index(v) for v in y.tolist()], dtype=torch.float64)
    n = 30
    assert abs(rank_correlation(x, y) - (1 - 6 * ((rx - ry) ** 2).sum().item() / (n * (n * n - 1)))) < 1e-12
    # with ties: average ranks
    a, b = [1, 2, 2, 3, 3, 3], [6, 5, 4, 3, 2, 1]
    ra = [0, 1.5, 1.5, 4, 4, 4]
    assert abs(rank_correlation(a, b) - pearson(ra, [5, 4, 3, 2, 1, 0])) < 1e-12
    assert rank_correlation(x, x.exp()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same length"):
        pearson([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="k="):
        precision_at_k([1], [1], 0)
    with pytest.raises(ValueError, match="NaN"):
        rank_correlation([1, float("nan")], [1, 2])


def test_corpus_bad_input():
    with pytest.raises(ValueError, match="outside"):
        empirical_bigrams(torch.tensor([0, 5]), d_vocab=5)
    with pytest.raises(ValueError, match="window"):
        empirical_skip_trigrams(torch.tensor([0, 1]), window=0)
    with pytest.raises(TypeError, match="integer"):
        empirical_bigrams(torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="empty"):
        empirical_bigrams([])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    m = random_model(seed=14, d_vocab=3000, d_model=32, d_head=8)
    a = skip_trigrams(m, 1, 2, k=10)
    b = skip_trigrams(m.to("cuda"), 1, 2, k=10)
    torch.testing.assert_close(a.strength, b.strength, rtol=1e-4, atol=1e-5)
    assert [r.dests for r in a] == [r.dests for r in b] and [r.outs for r in a] == [r.outs for r in b]
    assert b.for_source(7).outs == a.for_source(7).outs


def test_scan_worker_threads_and_tiles_agree():
    from circwidgets.engine.skip_trigrams import _factors, source_maxima

    m = random_model(seed=16, d_vocab=300, d_model=12, d_head=5)
    f = _factors(m, 0, 1)
    ref = source_maxima(f, workers=1)
    n_threads = torch.get_num_threads()
    for workers, tpw, bs, cb in ((3, 1, 7, 11), (2, 2, 64, 300), (4, None, 1, 512), (None, None, None, None)):
        got = source_maxima(f, block_size=bs, col_block=cb, workers=workers, threads_per_worker=tpw)
        torch.testing.assert_close(got, ref)
    assert torch.get_num_threads() == n_threads  # the workers' single-threading does not leak out
