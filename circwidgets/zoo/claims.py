"""The measurable claims of the model cards, each a function `(model, stats, **args) -> float`.

A card lists claims as `{"id", "text", "fn", "args", "op", "target", "target_met", "measured", "tol"}`;
`zoo.build.check` recomputes every one from the shipped file (and its shipped reference statistics,
where a claim compares with data) and fails loudly when a value moved away from what the card says or
its status against its own target (met / missed) is not the one the card states. All numbers come
from the engine; nothing here re-implements its mathematics.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..engine import (
    all_head_scores,
    composition_baseline,
    composition_scores,
    eigen_positivity,
    in_context_loss,
    induction_offsets,
    offset_profile,
    pearson,
    precision_at_k,
    skip_trigrams,
)
from ..model import Transformer

CLAIMS: dict[str, Callable[..., float]] = {}


def claim(fn: Callable[..., float]) -> Callable[..., float]:
    CLAIMS[fn.__name__] = fn
    return fn


def _scores(model: Transformer, seq_len: int | None, n_seqs: int, seed: int) -> dict[str, torch.Tensor]:
    return all_head_scores(model, seq_len=seq_len, n_seqs=n_seqs, seed=seed)


@claim
def bigram_pearson(model: Transformer, stats: dict, subset: str = "all", **_) -> float:
    """Pearson r between log-softmax(W_E W_U) and the corpus' add-1 bigram log P(C | B), over the
    pairs of the most frequent tokens (`stats["bigram_ids"]`, `stats["bigram_log_probs"]`);
    `subset="seen"`: only the pairs that occur in the corpus (`stats["bigram_seen"]`)."""
    ids = stats["bigram_ids"].long()
    ref = stats["bigram_log_probs"].double()
    W_E = model.W_E.double()
    if model.cfg.positional == "standard":
        raise ValueError("bigram_pearson reads W_E W_U alone: the model must have no residual positions")
    logits = W_E[ids] @ model.W_U.double()  # [n, V]: direct path of the zero-layer model
    lp = logits.log_softmax(-1)[:, ids]
    if subset == "seen":
        keep = stats["bigram_seen"].bool()
        return pearson(lp[keep], ref[keep])
    return pearson(lp.reshape(-1), ref.reshape(-1))


@claim
def induction_max(model: Transformer, stats: dict, layer: int | None = None, seq_len: int | None = None,
                  n_seqs: int = 32, seed: int = 2024, **_) -> float:
    """Largest induction score (engine `head_scores`) of any head (of `layer` when given)."""
    s = _scores(model, seq_len, n_seqs, seed)["induction"]
    return float((s if layer is None else s[layer]).max())


@claim
def previous_token_max(model: Transformer, stats: dict, layer: int | None = None, seq_len: int | None = None,
                       n_seqs: int = 32, seed: int = 2024, **_) -> float:
    """Largest previous-token score of any head (of `layer` when given)."""
    s = _scores(model, seq_len, n_seqs, seed)["previous_token"]
    return float((s if layer is None else s[layer]).max())


@claim
def icl_repeated_loss(model: Transformer, stats: dict, seq_len: int | None = None, n_seqs: int = 32,
                      seed: int = 2024, **_) -> float:
    """Mean loss (nats) on the repeated half of BOS + r + r (engine `in_context_loss`)."""
    return in_context_loss(model, seq_len=seq_len, n_seqs=n_seqs, seed=seed).repeated


@claim
def icl_gain(model: Transformer, stats: dict, seq_len: int | None = None, n_seqs: int = 32, seed: int = 2024,
             **_) -> float:
    """First-half minus repeated-half loss on BOS + r + r (nats)."""
    return in_context_loss(model, seq_len=seq_len, n_seqs=n_seqs, seed=seed).gain


def _induction_kcomp(model: Transformer, s: dict, seq_len: int | None) -> torch.Tensor:
    """K-composition scores `[head1]` of every layer-0 head into the best layer-1 induction head (by `s`).
    Rotary models: W_QK depends on the offset Δ, so the engine averages the later head's circuit over the
    offsets at which an induction head attends on BOS + r + r (`induction_offsets`: Δ = |r| - 1 for each
    repeat length of the sweep, or seq_len - 1)."""
    h2 = int(s["induction"][1].argmax())
    return composition_scores(model, "k", offset=induction_offsets(model, seq_len))[0, :, 1, h2]


@claim
def kcomp_source_prev_token(model: Transformer, stats: dict, seq_len: int | None = None, n_seqs: int = 32,
                            seed: int = 2024, **_) -> float:
    """Previous-token score of the layer-0 head that K-composes most strongly into the best
    layer-1 induction head (≥ 0.5 says: its strongest K-composition input is a previous-token head)."""
    s = _scores(model, seq_len, n_seqs, seed)
    return float(s["previous_token"][0, int(_induction_kcomp(model, s, seq_len).argmax())])


@claim
def kcomp_source_offset_peak(model: Transformer, stats: dict, n_offsets: int = 64, n_seqs: int = 32,
                             seed: int = 2024, **_) -> float:
    """Rotary models: the offset Δ in [0, n_offsets) where the offset profile (engine `offset_profile`) of
    the best induction head's strongest K-composition input peaks; 1 says the induction head's keys are
    written most by a head that attends to the previous position by its weights."""
    s = _scores(model, None, n_seqs, seed)
    h1 = int(_induction_kcomp(model, s, None).argmax())
    return float(offset_profile(model, range(n_offsets))[0, h1].argmax())


@claim
def kcomp_prev_over_chance(model: Transformer, stats: dict, n_seqs: int = 32, seed: int = 2024, **_) -> float:
    """K-composition of the strongest layer-0 previous-token head into the best layer-1 induction head,
    divided by the mean score of random matrices of the same shapes (`composition_baseline`): 1 is
    chance."""
    s = _scores(model, None, n_seqs, seed)
    h1 = int(s["previous_token"][0].argmax())
    return float(_induction_kcomp(model, s, None)[h1]) / composition_baseline(model, "k")[0]


@claim
def prev_head_offset_peak(model: Transformer, stats: dict, layer: int = 0, n_offsets: int = 64, n_seqs: int = 32,
                          seed: int = 2024, **_) -> float:
    """Rotary models: the offset Δ in [0, n_offsets) where the offset profile (engine `offset_profile`,
    uniform token weights) of the layer's strongest previous-token head peaks; 1 for a head that
    attends to the previous position by its weights alone."""
    h = int(_scores(model, None, n_seqs, seed)["previous_token"][layer].argmax())
    return float(offset_profile(model, range(n_offsets))[layer, h].argmax())


@claim
def ov_positivity_mean(model: Transformer, stats: dict, layer: int = 0, **_) -> float:
    """Mean over the layer's heads of the full-OV eigenvalue positivity (copying: near +1)."""
    return float(eigen_positivity(model, circuit="ov", full=True)[layer].mean())


