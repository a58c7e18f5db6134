# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Real architectures: rotary positions, grouped-query attention, RMSNorm
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/circwidgets/circwidgets/blob/main/notebooks/07_real_architectures.ipynb)
#
# The models people study today (Llama, Mistral, Qwen, Gemma, OLMo) differ from GPT-2 in some or all of
# three ways that matter for the framework (Pythia, also widely studied, keeps LayerNorm and one K/V head per
# query head, but rotates its queries and keys):
#
# - **Rotary positions.** No `W_pos`: queries and keys are rotated by their position, `q_i = x_i W_Q R_i`,
#   `k_j = x_j W_K R_j`. Since `R_i R_jᵀ = R_{i−j}`, the score is `x_i W_Q R_Δ W_Kᵀ x_jᵀ` with the
#   **offset** Δ = i − j: the QK circuit is a function of Δ, `W_QK(Δ) = W_Q R_Δ W_Kᵀ`.
# - **Grouped-query attention.** Several query heads share one key/value head.
# - **RMSNorm** `x / rms(x) · w`: folds like LayerNorm's weight, without centring.
#
# This notebook runs on small random models built here (offline) and on the lecture model; the last parts
# show how to bring a Hugging Face or TransformerLens model, how to analyse a checkpoint bigger than memory
# (read layer by layer), and how to run activation views through nnsight on a model that lives elsewhere.

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

# %% [markdown]
# The lecture model has learned positions (`positional="shortformer"`), so its positional QK circuit
# `W_pos W_QK W_posᵀ` exists. A rotary model has none; asking for it explains what to use instead.

# %%
from circwidgets.model import rotary
from circwidgets.model.testing import random_model

llama_like = random_model(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, d_head=8, d_vocab=50, n_ctx=64,
                          positional="rotary", rotary_base=100.0, normalization="RMS", seed=0,
                          dtype=torch.float64).requires_grad_(False)
print(engine.positional_qk(model).shape, "positional QK of the lecture model")
try:
    engine.positional_qk(llama_like)
except ValueError as e:
    print("rotary model:", e)

# %% [markdown]
# ## The QK circuit at an offset
#
# Every QK quantity of a rotary model takes `offset=Δ`: `engine.W_QK(model, offset=Δ)`,
# `engine.full_qk(model, offset=Δ)`, `engine.eigen_positivity(model, "qk", offset=Δ)`. First the check that
# this is the model's own arithmetic: in a one-layer model without normalisation, the attention score of
# query position i on key position j is `full_qk(offset=i−j)[token_i, token_j] / attn_scale`.

# %%
# NBVAL_CHECK_OUTPUT
one_layer = random_model(n_layers=1, d_model=32, n_heads=4, d_head=8, d_vocab=50, n_ctx=64, positional="rotary",
                         rotary_base=100.0, rotary_dim=6,  # partial rotary: 6 of 8 dimensions rotate
                         seed=1, dtype=torch.float64).requires_grad_(False)
toks = torch.randint(0, 50, (1, 20), generator=torch.Generator().manual_seed(0))
_, cache = one_layer.run_with_cache(toks)
worst = 0.0
for i in range(20):
    for j in range(i + 1):
        fq = engine.full_qk(one_layer, offset=i - j)[0].materialize() / one_layer.cfg.attn_scale
        worst = max(worst, float((cache["attn_scores", 0][0, :, i, j] - fq[:, toks[0, i], toks[0, j]]).abs().max()))
print(f"largest difference over all (query, key) pairs and heads: {worst:.1e}")

# %% [markdown]
# ## The offset profile
#
# How does a head's preference change with Δ? `engine.offset_profile(model, offsets)` gives, per head, the
# mean attention score over all (query token, key token) pairs at each offset, with the layer reading the
# token embeddings (`q̄ R_Δ k̄ᵀ / scale`, exactly the mean of layer 0's own scores). A **previous-token
# head** peaks at Δ = 1. We plant one: every token embedding shares one direction, the head's query along it
# is the key along it rotated back by one position.

