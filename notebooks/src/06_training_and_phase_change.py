# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Watching an induction head form
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/circwidgets/circwidgets/blob/main/notebooks/06_training_and_phase_change.ipynb)
#
# Olsson et al. (2022) found that induction heads form **suddenly**: a *phase change* early in training, seen
# as a bump in the loss curve, the in-context loss dropping, and the induction score of some heads jumping
# from ~0 to high within a short window.
#
# First we train a tiny two-layer model live for a few seconds with the **TrainingMonitor** widget and open
# its snapshots in the **TrainingHistory** view. A lecture-sized run is too short for the full phase change
# on a laptop CPU, so then we scrub through the shipped snapshots of a model trained longer: one step
# slider moves the loss curves, every head's scores over training, a head's attention pattern and the
# induction circuit's weights together.

# %%
# Colab only: install circwidgets and turn on custom widgets. Anywhere else this cell does nothing.
import sys

if "google.colab" in sys.modules:
    # %pip install -q "circwidgets @ git+https://github.com/circwidgets/circwidgets"
    from google.colab import output

    output.enable_custom_widget_manager()

# %%
import matplotlib.pyplot as plt
import torch

import circwidgets as cw
from circwidgets import engine, plot

# %matplotlib inline
MODEL = "toy-2l-code"  # the one place to change the model: any name in cw.zoo.list()
model = cw.zoo.lecture(MODEL)  # read-only, one CPU thread; prints its shape
import json

from circwidgets.model import ModelConfig, Transformer
from circwidgets.model.io import read_metadata
from circwidgets.train import RepeatTask, TrainConfig, Trainer

# %% [markdown]
# ## 1. Train live
#
# The task: random tokens with a segment repeated once (variable length and offset); only an induction
# mechanism can predict the repeat. The model: 2 layers, 2 heads, d_model 64, no LayerNorm, shortformer
# positions (no norm before the heads: with pre-norms induction heads formed far later on this project's
# machines).
#
# **In the widget:** the left plot is the training loss (and the held-out and in-context losses at each
# evaluation); the right plot is every head's induction score over time. The scores and the in-context loss
# average over several repeat lengths (`engine.detection_lengths(tiny)`): with a single length, a layer-0 head
# that just attends a fixed number of positions back scores as an "induction head" at that length. The ■
# button stops the run after the current step and saves the model (so does the kernel's interrupt button).
# The trainer keeps log-spaced **snapshots** of the model in its run folder (`n_snapshots`).

# %%
import tempfile
from pathlib import Path

cfg = ModelConfig(n_layers=2, d_model=64, n_heads=2, d_head=32, d_vocab=32, n_ctx=32, attn_only=True,
                  normalization=None, positional="shortformer", bos_token_id=0, name="tiny-induction")
tiny = Transformer(cfg, seed=0)
task = RepeatTask(cfg.d_vocab, cfg.n_ctx, min_len=4, max_len=12)
tc = TrainConfig(steps=3000, batch_size=32, lr=1e-2, warmup=20, eval_every=50, icl_n_seqs=8,  # the engine's sweep
                 n_snapshots=12)
run_dir = Path(tempfile.mkdtemp()) / "tiny-induction"
monitor = cw.TrainingMonitor(save_path=run_dir / "stopped.safetensors", title="tiny 2-layer model on repeated tokens")
shown = display(monitor, display_id=True)
trainer = Trainer(tiny, task, tc, out_dir=run_dir, callbacks=[monitor], time_limit=15, progress=False)  # 15 s
trainer.train()  # prints one line per evaluation
shown.update(monitor)  # the same live monitor; its saved picture (for viewers without a kernel) is now the final one
last = trainer.history[-1]
print(f"stopped at step {trainer.step} ({trainer.stopped_by or 'finished'}); best induction score "
      f"{last['max_induction']:.2f} (mean over repeat lengths {engine.detection_lengths(tiny)}; per length, best head: "
      f"{last.get('induction_by_len')})")

