"""Head detection on behaviour (docs/ARCHITECTURE.md §8): previous-token, duplicate-token and induction
scores on BOS + repeated random tokens, the Olsson copying score and in-context loss.

Scores follow TransformerLens' head detector, with one precise normalisation:

    score[l, h] = Σ_{rows i ∈ R} Σ_j A[i, j] M[i, j]  /  Σ_{rows i ∈ R} Σ_j A[i, j]

summed over the batch, where `A` is the head's attention pattern `[query, key]`, `M` the detection
mask of the kind and `R` the query rows in which `M` has at least one entry. Because every pattern
row sums to 1, the score is the mean (over those rows) attention mass on the mask, in [0, 1].
Masks are built from the tokens themselves (so any token sequence works):

- previous_token: `M[i, j] = [j == i - 1]` (every row but the first);
- duplicate_token: `M[i, j] = [tok[j] == tok[i] and j < i]` (earlier occurrences, diagonal excluded);
- induction: the duplicate mask shifted one column right: `M[i, j] = [tok[j-1] == tok[i] and j <= i]`,
  i.e. the token after an earlier occurrence of the current token.

On `BOS + r + r` with `r` of length L drawn without repetition (what `repeated_tokens` makes), the
duplicate mask is the diagonal at offset −L and the induction mask the diagonal at offset −(L−1),
both restricted to the repeated half.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..model import Transformer
from . import _check
from ._check import check_layer_head
from .interventions import per_token_loss
from .prep import _entry as _check_weights  # finiteness checked once per weight version (cached)

KINDS = ("previous_token", "duplicate_token", "induction")

# Repeat lengths the default detection averages over (the one definition; the trainer's live metrics and
# the model cards use it too). A head that attends a fixed distance back is right at one length only; an
# induction head is right at all of them. Lengths a model's n_ctx cannot hold are dropped
# (`detection_lengths`).
REPEAT_LENS = (10, 23, 50, 100)


class _Stop(Exception):
    """Raised from the last pattern hook: head scores never need the unembedding."""


def _bos_id(model: Transformer, bos) -> int | None:
    if bos == "auto":
        return model.cfg.bos_token_id if model.cfg.bos_token_id is not None else 0
    if bos is None:
        return None
    if isinstance(bos, bool) or not isinstance(bos, int) or not 0 <= bos < model.cfg.d_vocab:
        raise ValueError(f"bos={bos!r} is out of range: token ids are 0..{model.cfg.d_vocab - 1} (or None / 'auto')")
    return bos


def repeated_tokens(d_vocab: int, seq_len: int, n_seqs: int = 1, seed: int = 0, bos: int | None = None,
                    device=None) -> torch.Tensor:
    """`[n_seqs, (bos is not None) + 2 * seq_len]` long tensor: `BOS + r + r` per row.

    `r` is `seq_len` random token ids from `[0, d_vocab)` excluding `bos`, drawn without repetition
    when the vocabulary allows (so the duplicate / induction masks are exact diagonals), with
    repetition otherwise. Deterministic in `seed`.
    """
    for name, v, lo in (("d_vocab", d_vocab, 1), ("seq_len", seq_len, 1), ("n_seqs", n_seqs, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name}={v!r} must be an integer >= {lo}")
    if bos is not None:
        i = _check.as_index(bos)
        if i is None or not 0 <= i < d_vocab:  # a float or bool id would be silently truncated
            raise ValueError(f"bos={bos!r} is out of range: token ids are 0..{d_vocab - 1}")
        bos = i
    if _check.as_index(seed) is None:
        raise ValueError(f"seed={seed!r} must be an integer")
    pool = torch.arange(d_vocab)
    if bos is not None:
        pool = pool[pool != bos]
    if len(pool) == 0:
        raise ValueError(f"d_vocab={d_vocab} leaves no token besides bos={bos}")
    g = torch.Generator().manual_seed(seed)
    if seq_len <= len(pool):
        idx = torch.stack([torch.randperm(len(pool), generator=g)[:seq_len] for _ in range(n_seqs)])
    else:
        idx = torch.randint(0, len(pool), (n_seqs, seq_len), generator=g)
    r = pool[idx]
    parts = [r, r]
    if bos is not None:
        parts.insert(0, torch.full((n_seqs, 1), bos, dtype=torch.long))
    return torch.cat(parts, 1).to(device)


def detection_masks(tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Boolean masks `[batch, query, key]` of each kind for `tokens` `[batch, pos]` (see module doc)."""
    b, p = tokens.shape
    ar = torch.arange(p, device=tokens.device)
    prev = (ar[:, None] - 1 == ar[None, :]).expand(b, p, p)
    strictly_lower = ar[None, :] < ar[:, None]
    dup = (tokens[:, :, None] == tokens[:, None, :]) & strictly_lower
    ind = torch.zeros_like(dup)
    ind[:, :, 1:] = dup[:, :, :-1]
    ind &= ar[None, :] <= ar[:, None]
    return {"previous_token": prev, "duplicate_token": dup, "induction": ind}


