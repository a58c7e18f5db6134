"""Widgets on rotary / grouped-query / RMSNorm models: the eigenvalue view's offset control and offset
profile, composition at an offset with K/V groups, ablation notes for shared K/V heads, and a 32 x 32
head model that sends only the selected head's data."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
import torch

import circwidgets as cw
from circwidgets import engine
from circwidgets.model.testing import random_model
from circwidgets.widgets import CircuitWidgetWarning
from circwidgets.widgets._data import decode_array


def rotary_gqa(**kw):
    kw = {"n_layers": 2, "d_model": 16, "n_heads": 4, "d_head": 4, "d_vocab": 13, "n_ctx": 12, "positional": "rotary",
          "n_kv_heads": 2, "normalization": "RMS", "dtype": torch.float32, **kw}
    return random_model(**kw)


def test_eigenvalue_view_offset_and_profile():
    m = rotary_gqa()
    w = cw.eigenvalues(m, layer=1, head=2, offset=2)
    assert w.error == "" and w.rotary and w.max_offset == 11 and [c for c, _ in w.circuits] == ["ov", "qk"]
    qk = decode_array(w.positivity["qk"])
    torch.testing.assert_close(torch.as_tensor(qk), engine.eigen_positivity(m, "qk", offset=2).float())
    prof = torch.as_tensor(decode_array(w.profile))
    torch.testing.assert_close(prof, engine.offset_profile(m, range(12))[1, 2].float())
    lam = engine.eigenvalues(m, 1, 2, "qk", offset=2)
    got = torch.as_tensor(decode_array(w.eigs["qk"]))
    torch.testing.assert_close(got, torch.stack([lam.real, lam.imag], -1).float())
    w.offset = 5  # as the page's control does
    assert w.error == "" and w.shown["variant"] == [5]
    torch.testing.assert_close(torch.as_tensor(decode_array(w.positivity["qk"])),
                               engine.eigen_positivity(m, "qk", offset=5).float())
    lam5 = engine.eigenvalues(m, 1, 2, "qk", offset=5)
    torch.testing.assert_close(torch.as_tensor(decode_array(w.eigs["qk"]))[:, 0], lam5.real.float())
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        w.offset = 40
    assert w.offset == 5 and "out of range" in w.error and any(r.category is CircuitWidgetWarning for r in rec)
    assert "offset 5" in w.summary()
    w.png()  # the static twin draws


def test_eigenvalue_view_non_rotary_and_qk_norm_note():
    plain = random_model(n_layers=2, d_model=16, n_heads=4, d_head=4, d_vocab=13, n_ctx=12, dtype=torch.float32)
    w = cw.eigenvalues(plain)
    assert not w.rotary and "qk_pos" in [c for c, _ in w.circuits] and w.profile == {}
    with pytest.raises(ValueError, match="only for rotary"):
        cw.eigenvalues(plain, offset=1)
    q = cw.eigenvalues(rotary_gqa(qk_norm=True))
    assert "positive per-token" in q.qk_note


def focus_of(w) -> torch.Tensor:
    """The composition view's `focus` as the engine's all-pairs layout would slice it (checked below)."""
    return torch.as_tensor(decode_array(w.focus["scores"]))


def want_focus(full: torch.Tensor, layer: int, head: int) -> torch.Tensor:
    return torch.where(torch.arange(full.shape[0])[:, None] < layer, full[:, :, layer, head], full[layer, head]).float()



def test_eigenvalue_view_composes_through_a_head_on_a_rotary_model():
    """"QK composed through" (offered by the page for every model) refused every head of a rotary model with the
    engine's "Pass offset=Δ", which the page cannot give: the composed circuit is taken at the view's offset, as
    the grid's QK, and follows the offset control."""
    m = rotary_gqa(n_layers=3)
    w = cw.eigenvalues(m, layer=2, head=1, offset=2, through=(0, 1))
    assert w.error == "" and w.through == [0, 1] and w.circuits[-1][1].startswith("QK composed through L0H1 at Δ")
    for off in (2, 5):
        if off == 5:
            w.offset = 5  # as the page's control does
            assert w.error == ""
        torch.testing.assert_close(torch.as_tensor(decode_array(w.positivity["qk_comp"])),
                                   engine.k_composition_positivity(m, (0, 1), offset=off), equal_nan=True)
        lam = engine.k_composition_eigenvalues(m, (0, 1), (2, 1), offset=off)
        torch.testing.assert_close(torch.as_tensor(decode_array(w.eigs["qk_comp"])),
                                   torch.stack([lam.real, lam.imag], -1).float())
    assert "qk_comp positivity" in w.summary()

