# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Ablations and activation patching
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/circwidgets/circwidgets/blob/main/notebooks/05_ablation_and_patching.ipynb)
#
# Weights tell us what a head *can* do; interventions tell us what it *does* on an input.
#
# - **Head ablation**: replace a head's output by zero (or by its mean) and measure the change in loss.
# - **Path ablation**: remove a single composition path — e.g. the induction head's *keys* no longer see the
#   previous-token head — while both heads keep running.
# - **Activation patching**: run a *corrupted* input, paste in one activation from the *clean* run, and see
#   how much of the clean answer comes back.

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

# %%
tokens, labels = cw.zoo.example_tokens(model)  # the snippet twice (or BOS + r + r); prints it

# %% [markdown]
# ## 1. Which heads matter on this input?
#
# Each head ablated alone; the colour is the increase in the mean next-token loss on the example. Two ways
# to switch a head off: **zero** ablation (its output set to 0) and **mean** ablation (its output replaced by
# its mean over a *reference distribution*). We state the distribution: 16 windows of 64 tokens of ordinary
# code, cut from standard-library modules (`cw.zoo.code_windows`; `circwidgets.zoo.lecture.REFERENCE_MODULES` lists
# them) — the head's typical output on code, not on this one input.

# %%
# NBVAL_CHECK_OUTPUT
table = engine.ablation_table(model, tokens[None])
reference = cw.zoo.code_windows(model, n_windows=16, length=64, seed=0)
mean_table = engine.ablation_table(model, tokens[None], kind="mean", reference=reference)
print("loss increase, zero ablation:", [[round(float(x), 2) for x in row] for row in table])
print("loss increase, mean ablation:", [[round(float(x), 2) for x in row] for row in mean_table])
scores = engine.all_head_scores(model, n_seqs=16, seed=0)
ind = (1, int(scores["induction"][1].argmax()))
prev = (0, int(scores["previous_token"][0].argmax()))
print(f"induction head L{ind[0]}H{ind[1]}, previous-token head L{prev[0]}H{prev[1]}")

# %%
plot.head_grid(table, title="loss increase when each head is zero-ablated")

# %% [markdown]
# ## 2. Cut one composition path
#
# Remove the previous-token head's output from the induction head's **keys** only (`kind="k"`), then from its
# queries and its values instead: the K cut should hurt most.

# %%
# NBVAL_CHECK_OUTPUT
half = len(tokens) // 2
second_half = lambda lg, t: engine.interventions.loss_metric(lg[:, half:], t[:, half:])  # noqa: E731
for kind in "qkv":
    e = engine.ablate_path(model, tokens[None], src=prev, dst=ind, kind=kind, metric=second_half)
    print(f"cut L{prev[0]}H{prev[1]} -> L{ind[0]}H{ind[1]} ({kind}): "
          f"second-half loss {e.clean:.2f} -> {e.intervened:.2f}")
e = engine.ablate_heads(model, tokens[None], [ind], metric=second_half)
print(f"ablate L{ind[0]}H{ind[1]} entirely: second-half loss {e.clean:.2f} -> {e.intervened:.2f}")

# %% [markdown]
# ## 3. Activation patching: both sides of induction
#
# Clean input: the repeated snippet cut after a position `p` where the induction head decides the next token
# (`engine.decisive_position`): token A at `p` was followed by B in the first copy, so the answer is B. Two
# corruptions of the *first* copy hit the two sides of the mechanism:
#
# - **value side**: change the copied token B (the token after the earlier A). The induction head still
#   attends there, but now copies the wrong token.
# - **key side**: change the earlier A itself (the *prefix* token). The previous-token head at B's position now
#   writes "my previous token was not A", so the induction head's key no longer matches and it attends there
#   less. It still finds B partly (the logit difference falls much less than on the value side), so the
#   key side's patching fractions below are shares of a smaller gap.
#
# The metric is the logit difference (B − a fixed other token) at the last position. Patching one head's output
# (or the residual stream at one layer and position) from clean into corrupted shows where the information
# that decides the answer lives; `normalize=True` gives the fraction restored (1 = fully).

# %%
# NBVAL_CHECK_OUTPUT
s = (len(tokens) - 1) // 2                        # tokens = BOS + S + S, |S| = s
p = engine.decisive_position(model, tokens, ind)  # A = tokens[p] predicts B = tokens[p + 1] by induction
if p <= s:                                        # use the occurrence in the second copy
    p += s
a_first, b_first = p - s, p - s + 1               # the earlier A and B, in the first copy
assert tokens[a_first] == tokens[p] and tokens[b_first] == tokens[p + 1]
clean = tokens[:p + 1][None]                      # [1, p + 1]: the last position predicts B
good = int(tokens[p + 1])
bad = (good + 7) % model.cfg.d_vocab or 1         # the other token of the logit difference
metric = engine.logit_diff_metric(pos=-1, good=good, bad=bad)
name = (lambda i: repr(model.to_str_tokens(torch.tensor([i]), prepend_bos=False)[0])) \
    if model.tokenizer is not None else str
sides = {}
for side, where in (("value", b_first), ("key", a_first)):
    corrupted = clean.clone()
    corrupted[0, where] = bad if side == "value" else (int(tokens[where]) + 11) % model.cfg.d_vocab or 1
    sides[side] = (where, corrupted)
