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
# First we train a tiny two-layer model live for a few seconds with the **TrainingMonitor** widget. A
# lecture-sized run is too short for the full phase change on a laptop CPU, so then we read the recorded
# training history of a shipped model, where it happened.

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
# positions (the recipe that forms induction heads fastest on this project's machines).
#
# **In the widget:** the left plot is the training loss (and the held-out and in-context losses at each
# evaluation); the right plot is every head's induction score over time. The scores and the in-context loss
# average over several repeat lengths (`engine.detection_lengths(tiny)`): with a single length, a layer-0 head
# that just attends a fixed number of positions back scores as an "induction head" at that length. The ■
# button stops the run after the current step and saves the model (so does the kernel's interrupt button).

# %%
import tempfile
from pathlib import Path

cfg = ModelConfig(n_layers=2, d_model=64, n_heads=2, d_head=32, d_vocab=32, n_ctx=32, attn_only=True,
                  normalization=None, positional="shortformer", bos_token_id=0, name="tiny-induction")
tiny = Transformer(cfg, seed=0)
task = RepeatTask(cfg.d_vocab, cfg.n_ctx, min_len=4, max_len=12)
tc = TrainConfig(steps=3000, batch_size=32, lr=1e-2, warmup=20, eval_every=50, icl_n_seqs=8)  # the engine's sweep
out = Path(tempfile.mkdtemp()) / "tiny-induction.safetensors"
monitor = cw.TrainingMonitor(save_path=out, title="tiny 2-layer model on repeated tokens")
shown = display(monitor, display_id=True)
trainer = Trainer(tiny, task, tc, callbacks=[monitor], time_limit=15, progress=False)  # 15 s of training
trainer.train()  # prints one line per evaluation
shown.update(monitor)  # the same live monitor; its saved picture (for viewers without a kernel) is now the final one
last = trainer.history[-1]
print(f"stopped at step {trainer.step} ({trainer.stopped_by or 'finished'}); best induction score "
      f"{last['max_induction']:.2f} (mean over repeat lengths {engine.detection_lengths(tiny)}; per length, best head: "
      f"{last.get('induction_by_len')})")

# %% [markdown]
# The monitor is a live view; here are the same curves as a static figure (what a viewer without a running
# kernel, such as GitHub, shows):

# %%
plot.training_curves(trainer.history, title="tiny model, trained live")

# %% [markdown]
# Fifteen seconds is short: depending on the machine, the induction score has only started to rise. (Run the
# cell again with a larger `time_limit`, or call `trainer.train()` once more to resume — training is resumable
# and deterministic.)
#
# ## 2. The phase change in a shipped model's history
#
# Every shipped model carries its training history (evaluations at regular steps) in its file's metadata.
# A phase change is not a threshold crossed: it is a **window of steep change**. We locate it as the steps
# over which a curve climbs from 20 % to 80 % of its total rise, and the single steepest step between two
# evaluations, for the best induction score and for the in-context gain (first-copy minus repeated-copy loss).

# %%
HISTORY_MODEL = MODEL
history = json.loads(read_metadata(cw.zoo.path(HISTORY_MODEL))["metrics"])
print(len(history), "evaluations; keys:", sorted(history[-1]))
plot.training_curves(history, title=HISTORY_MODEL)

# %%
# NBVAL_CHECK_OUTPUT
steps = [r["step"] for r in history]
best_ind = [r["max_induction"] for r in history]
gain = [r["icl_first"] - r["icl_repeated"] for r in history]


def rise_window(values: list[float], lo: float = 0.2, hi: float = 0.8) -> tuple[int, int]:
    """First steps at which `values` has covered `lo` and `hi` of its rise from the first to the last value."""
    v0, v1 = values[0], values[-1]
    return tuple(next(s for s, v in zip(steps, values) if v >= v0 + f * (v1 - v0)) for f in (lo, hi))


def steepest_step(values: list[float]) -> tuple[int, int]:
    """The pair of consecutive evaluations with the largest rise per step."""
    i = max(range(1, len(values)), key=lambda k: (values[k] - values[k - 1]) / (steps[k] - steps[k - 1]))
    return steps[i - 1], steps[i]


