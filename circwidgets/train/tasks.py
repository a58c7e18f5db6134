"""Synthetic training tasks with known answers.

Every task draws batches as a pure function of `(seed, step)`: the same step always gives the
same batch, on any machine, which is what makes interrupted-and-resumed training identical to an
uninterrupted run. Batches are `[batch, n_ctx]` int64 token ids; token 0 is BOS where a task has one.

- `BigramTask`: a sparse random Markov chain (the zero-layer model's whole job).
- `SkipTrigramTask`: planted skip-trigrams `[A] ... [B] -> [C]` over background noise; `.rules`
  returns the planted `(A, B, C)` triples for validation.
- `RepeatTask`: BOS, random noise, then a random segment repeated once, with a *variable* repeat
  length and offset (with a fixed length a layer-0 head learns a fixed look-back and no induction
  head forms).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch

BOS = 0


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A CPU generator seeded from `(seed, step, stream)`: independent, reproducible batches."""
    # SplitMix-style mixing so that neighbouring seeds/steps give unrelated streams.
    x = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + stream * 0x94D049BB133111EB) % (1 << 63)
    x ^= x >> 31
    return torch.Generator().manual_seed(x)


@dataclass
class Task:
    """Base class: `batch(batch_size, seed, step) -> LongTensor[batch, n_ctx]`."""

    d_vocab: int
    n_ctx: int

    @property
    def bos_token_id(self) -> int | None:
        return BOS

    def batch(self, batch_size: int, seed: int, step: int) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"task": type(self).__name__, **dataclasses.asdict(self)}


