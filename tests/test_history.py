"""The training history: snapshots found in each kind of source, every per-snapshot number equal to the
engine function called on that checkpoint and to a dense float64 brute force, curves equal to the
trainer's metrics file (or measured on the snapshots without one), the page-input gate, the monitor's
hand-over, the static twin and the offline export. Fixture: a real `Trainer` run of a tiny model."""

from __future__ import annotations

import json
import math
import shutil
import warnings

import numpy as np
import pytest
import torch
from pagesim import page

import circwidgets as cw
from circwidgets import engine
from circwidgets.engine.history import N_SEQS, SEED
from circwidgets.model import ModelConfig, Transformer
from circwidgets.train.snapshots import Snapshot, TrainingRun, read_metrics, run_snapshots, training_run
from circwidgets.train.tasks import RepeatTask
from circwidgets.train.trainer import TrainConfig, Trainer
from circwidgets.widgets import CircuitWidgetWarning, TrainingHistory, TrainingMonitor
from circwidgets.widgets._data import decode_array

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = ModelConfig(n_layers=2, d_model=32, n_heads=2, d_head=16, d_vocab=24, n_ctx=32, attn_only=True,
                  normalization=None, positional="shortformer", bos_token_id=0, name="tiny-history")
TC = dict(steps=60, batch_size=16, lr=1e-2, warmup=5, eval_every=20, checkpoint_every=1000, eval_batches=1,
          icl_n_seqs=2, n_snapshots=5)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    mon = TrainingMonitor()
    Trainer(Transformer(CFG, seed=0), RepeatTask(CFG.d_vocab, CFG.n_ctx, min_len=3, max_len=10), TrainConfig(**TC),
            out_dir=out, progress=False, callbacks=[mon]).train()
    return out, mon


@pytest.fixture(scope="module")
def view(run_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CircuitWidgetWarning)
        return cw.training(run_dir[0])


# ---------------------------------------------------------------------------------------- sources
def test_a_run_directory_gives_the_trainers_snapshots_and_metrics(run_dir):
    out, _ = run_dir
    run = training_run(out)
    assert run.steps == TrainConfig(**TC).snapshot_steps() and len(run.steps) >= 4
    assert run.metrics == json.loads((out / "metrics.json").read_text())
    assert [s.path.name for s in run.snapshots] == [f"step_{s:06d}.safetensors" for s in run.steps]
    m = run.snapshots[-1].load()
    assert m is run.snapshots[-1].load() and int(m.metadata["step"]) == run.steps[-1]


def test_lists_of_paths_models_and_pairs(run_dir):
    out, _ = run_dir
    paths = [p for _, p in sorted((s.step, s.path) for s in run_snapshots(out))]
    by_path = training_run(list(reversed(paths)))  # steps from the files' metadata, sorted
    assert by_path.steps == training_run(out).steps
    assert by_path.metrics == read_metrics(out)  # the latest snapshot's history
    models = [cw.load(p) for p in paths]
    assert training_run(models).steps == by_path.steps
    pairs = training_run([(10 * i, m) for i, m in enumerate(models)])
    assert pairs.steps == [10 * i for i in range(len(models))] and pairs.snapshots[1].load() is models[1]
    bare = Transformer(CFG, seed=1)  # no metadata: its list index
    assert training_run([bare]).steps == [0] and training_run([bare]).metrics is None
    with pytest.raises(ValueError, match="several snapshots at step"):
        training_run([(5, models[0]), (5, models[1])])
    with pytest.raises(TypeError, match="item 0"):
        training_run([3.5])
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        training_run([out / "nope.safetensors"])
    with pytest.raises(ValueError, match="no training snapshots"):
        TrainingRun("empty", [])


def test_a_directory_without_snapshots_says_how_to_keep_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="n_snapshots"):
        training_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="zoo.training_run"):
        training_run("no-such-model")
    with pytest.raises(KeyError, match="no shipped model"):
        cw.training("no-such-model")


