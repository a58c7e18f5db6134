"""Python side of Composition, PathExpansion, Ablation (+ engine.ablation_state against a dense brute
force), CircuitExplorer, offline HTML export, TrainingMonitor. The numbers each view sends are the
engine's; bad requests become messages + warnings.
Browser side: tests/browser/test_composition_paths_ablation_browser.py."""

from __future__ import annotations

import json
import re
import threading
import warnings

import numpy as np
import pytest
import torch

import circwidgets as cw
from circwidgets.engine import interventions
from circwidgets.engine.ablation_state import PathCut, ablated_run, logit_diff_metric, per_token_loss
from circwidgets.engine.composition import composition_baseline, composition_scores
from circwidgets.engine.induction import decisive_position, opening_head
from circwidgets.engine.paths import path_terms
from circwidgets.engine.patterns import attention_patterns
from circwidgets.engine.virtual import virtual_heads
from circwidgets.model import Tokenizer
from circwidgets.model.testing import random_model
from circwidgets.widgets import CircuitWidgetWarning
from circwidgets.widgets._data import decode_array
from circwidgets.widgets.ablation import Ablation
from circwidgets.widgets.composition import Composition
from circwidgets.widgets.explorer import CircuitExplorer
from circwidgets.widgets.export import output_traits, save_html
from circwidgets.widgets.paths import PathExpansion

HOSTILE = ["<img src=x onerror=alert(1)>", "</script>", "$x$", " lead", "new\nline", "NaN"]
CONFIGS = {
    "attn_only": dict(),
    "ln_mlp_bias": dict(attn_only=False, normalization="LN", biases=True, d_mlp=20),
    "shortformer": dict(positional="shortformer"),
}
IDS = [0, 5, 3, 7, 2, 5, 3, 7, 2, 9]
HOSTILE_IDS = [0] + list(range(1, 1 + len(HOSTILE))) + [10, 11]  # ids: the word-level tokenizer splits on spaces


def small(**kw):
    base = dict(n_layers=2, n_heads=3, d_model=16, d_head=4, d_vocab=20, n_ctx=16, seed=4)
    base.update(kw)
    return random_model(**base)


def hostile_model(**kw):
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import models, pre_tokenizers

    vocab = ["<bos>"] + HOSTILE + [f"w{i}" for i in range(14)]
    rt = RustTokenizer(models.WordLevel({s: i for i, s in enumerate(vocab)}, unk_token="<bos>"))
    rt.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    m = small(d_vocab=len(vocab), bos_token_id=0, **kw)
    m.tokenizer = Tokenizer(rt)
    return m


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


# ---------------------------------------------------------------------------------------- composition
def assert_focus(w, full: torch.Tensor, layer: int, head: int, kind: str, minus: bool) -> None:
    """The page's only scores, `focus`: head (layer, head)'s partners, `[L, H]`: the engine's
    all-pairs scores `full [L, H, L, H]` at (l, h) -> head below its layer, head -> (l, h) above, NaN
    in its own layer; labelled with what they were computed for."""
    f = w.focus
    assert (f["layer"], f["head"], f["kind"], f["minus"]) == (layer, head, kind, minus), f
    L = full.shape[0]
    want = torch.where(torch.arange(L)[:, None] < layer, full[:, :, layer, head], full[layer, head])
    got = torch.from_numpy(decode_array(f["scores"]))
    assert got.shape == want.shape and got[layer].isnan().all()
    torch.testing.assert_close(got, want, equal_nan=True)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_composition_sends_the_engines_scores_and_pair_details(name):
    m = small(n_layers=3, **CONFIGS[name])
    w = Composition(m, IDS, kind="q")
    for kind in ("q", "k", "v"):
        w.kind = kind
        for minus in (False, True):
            w.subtract_baseline = minus
            ref = composition_scores(m, kind, baseline=minus).float()
            for layer, head in ((1, 2), (0, 1), (2, 0)):
                w.select(layer, head)
                assert_focus(w, ref, layer, head, kind, minus)
    mean, std = composition_baseline(m, "k")
    assert w.baseline == [mean, std]
    w.kind = "k"
    w.pair = [0, 2, 2, 1]
    assert (w.layer, w.head) == (2, 1)  # a click selects the later head
    d = w.details
    raw = float(composition_scores(m, "k")[0, 2, 2, 1])
    assert d["pair"] == [0, 2, 2, 1] and d["kind"] == "k"
    assert d["raw"] == pytest.approx(raw, abs=1e-6) and d["score"] == pytest.approx(raw - mean, abs=1e-6)
    data = attention_patterns(m, torch.tensor(IDS))
    vh = virtual_heads(m, torch.tensor([IDS]), (0, 2), (2, 1))
    np.testing.assert_allclose(decode_array(d["p1"]), data.head(0, 2).numpy(), atol=1e-3)
    np.testing.assert_allclose(decode_array(d["p2"]), data.head(2, 1).numpy(), atol=1e-3)
    np.testing.assert_allclose(decode_array(d["pv"]), vh.pattern[0].numpy(), atol=1e-3)
    torch.testing.assert_close(w.pair_pattern("virtual"), vh.pattern[0])
    # the kind changes the score of the same pair, not its patterns
    w.kind = "v"
    assert w.details["raw"] == pytest.approx(float(composition_scores(m, "v")[0, 2, 2, 1]), abs=1e-6)


