"""Measurements of a model over its training snapshots (docs/ARCHITECTURE.md §13).

Nothing new is defined here: each snapshot is measured with the engine's one definition of each
quantity, so a number in the history view equals the engine function called on that checkpoint.

- head scores: `heads.all_head_scores` (previous-token and induction, mean over the repeat-length
  sweep `heads.detection_lengths`);
- in-context loss: `heads.in_context_loss` (first copy vs repeated copy of `BOS + r + r`, same sweep);
- loss on a fixed evaluation set: the mean of `interventions.per_token_loss`;
- the induction circuit of a (previous-token head, induction head) pair: the induction head's OV
  copying (`induction.ov_copying`: positivity of `W_E W_OV W_U` and top-1 diagonal) and its
  K-composition QK term through the previous-token head (`induction.k_composition_qk`, same two
  numbers via `induction.diagonal_stats`), and their K-composition score
  (`composition.composition_for_head(model, *ind_head, "k")`) with its random baseline
  (`composition.composition_baseline`).

`TrainingCurves` are the per-evaluation curves: read from a trainer's metrics records when it logged
them (`from_metrics`), else measured on each snapshot (`from_snapshots`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..model import Transformer
from ._check import check_layer_head
from .composition import composition_baseline, composition_for_head
from .heads import all_head_scores, head_scores, in_context_loss
from .induction import (
    DiagonalStats,
    diagonal_stats,
    induction_offsets,
    k_composition_qk,
    ov_copying,
    strongest_induction_head,
)
from .interventions import per_token_loss

__all__ = [
    "CircuitMeasures", "SnapshotScores", "TrainingCurves", "circuit_measures", "default_circuit", "rise_window",
    "score_snapshots", "snapshot_scores", "steepest_step",
]

Head = tuple[int, int]
ModelOrLoader = Transformer | Callable[[], Transformer]

# the evaluation every snapshot gets (the trainer's live metrics use their own n_seqs / seed)
N_SEQS, SEED = 8, 0


@dataclass
class SnapshotScores:
    """Behaviour of one snapshot.

    induction, previous_token: `[n_layers, n_heads]` head scores (`all_head_scores`). icl_first,
    icl_repeated: `in_context_loss` (nats). loss: mean next-token loss on the evaluation tokens (nats;
    None without them).
    """

    step: int
    induction: torch.Tensor
    previous_token: torch.Tensor
    icl_first: float
    icl_repeated: float
    loss: float | None = None


@torch.no_grad()
def snapshot_scores(model: Transformer, step: int = 0, n_seqs: int = N_SEQS, seed: int = SEED,
                    eval_tokens: torch.Tensor | None = None) -> SnapshotScores:
    """Head scores, in-context loss and (with `eval_tokens` `[batch, pos]`) the loss of one snapshot."""
    s = all_head_scores(model, n_seqs=n_seqs, seed=seed, kinds=("previous_token", "induction"))
    icl = in_context_loss(model, n_seqs=n_seqs, seed=seed)
    loss = None
    if eval_tokens is not None:
        toks = model.check_tokens(eval_tokens)
        loss = float(per_token_loss(model(toks).float(), toks).mean())
    return SnapshotScores(int(step), s["induction"], s["previous_token"], icl.first, icl.repeated, loss)


def _model(m: ModelOrLoader) -> Transformer:
    return m if isinstance(m, Transformer) else m()


def score_snapshots(snapshots: Sequence[tuple[int, ModelOrLoader]], n_seqs: int = N_SEQS, seed: int = SEED,
                    eval_tokens: torch.Tensor | None = None) -> list[SnapshotScores]:
    """`snapshot_scores` of each `(step, model or a function loading it)`, with a progress bar."""
    from ._progress import tqdm

    items = list(snapshots)
    return [snapshot_scores(_model(m), step, n_seqs, seed, eval_tokens)
            for step, m in tqdm(items, desc="scoring snapshots", leave=False, disable=len(items) < 4)]


@dataclass
class CircuitMeasures:
    """The induction circuit of one snapshot for a (previous-token head, induction head) pair.

    ov: the induction head's OV copying (`ov_copying`). k_qk: its K-composition QK term through the
    previous-token head (`diagonal_stats(k_composition_qk(...))`): positivity and top-1 diagonal
    ("the key whose previous token is my token"). k_composition: their K-composition score;
    baseline: (mean, std) of the score for random matrices of the same shapes.
    """

    prev_head: Head
    ind_head: Head
    ov: DiagonalStats
    k_qk: DiagonalStats
    k_composition: float
    baseline: tuple[float, float]


def _token_sample(d_vocab: int, n_tokens: int | None, seed: int) -> torch.Tensor | None:
    if n_tokens is None or n_tokens >= d_vocab:
        return None
    return torch.randperm(d_vocab, generator=torch.Generator().manual_seed(seed))[:n_tokens].sort().values


@torch.no_grad()
def circuit_measures(model: Transformer, prev_head: Head, ind_head: Head, n_tokens: int | None = 512,
                     seed: int = SEED) -> CircuitMeasures:
    """`CircuitMeasures` of `model` for `prev_head` (earlier layer) and `ind_head`. Positivities use
    the whole circuits; the top-1 diagonal accuracies use `n_tokens` token ids drawn with `seed`
    (all tokens when None or >= d_vocab). Rotary models: the induction head's QK circuit (in the K-composition
    term and score) is averaged over the offsets it attends at on repeated tokens (`induction_offsets`)."""
    l1, h1 = check_layer_head(model, *prev_head)
    l2, h2 = check_layer_head(model, *ind_head)
    toks = _token_sample(model.cfg.d_vocab, n_tokens, seed)
    ov = ov_copying(model, (l2, h2), toks)
    offset = induction_offsets(model)  # rotary: the induction head's QK circuit at the offsets it attends at
    k_qk = diagonal_stats(k_composition_qk(model, (l1, h1), (l2, h2), offset), toks)
    score = float(composition_for_head(model, l2, h2, "k", offset=offset).into[l1, h1])  # one head's pairs
    mean, std = composition_baseline(model, "k")
    return CircuitMeasures((l1, h1), (l2, h2), ov, k_qk, score, (float(mean), float(std)))


def default_circuit(model: Transformer, n_seqs: int = N_SEQS, seed: int = SEED) -> tuple[Head, Head]:
    """(previous-token head, induction head) by the engine's detection: the strongest induction head
    (`strongest_induction_head`, layer >= 1) and the best previous-token head in an earlier layer."""
    if model.cfg.n_layers < 2:
        raise ValueError("an induction circuit needs two layers (a previous-token head and an induction head)")
    ind = strongest_induction_head(model, n_seqs=n_seqs, seed=seed)
    prev = torch.nan_to_num(head_scores(model, "previous_token", n_seqs=n_seqs, seed=seed)[:ind[0]], nan=-1.0)
    layer, head = divmod(int(prev.argmax()), model.cfg.n_heads)
    return (layer, head), ind


def _num(x) -> float:
    return float(x) if x is not None and math.isfinite(float(x)) else float("nan")


# A phase change is a window of steep change, not a threshold crossed: these two functions locate it in a
# logged curve (the history view's notebook and the model cards use them).
def _finite_curve(steps: Sequence[int], values: Sequence[float]) -> tuple[list[int], list[float]]:
    if len(steps) != len(values):
        raise ValueError(f"steps ({len(steps)}) and values ({len(values)}) differ in length")
    pts = [(int(s), float(v)) for s, v in zip(steps, values) if v is not None and math.isfinite(float(v))]
    if len(pts) < 2:
        raise ValueError("a curve needs at least two finite values")
    return [s for s, _ in pts], [v for _, v in pts]


def rise_window(steps: Sequence[int], values: Sequence[float], lo: float = 0.2, hi: float = 0.8
                ) -> tuple[int, int] | None:
    """The first steps at which `values` (one per step; NaN entries skipped) has covered the fractions `lo`
    and `hi` of its rise from the first to the last value; None when the curve does not rise."""
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"need 0 <= lo < hi <= 1, got lo={lo}, hi={hi}")
    st, vs = _finite_curve(steps, values)
    v0, v1 = vs[0], vs[-1]
    if not v1 > v0:
        return None
    return tuple(next(s for s, v in zip(st, vs) if v >= v0 + f * (v1 - v0)) for f in (lo, hi))


def steepest_step(steps: Sequence[int], values: Sequence[float]) -> tuple[int, int]:
    """The pair of consecutive evaluations (steps) with the largest rise per step (NaN entries skipped)."""
    st, vs = _finite_curve(steps, values)
    i = max(range(1, len(vs)), key=lambda k: (vs[k] - vs[k - 1]) / max(1, st[k] - st[k - 1]))
    return st[i - 1], st[i]


@dataclass
class TrainingCurves:
    """Curves over training, one entry per evaluation.

    steps `[n]`; loss `[n]` (nats; NaN where not measured), named by `loss_label`; icl_first,
    icl_repeated `[n]` (in-context loss, nats); induction, previous_token `[n, n_layers, n_heads]`
    head scores; source: "metrics" (the trainer's records) or "snapshots" (measured here).
    """

    steps: list[int]
    loss: list[float]
    icl_first: list[float]
    icl_repeated: list[float]
    induction: torch.Tensor
    previous_token: torch.Tensor
    source: str
    loss_label: str = "validation loss"

    @classmethod
    def from_metrics(cls, records: Sequence[dict]) -> TrainingCurves:
        """The curves a trainer logged (`Trainer.history` / `metrics.json`): records with per-head
        scores, in step order. ValueError when none has them."""
        recs = sorted((r for r in records if isinstance(r.get("induction"), list)
                       and isinstance(r.get("previous_token"), list)), key=lambda r: r["step"])
        if not recs:
            raise ValueError("no evaluation record carries per-head scores ('induction', 'previous_token')")
        return cls([int(r["step"]) for r in recs], [_num(r.get("val_loss")) for r in recs],
                   [_num(r.get("icl_first")) for r in recs], [_num(r.get("icl_repeated")) for r in recs],
                   torch.tensor([r["induction"] for r in recs], dtype=torch.float64),
                   torch.tensor([r["previous_token"] for r in recs], dtype=torch.float64), "metrics")

    @property
    def best_induction(self) -> list[float]:
        """The best head's induction score at each evaluation `[n]`."""
        return [float(x) for x in self.induction.flatten(1).max(1).values]

    @property
    def in_context_gain(self) -> list[float]:
        """First-copy minus repeated-copy loss at each evaluation `[n]` (nats)."""
        return [f - r for f, r in zip(self.icl_first, self.icl_repeated)]

    def phase_change(self, lo: float = 0.2, hi: float = 0.8) -> dict:
        """The induction phase change in these curves: for the best induction score and for the in-context
        gain, the first and last values, the `rise_window` (steps covering `lo`..`hi` of the rise; None when
        the curve does not rise) and the `steepest_step`."""
        out = {}
        for name, vals in (("induction", self.best_induction), ("in_context_gain", self.in_context_gain)):
            st, vs = _finite_curve(self.steps, vals)
            w = rise_window(st, vs, lo, hi)
            out[name] = {"first": vs[0], "last": vs[-1], "window": None if w is None else list(w),
                         "steepest": list(steepest_step(st, vs))}
        out["fractions"] = [lo, hi]
        return out

    @classmethod
    def from_snapshots(cls, scores: Sequence[SnapshotScores], loss_label: str = "loss") -> TrainingCurves:
        """The curves measured on each snapshot (`score_snapshots`)."""
        if not scores:
            raise ValueError("no snapshot scores")
        return cls([s.step for s in scores], [_num(s.loss) for s in scores], [s.icl_first for s in scores],
                   [s.icl_repeated for s in scores], torch.stack([s.induction for s in scores]),
                   torch.stack([s.previous_token for s in scores]), "snapshots", loss_label)
