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
MODEL = "toy-1l-trigrams"  # the one place to change the model: any name in cw.zoo.list()
model = cw.zoo.lecture(MODEL)  # read-only, one CPU thread; prints its shape
import json

from circwidgets.model.io import read_metadata

rules = [tuple(r) for r in json.loads(read_metadata(cw.zoo.path(MODEL))["planted_rules"])]
print(len(rules), "planted rules [A] ... [B] -> [C], e.g.", rules[:4])

# %% [markdown]
# ## 1. Copying heads: eigenvalue positivity
#
# If a head's OV circuit *copies* (attending to token A raises the logit of A), its full OV circuit has mostly
# positive real eigenvalues. The engine's score `Re(Σλ) / Σ|λ|` is +1 for a pure copier and near 0 for a
# random matrix. **In the widget:** the grid shows every head's OV and QK positivity; click a head to see its
# eigenvalues in the complex plane (unit circle marked). Planted rules map A to an unrelated C, so these heads
# need *not* copy — and they do something stronger than not copying:

# %%
cw.eigenvalues(model)

# %%
# NBVAL_CHECK_OUTPUT
pos = engine.eigen_positivity(model, circuit="ov")
print("OV positivity per head:", [round(float(x), 2) for x in pos[0]])

# %% [markdown]
# Most heads sit near **−1**: attending to a token A *lowers* A's own logit. Why would training make a head
# **anti-copy**?
#
# <details><summary>Why negative? (click)</summary>
#
# In the planted task a source token A is followed, later, by its rule's output C — never by A itself (a
# sequence does not repeat its source). Whenever such a head attends to A, "A comes next" is a prediction that
# is always wrong, so the cheapest way to lower the loss is to push A's own logit down. The OV circuit's large
# eigenvalues then point backwards (negative real part; a few small ones do not, so the score stops short of
# −1): an anti-copying head. The head closest to 0
# is the one that carries the rules' outputs (next section), which are unrelated to A.
# </details>
#
# ## 2. Which head carries the planted rules?
#
# For each source token A, the engine takes the top destinations B in A's column of the (row-centred) QK
# circuit and the top outputs C in A's row of the OV circuit, and ranks the sources by both. A planted rule
# counts as **recovered** by a head when the head lists A among its top sources, B among A's top-3
# destinations and C among A's top-3 outputs. We count per head, and show the table of the head that recovers
# most (chosen by the count, not by hand).

# %%
# NBVAL_CHECK_OUTPUT
def recovered_by(h: int) -> set:
    """The planted rules head L0H{h}'s skip-trigram table recovers."""
    table = engine.skip_trigrams(model, 0, h, k=2 * len(rules), n_dest=3, n_out=3)
    return {(a, b, c) for (a, b, c) in rules
            for row in table if row.source == a and b in row.dests and c in row.outs}


per_head = [recovered_by(h) for h in range(model.cfg.n_heads)]
found = set().union(*per_head)
rule_head = max(range(model.cfg.n_heads), key=lambda h: len(per_head[h]))
print("rules recovered per head:", [len(r) for r in per_head])
print(f"all heads together: {len(found)}/{len(rules)} ({len(found) / len(rules):.2f}); "
      f"the rule head: L0H{rule_head}")

# %% [markdown]
# **In the widget:** rows are sources A, strongest first; type a token (or `#id`) in the search box to look
# one up; "more" pages down.

# %%
cw.skip_trigrams(model, layer=0, head=rule_head, k=12)

# %% [markdown]
# ## 3. A model of real code
#
# Now a one-layer model of plain Python code (`toy-1l-code`: the standard library and 30 pinned packages). In
# code one expects skip-trigrams like `self` … `.` → `self` or `for` … ` in` → ` range`; what does this small
# model learn? We compare the heads'
# top skip-trigrams with the corpus: the reference triples are `(A, B, C)` seen at least 5 times with a *lift*
# of at least 2 (they occur at least twice as often as chance) whose three tokens are among the corpus' 300
# most frequent, shipped with the model.

# %%
from safetensors.torch import load_file

CODE_MODEL = "toy-1l-code"
code_model = cw.load(CODE_MODEL).requires_grad_(False)
ref_stats = load_file(str(cw.zoo.stats_path(CODE_MODEL)))
reference = {tuple(t) for t in ref_stats["reference_triples"].long().tolist()}
frequent = ref_stats["frequent_ids"].long()  # the corpus' most frequent tokens
print(len(reference), "reference skip-trigrams of the corpus over its", len(frequent), "most frequent tokens")

# %%
cw.eigenvalues(code_model)

# %%
# NBVAL_CHECK_OUTPUT
pos = engine.eigen_positivity(code_model, circuit="ov")
print("OV positivity:", [round(float(x), 2) for x in pos[0]])

# %% [markdown]
# Every head of the code model has a **positive** OV positivity: what a head attends to becomes more likely
# (identifiers recur in code) — the opposite of the planted model. Eigenvalues sum over the whole vocabulary;
# per token, copying is the *top-1* question: does attending to t raise t's own logit above every other?
# (`engine.ov_copying`; chance is 1 / vocabulary size.)

# %%
# NBVAL_CHECK_OUTPUT
for h in range(code_model.cfg.n_heads):
    print(f"L0H{h}: all tokens {engine.ov_copying(code_model, (0, h))} | "
          f"frequent tokens: top-1 {engine.ov_copying(code_model, (0, h), tokens=frequent).top1:.2f}")