def test_composition_default_text_is_repeated_tokens_and_bad_pairs_are_messages():
    m = small(bos_token_id=0)
    w = Composition(m)
    n = (len(w.labels) - 1) // 2
    assert w.labels[0] == "0" and w.labels[1:1 + n] == w.labels[1 + n:]
    before = list(w.pair)
    for bad, match in (([1, 0, 1, 2], "earlier head's layer"), ([0, 0, 1, 9], "head2=9 is out of range"),
                       ([0, 0], "must be")):
        with pytest.warns(CircuitWidgetWarning, match=match):
            w.pair = bad
        assert w.pair == before
    with pytest.warns(CircuitWidgetWarning, match="kind="):
        w.kind = "x"
    assert w.kind == "k"
    with pytest.warns(CircuitWidgetWarning, match="two layers"):
        one = Composition(small(n_layers=1))
    assert "one" in one.error and "one layer" in one.summary()


# ---------------------------------------------------------------------------------------- path expansion
@pytest.mark.parametrize("name", list(CONFIGS))
def test_path_expansion_sum_equals_the_models_logit(name):
    m = small(**CONFIGS[name])
    logits = m(torch.tensor([IDS]))[0]
    default = PathExpansion(m, IDS)  # opens where induction decides the next token, not at the end
    assert default.position == decisive_position(m, torch.tensor(IDS)) and default.target == IDS[default.position + 1]
    w = PathExpansion(m, IDS, position=-1, target=None)
    assert w.position == len(IDS) - 1 and w.target == int(logits[-1].argmax())
    for pos in (0, 3, len(IDS) - 1):
        for target in (1, 7, 19):
            w.position, w.target = pos, target
            assert w.model_logit == pytest.approx(float(logits[pos, target]), abs=1e-10)
            assert w.total == pytest.approx(float(logits[pos, target]), abs=1e-9)
            # the bars shown (with "other terms" and the remainder) add up to the same total
            assert sum(t["value"] for t in w.terms) == pytest.approx(w.total, abs=1e-9)
    # every bar is the engine's own term value
    pt = path_terms(m, torch.tensor([IDS]), max_order=2)
    ref = dict(pt.for_token(w.position, w.target))
    for t in w.terms:
        if t["order"] >= 0:
            assert t["value"] == pytest.approx(ref[t["label"]], abs=1e-12)
    assert [t["section"] for t in w.terms].count("virtual heads (two)") <= w.n_virtual


