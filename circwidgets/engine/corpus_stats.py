"""Empirical statistics of a token corpus, to validate what the circuits say (docs/ARCHITECTURE.md §7
and the zero-layer bigram comparison), and the comparison helpers used for it.

- `empirical_bigrams(tokens, d_vocab)`: sparse counts of consecutive pairs (B, C) and smoothed
  log P(C | B) — what a zero-layer model's `W_E W_U` should approximate.
- `empirical_skip_trigrams(tokens, window, d_vocab)`: counts of `[A] … [B] → [C]`: B at position i,
  C at i + 1, and A among the `window` tokens before B (positions i − window .. i − 1). *Presence*
  semantics: a token occurring several times in one window counts once for that (B, C) position,
  so `n(A, B, C)` is the number of positions with B → C whose window contains A, and `n(A, B)` the
  number of positions with B (followed by some token) whose window contains A.
  `lift(A, B, C) = P(C | B, A in window) / P(C | B)`, both add-α smoothed over the vocabulary:
  `[(n(A,B,C) + α) / (n(A,B) + α V)] / [(n(B,C) + α) / (n(B) + α V)]`.
- `precision_at_k`, `rank_correlation` (Spearman, average ranks for ties), `pearson`.

Tokens are `[batch, pos]` (rows are separate sequences: no pair or window crosses a row), `[pos]`,
or a list of 1-D sequences of different lengths.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch


def _rows(tokens, d_vocab: int | None) -> tuple[list[torch.Tensor], int]:
    """Token sequences as a list of `[b, pos]` long tensors (equal lengths within one) and d_vocab."""
    if isinstance(tokens, torch.Tensor) or not isinstance(tokens, (list, tuple)):
        seqs = [torch.as_tensor(tokens)]
    else:
        seqs = [torch.as_tensor(s) for s in tokens]
    out = []
    for s in seqs:
        if s.dtype.is_floating_point or s.dtype == torch.bool:
            raise TypeError(f"tokens must be integer ids, got dtype {s.dtype}")
        if s.ndim == 1:
            s = s[None]
        if s.ndim != 2:
            raise ValueError(
                f"tokens must be [batch, pos], [pos] or a list of 1-D sequences; got shape {tuple(s.shape)}"
            )
        out.append(s.long().cpu())
    if not out or all(s.numel() == 0 for s in out):
        raise ValueError("tokens is empty")
    lo = min(int(s.min()) for s in out if s.numel())
    hi = max(int(s.max()) for s in out if s.numel())
    if d_vocab is None:
        d_vocab = hi + 1
    if isinstance(d_vocab, bool) or not isinstance(d_vocab, int) or d_vocab < 1:
        raise ValueError(f"d_vocab={d_vocab!r} must be a positive integer")
    if lo < 0 or hi >= d_vocab:
        raise ValueError(f"tokens contains ids outside [0, {d_vocab}) (min {lo}, max {hi})")
    return out, d_vocab


def _count(keys: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    if not keys:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    u, c = torch.unique(torch.cat(keys), return_counts=True)
    return u, c


def _merge(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum counts of (unique keys, counts) chunks."""
    if not parts:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    keys = torch.cat([k for k, _ in parts])
    cnts = torch.cat([c for _, c in parts])
    u, inv = torch.unique(keys, return_inverse=True)
    return u, torch.zeros(len(u), dtype=torch.long).index_add_(0, inv, cnts)


