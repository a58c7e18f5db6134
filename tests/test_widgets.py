"""Widgets, Python side: the numbers each widget sends are the engine's (and the model's own),
bad requests become messages + warnings (never exceptions), static fallbacks work. The browser side
is tests/browser/test_widgets_browser.py."""

from __future__ import annotations

import contextlib
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import circwidgets as cw
from circwidgets.engine import circuits, heads
from circwidgets.engine.patterns import attention_patterns, pattern_thumbnails, value_weighted_pattern
from circwidgets.engine.skip_trigrams import skip_trigrams as engine_skip_trigrams
from circwidgets.model import Tokenizer
from circwidgets.model.testing import random_model
from circwidgets.widgets import AttentionPatterns, CircuitWidgetWarning, Eigenvalues, SkipTrigrams
from circwidgets.widgets._data import decode_array, encode_array, find_token, tokens_and_labels
from circwidgets.widgets.base import STATIC_DIR

HOSTILE = ["<img src=x onerror=alert(1)>", "</script>", "$x$", " lead", "new\nline"]
CONFIGS = {
    "attn_only": dict(),
    "ln_mlp_bias": dict(attn_only=False, normalization="LN", biases=True, d_mlp=20),
    "shortformer": dict(positional="shortformer"),
}


def hostile_model(**kw):
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import models, pre_tokenizers

    vocab = ["<bos>"] + HOSTILE + [f"w{i}" for i in range(14)]
    rt = RustTokenizer(models.WordLevel({s: i for i, s in enumerate(vocab)}, unk_token="<bos>"))
    rt.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    m = random_model(d_vocab=len(vocab), n_ctx=12, bos_token_id=0, **kw)
    m.tokenizer = Tokenizer(rt)
    return m


@contextlib.contextmanager
def no_warnings():
    """A CircuitWidgetWarning inside this block fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", CircuitWidgetWarning)
        yield


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def expect_warning(fn, match: str):
    """Run fn; it must emit a CircuitWidgetWarning matching `match` and raise nothing."""
    with pytest.warns(CircuitWidgetWarning, match=match):
        fn()


def reference_v_norm(model, toks, layer):
    """‖v‖ per (head, key position) from the model's own cache, by a loop."""
    _, cache = model.run_with_cache(toks)
    v = cache["v", layer][0]  # [pos, head, d_head]
    return torch.stack([torch.stack([v[p, h].norm() for p in range(v.shape[0])]) for h in range(v.shape[1])])


