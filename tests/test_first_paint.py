"""First paint by structure, not by timing (the times are benchmarks/bench_memory.py's): the explorer runs
the model on its text once for all its panels (`engine.text_run`), a deferred view computes its data on
the page's first request (or `complete()`) and then holds exactly what the eager view and the engine give,
and the explorer opens on the strongest induction head measured on its own text."""

from __future__ import annotations

import warnings

import pytest
import torch

import circwidgets as cw
from circwidgets import engine
from circwidgets.engine import heads
from circwidgets.engine.ablation_state import ablated_run
from circwidgets.engine.induction import decisive_position, opening_head, text_induction_head
from circwidgets.engine.paths import frozen_run, logit_paths
from circwidgets.engine.text_run import shared_text_run, text_run
from circwidgets.model import ModelConfig, Transformer
from circwidgets.model.testing import half_repeated_tokens, random_model, varied_repeat_tokens
from circwidgets.widgets import AttentionPatterns, Composition, SkipTrigrams
from circwidgets.widgets._data import decode_array

# L*H*P*V above the ablation view's 40M threshold: no per-head effect table (L*H more runs) on setup
P, V = 520, 16384


@pytest.fixture(scope="module")
def lm() -> Transformer:
    return random_model(n_layers=2, n_heads=4, d_model=32, d_head=8, d_vocab=V, n_ctx=P, attn_only=False,
                        normalization="LN", biases=True, seed=7, dtype=torch.float32)


def _tokens() -> torch.Tensor:
    return varied_repeat_tokens(P, V, seed=1)  # repeats at many distances: induction positions, as in text


class ForwardSpy:
    """Counts the model's forward passes (every engine entry point ends in `Transformer.forward`)."""

    def __init__(self, monkeypatch, model: Transformer):
        self.calls: list[torch.Tensor] = []
        orig = Transformer.forward

        def forward(m, tokens):
            if m is model:
                self.calls.append(m.check_tokens(tokens).clone())
            return orig(m, tokens)

        monkeypatch.setattr(Transformer, "forward", forward)

    def on(self, toks: torch.Tensor) -> int:
        """How many passes ran on `toks` (`[pos]`) as one sequence."""
        return sum(1 for c in self.calls if c.shape == (1, toks.shape[0]) and torch.equal(c[0], toks))


