"""The activation functions on an activation source (`circwidgets.model.nnsight_source`): an nnsight
`LanguageModel` (locally, on several GPUs with `device_map="auto"`, or remote with `remote=True`), a
Hugging Face model, or a lazy checkpoint (`model.lazy_source`: the forward pass layer by layer).
`patterns`, `interventions` and `heads` call into this module (or the source) when handed one.

Each function asks the source for what it needs only: one layer's pattern for one head, the metric's
value (computed inside the trace, next to the model) for ablation and patching, a `[layer, head]`
table for direct logit attribution. Definitions are the engine's (docs/ARCHITECTURE.md): zero
ablation sets a head's `z` to 0, mean ablation to its mean over a reference (whose z is sent back by
one more trace); patching copies one head's clean `z` (every position) into the corrupted run; a path
cut recomputes the later head's q/k/v from the residual stream minus the earlier head's write (inside
the trace); direct logit attribution freezes the final norm's scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..model.nnsight_source import TransformerSource, as_source

__all__ = ["ablate_heads", "ablate_path", "ablated_run", "ablation_table", "attention_patterns",
           "direct_logit_attribution", "head_pattern", "patch_heads", "patch_residual", "patching_report"]


def _check_layer_head(cfg, layer: int, head: int) -> tuple[int, int]:
    for name, v, n in (("layer", layer, cfg.n_layers), ("head", head, cfg.n_heads)):
        if isinstance(v, bool) or not isinstance(v, int) or not -n <= v < n:
            raise IndexError(f"{name}={v!r} is out of range: this model has {name}s 0..{n - 1}")
    return layer % cfg.n_layers, head % cfg.n_heads


def head_pattern(model, tokens, layer: int, head: int, remote: bool = False) -> torch.Tensor:
    """One head's pattern `[query, key]` on one sequence: only that layer's pattern leaves the trace."""
    src = as_source(model, remote)
    layer, head = _check_layer_head(src.cfg, layer, head)
    toks = src.check_tokens(tokens)
    if toks.shape[0] != 1:
        raise ValueError(f"tokens must be one sequence, got a batch of {toks.shape[0]}")
    return src.patterns(toks, [layer])[layer][0, head]


def attention_patterns(model, tokens, dtype: torch.dtype | None = None, remote: bool = False):
    """`patterns.attention_patterns` on a source: every layer's pattern and value norms (one trace; the
    norms are taken where the values are, so one number per key and head leaves it)."""
    from .patterns import AttentionData

    src = as_source(model, remote)
    toks = src.check_tokens(tokens)
    if toks.shape[0] != 1:
        raise ValueError(f"tokens must be one sequence, got a batch of {toks.shape[0]}")
    cfg = src.cfg
    pats, norms = src.patterns_and_value_norms(toks, list(range(cfg.n_layers)))
    pattern = torch.stack([pats[l][0] for l in range(cfg.n_layers)]).to(dtype or torch.float32)
    v_norm = torch.stack([norms[l][0] for l in range(cfg.n_layers)]).to(pattern.dtype)
    from ._check import check_finite_output

    check_finite_output("attention patterns", pattern)  # (a source's weights are not checked beforehand)
    check_finite_output("value norms", v_norm)
    return AttentionData(pattern=pattern, v_norm=v_norm, tokens=toks[0].clone())


def _by_layer(cfg, heads) -> dict[int, list[int]]:
    if isinstance(heads, tuple) and len(heads) == 2 and all(isinstance(x, int) for x in heads):
        heads = [heads]
    out: dict[int, list[int]] = {}
    for lh in heads:
        if not (isinstance(lh, (tuple, list)) and len(lh) == 2):
            raise ValueError(f"heads must be a list of (layer, head) pairs, got {lh!r}")
        l, h = _check_layer_head(cfg, lh[0], lh[1])
        out.setdefault(l, []).append(h)
    return out


def _replace(hs: list[int], kind: str, z_mean: torch.Tensor | None):
    """The edit of one layer's z `[batch, pos, head, d_head]`: heads `hs` set to 0 ("zero") or to their
    reference mean ("mean": `z_mean [head, d_head]`, or `[pos, head, d_head]` for means="batch")."""
    from .interventions import _replacement

    def edit(z: torch.Tensor) -> torch.Tensor:
        for h in hs:
            r = _replacement(z_mean, kind, z.shape[1], h)
            z[..., h, :] = r.to(z.device, z.dtype) if isinstance(r, torch.Tensor) else r
        return z
    return edit


def _copy_values(src, toks: torch.Tensor, n: int, edits_of, metric, max_elements: float, desc: str) -> list[float]:
    """The metric of `n` edited runs of `toks` on a source, several per pass (per trace): the copies stacked on the
    batch axis, as the engine's `interventions._copy_runs` (`max_elements` bounds what they hold at once:
    `interventions._copies_per_run`).
    `edits_of(i) -> (z edits, resid edits)` gives copy i's `{layer: fn}` edits (as `run_state` takes them); each
    applies to its copy's rows only. One value per copy leaves a pass: the metric's mean over that copy's batch.
    A lazy checkpoint reads its layers once per pass, and a remote model answers one request per pass."""
    from ._progress import tqdm
    from .interventions import _copies_per_run

    B = toks.shape[0]
    step = _copies_per_run(src, toks, n, max_elements)
    vals: list[float] = []

    def rows(per):  # one layer's edits of several copies, each on its copy's rows
        def edit(x):
            for i, fn in per:
                x[i * B:(i + 1) * B] = fn(x[i * B:(i + 1) * B].clone()).to(x.dtype)
            return x
        return edit

    for s in tqdm(range(0, n, step), desc=desc, disable=n // step < 8, leave=False):
        c = min(step, n - s)
        per_z: dict[int, list] = {}
        per_resid: dict[int, list] = {}
        for i in range(c):
            z_edits, resid_edits = edits_of(s + i)
            for layer, fn in z_edits.items():
                per_z.setdefault(layer, []).append((i, fn))
            for layer, fn in resid_edits.items():
                per_resid.setdefault(layer, []).append((i, fn))

        def per_copy(lg, t, c=c):
            return torch.stack([torch.as_tensor(metric(lg[i * B:(i + 1) * B], t[:B])).double().mean()
                                for i in range(c)])

        out = src.run_state(toks.repeat(c, 1), {l: rows(p) for l, p in per_z.items()}, fn=per_copy,
                            resid_edits={l: rows(p) for l, p in per_resid.items()})
        vals += torch.as_tensor(out).double().flatten().tolist()
    return vals


def _engine_model(src):
    """Our own `Transformer` behind a source, or None (the engine runs it with hooks, copies batched)."""
    from ..model.nnsight_source import TransformerSource

    return src.model if isinstance(src, TransformerSource) else None


@torch.no_grad()
def ablate_heads(model, tokens, heads: Sequence[tuple[int, int]], kind: str = "zero", metric=None,
                 remote: bool = False, reference=None, means: str = "positions"):
    """`interventions.ablate_heads` on a source: `Effect(clean, ablated)` of `metric` (default loss).

    kind "zero": one trace (the clean and the ablated run as two copies of the batch, when their logits fit
    in 2^26 values; else two), shipping back two numbers. kind "mean": the engine's definition
    (each head's z replaced by its mean over `reference`, default `tokens`: over batch and positions,
    or per position with means="batch"), one more trace that ships back the reference's z of the
    ablated heads' layers (`[batch, pos, head, d_head]` each) to take the means here."""
    from .interventions import Effect, _check_kind, loss_metric

    _check_kind(kind, means)
    src = as_source(model, remote)
    toks = src.check_tokens(tokens)
    metric = metric or loss_metric
    by_layer = _by_layer(src.cfg, heads)
    z_mean: dict[int, torch.Tensor] = {}
    if kind == "mean" and by_layer:
        ref = toks if reference is None else src.check_tokens(reference)
        _, zs = src.run(ref, save_z=tuple(sorted(by_layer)))
        z_mean = {l: z.mean(0) if means == "batch" else z.mean((0, 1)) for l, z in zs.items()}
    edits = {l: _replace(hs, kind, z_mean.get(l)) for l, hs in by_layer.items()}
    if _engine_model(src) is not None:  # our own model: two hooked runs
        return Effect(src.run(toks, metric=metric)[0], src.run(toks, edits=edits, metric=metric)[0])
    # the clean and the ablated run as two copies of the batch in one pass (trace), when their logits fit
    clean, ablated = _copy_values(src, toks, 2, lambda i: ({} if i == 0 else edits, {}), metric, 2**26,
                                  "ablate heads")
    return Effect(clean, ablated)


