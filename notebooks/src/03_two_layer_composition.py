# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Two layers: composition and induction heads
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/circwidgets/circwidgets/blob/main/notebooks/03_two_layer_composition.ipynb)
#
# In a two-layer model a layer-1 head can read what a layer-0 head wrote. The framework names three ways:
#
# - **Q-composition**: the later head's *queries* read the earlier head's output, `‖W_OV^{h1} W_QK^{h2}‖`;
# - **K-composition**: its *keys* do, `‖W_OV^{h1} W_QK^{h2 ᵀ}‖`;
# - **V-composition**: its *values* do, `‖W_OV^{h1} W_OV^{h2}‖` — a **virtual head** with pattern
#   `A^{h2} A^{h1}`.
#
# Each score is divided by the product of its two matrices' norms, `‖W_OV^{h1}‖ ‖W_QK^{h2}‖` (`‖W_OV^{h2}‖`
# for V), so it lies in 0 … 1, and is compared with what random matrices of the same shapes give. The famous
# case: a **previous-token head** in layer 0 K-composes with an **induction head** in layer 1.

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
# ## 1. Which heads do what (behaviour)
#
# Detection scores on `BOS + r + r`: previous-token (attention to i−1), duplicate-token (to the previous
# occurrence of the same token), induction (to the token after it), each averaged over several repeat lengths
# |r| (`engine.detection_lengths`), so that a head looking a fixed distance back is not taken for an
# induction head.

# %%
# NBVAL_CHECK_OUTPUT
scores = engine.all_head_scores(model, n_seqs=16, seed=0)
for name, s in scores.items():
    print(f"{name:16s}", [[round(float(x), 2) for x in row] for row in s])
ind = divmod(int(scores["induction"][1:].argmax()), model.cfg.n_heads)
ind = (ind[0] + 1, ind[1])
print("best induction head: L%dH%d" % ind)

# %% [markdown]
# ## 2. Composition scores (weights)
#
# **In the widget:** the heatmap shows the chosen kind's score for every (earlier head, later head) pair;
# switch Q / K / V at the top, tick "subtract baseline" to see scores minus the random baseline. *Click a cell*:
# the pair's two patterns and their virtual head's pattern `A^{h2} A^{h1}` on the input appear below.

# %%
cw.composition(model, tokens, labels=labels, kind="k")

# %%
# NBVAL_CHECK_OUTPUT
base_mean, base_std = engine.composition_baseline(model)
print(f"random baseline: {base_mean:.2f} +- {base_std:.2f}")
for kind in "qkv":
    into = engine.composition_scores(model, kind)[0, :, ind[0], ind[1]]  # layer-0 heads -> induction head
    print(f"{kind.upper()}-composition into L{ind[0]}H{ind[1]}:", [round(float(x), 2) for x in into])
kc = engine.composition_scores(model, "k")[0, :, ind[0], ind[1]]
src = int(kc.argmax())
print(f"strongest K-composer: L0H{src}, previous-token score {float(scores['previous_token'][0, src]):.2f}")

# %% [markdown]
# **What to look for.** The induction head's strongest K-composition input should be the layer-0 head with
# the highest previous-token score: its output ("the token before me was X") is what the induction head's
# keys match against the current token. These scores are norms: they say *how much* h2 reads of h1, not
# *what*. The next section reads what.
#
# ## 3. The induction mechanism in the weights
#
# Three circuits make an induction head (Elhage et al.; Olsson et al.), each a matrix we can read:
#
# 1. **The previous-token head's positional QK circuit** `W_pos W_QK W_posᵀ` peaks at offset −1: each position
#    attends to the one before it ("pointer arithmetic" with learned positions).
# 2. **The K-composition term** of the induction head's QK circuit through it,
#    `W_E W_Q^{h2} (W_K^{h2})ᵀ (W_OV^{h1})ᵀ W_Eᵀ` (row: the query token; column: the token the previous-token
#    head moved into the key position, i.e. the key's *previous* token). An induction head wants its
#    **diagonal**: "attend where the previous token is my token". Evidence: eigenvalue positivity near +1 and
#    top-1 diagonal accuracy (each query token's highest entry is itself).
# 3. **The induction head's OV circuit** `W_E W_OV W_U` copies: clearly positive eigenvalue positivity (+1 is
#    a pure copier), top-1 = attending to t raises t most.
#
# The induction head's *token* QK circuit `W_E W_QK W_Eᵀ` alone is the **wrong quantity**: it compares the
# query token with the key's *own* token, while an induction head matches the key's previous token (via the
# K-composition term above). Its positivity is printed last, for contrast.

