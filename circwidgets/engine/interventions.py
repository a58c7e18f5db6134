"""Interventions (docs/ARCHITECTURE.md §9): ablation of heads and of single composition paths, activation
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

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from ..model import Transformer
from ..model.nnsight_source import is_source
from . import _check
from ._check import check_layer_head, check_position, effect_parts, finite_results
from .prep import _entry as _check_weights  # finiteness checked once per weight version (cached)

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Hook = tuple[tuple[str, int], Callable]  # (hook point, fn), as `Transformer.run_with_hooks` takes them


def per_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy (nats) `[batch, pos - 1]`: entry i is `-log p(tokens[i + 1] | tokens[..i])`
    (log-softmax in float32 at least)."""
    if logits.ndim != 3 or tokens.ndim != 2 or tuple(logits.shape[:2]) != tuple(tokens.shape):
        raise ValueError(f"logits {tuple(logits.shape)} do not fit tokens {tuple(tokens.shape)}: expected "
                         f"logits [batch, pos, d_vocab] and tokens [batch, pos] of the same batch and pos")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= logits.shape[-1]):
        raise ValueError(f"tokens contains ids outside [0, {logits.shape[-1]}) (min {int(tokens.min())}, "
                         f"max {int(tokens.max())})")
    x = logits[:, :-1]
    lp = (x if x.dtype in (torch.float32, torch.float64) else x.float()).log_softmax(-1)
    return -lp.gather(-1, tokens[:, 1:, None])[..., 0]


def loss_metric(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) over positions 0..pos-2 and the batch: `per_token_loss(...).mean()`."""
    if tokens.shape[1] < 2:
        raise ValueError("the default loss metric needs tokens with at least 2 positions")
    return per_token_loss(logits, tokens).mean()


def logit_diff_metric(pos: int, good: int, bad: int | None = None) -> Metric:
    """A patching metric: `logit[good] - logit[bad]` at position `pos` (just `logit[good]` when `bad`
    is None or equal to `good`), averaged over the batch. Ignores the tokens it is given, so it
    can score runs on the corrupted input against the clean answer."""

    for name, t in (("pos", pos), ("good", good), ("bad", bad)):
        if (t is not None or name != "bad") and _check.as_index(t) is None:
            raise TypeError(f"logit_diff_metric: {name}={t!r} must be an integer")

    def metric(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        p = check_position(pos, logits.shape[1])
        V = logits.shape[-1]
        for name, t in (("good", good), ("bad", bad)):  # a negative id would silently index from the end
            if t is not None:
                _check._index(t, 0, V - 1, name, "token ids are")
        x = logits[:, p].double()
        v = x[:, good]
        if bad is not None and bad != good:
            v = v - x[:, bad]
        return v.mean()

    return metric


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
    """Metric on the clean run, on the intervened run, and `delta = intervened − clean`. `notes`: what
    else the intervention touched (e.g. the query heads sharing a grouped-query K/V head that a cut
    changed, `kv_group_notes`)."""

    clean: float
    intervened: float
    notes: tuple[str, ...] = ()

    @property
    def delta(self) -> float:
        return self.intervened - self.clean


@dataclass(frozen=True)
class PathCut:
    """Cut the path from head `src = (layer, head)` into head `dst`'s `kind` input ("q", "k", "v")."""

    src: tuple[int, int]
    dst: tuple[int, int]
    kind: str = "k"


