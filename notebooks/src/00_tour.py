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
torch.set_num_threads(1)  # small models: one thread is as fast and does not fight other work
MODEL = "toy-2l-code"  # the one place to change the model: any name in cw.zoo.list()
model = cw.load(MODEL).requires_grad_(False)  # we only read the weights here

print(model.cfg.name, "|", model.cfg.n_layers, "layers x", model.cfg.n_heads, "heads, d_model", model.cfg.d_model,
      "| vocab", model.cfg.d_vocab, "| shipped:", cw.zoo.list())

# %%
cw.zoo.card(MODEL)

# %% [markdown]
# ## 2. An input on which induction shows
#
# A sequence whose second half repeats its first half: in the second copy, every next token can be
# predicted by copying — if the model has learned to look back.

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
# ## 3. The circuit explorer
#
# `cw.explore` puts six views of the model side by side; **they all follow one selected head**:
#
# - **attention** — the head grid (coloured by induction score: the darker, the more induction-like) and the
#   selected head's attention pattern on the input (row = query position, column = key position).
#   *Click a cell of the grid* to select a head; hover a token to see where it looks.
# - **eigenvalues** — each head's OV and QK circuits' eigenvalue positivity; eigenvalues in the complex plane.
# - **skip-trigrams** — the selected head's top `[A] … [B] → [C]` read off its weights.
# - **composition** — K-composition scores between earlier and later heads (click a cell for the pair).
# - **ablation** — click heads to switch them off and watch the per-token loss.
# - **paths** — one logit split into the direct path, one-head and two-head (virtual-head) terms.
#
# Try it: click the darkest cell of the attention panel's grid in layer 1.

# %%
ex = cw.explore(model, tokens, labels=labels)
ex

# %% [markdown]
# ## 4. Find the induction head with numbers
#
# The colours of the grid are the engine's **detection scores** on `BOS + r + r` (random tokens
# repeated): the average attention of each head to the previous token (*previous-token score*) and to
# the token after the previous occurrence of the current token (*induction score*). Both are in [0, 1].

# %%
# NBVAL_CHECK_OUTPUT
scores = engine.all_head_scores(model, n_seqs=16, seed=0)
for name in ("previous_token", "induction"):
    print(f"{name:15s}", [[round(float(x), 2) for x in row] for row in scores[name]])
best = divmod(int(scores["induction"].argmax()), model.cfg.n_heads)
print("induction head: L%dH%d" % best, "score", round(float(scores["induction"][best]), 2))

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
# without it. Which half of the sequence gets worse? (Hint: `eff = engine.ablate_heads(model, tokens[None], [best])`
# returns an effect with the losses `eff.clean` and `eff.intervened` and their difference `eff.delta`;
# `cw.ablation(model, tokens)` does the same by clicking.)

# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
#@title Solution (click to show the code)
eff = engine.ablate_heads(model, tokens[None], [best])
half = len(tokens) // 2
per_tok = engine.ablate_heads(model, tokens[None], [best], metric=lambda lg, t: engine.interventions.loss_metric(
    lg[:, half:], t[:, half:]))
print(f"loss clean {eff.clean:.2f} -> ablated {eff.intervened:.2f}; "
      f"second half only: {per_tok.clean:.2f} -> {per_tok.intervened:.2f}")

# %% [markdown]
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
#
# Share a view without a kernel: `ex.save_html("tour.html")` writes one offline HTML file that still
# answers clicks.