# %% [markdown]
# The run has ended, so the monitor can open it in the history view: `monitor.history()` reads the
# snapshots the trainer kept and its `metrics.json`. Drag the slider (or press ▶): every panel shows the
# same step. Fifteen seconds is short: on most machines the induction score has not risen yet, and the best
# "induction" score then belongs to a layer-0 head that looks a fixed distance back (it scores at one repeat
# length only; the sweep below shows how to tell). (Run the training cell again with a larger `time_limit`,
# or call `trainer.train()` once more to resume — training is resumable and deterministic.)

# %%
live_history = monitor.history()
live_history

# %% [markdown]
# ## 2. The phase change in a shipped model, scrubbable
#
# The zoo ships log-spaced snapshots of `MODEL`'s training run (`cw.zoo.snapshots(MODEL)`), and the model
# file carries the metrics logged during training. `cw.training(MODEL)` opens them in the history view:
#
# - **top left**: held-out loss and the in-context losses (first copy vs repeated copy of `BOS + r + r`)
#   as logged during training, with the current step marked;
# - **top right**: every head's induction (solid) and previous-token (dashed) score over training — Olsson
#   et al.'s plot — with the selected head highlighted; the rings are the selected head's scores measured on
#   the snapshot itself (engine definitions, averaged over the repeat lengths);
# - **bottom left**: the selected head's attention pattern on a repeated random sequence *at that step*
#   (click a head in the grid);
# - **bottom right**: the induction circuit at that step, read off the weights: the induction head's OV
#   positivity (does it copy?), the positivity of its K-composition QK term through the previous-token head
#   (does it attend to "the token after the one like me"?) and the K-composition score against a random
#   baseline. The two heads are the engine's detection at the last snapshot; the menus change them.

# %%
history_view = cw.training(MODEL)
history_view

# %% [markdown]
# A phase change is not a threshold crossed: it is a **window of steep change**. We locate it in the
# logged curves as the steps over which a curve climbs from 20 % to 80 % of its total rise, and the single
# steepest step between two evaluations, for the best induction score and for the in-context gain
# (first-copy minus repeated-copy loss).

# %%
# NBVAL_CHECK_OUTPUT
curves = history_view.training_curves  # engine.TrainingCurves: the trainer's logged records
steps = curves.steps
best_ind, gain = curves.best_induction, curves.in_context_gain  # gain: first-copy minus repeated-copy loss
# engine.rise_window: first steps covering 20 % and 80 % of the rise; engine.steepest_step: the steepest pair
w_ind, w_gain = engine.rise_window(steps, best_ind), engine.rise_window(steps, gain)
print(f"{len(steps)} logged evaluations, {len(history_view.steps)} snapshots at steps {history_view.steps}")
print(f"best induction score {best_ind[0]:.2f} -> {best_ind[-1]:.2f}: 20-80% of the rise in steps "
      f"{w_ind[0]}-{w_ind[1]}, steepest between steps {engine.steepest_step(steps, best_ind)}")
print(f"in-context gain {gain[0]:.2f} -> {gain[-1]:.2f} nats: 20-80% of the rise in steps {w_gain[0]}-{w_gain[1]}, "
      f"steepest between steps {engine.steepest_step(steps, gain)}")
overlap = min(w_ind[1], w_gain[1]) - max(w_ind[0], w_gain[0])
print("the two windows overlap" if overlap >= 0 else f"the two windows are {-overlap} steps apart")

