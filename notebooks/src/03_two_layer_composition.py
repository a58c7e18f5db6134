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
# Each score is normalised by `‖W_OV^{h1}‖ ‖W_QK^{h2}‖` (0 … 1), and compared with what random matrices of
# the same shapes give. The famous case: a **previous-token head** in layer 0 K-composes with an
# **induction head** in layer 1.

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
# ## 1. Which heads do what (behaviour)
#
# Detection scores on `BOS + r + r`: previous-token (attention to i−1), duplicate-token (to the previous
# occurrence of the same token), induction (to the token after it).

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
# keys match against the current token.
#
# ## 3. The virtual head
#
# Through V-composition, the two heads act together as one head with pattern `A^{h2} A^{h1}` and OV circuit
# `W_OV^{h1} W_OV^{h2}`. Here are the previous-token head, the induction head, and their composed pattern.

# %%
vh = engine.virtual_heads(model, tokens[None], (0, src), ind)
logits, cache = model.run_with_cache(tokens[None])
import matplotlib.pyplot as plt

fig, axs = plt.subplots(1, 3, figsize=(15, 4.8))
plot.attention_pattern(cache["pattern", 0][0, src], labels=labels, title=f"L0H{src}", ax=axs[0])
plot.attention_pattern(cache["pattern", ind[0]][0, ind[1]], labels=labels, title=f"L{ind[0]}H{ind[1]}", ax=axs[1])
plot.attention_pattern(vh.pattern[0], labels=labels, title="virtual head A2 A1", ax=axs[2])
plt.show()

# %% [markdown]
# ## 4. Induction shows in the loss
#
# On repeated random tokens, a model with induction heads predicts the second copy far better than the first.
# The first copy is random, so no model can beat `log d_vocab` there (a model trained on code does worse: it is
# confidently wrong about random tokens); on the second copy, copying is all it takes.

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
# Does the induction head use Q- or V-composition at all? Subtract the baseline
# (`composition_scores(..., baseline=True)`) and express the layer-0 → induction-head scores in units of the
# baseline's standard deviation.

# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
#@title Solution (click to show the code)
for kind in "qkv":
    z = engine.composition_scores(model, kind, baseline=True)[0, :, ind[0], ind[1]] / base_std
    print(kind, [round(float(x), 1) for x in z])

# %% [markdown]
# ### Exercise 2
# The virtual head's OV circuit `W_OV^{h1} W_OV^{h2}` is a low-rank factored matrix. What is its eigenvalue
# positivity on the full circuit `W_E · W_OV^{h1} W_OV^{h2} · W_U` (does the composed head copy)?
# (Hint: `vh.full_ov(model)` and its `.eigenvalues()`.)

# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
#@title Solution (click to show the code)
lam = vh.full_ov(model).eigenvalues()
print(f"virtual head L0H{src} -> L{ind[0]}H{ind[1]}: positivity {float(lam.sum().real / lam.abs().sum()):+.2f}")
