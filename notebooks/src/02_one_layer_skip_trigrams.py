# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # One-layer transformers: QK / OV circuits and skip-trigrams
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/circwidgets/circwidgets/blob/main/notebooks/02_one_layer_skip_trigrams.ipynb)
#
# A one-layer attention-only transformer's logits are the direct path (bigrams) plus one term per head:
#
# $$\text{logits} = x_0 W_U + \sum_h A^h x_0 W_{OV}^h W_U, \qquad W_{OV} = W_V W_O,\; W_{QK} = W_Q W_K^\top$$
#
# Each head is two circuits. The **QK circuit** `W_E W_QK W_Eᵀ` (row = destination/query token B,
# column = source/key token A) decides *where* to attend; the **OV circuit** `W_E W_OV W_U` (row = source
# token A, column = logit raised C) decides *what* moving that token changes. Together they implement
# **skip-trigrams** `[A] … [B] → [C]`. We read them off the weights of two models: one trained on
# **planted** skip-trigrams (known answers), and one trained on Python source.

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
MODEL = "toy-1l-trigrams"  # the one place to change the model: any name in cw.zoo.list()
model = cw.load(MODEL).requires_grad_(False)  # we only read the weights here
import json

from circwidgets.model.io import read_metadata

rules = [tuple(r) for r in json.loads(read_metadata(cw.zoo.path(MODEL))["planted_rules"])]
print(len(rules), "planted rules [A] ... [B] -> [C], e.g.", rules[:4])
print(model.cfg.name, "|", model.cfg.n_layers, "layers x", model.cfg.n_heads, "heads, d_model", model.cfg.d_model,
      "| vocab", model.cfg.d_vocab, "| shipped:", cw.zoo.list())

# %% [markdown]
# ## 1. Copying heads: eigenvalue positivity
#
# If a head's OV circuit *copies* (attending to token A raises the logit of A), its full OV circuit has mostly
# positive real eigenvalues. The engine's score `Re(Σλ) / Σ|λ|` is +1 for a pure copier and near 0 for a
# random matrix. **In the widget:** the grid shows every head's OV and QK positivity; click a head to see its
# eigenvalues in the complex plane (unit circle marked). Planted rules map A to an unrelated C, so these heads
# need *not* copy.

# %%
cw.eigenvalues(model)

# %%
# NBVAL_CHECK_OUTPUT
pos = engine.eigen_positivity(model, circuit="ov")
print("OV positivity per head:", [round(float(x), 2) for x in pos[0]])

# %% [markdown]
# ## 2. The skip-trigram table of a head
#
# For each source token A, the engine takes the top destinations B in A's column of the (row-centred) QK
# circuit and the top outputs C in A's row of the OV circuit, and ranks the sources by both. **In the widget:**
# rows are sources A, strongest first; type a token (or `#id`) in the search box to look one up; "more" pages
# down.

# %%
cw.skip_trigrams(model, layer=0, head=0, k=12)

# %% [markdown]
# ## 3. Validation against the planted rules
#
# A planted rule counts as **recovered** when some head lists A among its top sources, B among A's top-3
# destinations and C among A's top-3 outputs.

# %%
# NBVAL_CHECK_OUTPUT
found = set()
for h in range(model.cfg.n_heads):
    table = engine.skip_trigrams(model, 0, h, k=2 * len(rules), n_dest=3, n_out=3)
    for row in table:
        found |= {(a, b, c) for (a, b, c) in rules if row.source == a and b in row.dests and c in row.outs}
print(f"recovered {len(found)}/{len(rules)} planted rules ({len(found) / len(rules):.2f})")

# %% [markdown]
# ## 4. A model of real code
#
# Now a one-layer model of the Python standard library (`toy-1l-code`). In code one expects skip-trigrams like
# `self` … `.` → `self` or `for` … ` in` → ` range`; what does this small model learn? We compare the heads'
# top skip-trigrams with the corpus: the reference triples are `(A, B, C)` seen at least 5 times with a *lift*
# of at least 2 (they occur twice as often as chance), shipped with the model.