def planted_rules_recovered(model: Transformer, rules: list[tuple[int, int, int]], top_sources: int,
                            top_dest: int, top_out: int) -> float:
    """Fraction of planted `(A, B, C)` rules found in some layer-0 head's skip-trigram table: A among
    its `top_sources` strongest sources, B among A's `top_dest` destinations, C among A's `top_out` outputs."""
    found = set()
    for h in range(model.cfg.n_heads):
        table = skip_trigrams(model, 0, h, k=top_sources, n_dest=top_dest, n_out=top_out)
        for row in table:
            for a, b, c in rules:
                if row.source == a and b in row.dests and c in row.outs:
                    found.add((a, b, c))
    return len(found) / len(rules)


@claim
def planted_recovery(model: Transformer, stats: dict, task: dict, top_sources: int, top_dest: int = 3,
                     top_out: int = 3, **_) -> float:
    """Fraction of the planted skip-trigram rules (regenerated from the task spec) that the
    engine's skip-trigram extraction recovers (see `planted_rules_recovered`)."""
    from ..train.tasks import SkipTrigramTask

    spec = {k: v for k, v in task.items() if k != "task"}
    return planted_rules_recovered(model, SkipTrigramTask(**spec).rules, top_sources, top_dest, top_out)


@claim
def planted_accuracy(model: Transformer, stats: dict, task: dict, n_seqs: int = 256, seed: int = 7, **_) -> float:
    """Behaviour: the fraction of fired rules (B after its A) whose C is the model's top prediction
    after B, on fresh sequences of the task (a seed training never used)."""
    from ..train.tasks import SkipTrigramTask

    t = SkipTrigramTask(**{k: v for k, v in task.items() if k != "task"})
    x = t.batch(n_seqs, seed + 1_000_000, 0)
    rule_of = {(a, b): c for a, b, c in t.rules}
    with torch.no_grad():
        pred = model(x).argmax(-1)
    hits = total = 0
    for row, pr in zip(x.tolist(), pred.tolist()):
        seen = set()
        for i, tok in enumerate(row[:-1]):
            for a in seen:
                if (a, tok) in rule_of:
                    total += 1
                    hits += pr[i] == rule_of[(a, tok)]
            seen.add(tok)
    return hits / max(total, 1)


