"""Interventions (DESIGN.md item 9): ablation of heads and of single composition paths, activation
patching, direct logit attribution. All run the model's own forward pass with hooks.

Conventions shared by every function here:

- **metric**: `metric(logits [batch, pos, d_vocab], tokens [batch, pos]) -> scalar` (a `[batch]`
  result is averaged). Default: mean next-token cross-entropy over positions 0..pos-2 (`loss`).
- **head ablation** acts on the head's `z` (`blocks.{l}.attn.hook_z`, `[batch, pos, head, d_head]`),
  i.e. on everything the head writes (its `W_O` output); the layer's `b_O` is not a head's and stays.
  "zero" sets z to 0. "mean" sets it to its mean on a reference batch (default: the same tokens):
  `means="positions"` = mean over reference batch and positions (`[d_head]` per head, any length);
  `means="batch"` = mean over the reference batch at each position (`[pos, d_head]`; the reference
  must be at least as long). Means come from one clean reference run (not re-estimated after
  earlier heads are ablated).
- **effects** are `ablated − clean` (a positive effect on the loss = the head helped).
- **patching** is clean → corrupted ("denoising"): run the corrupted tokens with one activation
  taken from the clean run; the result is the metric of that run (or, `normalize=True`,
  `(patched − corrupted) / (clean − corrupted)`: 1 = the activation restores the clean metric).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..model import Transformer
from ._check import check_layer_head, effect_parts, finite_results
from .prep import _entry as _check_weights  # finiteness checked once per weight version (cached)

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def loss_metric(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) over positions 0..pos-2 and the batch."""
    if tokens.shape[1] < 2:
        raise ValueError("the default loss metric needs tokens with at least 2 positions")
    x = logits[:, :-1]
    lp = (x if x.dtype in (torch.float32, torch.float64) else x.float()).log_softmax(-1)
    return -lp.gather(-1, tokens[:, 1:, None]).mean()


def _value(metric: Metric, logits: torch.Tensor, tokens: torch.Tensor) -> float:
    v = torch.as_tensor(metric(logits, tokens))
    return float(v.double().mean().item())


def _heads(model: Transformer, heads) -> list[tuple[int, int]]:
    if isinstance(heads, tuple) and len(heads) == 2 and all(isinstance(x, int) for x in heads):
        heads = [heads]
    out = []
    for lh in heads:
        if not (isinstance(lh, (tuple, list)) and len(lh) == 2):
            raise ValueError(f"heads must be a list of (layer, head) pairs, got {lh!r}")
        out.append(check_layer_head(model, lh[0], lh[1]))
    return out


@dataclass
class Effect:
    """Metric on the clean run, on the intervened run, and `delta = intervened − clean`."""

    clean: float
    intervened: float

    @property
    def delta(self) -> float:
        return self.intervened - self.clean


# ----------------------------------------------------------------------------------- ablation
@torch.no_grad()
def _z_means(model: Transformer, reference: torch.Tensor, layers: set[int], means: str) -> dict[int, torch.Tensor]:
    """Mean z of every head of `layers` on the reference: `[head, d_head]` or `[pos, head, d_head]`."""
    store: dict[int, torch.Tensor] = {}

    def grab(z, hp):
        store[hp.layer()] = z.mean(0) if means == "batch" else z.mean((0, 1))

    model.run_with_hooks(reference, fwd_hooks=[(("z", lay), grab) for lay in sorted(layers)])
    return store


def _check_kind(kind: str, means: str) -> None:
    if kind not in ("zero", "mean"):
        raise ValueError(f"kind={kind!r} must be 'zero' or 'mean'")
    if means not in ("positions", "batch"):
        raise ValueError(f"means={means!r} must be 'positions' or 'batch'")


def _replacement(mean_z: torch.Tensor | None, kind: str, n_pos: int, head: int) -> torch.Tensor | float:
    """What head `head`'s z `[..., pos, d_head]` becomes."""
    if kind == "zero":
        return 0.0
    m = mean_z[..., head, :]
    if m.ndim == 2:  # per position
        if m.shape[0] < n_pos:
            raise ValueError(f"means='batch' needs a reference at least {n_pos} positions long, got {m.shape[0]}")
        m = m[:n_pos]
    return m