# %%
# NBVAL_CHECK_OUTPUT
kterms = {h: engine.diagonal_stats(engine.k_composition_qk(model, (0, h), ind)) for h in range(model.cfg.n_heads)}
for h, st in kterms.items():
    print(f"K-composition term L0H{h} -> L{ind[0]}H{ind[1]}: {st}")
prev = (0, max(kterms, key=lambda h: kterms[h].top1))  # chosen by the evidence, not by hand
profile = engine.positional_qk_profile(model, prev)
print(f"previous-token head L0H{prev[1]}: positional QK profile peaks at offset {profile.peak}")
print(f"induction head L{ind[0]}H{ind[1]} OV circuit: {engine.ov_copying(model, ind)}")
print(f"induction head token-QK positivity (the wrong quantity): "
      f"{float(engine.eigen_positivity(model, 'qk')[ind]):+.2f}")

# %%
fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(profile.offsets[-24:].numpy(), profile.score[-24:].numpy(), ".-")
ax.set_xlabel("key offset j - i"); ax.set_ylabel("centred score")
ax.set_title(f"positional QK circuit of L0H{prev[1]} (mean per offset)")
plt.show()

# %% [markdown]
# Random factors give top-1 near `1 / d_vocab` and positivity near 0; the K-composition term through the
# previous-token head and the OV circuit of the induction head are far from both. **In the widget:** the
# eigenvalues of the induction head's circuits, with "QK composed through" set to the previous-token head (the
# menu at the top picks another layer-0 head; the grid's cells keep showing the plain OV / QK positivity).

# %%
cw.eigenvalues(model, layer=ind[0], head=ind[1], through=prev)

# %% [markdown]
# ## 4. The virtual head: which head V-composes?
#
# Through V-composition, two heads act together as one **virtual head**: pattern `A^{h2} A^{h1}`, OV circuit
# `W_OV^{h1} W_OV^{h2}`. Which layer-0 head feeds the induction head's *values*? The V-composition score is a
# hint; the test is behaviour: cut each layer-0 head's path into the induction head's values
# (`engine.ablate_path(..., kind="v")`) and watch the loss on the second copy of the snippet, where induction
# does the predicting. A cut that costs a tenth of a nat or more marks a real V partner. If every cut moved
# that loss by a few hundredths at most, no layer-0 head would be one: the induction head's values would read
# mostly the token embeddings themselves (the direct path), and the "virtual head" below would be a weak one.

# %%
# NBVAL_CHECK_OUTPUT
half = len(tokens) // 2
second_half = lambda lg, t: engine.loss_metric(lg[:, half:], t[:, half:])  # noqa: E731
v_cut = {h: engine.ablate_path(model, tokens[None], src=(0, h), dst=ind, kind="v", metric=second_half)
         for h in range(model.cfg.n_heads)}
print(f"second-copy loss {v_cut[0].clean:.2f}; with the V path from L0Hh cut:",
      {f"L0H{h}": round(e.intervened, 2) for h, e in v_cut.items()})
v_src = max(v_cut, key=lambda h: v_cut[h].delta)
v_score = engine.composition_scores(model, "v")[0, :, ind[0], ind[1]]
verdict = "a V partner" if v_cut[v_src].delta >= 0.1 else "under a tenth of a nat: no real V partner"
print(f"largest V-path cut: L0H{v_src}, {v_cut[v_src].delta:+.2f} nats ({verdict}); its V-score "
      f"{float(v_score[v_src]):.3f}, the highest: {v_src == int(v_score.argmax())}; cutting the K partner "
      f"L0H{prev[1]}'s V path: {v_cut[prev[1]].delta:+.2f}")

# %% [markdown]
# Here are the head with the largest V cut, the induction head, and their virtual head's pattern `A^{h2} A^{h1}` on
# the input. (In the shipped model no cut reaches a tenth of a nat: the induction head's values read the token
# embeddings themselves, and this virtual head is a weak one; Exercise 2 asks whether it copies.)

# %%
vh = engine.virtual_heads(model, tokens[None], (0, v_src), ind)
logits, cache = model.run_with_cache(tokens[None])
import matplotlib.pyplot as plt

fig, axs = plt.subplots(1, 3, figsize=(15, 4.8))
plot.attention_pattern(cache["pattern", 0][0, v_src], labels=labels, title=f"L0H{v_src}", ax=axs[0])
plot.attention_pattern(cache["pattern", ind[0]][0, ind[1]], labels=labels, title=f"L{ind[0]}H{ind[1]}", ax=axs[1])
plot.attention_pattern(vh.pattern[0], labels=labels, title="virtual head A2 A1", ax=axs[2])
plt.show()

