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
from ._check import check_count, check_layer_head
from .interventions import PathCut, ablation_hooks, kv_group_notes, logit_diff_metric, path_cuts, per_token_loss
from .prep import _entry as _checked  # finiteness checked once per weights version, not per run

__all__ = ["AblatedRun", "PathCut", "ablated_run", "logit_diff_metric", "per_token_loss"]


@dataclass
class AblatedRun:
    """Logits `[batch, pos, d_vocab]` and per-token loss `[batch, pos - 1]` of one (ablated) run.
    `notes`: what the cuts touched beyond their own heads (grouped-query K/V heads shared by a group,
    `interventions.kv_group_notes`)."""

    tokens: torch.Tensor
    logits: torch.Tensor | None
    token_loss: torch.Tensor
    notes: tuple[str, ...] = ()
    # without logits (`ablated_run(..., keep_logits=False)`): the top predictions at every position,
    # `[batch, pos, k]` token ids, probabilities (float64) and logits, largest first
    top_ids: torch.Tensor | None = None
    top_probs: torch.Tensor | None = None
    top_logits: torch.Tensor | None = None

    @property
    def loss(self) -> float:
        """Mean next-token loss: `interventions.loss_metric` of this run, to the bit."""
        return float(self.token_loss.mean().double())

    def top(self, pos: int, k: int = 5, batch: int = 0) -> list[tuple[int, float, float]]:
        """The `k` most likely next tokens after position `pos`: `(token id, probability, logit)`."""
        P = self.tokens.shape[1]
        if not -P <= pos < P:
            raise IndexError(f"pos={pos} is out of range: 0..{P - 1}")
        if self.logits is None:
            if k > self.top_ids.shape[-1]:
                raise ValueError(f"k={k}: this run kept the top {self.top_ids.shape[-1]} predictions only "
                                 "(ablated_run(..., keep_logits=False, top_k=...))")
            rows = (self.top_ids[batch, pos, :k], self.top_probs[batch, pos, :k], self.top_logits[batch, pos, :k])
            return [(int(t), float(pp), float(lg)) for t, pp, lg in zip(*(r.tolist() for r in rows))]
        lg = self.logits[batch, pos].double()
        p = lg.softmax(-1)
        v, i = p.topk(min(k, p.shape[0]))
        return [(int(t), float(pp), float(lg[t])) for pp, t in zip(v.tolist(), i.tolist())]


@torch.no_grad()
def ablated_run(model: Transformer, tokens, heads: Iterable[tuple[int, int]] = (), paths: Iterable = (),
                kind: str = "zero", reference=None, keep_logits: bool = True, top_k: int = 5) -> AblatedRun:
    """Run `tokens` (`[batch, pos]` or `[pos]`) with `heads` ablated and `paths` cut
    (`interventions.ablation_hooks`; cuts as `PathCut`, `(src, dst, kind)` or `(l1, h1, l2, h2, kind)`).

    kind: "zero" or "mean" (for heads and paths alike; means over the batch and positions of
    `reference`, default `tokens`). With nothing ablated this is the model's own run.
    keep_logits=False: no `[batch, pos, d_vocab]` logits are kept or formed at once (GPT-2 at 1,024
    tokens: 206 MB each); the run stops at the final normalised residual and unembeds `_CHUNK`
    positions at a time, keeping the per-token loss and the `top_k` predictions of every position
    (`AblatedRun.top` reads them; `logits` is None). Equal to the full run up to float rounding.
    A lazy checkpoint or an nnsight model always gives the compact run (`activations.ablated_run`).
    """
    if kind not in ("zero", "mean"):
        raise ValueError(f"kind={kind!r} must be 'zero' or 'mean'")
    top_k = check_count(top_k, "top_k", lo=0)
    from ..model.nnsight_source import is_source

    if is_source(model):  # a lazy checkpoint / nnsight model: one pass, its compact run computed next to the model
        from . import activations

        return activations.ablated_run(model, tokens, heads, paths, kind, reference, top_k)
    _checked(model)
    toks = model.check_tokens(tokens)
    hs = sorted({check_layer_head(model, *lh) for lh in heads})
    cuts = path_cuts(model, paths)
    hooks = ablation_hooks(model, hs, cuts, kind=kind, reference=toks if reference is None else reference)
    if not hooks and toks.shape[0] == 1:  # the model's own run: a live `TextRun` of these tokens has made it
        from .text_run import shared_text_run

        shared = shared_text_run(model, toks)
        if shared is not None:
            return shared.clean_run(keep_logits=keep_logits, top_k=top_k)
    if not keep_logits:
        return _compact_run(model, toks, hooks, top_k, kv_group_notes(model, cuts))
    logits = model.run_with_hooks(toks, hooks) if hooks else model(toks)
    return full_from_logits(model, toks, logits, kv_group_notes(model, cuts))