def induction_tokens(model: Transformer, seq_len: int | None = None, n_seqs: int = 1, seed: int = 0, bos="auto",
                     max_seq_len: int = 64) -> torch.Tensor:
    """`repeated_tokens` (`BOS + r + r`) sized and checked for `model`: `[n_seqs, pos]` on its device.

    seq_len: length of `r` (default `min(max_seq_len, what n_ctx allows)`); bos: "auto" =
    `cfg.bos_token_id`, or token 0 when the model has none; an int id; None = no BOS. The input of the
    head scores and in-context loss (at each of `detection_lengths(model)`), and of the composition view (12,
    BOS only if the model has one).
    """
    bos_id = _bos_id(model, bos)
    longest = (model.cfg.n_ctx - (bos_id is not None)) // 2
    if seq_len is None:
        seq_len = min(max_seq_len, longest)
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or not 1 <= seq_len <= longest:
        raise ValueError(
            f"seq_len={seq_len!r} is out of range: this model (n_ctx {model.cfg.n_ctx}) allows 1..{longest}"
        )
    return model.check_tokens(repeated_tokens(model.cfg.d_vocab, seq_len, n_seqs, seed, bos_id))


def _prepare_tokens(model: Transformer, tokens, seq_len, n_seqs, seed, bos) -> torch.Tensor:
    return model.check_tokens(tokens) if tokens is not None else induction_tokens(model, seq_len, n_seqs, seed, bos)


def detection_lengths(model: Transformer, seq_lens=None, bos="auto") -> tuple[int, ...]:
    """The repeat lengths L of `BOS + r + r` that detection averages over for `model`.

    seq_lens: None = `REPEAT_LENS` (10, 23, 50, 100) cut to what n_ctx holds, plus the longest length
    n_ctx holds when fewer than two fit and it is not already there (so a fixed-offset head is not scored at
    one length only; a context shorter than 22 tokens, 23 with BOS, still gets a single length);
    an int = that one length; a sequence of ints = those lengths (each checked by `induction_tokens`).
    """
    if seq_lens is not None and not isinstance(seq_lens, (list, tuple)):
        return (seq_lens,)
    if seq_lens is not None:
        if not seq_lens:
            raise ValueError("seq_len=() names no repeat length")
        return tuple(seq_lens)
    longest = (model.cfg.n_ctx - (_bos_id(model, bos) is not None)) // 2
    lens = tuple(n for n in REPEAT_LENS if n <= longest)
    if len(lens) < 2 and longest >= 1 and longest not in lens:
        lens += (longest,)
    return lens


@torch.no_grad()
def all_head_scores(model: Transformer, seq_len: int | None = None, n_seqs: int = 4, seed: int = 0,
                    tokens=None, bos="auto", kinds=KINDS) -> dict[str, torch.Tensor]:
    """Every detection score from one forward pass: `{kind: Tensor[n_layers, n_heads]}`.

    tokens: `[batch, pos]` ids to use instead of `repeated_tokens(d_vocab, seq_len, n_seqs, seed, bos)`.
    seq_len: length L of the repeated block; a sequence of lengths, or None (default) for
    `detection_lengths(model)`: the scores are then the mean over the lengths (one forward pass
    each), so a head that looks a fixed distance back does not pass for an induction head.
    bos: "auto" = `cfg.bos_token_id`, or token 0 when the model has none; an int id; None = no BOS.
    The forward pass stops after the last layer's attention pattern (no unembedding) and keeps no
    activation cache, so this is cheap enough to call at every evaluation of a training run. On repeated
    random tokens (`tokens` None) of an in-memory model with no hooks attached, each repeat length's scores
    are kept per model and weights version (all kinds from one pass): asking again, for any kinds, reruns
    nothing until a parameter is replaced or modified in place.
    Scores are in [0, 1]; NaN where no row of the batch has a mask entry (e.g. induction on
    tokens with no repeats). An nnsight / Hugging Face model or a lazy checkpoint: the patterns come
    from its activation source (`model.nnsight_source`; one trace per repeat length, every layer's
    pattern sent back), the scores computed here by the same code.
    """
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"kind={k!r} is not one of {KINDS}")
    from ..model.nnsight_source import as_source, is_source

    source = is_source(model)
    if source:  # nnsight / Hugging Face model, lazy checkpoint: the patterns come from its source
        model = as_source(model)
    if tokens is None:
        lens = detection_lengths(model, seq_len, bos)
        if len(lens) > 1:
            per_len = scores_by_length(model, lens, n_seqs, seed, bos, kinds)
            return {k: sum(p[k] for p in per_len.values()) / len(lens) for k in kinds}
        seq_len = lens[0]
        if not source and not model._hooks:  # a function of the weights: computed once per weights version
            return _cached_pass(model, seq_len, n_seqs, seed, bos, kinds)
    return _scores_pass(model, source, tokens, seq_len, n_seqs, seed, bos, kinds)