def _explore(lm, toks, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cw.explore(lm, toks, **kw)


def _state(e) -> dict:
    """Every panel's synced data (what the page draws), by panel."""
    skip = {"deferred", "layout", "tooltip", "_dom_classes", "comm", "keys", "log", "_esm", "_css"}
    out = {}
    for name, w in e.panels.items():
        out[name] = {k: getattr(w, k) for k in w.keys if not k.startswith("_") and k not in skip}
    return out


def test_deferred_explorer_runs_the_model_once_for_every_panel(lm, monkeypatch):
    toks = _tokens()
    spy = ForwardSpy(monkeypatch, lm)
    e = _explore(lm, toks, defer=True)
    assert len(spy.calls) == 1 and spy.on(toks) == 1  # the shared run; nothing else, not even a head choice
    waiting = {n for n, w in e.panels.items() if w.deferred}
    assert waiting == set(e.panels), waiting  # every panel waits for the page (attention: its grid's scores)
    assert e.panels["attention"].pattern and not e.panels["attention"].scores  # painted from the shared run
    assert e._run is not None and shared_text_run(lm, toks) is e._run  # held for the panels still to prepare
    e.complete()
    assert not any(w.deferred for w in e.panels.values())
    assert spy.on(toks) == 1  # the panels prepared late read the same run: no second pass on the text
    # the only other passes: the attention grid's behaviour scores, on repeated random tokens
    assert all(c.shape[1] != P for c in spy.calls[1:])
    assert e._run is None and shared_text_run(lm, toks) is None  # released once no panel waits


def test_eager_explorer_runs_the_model_on_its_text_once(lm, monkeypatch):
    toks = _tokens()
    spy = ForwardSpy(monkeypatch, lm)
    e = _explore(lm, toks, defer=False)
    assert not any(w.deferred for w in e.panels.values())
    assert spy.on(toks) == 1
    assert e._run is None  # nothing waits: each panel keeps only its part


def test_deferred_explorer_shows_what_the_eager_one_and_the_engine_show(lm):
    toks = _tokens()
    lazy = _explore(lm, toks, defer=True)
    lazy.complete()
    eager = _explore(lm, toks, defer=False)
    a, b = _state(lazy), _state(eager)
    for name in a:
        assert a[name] == b[name], name  # every synced value, exactly
    lazy.select(1, 2)
    eager.select(1, 2)
    assert _state(lazy) == _state(eager)
    # and the numbers are the engine's own (runs of their own: no shared run is alive now)
    del lazy, eager
    assert shared_text_run(lm, toks) is None
    e = _explore(lm, toks, defer=True)
    e.complete()
    abl, paths, att = e.panels["ablation"], e.panels["paths"], e.panels["attention"]
    own = ablated_run(lm, toks[None], keep_logits=abl._keep_logits())
    assert torch.equal(abl._clean.token_loss, own.token_loss) and abl.clean_loss == own.loss
    assert abl.run.top(P - 1, 5) == own.top(P - 1, 5)
    assert paths.position == decisive_position(lm, toks, (e.layer, e.head))  # its own hook_result pass
    fr = frozen_run(lm, toks)
    lp = logit_paths(fr, paths.position, paths.target, max_order=paths.max_order)
    assert paths.total == lp.total and paths.term_values() == lp.for_token()
    assert torch.equal(fr.sources, paths.run.sources) and torch.equal(fr.final_resid, paths.run.final_resid)
    want = heads.all_head_scores(lm)["induction"]
    assert torch.equal(torch.from_numpy(decode_array(att.scores)), want.float())


def test_text_run_parts_equal_their_engine_functions(lm):
    toks = _tokens()
    run = text_run(lm, toks)
    assert engine.attention_patterns(lm, toks) is run.attention  # shared while the run lives
    # patterns and value norms as a run of attention_patterns' own computes them (another dtype: no sharing)
    alone = engine.attention_patterns(lm, toks, dtype=torch.float64)
    torch.testing.assert_close(run.attention.pattern.double(), alone.pattern, rtol=0, atol=1e-7)
    # hook_result of a head, from the run's z
    kept = []
    name = "blocks.1.attn.hook_result"
    lm.run_with_hooks(toks[None], [(name, lambda x, hp: kept.append(x[0, :, 3].clone()))])
    assert torch.equal(run.head_output(1, 3), kept[0])
    # the clean run, compact and full
    del run
    assert shared_text_run(lm, toks) is None
    full, compact = ablated_run(lm, toks[None]), ablated_run(lm, toks[None], keep_logits=False)
    run = text_run(lm, toks)
    assert torch.equal(run.clean_run(keep_logits=True).logits, full.logits)
    assert torch.equal(run.clean_run(keep_logits=False).token_loss, compact.token_loss)
    assert ablated_run(lm, toks[None], keep_logits=False) is run.clean_run(keep_logits=False)


def test_the_explorer_opens_on_the_texts_strongest_induction_head(lm):
    toks = _tokens()
    by_forward = heads.all_head_scores(lm, tokens=toks[None], kinds=("induction",))["induction"]
    data = engine.attention_patterns(lm, toks)
    from_patterns = heads.scores_from_patterns(data.pattern, toks, kinds=("induction",))["induction"]
    assert torch.equal(from_patterns, by_forward)  # the same arithmetic on the same patterns
    layer, head = divmod(int(by_forward[1:].argmax()), lm.cfg.n_heads)
    assert text_induction_head(lm, toks) == (layer + 1, head) == opening_head(lm, toks)
    e = _explore(lm, toks, defer=True)
    assert set(e.selections().values()) == {(layer + 1, head)}
    # a text in which no token occurs twice has no induction score: the repeated-token sweep decides
    once = torch.arange(40)
    assert text_induction_head(lm, once) is None
    assert opening_head(lm, once) == engine.strongest_induction_head(lm)
    # nor does a text repeated once: every repeat at one distance, which a fixed-offset head scores as well
    assert text_induction_head(lm, half_repeated_tokens(P, V, seed=1)) is None


def test_deferred_views_compute_on_the_pages_request(lm):
    m = random_model(n_layers=2, n_heads=2, d_model=16, d_head=4, d_vocab=60, seed=8)
    w = SkipTrigrams(m, 1, 1, defer=True)
    assert w.deferred and w.rows == [] and w.shown == {}
    assert "computed when the view is first shown" in w.summary()
    assert "image/png" not in w._repr_mimebundle_()[0]  # the static picture never waits for the scan
    w._on_page_message(w, {"type": "complete"}, [])  # what the page sends when it first draws the view
    assert not w.deferred and w.rows == SkipTrigrams(m, 1, 1).rows and w.shown["layer"] == 1
    a = AttentionPatterns(m, [0, 1, 2, 3, 1, 2, 3], defer_scores=True)
    assert a.deferred and a.scores == {} and a.pattern  # the pattern is painted, the grid's colour waits
    a._on_page_message(a, {"type": "complete"}, [])
    assert not a.deferred and a.scores == AttentionPatterns(m, [0, 1, 2, 3, 1, 2, 3]).scores
    # a deferred panel follows a selection made while it waits, and is prepared for it
    c = Composition(m, [0, 1, 2, 3, 1, 2, 3], layer=1, head=1, defer=True)
    assert c.deferred and c.focus == {} and c.details == {}
    c.select(0, 1)
    c.complete()
    assert (c.layer, c.head) == (0, 1) and c.pair == c.pair_for_head(0, 1) and c.focus["head"] == 1


# ------------------------------------------------------------------ the opening head's sweep (repeat lengths)
def _planted_model(n_ctx: int = 128, d_vocab: int = 64, offset: int = 22, match: float = 4.0) -> Transformer:
    """Two attention-only layers, positions and tokens one-hot (shortformer: positions enter Q and K only):
    L0H0 attends one back and copies the token there into a subspace of its own; L1H1 is an induction head
    (K-composition: its query's token against the copied previous token, logit `match`, so it is imperfect and
    weaker on longer texts); L1H0 attends exactly `offset` back, which `BOS + r + r` with |r| = offset + 1
    rewards as much as induction (the trap of a single repeat length). Every other weight is zero."""
    P, V = n_ctx, d_vocab
    cfg = ModelConfig(n_layers=2, d_model=P + 2 * V, n_heads=2, d_head=P, d_vocab=V, n_ctx=P, attn_only=True,
                      normalization=None, positional="shortformer", biases=False, bos_token_id=0)
    m = Transformer(cfg, seed=0).double().requires_grad_(False)
    pos, tok, cp = slice(0, P), slice(P, P + V), slice(P + V, P + 2 * V)
    eye_p, eye_v = torch.eye(P, dtype=torch.float64), torch.eye(V, dtype=torch.float64)

    def back(k: int) -> tuple[torch.Tensor, torch.Tensor]:  # query i -> e_i, key j -> e_{j+k}: attends k back
        key = torch.zeros(P, P, dtype=torch.float64)
        idx = torch.arange(P - k)
        key[idx, idx + k] = 1.0
        return 12.0 * cfg.attn_scale * eye_p, key

    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.W_pos[:, pos], m.W_E[:, tok], m.W_U[tok, :] = eye_p, eye_v, eye_v
        m.W_Q[0, 0][pos], m.W_K[0, 0][pos] = back(1)
        m.W_V[0, 0][tok, :V], m.W_O[0, 0][:V, cp] = eye_v, eye_v
        m.W_Q[1, 0][pos], m.W_K[1, 0][pos] = back(offset)
        m.W_Q[1, 1][tok, :V] = match * cfg.attn_scale * eye_v
        m.W_K[1, 1][cp, :V], m.W_V[1, 1][cp, :V], m.W_O[1, 1][:V, tok] = eye_v, eye_v, eye_v
    return m


def _reference_sweep(model: Transformer, n_seqs: int = 4) -> tuple[torch.Tensor, tuple[int, int]]:
    """The opening sweep by its definition, dense in float64: per repeat length, the mass each head's pattern
    (the model's own cache) puts on the token after an earlier occurrence of the query's token, over the rows
    that have one, summed over `n_seqs` sequences of `BOS + r + r`; the mean over the lengths; its argmax in
    layers >= 1. -> (scores `[layer, head]`, head)."""
    lens = heads.detection_lengths(model)
    total = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, dtype=torch.float64)
    for n in lens:
        toks = heads.induction_tokens(model, n, n_seqs)  # [batch, pos]: BOS + r + r, seeded as the engine's
        B, Pn = toks.shape
        mask = torch.zeros(B, Pn, Pn, dtype=torch.float64)
        for b in range(B):
            for i in range(Pn):
                for j in range(1, i + 1):
                    mask[b, i, j] = float(toks[b, j - 1] == toks[b, i])
        rows = (mask.sum(-1) > 0).double()
        _, cache = model.run_with_cache(toks)
        for layer in range(model.cfg.n_layers):
            A = cache["pattern", layer].double()  # [batch, head, q, k]
            total[layer] += torch.einsum("bhqk,bqk->h", A, mask) / torch.einsum("bhqk,bq->h", A, rows)
    score = total / len(lens)
    first = 1 if model.cfg.n_layers > 1 else 0
    layer, head = divmod(int(score[first:].argmax()), model.cfg.n_heads)
    return score, (layer + first, head)


