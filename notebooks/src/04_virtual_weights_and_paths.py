# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # The residual stream as a communication channel
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/circwidgets/circwidgets/blob/main/notebooks/04_virtual_weights_and_paths.ipynb)
#
# Every component reads from the residual stream with a matrix `W_in` and writes to it with `W_out`. Two
# components that never touch directly still talk through the stream: the paper's **virtual weights** from
# `i` to a later `j` are `W_in^{(j)} W_out^{(i)}` (column vectors; `W_out^{(i)} W_in^{(j)}` in this package's
# row convention) — one matrix, no attention involved. Our source summary extends this to *multi-hop*
# virtual weights through the components in between:
#
# - first order: `W_out^{(i)} (I + Σ_k W_in^{(k)} W_out^{(k)}) W_in^{(j)}`,
# - "exact" for the linear part: `W_out^{(i)} Π_l (I + Σ_{k∈l} W_in^{(k)} W_out^{(k)}) W_in^{(j)}`, the product
#   over the layers in between, in order (heads of one layer read the same stream, so they enter as one sum).
#
# **These multi-hop formulas are the summary's, not the paper's.** They treat each head in between as the
# linear map `W_OV`, as if it attended to its own position with weight 1: attention patterns are ignored. The
# paper routes a path through an attention head differently, as a **virtual head**: pattern `A^{h2} A^{h1}`
# together with OV circuit `W_OV^{h1} W_OV^{h2}` (notebook 03). So read the multi-hop matrices as "what could
# flow if every head attended only to itself": an idealisation that ignores the patterns (not a bound on
# them), not what the model does.
#
# Then the **path expansion**: with attention patterns (and the final norm's scale) frozen, the logits are a sum of path
# terms that add up *exactly* to the model's logits. Last, **basis invariance**: none of this depends on the residual
# stream's basis — we rotate it and recompute.

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
# ## 1. Virtual weights between heads
#
# From the previous-token head's output to the induction head's keys: a `[d_head, d_head]` matrix. Its
# singular values say how many independent directions the channel carries. (The two heads are found as in
# notebook 03: the strongest induction head, and the layer-0 head whose K-composition term with it is most
# diagonal.)

# %%
dst = engine.strongest_induction_head(model)  # by behaviour, over the repeat-length sweep
# its previous-token partner, by the weights: the layer-0 head whose K-composition term has the best diagonal
src = (0, max(range(model.cfg.n_heads),
              key=lambda h: engine.diagonal_stats(engine.k_composition_qk(model, (0, h), dst)).top1))
vw_k = engine.virtual_weights(model, ("head", *src), ("head", *dst, "k"))
print(vw_k.label, "shape", tuple(vw_k.matrix.shape))

# %%
# NBVAL_CHECK_OUTPUT
for name, s, d in [("embed -> unembed", "embed", "unembed"),
                   (f"L{src[0]}H{src[1]} -> L{dst[0]}H{dst[1]} keys", ("head", *src), ("head", *dst, "k")),
                   (f"embed -> L{dst[0]}H{dst[1]} values", "embed", ("head", *dst, "v"))]:
    first = engine.virtual_weights(model, s, d, order=1)
    exact = engine.virtual_weights(model, s, d, order=None)
    direct = engine.virtual_weights(model, s, d, order=0)
    fe, fx = first.singular_values, exact.singular_values
    print(f"{name:26s} effective rank {exact.effective_rank():5.1f} | top sigma: direct "
          f"{float(direct.singular_values[0]):.3g}, first order {float(fe[0]):.3g}, exact {float(fx[0]):.3g}")

# %% [markdown]
# For `embed → unembed` in a two-layer model the first-order and exact products differ by the term through
# *both* layers, `W_OV^{L0} W_OV^{L1}` — only the OV half of a virtual head; the paper's virtual head also
# carries the pattern `A^{h2} A^{h1}`, which these weight products leave out. Between a layer-0 and a layer-1
# head nothing lies in between, so all three orders agree.
#
# ## 2. Singular values and subspaces

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 3.5))
for s, d, lab in [("embed", "unembed", "embed -> unembed"), (("head", *src), ("head", *dst, "k"),
                  f"L{src[0]}H{src[1]} -> L{dst[0]}H{dst[1]} K")]:
    sv = engine.virtual_weights(model, s, d, order=None).singular_values
    ax.semilogy((sv / sv[0]).numpy()[:64], ".-", label=lab)