def test_shipped_snapshots_by_name():
    run = cw.zoo.training_run("toy-2l-code")
    shipped = cw.zoo.snapshots("toy-2l-code")
    assert run.steps[:len(shipped)] == [s for s, _ in shipped]
    assert run.steps == sorted(set(run.steps)) and run.metrics  # the shipped file's logged history
    final = int(cw.load("toy-2l-code").metadata["step"])
    assert run.steps[-1] == max(final, shipped[-1][0])


# ---------------------------------------------------------------------------------------- engine values
def _dense(model: Transformer) -> dict[str, torch.Tensor]:
    return {k: getattr(model, k).detach().double() for k in ("W_E", "W_Q", "W_K", "W_V", "W_O", "W_U")}


def _positivity(M: torch.Tensor) -> float:
    lam = torch.linalg.eigvals(M)
    return float(lam.real.sum() / lam.abs().sum())


def _top1(M: torch.Tensor) -> float:
    return float((M.argmax(1) == torch.arange(M.shape[0])).double().mean())


def test_circuit_measures_equal_a_dense_float64_brute_force(view):
    l1, h1, l2, h2 = view.circuit
    for step in view.steps:
        m = view.snapshot(step)
        w = _dense(m)
        ov = w["W_E"] @ w["W_V"][l2, h2] @ w["W_O"][l2, h2] @ w["W_U"]
        kqk = w["W_E"] @ w["W_Q"][l2, h2] @ w["W_K"][l2, h2].T @ w["W_O"][l1, h1].T @ w["W_V"][l1, h1].T @ w["W_E"].T
        ov1 = w["W_V"][l1, h1] @ w["W_O"][l1, h1]
        qk2 = w["W_Q"][l2, h2] @ w["W_K"][l2, h2].T
        kcomp = float(torch.linalg.norm(ov1 @ qk2.T) / (torch.linalg.norm(ov1) * torch.linalg.norm(qk2)))
        got = engine.circuit_measures(m, (l1, h1), (l2, h2), n_tokens=None)
        assert got.ov.positivity == pytest.approx(_positivity(ov), abs=1e-4)
        assert got.k_qk.positivity == pytest.approx(_positivity(kqk), abs=1e-4)
        assert got.ov.top1 == pytest.approx(_top1(ov)) and got.k_qk.top1 == pytest.approx(_top1(kqk))
        assert got.k_composition == pytest.approx(kcomp, rel=1e-4)
        # the view's d_vocab is below its token sample: the view shows exactly these numbers
        d = view.circuit_at(step)
        assert (d.ov.positivity, d.k_qk.positivity, d.k_composition) == pytest.approx(
            (got.ov.positivity, got.k_qk.positivity, got.k_composition), abs=1e-6)


def test_rotary_snapshots_measure_the_circuit_at_the_induction_offsets():
    """A rotary GQA model's history: the induction head's QK circuit in the K-composition term and score is
    `W_Q M W_Kᵀ` with M the mean rotation over Δ = |r| − 1 of the detection lengths (dense float64 brute
    force); the view opens without error, on a list of checkpoints and on the shipped toy-2l-rotary."""
    from circwidgets.model import rotary
    from circwidgets.model.testing import random_model

    kw = dict(n_layers=2, d_model=16, n_heads=4, n_kv_heads=2, d_head=4, d_vocab=20, n_ctx=64, positional="rotary",
              rotary_base=100.0, normalization=None, attn_only=True, dtype=torch.float64)
    snaps = [(100 * i, random_model(seed=i, **kw).requires_grad_(False)) for i in range(2)]
    m = snaps[1][1]
    offs = engine.induction_offsets(m)
    assert offs == [9, 22]  # repeat lengths 10 and 23 fit n_ctx 64
    M = torch.stack([rotary.rotation_matrix(m.cfg, d) for d in offs]).mean(0)
    w = _dense(m)
    (l1, h1), (l2, h2) = (0, 3), (1, 1)
    qk2 = w["W_Q"][l2, h2] @ M @ w["W_K"][l2, h2].T
    ov1 = w["W_V"][l1, h1] @ w["W_O"][l1, h1]
    kqk = w["W_E"] @ qk2 @ ov1.T @ w["W_E"].T
    kcomp = float(torch.linalg.norm(ov1 @ qk2.T) / (torch.linalg.norm(ov1) * torch.linalg.norm(qk2)))
    got = engine.circuit_measures(m, (l1, h1), (l2, h2), n_tokens=None)
    assert got.k_qk.positivity == pytest.approx(_positivity(kqk), abs=1e-9) and got.k_qk.top1 == _top1(kqk)
    assert got.k_composition == pytest.approx(kcomp, rel=1e-9)
    view = cw.training(snaps)
    assert view.error == "" and view.step_data["step"] == 100
    shipped = cw.training("toy-2l-rotary")
    assert shipped.error == "", shipped.error


