"""Build the lecture notebooks (notebooks/*.ipynb) from the cell sources below, so that they can be
reviewed as code and regenerated; then execute them so that the stored outputs hold the widgets'
static fallbacks (PNG + text/plain) for viewers with no kernel (GitHub).

    python notebooks/build_notebooks.py                 # write the notebooks (sources only)
    python notebooks/build_notebooks.py --execute       # write, then execute each one in place, in turn
    python notebooks/build_notebooks.py --execute 03    # only notebooks whose name starts with 03
    python notebooks/build_notebooks.py --check         # exit 1 if a stored notebook's sources differ

Conventions of every notebook: a Colab badge and a first code cell that installs the package only
in Colab; the model name is ONE variable (`MODEL = ...`) in the setup cell; exercises are followed
by a solution cell that JupyterLab shows collapsed (`jupyter.source_hidden`) and Colab shows as a
form (`cellView: form` + `#@title`); `# NBVAL_CHECK_OUTPUT` cells print rounded numbers that
`pytest --nbval-lax` compares with the stored outputs (tests/test_notebooks.py).
The models are picked at build time from what the zoo ships (`pick`), so a notebook never names a
model that is not there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GITHUB_REPO = "circwidgets/circwidgets"  # owner/name on GitHub: used by the Colab badges and the Colab install
TIMINGS = HERE / "timings.json"

try:
    import circwidgets  # noqa: F401 - an installed (or PYTHONPATH) copy wins
except ImportError:
    sys.path.insert(0, str(ROOT))


def shipped() -> list[str]:
    from circwidgets import zoo

    return zoo.list()


def pick(*names: str) -> str:
    """The first of `names` the zoo ships (the last one if none is: the notebook then says so)."""
    have = set(shipped())
    for n in names:
        if n in have:
            return n
    return names[-1]


# ----------------------------------------------------------------------------------------- cells
def md(src: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(src.strip("\n"))


def code(src: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(src.strip("\n"))


def check(src: str) -> nbformat.NotebookNode:
    """A cell whose printed output nbval compares (keep it to rounded numbers)."""
    return code("# NBVAL_CHECK_OUTPUT\n" + src.strip("\n"))


def solution(src: str, title: str = "Solution") -> nbformat.NotebookNode:
    """A solution cell: executed (so it stays correct), shown collapsed in JupyterLab and Colab."""
    c = code(f"#@title {title} (click to show the code)\n" + src.strip("\n"))
    c.metadata["jupyter"] = {"source_hidden": True}
    c.metadata["cellView"] = "form"
    c.metadata["tags"] = ["solution"]
    return c


def header(fname: str, title: str, intro: str) -> list[nbformat.NotebookNode]:
    badge = (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             f"(https://colab.research.google.com/github/{GITHUB_REPO}/blob/main/notebooks/{fname})")
    return [
        md(f"# {title}\n\n{badge}\n\n{intro.strip()}"),
        code(f'''
# Colab only: install circwidgets and turn on custom widgets. Anywhere else this cell does nothing.
import sys

if "google.colab" in sys.modules:
    %pip install -q "circwidgets @ git+https://github.com/{GITHUB_REPO}"
    from google.colab import output

    output.enable_custom_widget_manager()
'''),
    ]


def setup(model: str, extra: str = "") -> nbformat.NotebookNode:
    return code(f'''
import matplotlib.pyplot as plt
import torch

import circwidgets as cw
from circwidgets import engine, plot

%matplotlib inline
torch.set_num_threads(1)  # small models: one thread is as fast and does not fight other work
MODEL = "{model}"  # the one place to change the model: any name in cw.zoo.list()
model = cw.load(MODEL).requires_grad_(False)  # we only read the weights here
{extra.strip()}
print(model.cfg.name, "|", model.cfg.n_layers, "layers x", model.cfg.n_heads, "heads, d_model", model.cfg.d_model,
      "| vocab", model.cfg.d_vocab, "| shipped:", cw.zoo.list())
''')


def example_tokens_cell() -> nbformat.NotebookNode:
    """Tokens on which induction shows: a code snippet twice (models with a tokenizer) or
    BOS + random tokens repeated (synthetic-vocabulary models)."""
    return code('''
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
print(len(tokens), "tokens:", sep.join(labels[1:12]).replace("\\n", "\\\\n"), "...")
''')


# ----------------------------------------------------------------------------------------- 00 tour
def nb_tour() -> list:
    m = pick("toy-2l-code", "toy-2l-induction")
    return [
        *header("00_tour.ipynb", "A five-minute tour of circwidgets", """
The mathematics of *A Mathematical Framework for Transformer Circuits* (Elhage et al. 2021), clickable.
In five minutes: load a small transformer that ships with the package, open the **circuit explorer** on
it, and find its **induction head** — the head that completes `[A][B] … [A] → [B]` by looking back at
what followed the previous occurrence of the current token.

Everything runs offline on a laptop CPU. Run the cells top to bottom (Shift+Enter)."""),
        md("""
## 1. Load a shipped model

The zoo holds small attention-only transformers trained by the package's own trainer. The model card
says what it was trained on and which of its claims (measured on the shipped file) hold."""),
        setup(m),
        code("cw.zoo.card(MODEL)"),
        md("""
## 2. An input on which induction shows

A sequence whose second half repeats its first half: in the second copy, every next token can be
predicted by copying — if the model has learned to look back."""),
        example_tokens_cell(),
        md("""
## 3. The circuit explorer

`cw.explore` puts six views of the model side by side; **they all follow one selected head**:

- **attention** — the head grid (coloured by induction score: the darker, the more induction-like) and the
  selected head's attention pattern on the input (row = query position, column = key position).
  *Click a cell of the grid* to select a head; hover a token to see where it looks.
- **eigenvalues** — each head's OV and QK circuits' eigenvalue positivity; eigenvalues in the complex plane.
- **skip-trigrams** — the selected head's top `[A] … [B] → [C]` read off its weights.
- **composition** — K-composition scores between earlier and later heads (click a cell for the pair).
- **ablation** — click heads to switch them off and watch the per-token loss.
- **paths** — one logit split into the direct path, one-head and two-head (virtual-head) terms.

