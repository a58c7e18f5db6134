"""Head detection: scores against brute-force loops, hand-built previous-token / induction heads,
the copying score on planted copying heads, in-context loss, bad input."""

import math

import pytest
import torch

from circwidgets.engine.heads import (
    KINDS,
    all_head_scores,
    copying_score,
    detection_masks,
    head_scores,
    in_context_loss,
    repeated_tokens,
)
from circwidgets.model import ModelConfig, Transformer
from circwidgets.model.testing import random_model, rotated


def brute_scores(model, toks):
    """Per-row Python loops over the cached patterns: the definition written out."""
    _, cache = model.run_with_cache(toks)
    c = model.cfg
    out = {k: torch.zeros(c.n_layers, c.n_heads, dtype=torch.float64) for k in KINDS}
    for kind in KINDS:
        for layer in range(c.n_layers):
            pat = cache["pattern", layer]
            for h in range(c.n_heads):
                num = den = 0.0
                for b, seq in enumerate(toks.tolist()):
                    for i in range(len(seq)):
                        if kind == "previous_token":
                            targets = [i - 1] if i >= 1 else []
                        elif kind == "duplicate_token":
                            targets = [j for j in range(i) if seq[j] == seq[i]]
                        else:
                            targets = [j for j in range(1, i + 1) if seq[j - 1] == seq[i] and j - 1 < i]
                        if not targets:
                            continue
                        num += sum(pat[b, h, i, j].item() for j in targets)
                        den += pat[b, h, i, : i + 1].sum().item()
                out[kind][layer, h] = num / den if den else float("nan")
    return out


def test_repeated_tokens_layout():
    t = repeated_tokens(50, 7, n_seqs=3, seed=1, bos=4)
    assert t.shape == (3, 15)
    assert (t[:, 0] == 4).all()
    assert torch.equal(t[:, 1:8], t[:, 8:])
    for row in t[:, 1:8]:
        assert len(set(row.tolist())) == 7 and 4 not in row.tolist()
    assert torch.equal(t, repeated_tokens(50, 7, n_seqs=3, seed=1, bos=4))
    assert not torch.equal(t, repeated_tokens(50, 7, n_seqs=3, seed=2, bos=4))
    assert repeated_tokens(50, 7, 2, bos=None).shape == (2, 14)
    # vocabulary too small for distinct tokens: repetition allowed, shape still right
    assert repeated_tokens(3, 10, 1, bos=0).shape == (1, 21)


def test_masks_are_the_diagonals_on_repeated_tokens():
    L = 6
    t = repeated_tokens(40, L, 2, seed=0, bos=0)
    m = detection_masks(t)
    P = 2 * L + 1
    idx = torch.arange(P)
    ind = torch.zeros(P, P, dtype=torch.bool)
    dup = torch.zeros(P, P, dtype=torch.bool)
    for i in range(L + 1, P):
        dup[i, i - L] = True
        ind[i, i - (L - 1)] = True
    assert torch.equal(m["duplicate_token"][0], dup) and torch.equal(m["induction"][1], ind)
    assert torch.equal(m["previous_token"][0], idx[:, None] - 1 == idx[None, :])