def path_cuts(model: Transformer, paths: Iterable) -> list[PathCut]:
    """Checked `PathCut`s from `PathCut`s, `(src, dst, kind)` or `(l1, h1, l2, h2, kind)` tuples."""
    out = []
    for c in paths:
        if not isinstance(c, PathCut):
            if isinstance(c, (tuple, list)) and len(c) == 5:
                c = PathCut((c[0], c[1]), (c[2], c[3]), c[4])
            elif isinstance(c, (tuple, list)) and len(c) == 3:
                c = PathCut(tuple(c[0]), tuple(c[1]), c[2])
            else:
                raise ValueError(f"a path cut is PathCut(src, dst, kind), (src, dst, kind) or "
                                 f"(l1, h1, l2, h2, kind), got {c!r}")
        s, d = check_layer_head(model, *c.src), check_layer_head(model, *c.dst)
        if c.kind not in ("q", "k", "v"):
            raise ValueError(f"path kind={c.kind!r} must be 'q', 'k' or 'v'")
        if not s[0] < d[0]:
            raise ValueError(f"path source {s} must be in an earlier layer than its destination {d}")
        out.append(PathCut(s, d, c.kind))
    return out


# ----------------------------------------------------------------------------------- ablation hooks
def _check_kind(kind: str, means: str) -> None:
    if kind not in ("zero", "mean"):
        raise ValueError(f"kind={kind!r} must be 'zero' or 'mean'")
    if means not in ("positions", "batch"):
        raise ValueError(f"means={means!r} must be 'positions' or 'batch'")


