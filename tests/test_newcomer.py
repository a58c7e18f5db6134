"""What a new user meets first (issue 15): readable reprs, no progress bar left by an export, the top
composition pairs without NaN traps, no U+FFFD in any label, pictures before running."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

import circwidgets as cw
from circwidgets import engine
from circwidgets.engine import _progress

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread per test, then restored

# a text whose BPE splits multi-byte characters into byte fragments
HOSTILE_TEXT = "def f(x):\n    return 'héllo — 日本語 😀' + x  # ünïcödé"


@pytest.fixture(scope="module")
def code_model():
    return cw.load("toy-2l-code")


def test_widget_repr_is_its_text_summary(code_model):
    w = cw.attention(code_model, "def f(x): return x")
    assert repr(w) == w.summary()
    assert "object at 0x" not in repr(w) and "AttentionPatterns" in repr(w)
    ex = cw.explore(code_model, "def f(x): return x", panels=("attention", "eigenvalues"))
    layer, head = engine.opening_head(code_model, "def f(x): return x")  # where the explorer opens
    assert repr(ex).startswith(f"CircuitExplorer: layer {layer} head {head}")


def test_quiet_progress_disables_every_engine_bar(monkeypatch):
    seen = []

    class Recorder:
        def __init__(self, *a, **k):
            seen.append(k.get("disable", False))

    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    _progress.tqdm(range(3), disable=False)
    with _progress.quiet_progress():
        _progress.tqdm(range(3), disable=False)
    _progress.tqdm(range(3), disable=False)
    assert seen == [False, True, False]


def test_save_html_shows_no_progress_bar(code_model, tmp_path, monkeypatch):
    """Every bar an engine call opens during an export is disabled."""
    seen = []

    class Recorder:
        def __init__(self, it=None, *a, **k):
            seen.append(k.get("disable", False))
            self.it = it if it is not None else []

        def __iter__(self):
            return iter(self.it)

        def update(self, *a):
            pass

        def close(self):
            pass

    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    w = cw.eigenvalues(code_model)
    orig = w._payload

    def payload(layer, head):  # an engine loop that would show a bar
        list(_progress.tqdm(range(2), disable=False))
        return orig(layer, head)

    monkeypatch.setattr(w, "_payload", payload)
    w.invalidate()
    assert seen and seen[-1] is False  # outside the export: shown
    seen.clear()
    w.save_html(tmp_path / "e.html", max_states=4)
    assert seen and all(seen)


def test_top_composition_pairs_brute_force(code_model):
    for kind in "qkv":
        s = engine.composition_scores(code_model, kind=kind)
        L, H = s.shape[:2]
        assert torch.isnan(s.reshape(-1)[int(s.reshape(-1).argmax())])  # the trap the helper avoids
        top = engine.top_composition_pairs(s, k=5)
        brute = sorted(((float(s[a, b, c, d]), (a, b), (c, d)) for a, b, c, d in
                        itertools.product(range(L), range(H), range(L), range(H)) if a < c),
                       key=lambda t: -t[0])[:5]
        assert [(p1, p2) for p1, p2, _ in top] == [(p1, p2) for _, p1, p2 in brute]
        assert [v for *_, v in top] == pytest.approx([v for v, *_ in brute])
        assert all(p1[0] < p2[0] for p1, p2, _ in top)
    assert len(engine.top_composition_pairs(s, k=10_000)) == (L * (L - 1) // 2) * H * H
    assert engine.top_composition_pairs(s, k=0) == []
    with pytest.raises(ValueError):
        engine.top_composition_pairs(s[0])


def _strings(v):
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        for x in v.values():
            yield from _strings(x)
    elif isinstance(v, (list, tuple)):
        for x in v:
            yield from _strings(x)


def test_no_replacement_character_in_any_view(code_model):
    toks = code_model.to_tokens(HOSTILE_TEXT)[0]
    raw = [code_model.tokenizer.backend.decode([t]) for t in toks.tolist()]
    assert any("\ufffd" in r for r in raw), "the text must contain byte-fragment tokens"
    views = [cw.attention(code_model, HOSTILE_TEXT), cw.composition(code_model, HOSTILE_TEXT),
             cw.paths(code_model, HOSTILE_TEXT), cw.ablation(code_model, HOSTILE_TEXT),
             cw.skip_trigrams(code_model, layer=0, head=1)]
    for w in views:
        texts = [w.summary()]
        for name in w.trait_names(sync=True):
            texts += list(_strings(getattr(w, name)))
        bad = [t for t in texts if "\ufffd" in t]
        assert not bad, (type(w).__name__, bad[:3])
    # skip-trigram rows over the whole vocabulary: every chip label
    rows = engine.skip_trigrams(code_model, 0, 1, k=200)
    text = json.dumps([str(r) for r in rows], ensure_ascii=False)
    assert "\ufffd" not in text


def test_explorer_and_monitor_mimebundles_have_a_png(code_model):
    import base64

    ex = cw.explore(code_model, "def f(x): return x", panels=("attention", "eigenvalues", "composition"))
    data, _ = ex._repr_mimebundle_()
    png = base64.b64decode(data["image/png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000  # three panels' pictures, not a blank
    assert data["text/plain"].startswith("CircuitExplorer")
    mon = cw.TrainingMonitor(title="t")
    mon.evals = [{"step": 10, "train_loss": 3.0, "val_loss": 3.1, "max_induction": 0.1},
                 {"step": 20, "train_loss": 2.0, "val_loss": 2.2, "max_induction": 0.6}]
    data, _ = mon._repr_mimebundle_()
    assert base64.b64decode(data["image/png"])[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", ["00_tour.ipynb", "06_training_and_phase_change.ipynb"])
def test_entry_notebooks_store_pictures_of_their_live_views(name):
    """On GitHub / before running: the explorer's and the monitor's outputs carry a PNG."""
    from pathlib import Path

    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / name).read_text(encoding="utf-8"))
    marker = {"00_tour.ipynb": "cw.explore(", "06_training_and_phase_change.ipynb": "cw.TrainingMonitor("}[name]
    cells = [c for c in nb["cells"] if c["cell_type"] == "code" and marker in "".join(c["source"])]
    assert cells
    outs = [o for c in cells for o in c.get("outputs", [])
            if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert outs and all("image/png" in o["data"] for o in outs), [list(o.get("data", {})) for o in outs]


def test_eigenvalue_twin_shows_the_unit_circle_at_large_scales():
    import numpy as np

    from circwidgets import plot

    big = plot.eigenvalues({"full OV": np.array([300 + 2j, -50, 0.5 + 0.5j, 0.9j])})
    (ax,) = big.axes
    assert len(ax.child_axes) == 1  # the zoom on |λ| <= 1.6 with the circle and the two small eigenvalues
    assert len(ax.child_axes[0].collections[0].get_offsets()) == 2
    small = plot.eigenvalues({"full OV": np.array([0.5, -0.3j])})
    assert small.axes[0].child_axes == []


def test_composition_details_follow_the_selected_head(code_model):
    comp = cw.composition(code_model, "def f(self): return self.x")
    s = comp.score_matrix("k", False)
    H = code_model.cfg.n_heads
    for layer, head in [(1, 3), (1, 0), (0, 2)]:
        comp.select(layer, head)
        assert (comp.layer, comp.head) == (layer, head)  # the pair never moves the selection elsewhere
        l1, h1, l2, h2 = comp.pair
        assert comp.details["pair"] == comp.pair
        if layer > 0:
            assert (l2, h2) == (layer, head)
            best = max(((a, b) for a in range(layer) for b in range(H)),
                       key=lambda p: float(s[p[0], p[1], layer, head]))
            assert (l1, h1) == best
        else:
            assert (l1, h1) == (layer, head) and l2 > l1
    # a click on a pair still selects its later head
    comp.pair = [0, 1, 1, 2]
    assert (comp.layer, comp.head) == (1, 2) and comp.pair == [0, 1, 1, 2]
    ex = cw.explore(code_model, "def f(self): return self.x", panels=("attention", "composition"))
    ex.select(1, 1)
    assert ex.panels["composition"].pair[2:] == [1, 1]


def test_prefetch_messages_answer_the_payloads_as_binary(code_model, monkeypatch):
    import numpy as np

    w = cw.attention(code_model, "def f(self): return self.x")
    sent = []
    monkeypatch.setattr(w, "send", lambda content, buffers=None: sent.append((content, buffers)))
    last = code_model.cfg.n_heads - 1
    w._on_page_message(w, {"type": "prefetch", "heads": [[1, 2], [0, last], [9, 99], ["x", 1]]}, [])
    assert [c["shown"] for c, _ in sent] == [
        {"layer": 1, "head": 2, "variant": [False], "version": 0},
        {"layer": 0, "head": last, "variant": [False], "version": 0}]  # out-of-range / bad heads: skipped
    content, buffers = sent[0]
    assert content["type"] == "payload" and content["buffer_paths"] == [["pattern", "data"]]
    want = w._payload(1, 2)["pattern"]
    assert bytes(buffers[0]) == bytes(want["data"])
    assert content["values"]["pattern"]["shape"] == want["shape"]
    got = np.frombuffer(bytes(buffers[0]), dtype=np.float16)
    assert np.isfinite(got).all() and got.size == 0.5 * want["shape"][0] * (want["shape"][0] + 1)
    # the selection is untouched by a prefetch; other messages are ignored
    assert (w.layer, w.head) == (0, 0)
    w._on_page_message(w, {"type": "other"}, [])
    w._on_page_message(w, "junk", [])
    assert len(sent) == 2
    # the variant (value-weighted) is part of the page's cache key
    w.value_weighted = True
    sent.clear()
    w._on_page_message(w, {"type": "prefetch", "heads": [[1, 2]]}, [])
    assert sent[0][0]["shown"]["variant"] == [True]


@pytest.mark.parametrize("block_size,col_block", [(3, 2), (None, None)])
def test_skip_trigram_vocab_filter_matches_brute_force(block_size, col_block):
    from circwidgets.model.testing import random_model

    m = random_model(seed=4, n_layers=2, d_model=12, n_heads=3, d_head=5, d_vocab=37)
    layer, head = 1, 2
    g = torch.Generator().manual_seed(0)
    corpus = torch.randint(0, 37, (400,), generator=g) % 23  # tokens 23.. never occur
    sub = engine.frequent_tokens(corpus, 11)
    counts = torch.bincount(corpus, minlength=37)
    assert len(sub) == 11 and counts[sub].min() >= counts[[t for t in range(37) if t not in set(sub.tolist())]].max()
    assert (counts[sub][:-1] >= counts[sub][1:]).all()
    t = engine.skip_trigrams(m, layer, head, k=6, n_dest=4, n_out=3, vocab=sub, block_size=block_size,
                             col_block=col_block)
    WE, WU = m.W_E.double(), m.W_U.double()
    qk = WE @ m.W_Q[layer, head].double() @ m.W_K[layer, head].double().T @ WE.T / m.cfg.attn_scale
    ov = WE @ m.W_V[layer, head].double() @ m.W_O[layer, head].double() @ WU
    qkc = qk - qk.mean(1, keepdim=True)  # centred over the whole vocabulary
    ovc = ov - ov.mean(1, keepdim=True)
    S = sub.tolist()
    strength = {a: max(0.0, float(qkc[S, a].max())) * float(ovc[a, S].max()) for a in S}
    want = sorted(S, key=lambda a: -strength[a])[:6]
    rows = list(t)
    assert [r.source for r in rows] == want
    for r in rows:
        a = r.source
        assert r.strength == pytest.approx(strength[a], rel=1e-4, abs=1e-5)
        col = {b: float(qkc[b, a]) for b in S}
        assert r.dests == sorted(S, key=lambda b: -col[b])[:4]
        assert r.dest_values == pytest.approx([col[b] for b in r.dests], rel=1e-4, abs=1e-5)
        row = {c: float(ovc[a, c]) for c in S}
        assert r.outs == sorted(S, key=lambda c: -row[c])[:3]
        assert set(r.dests) <= set(S) and set(r.outs) <= set(S)
    assert t.for_source(S[3]).source == S[3]
    with pytest.raises(ValueError, match="not among"):
        t.for_source(30)
    for bad in ([], [0, 0], [99]):
        with pytest.raises(ValueError):
            engine.skip_trigrams(m, layer, head, vocab=bad)
    # the whole vocabulary as the subset is the unfiltered table
    full = engine.skip_trigrams(m, layer, head, k=6, n_dest=4, n_out=3)
    same = engine.skip_trigrams(m, layer, head, k=6, n_dest=4, n_out=3, vocab=torch.arange(37))
    assert [(r.source, r.dests, r.outs) for r in full] == [(r.source, r.dests, r.outs) for r in same]


def test_skip_trigram_view_frequent_tokens_control(code_model):
    import warnings

    text = "def f(self):\n    return self.x + self.y\n" * 20
    w = cw.skip_trigrams(code_model, layer=0, head=1, corpus=text)
    assert w.has_corpus and w.top_n == 0
    all_sources = {r["source_id"] for r in w.rows}
    w.top_n = 12  # what the page's control sets
    allowed = set(engine.frequent_tokens(code_model.to_tokens(text, prepend_bos=False), 12).tolist())
    assert w.rows and all(r["source_id"] in allowed for r in w.rows)
    assert all(i in allowed for r in w.rows for _, i, _ in r["dests"] + r["outs"])
    assert w.shown["variant"] == [w.n_rows, 12, w.query]  # the page caches per (rows, top_n, query)
    w.top_n = 0
    assert {r["source_id"] for r in w.rows} == all_sources
    plain = cw.skip_trigrams(code_model, layer=0, head=1)
    assert not plain.has_corpus
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain.top_n = 5  # no corpus: refused with a message, the table stays as it was
    assert plain.top_n == 0 and "corpus" in plain.error
    with pytest.raises(ValueError):
        cw.skip_trigrams(code_model, top_n=5)