def _prep(model: Transformer, tokens, metric, reference, kind, means):
    _check_weights(model)
    _check_kind(kind, means)
    toks = model.check_tokens(tokens)
    ref = toks if reference is None else model.check_tokens(reference)
    return toks, ref, metric or loss_metric


@torch.no_grad()
def ablate_heads(model: Transformer, tokens, heads: Sequence[tuple[int, int]], kind: str = "zero",
                 metric: Metric | None = None, reference=None, means: str = "positions") -> Effect:
    """Ablate the heads `[(layer, head), ...]` together; `Effect(clean, ablated)` of `metric`
    (default loss). kind "zero" | "mean" (module docstring)."""
    toks, ref, metric = _prep(model, tokens, metric, reference, kind, means)
    hs = _heads(model, heads)
    by_layer: dict[int, list[int]] = {}
    for lay, h in hs:
        by_layer.setdefault(lay, []).append(h)
    mz = _z_means(model, ref, set(by_layer), means) if kind == "mean" else {}

    def make(lay):
        def fn(z, hp):
            z = z.clone()
            for h in by_layer[lay]:
                z[:, :, h] = _replacement(mz.get(lay), kind, z.shape[1], h)
            return z
        return fn

    clean = _value(metric, model(toks), toks)
    ablated = _value(metric, model.run_with_hooks(toks, [(("z", lay), make(lay)) for lay in by_layer]), toks)
    return Effect(clean, ablated)