# %% [markdown]
# Read the gain as two curves, not one. In the shipped `toy-2l-code` both in-context losses start at
# `log d_vocab` (8.3 nats) and first *rise*, before any induction: the model learns code, and on random tokens
# its direct path becomes confidently wrong (first copy 13.3, repeated copy 11.5 nats at step 10,000). Inside
# the window the repeated copy falls (11.6 → 7.8 nats between steps 9,750 and 21,000) while the first copy
# rises only 0.5: most of the gain there is the copy, which is the induction heads' doing. The held-out loss
# on code shows no bump in this run, unlike Olsson et al.'s models: it keeps falling smoothly through the window.
#
# The steepest single step is not always the phase change. In this run the gain's steepest pair of evaluations
# sits at steps 18,750–19,000, late in its window, and two thirds of that jump (+0.48 nats) is the *first* copy
# getting worse (13.47 → 13.80), not the copy getting better. At a constant learning rate of 2e-3 the weights
# jitter from one evaluation to the next (each scores the same 16 random sequences per repeat length), and
# neighbouring points differ by tenths of a nat; a steepest pair can also sit on a change of the learning-rate
# schedule (the shipped two-layer code models hold the rate constant, then decay it linearly: `toy-2l-code`
# from step 40,000, `toy-2l-rotary` from 17,000). The 20–80 % window, which reads the whole curve, is the
# locator to trust.
#
# ### Scrub across the window
#
# Move the view to the last snapshot *before* the induction window and to the first one *after* it (the cell
# below does it from Python: `history_view.step = ...` is what the slider does). At each snapshot the cell
# prints what the panels show: the induction head's score, and its circuit in the weights. Compare the rows:
# which numbers change across the window, and which were already there before it?

# %%
# NBVAL_CHECK_OUTPUT
l1, h1, l2, h2 = history_view.circuit
snap_steps = history_view.steps
before = max([s for s in snap_steps if s <= w_ind[0]], default=snap_steps[0])
after = min([s for s in snap_steps if s >= w_ind[1]], default=snap_steps[-1])
print(f"circuit: previous-token head L{l1}H{h1} -> induction head L{l2}H{h2} (engine detection at the last snapshot)")
print(" step | ind. score | prev-token L0 | OV positivity | K-comp QK positivity | K-comp (baseline)")
for s in snap_steps:
    sc, cm = history_view.scores_at(s), history_view.circuit_at(s)
    mark = " <- before the window" if s == before else " <- after the window" if s == after else ""
    print(f"{s:5d} | {float(sc.induction[l2, h2]):10.2f} | {float(sc.previous_token[l1, h1]):13.2f} | "
          f"{cm.ov.positivity:+13.2f} | {cm.k_qk.positivity:+20.2f} | "
          f"{cm.k_composition:.3f} ({cm.baseline[0]:.3f}){mark}")
history_view.step = after
print(f"the view now shows step {history_view.step}: {history_view.error or 'no message'}")
# how much of each quantity's change from the first to the last snapshot happens between `before` and `after`
rows = {"induction score": lambda s: float(history_view.scores_at(s).induction[l2, h2]),
        "OV positivity": lambda s: history_view.circuit_at(s).ov.positivity,
        "K-comp QK positivity": lambda s: history_view.circuit_at(s).k_qk.positivity,
        "K-composition": lambda s: history_view.circuit_at(s).k_composition}
for name, f in rows.items():
    total = f(snap_steps[-1]) - f(snap_steps[0])
    across = f(after) - f(before)
    print(f"{name:21s}: {across:+.2f} across the window, {across / total:.0%} of its change over training"
          if total else f"{name}: no change over training")

# %% [markdown]
# The view's picture (the same numbers, as a static figure for viewers without a kernel):

# %%
history_view.figure()

# %% [markdown]
# **What the view shows, and what it does not.** The table and the curves put the changes in time: the
# last lines of the table say how much of each quantity's change over training falls inside the window. A
# quantity whose change mostly happens before the window was in place before the behaviour appeared (the
# weights can be ready before the head uses them); one whose change falls inside the window moved with the
# behaviour. The curves say whether the in-context gain rises in the same window as the induction score. That
# is a **co-occurrence in time** — Olsson et al.'s first line of evidence, not a proof that the in-context
# ability *is* the induction heads. The causal evidence is interventional: switch the induction head off and
# the gain falls by more than half (notebook 05; notebook 00, Exercise 2).
#
# ### Is it really induction? The repeat-length sweep
#
# A head that attends a fixed distance back scores as an "induction head" on `BOS + r + r` at the one repeat
# length where that distance matches. An induction head scores at every length. Every score in the view is the
# mean over the lengths of `engine.detection_lengths`; here is the sweep itself at the last snapshot, for the
# detected induction head and the best-scoring layer-0 head (which cannot compose with an earlier head).