Try it: click the darkest cell of the attention panel's grid in layer 1."""),
        code("ex = cw.explore(model, tokens, labels=labels)\nex"),
        md("""
## 4. Find the induction head with numbers

The colours of the grid are the engine's **detection scores** on `BOS + r + r` (random tokens
repeated): the average attention of each head to the previous token (*previous-token score*) and to
the token after the previous occurrence of the current token (*induction score*). Both are in [0, 1]."""),
        check('''
scores = engine.all_head_scores(model, n_seqs=16, seed=0)
for name in ("previous_token", "induction"):
    print(f"{name:15s}", [[round(float(x), 2) for x in row] for row in scores[name]])
best = divmod(int(scores["induction"].argmax()), model.cfg.n_heads)
print("induction head: L%dH%d" % best, "score", round(float(scores["induction"][best]), 2))
'''),
        md("""
Select it in every panel at once from Python (the same as a click), and look at its pattern on the
input below: in the second copy each query attends to the key **one after** its earlier occurrence —
the diagonal stripe offset from the main diagonal."""),
        code('''
ex.select(*best)
logits, cache = model.run_with_cache(tokens[None])
plot.attention_pattern(cache["pattern", best[0]][0, best[1]], labels=labels,
                          title=f"L{best[0]}H{best[1]} on the repeated input")
'''),
        md("""
### Exercise 1
An induction head needs a *previous-token head* in an earlier layer: its keys must carry "the token
before me". Which layer-0 head does the induction head **K-compose** with most
(`engine.composition_scores(model, "k")`, indexed `[layer1, head1, layer2, head2]`), and what is that
head's previous-token score?"""),
        solution('''
k = engine.composition_scores(model, "k")[0, :, best[0], best[1]]  # every layer-0 head -> the induction head
h1 = int(k.argmax())
print(f"strongest K-composition into L{best[0]}H{best[1]}: L0H{h1} (score {float(k[h1]):.2f}); "
      f"its previous-token score: {float(scores['previous_token'][0, h1]):.2f}")
'''),
        md("""
### Exercise 2
Switch the induction head off (zero ablation) and compare the model's loss on the repeated input with and
without it. Which half of the sequence gets worse? (Hint: `engine.ablate_heads` returns an effect with
`clean` and `ablated`; `cw.ablation(model, tokens)` does the same by clicking.)"""),
        solution('''
eff = engine.ablate_heads(model, tokens[None], [best])
half = len(tokens) // 2
per_tok = engine.ablate_heads(model, tokens[None], [best], metric=lambda lg, t: engine.interventions.loss_metric(
    lg[:, half:], t[:, half:]))
print(f"loss clean {eff.clean:.2f} -> ablated {eff.intervened:.2f}; "
      f"second half only: {per_tok.clean:.2f} -> {per_tok.intervened:.2f}")
'''),
        md("""
## Where next

| notebook | what it teaches |
| --- | --- |
| `01_zero_layer_bigrams` | `W_E W_U` is a bigram table |
| `02_one_layer_skip_trigrams` | QK / OV circuits, copying eigenvalues, skip-trigrams |
| `03_two_layer_composition` | Q / K / V composition, virtual heads, induction |
| `04_virtual_weights_and_paths` | virtual weights, path expansion, basis invariance |
| `05_ablation_and_patching` | head and path ablations, activation patching |
| `06_training_and_phase_change` | watch an induction head form |

Share a view without a kernel: `ex.save_html("tour.html")` writes one offline HTML file that still
answers clicks."""),
    ]


# ----------------------------------------------------------------------------------------- 01 bigrams
def nb_bigrams() -> list:
    m = pick("toy-0l-code")
    return [
        *header("01_zero_layer_bigrams.ipynb", "Zero-layer transformers are bigram tables", """
A transformer with **no layers** maps the current token straight to logits: embed, then unembed.
Its logits are a row of

$$W_E W_U \\in \\mathbb{R}^{d_\\text{vocab} \\times d_\\text{vocab}}$$

(row = current token B, column = next token C), so all it can learn is **P(C | B)**: a bigram table,
squeezed through a `d_model`-dimensional bottleneck. This notebook compares that table with the bigram
statistics of the data the model was trained on (the Python standard library)."""),
        setup(m, '''
from safetensors.torch import load_file

stats = load_file(str(cw.zoo.stats_path(MODEL)))  # reference statistics shipped with the model
ids = stats["bigram_ids"].long()                   # the 500 most frequent tokens of the corpus
corpus_lp = stats["bigram_log_probs"].double()     # add-1 log P(C | B) among them  [B, C]'''),
        md("""
## 1. The model's bigram table

With no positional embedding and no layers, `log_softmax(W_E W_U)` *is* the model's prediction. We read it
for the 500 most frequent tokens (rows: current token, columns: next token)."""),
        code('''
W_EU = model.W_E.double()[ids] @ model.W_U.double()  # [500, d_vocab]: the direct path, the whole model
model_lp = W_EU.log_softmax(-1)[:, ids]               # [500, 500] log P_model(C | B)
print("table:", tuple(model_lp.shape), "| rank of W_E W_U <= d_model =", model.cfg.d_model)
'''),
        md("""
## 2. Compared with the corpus

Each point below is one pair (B, C): the corpus' log-probability on the x axis, the model's on the y axis.
A perfect bigram model would put every point on the diagonal. The numbers are Pearson's r and Spearman's
rank correlation over all 250,000 pairs."""),
        check('''
r = engine.pearson(model_lp.reshape(-1), corpus_lp.reshape(-1))
rho = engine.rank_correlation(model_lp.reshape(-1), corpus_lp.reshape(-1))
print(f"all pairs:  Pearson r = {r:.2f}, Spearman rho = {rho:.2f}")
# a pair never seen in the corpus gets add-1's floor, the smallest value of its row
seen = corpus_lp > corpus_lp.min(dim=1, keepdim=True).values + 1e-9
r_seen = engine.pearson(model_lp[seen], corpus_lp[seen])
print(f"seen pairs: Pearson r = {r_seen:.2f} ({float(seen.float().mean()):.0%} of the pairs were seen)")
'''),
        code('''
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
'''),
        md("""
**What the plot shows.** The band along the diagonal is the model learning the table: frequent,
high-probability pairs (upper right) are fitted best. The vertical stripes on the left are pairs the corpus
*never* shows: add-1 smoothing gives them all the same floor value per row, while the model ranks them
anyway — which is why the correlation over the seen pairs alone is the fairer number. And the model has
only `d_model` dimensions to encode a `d_vocab × d_vocab` table.

## 3. Read a few rows

What does the model predict after a token, and what does the corpus say?"""),
        code('''
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
        line += "\\n" + " " * 11 + "corpus -> " + " ".join(repr(s) for s in model.to_str_tokens(torch.tensor(ref)))
    print(line)


for t in ["self", " import", " return", "(", " for"]:
    top_next(t)
'''),
        md("""
### Exercise 1
Find the bigram (B, C) among the frequent tokens where model and corpus disagree most
(largest `|model_lp - corpus_lp|` with a corpus probability above 1 %). Why might the model get it wrong?"""),
        solution('''
gap = (model_lp - corpus_lp).abs().masked_fill(corpus_lp < torch.log(torch.tensor(0.01)), 0)
i, j = divmod(int(gap.argmax()), gap.shape[1])
b, c = model.to_str_tokens(ids[[i, j]])
print(f"B={b!r} C={c!r}: corpus P={corpus_lp[i, j].exp():.3f}, model P={model_lp[i, j].exp():.3f}")
'''),
        md("""
### Exercise 2
`W_E W_U` has rank at most `d_model`. How much of the table's energy sits in its top 32 singular
directions? (Hint: the SVD of the `[500, 500]` table, or `engine.virtual_weights(model, "embed",
"unembed")` — the same direct path, kept factored.)"""),
        solution('''
s = torch.linalg.svdvals(W_EU[:, ids])
print(f"top-32 share of the squared singular values: {float((s[:32] ** 2).sum() / (s ** 2).sum()):.2f}")
vw = engine.virtual_weights(model, "embed", "unembed")
print(f"effective rank of the whole W_E W_U: {vw.effective_rank():.1f} of at most {model.cfg.d_model}")
'''),
    ]