def _cached_pass(model: Transformer, seq_len: int, n_seqs: int, seed: int, bos, kinds) -> dict[str, torch.Tensor]:
    """`_scores_pass` on `BOS + r + r` of one repeat length, every kind at once, kept per model and weights
    version (`prep`'s cache: replacing or editing a parameter in place starts afresh) and handed out as
    copies: the explorer's opening head, the attention grid and `strongest_induction_head` share one pass.
    Each kind's score is computed independently of the others, so the values are what a pass for `kinds`
    alone gives."""
    cache = _check_weights(model).setdefault("head_scores", {})
    key = (seq_len, n_seqs, seed, _bos_id(model, bos))
    if key not in cache:
        cache[key] = _scores_pass(model, False, None, seq_len, n_seqs, seed, bos, KINDS)
    return {k: cache[key][k].clone() for k in kinds}


def _scores_pass(model, source: bool, tokens, seq_len, n_seqs: int, seed: int, bos, kinds) -> dict[str, torch.Tensor]:
    """`all_head_scores` of one batch (`tokens`, or `BOS + r + r` of length `seq_len`): one forward pass
    stopped at the last layer's pattern (one trace for an activation source `model`)."""
    if not source:
        _check_weights(model)
    toks = _prepare_tokens(model, tokens, seq_len, n_seqs, seed, bos)
    masks = detection_masks(toks)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    dt = torch.float32 if source else model.W_E.dtype
    prepared = _prepare_masks(masks, kinds, dt)
    out = {k: torch.full((L, H), float("nan"), dtype=torch.float32) for k in kinds}

    def score(pattern: torch.Tensor, layer: int) -> None:
        for k, v in _layer_scores(pattern, prepared).items():
            out[k][layer] = v

    def hook(pattern: torch.Tensor, hp) -> None:
        score(pattern, hp.layer())
        if hp.layer() == L - 1:
            raise _Stop

    if L == 0:
        return out
    if source:  # one trace: every layer's pattern (the scores are computed here, not in the trace)
        for layer, pattern in model.patterns(toks, list(range(L))).items():
            score(pattern.to(dt), layer)
    else:
        try:
            model.run_with_hooks(toks, fwd_hooks=[(("pattern", layer), hook) for layer in range(L)])
        except _Stop:
            pass
    for k, (_, rows) in prepared.items():  # NaN is "no mask entry" only for a kind with no entries
        _check.check_finite_output(f"{k} head scores", out[k], valid=bool(rows.any()),
                                   model=None if source else model, tokens=toks)
    return out


def _prepare_masks(masks: dict[str, torch.Tensor], kinds, dt: torch.dtype) -> dict[str, tuple]:
    """Per kind: the mask's entries as (batch, query, key) indices and its rows with an entry `[batch, query]`
    (masks are sparse, about one entry per row on repeated tokens: gather, never multiply densely)."""
    return {k: (masks[k].nonzero(as_tuple=True), masks[k].any(-1).to(dt)) for k in kinds}