def test_path_expansion_default_target_is_the_next_token_and_clicks_select_heads():
    m = small()
    w = PathExpansion(m, IDS, position=2)
    assert w.target == IDS[3]
    head_bar = next(t for t in w.terms if t["order"] == 1)
    lay, hd = head_bar["heads"][-1]
    w.select(lay, hd)
    np.testing.assert_allclose(decode_array(w.pattern), attention_patterns(m, torch.tensor(IDS)).head(lay, hd).numpy(),
                               atol=1e-3)
    two = next(t for t in w.terms if t["order"] == 2)  # a two-head bar also sends A^{h2} A^{h1}
    w.path = two["heads"]
    vh = virtual_heads(m, torch.tensor([IDS]), tuple(two["heads"][0]), tuple(two["heads"][1]))
    assert w.virtual["heads"] == two["heads"]
    np.testing.assert_allclose(decode_array(w.virtual), vh.pattern[0].numpy(), atol=1e-3)
    w.path = [[lay, hd]]
    assert w.virtual == {}
    with pytest.warns(CircuitWidgetWarning, match="position=99"):
        w.position = 99
    assert w.position == 2
    w.query = "#11"
    assert w.target == 11


def test_path_expansion_with_a_tokenizer_searches_tokens():
    m = hostile_model()
    w = PathExpansion(m, "w1 w2 w3 w1 w2")
    w.query = "</script>"
    assert w.target == 2 and w.target_label == "</script>"
    with pytest.warns(CircuitWidgetWarning, match="not a single token"):
        w.query = "nope"


