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
torch.set_num_threads(1)  # small models: one thread is as fast and does not fight other work
MODEL = "toy-2l-code"  # the one place to change the model: any name in cw.zoo.list()
model = cw.load(MODEL).requires_grad_(False)  # we only read the weights here

print(model.cfg.name, "|", model.cfg.n_layers, "layers x", model.cfg.n_heads, "heads, d_model", model.cfg.d_model,
      "| vocab", model.cfg.d_vocab, "| shipped:", cw.zoo.list())

# %%
SNIPPET = """def read_config(path, encoding="utf-8"):
    with open(path, encoding=encoding) as handle:
        return parse_config(handle.read())
"""
if model.tokenizer is not None:
    tokens = model.to_tokens(SNIPPET + SNIPPET)[0]  # the snippet twice: its second copy is predictable
else:  # a model of random tokens: BOS + r + r, r = 24 random tokens
    tokens = engine.repeated_tokens(model.cfg.d_vocab, seq_len=24, bos=model.cfg.bos_token_id, seed=1)[0]
labels = model.to_str_tokens(tokens) if model.tokenizer is not None else [str(t) for t in tokens.tolist()]
sep = "" if model.tokenizer is not None else " "  # ids of a synthetic vocabulary: keep them apart
print(len(tokens), "tokens:", sep.join(labels[1:12]).replace("\n", "\\n"), "...")

# %% [markdown]
# ## 1. Which heads matter on this input?
#
# Each head ablated alone (zero ablation); the colour is the increase in the mean next-token loss.

# %%
# NBVAL_CHECK_OUTPUT
table = engine.ablation_table(model, tokens[None])
print("loss increase when ablated:", [[round(float(x), 2) for x in row] for row in table])
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
# ## 3. Activation patching
#
# Clean input: the repeated sequence; its last token is predicted by induction. Corrupted input: the same,
# but the token the induction head would copy is changed in the *first* copy, so the induction answer changes.
# The metric is the logit difference (clean answer − corrupted answer) at the last position. Patching one
# head's output (or the residual stream at one layer and position) from clean into corrupted shows where the
# information that decides the answer lives; `normalize=True` gives the fraction restored (1 = fully).

# %%
from circwidgets.engine.ablation_state import logit_diff_metric

s = (len(tokens) - 1) // 2            # tokens = BOS + S + S, |S| = s
t = 1 + s + (2 * s) // 3              # a position in the second copy
clean = tokens[:t][None]              # [1, t]: its last position predicts tokens[t] by induction
good = int(tokens[t])                 # the induction answer (what followed the same token in the first copy)
bad = (good + 7) % model.cfg.d_vocab or 1
corrupted = clean.clone()
corrupted[0, t - s] = bad             # in the first copy, `bad` now follows that token instead
metric = logit_diff_metric(pos=-1, good=good, bad=bad)
name = (lambda i: repr(model.to_str_tokens(torch.tensor([i]))[0])) if model.tokenizer is not None else str
with torch.no_grad():
    print(f"answer {name(good)} vs corrupted answer {name(bad)} (changed position {t - s} of {t}); logit "
          f"difference: clean {float(metric(model(clean), clean)):.2f}, "
          f"corrupted {float(metric(model(corrupted), corrupted)):.2f}")

# %%
# NBVAL_CHECK_OUTPUT
ph = engine.patch_heads(model, clean, corrupted, metric=metric, normalize=True)
pr = engine.patch_residual(model, clean, corrupted, metric=metric, normalize=True)
best = divmod(int(ph.argmax()), model.cfg.n_heads)
print(f"head that restores most: L{best[0]}H{best[1]} ({float(ph[best]):.2f} of the clean logit difference)")
print("residual patching restores > 0.5 at (layer, position):",
      [(l, p) for l, p in (pr > 0.5).nonzero().tolist()])

# %%
import matplotlib.pyplot as plt

fig, axs = plt.subplots(1, 2, figsize=(14, 3.5), gridspec_kw={"width_ratios": [1.4, 4]}, layout="constrained")
plot.head_grid(ph, title="patch each head's output", ax=axs[0])
im = axs[1].imshow(pr.numpy(), aspect="auto", cmap="RdBu", vmin=-1, vmax=1)
axs[1].set_yticks(range(model.cfg.n_layers))
axs[1].set_xlabel("position"); axs[1].set_ylabel("layer (resid_pre)"); axs[1].set_title("patch the residual stream")
fig.colorbar(im, ax=axs[1])
plt.show()

# %% [markdown]
# **What the heatmaps show.** In the residual stream, the changed position carries the difference entering
# both layers: the induction head at the last position attends there and copies that token as its *value*.
# Patching the last position does nothing — before the induction head has written the answer there, the clean
# and corrupted runs agree at the last position. Among heads, the layer-1 induction heads restore the clean
# logit difference (where several heads do induction, each restores a share). A layer-0 head can restore part of
# it too — likely one that writes the token at the changed position into the stream there, where the induction
# head reads its values (V-composition: check with `engine.composition_scores(model, "v")`).
#
# ## 4. The ablation widget
#
# **In the widget:** click heads in the grid to switch them off (zero or mean, selectable), cut single paths
# (source head → destination head's Q / K / V), and watch the per-token loss and top predictions update.
# With a corrupted input, the "patch" mode shows the two patching heatmaps above.

# %%
cw.ablation(model, clean[0], corrupted=corrupted[0])

# %% [markdown]
# ### Exercise 1
# Zero ablation moves a head's output off its usual range; **mean ablation** replaces it by its average.
# Redo the ablation table with `kind="mean"`. Which heads' effects change most, and why might zero ablation
# overstate a head's importance?

# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
#@title Solution (click to show the code)
mean_table = engine.ablation_table(model, tokens[None], kind="mean")
print("mean ablation:", [[round(float(x), 2) for x in row] for row in mean_table])
print("zero - mean:  ", [[round(float(x), 2) for x in row] for row in table - mean_table])

# %% [markdown]
# ### Exercise 2
# Direct logit attribution: which heads *directly* write the clean answer's logit difference at the last
# position? (Hint: `engine.direct_logit_attribution(model, clean, pos=-1, token=(good, bad))`.)

# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
#@title Solution (click to show the code)
dla = engine.direct_logit_attribution(model, clean, pos=-1, token=(good, bad))
print([[round(float(x), 2) for x in row] for row in dla.reshape(model.cfg.n_layers, model.cfg.n_heads)])