def _layer_scores(pattern: torch.Tensor, prepared: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """Every kind's score `[head]` (float32) of one layer's patterns `[batch, head, q, k]` (module docstring)."""
    row_mass = pattern.sum(-1)  # [batch, head, q]; 1 up to rounding, kept so the score is the definition
    out = {}
    for k, ((bi, qi, ki), rows) in prepared.items():
        num = pattern[bi, :, qi, ki].sum(0)  # [head]
        den = torch.einsum("bhq,bq->h", row_mass, rows.to(pattern.device))
        out[k] = (num / den).float().cpu()
    return out


@torch.no_grad()
def scores_from_patterns(pattern: torch.Tensor, tokens: torch.Tensor, kinds=KINDS) -> dict[str, torch.Tensor]:
    """The detection scores of every head on one sequence from patterns already computed on it:
    `pattern [layer, head, q, k]` (e.g. `AttentionData.pattern`), `tokens [pos]` -> `{kind: [layer, head]}`
    float32, NaN where the text has no mask entry of the kind. With patterns in the model's dtype this is
    `all_head_scores(model, tokens=tokens[None], kinds=kinds)` without its forward pass (the same arithmetic)."""
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"kind={k!r} is not one of {KINDS}")
    toks = torch.as_tensor(tokens).reshape(1, -1).to(pattern.device)
    if pattern.ndim != 4 or pattern.shape[-1] != toks.shape[1] or pattern.shape[-2] != toks.shape[1]:
        raise ValueError(f"patterns of shape {tuple(pattern.shape)} do not fit {toks.shape[1]} tokens")
    prepared = _prepare_masks(detection_masks(toks), kinds, pattern.dtype)
    L, H = pattern.shape[:2]
    out = {k: torch.full((L, H), float("nan"), dtype=torch.float32) for k in kinds}
    for layer in range(L):
        for k, v in _layer_scores(pattern[layer][None], prepared).items():
            out[k][layer] = v
    return out


def scores_by_length(model: Transformer, seq_lens=None, n_seqs: int = 4, seed: int = 0, bos="auto",
                     kinds=KINDS) -> dict[int, dict[str, torch.Tensor]]:
    """`{L: all_head_scores(..., seq_len=L)}` for each L of `detection_lengths(model, seq_lens)`: the
    sweep that `all_head_scores` averages (a trainer logs it to show an induction head is right at
    every length)."""
    lens = detection_lengths(model, seq_lens, bos)
    return {n: all_head_scores(model, n, n_seqs, seed, None, bos, kinds) for n in lens}