def test_the_opening_head_is_the_sweeps_and_never_a_fixed_offset_head():
    m = _planted_model()
    single = heads.head_scores(m, "induction", seq_len=23)
    assert single[1, 0] > 0.99 > single[1, 1]  # at the one length it matches, the fixed-offset head wins
    score, want = _reference_sweep(m)
    assert want == (1, 1)  # over the lengths, the induction head
    torch.testing.assert_close(heads.head_scores(m, "induction").double(), score, rtol=0, atol=1e-6)
    once = torch.arange(1, 40)  # no token twice: the text cannot tell, the sweep decides
    assert text_induction_head(m, once) is None
    assert opening_head(m, once) == engine.strongest_induction_head(m) == (1, 1)
    r = torch.randperm(63, generator=torch.Generator().manual_seed(2))[:50] + 1
    twice = torch.cat([r, r])  # every repeat at one distance: a fixed-offset head would score as well
    assert text_induction_head(m, twice) is None and opening_head(m, twice) == (1, 1)


@pytest.mark.parametrize("name", ["toy-2l-code", "toy-2l-induction", "lm"])
def test_the_opening_sweep_equals_its_dense_definition(name, lm):
    if name == "lm":
        m = lm
    elif name in cw.zoo.list():
        m = cw.load(name).requires_grad_(False)
    else:
        pytest.skip(f"{name} is not shipped")
    score, want = _reference_sweep(m)
    got = heads.all_head_scores(m)["induction"]
    torch.testing.assert_close(got.double(), score, rtol=0, atol=1e-5)  # the engine's arithmetic, float32
    assert opening_head(m, torch.arange(1, 30)) == engine.strongest_induction_head(m) == want