# ---------------------------------------------------------------------------------------- engine.ablation_state
def dense_forward(m, toks, off=(), cut=None, kind="zero", ref_result_mean=None, z_mean=None):
    """Attention-only, no LN, no biases, standard positions: the forward pass written out with
    loops, ablating heads `off` (z -> 0 or z_mean) and cutting one path `cut = (l1, h1, l2, h2, which)`."""
    W = {n: getattr(m, n).double() for n in ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U")}
    P = len(toks)
    resid = W["W_E"][toks] + W["W_pos"][:P]
    results = {}
    for lay in range(m.cfg.n_layers):
        out = torch.zeros_like(resid)
        for h in range(m.cfg.n_heads):
            xq = xk = xv = resid
            if cut is not None and (cut[2], cut[3]) == (lay, h):
                r = results[(cut[0], cut[1])]
                removed = r if kind == "zero" else r - ref_result_mean
                x_cut = resid - removed
                xq, xk, xv = (x_cut if cut[4] == c else resid for c in "qkv")
            q, k, v = xq @ W["W_Q"][lay, h], xk @ W["W_K"][lay, h], xv @ W["W_V"][lay, h]
            sc = (q @ k.T) / m.cfg.attn_scale
            sc = sc.masked_fill(torch.ones(P, P, dtype=torch.bool).triu(1), float("-inf"))
            z = sc.softmax(-1) @ v
            if (lay, h) in off:
                z = torch.zeros_like(z) if kind == "zero" else z_mean[(lay, h)].expand_as(z)
            results[(lay, h)] = z @ W["W_O"][lay, h]
            out = out + results[(lay, h)]
        resid = resid + out
    return resid @ W["W_U"], results


def test_ablated_run_matches_a_dense_forward_pass():
    m = small(n_layers=3, dtype=torch.float64)
    toks = torch.tensor(IDS)
    clean, results = dense_forward(m, toks)
    torch.testing.assert_close(ablated_run(m, toks).logits[0], clean)
    # zero ablation of two heads
    got = ablated_run(m, toks, heads=[(0, 1), (2, 0)]).logits[0]
    torch.testing.assert_close(got, dense_forward(m, toks, off={(0, 1), (2, 0)})[0])
    # mean ablation: z replaced by its mean over positions of the clean run
    _, cache = m.run_with_cache(toks[None])
    zm = {(1, 2): cache["z", 1][0, :, 2].mean(0)}
    got = ablated_run(m, toks, heads=[(1, 2)], kind="mean").logits[0]
    torch.testing.assert_close(got, dense_forward(m, toks, off={(1, 2)}, kind="mean", z_mean=zm)[0])
    # cutting one path (each of q, k, v), zero and mean
    for which in "qkv":
        got = ablated_run(m, toks, paths=[PathCut((0, 2), (2, 1), which)]).logits[0]
        torch.testing.assert_close(got, dense_forward(m, toks, cut=(0, 2, 2, 1, which))[0])
        rm = results[(1, 0)].mean(0)
        got = ablated_run(m, toks, paths=[((1, 0), (2, 2), which)], kind="mean").logits[0]
        torch.testing.assert_close(got, dense_forward(m, toks, cut=(1, 0, 2, 2, which), kind="mean",
                                                      ref_result_mean=rm)[0])
    # the path cut changes only what dst reads: an unrelated destination leaves the logits as they are
    assert not torch.allclose(ablated_run(m, toks, paths=[(0, 2, 2, 1, "k")]).logits, ablated_run(m, toks).logits)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_ablated_run_agrees_with_engine_interventions(name):
    m = small(n_layers=3, **CONFIGS[name])
    toks = torch.tensor([IDS, IDS[::-1]])
    for kind in ("zero", "mean"):
        assert ablated_run(m, toks, heads=[(0, 1), (2, 2)], kind=kind).loss == pytest.approx(
            interventions.ablate_heads(m, toks, [(0, 1), (2, 2)], kind=kind).intervened, abs=1e-12)
        assert ablated_run(m, toks, paths=[((0, 1), (2, 0), "k")], kind=kind).loss == pytest.approx(
            interventions.ablate_path(m, toks, (0, 1), (2, 0), kind="k", ablation=kind).intervened, abs=1e-12)
        assert ablated_run(m, toks, paths=[(1, 1, 2, 0, "q"), (1, 1, 2, 0, "v")], kind=kind).loss == pytest.approx(
            interventions.ablate_path(m, toks, (1, 1), (2, 0), kind=("q", "v"), ablation=kind).intervened, abs=1e-12)
    run = ablated_run(m, toks)
    assert run.loss == pytest.approx(interventions.loss_metric(m(toks), toks).item(), abs=1e-12)
    assert per_token_loss(run.logits, toks).shape == (2, len(IDS) - 1)
    assert logit_diff_metric(-1, 3, 4)(run.logits, toks) == pytest.approx(
        float((run.logits[:, -1, 3] - run.logits[:, -1, 4]).mean()))


def test_ablated_run_rejects_bad_requests():
    m = small()
    with pytest.raises(ValueError, match="earlier layer"):
        ablated_run(m, IDS, paths=[((1, 0), (1, 1), "k")])
    with pytest.raises(ValueError, match="kind"):
        ablated_run(m, IDS, paths=[((0, 0), (1, 1), "x")])
    with pytest.raises(IndexError):
        ablated_run(m, IDS, heads=[(0, 7)])
    with pytest.raises(ValueError, match="zero"):
        ablated_run(m, IDS, kind="resample")
    ablated_run(m, IDS)
    with torch.no_grad():
        m.W_V[1, 0, 0, 0] = float("nan")  # changed in place after a first (checked) run
    with pytest.raises(ValueError, match="W_V"):
        ablated_run(m, IDS)


# ---------------------------------------------------------------------------------------- ablation widget
def test_ablation_widget_shows_the_engines_losses():
    m = small(n_layers=3)
    toks = torch.tensor([IDS])
    w = Ablation(m, IDS)
    assert w.clean_loss == pytest.approx(interventions.loss_metric(m(toks), toks).item(), abs=1e-12)
    assert w.loss == w.clean_loss
    w.toggle(1, 2)
    assert w.off == [[1, 2]]
    assert w.loss == pytest.approx(interventions.ablate_heads(m, toks, [(1, 2)]).intervened, abs=1e-12)
    w.cuts = [[0, 1, 2, 0, "k"]]
    ref = ablated_run(m, toks, heads=[(1, 2)], paths=[((0, 1), (2, 0), "k")])
    assert w.loss == pytest.approx(ref.loss, abs=1e-12)
    np.testing.assert_allclose(decode_array(w.token_loss), ref.token_loss[0].float().numpy(), rtol=1e-6)
    assert [t[1] for t in w.top] == [t for t, _, _ in ref.top(w.position, 5)]
    w.ablation = "mean"
    assert w.loss == pytest.approx(ablated_run(m, toks, heads=[(1, 2)], paths=[((0, 1), (2, 0), "k")],
                                               kind="mean").loss, abs=1e-12)
    np.testing.assert_allclose(decode_array(w.effects), interventions.ablation_table(m, toks, kind="mean").numpy(),
                               rtol=1e-5, atol=1e-6)
    w.toggle(1, 2)
    assert w.off == []
    for name, bad, match in (("off", [[0, 9]], "out of range"), ("cuts", [[1, 0, 1, 1, "k"]], "earlier layer"),
                             ("ablation", "resample", "zero"), ("position", 42, "position=42")):
        old = getattr(w, name)
        with pytest.warns(CircuitWidgetWarning, match=match):
            setattr(w, name, bad)
        assert getattr(w, name) == old
    with pytest.warns(CircuitWidgetWarning, match="corrupted"):
        w.mode = "patch"


def test_ablation_patching_mode_equals_the_engine():
    m = small()
    clean, corrupt = IDS, IDS[:4] + [11] + IDS[5:]
    w = Ablation(m, clean, corrupted=corrupt)
    assert w.has_patching and not w.patch_heads
    w.mode = "patch"
    good = int(m(torch.tensor([clean]))[0, -1].argmax())
    bad = int(m(torch.tensor([corrupt]))[0, -1].argmax())
    metric = logit_diff_metric(-1, good, bad)
    args = (m, torch.tensor([clean]), torch.tensor([corrupt]), metric)
    lg = (m(torch.tensor([clean])), m(torch.tensor([corrupt])))
    norm = abs(float(metric(lg[0], None)) - float(metric(lg[1], None))) > 1e-9
    assert norm
    np.testing.assert_allclose(decode_array(w.patch_heads), interventions.patch_heads(*args, normalize=norm).numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(decode_array(w.patch_resid),
                               interventions.patch_residual(*args, normalize=norm).numpy(), rtol=1e-5, atol=1e-6)
    assert "metric at the last position" in w.patch_info
    with pytest.warns(CircuitWidgetWarning, match="same length"):
        assert "same length" in Ablation(m, clean, corrupted=corrupt[:-1]).error


# ---------------------------------------------------------------------------------------- explorer
def test_explorer_keeps_every_panel_on_one_head():
    m = small()
    e = CircuitExplorer(m, IDS, corrupted=IDS[:4] + [11] + IDS[5:])
    # opens on the strongest induction head on its text (a layer >= 1 head), every panel on it, the paths
    # panel where that head decides the next token
    assert set(e.selections().values()) == {opening_head(m, IDS)} and e.layer >= 1
    assert e.panels["paths"].position == decisive_position(m, torch.tensor(IDS), (e.layer, e.head))
    e = CircuitExplorer(m, IDS, corrupted=IDS[:4] + [11] + IDS[5:], layer=0, head=0)
    assert set(e.selections().values()) == {(0, 0)}
    e.panels["composition"].pair = [0, 2, 1, 1]  # a click on a composition cell
    assert set(e.selections().values()) == {(1, 1)} and (e.layer, e.head) == (1, 1)
    att = e.panels["attention"]
    np.testing.assert_allclose(decode_array(att.pattern), att.data.head(1, 1).numpy(), atol=1e-3)
    e.panels["ablation"].select(0, 2)
    assert set(e.selections().values()) == {(0, 2)}
    e.select(1, 0)
    assert set(e.selections().values()) == {(1, 0)}
    with pytest.warns(CircuitWidgetWarning):
        e.panels["eigenvalues"].head = 99
    assert set(e.selections().values()) == {(1, 0)}
    with pytest.raises(ValueError, match="unknown panels"):
        CircuitExplorer(m, IDS, panels=("attention", "nope"))


# ---------------------------------------------------------------------------------------- export
def page_data(path) -> dict:
    text = path.read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="cw-data">(.*?)</script>', text, re.S)
    return json.loads(m.group(1))


def test_save_html_is_self_contained_and_records_the_engines_states(tmp_path):
    m = hostile_model()
    w = Composition(m, HOSTILE_IDS)
    p = w.save_html(tmp_path / "comp.html")
    text = p.read_text(encoding="utf-8")
    assert "default-src 'none'" in text  # the page cannot load anything
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text, re.I)
    assert "ipywidgets" not in text and "require.js" not in text
    # token strings only inside the JSON data, with every '<' escaped
    data_part = re.search(r'id="cw-data">(.*?)</script>', text, re.S).group(1)
    assert "<" not in data_part
    assert text.count("</script>") == text.count("<script")
    d = page_data(p)
    spec = d["widgets"][0]
    assert spec["module"] == "Composition" and spec["start"] in spec["states"]
    vals = d["values"]
    labels = vals[spec["states"][spec["start"]]["labels"]]
    assert labels[1:1 + len(HOSTILE)] == HOSTILE
    # a recorded state holds exactly what the kernel sends for it
    key = json.dumps({"head": 2, "kind": "k", "layer": 1, "pair": [0, 1, 1, 2], "subtract_baseline": False},
                     separators=(",", ":"))
    st = spec["states"][key]
    det = vals[st["details"]]
    assert det["raw"] == pytest.approx(float(composition_scores(m, "k")[0, 1, 1, 2]), abs=1e-6)
    assert set(st) == set(output_traits(w))
    assert w.pair == [0, 0, 1, 0] and (w.layer, w.head) == (1, 0)  # the live widget is left as it was


def test_save_html_limits_and_other_views(tmp_path):
    m = small()
    w = Ablation(m, IDS)
    p = save_html(w, tmp_path / "abl.html", max_states=5)
    spec = page_data(p)["widgets"][0]
    assert len(spec["states"]) == 5 and spec["truncated"]
    assert "left out" in p.read_text(encoding="utf-8")
    e = CircuitExplorer(m, IDS, panels=("attention", "composition"))
    d = page_data(e.save_html(tmp_path / "exp.html", max_states=20))
    assert d["link"] and [s["module"] for s in d["widgets"]] == ["AttentionPatterns", "Composition"]
    with pytest.raises(TypeError):
        save_html(object(), tmp_path / "x.html")


# ---------------------------------------------------------------------------------------- training monitor
def tiny_trainer(steps, **kw):
    from circwidgets.model import ModelConfig, Transformer
    from circwidgets.train.tasks import RepeatTask
    from circwidgets.train.trainer import TrainConfig, Trainer

    cfg = ModelConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_vocab=12, n_ctx=12)
    return Trainer(Transformer(cfg), RepeatTask(d_vocab=12, n_ctx=12, min_len=2, max_len=4),
                   TrainConfig(steps=steps, eval_every=10, batch_size=4, icl_n_seqs=1, eval_batches=1, warmup=5),
                   progress=False, **kw)