def _lookup(keys: torch.Tensor, counts: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Counts of `query` keys in the sorted unique `keys` (0 where absent)."""
    if len(keys) == 0:
        return torch.zeros(query.shape, dtype=torch.long)
    idx = torch.searchsorted(keys, query).clamp(max=len(keys) - 1)
    return torch.where(keys[idx] == query, counts[idx], torch.zeros_like(idx))


# ------------------------------------------------------------------------------------- bigrams
@dataclass
class Bigrams:
    """Sparse bigram counts. `keys` = B · V + C (sorted, unique), `counts` aligned; `unigram[B]` =
    number of positions holding B that have a successor."""

    d_vocab: int
    keys: torch.Tensor
    counts: torch.Tensor
    unigram: torch.Tensor

    def count(self, b, c) -> torch.Tensor:
        """n(B, C) for (broadcast) ids."""
        b, c = torch.as_tensor(b).long(), torch.as_tensor(c).long()
        return _lookup(self.keys, self.counts, b * self.d_vocab + c)

    def log_prob(self, b, c, alpha: float = 1.0) -> torch.Tensor:
        """Add-α smoothed log P(C | B) (alpha=0: maximum likelihood: -inf for an unseen pair of a B that has
        successors, NaN for a B that never has one)."""
        b, c = torch.as_tensor(b).long(), torch.as_tensor(c).long()
        num = self.count(b, c).double() + alpha
        den = self.unigram[b].double() + alpha * self.d_vocab
        return num.log() - den.log()

    def row(self, b: int, alpha: float = 1.0) -> torch.Tensor:
        """`[d_vocab]` log P(· | B) for one B."""
        return self.log_prob(torch.full((self.d_vocab,), int(b)), torch.arange(self.d_vocab), alpha)

    def to_sparse(self) -> torch.Tensor:
        """Sparse COO `[d_vocab, d_vocab]` counts (row B, column C)."""
        V = self.d_vocab
        idx = torch.stack([self.keys // V, self.keys % V])
        return torch.sparse_coo_tensor(idx, self.counts, (V, V), is_coalesced=True, check_invariants=True)

    def dense_log_probs(self, alpha: float = 1.0) -> torch.Tensor:
        """`[d_vocab, d_vocab]` log P(C | B) — only for small vocabularies (compare with `W_E W_U`)."""
        V = self.d_vocab
        if V > 8192:
            raise ValueError(f"dense_log_probs would hold a {V} x {V} matrix; use row() / log_prob()")
        c = torch.zeros(V * V, dtype=torch.float64).index_add_(0, self.keys, self.counts.double()).view(V, V)
        return (c + alpha).log() - (self.unigram.double() + alpha * V).log()[:, None]


def empirical_bigrams(tokens, d_vocab: int | None = None) -> Bigrams:
    """Counts of consecutive pairs (B, C) in `tokens` (see module docstring for accepted shapes)."""
    rows, V = _rows(tokens, d_vocab)
    parts = []
    for r in rows:
        if r.shape[1] >= 2:
            parts.append(_count([(r[:, :-1] * V + r[:, 1:]).reshape(-1)]))
    keys, counts = _merge(parts)
    unigram = torch.zeros(V, dtype=torch.long).index_add_(0, keys // V, counts)
    return Bigrams(V, keys, counts, unigram)


# ------------------------------------------------------------------------------------- skip-trigrams
@dataclass
class SkipTrigramCounts:
    """Empirical skip-trigram counts (presence semantics, module docstring).

    keys = (A · V + B) · V + C with `counts`; pair_keys = A · V + B with `pair_counts` = n(A, B);
    `bigrams` = the (B, C) counts of the same corpus; window = the look-back used.
    """

    d_vocab: int
    window: int
    keys: torch.Tensor
    counts: torch.Tensor
    pair_keys: torch.Tensor
    pair_counts: torch.Tensor
    bigrams: Bigrams

    def count(self, a, b, c) -> torch.Tensor:
        V = self.d_vocab
        a, b, c = (torch.as_tensor(x).long() for x in (a, b, c))
        return _lookup(self.keys, self.counts, (a * V + b) * V + c)

    def pair_count(self, a, b) -> torch.Tensor:
        a, b = torch.as_tensor(a).long(), torch.as_tensor(b).long()
        return _lookup(self.pair_keys, self.pair_counts, a * self.d_vocab + b)

    def lift(self, a, b, c, alpha: float = 1.0) -> torch.Tensor:
        """P(C | B, A in window) / P(C | B), add-α smoothed (float64)."""
        V = self.d_vocab
        a, b, c = (torch.as_tensor(x).long() for x in (a, b, c))
        p_abc = (self.count(a, b, c).double() + alpha) / (self.pair_count(a, b).double() + alpha * V)
        p_bc = (self.bigrams.count(b, c).double() + alpha) / (self.bigrams.unigram[b].double() + alpha * V)
        return p_abc / p_bc

    def triples(self) -> torch.Tensor:
        """`[n, 3]` (A, B, C) of every counted triple, aligned with `counts`."""
        V = self.d_vocab
        return torch.stack([self.keys // (V * V), (self.keys // V) % V, self.keys % V], 1)

    def top(self, k: int = 20, by: str = "lift", min_count: int = 1, alpha: float = 1.0,
            source: int | None = None) -> list[tuple[int, int, int, float]]:
        """The `k` best (A, B, C, value) triples by "lift" or "count", among those seen at least
        `min_count` times (and with A == `source` when given)."""
        if by not in ("lift", "count"):
            raise ValueError(f"by={by!r} must be 'lift' or 'count'")
        t = self.triples()
        keep = self.counts >= min_count
        if source is not None:
            keep &= t[:, 0] == source
        t, cnt = t[keep], self.counts[keep]
        val = self.lift(t[:, 0], t[:, 1], t[:, 2], alpha) if by == "lift" else cnt.double()
        order = torch.argsort(val, descending=True, stable=True)[:k]
        return [(*t[i].tolist(), float(val[i])) for i in order.tolist()]


def empirical_skip_trigrams(tokens, window: int = 8, d_vocab: int | None = None,
                            chunk: int = 1 << 22) -> SkipTrigramCounts:
    """Count `[A] … [B] → [C]` in `tokens` with A among the `window` tokens before B (module doc).

    chunk: about how many (position, window slot) entries are built at once (memory ~ 40 bytes each).
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window={window!r} must be an integer >= 1")
    rows, V = _rows(tokens, d_vocab)
    if V ** 3 >= 2**63:
        raise ValueError(f"d_vocab={V} is too large to key triples in int64")
    W = window
    tri_parts, pair_parts = [], []
    for r in rows:
        b, P = r.shape
        if P < 2:
            continue
        step = max(1, chunk // max(1, P * W))
        for s in range(0, b, step):
            x = r[s:s + step]
            padded = torch.cat([torch.full((x.shape[0], W), -1, dtype=torch.long), x], 1)
            win = padded.unfold(1, W, 1)[:, : P - 1]  # [b, P-1, W]: window before B at position i
            win = win.sort(-1).values
            dup = torch.zeros_like(win, dtype=torch.bool)
            dup[..., 1:] = win[..., 1:] == win[..., :-1]
            valid = (win >= 0) & ~dup
            B = x[:, : P - 1, None].expand_as(win)
            C = x[:, 1:, None].expand_as(win)
            A, B, C = win[valid], B[valid], C[valid]
            pair_parts.append(_count([A * V + B]))
            tri_parts.append(_count([(A * V + B) * V + C]))
    keys, counts = _merge(tri_parts)
    pkeys, pcounts = _merge(pair_parts)
    return SkipTrigramCounts(V, W, keys, counts, pkeys, pcounts, empirical_bigrams(rows, V))


# ------------------------------------------------------------------------------------- comparisons
def precision_at_k(predicted: Sequence, reference: Iterable, k: int) -> float:
    """Fraction of the first `k` items of `predicted` (a ranked sequence) that are in `reference`
    (any collection of relevant items; pass `reference[:k]` for top-k overlap). Items are compared
    as hashables (tuples of ids, ints); tensors are converted with `.tolist()`."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} must be an integer >= 1")

    def norm(x):
        if isinstance(x, torch.Tensor):
            x = x.tolist()
        return tuple(norm(y) for y in x) if isinstance(x, (list, tuple)) else x

    pred = [norm(p) for p in list(predicted)[:k]]
    if not pred:
        raise ValueError("predicted is empty")
    ref = {norm(r) for r in reference}
    return sum(p in ref for p in pred) / len(pred)


def _vec(x, name: str) -> torch.Tensor:
    t = x.double() if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=torch.float64)
    t = t.reshape(-1)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
    return t


def pearson(a, b) -> float:
    """Pearson correlation of two equal-length 1-D sequences (NaN when either is constant)."""
    x, y = _vec(a, "a"), _vec(b, "b")
    if x.shape != y.shape or len(x) < 2:
        raise ValueError(f"a and b must have the same length >= 2, got {len(x)} and {len(y)}")
    x, y = x - x.mean(), y - y.mean()
    den = (x.norm() * y.norm()).item()
    return float("nan") if den == 0 else float((x @ y).item() / den)


def _avg_ranks(x: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(x, stable=True)
    sx = x[order]
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(len(x), dtype=torch.float64)
    # ties: every member of a run of equal values gets the run's mean rank
    _, inv, cnt = torch.unique_consecutive(sx, return_inverse=True, return_counts=True)
    start = torch.cumsum(cnt, 0) - cnt
    mean_rank = start.double() + (cnt.double() - 1) / 2
    ranks[order] = mean_rank[inv]
    return ranks


def rank_correlation(a, b) -> float:
    """Spearman rank correlation (Pearson of average ranks, so ties are handled)."""
    x, y = _vec(a, "a"), _vec(b, "b")
    if x.shape != y.shape or len(x) < 2:
        raise ValueError(f"a and b must have the same length >= 2, got {len(x)} and {len(y)}")
    return pearson(_avg_ranks(x), _avg_ranks(y))