# %%
# NBVAL_CHECK_OUTPUT
planted = random_model(n_layers=1, d_model=32, n_heads=4, d_head=8, d_vocab=50, n_ctx=64, positional="rotary",
                       rotary_base=100.0, seed=2, dtype=torch.float64).requires_grad_(False)
with torch.no_grad():
    planted.W_E[:, 0] += 3.0  # a direction every token has
    key = torch.zeros(8, dtype=torch.float64)
    key[0], key[4] = 4.0, 4.0  # one rotation pair (rotate-half layout: dims m and m + 4)
    planted.W_K[0, 2, 0] = key
    planted.W_Q[0, 2, 0] = key @ rotary.rotation_matrix(planted.cfg, 1).T  # q R_1 = k: best at Δ = 1
profile = engine.offset_profile(planted, offsets=range(16))
print("head 2 peaks at Δ =", int(profile[0, 2].argmax()), "| every head's peak:", profile[0].argmax(-1).tolist())
_, cache = planted.run_with_cache(toks)
prev = cache["pattern", 0][0, 2].diagonal(-1).mean()
print(f"head 2's attention to the previous token, on random text: {float(prev):.2f}")

# %%
fig, ax = plt.subplots(figsize=(6, 2.6))
for h in range(4):
    ax.plot(profile[0, h].numpy(), marker="o" if h == 2 else None, label=f"L0H{h}")
ax.set_xlabel("offset Δ = query − key position")
ax.set_ylabel("mean score")
ax.legend(ncol=4, fontsize=8)
ax.set_title("offset profile")
plt.show()

# %% [markdown]
# Eigenvalues depend on Δ too: at Δ = 0 positivity asks whether a token attends to *itself*. The
# eigenvalue view has an offset control for rotary models and shows the selected head's offset profile
# (click the profile to jump to an offset).

# %%
# NBVAL_CHECK_OUTPUT
for d in (0, 1, 2, 8):
    pos = engine.eigen_positivity(llama_like, "qk", offset=d)
    print(f"Δ = {d}: QK positivity of layer 1:", [round(float(x), 3) for x in pos[1]])

# %%
cw.eigenvalues(planted, layer=0, head=2, offset=1)

# %% [markdown]
# ## What grouped-query attention shares
#
# `llama_like` has 4 query heads and 2 K/V heads per layer: heads 0, 1 read K/V head 0, heads 2, 3 read K/V
# head 1 (Hugging Face's order). `model.W_K` is per query head, so every formula reads it as before; the
# group's members see the same keys and values. Their QK circuits still differ (each has its own `W_Q`).

# %%
# NBVAL_CHECK_OUTPUT
cfg = llama_like.cfg
print("K/V head of each query head:", [cfg.kv_head_of(h) for h in range(cfg.n_heads)],
      "| group of K/V head 1:", cfg.kv_group(1))
print("heads 2 and 3 share W_K:", torch.equal(llama_like.W_K[1, 2], llama_like.W_K[1, 3]),
      "| and W_Q:", torch.equal(llama_like.W_Q[1, 2], llama_like.W_Q[1, 3]))
k = engine.composition_scores(llama_like, "k", offset=1)[0, :, 1]  # [head1, head2]
print("K-composition L0 -> L1 at Δ = 1:\n", k.numpy().round(3))

# %% [markdown]
# Interventions act where the model shares: cutting the path from L0H0 into L1H2's **keys** recomputes the
# shared K/V head, so L1H3 sees the cut too, and the result says so.

# %%
text = torch.randint(0, 50, (1, 24), generator=torch.Generator().manual_seed(3))
cut = engine.ablate_path(llama_like, text, (0, 0), (1, 2), kind="k")
print(f"loss change {cut.delta:+.4f}")
print(cut.notes[0])

# %% [markdown]
# ### Exercise
#
# Build `random_model(..., positional="rotary", rotary_layout="interleaved")` (GPT-J's pairing of dimensions)
# and check that the offset profile of its layer-0 heads equals the mean of the model's own scores at
# Δ = 3: run every pair of tokens (s, t) as the sequence `[s, x, x, t]` and average
# `cache["attn_scores", 0][:, :, 3, 0]`.

# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
#@title Solution (click to show the code)
gptj = random_model(n_layers=1, d_model=16, n_heads=2, d_head=4, d_vocab=12, n_ctx=8, positional="rotary",
                    rotary_layout="interleaved", seed=4, dtype=torch.float64).requires_grad_(False)
s_, t_ = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
seqs = torch.zeros(144, 4, dtype=torch.long)
seqs[:, 0], seqs[:, 3] = s_.reshape(-1), t_.reshape(-1)
_, c = gptj.run_with_cache(seqs)
print(c["attn_scores", 0][:, :, 3, 0].mean(0), engine.offset_profile(gptj, [3])[0, :, 0])

# %% [markdown]
# ## A trained rotary model
#
# Everything above ran on random or hand-planted weights. `toy-2l-rotary` is trained: the lecture model's two
# attention-only layers with today's parts (rotary positions, RMSNorm, 4 query heads sharing 2 K/V heads),
# trained by `python -m circwidgets.train toy-2l-rotary` on the same code corpus. It has no positional
# embedding at all, so whatever it knows about "the previous token" it must have put into the rotations of
# its QK circuits. The head scores read the heads' behaviour on repeated random tokens; the offset profile
# reads where a layer-0 head looks from its weights alone.

# %%
# NBVAL_CHECK_OUTPUT
rot = cw.zoo.lecture("toy-2l-rotary", quiet=True)
scores = engine.all_head_scores(rot, n_seqs=32, seed=2024)  # repeat lengths 10, 23, 50, 100
rot_profile = engine.offset_profile(rot, offsets=range(64))  # [layer, head, offset]
prev_head = int(scores["previous_token"][0].argmax())
ind_head = int(scores["induction"][1].argmax())
print("layer 0 previous-token scores:", scores["previous_token"][0].numpy().round(2))
print("layer 0 offset-profile peaks: ", rot_profile[0].argmax(-1).tolist())
print("layer 1 induction scores:     ", scores["induction"][1].numpy().round(2))
print(f"L0H{prev_head} reads K/V head {rot.cfg.kv_head_of(prev_head)}, shared by query heads",
      rot.cfg.kv_group(rot.cfg.kv_head_of(prev_head)))

# %%
fig, ax = plt.subplots(figsize=(6, 2.6))
for h in range(rot.cfg.n_heads):
    ax.plot(rot_profile[0, h, :24].numpy(), marker="o" if h == prev_head else None, label=f"L0H{h}")
ax.set_xlabel("offset Δ = query − key position")
ax.set_ylabel("mean score")
ax.legend(ncol=4, fontsize=8)
ax.set_title("toy-2l-rotary, layer 0: offset profiles")
plt.show()

# %% [markdown]
# The induction head's keys should be written by the previous-token head: K-composition. With rotary
# positions the later head's QK circuit depends on the offset at which it reads, and an induction head on
# `BOS + r + r` reads at Δ = |r| − 1, so `composition_scores(..., offset=[...])` averages its circuit over
# the offsets of the four repeat lengths. `composition_baseline` is what random matrices of the same shapes
# score (chance).

# %%
# NBVAL_CHECK_OUTPUT
k = engine.composition_scores(rot, "k", offset=[9, 22, 49, 99])[0, :, 1, ind_head]  # [layer-0 head]
chance = engine.composition_baseline(rot, "k")[0]
print(f"K-composition into L1H{ind_head}:", k.numpy().round(3), f"| chance {chance:.3f}")
print(f"strongest input: L0H{int(k.argmax())}, {float(k.max()) / chance:.1f}x chance")
ov = float(engine.eigen_positivity(rot, "ov")[1, ind_head])
print(f"L1H{ind_head}'s OV circuit, eigenvalue positivity: {ov:.2f} (+1: it copies the token it attends to)")