ax.set_xlabel("index"); ax.set_ylabel("sigma / sigma_max"); ax.legend(); ax.set_title("singular values")
plt.show()


# %% [markdown]
# Does the previous-token head write along the very directions the induction head's keys read? Compare the
# top write and read directions of the channel — and, since a cosine means nothing alone, the same cosines for
# **random factors of the same shapes** (Gaussian `W_out` `[d_head, d_model]` and `W_in` `[d_model, d_head]`).

# %%
# NBVAL_CHECK_OUTPUT
def top_cosines(vw: engine.VirtualWeights, k: int = 4) -> torch.Tensor:
    """|cos| between the i-th write and the i-th read direction of a channel, i < k."""
    return (vw.write_subspace(k) * vw.read_subspace(k)).sum(-1).abs()


print("cosines between the top write and read directions:", [round(float(c), 2) for c in top_cosines(vw_k)])
g = torch.Generator().manual_seed(0)
random_cos = []
for _ in range(50):  # the same construction from random factors of the same shapes
    w_out = torch.randn(vw_k.w_out.shape, generator=g, dtype=vw_k.w_out.dtype)
    w_in = torch.randn(vw_k.w_in.shape, generator=g, dtype=vw_k.w_in.dtype)
    rnd = engine.VirtualWeights(vw_k.src, vw_k.dst, 0, engine.FactoredMatrix(w_out, w_in), w_out, w_in)
    random_cos.append(top_cosines(rnd))
random_cos = torch.stack(random_cos)
print("random factors (mean over 50):", [round(float(c), 2) for c in random_cos.mean(0)],
      "| 95th percentile:", [round(float(c), 2) for c in random_cos.quantile(0.95, dim=0)])

# %% [markdown]
# Cosines above the random 95th percentile say the two heads share residual directions beyond what their
# shapes alone give; the weight products still ignore attention, so this is a channel, not a use of it.
#
# ## 3. Path expansion of the logits
#
# `engine.path_terms` splits the logits into the direct path `x₀ W_U`, one term per head `A^h x₀ W_OV^h W_U`, and one
# per pair of heads in different layers (virtual heads), each divided by the final LayerNorm's scale at its position
# (frozen like the patterns: one number per position, shared by every term; its weight and centring are in `W_U`); the
# last term, `remainder`, carries whatever a longer path would (exactly zero here: with two layers no path has more than
# two heads). **In the widget:** bars are the terms of one logit (by default the next token at a position where the
# strongest induction head decides it, `engine.decisive_position`), the sum beside the model's own logit; click a bar
# for that head's pattern; type a token in the box to split a different logit.

# %%
# NBVAL_CHECK_OUTPUT
pt = engine.path_terms(model, tokens[None], max_order=2)
logits = model(tokens[None]).double()
err = (pt.total().double() - logits).abs().max().item()
print(f"{len(pt)} terms; max |sum of terms - model logits| < 1e-3: {err < 1e-3}")

# %%
cw.paths(model, tokens, labels=labels)

# %% [markdown]
# ## 4. Basis invariance: rotate the residual stream
#
# Multiply the residual stream by an orthogonal matrix `R`: `W_E → W_E R`, `W_pos → W_pos R`, readers
# `W_Q, W_K, W_V, W_U → Rᵀ W`, writers `W_O → W_O R`. Every activation *in* the stream changes, but `x W_in` is
# unchanged for every reader that is a matrix. One reader is not: the model's final LayerNorm, between the
# stream and `W_U`, subtracts the stream's mean over its `d_model` coordinates (its component along the
# all-ones vector `1`) and divides by the length of what is left. A rotation keeps lengths, and it keeps the
# centring if it maps `1` to itself. So we first fold the norm's weight and bias into `W_U` and `b_U`
# (`cw.fold_layernorm`, the same fold the engine makes; the model then keeps only "centre and divide") and draw
# a random rotation that fixes `1`. Then the model computes the same function, and every quantity of the
# framework (eigenvalues, composition, virtual weights, path terms) must be unchanged too. Any analysis that
# depended on individual residual dimensions would fail this test.

# %%
import copy