def test_each_steps_numbers_are_the_engine_functions_on_that_checkpoint(view, run_dir):
    out, _ = run_dir
    for snap in run_snapshots(out):
        view.step = snap.step
        assert not view.error and view.shown["variant"] == [snap.step]
        m = cw.load(snap.path)  # loaded afresh: the engine called directly on the checkpoint file
        s = engine.all_head_scores(m, n_seqs=N_SEQS, seed=SEED)
        icl = engine.in_context_loss(m, n_seqs=N_SEQS, seed=SEED)
        d = view.step_data
        assert d["step"] == snap.step and d["index"] == view.steps.index(snap.step)
        np.testing.assert_allclose(d["induction"], s["induction"].numpy(), atol=1e-6)
        np.testing.assert_allclose(d["previous_token"], s["previous_token"].numpy(), atol=1e-6)
        assert (d["icl_first"], d["icl_repeated"]) == pytest.approx((icl.first, icl.repeated), abs=1e-6)
        c = engine.circuit_measures(m, tuple(view.circuit[:2]), tuple(view.circuit[2:]))
        assert d["ov"]["positivity"] == pytest.approx(c.ov.positivity, abs=1e-6)
        assert d["k_qk"]["positivity"] == pytest.approx(c.k_qk.positivity, abs=1e-6)
        assert d["k_comp"] == pytest.approx(c.k_composition, abs=1e-6)
        i = view.steps.index(snap.step)
        assert view.circuit_curves["k_comp"][i] == pytest.approx(c.k_composition, abs=1e-6)
        # the selected head's pattern: the model's own forward pass on the view's tokens (float16 transfer)
        _, cache = m.run_with_cache(view.tokens[None])
        want = cache["pattern", view.layer][0, view.head].detach().numpy()
        np.testing.assert_allclose(decode_array(view.pattern).reshape(want.shape), want, atol=2e-3)


def test_the_default_circuit_is_the_engines_detection_at_the_last_snapshot(view):
    final = view.snapshot(view.steps[-1])
    prev, ind = engine.default_circuit(final)
    assert view.circuit == [*prev, *ind] and (view.layer, view.head) == ind
    assert ind == engine.strongest_induction_head(final, n_seqs=N_SEQS, seed=SEED) and prev[0] < ind[0]
    prev_scores = engine.head_scores(final, "previous_token", n_seqs=N_SEQS, seed=SEED)
    assert float(prev_scores[prev]) == float(prev_scores[:ind[0]].max())


def test_curves_from_metrics_equal_those_in_the_file(view, run_dir):
    out, _ = run_dir
    recs = json.loads((out / "metrics.json").read_text())
    c = view.curves
    assert c["source"] == "metrics" and c["steps"] == [r["step"] for r in recs]
    assert c["induction"] == [r["induction"] for r in recs]
    assert c["previous_token"] == [r["previous_token"] for r in recs]
    assert c["loss"] == pytest.approx([r["val_loss"] for r in recs])
    assert c["icl_repeated"] == pytest.approx([r["icl_repeated"] for r in recs])