copier = int(engine.eigen_positivity(code_model, "ov")[0].argmax())
own = engine.full_ov(code_model)[0, copier].rows(0, code_model.cfg.d_vocab).argmax(-1)  # [d_vocab]
copied = [t for t in frequent.tolist() if int(own[t]) == t][:12]
print(f"frequent tokens L0H{copier} copies (attending to t raises t most):", code_model.to_str_tokens(
    torch.tensor(copied), prepend_bos=False))

# %% [markdown]
# That is the paper's *copying* skip-trigram (`perfect … are → perfect`) in code: attend to a token, predict it
# again. The frequent tokens this head copies best are single letters and digits (short names such as `i`,
# `j`, `k`, which recur within a few lines). Now the top skip-trigrams of each head, read off the weights:

# %%
# NBVAL_CHECK_OUTPUT
fs = set(frequent.tolist())
for h in range(code_model.cfg.n_heads):
    table = engine.skip_trigrams(code_model, 0, h, k=3, n_dest=3, n_out=3)
    print(f"L0H{h}:", " | ".join(str(row).split("  (")[0] for row in table))
tops = [row.source for h in range(code_model.cfg.n_heads) for row in engine.skip_trigrams(code_model, 0, h, k=3)]
print(f"{sum(a in fs for a in tops)} of these {len(tops)} top sources are among the corpus' {len(fs)} most "
      "frequent tokens")

# %% [markdown]
# Are these *rare* tokens, barely trained? Not rare strings: each is either a merge of a 4096-token BPE vocabulary,
# which BPE grants only to strings that occur often (byte fragments such as `\xf0\x9f`, the first bytes of an emoji,
# included), or one of the 256 single bytes every byte-level vocabulary starts with (`\xc3`, the first byte of an
# accented Latin letter). Several come from Unicode name tables (` BOX`, ` LATIN`, ` SMALL` … ` DRAWINGS` in long
# runs), a corner of the corpus where one word predicts the next very well, so their circuits take large values.
# Ranking by strength shows the largest entries of the circuits, not the most common behaviour; that is why the
# comparison below restricts the sources to the corpus' frequent tokens.
#
# **Skip-trigram "bugs".** One head's row for a source A lists several destinations B and several outputs C,
# and the head cannot tie a particular B to a particular C: the QK circuit decides *whether* to attend to A,
# the OV circuit *what* A raises, separately. So every (B, C) pair of the row is predicted together — the
# paper's `keep … in → mind` and `keep … at → bay` come with `keep … in → bay`. Here is one row of a frequent
# source with its destinations and outputs; every combination is on the same footing:

# %%
row = engine.skip_trigrams(code_model, 0, copier, k=1, n_dest=3, n_out=3).for_source(copied[0])
name = lambda ids: code_model.to_str_tokens(torch.tensor(ids), prepend_bos=False)  # noqa: E731
print(f"L0H{copier}, source {name([row.source])}: destinations {name(row.dests)} -> outputs {name(row.outs)}")
print("predicted together:", [f"{name([row.source])[0]} ... {b} -> {c}" for b in name(row.dests[:2])
                              for c in name(row.outs[:2])])

# %% [markdown]
# Whether this small model shows a *harmful* bug like the paper's (two sensible trigrams whose cross is
# nonsense) we have not found in its top rows; the structure above says where to look.

# %% [markdown]
# To compare with the corpus, restrict the sources A to the corpus' frequent tokens and take each one's first
# frequent destination B and output C. The chance level: the same triples with their outputs shuffled.

# %%
# NBVAL_CHECK_OUTPUT
fs = set(frequent.tolist())
by_head = {}  # head -> its triples, strongest source first
for h in range(code_model.cfg.n_heads):  # per head: the 25 strongest *frequent* sources, first frequent B and C
    table = engine.skip_trigrams(code_model, 0, h, k=1, n_dest=60, n_out=60)
    for a in frequent[table.strength[frequent].argsort(descending=True)[:25]].tolist():
        row = table.for_source(a)
        b = next((x for x in row.dests if x in fs), None)
        c = next((x for x in row.outs if x in fs), None)
        if b is not None and c is not None:
            by_head.setdefault(h, []).append((a, b, c))
triples = [t for rows in by_head.values() for t in rows]
p = engine.precision_at_k(triples, reference, k=len(triples))
perm = torch.randperm(len(triples), generator=torch.Generator().manual_seed(0)).tolist()
chance = engine.precision_at_k([(a, b, triples[j][2]) for (a, b, _), j in zip(triples, perm)], reference,
                               k=len(triples))
print(f"{len(triples)} weight-based skip-trigrams over frequent tokens: {p:.2f} found in the corpus reference "
      f"(same triples with shuffled outputs C: {chance:.2f})")

# %% [markdown]
# The triples the corpus confirms are the ones to read as code. Each line is `A … B → C`: having seen A earlier,
# the head at B raises C (e.g. `raise` … `Error` → `('`: an exception's message follows its class).

# %%
# NBVAL_CHECK_OUTPUT
confirmed = {h: [t for t in rows if t in reference] for h, rows in by_head.items()}  # the triples above
for h, rows in confirmed.items():
    read = [code_model.to_str_tokens(torch.tensor(t), prepend_bos=False) for t in rows[:4]]
    print(f"L0H{h}: " + " | ".join(f"{a!r} … {b!r} → {c!r}" for a, b, c in read))

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
# with its OV positivity and top-1 copying (`engine.ov_copying`).

# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
#@title Solution (click to show the code)
for h in range(model.cfg.n_heads):
    print(f"L0H{h}: {len(per_head[h]):2d} rules, {engine.ov_copying(model, (0, h))}")
print(f"No: the rule head L0H{rule_head} has the OV positivity closest to 0 and copies almost no token (its "
      "outputs C are unrelated to A); the other heads anti-copy.")