def model_triples(model: Transformer, frequent: list[int], per_head: int, n_list: int = 60
                  ) -> list[tuple[int, int, int]]:
    """The model's top skip-trigrams over the corpus' frequent tokens: for every layer-0 head, the
    `per_head` frequent sources A with the largest engine strength, each with its first frequent
    destination B and first frequent output C among the engine's top `n_list` lists (rare tokens,
    barely trained, would otherwise fill the tables with extreme but meaningless values)."""
    fs = set(frequent)
    freq = torch.tensor(frequent)
    out = []
    for h in range(model.cfg.n_heads):
        t = skip_trigrams(model, 0, h, k=1, n_dest=n_list, n_out=n_list)
        top = freq[torch.argsort(t.strength[freq], descending=True, stable=True)[:per_head]]
        for a in top.tolist():
            r = t.for_source(a)
            b = next((x for x in r.dests if x in fs), None)
            c = next((x for x in r.outs if x in fs), None)
            if b is not None and c is not None:
                out.append((a, b, c))
    return out


@claim
def skip_trigram_precision(model: Transformer, stats: dict, per_head: int = 25, shuffled: bool = False,
                           **_) -> float:
    """Fraction of the model's top skip-trigrams (`model_triples` over `stats["frequent_ids"]`) found
    among the corpus' empirical ones (`stats["reference_triples"]`: count and lift above the card's
    thresholds, over the frequent tokens). `shuffled=True`: the same triples with their outputs C
    permuted (deterministically), the chance level for tokens of these frequencies."""
    ref = {tuple(t) for t in stats["reference_triples"].long().tolist()}
    trip = model_triples(model, stats["frequent_ids"].tolist(), per_head)
    if shuffled:
        perm = torch.randperm(len(trip), generator=torch.Generator().manual_seed(0)).tolist()
        trip = [(a, b, trip[perm[i]][2]) for i, (a, b, _) in enumerate(trip)]
    return precision_at_k(trip, ref, len(trip))


def _windows_loss(model: Transformer, windows: torch.Tensor, batch: int = 16) -> float:
    """Mean next-token loss (nats) over corpus windows `[n, n_ctx]` (BOS first)."""
    import torch.nn.functional as F

    w = windows.long()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(w), batch):
            x = w[i:i + batch]
            logits = model(x)[:, :-1].float()
            total += F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="sum").item()
            count += x[:, 1:].numel()
    return total / count


@claim
def heldout_loss(model: Transformer, stats: dict, **_) -> float:
    """Loss (nats) on windows of the held-out files (`stats["heldout_windows"]`)."""
    return _windows_loss(model, stats["heldout_windows"])


@claim
def heldout_gap(model: Transformer, stats: dict, **_) -> float:
    """Held-out minus training loss (nats) on equally many corpus windows of each split
    (`stats["heldout_windows"]`, `stats["train_windows"]`): near 0 when the model has not memorised."""
    return _windows_loss(model, stats["heldout_windows"]) - _windows_loss(model, stats["train_windows"])


OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "==": lambda a, b: a == b}


def evaluate_claim(model: Transformer, stats: dict, c: dict) -> float:
    if c["fn"] not in CLAIMS:
        raise KeyError(f"claim function {c['fn']!r} unknown; known: {sorted(CLAIMS)}")
    v = CLAIMS[c["fn"]](model, stats, **c.get("args", {}))
    if isinstance(v, float) and math.isnan(v):
        raise ValueError(f"claim {c['id']}: measured NaN")
    return float(v)