def _fresh_lm(seed: int) -> Transformer:
    """A model no test has run the sweep on (the sweep is cached per model and weights)."""
    return random_model(n_layers=2, n_heads=4, d_model=32, d_head=8, d_vocab=V, n_ctx=P, attn_only=False,
                        normalization="LN", biases=True, seed=seed, dtype=torch.float32)


def _sweep_calls(spy: ForwardSpy, model: Transformer) -> list[tuple[int, int]]:
    return [tuple(c.shape) for c in spy.calls if c.shape[1] in {2 * n + 1 for n in heads.detection_lengths(model)}]


def test_the_sweep_runs_once_per_weights_version(monkeypatch):
    m = _fresh_lm(21)
    lens = heads.detection_lengths(m)
    spy = ForwardSpy(monkeypatch, m)
    head = opening_head(m, torch.arange(1, 60))
    # one pass per repeat length on the grid's own 4 sequences (not 8), every kind scored in it
    assert _sweep_calls(spy, m) == [(4, 2 * n + 1) for n in lens]
    spy.calls.clear()
    first = heads.all_head_scores(m)
    assert engine.strongest_induction_head(m) == head and opening_head(m, torch.arange(1, 60)) == head
    assert torch.equal(heads.head_scores(m, "previous_token"), first["previous_token"])
    assert spy.calls == []  # all of it read from the one sweep
    # what a pass computes when nothing is cached (a hook attached: the engine does not cache hooked runs)
    with m.hooks([("blocks.0.hook_resid_pre", lambda x, hp: None)]):
        fresh = heads.all_head_scores(m)
        assert heads.head_scores(m, "induction", n_seqs=4) is not None
    assert len(spy.calls) == 2 * len(lens)
    for k in heads.KINDS:
        assert torch.equal(first[k], fresh[k]), k
        assert torch.equal(heads.all_head_scores(m, kinds=(k,))[k], fresh[k])  # a kind alone: the same values
    first["induction"].fill_(0.0)  # callers get copies
    assert torch.equal(heads.all_head_scores(m)["induction"], fresh["induction"])
    spy.calls.clear()
    with torch.no_grad():
        m.W_Q[1].mul_(3.0)  # new weights: a new sweep
    edited = heads.all_head_scores(m)
    assert len(spy.calls) == len(lens) and not torch.equal(edited["induction"], fresh["induction"])
    with m.hooks([("blocks.0.hook_resid_pre", lambda x, hp: None)]):
        assert torch.equal(heads.all_head_scores(m)["induction"], edited["induction"])


