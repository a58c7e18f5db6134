"""Memory of the views, by what they hold (not by timing): the explorer keeps one copy of the patterns
and of the folded weights for all its panels and no `[pos, d_vocab]` logits; the compact ablation run
(`keep_logits=False`) equals the full one; the weights' MLP matrices are folded only when read; the
finiteness check runs once per weights version. The peak-RSS table at GPT-2 size is
benchmarks/bench_memory.py (a benchmark, not a test)."""

from __future__ import annotations

import gc
import warnings

import pytest
import torch

import circwidgets as cw
from circwidgets.engine import prep
from circwidgets.engine._check import check_finite
from circwidgets.engine.ablation_state import ablated_run
from circwidgets.model import Transformer, fold_layernorm
from circwidgets.model.testing import half_repeated_tokens, random_model

# long enough that pos x d_vocab is above the ablation view's 2M threshold (the compact runs)
P, V = 520, 4096
TEXT = half_repeated_tokens(P, V, seed=0)  # repeats: induction positions (the paths panel's position)


@pytest.fixture(scope="module")
def lm() -> Transformer:
    return random_model(n_layers=2, n_heads=4, d_model=32, d_head=8, d_vocab=V, n_ctx=P, attn_only=False,
                        normalization="LN", biases=True, seed=3, dtype=torch.float32)


def _tensors(roots, skip) -> list[torch.Tensor]:
    """Every tensor reachable from `roots` through containers and instance attributes (not through
    `skip` objects, modules, classes or functions)."""
    seen, out, stack = {id(s) for s in skip}, [], list(roots)
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, torch.Tensor):
            out.append(o)
            continue
        if isinstance(o, (type, type(gc), type(_tensors))) or callable(o) and not hasattr(o, "__dict__"):
            continue
        if isinstance(o, dict):
            stack += list(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack += list(o)
        elif hasattr(o, "__dict__"):
            stack += list(vars(o).values())
        elif hasattr(o, "__slots__"):
            stack += [getattr(o, s) for s in o.__slots__ if hasattr(o, s)]
    return out


@pytest.fixture(scope="module")
def explorer(lm):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cw.explore(lm, TEXT.clone())


def test_explorer_holds_no_logits(explorer, lm):
    """No tensor of `pos x d_vocab` (or more) entries anywhere in the explorer: the ablation panel's runs
    keep the per-token loss and a top-5 table, the paths panel streams its logit."""
    assert not any(p.error for p in explorer.panels.values()), {n: p.error for n, p in explorer.panels.items()}
    big = [tuple(t.shape) for t in _tensors([explorer], skip=[lm]) if V in t.shape and t.numel() >= (P - 1) * V]
    assert big == [], big
    abl = explorer.panels["ablation"]
    assert abl.run.logits is None and abl._clean.logits is None
    assert abl.run.top(P - 1, 5) and len(abl.clean_top) == 5


def test_explorer_panels_share_one_copy(explorer, lm):
    """One `[layer, head, pos, pos]` pattern tensor for the attention, composition and paths panels, and
    one folded copy of the weights (the engine's per-model cache) for every panel."""
    pats = [t for t in _tensors([explorer], skip=[lm]) if t.ndim == 4 and tuple(t.shape[-2:]) == (P, P)]
    assert pats and len({t.untyped_storage().data_ptr() for t in pats}) == 1, [t.shape for t in pats]
    a, c, p = (explorer.panels[n] for n in ("attention", "composition", "paths"))
    assert a.data is c.data and p.run.patterns is a.data.pattern
    w = prep.weights(lm)
    assert w is prep.weights(lm)  # cached per model: every panel reads this one
    params = {t.untyped_storage().data_ptr() for t in lm.parameters()}
    folded = {w[n].untyped_storage().data_ptr(): n for n in ("W_E", "W_U")}  # LN folded: copies
    other = {t.untyped_storage().data_ptr(): t for t in _tensors([explorer, prep._CACHE.get(lm)], skip=[lm])
             if t.ndim and (t.shape[0] == V or t.shape[-1] == V)}
    other = {k: t for k, t in other.items() if k not in params and k not in folded}
    # beside them: vocabulary-long factors narrower than d_model (skip-trigram tables: d_head wide), never
    # another copy of a d_model-wide vocabulary matrix
    wide = [tuple(t.shape) for t in other.values() if t.numel() >= V * lm.cfg.d_model]
    assert wide == [], (wide, [tuple(t.shape) for t in other.values()])


def test_compact_ablation_run_equals_the_full_run(lm):
    toks = TEXT.clone()[None]
    for heads, kind in (((), "zero"), (((1, 2), (0, 1)), "mean")):
        full = ablated_run(lm, toks, heads=heads, kind=kind)
        small = ablated_run(lm, toks, heads=heads, kind=kind, keep_logits=False)
        assert small.logits is None
        torch.testing.assert_close(small.token_loss, full.token_loss, rtol=1e-5, atol=1e-5)
        assert abs(small.loss - full.loss) < 1e-5
        from circwidgets.engine.ablation_state import _CHUNK

        assert P > 2 * _CHUNK
        for pos in (0, _CHUNK - 1, _CHUNK, P // 2, P - 1):  # both sides of a chunk boundary, the last position
            got, want = small.top(pos, 5), full.top(pos, 5)
            assert [t for t, _, _ in got] == [t for t, _, _ in want]
            for (_, p1, l1), (_, p2, l2) in zip(got, want):
                assert abs(p1 - p2) < 1e-6 and abs(l1 - l2) < 1e-4
        with pytest.raises(ValueError, match="top 5"):
            small.top(0, 6)


def test_weights_fold_mlp_matrices_on_first_read():
    m = random_model(n_layers=2, n_heads=2, d_model=16, d_head=4, d_vocab=30, attn_only=False, d_mlp=24,
                     normalization="LN", biases=True, seed=4)
    w = prep.weights(m)
    assert "W_in" in w and "W_out" in w and "W_in" not in w._data  # named, not folded yet
    ref = fold_layernorm(m)
    torch.testing.assert_close(w["W_in"], ref.W_in.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(w["W_out"], ref.W_out.detach(), rtol=1e-12, atol=1e-12)
    assert set(w) == {n for n, _ in ref.named_parameters() if n.startswith("W_")}


def test_finiteness_is_checked_again_after_an_in_place_change():
    m = random_model(n_layers=1, n_heads=2, d_model=16, d_head=4, d_vocab=30, seed=5)
    check_finite(m)
    check_finite(m)  # cached: same parameters, same versions
    with torch.no_grad():
        m.W_V[0, 0, 0, 0] = float("nan")  # bumps the parameter's version counter
    with pytest.raises(ValueError, match="W_V"):
        check_finite(m)


def test_skip_trigram_tables_are_bounded_by_bytes():
    m = random_model(n_layers=2, n_heads=2, d_model=16, d_head=4, d_vocab=50, seed=6)
    w = cw.skip_trigrams(m, 0, 0)
    from circwidgets.widgets.skip_trigrams import _table_bytes

    w.table_cache_bytes = int(2.5 * _table_bytes(w.table()))  # room for two tables, not three
    for lh in ((0, 1), (1, 0), (1, 1)):
        w.select(*lh)
    assert len(w._tables) == 2 and (1, 1, 0) in w._tables  # the shown head's table is kept
    assert [r["source_id"] for r in w.rows] == [r.source for r in w.table(1, 1).rows(0, len(w.rows))]