# ---------------------------------------------------------------------------------------- engine.patterns
@pytest.mark.parametrize("name", list(CONFIGS))
def test_attention_patterns_equal_the_models_cache(name):
    m = random_model(seed=3, **CONFIGS[name])
    toks = torch.tensor([0, 5, 3, 5, 3, 9, 1])
    data = attention_patterns(m, toks)
    _, cache = m.run_with_cache(toks)
    for layer in range(m.cfg.n_layers):
        # float64: the hooked and the cached forward may take different (equal up to rounding) paths
        torch.testing.assert_close(data.pattern[layer], cache["pattern", layer][0], rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(data.v_norm[layer], reference_v_norm(m, toks, layer), rtol=1e-12, atol=1e-12)
        for h in range(m.cfg.n_heads):
            vw = data.head(layer, h, value_weighted=True)
            ref = torch.tensor([[float(cache["pattern", layer][0, h, i, j]) * float(data.v_norm[layer, h, j])
                                 for j in range(len(toks))] for i in range(len(toks))], dtype=torch.float32)
            torch.testing.assert_close(vw, ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(data.tokens, toks)


def test_value_weighted_pattern_broadcasts_over_keys():
    a = torch.rand(2, 3, 4, 4)
    v = torch.rand(2, 3, 4)
    out = value_weighted_pattern(a, v)
    assert torch.allclose(out[1, 2, :, 3], a[1, 2, :, 3] * v[1, 2, 3])


def test_attention_patterns_float16_storage_and_errors():
    m = random_model()
    d16 = attention_patterns(m, [0, 1, 2, 3], dtype=torch.float16)
    d64 = attention_patterns(m, [0, 1, 2, 3])
    assert d16.pattern.dtype == torch.float16
    assert torch.allclose(d16.pattern.double(), d64.pattern, atol=1e-3)
    with pytest.raises(ValueError, match="n_ctx"):
        attention_patterns(m, list(range(11)))
    with pytest.raises(ValueError, match="one sequence"):
        attention_patterns(m, [[0, 1], [1, 2]])


def test_pattern_thumbnails_are_block_means():
    m = random_model(n_ctx=10)
    data = attention_patterns(m, [0, 3, 1, 4, 1, 5, 9, 2])
    th = pattern_thumbnails(data, size=4)  # 8 positions -> 2 x 2 blocks
    assert th.shape == (2, 3, 4, 4)
    for layer, head, a, b in [(0, 0, 0, 0), (1, 2, 3, 1), (0, 1, 2, 2)]:
        block = data.pattern[layer, head, 2 * a:2 * a + 2, 2 * b:2 * b + 2]
        assert abs(float(th[layer, head, a, b]) - float(block.mean())) < 1e-6
    assert pattern_thumbnails(data, size=16).shape == (2, 3, 8, 8)  # never more than n x n
    with pytest.raises(ValueError, match="size"):
        pattern_thumbnails(data, size=0)


# ---------------------------------------------------------------------------------------- encoding
@pytest.mark.parametrize("dtype,tol", [("float16", 1e-3), ("float32", 0), ("uint8", 1 / 255 / 2 + 1e-7)])
def test_encode_array_round_trip(dtype, tol):
    x = torch.rand(5, 7)
    back = decode_array(encode_array(x, dtype))
    assert back.shape == (5, 7)
    span = float(x.max() - x.min()) if dtype == "uint8" else 1.0
    assert np.abs(back - x.numpy()).max() <= tol * span + 1e-7


def test_encode_tril_layout_sends_half_and_round_trips():
    a = torch.rand(6, 6).tril()
    p = encode_array(a, "float32", layout="tril")
    assert len(p["data"]) == 4 * 21
    np.testing.assert_array_equal(decode_array(p), a.numpy())
    with pytest.raises(ValueError, match="square"):
        encode_array(torch.rand(2, 3), layout="tril")


# ---------------------------------------------------------------------------------------- AttentionPatterns
@pytest.mark.parametrize("name", list(CONFIGS))
def test_attention_widget_sends_each_heads_pattern(name):
    m = random_model(seed=1, **CONFIGS[name])
    toks = [0, 4, 2, 4, 2, 7]
    _, cache = m.run_with_cache(torch.tensor(toks))
    with no_warnings():
        w = cw.attention(m, toks)
        for layer in range(m.cfg.n_layers):
            for head in range(m.cfg.n_heads):
                w.select(layer, head)
                assert w.shown["layer"] == layer and w.shown["head"] == head
                got = decode_array(w.pattern)
                np.testing.assert_allclose(got, cache["pattern", layer][0, head].numpy(), atol=1e-3, rtol=1e-3)
        w.value_weighted = True
        assert w.shown["variant"] == [True]
        want = attention_patterns(m, toks).head(w.layer, w.head, value_weighted=True)
        np.testing.assert_allclose(decode_array(w.pattern), want.numpy(), rtol=2e-3, atol=1e-3)
    assert w.error == ""
    assert w.labels == [str(t) for t in toks]


def test_attention_widget_thumbnails_are_the_engines():
    m = random_model(seed=6)
    toks = [0, 1, 2, 3, 4, 5, 6]
    w = cw.attention(m, toks)
    want = pattern_thumbnails(attention_patterns(m, toks))
    np.testing.assert_allclose(decode_array(w.thumbs), want.numpy(), atol=1e-3)


def test_attention_widget_caches_per_head(monkeypatch):
    m = random_model()
    w = AttentionPatterns(m, [0, 1, 2])
    calls = []
    orig = w.data.head
    monkeypatch.setattr(w.data, "head", lambda *a, **k: calls.append(a) or orig(*a, **k))
    w.select(1, 1)
    w.select(0, 0)
    w.select(1, 1)
    assert calls == [(1, 1)]  # (0, 0) was sent at construction, (1, 1) answered from the cache second time


def test_attention_widget_scores_are_the_engines():
    m = random_model(seed=2)
    w = cw.attention(m, [0, 1, 2, 3, 1, 2, 3])
    want = heads.all_head_scores(m)
    np.testing.assert_allclose(decode_array(w.scores), want["induction"].numpy(), rtol=1e-6)
    w.score_name = "previous_token"
    np.testing.assert_allclose(decode_array(w.scores), want["previous_token"].numpy(), rtol=1e-6)
    w.score_name = "previous_token_text"
    text = heads.all_head_scores(m, tokens=torch.tensor([[0, 1, 2, 3, 1, 2, 3]]))["previous_token"]
    np.testing.assert_allclose(decode_array(w.scores), text.numpy(), rtol=1e-6)
    w.score_name = "ov_positivity"
    pos = circuits.eigen_positivity(m, circuit="ov", full=True).float()
    np.testing.assert_allclose(decode_array(w.scores), pos.numpy(), rtol=1e-6, atol=1e-7)
    expect_warning(lambda: setattr(w, "score_name", "nonsense"), "nonsense")
    assert w.score_name == "ov_positivity"


def test_attention_widget_bad_requests_never_raise():
    m = random_model()
    w = cw.attention(m, [0, 1, 2])
    w.select(1, 2)
    expect_warning(lambda: setattr(w, "head", 99), r"head=99 is out of range: this model has heads 0\.\.2")
    assert (w.layer, w.head) == (1, 2) and "out of range" in w.error
    assert w.shown["head"] == 2
    expect_warning(lambda: setattr(w, "layer", 5), "layer=5")
    assert w.layer == 1
    with pytest.warns(CircuitWidgetWarning) as rec:
        w.head = 42
    assert rec[0].filename == __file__  # the warning points at the user's line, not at library code
    w.select(-1, -1)  # negative indices: counted from the end, as in Python
    assert (w.layer, w.head) == (1, 2) and w.error == ""
    # too long / bad labels / NaN weights at construction: a widget with a message, not an exception
    bad = [
        (lambda: cw.attention(m, list(range(11))), "n_ctx allows at most 10"),
        (lambda: cw.attention(m, [0, 1], labels=["a"]), "labels has 1 strings but there are 2"),
        (lambda: cw.attention(m, [0, 99]), "outside"),
        (lambda: cw.attention(m, "text"), "no tokenizer"),
    ]
    for fn, msg in bad:
        with pytest.warns(CircuitWidgetWarning, match=msg):
            bw = fn()
        assert msg.split()[0] in bw.error
    nan = random_model()
    with torch.no_grad():
        nan.W_Q[0, 0, 0, 0] = float("nan")
    with pytest.warns(CircuitWidgetWarning, match="NaN"):
        bw = cw.attention(nan, [0, 1])
    bw.head = 1  # still nothing raised
    for make in (cw.eigenvalues, lambda mm: cw.skip_trigrams(mm, 0, 0)):
        with pytest.warns(CircuitWidgetWarning, match="NaN"):
            make(nan)


def test_attention_text_box_with_tokenizer():
    m = hostile_model()
    w = cw.attention(m, "w1 w2 w3 w1 w2")
    assert w.labels == ["<bos>", "w1", "w2", "w3", "w1", "w2"] and w.has_tokenizer
    w.select(1, 1)
    w.text = "w4 </script> w4"
    assert w.labels == ["<bos>", "w4", "</script>", "w4"]
    assert w.shown["version"] == 1
    want = attention_patterns(m, m.to_tokens("w4 </script> w4")).pattern[1, 1]
    np.testing.assert_allclose(decode_array(w.pattern), want.numpy(), atol=1e-3)
    expect_warning(lambda: setattr(w, "text", " ".join(["w1"] * 20)), "n_ctx")
    assert w.text == "w4 </script> w4" and len(w.labels) == 4


def test_labels_and_hostile_tokens_are_plain_strings():
    m = hostile_model()
    ids = [0, 1, 2, 3, 4, 5]
    toks, labels = tokens_and_labels(m, ids)
    assert labels == ["<bos>"] + HOSTILE
    w = cw.attention(m, ids, labels=[f"p{i}" for i in range(6)])
    assert w.labels == [f"p{i}" for i in range(6)]
    w2 = cw.attention(m, ids)
    png = w2.png()  # "$x$" and newlines must not trip matplotlib's mathtext
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_find_token():
    m = hostile_model()
    assert find_token(m, "</script>") == 2
    assert find_token(m, "#7") == 7 and find_token(m, "7") == 7
    with pytest.raises(LookupError, match="not a single token"):
        find_token(m, "unknown-word")
    with pytest.raises(LookupError, match="out of range"):
        find_token(m, "#500")
    with pytest.raises(LookupError, match="no tokenizer"):
        find_token(random_model(), "x")


# ---------------------------------------------------------------------------------------- Eigenvalues
def test_eigenvalues_widget_sends_the_engines_numbers():
    m = random_model(seed=4)
    w = cw.eigenvalues(m)
    assert [c for c, _ in w.circuits] == ["ov", "qk", "qk_pos"]
    for c in ("ov", "qk", "qk_pos"):
        np.testing.assert_allclose(decode_array(w.positivity[c]),
                                   circuits.eigen_positivity(m, circuit=c).float().numpy(), rtol=1e-6, atol=1e-7)
    for layer, head in [(0, 0), (1, 2), (0, 1)]:
        w.select(layer, head)
        assert (w.shown["layer"], w.shown["head"]) == (layer, head)
        for c in ("ov", "qk", "qk_pos"):
            lam = circuits.eigenvalues(m, layer, head, circuit=c)
            got = decode_array(w.eigs[c])
            assert got.shape == (m.cfg.d_head, 2)
            np.testing.assert_allclose(got[:, 0] + 1j * got[:, 1], lam.numpy(), rtol=1e-5, atol=1e-6)
    expect_warning(lambda: setattr(w, "layer", 7), "layer=7")
    assert w.layer == 0
    assert "positivity" in w.summary()
    assert w.png()[:4] == b"\x89PNG"


def test_zero_layer_model_gets_a_message():
    m = random_model(n_layers=0)
    for make in (lambda: cw.attention(m, [0, 1]), lambda: cw.eigenvalues(m), lambda: cw.skip_trigrams(m)):
        with pytest.warns(CircuitWidgetWarning, match="no attention heads"):
            w = make()
        w.head = 1  # nothing raised, nothing sent
        assert "no attention heads" in w.error and w.shown == {}


def test_eigenvalues_composed_through_an_earlier_head():
    """The "QK composed through" option: each later head's K-composition term through h1 (engine
    k_composition_qk), its eigenvalues against a dense float64 computation, NaN positivity before h1."""
    m = random_model(seed=6, normalization=None)
    w = cw.eigenvalues(m, layer=1, head=2, through=(0, 1))
    assert [c for c, _ in w.circuits][-1] == "qk_comp" and "L0H1" in w.circuits[-1][1]
    pos = decode_array(w.positivity["qk_comp"])
    assert np.isnan(pos[0]).all()
    for head in range(m.cfg.n_heads):
        W = m.W_E @ m.W_Q[1, head] @ m.W_K[1, head].T @ (m.W_V[0, 1] @ m.W_O[0, 1]).T @ m.W_E.T  # dense, float64
        lam = torch.linalg.eigvals(W)
        assert pos[1, head] == pytest.approx(float(lam.real.sum() / lam.abs().sum()), abs=1e-4)
    got = decode_array(w.eigs["qk_comp"])
    dense = torch.linalg.eigvals(m.W_E @ m.W_Q[1, 2] @ m.W_K[1, 2].T @ (m.W_V[0, 1] @ m.W_O[0, 1]).T @ m.W_E.T)
    top = dense[dense.abs().argsort(descending=True)][:len(got)].numpy()
    np.testing.assert_allclose(np.sort_complex(got[:, 0] + 1j * got[:, 1]), np.sort_complex(top), rtol=1e-4, atol=1e-5)
    w.select(0, 0)
    assert decode_array(w.eigs["qk_comp"]).shape == (0, 2)  # no composed circuit for a head before h1
    expect_warning(lambda: setattr(w, "through", [1, 0]), "no later head")
    assert w.through == [0, 1]
    w.through = []
    assert "qk_comp" not in dict(w.circuits) and "qk_comp" not in w.eigs


def test_eigenvalues_without_positions():
    m = random_model(positional="none")
    w = cw.eigenvalues(m)
    assert [c for c, _ in w.circuits] == ["ov", "qk"] and set(w.eigs) == {"ov", "qk"}


# ---------------------------------------------------------------------------------------- SkipTrigrams
def test_skip_trigrams_widget_rows_equal_the_engines():
    m = hostile_model(seed=5)
    w = cw.skip_trigrams(m, 1, 2, k=5)
    t = engine_skip_trigrams(m, 1, 2, k=20, n_dest=5, n_out=5)
    want = t.rows(0, 5)
    assert [r["source_id"] for r in w.rows] == [r.source for r in want]
    for got, r in zip(w.rows, want):
        assert [d[1] for d in got["dests"]] == r.dests and [o[1] for o in got["outs"]] == r.outs
        np.testing.assert_allclose([d[2] for d in got["dests"]], r.dest_values, rtol=1e-6)
        np.testing.assert_allclose([o[2] for o in got["outs"]], r.out_values, rtol=1e-6)
        assert got["source"] == m.tokenizer.id_to_str([r.source])[0]
    w.n_rows = 12  # "more rows"
    assert len(w.rows) == 12 and [r["source_id"] for r in w.rows] == [r.source for r in t.rows(0, 12)]
    w.query = "</script>"
    f = t.for_source(2)
    assert w.found["source_id"] == 2 and [d[1] for d in w.found["dests"]] == f.dests
    w.select(0, 1)  # another head: its own table, the search follows
    t01 = engine_skip_trigrams(m, 0, 1, k=20, n_dest=5, n_out=5)
    assert [r["source_id"] for r in w.rows] == [r.source for r in t01.rows(0, 12)]
    assert [d[1] for d in w.found["dests"]] == t01.for_source(2).dests
    expect_warning(lambda: setattr(w, "query", "unknown-word"), "not a single token")
    assert w.found == {} and (w.layer, w.head) == (0, 1)
    expect_warning(lambda: setattr(w, "n_rows", 0), "at least 1")
    assert w.n_rows == 12
    text = w.summary()
    assert "SkipTrigrams: layer 0 head 1" in text
    assert w.png()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------- front-end bundle
def test_mimebundle_has_static_fallbacks():
    w = cw.attention(random_model(), [0, 1, 2])
    data, _ = w._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    assert data["text/plain"].startswith("AttentionPatterns: layer 0 head 0")
    import base64

    assert base64.b64decode(data["image/png"])[:4] == b"\x89PNG"


def test_views_load_the_built_bundles():
    for cls, view in ((AttentionPatterns, "attention"), (Eigenvalues, "eigenvalues"), (SkipTrigrams, "skip_trigrams")):
        js, css = STATIC_DIR / f"{view}.js", STATIC_DIR / f"{view}.css"
        # anywidget holds the files themselves (a path: hot reload with ANYWIDGET_HMR=1)
        assert Path(cls._esm._path) == js and Path(cls._css._path) == css  # anywidget's FileContents
        assert str(cls._esm) == js.read_text(encoding="utf-8")
        assert re.search(r"\bexport\s*\{\s*[\w$]+ as default\s*\};\s*\Z", str(cls._esm))
        assert not re.search(r"""^\s*import\b""", str(cls._esm), re.M)  # one self-contained module
        w = cls(random_model(), [0, 1, 2]) if cls is AttentionPatterns else cls(random_model())
        assert w._esm == js.read_text(encoding="utf-8")  # what the page gets


def test_the_linter_forbids_html_sinks_in_the_front_ends():
    """The sink check is ESLint's (`npm run lint`, part of `make test`); this keeps its rules in place."""
    cfg = (Path(__file__).resolve().parents[1] / "js" / "eslint.config.js").read_text(encoding="utf-8")
    for rule in ("no-restricted-properties", "no-restricted-syntax", "no-eval", "no-new-func", "no-implied-eval"):
        assert f'"{rule}": ' in cfg, rule
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", 'property: "write"', "callee.name='eval'",
                 "NewExpression[callee.name='Function']"):
        assert sink in cfg, sink
    assert 'files: ["**/*.js", "**/*.mjs"]' in cfg and "ignores" in cfg


def test_lazy_top_level_exports():
    assert cw.attention is cw.widgets.attention
    assert cw.eigenvalues is cw.widgets.eigenvalues and cw.skip_trigrams is cw.widgets.skip_trigrams


# ---------------------------------------------------------------------------------------- converters
def test_hf_gpt2_model_is_converted_and_patterns_match_hf():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=23, n_positions=16,
                                  attn_implementation="eager")
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    # GPT-2's default init (std 0.02) gives patterns within 0.006 of uniform: a wrong head order, scale or
    # mask would pass a 1e-3 check. Weights of unit scale make every head's pattern its own, far from uniform.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, prm in hf.named_parameters():
            r = torch.randn(prm.shape, generator=g)
            prm.copy_(1.0 + 0.3 * r if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0.6 * r)
    ids = [3, 5, 7, 3, 5, 7, 1]
    w = cw.attention(hf, ids)
    with torch.no_grad():
        att = hf(torch.tensor([ids]), output_attentions=True).attentions
    causal = torch.tril(torch.ones(7, 7))
    uniform = causal / causal.sum(-1, keepdim=True)
    for layer in range(2):
        assert (att[layer][0, 0] - att[layer][0, 1]).abs().max() > 0.1  # heads differ: an order swap shows
        for head in range(2):
            assert (att[layer][0, head] - uniform).abs().max() > 0.2  # far from uniform
            w.select(layer, head)
            np.testing.assert_allclose(decode_array(w.pattern), att[layer][0, head].numpy(), atol=1e-3)
    assert cw.eigenvalues(hf).n_heads == 2  # converted once, cached


