# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # A five-minute tour of circwidgets
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/circwidgets/circwidgets/blob/main/notebooks/00_tour.ipynb)
#
# The mathematics of *A Mathematical Framework for Transformer Circuits* (Elhage et al. 2021), clickable.
# In five minutes: load a small transformer that ships with the package, open the **circuit explorer** on
# it, and find its **induction head** — the head that completes `[A][B] … [A] → [B]` by looking back at
# what followed the previous occurrence of the current token.
#
# Everything runs offline on a laptop CPU. Run the cells top to bottom (Shift+Enter).

# %%
# Colab only: install circwidgets and turn on custom widgets. Anywhere else this cell does nothing.
import sys

if "google.colab" in sys.modules:
    # %pip install -q "circwidgets @ git+https://github.com/circwidgets/circwidgets"
    from google.colab import output

    output.enable_custom_widget_manager()

# %% [markdown]
# ## 1. Load a shipped model
#
# The zoo holds small attention-only transformers trained by the package's own trainer. The model card
# says what it was trained on and which of its claims (measured on the shipped file) hold.

# %%
import matplotlib.pyplot as plt
import torch

import circwidgets as cw
from circwidgets import engine, plot

# %matplotlib inline
MODEL = "toy-2l-code"  # the one place to change the model: any name in cw.zoo.list()
model = cw.zoo.lecture(MODEL)  # read-only, one CPU thread; prints its shape

# %%
cw.zoo.card(MODEL)

# %% [markdown]
# ## 2. An input on which induction shows
#
# A sequence whose second half repeats its first half: in the second copy, every next token can be
# predicted by copying — if the model has learned to look back.

# %%
tokens, labels = cw.zoo.example_tokens(model)  # the snippet twice (or BOS + r + r); prints it

# %% [markdown]
# ## 3. The circuit explorer
#
# `cw.explore` puts six views of the model side by side; **they all follow one selected head**:
#
# - **attention** — the head grid (coloured by induction score: the darker, the more induction-like) and the
#   selected head's attention pattern on the input (row = query position, column = key position).
#   *Click a cell of the grid* to select a head; hover a token to see where it looks.
# - **eigenvalues** — each head's OV and QK circuits' eigenvalue positivity; eigenvalues in the complex plane.
#   (For an induction head the *token* QK positivity is the wrong quantity — its keys match the *previous*
#   token, through a previous-token head; pick that head in the "QK composed through" menu. Notebook 03.)
# - **skip-trigrams** — the selected head's top `[A] … [B] → [C]` read off its weights.
# - **composition** — K-composition scores between earlier and later heads (click a cell for the pair).
# - **ablation** — click heads to switch them off and watch the per-token loss.
# - **paths** — one logit split into the direct path, one-head and two-head (virtual-head) terms.
#
# It opens on the model's strongest induction head, and the paths panel on a position where that head
# decides the next token (`engine.decisive_position`). Try it: click another cell of the attention panel's
# grid, then come back to the darkest cell in layer 1.

# %%
ex = cw.explore(model, tokens, labels=labels)
ex

# %% [markdown]
# ## 4. Find the induction head with numbers
#
# The colours of the grid are the engine's **detection scores** on `BOS + r + r` (random tokens
# repeated): the average attention of each head to the previous token (*previous-token score*) and to
# the token after the previous occurrence of the current token (*induction score*). Both are in [0, 1], and
# both are **averaged over several repeat lengths** |r| (`engine.detection_lengths(model)`): a head that
# simply looks a fixed distance back would score at one length only, an induction head scores at all.

# %%
# NBVAL_CHECK_OUTPUT
scores = engine.all_head_scores(model, n_seqs=16, seed=0)
print("repeat lengths averaged:", engine.detection_lengths(model))
for name in ("previous_token", "induction"):
    print(f"{name:15s}", [[round(float(x), 2) for x in row] for row in scores[name]])