def _copies_per_run(model: Transformer, toks: torch.Tensor, n: int, max_elements: float) -> int:
    per_copy = toks.numel() * max(model.cfg.d_vocab, model.cfg.d_model * 4)
    return max(1, min(n, int(max_elements // max(per_copy, 1))))


@torch.no_grad()
def _copy_runs(model: Transformer, toks: torch.Tensor, hook_name, n: int, edit, metric: Metric,
               max_elements: float, desc: str) -> list[float]:
    """Run `n` edited copies of `toks` (stacked on the batch axis, several per forward pass);
    `edit(act_view [copies, batch, ...], first_copy)` modifies the hooked activation in place."""
    from tqdm.auto import tqdm

    B = toks.shape[0]
    step = _copies_per_run(model, toks, n, max_elements)
    vals: list[float] = []
    for s in tqdm(range(0, n, step), desc=desc, disable=n // step < 8, leave=False):
        c = min(step, n - s)
        rep = toks.repeat(c, 1)

        def fn(act, hp, s=s, c=c):
            act = act.clone()
            edit(act.view(c, B, *act.shape[1:]), s)
            return act

        logits = model.run_with_hooks(rep, [(hook_name, fn)])
        vals += [_value(metric, logits[i * B:(i + 1) * B], toks) for i in range(c)]
    return vals


@torch.no_grad()
def ablation_table(model: Transformer, tokens, kind: str = "zero", metric: Metric | None = None, reference=None,
                   means: str = "positions", max_elements: float = 2**26) -> torch.Tensor:
    """`Tensor[n_layers, n_heads]`: effect (ablated − clean) of ablating each head alone.

    Each layer's heads run as copies of the batch in one forward pass (`max_elements` bounds the
    logits held at once)."""
    toks, ref, metric = _prep(model, tokens, metric, reference, kind, means)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    clean = _value(metric, model(toks), toks)
    mz = _z_means(model, ref, set(range(L)), means) if kind == "mean" else {}
    out = torch.zeros(L, H, dtype=torch.float64)
    for lay in range(L):
        def edit(z, first, lay=lay):  # z [copies, batch, pos, head, d_head]; copy i ablates head first + i
            for i in range(z.shape[0]):
                z[i, :, :, first + i] = _replacement(mz.get(lay), kind, z.shape[2], first + i)

        vals = _copy_runs(model, toks, ("z", lay), H, edit, metric, max_elements, f"ablation layer {lay}")
        out[lay] = torch.tensor(vals, dtype=torch.float64) - clean
    return out


# ----------------------------------------------------------------------------------- path ablation
def _ln_in(model: Transformer, x: torch.Tensor, layer: int) -> torch.Tensor:
    """ln1 of layer `layer` applied to a residual `x` (same maths as the forward pass)."""
    cfg = model.cfg
    if cfg.normalization is None:
        return x
    x = x - x.mean(-1, keepdim=True)
    x = x / (x.pow(2).mean(-1, keepdim=True) + cfg.ln_eps).sqrt()
    if cfg.normalization == "LN":
        x = x * model.ln1_w[layer] + model.ln1_b[layer]
    return x


@torch.no_grad()
def ablate_path(model: Transformer, tokens, src: tuple[int, int], dst: tuple[int, int],
                kind: str | Sequence[str] = "k", ablation: str = "zero", metric: Metric | None = None,
                reference=None) -> Effect:
    """Remove one composition path: head `dst`'s keys ("k"), queries ("q") and/or values ("v") are
    computed from the residual stream *without* head `src`'s output, while everything else (the
    other inputs of `dst`, every other head, the residual stream itself) still sees it.

    `ablation="zero"` subtracts src's output `result [batch, pos, d_model]` from dst's input;
    `"mean"` replaces it by its mean over the reference batch and positions. The LayerNorm in front
    of `dst` (if any) is recomputed on the modified residual. src must be in an earlier layer.
    Returns `Effect(clean, ablated)` of `metric` (default loss).
    """
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    if not kinds or any(k not in ("q", "k", "v") for k in kinds):
        raise ValueError(f"kind={kind!r} must be 'q', 'k', 'v' or a sequence of them")
    if ablation not in ("zero", "mean"):
        raise ValueError(f"ablation={ablation!r} must be 'zero' or 'mean'")
    l1, h1 = check_layer_head(model, *src)
    l2, h2 = check_layer_head(model, *dst)
    if l1 >= l2:
        raise ValueError(f"src={src!r} must be in an earlier layer than dst={dst!r}")
    _check_weights(model)
    toks = model.check_tokens(tokens)
    metric = metric or loss_metric
    cfg = model.cfg
    mean_out = None
    if ablation == "mean":
        ref = toks if reference is None else model.check_tokens(reference)
        _, cache = model.run_with_cache(ref)
        mean_out = cache["result", l1][:, :, h1].mean((0, 1))
    store: dict[str, torch.Tensor] = {}

    def keep_src(result, hp):
        store["src"] = result[:, :, h1]

    def keep_resid(resid, hp):
        store["resid"] = resid

    def make(which):
        W = {"q": model.W_Q, "k": model.W_K, "v": model.W_V}[which][l2, h2]

        def fn(act, hp):  # act [batch, pos, head, d_head]
            removed = store["src"] if mean_out is None else store["src"] - mean_out
            x = _ln_in(model, store["resid"] - removed, l2)
            if which != "v" and cfg.positional == "shortformer":
                x = x + model.W_pos[: x.shape[1]]
            new = x @ W
            if cfg.biases:
                new = new + {"q": model.b_Q, "k": model.b_K, "v": model.b_V}[which][l2, h2]
            act = act.clone()
            act[:, :, h2] = new
            return act
        return fn

    hooks = [(("result", l1), keep_src), (("resid_pre", l2), keep_resid)] + [((k, l2), make(k)) for k in kinds]
    clean = _value(metric, model(toks), toks)
    ablated = _value(metric, model.run_with_hooks(toks, hooks), toks)
    return Effect(clean, ablated)


# ----------------------------------------------------------------------------------- patching
def _patch_prep(model, clean, corrupted, metric):
    _check_weights(model)
    c = model.check_tokens(clean)
    x = model.check_tokens(corrupted)
    if c.shape != x.shape:
        raise ValueError(f"clean and corrupted must have the same shape, got {tuple(c.shape)} and {tuple(x.shape)}")
    return c, x, metric or loss_metric


def _normalized(vals: torch.Tensor, clean: float, corrupt: float) -> torch.Tensor:
    den = clean - corrupt
    if den == 0:
        raise ValueError("normalize=True needs a metric that differs between the clean and corrupted runs")
    return (vals - corrupt) / den


@torch.no_grad()
def patch_heads(model: Transformer, clean, corrupted, metric: Metric | None = None, normalize: bool = False,
                max_elements: float = 2**26) -> torch.Tensor:
    """`Tensor[n_layers, n_heads]`: metric of the corrupted run with head (l, h)'s output (its z at
    every position) taken from the clean run (module docstring; `normalize` → fraction restored).
    The metric is evaluated against the *corrupted* tokens (pass a metric that ignores them, e.g. a
    logit difference, when the two inputs ask for different answers)."""
    c, x, metric = _patch_prep(model, clean, corrupted, metric)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    _, cache = model.run_with_cache(c)
    out = torch.zeros(L, H, dtype=torch.float64)
    for lay in range(L):
        zc = cache["z", lay]

        def edit(z, first, zc=zc):
            for i in range(z.shape[0]):
                z[i, :, :, first + i] = zc[:, :, first + i]

        out[lay] = torch.tensor(_copy_runs(model, x, ("z", lay), H, edit, metric, max_elements, f"patch heads {lay}"),
                                dtype=torch.float64)
    if normalize:
        out = _normalized(out, _value(metric, model(c), x), _value(metric, model(x), x))
    return out


@torch.no_grad()
def patch_residual(model: Transformer, clean, corrupted, metric: Metric | None = None, normalize: bool = False,
                   max_elements: float = 2**26) -> torch.Tensor:
    """`Tensor[n_layers, pos]`: metric of the corrupted run with the residual stream entering layer l
    (`resid_pre`, l = 0..n_layers-1) at one position replaced by the clean run's."""
    c, x, metric = _patch_prep(model, clean, corrupted, metric)
    L, P = model.cfg.n_layers, x.shape[1]
    _, cache = model.run_with_cache(c)
    out = torch.zeros(L, P, dtype=torch.float64)
    for lay in range(L):
        rc = cache["resid_pre", lay]

        def edit(r, first, rc=rc):  # r [copies, batch, pos, d_model]; copy i patches position first + i
            for i in range(r.shape[0]):
                r[i, :, first + i] = rc[:, first + i]

        out[lay] = torch.tensor(
            _copy_runs(model, x, ("resid_pre", lay), P, edit, metric, max_elements, f"patch resid {lay}"),
            dtype=torch.float64,
        )
    if normalize:
        out = _normalized(out, _value(metric, model(c), x), _value(metric, model(x), x))
    return out


# ----------------------------------------------------------------------------------- logit attribution
@dataclass
class LogitAttribution:
    """Every additive part of one logit (or logit difference), with the final LN scale frozen.

    heads `[..., n_layers, n_heads]`; attn_bias (b_O) and mlp `[..., n_layers]`; embed, pos_embed and
    bias (ln_final bias through W_U, plus b_U) `[...]`; leading dims = batch when batched.
    `total()` equals the model's logit.
    """

    heads: torch.Tensor
    embed: torch.Tensor
    pos_embed: torch.Tensor
    attn_bias: torch.Tensor
    mlp: torch.Tensor
    bias: torch.Tensor

    def total(self) -> torch.Tensor:
        return (self.heads.sum((-1, -2)) + self.embed + self.pos_embed + self.attn_bias.sum(-1)
                + self.mlp.sum(-1) + self.bias)


def _direction(model: Transformer, token) -> tuple[torch.Tensor, torch.Tensor]:
    """Unembedding direction `[d_model]` and its b_U part for a token id or an (a, b) difference."""
    V = model.cfg.d_vocab

    def one(t):
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < V:
            raise IndexError(f"token={t!r} is out of range: token ids are 0..{V - 1}")
        b = model.b_U[t] if model.cfg.biases else torch.zeros((), dtype=model.W_U.dtype, device=model.W_U.device)
        return model.W_U[:, t], b

    if isinstance(token, torch.Tensor):
        token = token.tolist()
    if isinstance(token, (tuple, list)):
        if len(token) != 2:
            raise ValueError(f"token={token!r}: pass an id or an (id, id) pair for a logit difference")
        (ua, ba), (ub, bb) = one(token[0]), one(token[1])
        return ua - ub, ba - bb
    return one(token)


@torch.no_grad()
def logit_attribution(model: Transformer, tokens, pos: int, token) -> LogitAttribution:
    """Split the logit of `token` (an id, or `(a, b)` for logit[a] − logit[b]) at position `pos` into
    the direct contributions of every component (see `LogitAttribution`), the final LN's scale
    frozen at its value on `tokens`. `[pos]` / `[1, pos]` tokens give unbatched results."""
    _check_weights(model)
    toks = model.check_tokens(tokens)
    P = toks.shape[1]
    if isinstance(pos, bool) or not isinstance(pos, int) or not -P <= pos < P:
        raise IndexError(f"pos={pos!r} is out of range: these tokens have positions 0..{P - 1}")
    pos %= P
    u, bu = _direction(model, token)
    cfg = model.cfg
    L = cfg.n_layers
    _, cache = model.run_with_cache(toks)

    def read(x):  # x [batch, ..., d_model] at `pos` -> its contribution to the logit (LN scale frozen)
        if cfg.normalization is not None:
            x = x - x.mean(-1, keepdim=True)
            scale = cache["scale"][:, pos, 0]
            x = x / scale.view(-1, *([1] * (x.ndim - 1)))
            if cfg.normalization == "LN":
                x = x * model.ln_final_w
        return x @ u

    heads = torch.stack([read(cache["result", lay][:, pos]) for lay in range(L)], 1)  # [batch, L, H]
    B = toks.shape[0]
    zeros_b = torch.zeros(B, dtype=u.dtype, device=u.device)
    embed = read(cache["embed"][:, pos])
    pos_embed = read(cache["pos_embed"][:, pos]) if cfg.positional == "standard" else zeros_b
    if cfg.biases:
        attn_bias = torch.stack([read(model.b_O[lay].expand(B, -1)) for lay in range(L)], 1)
    else:
        attn_bias = torch.zeros(B, L, dtype=u.dtype, device=u.device)
    if cfg.attn_only:
        mlp = torch.zeros(B, L, dtype=u.dtype, device=u.device)
    else:
        mlp = torch.stack([read(cache["mlp_out", lay][:, pos]) for lay in range(L)], 1)
    bias = bu + (model.ln_final_b @ u if cfg.normalization == "LN" else 0.0) + zeros_b
    res = LogitAttribution(heads, embed, pos_embed, attn_bias, mlp, bias)
    if torch.as_tensor(tokens).ndim == 1 or B == 1:
        res = LogitAttribution(*(getattr(res, f)[0] for f in ("heads", "embed", "pos_embed", "attn_bias", "mlp",
                                                                "bias")))
    return res


def direct_logit_attribution(model: Transformer, tokens, pos: int, token) -> torch.Tensor:
    """`Tensor[n_layers, n_heads]` (or `[batch, n_layers, n_heads]`): each head's direct contribution
    to the logit of `token` (id, or `(a, b)` for a logit difference) at position `pos`, final LN scale
    frozen. Together with the other parts of `logit_attribution` it sums to the logit."""
    return logit_attribution(model, tokens, pos, token).heads


# Results checked finite (an overflow to NaN/inf raises, naming where the forward pass first overflows);
# wrapped here rather than decorated so that each function's own definition stays as it reads above.
ablate_heads = finite_results("ablate_heads", effect_parts)(ablate_heads)
ablation_table = finite_results("ablation_table")(ablation_table)
ablate_path = finite_results("ablate_path", effect_parts)(ablate_path)
patch_heads = finite_results("patch_heads", tokens="corrupted")(patch_heads)
patch_residual = finite_results("patch_residual", axes=("layer", "position"), tokens="corrupted")(patch_residual)