def _patched_heads(src, c: torch.Tensor, x: torch.Tensor, metric, max_elements: float) -> torch.Tensor:
    """`[n_layers, n_heads]` metric of the corrupted run `x` with each head's z from the clean run `c`."""
    L, H = src.cfg.n_layers, src.cfg.n_heads
    _, zs = src.run(c, metric=None, save_z=tuple(range(L)))

    def edits_of(i):
        l, h = divmod(i, H)

        def edit(z, zc=zs[l], h=h):
            z[..., h, :] = zc[..., h, :].to(z.device, z.dtype)
            return z
        return {l: edit}, {}

    return torch.tensor(_copy_values(src, x, L * H, edits_of, metric, max_elements, "patch heads"),
                        dtype=torch.float64).view(L, H)


def _patched_resid(src, c: torch.Tensor, x: torch.Tensor, metric, max_elements: float) -> torch.Tensor:
    """`[n_layers, pos]` metric of the corrupted run `x` with the residual stream entering layer l at one
    position from the clean run `c`."""
    L, P = src.cfg.n_layers, x.shape[1]
    resid = src.resid_pre(c)

    def edits_of(i):
        l, p = divmod(i, P)

        def edit(r, rc=resid[l], p=p):
            r[:, p] = rc[:, p].to(r.device, r.dtype)
            return r
        return {}, {l: edit}

    return torch.tensor(_copy_values(src, x, L * P, edits_of, metric, max_elements, "patch residual"),
                        dtype=torch.float64).view(L, P)