def test_without_metrics_the_curves_are_measured_on_the_snapshots(run_dir, tmp_path):
    out, _ = run_dir
    shutil.copytree(out / "snapshots", tmp_path / "snapshots")
    eval_tokens = RepeatTask(CFG.d_vocab, CFG.n_ctx, min_len=3, max_len=10).batch(4, 7, 0)
    w = cw.training(tmp_path, eval_tokens=eval_tokens)
    assert w.run.metrics is None and w.curves["source"] == "snapshots"
    assert w.curves["steps"] == w.steps
    for i, snap in enumerate(run_snapshots(tmp_path)):
        m = cw.load(snap.path)
        s = engine.all_head_scores(m, n_seqs=N_SEQS, seed=SEED)
        np.testing.assert_allclose(w.curves["induction"][i], s["induction"].numpy(), atol=1e-6)
        with torch.no_grad():
            loss = engine.per_token_loss(m(eval_tokens), eval_tokens).mean()
        assert w.curves["loss"][i] == pytest.approx(float(loss), abs=1e-5)
    # metrics forced where there are none: a message in the view, not an exception
    with pytest.warns(CircuitWidgetWarning, match="no metrics were logged"):
        bad = cw.training(tmp_path, curves="metrics")
    assert bad._broken and "no metrics" in bad.error
    with pytest.raises(ValueError, match="curves="):
        cw.training(tmp_path, curves="both")


def test_one_layer_models_get_a_message(tmp_path):
    m = Transformer(ModelConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_vocab=12, n_ctx=16), seed=0)
    with pytest.warns(CircuitWidgetWarning, match="two or more layers"):
        w = cw.training([m])
    assert w._broken and "two or more layers" in w.summary() + w.error


# ---------------------------------------------------------------------------------------- page inputs
_page = page  # (pagesim.page: values as the page's comm `update` sends them, through the PageInputs gate)


def test_a_bad_step_from_the_page_is_a_message_and_reverts(view):
    view.step = view.steps[1]
    for bad, why in ((view.steps[1] + 1, "not a snapshot step"), ("3", "must be an integer"),
                     (1.5, "must be an integer"), (None, "must be an integer")):
        with pytest.warns(CircuitWidgetWarning, match=why):
            _page(view, step=bad)
        assert view.step == view.steps[1] and why in view.error
        assert view.step_data["step"] == view.steps[1] and view.shown["variant"] == [view.steps[1]]
    _page(view, step=view.steps[2])
    assert view.step == view.steps[2] and view.step_data["step"] == view.steps[2]
    with pytest.warns(CircuitWidgetWarning, match="set by the kernel only"):
        _page(view, steps=[1, 2, 3])
    assert view.steps == training_run(view.run.snapshots[0].path.parent.parent).steps


def test_the_circuit_is_chosen_from_the_page_and_checked(view):
    old = list(view.circuit)
    with pytest.warns(CircuitWidgetWarning, match="must be below"):
        _page(view, circuit=[1, 0, 1, 1])
    assert view.circuit == old
    with pytest.warns(CircuitWidgetWarning, match="list of 4 integers"):
        _page(view, circuit=[0, 0, 1])
    with pytest.warns(CircuitWidgetWarning, match="out of range"):
        _page(view, circuit=[0, 0, 1, 7])
    assert view.circuit == old
    other = [0, 1 - old[1], 1, 1 - old[3]]
    _page(view, circuit=other)
    assert view.circuit == other and view.step_data["circuit"] == other and view.circuit_curves["circuit"] == other
    m = view.snapshot()
    assert view.step_data["k_comp"] == pytest.approx(
        float(engine.composition_scores(m, "k")[tuple(other)]), abs=1e-6)
    _page(view, circuit=old)


def test_a_head_selected_in_the_page_gets_its_pattern_at_the_shown_step(view):
    _page(view, layer=0, head=1)
    assert view.shown == {"layer": 0, "head": 1, "variant": [view.step], "version": 0}
    want = view.patterns_at(view.step).head(0, 1).numpy()
    np.testing.assert_allclose(decode_array(view.pattern).reshape(want.shape), want, atol=2e-3)


# ---------------------------------------------------------------------------------------- monitor, twins
def test_the_monitor_opens_its_finished_run_in_the_history_view(run_dir):
    out, mon = run_dir
    assert mon.status == "finished"
    w = mon.history()
    assert isinstance(w, TrainingHistory) and w.steps == training_run(out).steps and not w.error
    fresh = TrainingMonitor()
    with pytest.raises(ValueError, match="not watched a run"):
        fresh.history()