# %%
# NBVAL_CHECK_OUTPUT
final = history_view.snapshot(snap_steps[-1])
by_len = engine.scores_by_length(final, n_seqs=8, kinds=("induction",))
ind_l0 = sum(sc["induction"] for sc in by_len.values())[0]
fake = (0, int(ind_l0.argmax()))
for name, (lay, hd) in (("detected induction head", (l2, h2)), ("best layer-0 head", fake)):
    vals = [float(sc["induction"][lay, hd]) for sc in by_len.values()]
    print(f"{name} L{lay}H{hd}: " + ", ".join(f"|r|={n}: {v:.2f}" for n, v in zip(by_len, vals))
          + f"  (spread over lengths {max(vals) - min(vals):.2f}, lowest {min(vals):.2f})")
meta_tc = json.loads(read_metadata(cw.zoo.path(MODEL)).get("train_config", "{}"))
print("the logged curves used repeat length(s):", meta_tc.get("icl_seq_lens") or meta_tc.get("icl_seq_len")
      or "the engine's sweep")

# %% [markdown]
# A score that is high at one length and low at another is the signature of a fixed-offset head, not of
# induction; a real induction head's lowest score over the sweep is close to its highest. The tiny model
# trained live above is caught this way early in training: its best head's scores per length (they depend on
# how far this machine trained it in 15 seconds):

# %%
live = engine.scores_by_length(trainer.model, n_seqs=8, kinds=("induction",))
mean = sum(sc["induction"] for sc in live.values()) / len(live)
lay, hd = divmod(int(mean.argmax()), trainer.model.cfg.n_heads)
vals = [float(sc["induction"][lay, hd]) for sc in live.values()]
print(f"tiny model at step {trainer.step}, best head L{lay}H{hd}: "
      + ", ".join(f"|r|={n}: {v:.2f}" for n, v in zip(live, vals))
      + f"  (highest / lowest over lengths: {max(vals) / max(min(vals), 1e-3):.1f}x)")

# %% [markdown]
# ### Exercise 1
# From `curves`, find the step at which the in-context gain first exceeded half of its final value, and
# compare it with the step at which the best induction score first exceeded half of its final value.

# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
#@title Solution (click to show the code)
def first_step(values, frac=0.5):
    target = frac * values[-1]
    return next(s for s, v in zip(steps, values) if v >= target)


print(f"gain reaches half its final value at step {first_step(gain)}; "
      f"induction score at step {first_step(best_ind)}")

# %% [markdown]
# ### Exercise 2
# Keep training the tiny model (`trainer.train(3000)` resumes where it stopped; `trainer.time_limit = 60`
# first), then open `monitor.history()` again. Does a layer-1 head or a layer-0 head take the induction role?
# Check with `engine.all_head_scores(trainer.model)` and, per repeat length, `engine.scores_by_length(trainer.model)`.

# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
#@title Solution (without the extra training) (click to show the code)
s = engine.all_head_scores(trainer.model, n_seqs=8)
by_len = engine.scores_by_length(trainer.model, n_seqs=8, kinds=("induction",))
print("induction (mean over lengths):", [[round(float(x), 2) for x in row] for row in s["induction"]],
      "| previous-token:", [[round(float(x), 2) for x in row] for row in s["previous_token"]])
for n, sc in by_len.items():
    print(f"  |r| = {n:3d}: induction", [[round(float(x), 2) for x in row] for row in sc["induction"]])
lay, hd = divmod(int(s["induction"].argmax()), trainer.model.cfg.n_heads)
if float(s["induction"][lay, hd]) < 0.3:
    print(f"no induction head yet (best L{lay}H{hd}: {float(s['induction'][lay, hd]):.2f}); train longer")
elif lay == 0:
    print(f"L0H{hd} scores, but a layer-0 head has no earlier head to compose with: compare its scores per length "
          "(a head looking a fixed distance back scores at one length only)")
else:
    print(f"L{lay}H{hd}, a layer-{lay} head, takes the induction role (it can K-compose with layer 0)")