# %% [markdown]
# ## 5. Induction shows in the loss
#
# On repeated random tokens, a model with induction heads predicts the second copy far better than the first
# (averaged over the repeat lengths; the plot shows the longest).
# The first copy is random, so no model can beat `log d_vocab` there (a model trained on code does worse: it is
# confidently wrong about random tokens); on the second copy, copying is all it takes. How far the repeated
# copy's loss falls is a measure of *how strongly* the model copies, not only whether it does: a small model
# whose induction head puts part of its attention on the right token, through a 32-dimensional OV circuit
# competing with what the direct path predicts for code, gains several nats but stays far from certain (a
# large model's induction heads bring it near zero).

# %%
# NBVAL_CHECK_OUTPUT
icl = engine.in_context_loss(model, n_seqs=16, seed=0)
print(f"loss on the first copy {icl.first:.2f}, on the repeated copy {icl.repeated:.2f} nats "
      f"(log d_vocab = {torch.log(torch.tensor(float(model.cfg.d_vocab))):.2f})")

# %%
plt.figure(figsize=(7, 3))
plt.plot(icl.per_position.numpy())
plt.axvline(len(icl.per_position) / 2, color="grey", ls="--", label="repeat starts")
plt.xlabel("position"); plt.ylabel("loss (nats)"); plt.legend(); plt.title("per-position loss on BOS + r + r")
plt.show()

# %%
cw.attention(model, tokens, labels=labels, layer=ind[0], head=ind[1], score="induction")

# %% [markdown]
# ### Exercise 1
# Are composition scores a reliable guide to which paths the induction head uses? For every layer-0 head and
# each kind (Q, K, V), compare the score minus the random baseline (`composition_scores(..., baseline=True)`)
# with the loss increase on the second copy when that path is cut (`engine.ablate_path`). Does the head with
# the highest score per kind match the head whose cut hurts most? Can a score *below* the baseline still be a
# path that matters?

# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
#@title Solution (click to show the code)
for kind in "qkv":
    excess = engine.composition_scores(model, kind, baseline=True)[0, :, ind[0], ind[1]]
    cut = [engine.ablate_path(model, tokens[None], src=(0, h), dst=ind, kind=kind, metric=second_half).delta
           for h in range(model.cfg.n_heads)]
    by_score, by_cut = int(excess.argmax()), max(range(len(cut)), key=cut.__getitem__)
    print(f"{kind.upper()}: score - baseline {[round(float(x), 3) for x in excess]} | loss increase when cut "
          f"{[round(c, 2) for c in cut]} | top by score L0H{by_score}, by cut L0H{by_cut}")

# %% [markdown]
# <details><summary>What the comparison says (click)</summary>
#
# Here the rankings agree for Q and K: the previous-token head tops K by score and by cut (its cut costs well over a
# nat), and the head that tops Q by score is the one whose Q cut hurts most (about a quarter of a nat). For V they
# disagree, and there is little to rank: every V score is below the baseline and no V cut costs more than a few
# hundredths of a nat (section 4: no real V partner). Agreement is not guaranteed (a score reads weights, a cut
# reads behaviour on one input), and the *level* does not transfer: the random baseline comes from Gaussian
# matrices, while trained heads concentrate their norm in a few directions, so a trained pair can score below the
# baseline and still carry a path whose cut costs a lot: the previous-token head's *Q* path scores below the
# baseline here, and its cut costs about a fifth of a nat. A score is a screening tool; a path cut is the test.
# (The baseline's spread is tiny, so dividing by it turns such a gap into "many σ below chance", a claim of no
# composition that the cuts contradict.)
# </details>

# %% [markdown]
# ### Exercise 2
# The virtual head's OV circuit `W_OV^{h1} W_OV^{h2}` is a low-rank factored matrix. What is its eigenvalue
# positivity on the full circuit `W_E · W_OV^{h1} W_OV^{h2} · W_U` (does the composed head copy)?
# (Hint: `vh.full_ov(model)` and its `.eigenvalues()`.)

# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
#@title Solution (click to show the code)
lam = vh.full_ov(model).eigenvalues()
print(f"virtual head L0H{v_src} -> L{ind[0]}H{ind[1]}: positivity {float(lam.sum().real / lam.abs().sum()):+.2f}")