@torch.no_grad()
def patch_heads(model, clean, corrupted, metric=None, normalize: bool = False, remote: bool = False,
                max_elements: float = 2**26) -> torch.Tensor:
    """`interventions.patch_heads` on a source: `[n_layers, n_heads]` metric of the corrupted run with
    head (l, h)'s clean `z` patched in: one trace for the clean z, then the heads' runs as copies of the
    batch, several per trace (`_copy_values`), each sending back one value per copy."""
    from . import interventions
    from .interventions import _check_max_elements, _normalized, loss_metric

    _check_max_elements(max_elements)  # before any pass
    src = as_source(model, remote)
    if (eager := _engine_model(src)) is not None:
        return interventions.patch_heads(eager, clean, corrupted, metric, normalize, max_elements)
    c, x = src.check_tokens(clean), src.check_tokens(corrupted)
    if c.shape != x.shape:
        raise ValueError(f"clean and corrupted must have the same shape, got {tuple(c.shape)} and {tuple(x.shape)}")
    metric = metric or loss_metric
    out = _patched_heads(src, c, x, metric, max_elements)
    if normalize:
        corrupt_value = src.run(x, metric=metric)[0]
        clean_on_x = src.run(c, metric=lambda lg, t: metric(lg, x.to(lg.device)))[0]
        out = _normalized(out, clean_on_x, corrupt_value)
    return out


@torch.no_grad()
def direct_logit_attribution(model, tokens, pos: int, token, remote: bool = False) -> torch.Tensor:
    """`interventions.direct_logit_attribution` on a source: `[n_layers, n_heads]` (batched: `[batch, ...]`),
    computed inside the trace (one `[batch, layer, head]` table leaves it)."""
    src = as_source(model, remote)
    toks = src.check_tokens(tokens)
    P = toks.shape[1]
    if isinstance(pos, bool) or not isinstance(pos, int) or not -P <= pos < P:
        raise IndexError(f"pos={pos!r} is out of range: these tokens have positions 0..{P - 1}")
    V = src.cfg.d_vocab
    for t in (token if isinstance(token, (tuple, list)) else [token]):
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < V:
            raise IndexError(f"token={t!r} is out of range: token ids are 0..{V - 1}")
    if isinstance(src, TransformerSource):  # our own model: the engine's exact attribution, no trace needed
        from .interventions import logit_attribution

        res = logit_attribution(src.model, toks, pos % P, token).heads
        res = res if res.ndim == 3 else res[None]
    else:
        res = src.head_logit_attribution(toks, pos % P, src.unembed_direction(token))
    return res[0] if toks.shape[0] == 1 else res