def test_an_explorer_on_a_text_without_repeats_sweeps_once_for_its_head_and_grid(monkeypatch):
    m = _fresh_lm(22)
    toks = torch.randperm(V, generator=torch.Generator().manual_seed(3))[:P]  # no token twice
    spy = ForwardSpy(monkeypatch, m)
    e = _explore(m, toks, defer=True)
    lens = heads.detection_lengths(m)
    assert spy.on(toks) == 1 and _sweep_calls(spy, m) == [(4, 2 * n + 1) for n in lens]
    assert set(e.selections().values()) == {engine.strongest_induction_head(m)}
    e.complete()
    assert spy.on(toks) == 1 and len(_sweep_calls(spy, m)) == len(lens)  # the grid's scores: the same sweep
    att = e.panels["attention"]
    assert torch.equal(torch.from_numpy(decode_array(att.scores)), heads.all_head_scores(m)["induction"])


def test_the_paths_view_runs_no_sweep_on_a_text_without_induction_positions(monkeypatch):
    m = _fresh_lm(23)
    toks = torch.randperm(V, generator=torch.Generator().manual_seed(4))[:P]
    assert len(engine.induction_positions(toks)) == 0
    spy = ForwardSpy(monkeypatch, m)
    w = cw.paths(m, toks)
    assert spy.on(toks) == 1 and len(spy.calls) == 1  # the text's own pass, nothing on repeated tokens
    assert w.position == P - 1 == decisive_position(m, toks, (1, 0))


def test_one_predicate_says_which_models_share_a_text_run(lm):
    from circwidgets.engine.text_run import supports_text_run

    assert supports_text_run(lm)
    no_layers = random_model(n_layers=0, n_heads=1, d_model=8, d_head=4, d_vocab=20, n_ctx=8)
    assert not supports_text_run(no_layers)
    with pytest.raises(ValueError, match="at least one layer"):
        text_run(no_layers, torch.arange(5))
    assert not supports_text_run(object())
    with pytest.raises(TypeError, match="in-memory"):
        text_run(object(), torch.arange(5))
