"""One forward pass under a combined ablation state: several heads ablated and several single
composition paths cut at the same time, returning the logits and the per-token loss (what an
interactive ablation view needs after every toggle).

The hooks are `interventions.ablation_hooks`, the ones behind `ablate_heads` and `ablate_path`
(which answer one question at a time, as a scalar), and the loss is `interventions.per_token_loss`:
the view's numbers and the notebooks' come from one implementation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ..model import Transformer
from . import _check
from ._check import check_layer_head
from .interventions import PathCut, ablation_hooks, kv_group_notes, logit_diff_metric, path_cuts, per_token_loss
from .prep import _entry as _checked  # finiteness checked once per weights version, not per run

__all__ = ["AblatedRun", "PathCut", "ablated_run", "logit_diff_metric", "per_token_loss"]


@dataclass
class AblatedRun:
    """Logits `[batch, pos, d_vocab]` and per-token loss `[batch, pos - 1]` of one (ablated) run.
    `notes`: what the cuts touched beyond their own heads (grouped-query K/V heads shared by a group,
    `interventions.kv_group_notes`)."""

    tokens: torch.Tensor
    logits: torch.Tensor
    token_loss: torch.Tensor
    notes: tuple[str, ...] = ()

    @property
    def loss(self) -> float:
        """Mean next-token loss: `interventions.loss_metric` of this run, to the bit."""
        return float(self.token_loss.mean().double())

    def top(self, pos: int, k: int = 5, batch: int = 0) -> list[tuple[int, float, float]]:
        """The `k` most likely next tokens after position `pos`: `(token id, probability, logit)`."""
        P = self.logits.shape[1]
        if not -P <= pos < P:
            raise IndexError(f"pos={pos} is out of range: 0..{P - 1}")
        lg = self.logits[batch, pos].double()
        p = lg.softmax(-1)
        v, i = p.topk(min(k, p.shape[0]))
        return [(int(t), float(pp), float(lg[t])) for pp, t in zip(v.tolist(), i.tolist())]


@torch.no_grad()
def ablated_run(model: Transformer, tokens, heads: Iterable[tuple[int, int]] = (), paths: Iterable = (),
                kind: str = "zero", reference=None) -> AblatedRun:
    """Run `tokens` (`[batch, pos]` or `[pos]`) with `heads` ablated and `paths` cut
    (`interventions.ablation_hooks`; cuts as `PathCut`, `(src, dst, kind)` or `(l1, h1, l2, h2, kind)`).

    kind: "zero" or "mean" (for heads and paths alike; means over the batch and positions of
    `reference`, default `tokens`). With nothing ablated this is the model's own run.
    """
    if kind not in ("zero", "mean"):
        raise ValueError(f"kind={kind!r} must be 'zero' or 'mean'")
    _checked(model)
    toks = model.check_tokens(tokens)
    hs = sorted({check_layer_head(model, *lh) for lh in heads})
    cuts = path_cuts(model, paths)
    hooks = ablation_hooks(model, hs, cuts, kind=kind, reference=toks if reference is None else reference)
    logits = model.run_with_hooks(toks, hooks) if hooks else model(toks)
    _check.check_finite_output("ablated run: logits", logits, axes=("batch", "position"), model=model, tokens=toks)
    return AblatedRun(tokens=toks, logits=logits, token_loss=per_token_loss(logits, toks),
                      notes=kv_group_notes(model, cuts))