@torch.no_grad()
def ablate_path(model, tokens, src: tuple[int, int], dst: tuple[int, int], kind="k", ablation: str = "zero",
                metric=None, reference=None, remote: bool = False):
    """`interventions.ablate_path` on an nnsight / Hugging Face source or a lazy checkpoint: the same cut
    (dst's queries / keys / values recomputed, inside the trace, from the residual entering dst's layer
    minus src's write, or minus its deviation from the reference mean, through the layer's first norm),
    `Effect(clean, ablated)` with `Effect.notes` for grouped K/V. Mean ablation: one more trace sends
    back src's layer's z on the reference."""
    from .interventions import Effect, PathCut, loss_metric

    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    if not kinds or any(k not in ("q", "k", "v") for k in kinds):
        raise ValueError(f"kind={kind!r} must be 'q', 'k', 'v' or a sequence of them")
    if ablation not in ("zero", "mean"):
        raise ValueError(f"ablation={ablation!r} must be 'zero' or 'mean'")
    source = _state_source(model, remote)
    source.check_cuts_supported()
    cfg = source.cfg
    l1, h1 = _check_layer_head(cfg, *src)
    l2, h2 = _check_layer_head(cfg, *dst)
    if l1 >= l2:
        raise ValueError(f"src={src!r} must be in an earlier layer than dst={dst!r}")
    toks = source.check_tokens(tokens)
    metric = metric or loss_metric
    cuts = [PathCut((l1, h1), (l2, h2), k) for k in dict.fromkeys(kinds)]
    groups = _cut_groups(cfg, cuts)
    res_mean = None
    if ablation == "mean":
        ref = toks if reference is None else source.check_tokens(reference)
        res_mean = source.reference_means(ref, (), [(l1, h1)])[1]
    clean, _ = source.run(toks, metric=metric)
    from .interventions import kv_group_notes

    return Effect(clean, source.run_cuts(toks, groups, metric, res_mean), notes=kv_group_notes(source, cuts))


def _state_source(model, remote: bool = False):
    """The activation source of a lazy checkpoint / nnsight / Hugging Face model: one that takes path cuts,
    `run_state` and `resid_pre` (our own `Transformer` is not sent here: the engine runs it with hooks)."""
    from ..model.lazy_source import LazySource
    from ..model.nnsight_source import NNsightSource

    src = as_source(model, remote)
    if not isinstance(src, (NNsightSource, LazySource)):
        raise NotImplementedError(f"{type(src).__name__}: these passes run on nnsight / Hugging Face models and lazy "
                                  "checkpoints; our own Transformer takes the engine's functions directly")
    return src


def _cut_groups(cfg, cuts) -> dict:
    """`{(dst layer, kind): {stored head: [src heads]}}` of `PathCut`s, as the sources' `run_state` takes them
    (grouped K/V: a k / v cut recomputes dst's shared K/V head)."""
    groups: dict = {}
    for c in cuts:
        (l2, h2), k = c.dst, c.kind
        stored = cfg.kv_head_of(h2) if cfg.grouped_kv and k != "q" else h2
        srcs = groups.setdefault((l2, k), {}).setdefault(stored, [])
        if c.src not in srcs:
            srcs.append(c.src)
    return groups