def test_transformer_lens_bridge_is_converted_and_patterns_match_its_cache():
    pytest.importorskip("transformer_lens")
    from importlib.metadata import version

    if int(version("transformer-lens").split(".")[0]) < 4:
        pytest.skip("this check builds a TransformerLens 4.x TransformerBridge")
    import transformer_lens.model_bridge.sources  # noqa: F401  (attaches boot_native)
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    cfg = TransformerBridgeConfig(seed=0, n_layers=2, d_model=16, n_heads=3, d_head=5, d_vocab=23, n_ctx=10,
                                  attn_only=True, normalization_type=None, positional_embedding_type="standard",
                                  act_fn="gelu_new")
    bridge = TransformerBridge.boot_native(cfg, dtype=torch.float64).eval()
    ids = [1, 4, 6, 1, 4, 6, 2]
    w = cw.attention(bridge, ids)
    _, cache = bridge.run_with_cache(torch.tensor([ids]))
    for layer in range(2):
        for head in range(3):
            w.select(layer, head)
            want = cache[f"blocks.{layer}.attn.hook_pattern"][0, head].detach().numpy()
            np.testing.assert_allclose(decode_array(w.pattern), want, atol=1e-3)


# ---------------------------------------------------------------------------------------- base helpers
def test_quiet_updates_and_apply_or_revert():
    w = cw.attention(random_model(), [0, 1, 2, 3])
    shown = dict(w.shown)
    w.set_quietly(layer=1)  # the widget's own update: no request, so no new head is computed
    assert w.layer == 1 and w.shown == shown
    w.select(1, 1)  # a request
    assert (w.shown["layer"], w.shown["head"]) == (1, 1)

    def fail():
        raise ValueError("no such thing")

    with pytest.warns(CircuitWidgetWarning, match="not applied: no such thing"):
        ok = w.apply_or_revert({"name": "score_name", "old": "induction", "new": "x"}, fail)
    assert not ok and w.score_name == "induction" and "no such thing" in w.error
    assert w.apply_or_revert({"name": "score_name", "old": "induction", "new": "x"}, lambda: None)
    assert w._quiet_names == set()


def test_each_view_declares_its_export_actions():
    from circwidgets.widgets.export import actions_for

    w = cw.eigenvalues(random_model())
    actions, inputs = actions_for(w)
    assert inputs == ("log_magnitude", "layer", "head")
    acts = actions(w)
    assert {"layer": 1, "head": 0} in acts and {"log_magnitude": True} in acts
    assert actions_for(cw.TrainingMonitor())[1] == ()


def test_every_trait_a_front_end_sets_is_a_page_input():
    """The page-input gate refuses any trait a view does not declare, so a control whose trait is
    missing from `page_inputs` / `export_inputs` silently does nothing (the rotary offset box did)."""
    from pagesim import front_end_sets

    for name, (cls, set_by_page, _) in front_end_sets().items():
        declared = set(cls.page_inputs) | set(getattr(cls, "export_inputs", ()))
        assert set_by_page, name
        assert set_by_page <= declared, (name, sorted(set_by_page - declared))