def test_static_twin_summary_and_offline_export(view, tmp_path):
    view.step = view.steps[-1]
    assert view.png()[:4] == b"\x89PNG"
    text = view.summary()
    assert f"step {view.steps[-1]}" in text and "K-composition" in text
    data, _ = view._repr_mimebundle_()
    assert data["text/plain"] == text and "image/png" in data
    path = view.save_html(tmp_path / "history.html")
    html = path.read_text()
    spec = json.loads(html.split('id="cw-data">', 1)[1].split("</script>", 1)[0])
    (w,) = spec["widgets"]
    assert w["module"] == "TrainingHistory" and w["inputs"] == ["circuit", "step", "layer", "head"]
    keys = [json.loads(k) for k in w["states"]]
    assert {k["step"] for k in keys} == set(view.steps)  # every snapshot can be scrubbed offline
    assert view.step == view.steps[-1] and not view.error  # the export left the view as it was


def test_curves_are_json_without_nan(view):
    text = json.dumps(view.curves, allow_nan=False) + json.dumps(view.step_data, allow_nan=False)
    assert "NaN" not in text and not any(isinstance(x, float) and math.isnan(x) for x in view.curves["loss"])


def test_only_a_few_snapshot_files_stay_loaded(view):
    for step in view.steps:
        view.snapshot(step)
    loaded = [s.step for s in view.run.snapshots if s.model is not None]
    assert len(loaded) <= view.keep_loaded + 1 and view.steps[-1] in loaded
    first = view.run.snapshots[0]
    assert first.model is None and view.snapshot(first.step) is first.model  # read again when asked for


def test_snapshot_objects_need_a_source():
    with pytest.raises(ValueError, match="neither a path nor a model"):
        Snapshot(3).load()


def test_the_phase_change_is_a_window_of_steep_change():
    steps = list(range(0, 1100, 100))
    curve = [0.0, 0.0, 0.01, 0.02, 0.1, 0.3, 0.55, 0.8, 0.9, 0.95, 1.0]  # rise 0 -> 1
    # 20 % is first reached at step 500 (0.3), 80 % at step 700 (0.8); the steepest pair is 500 -> 600
    assert engine.rise_window(steps, curve) == (500, 700)
    assert engine.rise_window(steps, curve, 0.5, 0.9) == (600, 800)
    assert engine.steepest_step(steps, curve) == (500, 600)
    # uneven spacing: the rise per step decides, and NaN evaluations are skipped
    assert engine.steepest_step([0, 10, 1000], [0.0, 0.1, 0.9]) == (0, 10)
    assert engine.rise_window([0, 1, 2, 3], [0.0, float("nan"), 0.5, 1.0]) == (2, 3)
    assert engine.rise_window(steps, curve[::-1]) is None  # a falling curve has no rise
    with pytest.raises(ValueError, match="two finite"):
        engine.steepest_step([0, 1], [float("nan"), 1.0])
    with pytest.raises(ValueError, match="lo < hi"):
        engine.rise_window(steps, curve, 0.8, 0.2)


def test_the_card_reports_the_window_the_notebook_shows():
    """The shipped lecture model's card and its history view locate the phase change with one definition."""
    from circwidgets import zoo

    card = zoo.card("toy-2l-code")["phase_change"]
    curves = engine.TrainingCurves.from_metrics(json.loads(cw.load("toy-2l-code").metadata["metrics"]))
    ind = card["induction"]
    assert ind["window"] == list(engine.rise_window(curves.steps, curves.best_induction))
    assert ind["steepest"] == list(engine.steepest_step(curves.steps, curves.best_induction))
    assert ind["first"] < 0.1 < 0.4 < ind["last"]  # the induction score rose during training
    gain = card["in_context_gain"]
    assert gain["window"] == list(engine.rise_window(curves.steps, curves.in_context_gain))
    assert ind["window"][0] < ind["window"][1] and gain["window"][0] < gain["window"][1]
