"""Skip-trigram tables against a dense float64 reference, planted rules, invariance, tokenizer lookups."""

import pytest
import torch

from circwidgets.engine.skip_trigrams import skip_trigrams
from circwidgets.model import ModelConfig, Tokenizer, Transformer, fold_layernorm
from circwidgets.model.testing import random_model


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


@pytest.mark.parametrize("block_size,col_block", [(1, None), (7, 5), (256, 3), (2048, 1024)])
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
    R, _ = torch.linalg.qr(torch.randn(10, 10, generator=torch.Generator().manual_seed(7), dtype=torch.float64))
    m2 = random_model(seed=1, d_model=10, d_vocab=25)
    with torch.no_grad():
        m2.W_E.copy_(m.W_E @ R)
        m2.W_U.copy_(R.T @ m.W_U)
        for n in ("W_Q", "W_K", "W_V"):
            getattr(m2, n).copy_(torch.einsum("ij,lhjk->lhik", R.T, getattr(m, n)))
        m2.W_O.copy_(m.W_O @ R)
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
