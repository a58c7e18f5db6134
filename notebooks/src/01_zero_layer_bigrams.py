# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Zero-layer transformers are bigram tables
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/circwidgets/circwidgets/blob/main/notebooks/01_zero_layer_bigrams.ipynb)
#
# A transformer with **no layers** maps the current token straight to logits: embed, then unembed.
# Its logits are a row of
#
# $$W_E W_U \in \mathbb{R}^{d_\text{vocab} \times d_\text{vocab}}$$
#
# (row = current token B, column = next token C), so all it can learn is **P(C | B)**: a bigram table,
# squeezed through a `d_model`-dimensional bottleneck. This notebook compares that table with the bigram
# statistics of the data the model was trained on (plain Python code: the standard library and 30 pinned packages).

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
MODEL = "toy-0l-code"  # the one place to change the model: any name in cw.zoo.list()
model = cw.zoo.lecture(MODEL)  # read-only, one CPU thread; prints its shape
from safetensors.torch import load_file

stats = load_file(str(cw.zoo.stats_path(MODEL)))  # reference statistics shipped with the model
ids = stats["bigram_ids"].long()                   # the 500 most frequent tokens of the corpus
corpus_lp = stats["bigram_log_probs"].double()     # add-1 log P(C | B) among them  [B, C]

# %% [markdown]
# ## 1. The model's bigram table
#
# With no positional embedding and no layers, `log_softmax(W_E W_U)` *is* the model's prediction. We read it
# for the 500 most frequent tokens (rows: current token, columns: next token).

# %%
W_EU = model.W_E.double()[ids] @ model.W_U.double()  # [500, d_vocab]: the direct path, the whole model
model_lp = W_EU.log_softmax(-1)[:, ids]               # [500, 500] log P_model(C | B)
print("table:", tuple(model_lp.shape), "| rank of W_E W_U <= d_model =", model.cfg.d_model)

# %% [markdown]
# ## 2. Compared with the corpus
#
# Each point below is one pair (B, C): the corpus' log-probability on the x axis, the model's on the y axis.
# A perfect bigram model would put every point on the diagonal. The numbers are Pearson's r and Spearman's
# rank correlation over all 250,000 pairs.

# %%
# NBVAL_CHECK_OUTPUT
r = engine.pearson(model_lp.reshape(-1), corpus_lp.reshape(-1))
rho = engine.rank_correlation(model_lp.reshape(-1), corpus_lp.reshape(-1))
print(f"all pairs:  Pearson r = {r:.2f}, Spearman rho = {rho:.2f}")
seen = stats["bigram_seen"].bool()  # [B, C]: the pair occurs in the corpus (the others get add-1's floor)
r_seen = engine.pearson(model_lp[seen], corpus_lp[seen])
print(f"seen pairs: Pearson r = {r_seen:.2f} ({float(seen.float().mean()):.0%} of the pairs were seen)")

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(5, 4.5))
hb = ax.hexbin(corpus_lp.reshape(-1).numpy(), model_lp.reshape(-1).numpy(), gridsize=60, bins="log", cmap="Blues")
lo = float(min(corpus_lp.min(), model_lp.min()))
ax.plot([lo, 0], [lo, 0], "r--", lw=1, label="model = corpus")
ax.set_xlabel("corpus log P(C | B)  (add-1)")
ax.set_ylabel("model log-softmax(W_E W_U)")
ax.set_title(f"{MODEL}: {len(ids)}x{len(ids)} bigrams")
ax.legend(loc="upper left")
fig.colorbar(hb, ax=ax, label="pairs (log)")
plt.show()


# %% [markdown]
# **What the plot shows.** The band along the diagonal is the model learning the table: frequent,
# high-probability pairs (upper right) are fitted best. The vertical stripes on the left are pairs the corpus
# *never* shows: add-1 smoothing gives them all the same floor value per row, while the model ranks them
# anyway — which is why the correlation over the seen pairs alone is the fairer number (the one the model
# card's target is on). And the model has only `d_model` dimensions to encode a `d_vocab × d_vocab` table.
#
# ## 3. Read a few rows
#
# What does the model predict after a token, and what does the corpus say?

# %%
def top_next(token: str, k: int = 6):
    b = model.to_tokens(token, prepend_bos=False)[0]
    if len(b) != 1:
        return print(f"{token!r} is not one token")
    b = int(b[0])
    lp = (model.W_E[b].double() @ model.W_U.double()).log_softmax(-1)
    best = lp.topk(k).indices.tolist()
    shown = " ".join(repr(s) for s in model.to_str_tokens(torch.tensor(best)))
    line = f"{token!r:10} model -> {shown}"
    if b in ids.tolist():  # the corpus' top continuations among the frequent tokens
        row = corpus_lp[ids.tolist().index(b)]
        ref = ids[row.topk(k).indices].tolist()
        line += "\n" + " " * 11 + "corpus -> " + " ".join(repr(s) for s in model.to_str_tokens(torch.tensor(ref)))
    print(line)


for t in ["self", " import", " return", "(", " for"]:
    top_next(t)

# %% [markdown]
# ### Exercise 1
# Find the bigram (B, C) among the frequent tokens where model and corpus disagree most
# (largest `|model_lp - corpus_lp|` with a corpus probability above 1 %). Why might the model get it wrong?

# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
#@title Solution (click to show the code)
gap = (model_lp - corpus_lp).abs().masked_fill(corpus_lp < torch.log(torch.tensor(0.01)), 0)
i, j = divmod(int(gap.argmax()), gap.shape[1])
b, c = model.to_str_tokens(ids[[i, j]])
print(f"B={b!r} C={c!r}: corpus P={corpus_lp[i, j].exp():.3f}, model P={model_lp[i, j].exp():.3f}")

# %% [markdown]
# ### Exercise 2
# `W_E W_U` has rank at most `d_model`. How much of the table's energy sits in its top 32 singular
# directions? (Hint: the SVD of the `[500, 500]` table, or `engine.virtual_weights(model, "embed",
# "unembed")` — the same direct path, kept factored.)

# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
#@title Solution (click to show the code)
s = torch.linalg.svdvals(W_EU[:, ids])
print(f"top-32 share of the squared singular values: {float((s[:32] ** 2).sum() / (s ** 2).sum()):.2f}")
vw = engine.virtual_weights(model, "embed", "unembed")
print(f"effective rank of the whole W_E W_U: {vw.effective_rank():.1f} of at most {model.cfg.d_model}")