def test_training_monitor_follows_the_trainer(tmp_path, capsys):
    mon = cw.TrainingMonitor(save_path=tmp_path / "m.safetensors")
    t = tiny_trainer(20, callbacks=[mon])
    with torch.enable_grad():
        t.train()
    assert mon.status == "finished" and mon.step == 20 and mon.total == 20
    assert [e["step"] for e in mon.evals] == [r["step"] for r in t.history] == [0, 10, 20]
    assert [s for s, _ in mon.steps] == [10, 20]
    assert mon.evals[-1]["val_loss"] == t.history[-1]["val_loss"]
    assert np.array(mon.evals[-1]["induction"]).shape == (2, 2)
    assert not mon.saved_path  # nothing saved when the run simply ends
    assert "step 20/20" in mon._repr_mimebundle_()[0]["text/plain"]
    spec = page_data(mon.save_html(tmp_path / "mon.html"))["widgets"][0]  # a snapshot of the curves
    assert spec["module"] == "TrainingMonitor" and len(spec["states"]) == 1


def test_training_monitor_stop_saves_the_model(tmp_path):
    mon = cw.TrainingMonitor(save_path=tmp_path / "stopped.safetensors")
    mon.min_interval = 0.0
    t = tiny_trainer(100_000, callbacks=[mon])
    th = threading.Thread(target=t.train)
    th.start()
    for _ in range(600):
        if mon.step >= 10:
            break
        th.join(0.05)
    mon.stop_requested = True  # what the stop button sends (reaches a kernel that is free)
    th.join(60)
    assert not th.is_alive() and t.stopped_by == "interrupt" and mon.status == "stopped"
    loaded = cw.load(mon.saved_path)
    for n, p in t.model.named_parameters():
        torch.testing.assert_close(getattr(loaded, n), p.detach())
    assert t.step < 100_000


