"""Values from the page and values the engine cannot give, view by view: a head index from the page is a head
of the model (never a negative index stored as sent), lists from the page are bounded, an overflow or an
undefined number is a message in the widget (never NaN sent silently, never a traceback), and the static
twins (summary, PNG) show what the live view shows. Page updates go through the widget's PageInputs gate
(`pagesim.page`), as the page's comm messages do."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from pagesim import front_end_sets, page

import circwidgets as cw
from circwidgets import engine
from circwidgets.engine._check import NonFiniteResultError
from circwidgets.engine.ablation_state import ablated_run
from circwidgets.model.testing import random_model
from circwidgets.widgets import CircuitWidgetWarning
from circwidgets.widgets._data import decode_array
from circwidgets.widgets.skip_trigrams import MAX_ROWS

CODE = "def f(self): return self.x"


@pytest.fixture(scope="module")
def code_model():
    return cw.load("toy-2l-code")


def rotary(**kw):
    return random_model(**{"n_layers": 2, "d_model": 16, "n_heads": 4, "d_head": 4, "d_vocab": 13, "n_ctx": 12,
                           "positional": "rotary", "dtype": torch.float32, **kw})


# ------------------------------------------------------------------------------------ 1. Eigenvalues.through
def test_eigenvalues_through_from_the_page_is_a_head_and_stored_normalised(code_model):
    w = cw.eigenvalues(code_model)
    circuits = list(w.circuits)
    with pytest.warns(CircuitWidgetWarning, match=re.escape("through=[-2, 0] L-2H0 is not a head of this model "
                                                            "(layers 0..1, heads 0..3)")):
        page(w, through=[-2, 0])
    assert w.through == [] and w.circuits == circuits and "qk_comp" not in w.positivity
    page(w, layer=0, head=1)  # every layer-0 head can still be selected
    assert (w.layer, w.head, w.error) == (0, 1, "") and (w.shown["layer"], w.shown["head"]) == (0, 1)
    with pytest.warns(CircuitWidgetWarning, match=re.escape("L0H4 is not a head")):
        page(w, through=[0, 4])
    assert w.through == []
    w.through = [-2, 1]  # from Python a negative index counts from the end: stored as the head it names
    assert w.through == [0, 1] and w.error == ""
    assert w.circuits[-1] == ["qk_comp", "QK composed through L0H1  W_E W_Q W_Kᵀ W_OV¹ᵀ W_Eᵀ"]
    pos = decode_array(w.positivity["qk_comp"])
    assert np.isnan(pos[0]).all() and np.isfinite(pos[1]).all()
    with pytest.warns(CircuitWidgetWarning, match="L1H0 has no later head"):
        page(w, through=[1, 0])
    assert w.through == [0, 1] and "qk_comp" in w.positivity  # refused: the view keeps what it showed


# ------------------------------------------------------------------------------------ 2. composed QK overflow
def test_composed_qk_overflow_is_the_engines_message_not_nan(code_model):
    m = cw.load("toy-2l-code")
    with torch.no_grad():
        m.W_V[0, 0] *= 1e18
        m.W_Q[1] *= 1e18
    with pytest.raises(NonFiniteResultError, match=r"L1H0's QK circuit composed through L0H0 came out NaN/inf"):
        engine.k_composition_positivity(m, (0, 0))
    w = cw.eigenvalues(m)
    page(w, layer=1, head=0)
    assert w.error == ""
    with pytest.warns(CircuitWidgetWarning, match=r"QK composed through: L1H0's QK circuit composed through L0H0 "
                                                  r"came out NaN/inf.*overflow torch.float32"):
        page(w, through=[0, 0])
    assert w.through == [] and "qk_comp" not in w.positivity and "qk_comp" not in w.eigs
    assert all(np.isfinite(decode_array(v)).all() for v in w.eigs.values())  # nothing NaN was sent
    # the engine's positivity is the one definition: the widget sends it unchanged on a finite model
    ok = cw.eigenvalues(code_model, through=(0, 2))
    torch.testing.assert_close(torch.as_tensor(decode_array(ok.positivity["qk_comp"])),
                               engine.k_composition_positivity(code_model, (0, 2)), equal_nan=True)


# ------------------------------------------------------------------------------------ 3. Ablation off / cuts
def test_ablation_heads_and_cuts_from_the_page_are_checked_unique_and_bounded(code_model):
    w = cw.ablation(code_model, CODE)
    clean = w.clean_loss
    for state, why in (({"off": [[-1, 0]]}, "off=[[-1, 0]] L-1H0 is not a head of this model"),
                       ({"off": [[2, 0]]}, "off=[[2, 0]] L2H0 is not a head"),
                       ({"off": [[1, 0], [1, 0]]}, "must not hold the same row twice"),
                       ({"off": [[0, 0]] * 9}, "must hold at most 8 rows"),
                       ({"cuts": [[-2, 0, -1, 0, "k"]]}, "L-2H0 is not a head"),
                       ({"cuts": [[0, 0, 1, 0, "x"]]}, "must be a list of [l1, h1, l2, h2, kind] rows"),
                       ({"cuts": [[0, 0, 1, 0, "k"], [0, 0, 1, 0, "k"]]}, "must not hold the same row twice")):
        with pytest.warns(CircuitWidgetWarning, match=re.escape(why)):
            page(w, **state)
        assert (w.off, w.cuts, w.loss, w.computed_for["off"]) == ([], [], clean, []), state
        assert "heads off: none; paths cut: none" in w.summary()
    page(w, off=[[1, 0]], cuts=[[0, 1, 1, 2, "k"]])
    want = ablated_run(code_model, w.tokens[None], heads=[(1, 0)], paths=[((0, 1), (1, 2), "k")])
    assert w.error == "" and w.off == [[1, 0]] and w.loss == want.loss
    w.off = [[-1, 0], [1, 0], [0, 3]]  # from Python: normalised, repeats dropped
    assert w.off == [[1, 0], [0, 3]] and w.computed_for["off"] == [[1, 0], [0, 3]]
    assert "heads off: L1H0, L0H3;" in w.summary()


# ------------------------------------------------------------------------------------ 4. rotary offset
def test_rotary_offset_beyond_the_context_is_refused_by_both_views():
    m = rotary()
    c = cw.composition(m, [1, 2, 3, 4, 5, 1, 2, 3], offset=2)
    for bad in (2**80, 12):
        with pytest.warns(CircuitWidgetWarning, match=re.escape(f"offset={bad} is out of range 0..11 (query − key "
                                                                "position inside the 12-token context)")):
            page(c, offset=bad)
        assert c.offset == 2 and c.focus["offset"] == 2
    page(c, offset=11)
    assert c.error == "" and c.focus["offset"] == 11
    with pytest.raises(ValueError, match="out of range 0..11"):
        cw.composition(m, offset=12)
    e = cw.eigenvalues(m, offset=3)
    with pytest.warns(CircuitWidgetWarning, match=re.escape("offset=12 is out of range 0..11")):
        page(e, offset=12)
    assert e.offset == 3


# ------------------------------------------------------------------------------------ 5. skip-trigram rows
def test_skip_trigram_rows_are_capped(code_model):
    w = cw.skip_trigrams(code_model, k=5)
    assert w.max_rows == min(MAX_ROWS, code_model.cfg.d_vocab) == 500
    for bad in (10**12, 501, 0):
        with pytest.warns(CircuitWidgetWarning, match=re.escape(f"n_rows={bad} not applied: must be at least 1 and "
                                                                "at most 500 (the table sends at most 500 rows")):
            page(w, n_rows=bad)
        assert w.n_rows == 5 and len(w.rows) == 5
    page(w, n_rows=500)
    assert w.error == "" and len(w.rows) == 500
    small = cw.skip_trigrams(random_model(d_vocab=13))  # the default 20 rows of a 13-token vocabulary
    assert small.max_rows == small.n_rows == 13 and small.error == ""
    with pytest.raises(ValueError, match=r"k=501 must be an integer in 1\.\.500"):
        cw.skip_trigrams(code_model, k=501)


# ------------------------------------------------------------------------------------ 6. undefined head scores
def test_undefined_head_scores_are_a_message(code_model):
    w = cw.attention(code_model, "x", score="previous_token_text")
    assert w.error == ""
    with pytest.warns(CircuitWidgetWarning, match=re.escape(
            "previous-token score (this text): no previous-token pairs in this text (1 token(s)); those heads "
            "have no score (cells marked ·)")):
        page(w, text="")
    assert w.labels == ["<|endoftext|>"] and np.isnan(decode_array(w.scores)).all()
    page(w, text=CODE)
    assert w.error == "" and np.isfinite(decode_array(w.scores)).all()


# ------------------------------------------------------------------------------------ 7. history n/a
def test_history_undefined_values_are_a_message_and_na():
    a, b = cw.load("toy-2l-induction"), cw.load("toy-2l-induction")
    with torch.no_grad():
        b.W_O[1, 0].zero_()
    with pytest.warns(CircuitWidgetWarning, match=re.escape("at step 200: L1H0 OV positivity undefined (NaN or inf; "
                                                            "shown as n/a)")):
        w = cw.training([(100, a), (200, b)], circuit=[0, 1, 1, 0], layer=1, head=0)
    d = w.step_data
    assert d["ov"]["positivity"] is None and d["undefined"] == ["L1H0 OV positivity"]
    assert "L1H0 OV positivity n/a," in w.summary() and repr(w) == w.summary()
    page(w, step=100)
    assert w.error == "" and w.step_data["undefined"] == [] and "n/a" not in w.summary()
    with pytest.warns(CircuitWidgetWarning, match="L1H0 OV positivity undefined"):
        page(w, step=200)


# ------------------------------------------------------------------------------------ 8. static twins
def test_kernel_only_controls_are_disabled_in_the_offline_page():
    """A trait the page sets that the export does not record (not in `export_inputs`: only a kernel answers
    it) has its controls disabled offline (`needsKernel`, js/src/lib/offline.js)."""
    from circwidgets.widgets import Composition, Eigenvalues

    for name, (cls, set_by_page, js) in front_end_sets().items():
        if name == "monitor":  # a live view: never exported
            continue
        kernel_only = set_by_page - set(cls.export_inputs)
        assert not kernel_only or re.search(r"needsKernel\(model, \[", js), (name, sorted(kernel_only))
    assert {"offset", "through"} <= set(Eigenvalues.page_inputs) - set(Eigenvalues.export_inputs)
    assert "offset" in set(Composition.page_inputs) - set(Composition.export_inputs)


def test_ablation_static_twin_in_patch_mode_shows_patching():
    m = random_model(n_layers=2, n_heads=3, d_model=16, d_head=4, d_vocab=20, n_ctx=16, seed=4)
    clean, corrupt = [0, 5, 3, 7, 2, 5, 3, 7, 2, 9], [0, 5, 3, 7, 11, 5, 3, 7, 2, 9]
    w = cw.ablation(m, clean, corrupted=corrupt)
    w.mode = "patch"
    w.select(1, 2)
    report = engine.patching_report(m, torch.tensor([clean]), torch.tensor([corrupt]))
    heads = decode_array(w.patch_heads)
    s = w.summary()
    assert s.startswith("Ablation (activation patching, clean → corrupted): " + w.patch_info)
    assert f"; head L1H2 patched: {heads[1, 2]:.4f}; heatmaps: residual stream (2 layers x 10 positions), " in s
    assert "heads off" not in s and "per-token" not in s
    fig = w.figure()
    titles = [ax.get_title() for ax in fig.axes]
    assert "residual stream (layer × position)" in titles and "head outputs (layer × head)" in titles
    images = {ax.get_title(): np.asarray(ax.images[0].get_array()) for ax in fig.axes if ax.images}
    np.testing.assert_allclose(images["residual stream (layer × position)"], report.resid.numpy(), rtol=1e-6)
    np.testing.assert_allclose(images["head outputs (layer × head)"], heads, rtol=1e-5, atol=1e-6)
    assert not any(ax.patches and ax.get_ylabel() == "loss (nats)" for ax in fig.axes)  # no per-token loss bars
    assert w.png()[:8] == b"\x89PNG\r\n\x1a\n"
    w.mode = "ablate"
    assert "heads off: none" in w.summary() and w.figure().axes[0].get_ylabel() == "loss (nats)"