def test_composition_view_offset_and_kv_groups():
    m = rotary_gqa()
    w = cw.composition(m, kind="k", pair=[0, 1, 1, 3], offset=1)
    assert w.error == "" and w.rotary and w.kv_group_size == 2
    assert (w.layer, w.head) == (1, 3) and w.focus["offset"] == 1
    torch.testing.assert_close(focus_of(w), want_focus(engine.composition_scores(m, "k", offset=1), 1, 3),
                               equal_nan=True)
    assert w.details["kv_group"] == [2, 3] and "shared by heads L1H2, L1H3" in w.details["kv_note"]
    w.offset = 3
    torch.testing.assert_close(focus_of(w), want_focus(engine.composition_scores(m, "k", offset=3), 1, 3),
                               equal_nan=True)
    assert w.details["offset"] == 3 and w.focus["offset"] == 3
    w.kind = "v"
    torch.testing.assert_close(focus_of(w), want_focus(engine.composition_scores(m, "v"), 1, 3), equal_nan=True)
    assert w.focus["offset"] is None


def test_ablation_view_names_the_kv_group():
    m = rotary_gqa()
    w = cw.ablation(m, [1, 2, 3, 4, 5, 1, 2, 3])
    assert w.kv_group_size == 2 and w.notes == []
    w.cuts = [[0, 1, 1, 2, "k"]]
    assert w.error == "" and len(w.notes) == 1 and "L1H2, L1H3" in w.notes[0]
    want = engine.ablated_run(m, torch.tensor([[1, 2, 3, 4, 5, 1, 2, 3]]), paths=[((0, 1), (1, 2), "k")])
    assert abs(w.loss - want.loss) < 1e-6


def test_other_views_on_a_rotary_gqa_model():
    m = rotary_gqa(attn_only=False, gated_mlp=True, act_fn="silu")
    for make in (lambda: cw.attention(m, [1, 2, 3, 4]), lambda: cw.skip_trigrams(m, 1, 3),
                 lambda: cw.paths(m, [1, 2, 3, 4, 5])):
        w = make()
        assert w.error == "", w.error


def test_32_by_32_heads_send_only_the_selected_head():
    """A 32-layer x 32-head model: the eigenvalue view's per-head traits hold one head's numbers
    (d_head eigenvalues per circuit, one offset profile); the grid holds one number per head."""
    m = random_model(n_layers=32, d_model=32, n_heads=32, n_kv_heads=8, d_head=4, d_vocab=50, n_ctx=80,
                     positional="rotary", normalization="RMS", dtype=torch.float32)
    w = cw.eigenvalues(m, layer=31, head=31)
    assert w.error == ""
    assert all(decode_array(v).shape == (4, 2) for v in w.eigs.values())
    assert decode_array(w.profile).shape == (64,)
    assert decode_array(w.positivity["qk"]).shape == (32, 32)
    w.select(17, 5)
    assert w.shown["layer"] == 17 and decode_array(w.profile).shape == (64,)


def test_32_by_32_composition_sends_only_the_selected_heads_partners():
    """A 32-layer x 32-head model: the composition view's scores on the page are one head's partners
    (32 x 32 numbers), never the (32 x 32)^2 pairs; selecting another head sends that head's; what the
    page receives in all is a few kB (measured before this design: the whole [L, H, L, H] array)."""
    m = random_model(n_layers=32, d_model=32, n_heads=32, n_kv_heads=8, d_head=4, d_vocab=50, n_ctx=80,
                     positional="rotary", normalization="RMS", dtype=torch.float32)
    w = cw.composition(m, kind="k", offset=1)
    assert w.error == ""
    assert decode_array(w.focus["scores"]).shape == (32, 32)
    sent = state_bytes(w.get_state())
    assert sent < 64_000, sent  # the full array alone would be 4 MB of float32
    w.select(17, 5)
    assert (w.focus["layer"], w.focus["head"]) == (17, 5)
    full = engine.composition_scores(m, "k", offset=1)
    torch.testing.assert_close(focus_of(w), want_focus(full, 17, 5), equal_nan=True)
    assert w.pair[2:] == [17, 5] and w.details["raw"] == pytest.approx(float(full[tuple(w.pair)]), rel=1e-5)
    # the text fallback names the selected head's strongest partners (all pairs are not computed for it)
    i = int(torch.nan_to_num(full[17, 5], nan=-1.0).flatten().argmax())
    assert f"L17H5 → L{i // 32}H{i % 32} = {float(full[17, 5].flatten()[i]):.3f}" in w.summary()