@pytest.mark.parametrize("cfg", [dict(), dict(normalization="LN", biases=True), dict(positional="shortformer")])
def test_scores_match_brute_force(cfg):
    m = random_model(seed=3, n_layers=2, n_heads=3, d_vocab=9, n_ctx=16, **cfg)
    # repeated tokens and arbitrary tokens with many collisions
    collide = torch.randint(0, 4, (3, 16), generator=torch.Generator().manual_seed(0))
    for toks in (repeated_tokens(9, 7, 2, seed=5, bos=0), collide):
        got = all_head_scores(m, tokens=toks)
        ref = brute_scores(m, toks)
        for k in KINDS:
            torch.testing.assert_close(got[k].double(), ref[k], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(head_scores(m, k, tokens=toks), got[k])


def test_default_tokens_are_repeated_tokens_with_model_bos():
    m = random_model(seed=1, d_vocab=30, n_ctx=21, bos_token_id=7)
    got = head_scores(m, "induction", seq_len=10, n_seqs=3, seed=4)
    toks = repeated_tokens(30, 10, 3, seed=4, bos=7)
    torch.testing.assert_close(got.double(), brute_scores(m, toks)["induction"], rtol=1e-5, atol=1e-6)
    # no BOS configured: token 0 is used; bos=None drops it
    m0 = random_model(seed=1, d_vocab=30, n_ctx=21)
    t0 = repeated_tokens(30, 10, 2, seed=0, bos=0)
    torch.testing.assert_close(head_scores(m0, "duplicate_token", seq_len=10, n_seqs=2).double(),
                               brute_scores(m0, t0)["duplicate_token"], rtol=1e-5, atol=1e-6)
    tn = repeated_tokens(30, 10, 2, seed=0, bos=None)
    torch.testing.assert_close(head_scores(m0, "duplicate_token", seq_len=10, n_seqs=2, bos=None).double(),
                               brute_scores(m0, tn)["duplicate_token"], rtol=1e-5, atol=1e-6)


def induction_model(V=12, L=8, c=40.0):
    """2 layers, 2 heads, built by hand. Residual = [token one-hot | position one-hot | previous token].

    L0H0: query at position i matches key at position i-1 (positional QK), copies the key's token
    into the 'previous token' subspace. L1H0: query token t matches keys whose previous token is t,
    writes 5 * (attended token) into the token subspace; W_U reads the token subspace.
    Heads 1 of both layers attend at random and write nothing.
    """
    N = 1 + 2 * L
    D = V + N + V
    E = max(N, V)
    cfg = ModelConfig(n_layers=2, d_model=D, n_heads=2, d_head=E, d_vocab=V, n_ctx=N, bos_token_id=0)
    m = Transformer(cfg, seed=0).double()
    s = c * math.sqrt(E)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.W_E[:, :V] = torch.eye(V)
        m.W_pos[:, V:V + N] = torch.eye(N)
        for i in range(1, N):
            m.W_Q[0, 0, V + i, i - 1] = s
        for j in range(N):
            m.W_K[0, 0, V + j, j] = 1.0
        for t in range(V):
            m.W_V[0, 0, t, t] = 1.0
            m.W_O[0, 0, t, V + N + t] = 1.0
            m.W_Q[1, 0, t, t] = s
            m.W_K[1, 0, V + N + t, t] = 1.0
            m.W_V[1, 0, t, t] = 1.0
            m.W_O[1, 0, t, t] = 5.0
        g = torch.Generator().manual_seed(0)
        m.W_Q[:, 1] = torch.randn(2, D, E, generator=g, dtype=torch.float64)
        m.W_K[:, 1] = torch.randn(2, D, E, generator=g, dtype=torch.float64)
        m.W_U[:V] = 3.0 * torch.eye(V)
    return m


def test_hand_built_previous_token_and_induction_heads_are_detected():
    m = induction_model()
    s = all_head_scores(m, seq_len=8, n_seqs=8, seed=2)
    assert s["previous_token"][0, 0] > 0.99
    assert s["induction"][1, 0] > 0.99
    assert s["previous_token"][1, 0] < 0.3 and s["induction"][0, 0] < 0.2
    assert s["duplicate_token"][1, 0] < 0.2 and s["duplicate_token"][0, 0] < 0.2
    for k in KINDS:  # the random heads are not detected as anything
        assert (s[k][:, 1] < 0.5).all()
    # and the brute-force loops agree on the same tokens
    ref = brute_scores(m, repeated_tokens(12, 8, 8, seed=2, bos=0))
    for k in KINDS:
        torch.testing.assert_close(s[k].double(), ref[k], rtol=1e-5, atol=1e-6)
    icl = in_context_loss(m, seq_len=8, n_seqs=8, seed=2)
    assert icl.repeated < 0.1 and icl.first > 1.0 and icl.gain > 1.0


def test_in_context_loss_matches_manual_cross_entropy():
    m = random_model(seed=2, d_vocab=20, n_ctx=13, bos_token_id=3)
    icl = in_context_loss(m, seq_len=6, n_seqs=3, seed=1)
    toks = repeated_tokens(20, 6, 3, seed=1, bos=3)
    logits = m(toks)
    nll = torch.zeros(3, 12, dtype=torch.float64)
    for b in range(3):
        for p in range(12):
            nll[b, p] = -torch.log_softmax(logits[b, p], 0)[toks[b, p + 1]]
    torch.testing.assert_close(icl.per_position.double(), nll.mean(0), rtol=1e-5, atol=1e-6)
    assert math.isclose(icl.first, nll[:, 0:6].mean().item(), rel_tol=1e-5)  # targets 1..6
    assert math.isclose(icl.repeated, nll[:, 7:12].mean().item(), rel_tol=1e-5)  # targets 8..12


def brute_copying(model, layer, head):
    full = model.W_E @ model.W_V[layer, head] @ model.W_O[layer, head] @ model.W_U
    V = full.shape[0]
    fr = []
    for t in range(V):
        row = full[t]
        below = sum(1.0 if row[u] < row[t] else 0.5 if (row[u] == row[t] and u != t) else 0.0 for u in range(V))
        fr.append(below / (V - 1))
    return sum(fr) / V


def planted_copying_model(sign=1.0):
    V, D = 10, 16
    cfg = ModelConfig(n_layers=1, d_model=D, n_heads=2, d_head=D, d_vocab=V, n_ctx=4)
    m = random_model(cfg, seed=0)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    with torch.no_grad():
        m.W_E.copy_(q[:V] + 0.05 * torch.randn(V, D, dtype=torch.float64))
        m.W_U.copy_(m.W_E.T.clone())
        m.W_V[0, 0] = torch.eye(D, dtype=torch.float64)
        m.W_O[0, 0] = sign * torch.eye(D, dtype=torch.float64)
    return m


def test_copying_score_planted_and_brute_force():
    m = planted_copying_model()
    s = copying_score(m, n_tokens=None)
    assert s.shape == (1, 2)
    assert s[0, 0] > 0.99
    assert abs(s[0, 1].item() - brute_copying(m, 0, 1)) < 1e-6
    assert abs(s[0, 0].item() - brute_copying(m, 0, 0)) < 1e-6
    assert copying_score(planted_copying_model(-1.0), 0, 0, n_tokens=None) < 0.01
    # a sample of tokens: a mean over a subset, still in [0, 1]
    sub = copying_score(m, 0, 1, n_tokens=5, seed=3)
    assert 0.0 <= sub.item() <= 1.0
    one = random_model(seed=1, n_layers=1, n_heads=1, d_vocab=20)  # all heads of a one-head model: [1, 1]
    assert copying_score(one).shape == (1, 1) and copying_score(one, 0, 0).shape == ()


def test_random_heads_copy_about_half():
    m = random_model(seed=0, d_vocab=200, d_model=32, n_heads=4, d_head=8)
    s = copying_score(m, n_tokens=None)
    assert ((s > 0.3) & (s < 0.7)).all()


def test_bad_input_names_argument():
    m = random_model(seed=0, n_ctx=10)
    with pytest.raises(ValueError, match="seq_len"):
        head_scores(m, seq_len=5)  # BOS + 10 > n_ctx
    with pytest.raises(ValueError, match="kind"):
        head_scores(m, "succession")
    with pytest.raises(ValueError, match="n_ctx"):
        head_scores(m, tokens=torch.zeros(1, 11, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        head_scores(m, tokens=torch.full((1, 4), 13))
    with pytest.raises(IndexError, match="layer"):
        copying_score(m, 5, 0)
    with pytest.raises(IndexError, match="head"):
        copying_score(m, 0, -9)
    with pytest.raises(ValueError, match="bos"):
        head_scores(m, bos=99)
    with torch.no_grad():
        m.W_Q[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        head_scores(m)


def test_scores_invariant_under_orthogonal_change_of_residual_basis():
    m = random_model(seed=11, d_vocab=40, n_ctx=21)
    m2 = rotated(m, seed=7)
    a, b = all_head_scores(m, seq_len=10), all_head_scores(m2, seq_len=10)
    for k in KINDS:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(copying_score(m, n_tokens=None), copying_score(m2, n_tokens=None))
    assert abs(in_context_loss(m, seq_len=10).gain - in_context_loss(m2, seq_len=10).gain) < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    m = random_model(seed=13, d_vocab=40, n_ctx=21, normalization="LN", biases=True)
    a = all_head_scores(m, seq_len=10)
    b = all_head_scores(m.to("cuda"), seq_len=10)
    for k in KINDS:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(copying_score(m.to("cpu"), n_tokens=None), copying_score(m.to("cuda"), n_tokens=None))
    assert abs(in_context_loss(m.to("cpu"), seq_len=10).first - in_context_loss(m.to("cuda"), seq_len=10).first) < 1e-5


def split_copying_model(V: int = 40, D: int = 48):
    """Head (0, 0) copies the low half of the vocabulary (its OV row raises the token's own logit most)
    and anti-copies the high half (its own logit lowest): the copying fraction depends on the id."""
    cfg = ModelConfig(n_layers=1, d_model=D, n_heads=1, d_head=D, d_vocab=V, n_ctx=4)
    m = random_model(cfg, seed=0)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    with torch.no_grad():
        m.W_E.copy_(q[:V])
        WU = q[:V].T.clone()
        WU[:, V // 2:] *= -1.0  # high ids: attending to t lowers t's own logit
        m.W_U.copy_(WU)
        m.W_V[0, 0] = torch.eye(D, dtype=torch.float64)
        m.W_O[0, 0] = torch.eye(D, dtype=torch.float64)
    return m


def test_copying_score_subsample_is_a_random_subset_of_the_vocabulary():
    """The token subsample is drawn over the whole vocabulary (seeded), not the first n ids: on a head that
    copies the low ids and anti-copies the high ids, subsample scores vary with the seed and average to
    the full score; the first n ids would give the same ~1.0 for every seed."""
    m = split_copying_model()
    full = copying_score(m, 0, 0, n_tokens=None).item()
    assert abs(full - brute_copying(m, 0, 0)) < 1e-6 and 0.4 < full < 0.6
    subs = [copying_score(m, 0, 0, n_tokens=8, seed=s).item() for s in range(24)]
    assert len({round(x, 6) for x in subs}) > 3  # the sample depends on the seed
    assert abs(sum(subs) / len(subs) - full) < 0.12  # unbiased: high ids are sampled as often as low ones
    assert min(subs) < 0.9  # some sample holds anti-copied (high) ids
    assert copying_score(m, 0, 0, n_tokens=8, seed=5).item() == subs[5]  # the seed makes it reproducible