def head_scores(model: Transformer, kind: str = "induction", seq_len: int | None = None, n_seqs: int = 4,
                seed: int = 0, tokens=None, bos="auto") -> torch.Tensor:
    """`Tensor[n_layers, n_heads]` detection score of `kind` ("previous_token" | "duplicate_token" |
    "induction") on `BOS + r + r` (or on `tokens`); see the module docstring for the definition.
    Averaged over `detection_lengths(model, seq_len)` (several repeat lengths by default)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not one of {KINDS}")
    return all_head_scores(model, seq_len, n_seqs, seed, tokens, bos, kinds=(kind,))[kind]


# ---------------------------------------------------------------------------------- copying
@torch.no_grad()
def copying_score(model: Transformer, layer: int | None = None, head: int | None = None,
                  n_tokens: int | None = 512, seed: int = 0, block_size: int = 256) -> torch.Tensor:
    """Olsson et al.'s behavioural copying score of each head, from its full OV circuit.

    For a source token t, the head's direct effect on the logits when it attends to t is row t of
    `W_E W_OV W_U` (row convention; `circuits.full_ov`: weights only, LN folded for LN models).
    The head copies t when that row raises t's own logit above the others. Per token we take the
    fraction of the other d_vocab − 1 tokens whose logit is raised strictly less than t's own (ties
    count half); the score is the mean of that fraction over source tokens, in [0, 1]:
    1 = every token raises itself most, 0.5 = what a random OV circuit gives, 0 = anti-copying.
    (This is the per-token, rank-based counterpart of the eigenvalue positivity of the same circuit.)

    n_tokens: number of source tokens sampled (without replacement, `seed`); None or >= d_vocab = all.
    layer, head: a single head (returns a 0-d tensor) or None for all heads `[n_layers, n_heads]`.
    Cost: one `[n_tokens, d_head] @ [d_head, d_vocab]` product per head, streamed in `block_size` rows.
    """
    cfg = model.cfg
    V = cfg.d_vocab
    block_size = _check.check_count(block_size, "block_size")
    single = layer is not None or head is not None
    if single:
        if layer is None or head is None:
            raise ValueError("copying_score: pass both layer and head, or neither")
        layer, head = check_layer_head(model, layer, head)
        heads = [(layer, head)]
    else:
        heads = [(lay, h) for lay in range(cfg.n_layers) for h in range(cfg.n_heads)]
    if n_tokens is None or n_tokens >= V:
        src = torch.arange(V)
    else:
        if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 1:
            raise ValueError(f"n_tokens={n_tokens!r} must be a positive integer or None")
        src = torch.randperm(V, generator=torch.Generator().manual_seed(seed))[:n_tokens].sort().values
    from .circuits import full_ov

    ov_all = full_ov(model)  # LN folded as everywhere in the engine
    src = src.to(ov_all.device)
    out = torch.full((cfg.n_layers, cfg.n_heads), float("nan"))
    from ._progress import tqdm

    for lay, h in tqdm(heads, desc="copying score", disable=len(heads) * len(src) * V < 5e8, leave=False):
        ov = ov_all[lay, h].to(torch.float32)
        left, right = ov.A, ov.B  # [V, r], [r, V]
        total = 0.0
        for s in range(0, len(src), block_size):
            t = src[s:s + block_size]
            rows = left[t] @ right  # [b, V]: rows t of W_E W_OV W_U
            own = rows.gather(1, t[:, None])
            below = (rows < own).sum(1).double() + 0.5 * ((rows == own).sum(1).double() - 1)
            total += (below / max(V - 1, 1)).sum().item()
        out[lay, h] = total / len(src)
    return out[heads[0]] if single else out  # a one-head model asked for all heads still gets [1, 1]


# ---------------------------------------------------------------------------------- in-context loss
@dataclass
class InContextLoss:
    """Cross-entropy (nats) on `BOS + r + r`.

    first: mean loss predicting the first block's tokens (targets at positions 1..L after BOS).
    repeated: mean loss predicting the repeated block's tokens except its first one (targets
    r_2..r_L of the second copy), which a model can predict from context alone.
    per_position: `[pos - 1]` mean loss (over sequences) of predicting token p+1 at position p (of the
    longest repeat length when several were averaged).
    by_length: `{L: (first, repeated)}` per repeat length L; `first` and `repeated` are their means.
    """

    first: float
    repeated: float
    per_position: torch.Tensor
    by_length: dict[int, tuple[float, float]] = field(default_factory=dict)

    @property
    def gain(self) -> float:
        """first − repeated: how much the repetition helps (large for models with induction heads)."""
        return self.first - self.repeated


@torch.no_grad()
def in_context_loss(model: Transformer, seq_len: int | None = None, n_seqs: int = 4, seed: int = 0,
                    bos="auto") -> InContextLoss:
    """Loss on the first half vs the repeated half of `BOS + r + r` (see `InContextLoss`).

    seq_len: the repeat length L; a sequence of lengths, or None (default) for `detection_lengths(model)`:
    first / repeated are then means over the lengths (what the trainer logs and the cards report)."""
    lens = detection_lengths(model, seq_len, bos)
    if len(lens) > 1:
        runs = {n: in_context_loss(model, n, n_seqs, seed, bos) for n in lens}
        by_len = {n: (r.first, r.repeated) for n, r in runs.items()}
        return InContextLoss(sum(f for f, _ in by_len.values()) / len(lens),
                             sum(r for _, r in by_len.values()) / len(lens), runs[max(lens)].per_position, by_len)
    seq_len = lens[0]
    if isinstance(seq_len, int) and not isinstance(seq_len, bool) and seq_len < 2:
        # the repeated block's first token does not follow from context: L = 1 leaves no position to score
        raise ValueError(f"in_context_loss needs a repeat length of at least 2 (got {seq_len}): the "
                         "repeated copy's first token cannot be predicted, so length 1 has no repeated loss")
    _check_weights(model)
    bos_id = _bos_id(model, bos)
    toks = _prepare_tokens(model, None, seq_len, n_seqs, seed, bos)
    off = 1 if bos_id is not None else 0
    L = (toks.shape[1] - off) // 2
    nll = per_token_loss(model(toks).float(), toks)  # [batch, pos-1]; entry p predicts token p+1
    per_pos = nll.mean(0).cpu()
    # target positions t: first block off..off+L-1 (t=0 is unpredictable without BOS: skipped),
    # repeated block off+L+1 .. off+2L-1 (its first token does not follow from context).
    first_t = torch.arange(max(off, 1), off + L)
    rep_t = torch.arange(off + L + 1, off + 2 * L)
    first = per_pos[first_t - 1].mean().item() if len(first_t) else float("nan")
    rep = per_pos[rep_t - 1].mean().item() if len(rep_t) else float("nan")
    _check.check_finite_output("in-context loss", per_pos, axes=("position",), model=model, tokens=toks)
    return InContextLoss(first, rep, per_pos, {int(L): (first, rep)})