@torch.no_grad()
def ablated_run(model, tokens, heads: Sequence[tuple[int, int]] = (), paths=(), kind: str = "zero", reference=None,
                top_k: int = 5, remote: bool = False):
    """`ablation_state.ablated_run` on an nnsight / Hugging Face source or a lazy checkpoint: one forward pass
    with `heads` ablated (z set to 0, or to its mean over `reference`'s batch and positions) and `paths` cut
    (as `ablate_path`), together. What leaves the pass is the compact run (`keep_logits=False`): the per-token
    loss and the `top_k` predictions of every position, computed next to the model (inside the trace), not the
    `[batch, pos, d_vocab]` logits. Mean ablation: one more pass for the reference's means."""
    from . import _check
    from ._check import check_count
    from .ablation_state import AblatedRun
    from .interventions import kv_group_notes, path_cuts

    if kind not in ("zero", "mean"):
        raise ValueError(f"kind={kind!r} must be 'zero' or 'mean'")
    src = _state_source(model, remote)
    cfg = src.cfg
    toks = src.check_tokens(tokens)
    hs = sorted({_check_layer_head(cfg, *lh) for lh in heads})
    cuts = list(dict.fromkeys(path_cuts(src, paths)))
    if cuts:
        src.check_cuts_supported()
    ref = toks if reference is None else src.check_tokens(reference)
    by_layer = _by_layer(cfg, hs)
    z_mean: dict[int, torch.Tensor] = {}
    res_mean = None
    if kind == "mean" and (by_layer or cuts):  # one pass over the reference: the heads' z and the cuts' sources'
        # writes (before any ablation, as the engine's)
        z_mean, res_mean = src.reference_means(ref, tuple(sorted(by_layer)), sorted({c.src for c in cuts}))
        res_mean = res_mean or None
    edits = {l: _replace(h, kind, z_mean.get(l)) for l, h in by_layer.items()}
    k = min(check_count(top_k, "top_k", lo=0), cfg.d_vocab)
    packed = src.run_state(toks, edits, _cut_groups(cfg, cuts), res_mean, fn=lambda lg, t: _compact(lg, t, k))
    packed = packed.double()
    P = toks.shape[1]
    _check.check_finite_output("ablated run: logits", packed[..., 0], axes=("batch", "position"))
    return AblatedRun(tokens=toks, logits=None, token_loss=packed[:, :P - 1, 1].float(),
                      notes=kv_group_notes(src, cuts), top_ids=packed[..., 2:2 + k].long(),
                      top_probs=packed[..., 2 + k:2 + 2 * k], top_logits=packed[..., 2 + 2 * k:])


def _compact(logits: torch.Tensor, toks: torch.Tensor, k: int) -> torch.Tensor:
    """Float64 `[batch, pos, 2 + 3k]` of logits `[batch, pos, d_vocab]`: per position 0 where its logits are
    all finite (NaN where not), the next-token loss (`interventions.per_token_loss`; 0 at the last position),
    the top-k token ids, probabilities and logits. One tensor, so that one value leaves a (remote) trace."""
    from .interventions import per_token_loss

    B, P, _ = logits.shape
    out = torch.zeros(B, P, 2 + 3 * k, dtype=torch.float64, device=logits.device)
    out[..., 0] = torch.where(logits.isfinite().all(-1), 0.0, float("nan"))
    out[:, :P - 1, 1] = per_token_loss(logits, toks).double()
    lg = logits.double()
    p, i = lg.softmax(-1).topk(k, dim=-1)
    out[..., 2:2 + k], out[..., 2 + k:2 + 2 * k], out[..., 2 + 2 * k:] = i.double(), p, lg.gather(-1, i)
    return out