# ----------------------------------------------------------------------------------------- 02 skip-trigrams
def nb_skip() -> list:
    planted = pick("toy-1l-trigrams")
    code_m = pick("toy-1l-code")
    return [
        *header("02_one_layer_skip_trigrams.ipynb", "One-layer transformers: QK / OV circuits and skip-trigrams", """
A one-layer attention-only transformer's logits are the direct path (bigrams) plus one term per head:

$$\\text{logits} = x_0 W_U + \\sum_h A^h x_0 W_{OV}^h W_U, \\qquad W_{OV} = W_V W_O,\\; W_{QK} = W_Q W_K^\\top$$

Each head is two circuits. The **QK circuit** `W_E W_QK W_Eᵀ` (row = destination/query token B,
column = source/key token A) decides *where* to attend; the **OV circuit** `W_E W_OV W_U` (row = source
token A, column = logit raised C) decides *what* moving that token changes. Together they implement
**skip-trigrams** `[A] … [B] → [C]`. We read them off the weights of two models: one trained on
**planted** skip-trigrams (known answers), and one trained on Python source."""),
        setup(planted, '''
import json

from circwidgets.model.io import read_metadata

rules = [tuple(r) for r in json.loads(read_metadata(cw.zoo.path(MODEL))["planted_rules"])]
print(len(rules), "planted rules [A] ... [B] -> [C], e.g.", rules[:4])'''),
        md("""
## 1. Copying heads: eigenvalue positivity

If a head's OV circuit *copies* (attending to token A raises the logit of A), its full OV circuit has mostly
positive real eigenvalues. The engine's score `Re(Σλ) / Σ|λ|` is +1 for a pure copier and near 0 for a
random matrix. **In the widget:** the grid shows every head's OV and QK positivity; click a head to see its
eigenvalues in the complex plane (unit circle marked). Planted rules map A to an unrelated C, so these heads
need *not* copy."""),
        code("cw.eigenvalues(model)"),
        check('''
pos = engine.eigen_positivity(model, circuit="ov")
print("OV positivity per head:", [round(float(x), 2) for x in pos[0]])
'''),
        md("""
## 2. The skip-trigram table of a head

For each source token A, the engine takes the top destinations B in A's column of the (row-centred) QK
circuit and the top outputs C in A's row of the OV circuit, and ranks the sources by both. **In the widget:**
rows are sources A, strongest first; type a token (or `#id`) in the search box to look one up; "more" pages
down."""),
        code("cw.skip_trigrams(model, layer=0, head=0, k=12)"),
        md("""
## 3. Validation against the planted rules

A planted rule counts as **recovered** when some head lists A among its top sources, B among A's top-3
destinations and C among A's top-3 outputs."""),
        check('''
found = set()
for h in range(model.cfg.n_heads):
    table = engine.skip_trigrams(model, 0, h, k=2 * len(rules), n_dest=3, n_out=3)
    for row in table:
        found |= {(a, b, c) for (a, b, c) in rules if row.source == a and b in row.dests and c in row.outs}
print(f"recovered {len(found)}/{len(rules)} planted rules ({len(found) / len(rules):.2f})")
'''),
        md(f"""
## 4. A model of real code

Now a one-layer model of the Python standard library (`{code_m}`). In code one expects skip-trigrams like
`self` … `.` → `self` or `for` … ` in` → ` range`; what does this small model learn? We compare the heads'
top skip-trigrams with the corpus: the reference triples are `(A, B, C)` seen at least 5 times with a *lift*
of at least 2 (they occur twice as often as chance), shipped with the model."""),
        code(f'''
from safetensors.torch import load_file

CODE_MODEL = "{code_m}"
code_model = cw.load(CODE_MODEL).requires_grad_(False)
ref_stats = load_file(str(cw.zoo.stats_path(CODE_MODEL)))
reference = {{tuple(t) for t in ref_stats["reference_triples"].long().tolist()}}
frequent = ref_stats["frequent_ids"].long()  # the corpus' most frequent tokens
print(len(reference), "reference skip-trigrams from the corpus;", len(frequent), "frequent tokens")
'''),
        code("cw.eigenvalues(code_model)"),
        check('''
pos = engine.eigen_positivity(code_model, circuit="ov")
print("OV positivity:", [round(float(x), 2) for x in pos[0]])
'''),
        md("""
Most heads of the code model **copy** (positivity well above 0): what a head attends to becomes more likely
(identifiers recur in code). Their top skip-trigrams, read off the weights — the strongest sources are often
*rare* tokens (barely trained, so their circuits take extreme values):"""),
        code('''
for h in range(code_model.cfg.n_heads):
    table = engine.skip_trigrams(code_model, 0, h, k=3, n_dest=3, n_out=3)
    print(f"L0H{h}:", " | ".join(str(row).split("  (")[0] for row in table))
'''),
        md("""
To compare with the corpus, restrict the sources A to the corpus' frequent tokens and take each one's first
frequent destination B and output C. The chance level: the same triples with their outputs shuffled."""),
        check('''
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
'''),
        code("cw.skip_trigrams(code_model, layer=0, head=0, k=12)"),
        md("""
### Exercise 1
The QK circuit of a head is only comparable within a query row. For the code model's head 0, which source
tokens does the destination token `' in'` attend to most? (Hint: `engine.full_qk(code_model)[0, 0]` is a
factored `[d_vocab, d_vocab]` matrix; `fm.rows(b, b + 1)` computes one row without forming the rest.)"""),
        solution('''
b = int(code_model.to_tokens(" in", prepend_bos=False)[0, 0])
fm = engine.full_qk(code_model)[0, 0]
row = fm.rows(b, b + 1)[0]  # [d_vocab]: the query row of ' in', every key token's score
top = row.topk(8).indices
print("' in' attends to:", code_model.to_str_tokens(top))
'''),
        md("""
### Exercise 2
Is the planted model's best-recovered head a copying head? Compare each head's number of recovered rules
with its OV positivity."""),
        solution('''
for h in range(model.cfg.n_heads):
    table = engine.skip_trigrams(model, 0, h, k=2 * len(rules), n_dest=3, n_out=3)
    n = sum(any(r.source == a and b in r.dests and c in r.outs for r in table) for (a, b, c) in rules)
    print(f"L0H{h}: {n:2d} rules, OV positivity {float(engine.eigen_positivity(model)[0, h]):+.2f}")
'''),
    ]