w_ind, w_gain = rise_window(best_ind), rise_window(gain)
print(f"best induction score {best_ind[0]:.2f} -> {best_ind[-1]:.2f}: 20-80% of the rise in steps "
      f"{w_ind[0]}-{w_ind[1]}, steepest between steps {steepest_step(best_ind)}")
print(f"in-context gain {gain[0]:.2f} -> {gain[-1]:.2f} nats: 20-80% of the rise in steps {w_gain[0]}-{w_gain[1]}, "
      f"steepest between steps {steepest_step(gain)}")

# %% [markdown]
# ### Measure the heads yourself: the shipped snapshots
#
# The zoo also ships a few log-spaced snapshots of the run (`cw.zoo.snapshots(name)`: `(step, path)` pairs).
# Load each one and measure its heads with the engine — the same scores as in the history above, recomputed
# from the weights, now averaged over the repeat-length sweep (the history above was logged at one length,
# |r| = 63, before the sweep existed, so the stars sit a little apart from the lines).

# %%
# NBVAL_CHECK_OUTPUT
final_step = int(read_metadata(cw.zoo.path(HISTORY_MODEL))["step"])  # the shipped model itself
snaps = cw.zoo.snapshots(HISTORY_MODEL) + [(final_step, cw.zoo.path(HISTORY_MODEL))]
snap_scores = []
for step, path in snaps:
    s = engine.all_head_scores(cw.load(path), n_seqs=8, seed=0)
    snap_scores.append((step, float(s["induction"].max()), float(s["previous_token"][0].max())))
    print(f"step {step:6d}: best induction {snap_scores[-1][1]:.2f}, "
          f"best layer-0 previous-token {snap_scores[-1][2]:.2f}")

# %%
import matplotlib.pyplot as plt

steps = [r["step"] for r in history]
fig, ax1 = plt.subplots(figsize=(8, 4))
ax1.plot(steps, [r["icl_first"] - r["icl_repeated"] for r in history], "C0", label="in-context gain (nats)")
ax1.set_xlabel("step"); ax1.set_ylabel("first-copy minus repeated-copy loss", color="C0")
ax2 = ax1.twinx()
L, H = len(history[-1]["induction"]), len(history[-1]["induction"][0])
for layer in range(L):
    for h in range(H):
        ax2.plot(steps, [r["induction"][layer][h] for r in history], color="C1" if layer else "C2", lw=1, alpha=0.7)
ax2.set_ylabel("induction score per head (orange: layer 1, green: layer 0)")
ax2.plot([x[0] for x in snap_scores], [x[1] for x in snap_scores], "k*", ms=10, label="snapshots (recomputed)")
ax2.legend(loc="center right")
ax1.axvspan(*w_ind, color="red", alpha=0.12, label="20-80% of the induction rise")
ax1.legend(loc="center left")
ax1.set_title("the induction bump: in-context gain and induction scores rise together")
plt.show()


# %% [markdown]
# **What the plot shows.** Before the phase change, the model predicts the repeated copy no better than the
# first (gain near 0) and no head scores on induction. Within one window, one or more layer-1 heads' scores
# climb steeply, and the gain climbs in the same window. That is a **co-occurrence in time** — Olsson et al.'s
# first line of evidence, not a proof that the in-context ability *is* the induction heads. The causal
# evidence is interventional: switch the induction head off and the gain collapses (notebook 05; notebook 00,
# Exercise 2).
#
# ### Exercise 1
# From `history`, find the step at which the in-context gain first exceeded half of its final value, and
# compare it with the step at which the best induction score first exceeded half of its final value.

# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
#@title Solution (click to show the code)
def first_step(values, frac=0.5):
    target = frac * values[-1]
    return next(s for s, v in zip(steps, values) if v >= target)


gain = [r["icl_first"] - r["icl_repeated"] for r in history]
best_ind = [r["max_induction"] for r in history]
print(f"gain reaches half its final value at step {first_step(gain)}; "
      f"induction score at step {first_step(best_ind)}")

# %% [markdown]
# ### Exercise 2
# Keep training the tiny model (`trainer.train(3000)` resumes where it stopped; `trainer.time_limit = 60`
# first) and watch the monitor. Does a layer-1 head or a layer-0 head take the induction role? Check with
# `engine.all_head_scores(trainer.model)` and, per repeat length, `engine.scores_by_length(trainer.model)`.

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