# %% [markdown]
# Read together: the layer-0 head whose weights prefer Δ = 1 is the head that behaves as a previous-token head,
# the layer-1 head that behaves as an induction head copies what it attends to, and its keys are written by
# that previous-token head, well above chance and more than by any other layer-0 head. It is the paper's
# two-layer circuit, found in a model with no positional embedding. It is also fainter than in `toy-2l-code`
# (a previous-token score of about a third and an induction score of about a quarter, against 0.99 and 0.6
# there): a CPU-sized run.
# Grouped-query attention shows in the first cell's last line: the previous-token head shares its keys and
# values with another query head that does not look back. Shared keys are not a shared preference, because
# each query head brings its own `W_Q`.

# %% [markdown]
# ## Bring your own model
#
# `cw.from_hf(model)` reads GPT-2, Pythia (GPT-NeoX), Llama, Mistral, Qwen 2/3, Gemma 2/3, OLMo-2 and Phi-3
# checkpoints from Hugging Face `transformers`; `cw.from_transformer_lens(model)` reads TransformerLens
# models (and 4.x `TransformerBridge`s). Each conversion checks the logits against the source. Offline, a
# random configuration shows the same path; the download below runs where the network is reachable.

# %%
try:
    import transformers

    hf_cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=100,
                                      max_position_embeddings=64, attn_implementation="eager")
    torch.manual_seed(0)
    ours = cw.from_hf(transformers.LlamaForCausalLM(hf_cfg).eval())
    print(ours.cfg.positional, ours.cfg.normalization, "| K/V heads:", ours.cfg.n_kv_heads,
          "| gated MLP:", ours.cfg.gated_mlp)
except ImportError:
    print("transformers is not installed: `pip install transformers` to convert Hugging Face models")

# %%
import socket

NAME = "HuggingFaceTB/SmolLM2-135M"  # a small Llama-architecture model (~270 MB download)
try:
    socket.create_connection(("huggingface.co", 443), timeout=3).close()  # offline: skip at once
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(NAME, attn_implementation="eager")
    tok = transformers.AutoTokenizer.from_pretrained(NAME)
    real = cw.from_hf(hf, tokenizer=tok)
    print(real.cfg.name, real.cfg.n_layers, "layers,", real.cfg.n_heads, "heads,", real.cfg.n_kv_heads, "K/V heads")
    print("previous-token candidates (offset profile peaks at Δ = 1):",
          (engine.offset_profile(real, range(8)).argmax(-1) == 1).nonzero().tolist()[:8])
except Exception as e:  # noqa: BLE001 - offline (no network) or no transformers: say so and go on
    print(f"skipped: could not download {NAME} here ({type(e).__name__}); run this cell in Colab or online")

# %% [markdown]
# ## Checkpoints bigger than memory
#
# An 8B model in float32 needs 32 GB; a laptop or a free Colab has less. The weight analyses never need the
# whole model at once (every head's circuits factor through `d_head`), so `cw.from_hf(directory, lazy=True)`
# keeps the checkpoint's tensors in their files (bfloat16 stays bfloat16) and reads one layer
# at a time. The vocabulary enters only through the Gram matrices `W_Eᵀ W_E` and `W_U W_E`, computed once in
# blocks and cached on disk in a directory you choose. The forward passes some views need (the composition
# view's patterns, head scores, ablation, path expansion) also run one layer at a time.
#
# Offline, a small random Llama-style checkpoint written here in bfloat16 shards stands in for a downloaded
# one (`huggingface_hub.snapshot_download(name)` gives the directory of a real one).

# %%
import tempfile
from pathlib import Path