# ----------------------------------------------------------------------------------------- 03 composition
def nb_composition() -> list:
    m = pick("toy-2l-code", "toy-2l-induction")
    return [
        *header("03_two_layer_composition.ipynb", "Two layers: composition and induction heads", """
In a two-layer model a layer-1 head can read what a layer-0 head wrote. The framework names three ways:

- **Q-composition**: the later head's *queries* read the earlier head's output, `‖W_OV^{h1} W_QK^{h2}‖`;
- **K-composition**: its *keys* do, `‖W_OV^{h1} W_QK^{h2 ᵀ}‖`;
- **V-composition**: its *values* do, `‖W_OV^{h1} W_OV^{h2}‖` — a **virtual head** with pattern
  `A^{h2} A^{h1}`.

Each score is normalised by `‖W_OV^{h1}‖ ‖W_QK^{h2}‖` (0 … 1), and compared with what random matrices of
the same shapes give. The famous case: a **previous-token head** in layer 0 K-composes with an
**induction head** in layer 1."""),
        setup(m),
        example_tokens_cell(),
        md("""
## 1. Which heads do what (behaviour)

Detection scores on `BOS + r + r`: previous-token (attention to i−1), duplicate-token (to the previous
occurrence of the same token), induction (to the token after it)."""),
        check('''
scores = engine.all_head_scores(model, n_seqs=16, seed=0)
for name, s in scores.items():
    print(f"{name:16s}", [[round(float(x), 2) for x in row] for row in s])
ind = divmod(int(scores["induction"][1:].argmax()), model.cfg.n_heads)
ind = (ind[0] + 1, ind[1])
print("best induction head: L%dH%d" % ind)
'''),
        md("""
## 2. Composition scores (weights)

**In the widget:** the heatmap shows the chosen kind's score for every (earlier head, later head) pair;
switch Q / K / V at the top, tick "subtract baseline" to see scores minus the random baseline. *Click a cell*:
the pair's two patterns and their virtual head's pattern `A^{h2} A^{h1}` on the input appear below."""),
        code('cw.composition(model, tokens, labels=labels, kind="k")'),
        check('''
base_mean, base_std = engine.composition_baseline(model)
print(f"random baseline: {base_mean:.2f} +- {base_std:.2f}")
for kind in "qkv":
    into = engine.composition_scores(model, kind)[0, :, ind[0], ind[1]]  # layer-0 heads -> induction head
    print(f"{kind.upper()}-composition into L{ind[0]}H{ind[1]}:", [round(float(x), 2) for x in into])
kc = engine.composition_scores(model, "k")[0, :, ind[0], ind[1]]
src = int(kc.argmax())
print(f"strongest K-composer: L0H{src}, previous-token score {float(scores['previous_token'][0, src]):.2f}")
'''),
        md("""
**What to look for.** The induction head's strongest K-composition input should be the layer-0 head with
the highest previous-token score: its output ("the token before me was X") is what the induction head's
keys match against the current token.

## 3. The virtual head

Through V-composition, the two heads act together as one head with pattern `A^{h2} A^{h1}` and OV circuit
`W_OV^{h1} W_OV^{h2}`. Here are the previous-token head, the induction head, and their composed pattern."""),
        code('''
vh = engine.virtual_heads(model, tokens[None], (0, src), ind)
logits, cache = model.run_with_cache(tokens[None])
import matplotlib.pyplot as plt

fig, axs = plt.subplots(1, 3, figsize=(15, 4.8))
plot.attention_pattern(cache["pattern", 0][0, src], labels=labels, title=f"L0H{src}", ax=axs[0])
plot.attention_pattern(cache["pattern", ind[0]][0, ind[1]], labels=labels, title=f"L{ind[0]}H{ind[1]}", ax=axs[1])
plot.attention_pattern(vh.pattern[0], labels=labels, title="virtual head A2 A1", ax=axs[2])
plt.show()
'''),
        md("""
## 4. Induction shows in the loss

On repeated random tokens, a model with induction heads predicts the second copy far better than the first.
The first copy is random, so no model can beat `log d_vocab` there (a model trained on code does worse: it is
confidently wrong about random tokens); on the second copy, copying is all it takes."""),
        check('''
icl = engine.in_context_loss(model, n_seqs=16, seed=0)
print(f"loss on the first copy {icl.first:.2f}, on the repeated copy {icl.repeated:.2f} nats "
      f"(log d_vocab = {torch.log(torch.tensor(float(model.cfg.d_vocab))):.2f})")
'''),
        code('''
plt.figure(figsize=(7, 3))
plt.plot(icl.per_position.numpy())
plt.axvline(len(icl.per_position) / 2, color="grey", ls="--", label="repeat starts")
plt.xlabel("position"); plt.ylabel("loss (nats)"); plt.legend(); plt.title("per-position loss on BOS + r + r")
plt.show()
'''),
        code('cw.attention(model, tokens, labels=labels, layer=ind[0], head=ind[1], score="induction")'),
        md("""
### Exercise 1
Does the induction head use Q- or V-composition at all? Subtract the baseline
(`composition_scores(..., baseline=True)`) and express the layer-0 → induction-head scores in units of the
baseline's standard deviation."""),
        solution('''
for kind in "qkv":
    z = engine.composition_scores(model, kind, baseline=True)[0, :, ind[0], ind[1]] / base_std
    print(kind, [round(float(x), 1) for x in z])
'''),
        md("""
### Exercise 2
The virtual head's OV circuit `W_OV^{h1} W_OV^{h2}` is a low-rank factored matrix. What is its eigenvalue
positivity on the full circuit `W_E · W_OV^{h1} W_OV^{h2} · W_U` (does the composed head copy)?
(Hint: `vh.full_ov(model)` and its `.eigenvalues()`.)"""),
        solution('''
lam = vh.full_ov(model).eigenvalues()
print(f"virtual head L0H{src} -> L{ind[0]}H{ind[1]}: positivity {float(lam.sum().real / lam.abs().sum()):+.2f}")
'''),
    ]


