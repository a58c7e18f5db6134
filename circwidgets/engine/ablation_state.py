"""One forward pass under a combined ablation state: several heads ablated and several single
composition paths cut at the same time, returning the logits and the per-token loss (what an
interactive ablation view needs after every toggle).

Same definitions as `engine.interventions` (which answers one question at a time, as a scalar):

- a head is ablated on its `z` (`blocks.{l}.attn.hook_z`): "zero" sets it to 0, "mean" to its
  mean over the reference batch and positions (`interventions.ablate_heads(..., means="positions")`);
- a path cut `(src, dst, kind)` recomputes head dst's queries / keys / values (kind "q" / "k" / "v")
  from the residual stream entering dst's layer minus src's output `result`
  ("zero"), or minus `result - mean(result)` ("mean", mean of the clean run over the reference
  batch and positions), with dst's LayerNorm recomputed (`interventions.ablate_path`). Several cuts
  into the same (dst, kind) remove the sum of their sources. src's output is taken as it is in this
  run: a head that is also ablated has nothing left to remove.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ..model import Transformer
from . import _check
from ._check import check_layer_head
from .interventions import _ln_in
from .prep import _entry as _checked  # finiteness checked once per weights version, not per run

__all__ = ["AblatedRun", "PathCut", "ablated_run", "per_token_loss"]


@dataclass(frozen=True)
class PathCut:
    """Cut the path from head `src = (layer, head)` into head `dst`'s `kind` input ("q", "k", "v")."""

    src: tuple[int, int]
    dst: tuple[int, int]
    kind: str = "k"


def per_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy (nats) `[batch, pos - 1]`: entry i is `-log p(tokens[i + 1] | tokens[..i])`.
    Its mean is `interventions.loss_metric`."""
    x = logits[:, :-1]
    lp = (x if x.dtype in (torch.float32, torch.float64) else x.float()).log_softmax(-1)
    return -lp.gather(-1, tokens[:, 1:, None])[..., 0]


@dataclass
class AblatedRun:
    """Logits `[batch, pos, d_vocab]` and per-token loss `[batch, pos - 1]` of one (ablated) run."""

    tokens: torch.Tensor
    logits: torch.Tensor
    token_loss: torch.Tensor

    @property
    def loss(self) -> float:
        """Mean next-token loss (the default metric of `engine.interventions`)."""
        return float(self.token_loss.double().mean())

    def top(self, pos: int, k: int = 5, batch: int = 0) -> list[tuple[int, float, float]]:
        """The `k` most likely next tokens after position `pos`: `(token id, probability, logit)`."""
        P = self.logits.shape[1]
        if not -P <= pos < P:
            raise IndexError(f"pos={pos} is out of range: 0..{P - 1}")
        lg = self.logits[batch, pos].double()
        p = lg.softmax(-1)
        v, i = p.topk(min(k, p.shape[0]))
        return [(int(t), float(pp), float(lg[t])) for pp, t in zip(v.tolist(), i.tolist())]


def _cuts(model: Transformer, paths: Iterable) -> list[PathCut]:
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


@torch.no_grad()
def ablated_run(model: Transformer, tokens, heads: Iterable[tuple[int, int]] = (), paths: Iterable = (),
                kind: str = "zero", reference=None) -> AblatedRun:
    """Run `tokens` (`[batch, pos]` or `[pos]`) with `heads` ablated and `paths` cut (module docstring).

    kind: "zero" or "mean" (for heads and paths alike); reference: tokens for the means (default:
    `tokens`). With nothing ablated this is the model's own run.
    """
    if kind not in ("zero", "mean"):
        raise ValueError(f"kind={kind!r} must be 'zero' or 'mean'")
    _checked(model)
    toks = model.check_tokens(tokens)
    hs = sorted({check_layer_head(model, *lh) for lh in heads})
    cuts = _cuts(model, paths)
    cfg = model.cfg
    by_layer: dict[int, list[int]] = {}
    for lay, h in hs:
        by_layer.setdefault(lay, []).append(h)
    src_layers = sorted({c.src[0] for c in cuts})
    z_mean: dict[int, torch.Tensor] = {}
    res_mean: dict[int, torch.Tensor] = {}
    if kind == "mean" and (hs or cuts):
        ref = toks if reference is None else model.check_tokens(reference)
        _, cache = model.run_with_cache(ref)
        for lay in by_layer:
            z_mean[lay] = cache["z", lay].mean((0, 1))  # [head, d_head]
        for lay in src_layers:
            res_mean[lay] = cache["result", lay].mean((0, 1))  # [head, d_model]

    hooks = []
    for lay, hh in by_layer.items():
        def ablate(z, hp, lay=lay, hh=hh):
            z = z.clone()
            for h in hh:
                z[:, :, h] = 0.0 if kind == "zero" else z_mean[lay][h]
            return z
        hooks.append((("z", lay), ablate))

    store: dict = {}
    for lay in src_layers:
        def keep(result, hp, lay=lay):
            store[("result", lay)] = result
        hooks.append((("result", lay), keep))
    dst_layers = sorted({c.dst[0] for c in cuts})
    for lay in dst_layers:
        def keep_resid(resid, hp, lay=lay):
            store[("resid", lay)] = resid
        hooks.append((("resid_pre", lay), keep_resid))
    groups: dict[tuple[int, str], dict[int, list[tuple[int, int]]]] = {}
    for c in cuts:
        groups.setdefault((c.dst[0], c.kind), {}).setdefault(c.dst[1], []).append(c.src)
    W = {"q": model.W_Q, "k": model.W_K, "v": model.W_V}
    for (lay, which), per_head in groups.items():
        def recompute(act, hp, lay=lay, which=which, per_head=per_head):
            act = act.clone()
            resid = store[("resid", lay)]
            for h2, srcs in per_head.items():
                removed = 0.0
                for l1, h1 in srcs:
                    r = store[("result", l1)][:, :, h1]
                    removed = removed + (r if kind == "zero" else r - res_mean[l1][h1])
                x = _ln_in(model, resid - removed, lay)
                if which != "v" and cfg.positional == "shortformer":
                    x = x + model.W_pos[: x.shape[1]]
                new = x @ W[which][lay, h2]
                if cfg.biases:
                    new = new + {"q": model.b_Q, "k": model.b_K, "v": model.b_V}[which][lay, h2]
                act[:, :, h2] = new
            return act
        hooks.append(((which, lay), recompute))

    logits = model.run_with_hooks(toks, hooks) if hooks else model(toks)
    _check.check_finite_output("ablated run: logits", logits, axes=("batch", "position"), model=model, tokens=toks)
    return AblatedRun(tokens=toks, logits=logits, token_loss=per_token_loss(logits, toks))


def logit_diff_metric(pos: int, good: int, bad: int | None = None):
    """A patching metric: `logit[good] - logit[bad]` at position `pos` (just `logit[good]` when `bad`
    is None or equal to `good`), averaged over the batch. Ignores the tokens it is given, so it
    can score runs on the corrupted input against the clean answer."""

    def metric(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        x = logits[:, pos].double()
        v = x[:, good]
        if bad is not None and bad != good:
            v = v - x[:, bad]
        return v.mean()

    return metric