@torch.no_grad()
def _reference_means(model: Transformer, reference: torch.Tensor, z_layers: Iterable[int],
                     result_layers: Iterable[int] = (), means: str = "positions"
                     ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """From one run of the reference: the mean z of every head of `z_layers` (`[head, d_head]`, or
    `[pos, head, d_head]` for means="batch") and the mean output `result` of every head of
    `result_layers` (`[head, d_model]`, over batch and positions)."""
    z_mean: dict[int, torch.Tensor] = {}
    res_mean: dict[int, torch.Tensor] = {}

    def grab_z(z, hp):
        z_mean[hp.layer()] = z.mean(0) if means == "batch" else z.mean((0, 1))

    def grab_result(result, hp):
        res_mean[hp.layer()] = result.mean((0, 1))

    hooks = ([(("z", lay), grab_z) for lay in sorted(set(z_layers))]
             + [(("result", lay), grab_result) for lay in sorted(set(result_layers))])
    if hooks:
        model.run_with_hooks(reference, fwd_hooks=hooks)
    return z_mean, res_mean


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


def _head_hooks(heads: Sequence[tuple[int, int]], kind: str, z_mean: dict[int, torch.Tensor]) -> list[Hook]:
    by_layer: dict[int, list[int]] = {}
    for lay, h in heads:
        by_layer.setdefault(lay, []).append(h)

    def make(lay):
        def ablate(z, hp):
            z = z.clone()
            for h in by_layer[lay]:
                z[:, :, h] = _replacement(z_mean.get(lay), kind, z.shape[1], h)
            return z
        return ablate

    return [(("z", lay), make(lay)) for lay in by_layer]


def kv_group_notes(model: Transformer, cuts: Sequence[PathCut]) -> tuple[str, ...]:
    """For grouped-query models: one note per shared K/V head that a cut into keys or values changes,
    naming the query heads that read it (the cut acts on all of them). Empty otherwise."""
    cfg = model.cfg
    if not cfg.grouped_kv:
        return ()
    seen: dict[tuple[int, str, int], list[tuple[int, int]]] = {}
    for c in cuts:
        if c.kind in ("k", "v"):
            seen.setdefault((c.dst[0], c.kind, cfg.kv_head_of(c.dst[1])), []).append(c.dst)
    notes = []
    for (lay, kind, kv), dsts in seen.items():
        group = cfg.kv_group(kv)
        named = ", ".join(f"L{lay}H{h}" for h in group)
        notes.append(f"{kind.upper()} head {kv} of layer {lay} is shared by query heads {named} (grouped-query "
                     f"attention): cutting the path into {', '.join(f'L{d[0]}H{d[1]}' for d in dsts)}'s "
                     f"{'keys' if kind == 'k' else 'values'} changes it for all of them")
    return tuple(notes)


def _path_hooks(model: Transformer, cuts: Sequence[PathCut], res_mean: dict[int, torch.Tensor] | None) -> list[Hook]:
    cfg = model.cfg
    store: dict[tuple[str, int], torch.Tensor] = {}

    def keeper(name):
        def keep(act, hp):
            store[(name, hp.layer())] = act
            if name == "result":  # what multiplies each head's output into the stream (a post-norm), once
                store[("factor", hp.layer())] = model.attn_write_factor(act, hp.layer())
        return keep

    hooks: list[Hook] = [(("result", lay), keeper("result")) for lay in sorted({c.src[0] for c in cuts})]
    hooks += [(("resid_pre", lay), keeper("resid_pre")) for lay in sorted({c.dst[0] for c in cuts})]
    # cuts grouped by the stored head they recompute: a query head, or (grouped-query K/V) the shared K/V
    # head, whose new keys / values every query head of its group then reads
    groups: dict[tuple[int, str], dict[int, list[tuple[int, int]]]] = {}
    for c in cuts:
        stored = cfg.kv_head_of(c.dst[1]) if cfg.grouped_kv and c.kind != "q" else c.dst[1]
        groups.setdefault((c.dst[0], c.kind), {}).setdefault(stored, []).append(c.src)

    def make(lay, which, per_head):
        def recompute(act, hp):  # act [batch, pos, head, d_head] (per query head)
            act = act.clone()
            for stored, srcs in per_head.items():
                removed = None
                for l1, h1 in srcs:
                    r = store[("result", l1)][:, :, h1]
                    r = r if res_mean is None else r - res_mean[l1][h1]
                    factor = store[("factor", l1)]
                    r = r if factor is None else r * factor
                    removed = r if removed is None else removed + r
                new = model.project_from_stream(store[("resid_pre", lay)] - removed, lay, which)[:, :, stored]
                readers = cfg.kv_group(stored) if cfg.grouped_kv and which != "q" else [stored]
                act[:, :, readers] = new[:, :, None].to(act.dtype)
            return act
        return recompute

    return hooks + [((which, lay), make(lay, which, per_head)) for (lay, which), per_head in groups.items()]


def ablation_hooks(model: Transformer, heads: Sequence[tuple[int, int]] = (), paths: Iterable = (),
                   kind: str = "zero", reference=None, means: str = "positions") -> list[Hook]:
    """Forward hooks (for `model.run_with_hooks`) that ablate `heads` and cut `paths` in one run: the
    one implementation behind `ablate_heads`, `ablate_path` and `ablation_state.ablated_run`.

    - a head is ablated on its z (module docstring; "mean": its mean over `reference`, per
      `means`);
    - a cut `PathCut(src, dst, kind)` recomputes head dst's queries / keys / values from the residual
      stream entering dst's layer minus src's output `result` ("zero"), or minus `result − mean(result)`
      ("mean": mean over the reference batch and positions), with ln1 recomputed (`model.normalize`).
      Several cuts into the same (dst, kind) remove the sum of their sources. src's output is taken as
      it is in this run: a head that is also ablated has nothing left to remove. The q/k norms (Qwen3,
      OLMo-2) are applied to the recomputed queries / keys, as in the forward pass. Through an RMS
      post-norm (Gemma 2/3, OLMo-2) src's write is its output times the block's frozen `w / rms`
      (`Transformer.attn_write_factor`); a LayerNorm post-norm is refused.
    - grouped-query attention: dst's keys and values come from a K/V head shared by its group, so a
      cut into "k" or "v" recomputes that shared head and changes the keys / values of every query
      head of the group (cuts into several heads of one group remove all their sources from it);
      `kv_group_notes(model, cuts)` says which heads that is (`Effect.notes` of `ablate_path`).

    `reference` (token ids) is needed only for kind "mean" (one reference run computes the means).
    """
    _check_kind(kind, means)
    hs = [check_layer_head(model, *lh) for lh in heads]
    cuts = path_cuts(model, paths)
    z_mean: dict[int, torch.Tensor] = {}
    res_mean: dict[int, torch.Tensor] | None = None
    if kind == "mean" and (hs or cuts):
        if reference is None:
            raise ValueError("kind='mean' needs reference tokens for the means")
        z_mean, res_mean = _reference_means(model, model.check_tokens(reference), {lay for lay, _ in hs},
                                            {c.src[0] for c in cuts}, means)
    return _head_hooks(hs, kind, z_mean) + (_path_hooks(model, cuts, res_mean) if cuts else [])


def _prep(model: Transformer, tokens, metric, reference, kind, means):
    _check_weights(model)
    _check_kind(kind, means)
    toks = model.check_tokens(tokens)
    ref = toks if reference is None else model.check_tokens(reference)
    return toks, ref, metric or loss_metric


@torch.no_grad()
def _effect(model: Transformer, toks: torch.Tensor, hooks: list[Hook], metric: Metric) -> Effect:
    clean = _value(metric, model(toks), toks)
    return Effect(clean, _value(metric, model.run_with_hooks(toks, hooks), toks))


# ----------------------------------------------------------------------------------- ablation
@torch.no_grad()
def ablate_heads(model: Transformer, tokens, heads: Sequence[tuple[int, int]], kind: str = "zero",
                 metric: Metric | None = None, reference=None, means: str = "positions") -> Effect:
    """Ablate the heads `[(layer, head), ...]` together; `Effect(clean, ablated)` of `metric`
    (default loss). kind "zero" | "mean" (module docstring)."""
    if is_source(model):  # nnsight / Hugging Face model: through traces
        from . import activations

        return activations.ablate_heads(model, tokens, heads, kind, metric, reference=reference, means=means)
    toks, ref, metric = _prep(model, tokens, metric, reference, kind, means)
    hooks = ablation_hooks(model, _heads(model, heads), kind=kind, reference=ref, means=means)
    return _effect(model, toks, hooks, metric)


def _check_max_elements(max_elements) -> None:
    if isinstance(max_elements, bool) or not isinstance(max_elements, (int, float)) or not max_elements >= 1:
        raise ValueError(f"max_elements={max_elements!r} must be a number >= 1 (values held at once)")


def _copies_per_run(model: Transformer, toks: torch.Tensor, n: int, max_elements: float) -> int:
    """Copies of `toks` a forward pass holds within `max_elements`: per token of a copy, the largest of its
    logits, 4 d_model (the widest activation) and its attention pattern rows (n_heads x pos)."""
    _check_max_elements(max_elements)
    cfg = model.cfg
    per_copy = toks.numel() * max(cfg.d_vocab, cfg.d_model * 4, cfg.n_heads * toks.shape[-1])
    return max(1, min(n, int(max_elements // max(per_copy, 1))))


@torch.no_grad()
def _copy_runs(model: Transformer, toks: torch.Tensor, hook_name, n: int, edit, metric: Metric,
               max_elements: float, desc: str) -> list[float]:
    """Run `n` edited copies of `toks` (stacked on the batch axis, several per forward pass);
    `edit(act_view [copies, batch, ...], first_copy)` modifies the hooked activation in place."""
    from ._progress import tqdm

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
    values the copies hold at once: logits, widest activation, attention patterns). A lazy checkpoint or an
    nnsight model: the same copies, through its passes (traces), one value per copy sent back (`activations`)."""
    if is_source(model):
        from . import activations

        if means != "positions":
            raise NotImplementedError("ablation_table on a lazy checkpoint or nnsight model takes means over the "
                                      "batch and positions only (means='positions')")
        return activations.ablation_table(model, tokens, kind, metric, reference, max_elements=max_elements)
    toks, ref, metric = _prep(model, tokens, metric, reference, kind, means)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    clean = _value(metric, model(toks), toks)
    mz = _reference_means(model, ref, range(L), means=means)[0] if kind == "mean" else {}
    out = torch.zeros(L, H, dtype=torch.float64)
    for lay in range(L):
        def edit(z, first, lay=lay):  # z [copies, batch, pos, head, d_head]; copy i ablates head first + i
            for i in range(z.shape[0]):
                z[i, :, :, first + i] = _replacement(mz.get(lay), kind, z.shape[2], first + i)

        vals = _copy_runs(model, toks, ("z", lay), H, edit, metric, max_elements, f"ablation layer {lay}")
        out[lay] = torch.tensor(vals, dtype=torch.float64) - clean
    return out


# ----------------------------------------------------------------------------------- path ablation
@torch.no_grad()
def ablate_path(model: Transformer, tokens, src: tuple[int, int], dst: tuple[int, int],
                kind: str | Sequence[str] = "k", ablation: str = "zero", metric: Metric | None = None,
                reference=None) -> Effect:
    """Remove one composition path: head `dst`'s keys ("k"), queries ("q") and/or values ("v") are
    computed from the residual stream *without* head `src`'s output, while everything else (the
    other inputs of `dst`, every other head, the residual stream itself) still sees it.

    `ablation="zero"` subtracts src's output `result [batch, pos, d_model]` from dst's input;
    `"mean"` replaces it by its mean over the reference batch and positions. The LayerNorm in front
    of `dst` (if any) is recomputed on the modified residual (`ablation_hooks`). src must be in an
    earlier layer. Returns `Effect(clean, ablated)` of `metric` (default loss). Grouped-query models:
    a K or V cut changes the shared K/V head of dst's group, so every query head of that group sees
    it; `Effect.notes` names them.
    """
    if is_source(model):  # nnsight / Hugging Face model: the cut inside the trace
        from . import activations

        return activations.ablate_path(model, tokens, src, dst, kind, ablation, metric, reference)
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
    cuts = [PathCut((l1, h1), (l2, h2), k) for k in dict.fromkeys(kinds)]
    hooks = ablation_hooks(model, paths=cuts, kind=ablation, reference=toks if reference is None else reference)
    eff = _effect(model, toks, hooks, metric or loss_metric)
    eff.notes = kv_group_notes(model, cuts)
    return eff


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
    if is_source(model):  # nnsight / Hugging Face model: through traces
        from . import activations

        return activations.patch_heads(model, clean, corrupted, metric, normalize, max_elements=max_elements)
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
def patch_kv_heads(model: Transformer, clean, corrupted, kind: str = "k", metric: Metric | None = None,
                   normalize: bool = False, max_elements: float = 2**26) -> torch.Tensor:
    """`Tensor[n_layers, n_kv_heads]`: metric of the corrupted run with one stored K (kind "k") or V
    ("v") head's activations (`hook_k` / `hook_v`, before rotary) taken from the clean run. In-memory
    models only (`patch_heads` also takes nnsight / Hugging Face ones).

    With grouped-query attention a stored K/V head is read by a group of query heads
    (`cfg.kv_group(kv_head)`): patching it patches what all of them read, as the model shares it.
    Without grouping this is one column per head. Otherwise as `patch_heads`."""
    if kind not in ("k", "v"):
        raise ValueError(f"kind={kind!r} must be 'k' or 'v'")
    c, x, metric = _patch_prep(model, clean, corrupted, metric)
    cfg = model.cfg
    L, K = cfg.n_layers, cfg.n_kv
    _, cache = model.run_with_cache(c)
    out = torch.zeros(L, K, dtype=torch.float64)
    for lay in range(L):
        act_c = cache[kind, lay]  # [batch, pos, n_heads, d_head]: the shared heads, repeated per query head

        def edit(a, first, act_c=act_c):  # a [copies, batch, pos, head, d_head]; copy i patches K/V head first + i
            for i in range(a.shape[0]):
                group = cfg.kv_group(first + i)
                a[i, :, :, group] = act_c[:, :, group]

        out[lay] = torch.tensor(_copy_runs(model, x, (kind, lay), K, edit, metric, max_elements,
                                           f"patch {kind} heads {lay}"), dtype=torch.float64)
    if normalize:
        out = _normalized(out, _value(metric, model(c), x), _value(metric, model(x), x))
    return out


@torch.no_grad()
def patch_residual(model: Transformer, clean, corrupted, metric: Metric | None = None, normalize: bool = False,
                   max_elements: float = 2**26) -> torch.Tensor:
    """`Tensor[n_layers, pos]`: metric of the corrupted run with the residual stream entering layer l
    (`resid_pre`, l = 0..n_layers-1) at one position replaced by the clean run's."""
    if is_source(model):  # a lazy checkpoint / nnsight model: copies batched through its passes
        from . import activations

        return activations.patch_residual(model, clean, corrupted, metric, normalize, max_elements=max_elements)
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


@dataclass
class PatchingReport:
    """Activation patching of one clean / corrupted pair, scored by the logit difference between the
    clean run's top token (`good`) and the corrupted run's (`bad`) at position `pos`.

    heads `[n_layers, n_heads]` (`patch_heads`) and resid `[n_layers, pos]` (`patch_residual`) are
    fractions of the clean metric restored when `normalized` (the metric differs between the two runs),
    else the metric of each patched run. `clean` / `corrupted`: the metric on the unpatched runs."""

    heads: torch.Tensor
    resid: torch.Tensor
    pos: int
    good: int
    bad: int
    clean: float
    corrupted: float
    normalized: bool


@torch.no_grad()
def patching_report(model: Transformer, clean, corrupted, pos: int = -1, max_elements: float = 2**26
                    ) -> PatchingReport:
    """Patch every head and every (layer, position) of the residual stream from `clean` into
    `corrupted`, with the metric chosen from the two runs: `logit[good] − logit[bad]` at `pos`, good and
    bad the top tokens of the clean and the corrupted run there (batch-averaged logits); just
    `logit[good]` when they agree. Normalised (fraction restored) unless the metric is the same on
    both runs."""
    if is_source(model):  # a lazy checkpoint / nnsight model: through passes (traces) that send back values only
        from . import activations

        return activations.patching_report(model, clean, corrupted, pos, max_elements=max_elements)
    c, x, _ = _patch_prep(model, clean, corrupted, None)
    check_position(pos, c.shape[1])  # the report keeps `pos` as given (-1 = the last)
    clean_logits, corrupt_logits = model(c), model(x)
    good = int(clean_logits[:, pos].double().mean(0).argmax())
    bad = int(corrupt_logits[:, pos].double().mean(0).argmax())
    metric = logit_diff_metric(pos, good, bad)
    cm, xm = _value(metric, clean_logits, c), _value(metric, corrupt_logits, x)
    norm = abs(cm - xm) > 1e-9
    return PatchingReport(heads=patch_heads(model, c, x, metric, normalize=norm, max_elements=max_elements),
                          resid=patch_residual(model, c, x, metric, normalize=norm, max_elements=max_elements),
                          pos=pos, good=good, bad=bad, clean=cm, corrupted=xm, normalized=norm)


# ----------------------------------------------------------------------------------- logit attribution
@dataclass
class LogitAttribution:
    """Every additive part of one logit (or logit difference), with the final norm's scale frozen (and
    post-norm scales, Gemma 2/3 / OLMo-2; a model with a final soft-cap: the logit before its tanh).

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

    def one(t):
        t = _check.check_token(model, t)
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
    pos = check_position(pos, P)
    u, bu = _direction(model, token)
    cfg = model.cfg
    L = cfg.n_layers
    _, cache = model.run_with_cache(toks)

    centre = cfg.normalization in ("LN", "LNPre")  # RMSNorm does not centre
    final_w = model._parameters.get("ln_final_w")
    final_b = model._parameters.get("ln_final_b")

    def read(x):  # x [batch, ..., d_model] at `pos` -> its contribution to the logit (final norm's scale frozen)
        if cfg.normalization is not None:
            x = x - x.mean(-1, keepdim=True) if centre else x
            scale = cache["scale"][:, pos, 0]
            x = x / scale.view(-1, *([1] * (x.ndim - 1)))
            if final_w is not None:
                x = x * final_w
        return x @ u

    def post(x, lay):  # a block's output through its post-norm (Gemma 2/3, OLMo-2), scale frozen
        if not cfg.post_norm:
            return x
        if centre:
            raise NotImplementedError("logit_attribution: LayerNorm post-norms are not supported (RMSNorm ones are)")
        scale = cache[f"blocks.{lay}.ln1_post.hook_scale"][:, pos, 0]
        return x / scale.view(-1, *([1] * (x.ndim - 1))) * model.ln1_post_w[lay]

    heads = torch.stack([read(post(cache["result", lay][:, pos], lay)) for lay in range(L)], 1)  # [batch, L, H]
    B = toks.shape[0]
    zeros_b = torch.zeros(B, dtype=u.dtype, device=u.device)
    embed = read(cache["embed"][:, pos])
    pos_embed = read(cache["pos_embed"][:, pos]) if cfg.positional == "standard" else zeros_b
    if cfg.biases:
        attn_bias = torch.stack([read(post(model.b_O[lay].expand(B, -1), lay)) for lay in range(L)], 1)
    else:
        attn_bias = torch.zeros(B, L, dtype=u.dtype, device=u.device)
    if cfg.attn_only:
        mlp = torch.zeros(B, L, dtype=u.dtype, device=u.device)
    else:
        mlp = torch.stack([read(cache["mlp_out", lay][:, pos]) for lay in range(L)], 1)
    bias = bu + (final_b @ u if final_b is not None else 0.0) + zeros_b
    res = LogitAttribution(heads, embed, pos_embed, attn_bias, mlp, bias)
    if torch.as_tensor(tokens).ndim == 1 or B == 1:
        res = LogitAttribution(*(getattr(res, f)[0] for f in ("heads", "embed", "pos_embed", "attn_bias", "mlp",
                                                                "bias")))
    return res


def direct_logit_attribution(model: Transformer, tokens, pos: int, token) -> torch.Tensor:
    """`Tensor[n_layers, n_heads]` (or `[batch, n_layers, n_heads]`): each head's direct contribution
    to the logit of `token` (id, or `(a, b)` for a logit difference) at position `pos`, final LN scale
    frozen. Together with the other parts of `logit_attribution` it sums to the logit."""
    if is_source(model):  # nnsight / Hugging Face model: through traces
        from . import activations

        return activations.direct_logit_attribution(model, tokens, pos, token)
    return logit_attribution(model, tokens, pos, token).heads


# Results checked finite (an overflow to NaN/inf raises, naming where the forward pass first overflows);
# wrapped here rather than decorated so that each function's own definition stays as it reads above.
ablate_heads = finite_results("ablate_heads", effect_parts)(ablate_heads)
ablation_table = finite_results("ablation_table")(ablation_table)
ablate_path = finite_results("ablate_path", effect_parts)(ablate_path)
patch_heads = finite_results("patch_heads", tokens="corrupted")(patch_heads)
patch_kv_heads = finite_results("patch_kv_heads", axes=("layer", "kv_head"), tokens="corrupted")(patch_kv_heads)
patch_residual = finite_results("patch_residual", axes=("layer", "position"), tokens="corrupted")(patch_residual)


def _attribution_parts(a: LogitAttribution) -> dict:
    """`finite_results` parts of a `LogitAttribution` (a leading batch dim when batched)."""
    b = ("batch",) if a.heads.ndim == 3 else ()
    return {"heads": (a.heads, (*b, "layer", "head")), "embed": (a.embed, b), "pos_embed": (a.pos_embed, b),
            "attn_bias": (a.attn_bias, (*b, "layer")), "mlp": (a.mlp, (*b, "layer")), "bias": (a.bias, b)}


logit_attribution = finite_results("logit_attribution", _attribution_parts)(logit_attribution)