# ----------------------------------------------------------------------------------------- 04 virtual weights
def nb_virtual() -> list:
    m = pick("toy-2l-code", "toy-2l-induction")
    return [
        *header("04_virtual_weights_and_paths.ipynb", "The residual stream as a communication channel", """
Every component reads from the residual stream with a matrix `W_in` and writes to it with `W_out`. Two
components that never touch directly still talk through the stream: the **virtual weights** from `i` to a
later `j` are `W_out^{(i)} W_in^{(j)}`, plus the paths through the components in between:

- first order (the summary's formula): `W_out^{(i)} (I + Σ_k W_in^{(k)} W_out^{(k)}) W_in^{(j)}`,
- exact (for the linear part): `W_out^{(i)} Π_k (I + W_in^{(k)} W_out^{(k)}) W_in^{(j)}`.

Then the **path expansion**: with attention patterns frozen, the logits are a sum of path terms that add
up *exactly* to the model's logits. Last, **basis invariance**: none of this depends on the residual
stream's basis — we rotate it and recompute."""),
        setup(m),
        example_tokens_cell(),
        md("""
## 1. Virtual weights between heads

From the previous-token head's output to the induction head's keys: a `[d_head, d_head]` matrix. Its
singular values say how many independent directions the channel carries."""),
        code('''
scores = engine.all_head_scores(model, n_seqs=16, seed=0)
src = (0, int(scores["previous_token"][0].argmax()))
dst = (1, int(scores["induction"][1].argmax()))
vw_k = engine.virtual_weights(model, ("head", *src), ("head", *dst, "k"))
print(vw_k.label, "shape", tuple(vw_k.matrix.shape))
'''),
        check('''
for name, s, d in [("embed -> unembed", "embed", "unembed"),
                   (f"L{src[0]}H{src[1]} -> L{dst[0]}H{dst[1]} keys", ("head", *src), ("head", *dst, "k")),
                   (f"embed -> L{dst[0]}H{dst[1]} values", "embed", ("head", *dst, "v"))]:
    first = engine.virtual_weights(model, s, d, order=1)
    exact = engine.virtual_weights(model, s, d, order=None)
    direct = engine.virtual_weights(model, s, d, order=0)
    fe, fx = first.singular_values, exact.singular_values
    print(f"{name:26s} effective rank {exact.effective_rank():5.1f} | top sigma: direct "
          f"{float(direct.singular_values[0]):.3g}, first order {float(fe[0]):.3g}, exact {float(fx[0]):.3g}")
'''),
        md("""
For `embed → unembed` in a two-layer model the first-order and exact products differ by the term through
*both* layers (`W_OV^{L0} W_OV^{L1}`, the virtual heads); between a layer-0 and a layer-1 head nothing lies in
between, so all three orders agree.

## 2. Singular values and subspaces"""),
        code('''
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 3.5))
for s, d, lab in [("embed", "unembed", "embed -> unembed"), (("head", *src), ("head", *dst, "k"),
                  f"L{src[0]}H{src[1]} -> L{dst[0]}H{dst[1]} K")]:
    sv = engine.virtual_weights(model, s, d, order=None).singular_values
    ax.semilogy((sv / sv[0]).numpy()[:64], ".-", label=lab)
ax.set_xlabel("index"); ax.set_ylabel("sigma / sigma_max"); ax.legend(); ax.set_title("singular values")
plt.show()
W = vw_k.write_subspace(4)  # [4, d_model]: residual directions the previous-token head writes its signal along
R = vw_k.read_subspace(4)   # [4, d_model]: directions the induction head's keys read it from
print("cosines between the top write and read directions:", [round(abs(float(W[i] @ R[i])), 2) for i in range(4)])
'''),
        md("""
## 3. Path expansion of the logits

`engine.path_terms` splits the logits into the direct path `x₀ W_U`, one term per head `A^h x₀ W_OV^h W_U`,
and one per pair of heads in different layers (virtual heads). **In the widget:** bars are the terms of
one logit (the next token at the last position by default), the sum beside the model's own logit;
click a bar for that head's pattern; type a token in the box to split a different logit."""),
        check('''
pt = engine.path_terms(model, tokens[None], max_order=2)
logits = model(tokens[None]).double()
err = (pt.total().double() - logits).abs().max().item()
print(f"{len(pt)} terms; max |sum of terms - model logits| < 1e-3: {err < 1e-3}")
'''),
        code("cw.paths(model, tokens, labels=labels)"),
        md("""
## 4. Basis invariance: rotate the residual stream

Multiply the residual stream by a random orthogonal matrix `R`: `W_E → W_E R`, `W_pos → W_pos R`,
readers `W_Q, W_K, W_V, W_U → Rᵀ W`, writers `W_O → W_O R`. Every activation *in* the stream changes, but
`x W_in` is unchanged for every reader, so the model computes the same function — and every quantity of
the framework (eigenvalues, composition, virtual weights, path terms) must be unchanged too. Any analysis
that depended on individual residual dimensions would fail this test."""),
        code('''
import copy

torch.manual_seed(0)
d = model.cfg.d_model
R, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))  # a random orthogonal matrix
m64 = copy.deepcopy(model).to(torch.float64).requires_grad_(False)
rot = copy.deepcopy(m64)
with torch.no_grad():
    rot.W_E.copy_(m64.W_E @ R)
    if hasattr(rot, "W_pos"):
        rot.W_pos.copy_(m64.W_pos @ R)
    for name in ("W_Q", "W_K", "W_V"):
        getattr(rot, name).copy_(R.T @ getattr(m64, name))  # [L, H, d_model, d_head]: readers
    rot.W_O.copy_(m64.W_O @ R)                                 # writers
    rot.W_U.copy_(R.T @ m64.W_U)
_, c0 = m64.run_with_cache(tokens[None])
_, c1 = rot.run_with_cache(tokens[None])
print("residual stream changed by up to", round(float((c0["resid_post", 0] - c1["resid_post", 0]).abs().max()), 2))
'''),
        check('''
def biggest_change(f):
    a, b = f(m64), f(rot)
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    ok = ~torch.isnan(a)
    return float((a[ok] - b[ok]).abs().max())


checks = {
    "logits": lambda m: m(tokens[None]),
    "OV positivity": lambda m: engine.eigen_positivity(m, "ov"),
    "QK positivity": lambda m: engine.eigen_positivity(m, "qk"),
    "K-composition": lambda m: engine.composition_scores(m, "k"),
    "V-composition": lambda m: engine.composition_scores(m, "v"),
    "virtual weights sigma": lambda m: engine.virtual_weights(m, ("head", *src), ("head", *dst, "k")).singular_values,
    "path terms": lambda m: engine.path_terms(m, tokens[None], max_order=2).logits(),
}
for name, f in checks.items():
    print(f"{name:22s} max |change| < 1e-6: {biggest_change(f) < 1e-6}")
'''),
        md("""
### Exercise 1
Replace `R` by a random **invertible but not orthogonal** matrix `M` (readers get `M⁻¹ W`, writers `W M`).
The logits stay the same — but which of the framework's quantities change, and why? (Norms are not
invariant under `M`.)"""),
        solution('''
torch.manual_seed(1)
M = torch.randn(d, d, dtype=torch.float64) / d ** 0.5 + torch.eye(d, dtype=torch.float64)
Mi = torch.linalg.inv(M)
skew = copy.deepcopy(m64)
with torch.no_grad():
    skew.W_E.copy_(m64.W_E @ M)
    if hasattr(skew, "W_pos"):
        skew.W_pos.copy_(m64.W_pos @ M)
    for name in ("W_Q", "W_K", "W_V"):
        getattr(skew, name).copy_(Mi @ getattr(m64, name))  # readers: (x M)(M^-1 W) = x W
    skew.W_O.copy_(m64.W_O @ M)
    skew.W_U.copy_(Mi @ m64.W_U)
for name, f in checks.items():
    a, b = torch.as_tensor(f(m64)).double(), torch.as_tensor(f(skew)).double()
    ok = ~torch.isnan(a)
    print(f"{name:22s} max |change| {float((a[ok] - b[ok]).abs().max()):.2g}")
'''),
        md("""
<details><summary>Why (click)</summary>

Everything that is a *product* through the stream is unchanged: the logits, the path terms, the full
circuits' eigenvalues (`W_E M · M⁻¹ W_OV M · M⁻¹ W_U`), and the virtual weights between components (the `M`s
cancel in `W_out M · M⁻¹ W_in`). The **composition scores change**: they divide by `‖W_OV^{h1}‖ ‖W_QK^{h2}‖`,
norms of matrices that live *inside* the residual basis, and Frobenius norms are invariant under orthogonal
changes of basis only. The framework's scores therefore assume the residual stream has no privileged basis
*up to rotation* (true for these LayerNorm-free models trained with isotropic weight decay).
</details>"""),
    ]