# %%
from safetensors.torch import load_file

CODE_MODEL = "toy-1l-code"
code_model = cw.load(CODE_MODEL).requires_grad_(False)
ref_stats = load_file(str(cw.zoo.stats_path(CODE_MODEL)))
reference = {tuple(t) for t in ref_stats["reference_triples"].long().tolist()}
frequent = ref_stats["frequent_ids"].long()  # the corpus' most frequent tokens
print(len(reference), "reference skip-trigrams from the corpus;", len(frequent), "frequent tokens")

# %%
cw.eigenvalues(code_model)

# %%
# NBVAL_CHECK_OUTPUT
pos = engine.eigen_positivity(code_model, circuit="ov")
print("OV positivity:", [round(float(x), 2) for x in pos[0]])

# %% [markdown]
# Most heads of the code model **copy** (positivity well above 0): what a head attends to becomes more likely
# (identifiers recur in code). Their top skip-trigrams, read off the weights — the strongest sources are often
# *rare* tokens (barely trained, so their circuits take extreme values):

# %%
for h in range(code_model.cfg.n_heads):
    table = engine.skip_trigrams(code_model, 0, h, k=3, n_dest=3, n_out=3)
    print(f"L0H{h}:", " | ".join(str(row).split("  (")[0] for row in table))

# %% [markdown]
# To compare with the corpus, restrict the sources A to the corpus' frequent tokens and take each one's first
# frequent destination B and output C. The chance level: the same triples with their outputs shuffled.

# %%
# NBVAL_CHECK_OUTPUT
fs = set(frequent.tolist())
triples = []
for h in range(code_model.cfg.n_heads):  # per head: the 25 strongest *frequent* sources, first frequent B and C
    table = engine.skip_trigrams(code_model, 0, h, k=1, n_dest=60, n_out=60)
    for a in frequent[table.strength[frequent].argsort(descending=True)[:25]].tolist():
        row = table.for_source(a)
        b = next((x for x in row.dests if x in fs), None)
        c = next((x for x in row.outs if x in fs), None)
        if b is not None and c is not None:
            triples.append((a, b, c))
p = engine.precision_at_k(triples, reference, k=len(triples))
perm = torch.randperm(len(triples), generator=torch.Generator().manual_seed(0)).tolist()
chance = engine.precision_at_k([(a, b, triples[j][2]) for (a, b, _), j in zip(triples, perm)], reference,
                               k=len(triples))
print(f"{len(triples)} weight-based skip-trigrams over frequent tokens: {p:.2f} found in the corpus reference "
      f"(same triples with shuffled outputs C: {chance:.2f})")

# %%
cw.skip_trigrams(code_model, layer=0, head=0, k=12)

# %% [markdown]
# ### Exercise 1
# The QK circuit of a head is only comparable within a query row. For the code model's head 0, which source
# tokens does the destination token `' in'` attend to most? (Hint: `fm = engine.full_qk(code_model)[0, 0]` is a
# factored d_vocab × d_vocab matrix; `fm.rows(b, b + 1)` computes one row without forming the rest.)

# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
#@title Solution (click to show the code)
b = int(code_model.to_tokens(" in", prepend_bos=False)[0, 0])
fm = engine.full_qk(code_model)[0, 0]
row = fm.rows(b, b + 1)[0]  # [d_vocab]: the query row of ' in', every key token's score
top = row.topk(8).indices
print("' in' attends to:", code_model.to_str_tokens(top))

# %% [markdown]
# ### Exercise 2
# Is the planted model's best-recovered head a copying head? Compare each head's number of recovered rules
# with its OV positivity.

# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
#@title Solution (click to show the code)
for h in range(model.cfg.n_heads):
    table = engine.skip_trigrams(model, 0, h, k=2 * len(rules), n_dest=3, n_out=3)
    n = sum(any(r.source == a and b in r.dests and c in r.outs for r in table) for (a, b, c) in rules)
    print(f"L0H{h}: {n:2d} rules, OV positivity {float(engine.eigen_positivity(model)[0, h]):+.2f}")