def state_bytes(v) -> int:
    """Bytes a widget state takes on the wire: binary buffers as they are, the rest as JSON."""
    if isinstance(v, (bytes, memoryview)):
        return len(bytes(v))
    if isinstance(v, dict):
        return sum(len(json.dumps(k)) + 2 + state_bytes(x) for k, x in v.items()) + 2
    if isinstance(v, (list, tuple)):
        return sum(state_bytes(x) + 1 for x in v) + 2
    return len(json.dumps(v, default=str))


def test_every_view_on_the_shipped_rotary_model():
    """The trained toy-2l-rotary (rotary, RMSNorm, 4 query heads on 2 K/V heads) in every view, on code: no
    error anywhere, and the eigenvalue view shows what its card claims (its layer-0 previous-token head's offset
    profile peaks at Δ = 1) with the offset control at 1 agreeing with the engine. The heads are found by the
    engine (strongest previous-token head of layer 0, strongest induction head), not named, so a retrained
    model is held to the same claims."""
    m = cw.load("toy-2l-rotary").requires_grad_(False)
    text = "def add(self, x):\n    return self.x + x\n\ndef add(self, x):\n    return self.x + x\n"
    prev = int(engine.all_head_scores(m, n_seqs=32, seed=2024)["previous_token"][0].argmax())
    e = cw.explore(m, text)
    assert all(p.error == "" for p in e.panels.values()), {k: p.error for k, p in e.panels.items()}
    assert set(e.panels) >= {"attention", "eigenvalues", "composition", "paths", "ablation"}, set(e.panels)
    assert (e.layer, e.head) == engine.opening_head(m, m.to_tokens(text))  # the induction head on this text
    assert e.layer == 1
    w = cw.eigenvalues(m, layer=0, head=prev, offset=1)
    assert w.error == "" and w.rotary and w.max_offset == m.cfg.n_ctx - 1
    prof = torch.as_tensor(decode_array(w.profile))
    assert int(prof[:64].argmax()) == 1
    torch.testing.assert_close(torch.as_tensor(decode_array(w.positivity["qk"])),
                               engine.eigen_positivity(m, "qk", offset=1).float())
    c = cw.composition(m, kind="k", pair=[0, prev, 1, e.head], offset=9)
    group = m.cfg.kv_group(m.cfg.kv_head_of(e.head))
    assert c.error == "" and c.details["kv_group"] == group and e.head in group and len(group) == 2
    for view in (cw.attention(m, text), cw.skip_trigrams(m, 0, prev), cw.paths(m, text), cw.ablation(m, text)):
        assert view.error == "", view.error