# ----------------------------------------------------------------------------------------- 05 ablation
def nb_ablation() -> list:
    m = pick("toy-2l-code", "toy-2l-induction")
    return [
        *header("05_ablation_and_patching.ipynb", "Ablations and activation patching", """
Weights tell us what a head *can* do; interventions tell us what it *does* on an input.

- **Head ablation**: replace a head's output by zero (or by its mean) and measure the change in loss.
- **Path ablation**: remove a single composition path — e.g. the induction head's *keys* no longer see the
  previous-token head — while both heads keep running.
- **Activation patching**: run a *corrupted* input, paste in one activation from the *clean* run, and see
  how much of the clean answer comes back."""),
        setup(m),
        example_tokens_cell(),
        md("""
## 1. Which heads matter on this input?

Each head ablated alone (zero ablation); the colour is the increase in the mean next-token loss."""),
        check('''
table = engine.ablation_table(model, tokens[None])
print("loss increase when ablated:", [[round(float(x), 2) for x in row] for row in table])
scores = engine.all_head_scores(model, n_seqs=16, seed=0)
ind = (1, int(scores["induction"][1].argmax()))
prev = (0, int(scores["previous_token"][0].argmax()))
print(f"induction head L{ind[0]}H{ind[1]}, previous-token head L{prev[0]}H{prev[1]}")
'''),
        code('plot.head_grid(table, title="loss increase when each head is zero-ablated")'),
        md("""
## 2. Cut one composition path

Remove the previous-token head's output from the induction head's **keys** only (`kind="k"`), then from its
queries and its values instead: the K cut should hurt most."""),
        check('''
half = len(tokens) // 2
second_half = lambda lg, t: engine.interventions.loss_metric(lg[:, half:], t[:, half:])  # noqa: E731
for kind in "qkv":
    e = engine.ablate_path(model, tokens[None], src=prev, dst=ind, kind=kind, metric=second_half)
    print(f"cut L{prev[0]}H{prev[1]} -> L{ind[0]}H{ind[1]} ({kind}): "
          f"second-half loss {e.clean:.2f} -> {e.intervened:.2f}")
e = engine.ablate_heads(model, tokens[None], [ind], metric=second_half)
print(f"ablate L{ind[0]}H{ind[1]} entirely: second-half loss {e.clean:.2f} -> {e.intervened:.2f}")
'''),
        md("""
## 3. Activation patching

Clean input: the repeated sequence; its last token is predicted by induction. Corrupted input: the same,
but the token the induction head would copy is changed in the *first* copy, so the induction answer changes.
The metric is the logit difference (clean answer − corrupted answer) at the last position. Patching one
head's output (or the residual stream at one layer and position) from clean into corrupted shows where the
information that decides the answer lives; `normalize=True` gives the fraction restored (1 = fully)."""),
        code('''
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
'''),
        check('''
ph = engine.patch_heads(model, clean, corrupted, metric=metric, normalize=True)
pr = engine.patch_residual(model, clean, corrupted, metric=metric, normalize=True)
best = divmod(int(ph.argmax()), model.cfg.n_heads)
print(f"head that restores most: L{best[0]}H{best[1]} ({float(ph[best]):.2f} of the clean logit difference)")
print("residual patching restores > 0.5 at (layer, position):",
      [(l, p) for l, p in (pr > 0.5).nonzero().tolist()])
'''),
        code('''
import matplotlib.pyplot as plt

fig, axs = plt.subplots(1, 2, figsize=(14, 3.5), gridspec_kw={"width_ratios": [1.4, 4]}, layout="constrained")
plot.head_grid(ph, title="patch each head's output", ax=axs[0])
im = axs[1].imshow(pr.numpy(), aspect="auto", cmap="RdBu", vmin=-1, vmax=1)
axs[1].set_yticks(range(model.cfg.n_layers))
axs[1].set_xlabel("position"); axs[1].set_ylabel("layer (resid_pre)"); axs[1].set_title("patch the residual stream")
fig.colorbar(im, ax=axs[1])
plt.show()
'''),
        md("""
**What the heatmaps show.** In the residual stream, the changed position carries the difference entering
both layers: the induction head at the last position attends there and copies that token as its *value*.
Patching the last position does nothing — before the induction head has written the answer there, the clean
and corrupted runs agree at the last position. Among heads, the layer-1 induction heads restore the clean
logit difference (where several heads do induction, each restores a share). A layer-0 head can restore part of
it too — likely one that writes the token at the changed position into the stream there, where the induction
head reads its values (V-composition: check with `engine.composition_scores(model, "v")`).

## 4. The ablation widget

**In the widget:** click heads in the grid to switch them off (zero or mean, selectable), cut single paths
(source head → destination head's Q / K / V), and watch the per-token loss and top predictions update.
With a corrupted input, the "patch" mode shows the two patching heatmaps above."""),
        code("cw.ablation(model, clean[0], corrupted=corrupted[0])"),
        md("""
### Exercise 1
Zero ablation moves a head's output off its usual range; **mean ablation** replaces it by its average.
Redo the ablation table with `kind="mean"`. Which heads' effects change most, and why might zero ablation
overstate a head's importance?"""),
        solution('''
mean_table = engine.ablation_table(model, tokens[None], kind="mean")
print("mean ablation:", [[round(float(x), 2) for x in row] for row in mean_table])
print("zero - mean:  ", [[round(float(x), 2) for x in row] for row in table - mean_table])
'''),
        md("""
### Exercise 2
Direct logit attribution: which heads *directly* write the clean answer's logit difference at the last
position? (Hint: `engine.direct_logit_attribution(model, clean, pos=-1, token=(good, bad))`.)"""),
        solution('''
dla = engine.direct_logit_attribution(model, clean, pos=-1, token=(good, bad))
print([[round(float(x), 2) for x in row] for row in dla.reshape(model.cfg.n_layers, model.cfg.n_heads)])
'''),
    ]