with torch.no_grad():
    print(f"A = {name(int(tokens[p]))} at position {p}, answer B = {name(good)}; logit difference: "
          f"clean {float(metric(model(clean), clean)):.2f}")
    for side, (where, corrupted) in sides.items():
        print(f"  {side} side corrupted (position {where}): {float(metric(model(corrupted), corrupted)):.2f}")

# %%
# NBVAL_CHECK_OUTPUT
patching = {}
for side, (_, corrupted) in sides.items():
    ph = engine.patch_heads(model, clean, corrupted, metric=metric, normalize=True)
    pr = engine.patch_residual(model, clean, corrupted, metric=metric, normalize=True)
    patching[side] = (ph, pr)
    top = [divmod(int(i), model.cfg.n_heads) for i in ph.flatten().argsort(descending=True)[:3]]
    print(f"{side} side: heads restoring most {[(f'L{l}H{h}', round(float(ph[l, h]), 2)) for l, h in top]}; "
          f"residual > 0.5 at (layer, position) {[tuple(x) for x in (pr > 0.5).nonzero().tolist()]}")
for side, (ph, _) in patching.items():
    print(f"{side} side, layer-0 heads restore:", [round(float(x), 2) for x in ph[0]],
          "| their previous-token scores:", [round(float(x), 2) for x in scores["previous_token"][0]])

# %%
fig, axs = plt.subplots(2, 2, figsize=(14, 6), gridspec_kw={"width_ratios": [1.4, 4]}, layout="constrained")
for row, (side, (ph, pr)) in enumerate(patching.items()):
    plot.head_grid(ph, title=f"{side} side: patch each head's output", ax=axs[row, 0])
    im = axs[row, 1].imshow(pr.numpy(), aspect="auto", cmap="RdBu", vmin=-1, vmax=1)
    axs[row, 1].set_yticks(range(model.cfg.n_layers))
    axs[row, 1].axvline(sides[side][0], color="k", lw=0.8, ls=":")
    axs[row, 1].set_xlabel("position"); axs[row, 1].set_ylabel("layer (resid_pre)")
    axs[row, 1].set_title(f"{side} side: patch the residual stream (dotted: the corrupted position)")
fig.colorbar(im, ax=axs[:, 1])
plt.show()

# %% [markdown]
# **What the heatmaps show.** Both sides end in the induction head: patching its output restores the answer.
# Before it, the two sides part:
#
# - **Value side**: the difference sits at B's position in both layers (B is what gets copied). No head moved
#   it there: it is B's own token embedding, which the induction head's values read at B's position. So
#   patching a layer-0 head restores a fraction at most (the printed row): what a layer-0 head adds to the
#   induction head's values at B is a V-composition path (notebook 03 found the partner by cutting it).
# - **Key side**: the difference starts at A's position entering layer 0 and sits at B's position entering
#   layer 1: something *moved it one position forward* — a previous-token head. The printed rows name it: the
#   layer-0 head that restores the key side is the one with the high previous-token score (where several heads
#   share that job, each restores only a share); the residual stream shows the move plainly. A fraction can
#   also be negative or above 1: one head's clean output patched alone into the corrupted run meets the other
#   heads' corrupted outputs, so heads' restorations need not add up.
#
# Patching the last position does nothing on either side: before the induction head has written the answer
# there, the clean and corrupted runs agree at the last position.
#
# ## 4. The ablation widget
#
# **In the widget:** click heads in the grid to switch them off (zero or mean, selectable), cut single paths
# (source head → destination head's Q / K / V), and watch the per-token loss and top predictions update.
# With a corrupted input, the "patch" mode shows the two patching heatmaps above.

# %%
cw.ablation(model, clean[0], corrupted=sides["key"][1][0])

# %% [markdown]
# ### Exercise 1
# Zero ablation moves a head's output off its usual range; **mean ablation** replaces it by its average over
# the reference distribution (above). Which head's effect changes most between the two, and in which
# direction? Why can the two disagree?

# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
#@title Solution (click to show the code)
diff = table - mean_table
most = divmod(int(diff.abs().argmax()), model.cfg.n_heads)
print("zero - mean:", [[round(float(x), 2) for x in row] for row in diff])
print(f"largest change: L{most[0]}H{most[1]} (zero {float(table[most]):+.2f}, mean {float(mean_table[most]):+.2f})")

# %% [markdown]
# <details><summary>Why the two disagree (click)</summary>
#
# Zero ablation removes everything a head writes, including a typical, input-independent part (e.g. a
# constant it writes whatever it attends to): the residual stream lands where no input puts it, and later
# layers can misbehave for reasons unrelated to what the head does *on this input* — zero ablation can
# overstate. Mean ablation keeps the typical part but replaces the input-specific part with the average
# message over the reference distribution, which is itself a message: on a repeated snippet, "what this head
# says on ordinary code" can mislead the layer-1 heads more than silence — mean ablation can overstate too
# (the printed differences show, head by head, which of the two hurts more here). Neither is *the* importance
# of a head: each answers "compared with what?", which is why the reference distribution must be stated.
# </details>

# %% [markdown]
# ### Exercise 2
# Direct logit attribution: which heads *directly* write the clean answer's logit difference at the last
# position? (Hint: `engine.direct_logit_attribution(model, clean, pos=-1, token=(good, bad))`.)

# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
#@title Solution (click to show the code)
dla = engine.direct_logit_attribution(model, clean, pos=-1, token=(good, bad))
print([[round(float(x), 2) for x in row] for row in dla.reshape(model.cfg.n_layers, model.cfg.n_heads)])