torch.manual_seed(0)
d = model.cfg.d_model
m64 = cw.fold_layernorm(model).to(torch.float64).requires_grad_(False)  # same logits; norm weight in W_U
one = torch.ones(d, 1, dtype=torch.float64) / d ** 0.5  # the all-ones direction, unit length
rest = torch.linalg.qr(torch.cat([one, torch.randn(d, d - 1, dtype=torch.float64)], 1))[0][:, 1:]  # basis of 1⊥
O, _ = torch.linalg.qr(torch.randn(d - 1, d - 1, dtype=torch.float64))  # a random rotation of 1⊥
R = one @ one.T + rest @ O @ rest.T  # orthogonal, and R 1 = 1


def change_basis(m, M: torch.Tensor):
    """The same model with its residual stream in the basis `x -> x M`: writers `W M`, readers `M⁻¹ W`."""
    Mi = torch.linalg.inv(M)  # = Rᵀ for an orthogonal R
    out = copy.deepcopy(m)
    with torch.no_grad():
        out.W_E.copy_(m.W_E @ M)
        if hasattr(out, "W_pos"):
            out.W_pos.copy_(m.W_pos @ M)
        for name in ("W_Q", "W_K", "W_V"):
            getattr(out, name).copy_(Mi @ getattr(m, name))  # [L, H, d_model, d_head]: readers, (x M)(M⁻¹ W) = x W
        out.W_O.copy_(m.W_O @ M)                               # writers (and the attention output's bias)
        out.b_O.copy_(m.b_O @ M)
        out.W_U.copy_(Mi @ m.W_U)
    return out


rot = change_basis(m64, R)
_, c0 = m64.run_with_cache(tokens[None])
_, c1 = rot.run_with_cache(tokens[None])
print("residual stream changed by up to", round(float((c0["resid_post", 0] - c1["resid_post", 0]).abs().max()), 2))


# %%
# NBVAL_CHECK_OUTPUT
def biggest_change(f, other):
    a, b = f(m64), f(other)
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
    print(f"{name:22s} max |change| < 1e-6: {biggest_change(f, rot) < 1e-6}")

# %% [markdown]
# ### Exercise 1
# Replace `R` by a random **invertible but not orthogonal** matrix `M` that still maps `1` to itself (readers
# get `M⁻¹ W`, writers `W M`). Which of the framework's quantities change, and why? And what changes under a
# rotation that does *not* fix `1`?

# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
#@title Solution (click to show the code)
torch.manual_seed(1)
A = torch.randn(d - 1, d - 1, dtype=torch.float64) / d ** 0.5 + torch.eye(d - 1, dtype=torch.float64)
M = one @ one.T + rest @ A @ rest.T  # invertible, M 1 = 1, not orthogonal
free, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))  # a random rotation: moves 1
skew, moved = change_basis(m64, M), change_basis(m64, free)
print(f"{'':22s} {'M (skew)':>10s} {'R moves 1':>10s}")
for name, f in checks.items():
    print(f"{name:22s} {biggest_change(f, skew):10.2g} {biggest_change(f, moved):10.2g}")

# %% [markdown]
# <details><summary>Why (click)</summary>
#
# Under `M`, every *product* through the stream is unchanged: the full circuits' eigenvalues
# (`W_E M · M⁻¹ W_OV M · M⁻¹ W_U`) and the virtual weights between components (the `M`s cancel in
# `W_out M · M⁻¹ W_in`). The **composition scores change**: their numerators and denominators are Frobenius norms
# of matrices expressed *inside* the residual basis (`M⁻¹ W_OV M` for an OV circuit, `M⁻¹ W_QK M⁻ᵀ` for a QK
# circuit), and Frobenius norms are invariant under orthogonal changes of basis only. The framework's scores
# therefore assume the residual stream's basis matters only *up to rotation*. That is an assumption, not a fact
# about these models: the measures are rotation-invariant by construction, but a model trained with Adam
# (per-coordinate step sizes, as these were) can still develop a privileged basis.
#
# **The logits change too**, and with them the path terms (they add up to the logits): the final LayerNorm divides by
# the stream's length, which `M` changes. In a model without a final norm `M` would keep the logits; a LayerNorm gives
# the stream a length that means something. A rotation that moves `1` keeps lengths but not the centring: the logits
# change again, and so does the OV circuit's positivity (the engine puts the centring into `W_U`, where it no longer
# commutes with the rotation), while what never passes through the final norm (the QK circuits, composition scores,
# virtual weights between heads) stays put. The all-ones direction is a privileged direction of a LayerNorm model's
# stream.
# </details>