# ----------------------------------------------------------------------------------------- 06 training
def nb_training() -> list:
    hist = pick("toy-2l-code", "toy-2l-induction")
    return [
        *header("06_training_and_phase_change.ipynb", "Watching an induction head form", """
Olsson et al. (2022) found that induction heads form **suddenly**: a *phase change* early in training, seen
as a bump in the loss curve, the in-context loss dropping, and the induction score of some heads jumping
from ~0 to high within a short window.

First we train a tiny two-layer model live for a few seconds with the **TrainingMonitor** widget. A
lecture-sized run is too short for the full phase change on a laptop CPU, so then we read the recorded
training history of a shipped model, where it happened."""),
        setup(hist, '''
import json

from circwidgets.model import ModelConfig, Transformer
from circwidgets.model.io import read_metadata
from circwidgets.train import RepeatTask, TrainConfig, Trainer'''),
        md("""
## 1. Train live

The task: random tokens with a segment repeated once (variable length and offset); only an induction
mechanism can predict the repeat. The model: 2 layers, 2 heads, d_model 64, no LayerNorm, shortformer
positions (the recipe that forms induction heads fastest on this project's machines).

**In the widget:** the left plot is the training loss (and the held-out and in-context losses at each
evaluation); the right plot is every head's induction score over time. The ■ button stops the run after the
current step and saves the model (so does the kernel's interrupt button)."""),
        code('''
import tempfile
from pathlib import Path

cfg = ModelConfig(n_layers=2, d_model=64, n_heads=2, d_head=32, d_vocab=32, n_ctx=32, attn_only=True,
                  normalization=None, positional="shortformer", bos_token_id=0, name="tiny-induction")
tiny = Transformer(cfg, seed=0)
task = RepeatTask(cfg.d_vocab, cfg.n_ctx, min_len=4, max_len=12)
tc = TrainConfig(steps=3000, batch_size=32, lr=1e-2, warmup=20, eval_every=50, icl_n_seqs=8, icl_seq_len=12)
out = Path(tempfile.mkdtemp()) / "tiny-induction.safetensors"
monitor = cw.TrainingMonitor(save_path=out, title="tiny 2-layer model on repeated tokens")
display(monitor)
trainer = Trainer(tiny, task, tc, callbacks=[monitor], time_limit=15, progress=False)  # 15 s of training
trainer.train()  # prints one line per evaluation
last = trainer.history[-1]
print(f"stopped at step {trainer.step} ({trainer.stopped_by or 'finished'}); best induction score "
      f"{last['max_induction']:.2f}")
'''),
        md("""
The monitor is a live view; here are the same curves as a static figure (what a viewer without a running
kernel, such as GitHub, shows):"""),
        code('plot.training_curves(trainer.history, title="tiny model, trained live")'),
        md("""
Fifteen seconds is short: depending on the machine, the induction score has only started to rise. (Run the
cell again with a larger `time_limit`, or call `trainer.train()` once more to resume — training is resumable
and deterministic.)

## 2. The phase change in a shipped model's history

Every shipped model carries its training history (evaluations at regular steps) in its file's metadata;
the model card says at which evaluation the best induction score first crossed 0.5."""),
        code('''
HISTORY_MODEL = MODEL
history = json.loads(read_metadata(cw.zoo.path(HISTORY_MODEL))["metrics"])
card = cw.zoo.card(HISTORY_MODEL)
print(len(history), "evaluations; keys:", sorted(history[-1]))
plot.training_curves(history, title=HISTORY_MODEL)
'''),
        check('''
pc = card.get("phase_change")
if pc:
    print(f"induction score first >= 0.5 at step {pc['step']} (score {pc['score']:.2f}); "
          f"previous evaluation: step {pc['previous_eval']['step']}, score {pc['previous_eval']['score']:.2f}")
final = history[-1]
print(f"final: max induction {final['max_induction']:.2f}, in-context loss first {final['icl_first']:.2f} "
      f"-> repeated {final['icl_repeated']:.2f}")
'''),
        md("""
### Measure the heads yourself: the shipped snapshots

The zoo also ships a few log-spaced snapshots of the run (`cw.zoo.snapshots(name)`: `(step, path)` pairs).
Load each one and measure its heads with the engine — the same scores as in the history above, recomputed
from the weights."""),
        check('''
final_step = int(read_metadata(cw.zoo.path(HISTORY_MODEL))["step"])  # the shipped model itself
snaps = cw.zoo.snapshots(HISTORY_MODEL) + [(final_step, cw.zoo.path(HISTORY_MODEL))]
snap_scores = []
for step, path in snaps:
    s = engine.all_head_scores(cw.load(path), n_seqs=8, seed=0)
    snap_scores.append((step, float(s["induction"].max()), float(s["previous_token"][0].max())))
    print(f"step {step:6d}: best induction {snap_scores[-1][1]:.2f}, "
          f"best layer-0 previous-token {snap_scores[-1][2]:.2f}")
'''),
        code('''
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
if pc:
    ax1.axvline(pc["step"], color="red", ls="--", lw=1)
ax1.set_title("the induction bump: in-context gain and induction scores rise together")
plt.show()
'''),
        md("""
**What the plot shows.** Before the phase change, the model predicts the repeated copy no better than the
first (gain near 0) and no head scores on induction. Within a short window, one or more layer-1 heads' scores
jump, and the gain jumps with them: the in-context learning ability *is* the induction heads.

### Exercise 1
From `history`, find the step at which the in-context gain first exceeded half of its final value, and
compare it with the step at which the best induction score first exceeded half of its final value."""),
        solution('''
def first_step(values, frac=0.5):
    target = frac * values[-1]
    return next(s for s, v in zip(steps, values) if v >= target)


gain = [r["icl_first"] - r["icl_repeated"] for r in history]
best_ind = [r["max_induction"] for r in history]
print(f"gain reaches half its final value at step {first_step(gain)}; "
      f"induction score at step {first_step(best_ind)}")
'''),
        md("""
### Exercise 2
Keep training the tiny model (`trainer.train(3000)` resumes where it stopped; `trainer.time_limit = 60`
first) and watch the monitor. Does a layer-1 head or a layer-0 head take the induction role? Check with
`engine.all_head_scores(trainer.model)`."""),
        solution('''
s = engine.all_head_scores(trainer.model, n_seqs=8, seq_len=12)
print("induction:", [[round(float(x), 2) for x in row] for row in s["induction"]],
      "| previous-token:", [[round(float(x), 2) for x in row] for row in s["previous_token"]])
''', title="Solution (without the extra training)"),
    ]