def test_a_stop_requested_before_the_run_is_running_is_honoured(tmp_path):
    """The stop button pressed while the run is still starting (status "waiting"): the run stops after
    its first step and the model is saved, instead of the request being dropped by on_train_begin."""
    mon = cw.TrainingMonitor(save_path=tmp_path / "early.safetensors")
    mon.min_interval = 0.0
    t = tiny_trainer(100_000, callbacks=[mon])
    mon.stop_requested = True  # before train() began
    assert mon.status == "waiting"
    th = threading.Thread(target=t.train, daemon=True)  # daemon: a regression must not hang the session
    th.start()
    th.join(60)
    assert not th.is_alive(), f"the early stop was ignored: still training at step {t.step}"
    assert t.stopped_by == "interrupt" and t.step <= 2 and mon.status == "stopped"
    assert mon.saved_path and cw.load(mon.saved_path) is not None
    # the request ended that run only: the next run trains to its end (this module's tests run under no_grad)
    with torch.enable_grad():
        t.train(t.step + 3)
    assert t.stopped_by is None and mon.status in ("finished", "stopped") and t.step >= 4


def test_a_stop_racing_the_start_of_the_run_is_never_lost(tmp_path):
    """The stop request sent at any moment around on_train_begin (from another thread) ends the run."""
    for delay in (0.0, 0.001, 0.005, 0.02):
        mon = cw.TrainingMonitor(save_path=tmp_path / f"race{delay}.safetensors")
        t = tiny_trainer(100_000, callbacks=[mon])
        th = threading.Thread(target=t.train, daemon=True)
        th.start()
        th.join(delay)
        mon.stop_requested = True
        th.join(60)
        assert not th.is_alive(), (delay, t.step, mon.status)
        assert t.stopped_by == "interrupt" and mon.status == "stopped", (delay, t.stopped_by, mon.status)