try:
    import transformers

    transformers.utils.logging.disable_progress_bar()
    ckpt_dir = Path(tempfile.mkdtemp()) / "tiny-llama"
    big_cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                       num_attention_heads=4, num_key_value_heads=2, vocab_size=500,
                                       max_position_embeddings=64, tie_word_embeddings=False,
                                       attn_implementation="eager")
    torch.manual_seed(0)
    hf_big = transformers.LlamaForCausalLM(big_cfg).eval()
    hf_big.to(torch.bfloat16).save_pretrained(ckpt_dir, max_shard_size="100KB")  # several shards
    print(len(list(ckpt_dir.glob("*.safetensors"))), "shards")

    lazy = cw.from_hf(str(ckpt_dir), lazy=True, cache_dir=ckpt_dir.parent / "cw-cache")
    print(repr(lazy).replace(str(ckpt_dir.parent), "<tmp>"))
    print("OV positivity, layer 2:", engine.eigen_positivity(lazy, "ov")[2].numpy().round(2))
    print("K-composition at Δ = 1, strongest pair:",
          float(torch.nan_to_num(engine.composition_scores(lazy, "k", offset=1), nan=0).max()))
    info = lazy.cache_info()
    print(f"cache: {info['files']} file(s), {info['bytes'] / 1024:.0f} KiB in {Path(info['dir']).name}/")
    # path expansion of one logit (what cw.paths shows): frozen activations, then one layer's weights at a time
    lp = engine.logit_paths(engine.frozen_run(lazy, torch.arange(1, 17)), 15, 7, max_order=2)
    print(f"logit of token 7 at position 15: {len(lp.values)} path terms summing to {lp.total:+.4f} "
          f"(the model's logit {lp.model_logit:+.4f})")
except ImportError:
    lazy = None
    print("transformers is not installed: `pip install transformers` to write and read checkpoints")

# %% [markdown]
# The composition view works on the lazy model: scores streamed, the pair's patterns from a forward pass
# run one layer at a time. A second object over the same directory and cache reads the Gram matrices back
# instead of passing over the vocabulary again (a changed checkpoint file gets new cache entries; a
# truncated or corrupted entry is recomputed, never read as valid).

# %%
if lazy is not None:
    view = cw.composition(lazy, kind="k", pair=[0, 1, 2, 3])
    again = cw.from_hf(str(ckpt_dir), lazy=True, cache_dir=ckpt_dir.parent / "cw-cache")
    again.grams()
    print("embedding read again:", lazy._embed_key() in again.reads)
view if lazy is not None else None

# %% [markdown]
# ## Models on someone else's machine: nnsight
#
# Activation views need a forward pass of the real model. [nnsight](https://nnsight.net) runs it where the
# model lives: this machine, several GPUs (`device_map="auto"`), or a remote server (NDIF) with
# `remote=True`. Every activation function of the engine accepts an nnsight `LanguageModel` (or a Hugging
# Face model, which it wraps) and asks the trace only for what it needs: one layer's pattern, one number per
# ablation, a `[layer, head]` table; path expansion gets the patterns, norm scales and MLP outputs from one
# trace and reads the weights one layer at a time. The numbers equal those of the converted model:

# %%
import warnings

try:
    import nnsight  # noqa: F401

    from circwidgets.model.nnsight_source import NNsightSource

    warnings.filterwarnings("ignore", message="LanguageModel is deprecated")
    hf_small = transformers.LlamaForCausalLM(big_cfg).eval()  # float32, eager attention
    source = NNsightSource(hf_small)  # for NDIF: NNsightSource(LanguageModel(name), remote=True)
    converted = cw.from_hf(hf_small)
    toks = torch.randint(1, 500, (1, 16), generator=torch.Generator().manual_seed(0))
    for name, m in (("nnsight", source), ("converted", converted)):
        eff = engine.ablate_heads(m, toks, [(2, 1)], kind="mean")
        cut = engine.ablate_path(m, toks, (0, 1), (2, 3), kind="k")
        ind = engine.head_scores(m, "induction", seq_len=10, n_seqs=2)
        lp = engine.logit_paths(engine.frozen_run(m, toks), 15, 7, max_order=1)  # patterns from one trace
        print(f"{name:9s}: mean-ablate L2H1 {eff.delta:+.4e} | cut L0H1 -> L2H3 keys {cut.delta:+.4e} | "
              f"best induction score {float(ind.max()):.4f} | path terms of one logit sum to {lp.total:+.4f}")
except ImportError:
    print("nnsight is not installed: `pip install nnsight` to run activation views through it")