@torch.no_grad()
def ablation_table(model, tokens, kind: str = "zero", metric=None, reference=None, remote: bool = False,
                   max_elements: float = 2**26) -> torch.Tensor:
    """`interventions.ablation_table` on a source: `[n_layers, n_heads]` effect (ablated − clean) of ablating
    each head alone (zero, or its mean over `reference`'s batch and positions): one clean pass, one more for
    the means, and the heads' runs as copies of the batch, several per pass (`_copy_values`); each pass
    sends back one value per copy."""
    from . import interventions
    from .interventions import _check_max_elements, loss_metric

    if kind not in ("zero", "mean"):
        raise ValueError(f"kind={kind!r} must be 'zero' or 'mean'")
    _check_max_elements(max_elements)  # before any pass
    src = as_source(model, remote)
    if (eager := _engine_model(src)) is not None:
        return interventions.ablation_table(eager, tokens, kind, metric, reference, max_elements=max_elements)
    toks = src.check_tokens(tokens)
    metric = metric or loss_metric
    L, H = src.cfg.n_layers, src.cfg.n_heads
    z_mean: dict[int, torch.Tensor] = {}
    if kind == "mean":
        ref = toks if reference is None else src.check_tokens(reference)
        z_mean = {l: z.mean((0, 1)) for l, z in src.run(ref, save_z=tuple(range(L)))[1].items()}
    clean = src.run(toks, metric=metric)[0]

    def edits_of(i):
        l, h = divmod(i, H)
        return {l: _replace([h], kind, z_mean.get(l))}, {}

    vals = _copy_values(src, toks, L * H, edits_of, metric, max_elements, "ablation table")
    return torch.tensor(vals, dtype=torch.float64).view(L, H) - clean


@torch.no_grad()
def patch_residual(model, clean, corrupted, metric=None, normalize: bool = False, remote: bool = False,
                   max_elements: float = 2**26) -> torch.Tensor:
    """`interventions.patch_residual` on a source: `[n_layers, pos]` metric of the corrupted run with the
    residual stream entering layer l at one position replaced by the clean run's: one pass for the clean
    stream, then the (layer, position) runs as copies of the batch, several per pass (`_copy_values`), each
    sending back one value per copy."""
    from .interventions import _check_max_elements, _normalized, loss_metric

    _check_max_elements(max_elements)  # before any pass
    src = _state_source(model, remote)
    c, x = src.check_tokens(clean), src.check_tokens(corrupted)
    if c.shape != x.shape:
        raise ValueError(f"clean and corrupted must have the same shape, got {tuple(c.shape)} and {tuple(x.shape)}")
    metric = metric or loss_metric
    out = _patched_resid(src, c, x, metric, max_elements)
    if normalize:
        out = _normalized(out, src.run(c, metric=lambda lg, t: metric(lg, x.to(lg.device)))[0],
                          src.run(x, metric=metric)[0])
    return out


@torch.no_grad()
def patching_report(model, clean, corrupted, pos: int = -1, remote: bool = False, max_elements: float = 2**26):
    """`interventions.patching_report` on a source: the metric chosen as there (`logit[good] − logit[bad]` at
    `pos`, from the batch-averaged logits there of the clean and the corrupted run: one `[d_vocab]` row leaves
    each of the two passes, and the metric's clean and corrupted values are read off the same rows), then the
    runs of `patch_heads` and `patch_residual` on the source, normalised by those two values."""
    from ._check import check_position
    from .interventions import PatchingReport, _check_max_elements, _normalized, logit_diff_metric

    _check_max_elements(max_elements)  # before any pass
    src = _state_source(model, remote)
    c, x = src.check_tokens(clean), src.check_tokens(corrupted)
    if c.shape != x.shape:
        raise ValueError(f"clean and corrupted must have the same shape, got {tuple(c.shape)} and {tuple(x.shape)}")
    p = check_position(pos, c.shape[1])

    def row(toks) -> torch.Tensor:  # the batch-averaged logits at p, float64 `[d_vocab]`
        return src.run_state(toks, fn=lambda lg, t: lg[:, p].double().mean(0)).double()

    clean_row, corrupt_row = row(c), row(x)
    good, bad = int(clean_row.argmax()), int(corrupt_row.argmax())
    metric = logit_diff_metric(pos, good, bad)

    def value(r: torch.Tensor) -> float:  # the metric (a batch mean of a logit difference) from the mean row
        return float(r[good] - (r[bad] if bad != good else 0.0))

    cm, xm = value(clean_row), value(corrupt_row)
    norm = abs(cm - xm) > 1e-9
    heads, resid = _patched_heads(src, c, x, metric, max_elements), _patched_resid(src, c, x, metric, max_elements)
    if norm:
        heads, resid = _normalized(heads, cm, xm), _normalized(resid, cm, xm)
    return PatchingReport(heads=heads, resid=resid, pos=pos, good=good, bad=bad, clean=cm, corrupted=xm,
                          normalized=norm)