def full_from_logits(model: Transformer, toks: torch.Tensor, logits: torch.Tensor,
                     notes: tuple[str, ...] = ()) -> AblatedRun:
    """The run (logits kept, per-token loss) from the logits `[batch, pos, d_vocab]` of a run on `toks`."""
    _check.check_finite_output("ablated run: logits", logits, axes=("batch", "position"), model=model, tokens=toks)
    return AblatedRun(tokens=toks, logits=logits, token_loss=per_token_loss(logits, toks), notes=notes)


_CHUNK = 32  # positions unembedded at once by a compact run (GPT-2: 32 x 50,257 floats, 6.4 MB; with the
# float64 softmax and top-k about 40 MB of transients: less would only add matmul calls)


def _compact_run(model: Transformer, toks: torch.Tensor, hooks: list, top_k: int,
                 notes: tuple[str, ...]) -> AblatedRun:
    """`ablated_run(..., keep_logits=False)`: per-token loss and top-k table, logits a chunk at a time."""
    from .patterns import run_until

    cfg = model.cfg
    last = final_hook_name(model)
    if cfg.n_layers == 0 and cfg.normalization is None:
        raise ValueError("keep_logits=False needs a model with at least one layer or a final norm")
    final: list[torch.Tensor] = []
    run_until(model, toks, [*hooks, (last, lambda x, hp: final.append(x))], last=last)
    return compact_from_final(model, toks, final[0], top_k, notes)


def final_hook_name(model: Transformer) -> str:
    """The hook point holding what the unembedding reads: the final normalised residual (the last
    `hook_resid_post` without a final norm)."""
    cfg = model.cfg
    return "ln_final.hook_normalized" if cfg.normalization is not None else f"blocks.{cfg.n_layers - 1}.hook_resid_post"


def compact_from_final(model: Transformer, toks: torch.Tensor, x: torch.Tensor, top_k: int = 5,
                       notes: tuple[str, ...] = ()) -> AblatedRun:
    """The compact run (per-token loss and top-k table, logits a chunk at a time) from the value `x`
    `[batch, pos, d_model]` of `final_hook_name(model)` in a run on `toks`."""
    cfg = model.cfg
    B, P = toks.shape
    k = min(top_k, cfg.d_vocab)
    ids = torch.empty(B, P, k, dtype=torch.long)
    probs = torch.empty(B, P, k, dtype=torch.float64)
    top_logits = torch.empty(B, P, k, dtype=torch.float64)
    finite = torch.empty(B, P)  # 0 where a position's logits are all finite, NaN where not
    losses = []
    for a in range(0, P, _CHUNK):
        b = min(P, a + _CHUNK)
        e = min(P, b + 1)  # one row more: the loss at b - 1 reads the token at b
        ext = model.unembed(x[:, a:e])  # [batch, e - a, d_vocab]
        losses.append(per_token_loss(ext, toks[:, a:e]))  # positions a .. e - 2
        logits = ext[:, : b - a]
        finite[:, a:b] = torch.where(logits.isfinite().all(-1), 0.0, float("nan"))
        lg = logits.double()
        p, i = lg.softmax(-1).topk(k, dim=-1)
        ids[:, a:b], probs[:, a:b], top_logits[:, a:b] = i, p, lg.gather(-1, i)
    loss = torch.cat(losses, 1)
    _check.check_finite_output("ablated run: logits", finite, axes=("batch", "position"), model=model, tokens=toks)
    return AblatedRun(tokens=toks, logits=None, token_loss=loss, notes=notes, top_ids=ids, top_probs=probs,
                      top_logits=top_logits)