def test_trainer_outside_a_notebook_shows_no_monitor():
    from circwidgets.widgets.monitor import in_notebook, notebook_callbacks

    assert not in_notebook() and notebook_callbacks(None) == []


def test_static_fallbacks_of_the_new_views():
    m = hostile_model()
    text = HOSTILE_IDS
    for w in (Composition(m, text), PathExpansion(m, text), Ablation(m, text)):
        data, _ = w._repr_mimebundle_()
        assert data["image/png"] and "live view needs a running kernel" in data["text/plain"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CircuitWidgetWarning)
        assert cw.composition(m).error == ""
        assert cw.paths(m, text).error == "" and cw.ablation(m, text).error == ""


def test_a_stopped_run_can_be_resumed(tmp_path):
    mon = cw.TrainingMonitor(save_path=tmp_path / "s.safetensors")
    t = tiny_trainer(30, callbacks=[mon])
    t.request_stop()  # as after a stop (button / Ctrl-C): it ends that run, not the next one
    with torch.enable_grad():
        t.train(10)
    assert t.step == 10 and t.stopped_by is None and mon.status == "finished" and not mon.saved_path


@pytest.mark.parametrize("name", ["Composition", "PathExpansion", "Ablation", "TrainingMonitor"])
def test_front_end_bundles_are_single_valid_modules(name, tmp_path):
    import shutil
    import subprocess

    import circwidgets.widgets as W  # (its `paths`, `ablation`, ... are the view functions, not the modules)

    cls = getattr(W, name)
    esm = str(cls._esm)
    assert not re.search(r"""^\s*import\b""", esm, re.M)  # one self-contained module (esbuild bundle)
    assert len(re.findall(r"\bexport\s*\{\s*[\w$]+ as default\s*\};", esm)) == 1
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not installed: syntax check skipped")
    f = tmp_path / f"{name}.mjs"
    f.write_text(esm, encoding="utf-8")
    r = subprocess.run([node, "--check", str(f)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