@dataclass
class MaskedTask(Task):
    """A task of repeated segments (`min_len`..`max_len` tokens, each fitting twice after BOS) that also
    marks the positions whose next token the repetition makes predictable (`batch_with_mask`); `batch`
    is its tokens."""

    min_len: int = 4
    max_len: int = 32
    min_len_floor: ClassVar[int] = 1  # the shortest segment the task can mark

    def __post_init__(self) -> None:
        lo = self.min_len_floor
        if not lo <= self.min_len <= self.max_len or 1 + 2 * self.max_len > self.n_ctx:
            raise ValueError(f"need {lo} <= min_len <= max_len and 1 + 2*max_len <= n_ctx ({self.n_ctx})")

    def batch(self, batch_size: int, seed: int, step: int) -> torch.Tensor:
        return self.batch_with_mask(batch_size, seed, step)[0]

    def batch_with_mask(self, batch_size: int, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


@dataclass
class BigramTask(Task):
    """Sequences from a random sparse Markov chain over tokens 1..d_vocab-1 (BOS first).

    Each token has `n_successors` possible next tokens with random probabilities, fixed by
    `chain_seed`. `transition_matrix()` is the ground truth `[d_vocab, d_vocab]`.
    """

    n_successors: int = 8
    sharpness: float = 1.0
    chain_seed: int = 0

    def transition_matrix(self) -> torch.Tensor:
        """`P[a, b]` = probability that b follows a `[d_vocab, d_vocab]`; row 0 (BOS) is uniform.

        Successor weights are Exp(1)**sharpness, normalised (sharpness 1 = Dirichlet(1))."""
        g = torch.Generator().manual_seed(self.chain_seed)
        V = self.d_vocab
        P = torch.zeros(V, V, dtype=torch.float64)
        P[0, 1:] = 1.0 / (V - 1)
        for a in range(1, V):
            succ = torch.randperm(V - 1, generator=g)[: self.n_successors] + 1
            w = (-torch.log1p(-torch.rand(self.n_successors, generator=g, dtype=torch.float64))) ** self.sharpness
            P[a, succ] = w / w.sum()
        return P

    def batch(self, batch_size: int, seed: int, step: int) -> torch.Tensor:
        if not hasattr(self, "_P"):
            self._P = self.transition_matrix().float()
        g = step_generator(seed, step)
        out = torch.empty(batch_size, self.n_ctx, dtype=torch.long)
        out[:, 0] = BOS
        for i in range(1, self.n_ctx):
            out[:, i] = torch.multinomial(self._P[out[:, i - 1]], 1, generator=g)[:, 0]
        return out


@dataclass
class SkipTrigramTask(Task):
    """Planted skip-trigrams `[A] ... [B] -> [C]` in uniform background noise.

    Vocabulary layout: 0 = BOS, then `n_rules` source tokens A, then `n_triggers` trigger tokens B,
    then `m = n_rules / n_triggers` output tokens C, then noise tokens. Rule i = (A_i, B_{i mod
    n_triggers}, C_{π_B(i)}): the m rules of a trigger map its m sources one-to-one onto the m
    outputs (a random bijection per trigger), so every output is also the output of one source of
    *every other* trigger. Predicting C after B therefore needs B to attend to its *own* source
    (QK: B -> A) and that source to write its output (OV: A -> C); neither the direct path of B
    nor attention to all sources at once can tell which C comes.

    Each sequence holds exactly one source A for *every* trigger (a random one of its rules) and
    `rules_per_seq` triggers B, all at independent random positions. A trigger whose source came
    earlier is followed by that rule's C; a trigger with no source before it is followed by noise.
    So an A says nothing about whether or where its B comes (no "A predicts B" shortcut), and C is
    determined by the pair (A earlier, B now) alone. Noise never contains A, B or C tokens.
    """

    n_rules: int = 24
    n_triggers: int = 6
    rules_per_seq: int = 3
    rule_seed: int = 0

    def __post_init__(self) -> None:
        n_special = 1 + self.n_rules + self.n_triggers + self.n_rules // max(self.n_triggers, 1)
        if self.d_vocab < n_special + 8:
            raise ValueError(f"SkipTrigramTask needs d_vocab >= {n_special + 8}, got {self.d_vocab}")
        if self.rules_per_seq > self.n_triggers or self.n_rules % self.n_triggers:
            raise ValueError("need rules_per_seq <= n_triggers and n_rules a multiple of n_triggers")
        if self.n_ctx < 3 * (self.n_triggers + 2 * self.rules_per_seq) + 2:
            raise ValueError(f"n_ctx too small for {self.n_triggers} sources and {self.rules_per_seq} rules")

    @property
    def sources(self) -> list[int]:
        return list(range(1, 1 + self.n_rules))

    @property
    def triggers(self) -> list[int]:
        return list(range(1 + self.n_rules, 1 + self.n_rules + self.n_triggers))

    @property
    def outputs(self) -> list[int]:
        s = 1 + self.n_rules + self.n_triggers
        return list(range(s, s + self.n_rules // self.n_triggers))

    @property
    def noise(self) -> list[int]:
        return list(range(1 + self.n_rules + self.n_triggers + self.n_rules // self.n_triggers, self.d_vocab))

    @property
    def rules(self) -> list[tuple[int, int, int]]:
        """The planted `(A, B, C)` triples: source, destination (trigger), output."""
        g = torch.Generator().manual_seed(self.rule_seed)
        T, m = self.n_triggers, self.n_rules // self.n_triggers
        perms = [torch.randperm(m, generator=g).tolist() for _ in range(T)]  # per trigger: source -> output
        return [(a, self.triggers[i % T], self.outputs[perms[i % T][i // T]]) for i, a in enumerate(self.sources)]

    def batch(self, batch_size: int, seed: int, step: int) -> torch.Tensor:
        g = step_generator(seed, step)
        rules = self.rules
        noise = torch.tensor(self.noise)
        n, T, k = self.n_ctx, self.n_triggers, self.rules_per_seq
        per_trig = self.n_rules // T
        out = noise[torch.randint(len(noise), (batch_size, n), generator=g)]
        out[:, 0] = BOS
        which = torch.randint(per_trig, (batch_size, T), generator=g)  # rule of each trigger: i = j + T * which
        order = torch.argsort(torch.rand(batch_size, T, generator=g), dim=1)  # first k triggers appear
        u = torch.rand(batch_size, T, 3, generator=g)
        for b in range(batch_size):
            free = list(range(1, n))
            for rank, j in enumerate(order[b].tolist()):
                a_tok, b_tok, c_tok = rules[j + T * int(which[b, j])]
                if rank < k:  # B at a free p whose successor p + 1 is free too
                    cands = [p for p in free if p + 1 in free]
                    p = cands[int(u[b, j, 0] * len(cands))]
                    free.remove(p)
                    free.remove(p + 1)
                qa = free[int(u[b, j, 1] * len(free))]  # the source, anywhere
                free.remove(qa)
                out[b, qa] = a_tok
                if rank < k:
                    out[b, p] = b_tok
                    if qa < p:  # the rule fires only when its source came first
                        out[b, p + 1] = c_tok
        return out


@dataclass
class RepeatTask(MaskedTask):
    """BOS, `offset` noise tokens, a random segment of length `rep_len`, the same segment again,
    then noise up to `n_ctx`; `rep_len` ~ U[min_len, max_len] and `offset` random per sequence.

    Tokens are uniform over 1..d_vocab-1. `repeat_mask(...)` marks the positions whose next token
    is predictable from the first copy.
    """

    def batch_with_mask(self, batch_size: int, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens `[batch, n_ctx]` and a bool mask `[batch, n_ctx]`: True where the *next* token
        is a repeat of the first copy (so its loss measures in-context copying)."""
        g = step_generator(seed, step)
        n = self.n_ctx
        out = torch.randint(1, self.d_vocab, (batch_size, n), generator=g)
        out[:, 0] = BOS
        lens = torch.randint(self.min_len, self.max_len + 1, (batch_size,), generator=g)
        room = n - 1 - 2 * lens  # free positions that can go before the segment
        offs = (torch.rand(batch_size, generator=g) * (room + 1).float()).long()
        mask = torch.zeros(batch_size, n, dtype=torch.bool)
        for b in range(batch_size):
            r, o = int(lens[b]), int(offs[b])
            s = 1 + o
            out[b, s + r: s + 2 * r] = out[b, s: s + r]
            # position t predicts token t+1; the second copy's first token (s+r) is not predictable
            # (random offset), its later ones are: t in [s+r, s+2r-2].
            mask[b, s + r: s + 2 * r - 1] = True
        return out, mask


@dataclass
class CopyTask(MaskedTask):
    """Repeated random sequences, many per window: after BOS and a few random tokens, the window is
    filled left to right with either a fresh run of random tokens or a *copy of a random earlier
    stretch* (length ~ U[min_len, max_len], source start uniform over the past), with probability
    `copy_prob` each. Repeat lengths and offsets vary freely, so attending a fixed (or typical)
    distance back does not help; only induction (find the earlier occurrence of the current token,
    predict what followed it) predicts the copies. Tokens are uniform over 1..d_vocab-1.
    """

    max_len: int = 16
    copy_prob: float = 0.7
    min_len_floor: ClassVar[int] = 2

    def batch_with_mask(self, batch_size: int, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens `[batch, n_ctx]` and a bool mask: True at positions whose next token is a copied
        token predictable from the earlier occurrence (every copied token but the first of a copy)."""
        g = step_generator(seed, step)
        n = self.n_ctx
        out = torch.randint(1, self.d_vocab, (batch_size, n), generator=g)
        out[:, 0] = BOS
        mask = torch.zeros(batch_size, n, dtype=torch.bool)
        n_draws = n  # upper bound on segments per row
        u = torch.rand(batch_size, n_draws, 3, generator=g).tolist()
        lens = torch.randint(self.min_len, self.max_len + 1, (batch_size, n_draws), generator=g).tolist()
        for b in range(batch_size):
            pos = 1 + self.min_len  # a few fresh tokens first
            for d in range(n_draws):
                if pos >= n:
                    break
                r = lens[b][d]
                if u[b][d][0] < self.copy_prob and pos - 1 >= r:
                    src = 1 + int(u[b][d][1] * (pos - r))  # a stretch inside [1, pos)
                    r = min(r, n - pos)
                    out[b, pos:pos + r] = out[b, src:src + r]
                    mask[b, pos:pos + r - 1] = True
                    pos += r
                else:  # a fresh run of random tokens
                    pos += 1 + int(u[b][d][2] * (self.max_len // 2))
        return out, mask


TASKS = {"bigram": BigramTask, "skip_trigrams": SkipTrigramTask, "repeat": RepeatTask, "copy": CopyTask}