best = divmod(int(scores["induction"].argmax()), model.cfg.n_heads)
print("induction head: L%dH%d" % best, "score", round(float(scores["induction"][best]), 2),
      "| per length:", {n: round(float(s["induction"][best]), 2) for n, s in engine.scores_by_length(model).items()})

# %% [markdown]
# Select it in every panel at once from Python (the same as a click), and look at its pattern on the
# input below: in the second copy each query attends to the key **one after** its earlier occurrence —
# the diagonal stripe offset from the main diagonal.

# %%
ex.select(*best)
logits, cache = model.run_with_cache(tokens[None])
plot.attention_pattern(cache["pattern", best[0]][0, best[1]], labels=labels,
                          title=f"L{best[0]}H{best[1]} on the repeated input")

# %% [markdown]
# ### Exercise 1
# An induction head needs a *previous-token head* in an earlier layer: its keys must carry "the token
# before me". Which layer-0 head does the induction head **K-compose** with most
# (`engine.composition_scores(model, "k")`, indexed `[layer1, head1, layer2, head2]`), and what is that
# head's previous-token score?

# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
#@title Solution (click to show the code)
k = engine.composition_scores(model, "k")[0, :, best[0], best[1]]  # every layer-0 head -> the induction head
h1 = int(k.argmax())
print(f"strongest K-composition into L{best[0]}H{best[1]}: L0H{h1} (score {float(k[h1]):.2f}); "
      f"its previous-token score: {float(scores['previous_token'][0, h1]):.2f}")

# %% [markdown]
# ### Exercise 2
# Switch the induction head off (zero ablation) and compare the model's loss on the repeated input with and
# without it, on each half of the sequence. Which half gets worse, and why that one? (Hint:
# `eff = engine.ablate_heads(model, tokens[None], [best])` returns an effect with the losses `eff.clean` and
# `eff.intervened` and their difference `eff.delta`; a metric argument measures one half;
# `cw.ablation(model, tokens)` does the same by clicking.)

# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
#@title Solution (click to show the code)
half = len(tokens) // 2  # predictions 0..half-1 read the first copy, half.. the second


def half_loss(part: slice):
    """Mean next-token loss over the predictions in `part` (a metric for engine.ablate_heads)."""
    return lambda lg, t: engine.loss_metric(lg[:, part], t[:, part])


halves = {"first copy": slice(0, half + 1), "second copy": slice(half, None)}
effects = {name: engine.ablate_heads(model, tokens[None], [best], metric=half_loss(part))
           for name, part in halves.items()}
for name, e in effects.items():
    print(f"{name:11s}: loss {e.clean:.2f} -> {e.intervened:.2f} (delta {e.delta:+.2f})")
print("gets worse most:", max(effects, key=lambda n: effects[n].delta))

# %% [markdown]
# <details><summary>Why that half? (click)</summary>
#
# Only the second copy can be predicted by looking back: each of its tokens followed the same token in the
# first copy. That is exactly what the induction head does, so switching it off costs the second copy most.
# In the first copy the snippet is new text and most of its tokens have nothing earlier to copy from. The cut
# still costs the first copy something (a small fraction of what it costs the second, here): the snippet repeats some
# tokens within itself (`encoding`, `path`), and the head may do other work on ordinary code too; this
# experiment does not tell the two apart.
# </details>
#
# ## Where next
#
# | notebook | what it teaches |
# | --- | --- |
# | `01_zero_layer_bigrams` | `W_E W_U` is a bigram table |
# | `02_one_layer_skip_trigrams` | QK / OV circuits, copying eigenvalues, skip-trigrams |
# | `03_two_layer_composition` | Q / K / V composition, virtual heads, induction |
# | `04_virtual_weights_and_paths` | virtual weights, path expansion, basis invariance |
# | `05_ablation_and_patching` | head and path ablations, activation patching |
# | `06_training_and_phase_change` | watch an induction head form |
# | `07_real_architectures` | rotary positions, grouped-query attention, RMSNorm; bringing your own model |
#
# Share a view without a kernel: `ex.save_html("tour.html")` writes one offline HTML file that still
# answers clicks.