NOTEBOOKS = {
    "00_tour.ipynb": nb_tour,
    "01_zero_layer_bigrams.ipynb": nb_bigrams,
    "02_one_layer_skip_trigrams.ipynb": nb_skip,
    "03_two_layer_composition.ipynb": nb_composition,
    "04_virtual_weights_and_paths.ipynb": nb_virtual,
    "05_ablation_and_patching.ipynb": nb_ablation,
    "06_training_and_phase_change.ipynb": nb_training,
}


LECTURE = ("toy-2l-code", "toy-2l-induction")
# The shipped models each notebook needs: one of each group (a notebook is only built when they are shipped).
REQUIRES: dict[str, list[tuple[str, ...]]] = {
    "00_tour.ipynb": [LECTURE],
    "01_zero_layer_bigrams.ipynb": [("toy-0l-code",)],
    "02_one_layer_skip_trigrams.ipynb": [("toy-1l-trigrams",), ("toy-1l-code",)],
    "03_two_layer_composition.ipynb": [LECTURE],
    "04_virtual_weights_and_paths.ipynb": [LECTURE],
    "05_ablation_and_patching.ipynb": [LECTURE],
    "06_training_and_phase_change.ipynb": [LECTURE],
}


def missing(name: str) -> list[str]:
    """The models notebook `name` needs that the zoo does not ship ("a|b" for alternatives)."""
    have = set(shipped())
    return ["|".join(g) for g in REQUIRES[name] if not have.intersection(g)]


def build(name: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(cells=NOTEBOOKS[name]())
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["colab"] = {"provenance": []}
    for i, c in enumerate(nb.cells):
        c["id"] = f"{Path(name).stem[:2]}-{i:02d}"  # stable ids: regenerating gives the same file
    return nb


def sources(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def write(name: str, dest: Path = HERE) -> Path:
    """Write the notebook, keeping the stored outputs of cells whose source did not change."""
    nb = build(name)
    path = dest / name
    if path.exists():
        old = nbformat.read(path, as_version=4)
        keep = {(c.cell_type, c.source): c for c in old.cells if c.cell_type == "code"}
        for c in nb.cells:
            o = keep.get((c.cell_type, c.source))
            if o is not None:
                c.outputs, c.execution_count = o.outputs, o.execution_count
        for k, v in old.metadata.items():  # e.g. the widget state nbconvert saved with those outputs
            nb.metadata.setdefault(k, v)
    nbformat.write(nb, path)
    return path


def execute(path: Path, timeout: int = 600) -> float:
    """Execute in place with nbconvert (one kernel, offline); returns wall seconds."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--inplace",
                    f"--ExecutePreprocessor.timeout={timeout}", str(path)], check=True, cwd=ROOT)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--execute", nargs="*", metavar="PREFIX", help="execute (all, or names starting with PREFIX)")
    p.add_argument("--check", action="store_true", help="exit 1 when a stored notebook's sources are stale")
    p.add_argument("--out", type=Path, default=HERE, help="folder to write to (default: notebooks/)")
    a = p.parse_args(argv)
    if a.check:
        stale = [n for n in NOTEBOOKS if not missing(n) and (
            not (HERE / n).exists() or sources(nbformat.read(HERE / n, as_version=4)) != sources(build(n)))]
        print("stale:", stale or "none")
        return 1 if stale else 0
    names = list(NOTEBOOKS)
    if a.execute:
        names = [n for n in names if any(n.startswith(x) for x in a.execute)]
    for n in list(names):
        if missing(n):
            print(f"skipped {n}: the zoo does not ship {', '.join(missing(n))} yet")
            names.remove(n)
            continue
        print("wrote", write(n, a.out))
    if a.execute is not None:
        tpath = a.out / TIMINGS.name
        timings = json.loads(tpath.read_text()) if tpath.exists() else {}
        for n in names:
            dt = execute(a.out / n)
            timings[n] = round(dt, 1)
            print(f"executed {n} in {dt:.1f} s", flush=True)
        tpath.write_text(json.dumps(timings, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
