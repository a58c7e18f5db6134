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
from circwidgets.model import Transformer
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