def test_activation_views_on_a_lazy_checkpoint(tmp_path, monkeypatch):
    """A lazy checkpoint in the attention view raised AttributeError ('LazyModel' object has no attribute 'W_E',
    looking for shared patterns): it shows the layer-by-layer pass's patterns, and the value-weighted toggle
    (refused while that pass sent no value norms back) the pass's ‖v‖-weighted pattern: both the in-memory
    model's. The eigenvalue view's "QK composed through" (refused until it was streamed) is the in-memory
    model's too, and so is the ablation view (heads off, paths cut, zero / mean, the per-head effects, the
    patching mode; was TypeError 'model must be a circwidgets Transformer, got LazyModel', then refused)."""
    tf = pytest.importorskip("transformers")
    pytest.importorskip("anywidget")
    hf = tf.LlamaForCausalLM(tf.LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, vocab_size=61,
                                            max_position_embeddings=32, attn_implementation="eager")).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # weights of a trained model's size: ablations change the loss by more than rounding
        for p in hf.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.ndim == 1 else 0.0))
    hf.save_pretrained(tmp_path / "ckpt")
    lazy = cw.from_hf(str(tmp_path / "ckpt"), lazy=True, cache_dir=tmp_path / "cache")
    eager = cw.from_hf(hf)
    toks = [1, 5, 9, 3, 7, 5, 9, 3]
    data = engine.attention_patterns(eager, toks)
    for vw in (False, True):
        w = cw.attention(lazy, toks, layer=1, head=2, value_weighted=vw)
        assert w.error == "" and w.value_weighted == vw
        torch.testing.assert_close(torch.as_tensor(decode_array(w.pattern)),
                                   data.head(1, 2, value_weighted=vw).float(), rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(torch.as_tensor(decode_array(w.scores)),
                                   engine.all_head_scores(eager)["induction"].float(), rtol=1e-4, atol=1e-5)
    assert (data.v_norm[1, 2] - 1).abs().max() > 0.05  # the weighting changes the picture
    w.value_weighted = False  # as the page's toggle does
    w.value_weighted = True
    assert w.error == ""
    torch.testing.assert_close(torch.as_tensor(decode_array(w.pattern)), data.head(1, 2, value_weighted=True).float(),
                               rtol=1e-3, atol=1e-3)
    a, b = cw.ablation(lazy, toks), cw.ablation(eager, toks)  # (was refused: "needs the model in memory")
    for state in ({"off": [[1, 2], [0, 3]]}, {"cuts": [[0, 1, 1, 2, "k"]]}, {"ablation": "mean"}, {"position": 3}):
        for w in (a, b):
            for name, value in state.items():
                setattr(w, name, value)
        assert a.error == "" and a.notes == b.notes and abs(a.loss - b.loss) < 1e-4
        torch.testing.assert_close(torch.as_tensor(decode_array(a.token_loss)),
                                   torch.as_tensor(decode_array(b.token_loss)), rtol=1e-4, atol=1e-4)
        assert [t[1] for t in a.top] == [t[1] for t in b.top]
    assert abs(a.loss - a.clean_loss) > 1e-3  # the state changed the run
    torch.testing.assert_close(torch.as_tensor(decode_array(a.effects)), torch.as_tensor(decode_array(b.effects)),
                               rtol=1e-4, atol=1e-4)
    corrupt = [1, 5, 9, 3, 7, 6, 9, 3]  # patching mode: the engine's report on the in-memory model
    a, b = cw.ablation(lazy, toks, corrupted=corrupt), cw.ablation(eager, toks, corrupted=corrupt)
    a.mode = b.mode = "patch"
    assert a.error == "" and a.mode == "patch" and a.patch_info.split(";")[0] == b.patch_info.split(";")[0]
    for part in ("patch_heads", "patch_resid"):
        want = torch.as_tensor(decode_array(getattr(b, part)))
        assert want.abs().max() > 0.1
        torch.testing.assert_close(torch.as_tensor(decode_array(getattr(a, part))), want, rtol=1e-3, atol=1e-3)
    # too many passes for a click (a big checkpoint): refused with what to do, the mode stays "ablate"
    monkeypatch.setattr(sys.modules["circwidgets.widgets.ablation"], "_SOURCE_PATCH_MAX", 1e3)  # (the module)
    a = cw.ablation(lazy, toks, corrupted=corrupt)
    with pytest.warns(CircuitWidgetWarning, match=r"patching this model takes 28 runs .* in 6 forward passes"):
        a.mode = "patch"
    assert a.mode == "ablate" and "engine.patch_heads" in a.error
    b.mode = "ablate"
    b.mode = "patch"  # in memory: the engine batches the runs, no limit
    assert b.mode == "patch"
    e = cw.eigenvalues(lazy, layer=1, head=3, offset=4)
    e.through = [0, 1]  # (was refused: "not streamed from a lazy checkpoint")
    assert e.error == "" and e.through == [0, 1] and np.isfinite(decode_array(e.positivity["qk_comp"])[1]).all()
    torch.testing.assert_close(torch.as_tensor(decode_array(e.positivity["qk_comp"])),
                               engine.k_composition_positivity(eager, (0, 1), offset=4), equal_nan=True)
    want = engine.k_composition_eigenvalues(eager, (0, 1), (1, 3), offset=4)
    got = e.head_eigenvalues(1, 3)["qk_comp"]
    torch.testing.assert_close(got.abs(), want.abs(), rtol=1e-4, atol=1e-9)


def test_the_views_take_an_nnsight_model(tmp_path):
    """The views other than `cw.paths` refused an nnsight model ("does not run an nnsight LanguageModel: pass the
    Hugging Face model it wraps"). They take the model it wraps: converted (with the wrapper's tokenizer), or its
    local checkpoint read lazily; the numbers are those of the converted model. Weights that are not here (a
    model never dispatched) are refused with what to do."""
    tf = pytest.importorskip("transformers")
    nnsight = pytest.importorskip("nnsight")
    pytest.importorskip("anywidget")
    cfg = tf.GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=31, n_positions=16, bos_token_id=0,
                        eos_token_id=0, attn_implementation="eager")
    hf = tf.GPT2LMHeadModel(cfg).eval()
    from tokenizers import Tokenizer, models

    tk = Tokenizer(models.WordLevel(vocab={f"w{i}": i for i in range(31)}, unk_token="w0"))
    hf_tok = tf.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="w0")
    ours = cw.from_hf(hf)
    toks = [1, 2, 3, 4, 2, 3, 4, 5]
    want = engine.attention_patterns(ours, toks).head(1, 1).float()
    hf.save_pretrained(tmp_path / "ckpt")
    for lm in (nnsight.LanguageModel(hf, tokenizer=hf_tok),  # in memory: converted
               nnsight.LanguageModel(str(tmp_path / "ckpt"), tokenizer=hf_tok)):  # a local checkpoint: lazily
        w = cw.attention(lm, toks, layer=1, head=1)
        assert w.error == ""
        torch.testing.assert_close(torch.as_tensor(decode_array(w.pattern)), want, rtol=1e-3, atol=1e-3)  # float16
        a = cw.ablation(lm, toks, off=[(1, 0)])
        b = cw.ablation(ours, toks, off=[(1, 0)])
        assert a.error == "" and a.loss == pytest.approx(b.loss, rel=1e-4)
        e = cw.eigenvalues(lm, layer=1, head=0)
        torch.testing.assert_close(torch.as_tensor(e.head_eigenvalues(1, 0)["ov"]),
                                   torch.as_tensor(cw.eigenvalues(ours, layer=1, head=0).head_eigenvalues(1, 0)["ov"]),
                                   rtol=1e-4, atol=1e-6)
        assert cw.attention(lm, "w1 w2 w3").error == ""  # the wrapper's tokenizer
    meta = nnsight.LanguageModel(str(tmp_path / "ckpt"), tokenizer=hf_tok)  # not dispatched: meta weights
    assert all(p.is_meta for p in meta._module.parameters())
    meta._module.config._name_or_path = "someone/on-the-hub"  # (as a hub model's: no checkpoint here to read)
    with pytest.raises(TypeError, match=r"weights are not loaded here .* cw.paths run it through traces"):
        cw.attention(meta, toks)


def test_path_view_names_the_pre_cap_logit_of_a_soft_capped_model():
    """With a final soft-cap (Gemma 2) the terms add up to the logit before `c * tanh(x / c)`: the view said
    "model's own logit" beside that number (-7.74 shown where the model outputs -4.57 at c = 5)."""
    m = rotary_gqa(final_softcap=2.0, seed=3)
    w = cw.paths(m, torch.tensor([1, 4, 2, 7, 1, 4, 2]), position=5, target=3)
    assert w.logit_label == "model's logit before its final soft-cap (c·tanh(x/c), c = 2)"
    assert w.logit_label in w.summary()
    capped = float(m(torch.tensor([[1, 4, 2, 7, 1, 4, 2]]))[0, 5, 3])
    assert w.model_logit == pytest.approx(w.total, abs=1e-4)
    assert w.model_logit == pytest.approx(2.0 * float(torch.atanh(torch.tensor(capped / 2.0))), abs=1e-4)
    assert cw.paths(rotary_gqa(seed=3), torch.tensor([1, 4, 2, 7]), position=2).logit_label == "model's own logit"
