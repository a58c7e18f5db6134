"""The induction mechanism read off the weights (docs/ARCHITECTURE.md §12): the three circuits the
framework paper and Olsson et al. point to, each a pure function of the weights.

- **K-composition term** of the induction head h2's QK circuit through the previous-token head h1,
  `W_E W_Q^{h2} (W_K^{h2})ᵀ (W_OV^{h1})ᵀ W_Eᵀ` `[d_vocab, d_vocab]` (row convention): row = the query
  token at position i, column = the token h1 moved into key position j (the token at j − 1 when h1
  attends to the previous token). Derivation: h1 writes `e_t W_E W_OV^{h1}` at j; h2's key there
  gains `e_t W_E W_OV^{h1} W_K^{h2}` and the score with the query `e_s W_E W_Q^{h2}` is
  `e_s W_E W_Q W_Kᵀ W_OVᵀ W_Eᵀ e_tᵀ`. An induction head wants a large *diagonal* (s = t: "the token
  before this key is my token"), so the evidence is its eigenvalue positivity and its top-1 diagonal
  accuracy. (The token-QK circuit `W_E W_QK W_Eᵀ` alone is the wrong quantity for an induction head:
  it compares the query with the key's *own* token, which is not what the head matches.)
- **OV copying** of the induction head: the full OV circuit `W_E W_OV W_U`, its positivity and the
  fraction of source tokens whose own logit is the one it raises most (top-1).
- **Positional QK profile** of the previous-token head: the positional circuit
  `W_pos W_QK W_posᵀ / attn_scale`, each query row centred over the keys it may attend (softmax
  ignores a row constant), averaged per offset `j − i`; a previous-token head peaks at offset −1.

Weights only (no biases, normalisation folded as everywhere in the engine, §1). Nothing is formed at
`[d_vocab, d_vocab]` at once: diagonal accuracy streams rows of the factored product.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..model import Transformer
from . import streaming
from ._check import as_index, check_count, check_finite_output, check_layer_head
from .circuits import _gram, by_magnitude, check_offset, full_ov, keys_at, positional_qk, positivity
from .factored import FactoredMatrix
from .prep import weights

__all__ = [
    "DiagonalStats", "PositionalProfile", "decisive_position", "diagonal_stats", "induction_offsets",
    "induction_positions", "k_composition_eigenvalues", "k_composition_positivity", "k_composition_qk",
    "opening_head", "ov_copying", "positional_qk_profile", "strongest_induction_head", "text_induction_head",
]

Head = tuple[int, int]


@dataclass
class DiagonalStats:
    """How much a square token-token circuit favours its diagonal.

    positivity: `Re(Σλ) / Σ|λ|` of the circuit's eigenvalues, in [-1, 1] (+1: a pure "same token" map).
    top1: fraction of rows (over `tokens`) whose largest entry (over the columns in `tokens`) is the diagonal
    one; chance is `1 / n_tokens`.
    n_tokens: how many tokens the top-1 was measured over.
    """

    positivity: float
    top1: float
    n_tokens: int

    def __str__(self) -> str:
        return f"positivity {self.positivity:+.2f}, top-1 diagonal {self.top1:.2f} (chance {1 / self.n_tokens:.4f})"


def _positivity(fm: FactoredMatrix) -> float:
    return float(positivity(fm.eigenvalues(), "the circuit's eigenvalues"))


@torch.no_grad()
def diagonal_stats(fm: FactoredMatrix, tokens: torch.Tensor | None = None, block_size: int = 512) -> DiagonalStats:
    """Positivity (of the whole circuit) and top-1 diagonal accuracy (over `tokens`, default all) of a
    square `FactoredMatrix` `[n, n]`, streamed in `block_size` rows."""
    if fm.ndim != 2 or fm.ldim != fm.rdim:
        raise ValueError(f"diagonal_stats needs a square [n, n] circuit, got {tuple(fm.shape)}")
    block_size = check_count(block_size, "block_size")
    n = fm.ldim
    idx = torch.arange(n) if tokens is None else torch.as_tensor(tokens).long().flatten().unique()
    if len(idx) == 0 or int(idx.min()) < 0 or int(idx.max()) >= n:
        raise ValueError(f"tokens must be a non-empty set of ids in [0, {n})")
    left, right = fm.A, fm.B  # [n, r], [r, n]
    idx = idx.to(left.device)
    right_cols = right[:, idx]
    hits = 0
    for s in range(0, len(idx), block_size):
        rows = left[idx[s:s + block_size]] @ right_cols  # [b, |tokens|]
        want = torch.arange(s, min(s + block_size, len(idx)), device=rows.device)
        hits += int((rows.argmax(-1) == want).sum())
    return DiagonalStats(_positivity(fm), hits / len(idx), len(idx))


def _head(model: Transformer, head: Head) -> tuple[int, int]:
    if not (isinstance(head, tuple) and len(head) == 2):
        raise ValueError(f"a head is a (layer, head) pair, got {head!r}")
    return check_layer_head(model, *head)


def k_composition_qk(model: Transformer, prev_head: Head, ind_head: Head, offset=None) -> FactoredMatrix:
    """`W_E W_Q^{h2} (W_K^{h2})ᵀ (W_OV^{h1})ᵀ W_Eᵀ` `[d_vocab, d_vocab]`, h1 = `prev_head`, h2 = `ind_head`
    (h1 in an earlier layer): row = query token, column = the token h1 moved into the key position.

    The term of h2's attention score that K-composition through h1 adds (module docstring). Rotary models:
    h2's QK circuit at `offset` (Δ = query − key position, or a sequence of them to average over;
    `induction_offsets(model)` gives those at which an induction head attends on repeated tokens):
    `W_Q R_Δ W_Kᵀ` in place of `W_Q W_Kᵀ`. Other models: leave `offset` out. A lazy checkpoint gives the
    circuit's `[d_head, d_head]` rotation (`k_composition_cores`: the same nonzero eigenvalues)."""
    model = streaming.resolve(model)  # nnsight / HF models: their weights
    (l1, h1), (l2, h2) = _composition_pair(model, prev_head, ind_head)
    if streaming.is_lazy(model):
        return k_composition_cores(model, (l1, h1), l2, [h2], offset)[0]
    w = weights(model)
    W_E = w["W_E"]
    keys = keys_at(model, offset, l2, h2)  # W_K, or W_K R_Δᵀ for a rotary model (refuses a missing offset)
    return FactoredMatrix(W_E, w["W_Q"][l2, h2], keys.T, w["W_O"][l1, h1].T, w["W_V"][l1, h1].T, W_E.T)


def _composition_pair(model, prev_head: Head, ind_head: Head) -> tuple[tuple[int, int], tuple[int, int]]:
    (l1, h1), (l2, h2) = _head(model, prev_head), _head(model, ind_head)
    if not l1 < l2:
        raise ValueError(f"K-composition needs prev_head in an earlier layer than ind_head, got L{l1} and L{l2}")
    return (l1, h1), (l2, h2)


@torch.no_grad()
def k_composition_cores(model: Transformer, prev_head: Head, layer: int, heads=None, offset=None) -> FactoredMatrix:
    """`k_composition_qk` of the heads `heads` (default all) of `layer` through `prev_head`, as the circuits'
    `[d_head, d_head]` cyclic rotations `W_Vᵀ¹ (W_Eᵀ W_E) W_Q² M W_Kᵀ² W_Oᵀ¹` (M: the rotary offset matrix at
    `offset`, or none), a `FactoredMatrix` `[len(heads), d_head, d_head]` with the vocabulary-sized circuits'
    nonzero eigenvalues and trace. The vocabulary enters only through the Gram matrix `W_Eᵀ W_E`, cached per
    model (a lazy checkpoint: on disk; then two layers' weights are read)."""
    model = streaming.resolve(model)
    (l1, h1), (layer, _) = _composition_pair(model, prev_head, (layer, 0))
    cfg = model.cfg
    heads = torch.arange(cfg.n_heads) if heads is None else torch.as_tensor(
        [check_layer_head(model, layer, h)[1] for h in heads], dtype=torch.long)
    offset = check_offset(model, offset, "the QK circuit composed through an earlier head")
    if streaming.is_lazy(model):  # K/V heads unexpanded: query head h reads cfg.kv_head_of(h)
        w1, w2 = model.layer_weights(l1), model.layer_weights(layer)
        kv = torch.tensor([cfg.kv_head_of(h) for h in heads.tolist()], dtype=torch.long)
        W_Q, W_K, W_V, W_O = w2["W_Q"][heads], w2["W_K"][kv], w1["W_V"][cfg.kv_head_of(h1)], w1["W_O"][h1]
        EE = model.grams()["EE"]
    else:
        w = weights(model)
        W_Q, W_K, W_V, W_O = w["W_Q"][layer, heads], w["W_K"][layer, heads], w["W_V"][l1, h1], w["W_O"][l1, h1]
        EE = _gram(model, "EE")  # cached per model and weights (the eigenvalue views' Gram matrix)
    if offset is not None:  # rotary: W_Q R_Δ W_Kᵀ (`circuits.keys_at`)
        from ..model import rotary

        M = rotary.offset_matrix(cfg, offset, layer if cfg.rotary_base_sliding is not None else None)
        W_K = W_K @ M.to(W_K.device, W_K.dtype).mT
    left = W_V.mT.to(EE.dtype) @ EE  # [E, D]
    n = len(heads)
    return FactoredMatrix(left.expand(n, *left.shape), W_Q, W_K.mT, W_O.mT.expand(n, *W_O.mT.shape))


def k_composition_eigenvalues(model: Transformer, prev_head: Head, ind_head: Head, offset=None) -> torch.Tensor:
    """Eigenvalues of `k_composition_qk(model, prev_head, ind_head, offset)`, complex `[k]` (its nonzero ones,
    from `k_composition_cores`), sorted by decreasing magnitude; `NonFiniteResultError` naming both heads
    when they overflow."""
    model = streaming.resolve(model)
    (l1, h1), (l2, h2) = _composition_pair(model, prev_head, ind_head)
    lam = k_composition_cores(model, (l1, h1), l2, [h2], offset).eigenvalues()[0]
    return by_magnitude(check_finite_output(f"L{l2}H{h2}'s QK circuit composed through L{l1}H{h1}", lam, axes=(),
                                            model=model))


@torch.no_grad()
def k_composition_positivity(model: Transformer, prev_head: Head, offset=None) -> torch.Tensor:
    """Eigenvalue positivity (`circuits.positivity`) of every head's K-composition term through `prev_head`
    (`k_composition_qk`), float32 `[n_layers, n_heads]`: NaN for heads not in a later layer than `prev_head`
    (no such term) and for zero circuits; `NonFiniteResultError` naming the first head whose term overflows."""
    model = streaming.resolve(model)
    l1, h1 = _head(model, prev_head)
    cfg = model.cfg
    if l1 >= cfg.n_layers - 1:
        raise ValueError(f"L{l1}H{h1} has no later head to compose with")
    out = torch.full((cfg.n_layers, cfg.n_heads), float("nan"))
    for layer in range(l1 + 1, cfg.n_layers):  # each later layer's heads at once (a lazy model: one read each)
        lam = k_composition_cores(model, (l1, h1), layer, offset=offset).eigenvalues()
        for head in range(cfg.n_heads):  # an overflow is named by its head, as `k_composition_eigenvalues` does
            check_finite_output(f"L{layer}H{head}'s QK circuit composed through L{l1}H{h1}", lam[head], axes=(),
                                model=model)
        out[layer] = positivity(lam).float()
    return out


def induction_offsets(model: Transformer, seq_lens=None) -> list[int] | None:
    """The query − key offsets at which an induction head attends on `BOS + r + r`: Δ = |r| − 1 for each
    repeat length detection averages over (`heads.detection_lengths`; `seq_lens` as there). Rotary models
    only (their QK circuits depend on Δ); None for the others."""
    if model.cfg.positional != "rotary":
        return None
    from .heads import detection_lengths

    return [n - 1 for n in detection_lengths(model, seq_lens)]


def ov_copying(model: Transformer, head: Head, tokens: torch.Tensor | None = None) -> DiagonalStats:
    """Copying evidence of one head's full OV circuit `W_E W_OV W_U`: positivity and top-1 (does attending
    to token t raise t's own logit most?), over `tokens` (default all)."""
    model = streaming.resolve(model)
    layer, h = _head(model, head)
    return diagonal_stats(full_ov(model)[layer, h], tokens)


@dataclass
class PositionalProfile:
    """Positional QK circuit of one head per offset.

    offsets: `[n]` key − query offsets, −(n − 1) … 0. score: `[n]` mean row-centred attention score at each
    offset (score units: what enters the softmax). count: `[n]` how many query positions each mean is over
    (n − |d|). peak: the offset with the highest score among those averaged over at least half of the query
    positions (−1 for a previous-token head): the farthest offsets are means over a handful of rows whose keys
    are the first positions (where BOS sits, a sink many heads attend to), an absolute position, not an offset.
    """

    offsets: torch.Tensor
    score: torch.Tensor
    count: torch.Tensor

    @property
    def peak(self) -> int:
        supported = 2 * self.count >= self.count.max()
        return int(self.offsets[supported][int(self.score[supported].argmax())])


@torch.no_grad()
def positional_qk_profile(model: Transformer, head: Head, n_pos: int | None = None) -> PositionalProfile:
    """The positional QK circuit `W_pos W_QK W_posᵀ / attn_scale` of `head` as a function of the offset.

    For each query position i < `n_pos` (default n_ctx), the scores of the keys j ≤ i are centred (softmax
    ignores a constant per row); the profile at offset d = j − i is their mean over the queries that
    have such a key. Needs learned positions (`positional` "standard" or "shortformer")."""
    layer, h = _head(model, head)
    if "W_pos" not in weights(model):
        raise ValueError(f"positional_qk_profile needs learned positions (this model: {model.cfg.positional!r})")
    n = model.cfg.n_ctx if n_pos is None else as_index(n_pos)  # 2.5 / True are not position counts
    if n is None or not 1 <= n <= model.cfg.n_ctx:
        raise ValueError(f"n_pos={n_pos!r} must be in 1..{model.cfg.n_ctx}")
    s = positional_qk(model)[layer, h].materialize()[:n, :n].double() / model.cfg.attn_scale  # [query, key]
    causal = torch.ones(n, n, dtype=torch.bool, device=s.device).tril()
    mean = (s * causal).sum(-1, keepdim=True) / causal.sum(-1, keepdim=True)
    centred = (s - mean) * causal
    offsets = torch.arange(-(n - 1), 1)
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    d = (j - i)[causal.cpu()]
    vals = centred.cpu()[causal.cpu()]
    total = torch.zeros(n, dtype=torch.float64).index_add_(0, d + n - 1, vals)
    count = torch.zeros(n, dtype=torch.float64).index_add_(0, d + n - 1, torch.ones_like(vals))
    score = check_finite_output(f"L{layer}H{h}'s positional QK profile", (total / count).float(), axes=("offset",),
                                model=model)
    return PositionalProfile(offsets, score, count.long())


# ------------------------------------------------------------------------------- where induction shows
def strongest_induction_head(model: Transformer, n_seqs: int = 4, seed: int = 0) -> Head:
    """The head with the highest induction score (engine `head_scores`, averaged over the repeat-length
    sweep) in a layer ≥ 1 (an induction head needs an earlier head to compose with); any layer for a
    one-layer model.

    The default sweep is `all_head_scores(model)`'s own (4 sequences per repeat length), so the head is the
    top of the attention grid's induction colour, and the pass is made once per weights version (cached:
    the grid and every later view of the model read the same scores)."""
    from .heads import head_scores

    s = head_scores(model, "induction", n_seqs=n_seqs, seed=seed)
    first = 1 if model.cfg.n_layers > 1 else 0
    s = torch.nan_to_num(s[first:], nan=-1.0)
    layer, head = divmod(int(s.argmax()), model.cfg.n_heads)
    return layer + first, head


def text_induction_head(model: Transformer, tokens, data=None) -> Head | None:
    """The head with the highest induction score on `tokens` themselves (`heads.scores_from_patterns`: the
    attention each position pays to the token after an earlier occurrence of its own token), in a layer ≥ 1
    (any layer for a one-layer model); None when the text has too few repeats for a score that a fixed-offset
    head could not fake (fewer than `MIN_TEXT_REPEATS` repeated tokens, or most of them at one distance from
    their earlier occurrence, as in a text repeated once). Patterns from
    `data` (an `AttentionData` of these tokens, e.g. a `text_run`'s: no forward pass) or computed."""
    from .heads import scores_from_patterns
    from .patterns import attention_patterns

    toks = model.check_tokens(tokens)[0]
    if not _enough_repeats(toks.cpu()):
        return None
    if data is None:
        data = attention_patterns(model, toks)
    s = scores_from_patterns(data.pattern, toks.cpu(), kinds=("induction",))["induction"]
    first = 1 if model.cfg.n_layers > 1 else 0
    s = s[first:]
    if not bool(torch.isfinite(s).any()):
        return None
    layer, head = divmod(int(torch.nan_to_num(s, nan=-1.0).argmax()), model.cfg.n_heads)
    return layer + first, head


# A text score only counts when it cannot come from a head that looks a fixed distance back: enough scored
# positions, and no one distance to the earlier occurrence behind most of them (a text repeated once has one).
MIN_TEXT_REPEATS, MAX_ONE_DISTANCE_SHARE = 16, 0.5


def _enough_repeats(toks: torch.Tensor) -> bool:
    """Whether `toks` `[pos]` has >= MIN_TEXT_REPEATS positions whose token occurred before, with no one
    distance to the nearest earlier occurrence shared by more than MAX_ONE_DISTANCE_SHARE of them."""
    from .heads import detection_masks

    dup = detection_masks(toks[None])["duplicate_token"][0]  # [query, key]: an earlier occurrence
    rows = dup.any(-1)
    if int(rows.sum()) < MIN_TEXT_REPEATS:
        return False
    ar = torch.arange(len(toks))
    nearest = torch.where(dup, ar[None, :], -1).max(-1).values  # latest earlier occurrence per query
    _, counts = torch.unique((ar - nearest)[rows], return_counts=True)
    return int(counts.max()) <= MAX_ONE_DISTANCE_SHARE * int(rows.sum())


def opening_head(model: Transformer, tokens, data=None) -> Head:
    """Where a view of `model` on `tokens` opens (the explorer's default selection): the strongest induction
    head on the text itself (`text_induction_head`, from patterns the view has anyway), or, on a text with
    too few repeats to tell an induction head from a fixed-offset one, the strongest on repeated random
    tokens over several repeat lengths (`strongest_induction_head`: a forward pass per repeat length, each
    stopped at the last layer's pattern, made once per weights version)."""
    return text_induction_head(model, tokens, data) or strongest_induction_head(model)


def induction_positions(tokens: torch.Tensor) -> torch.Tensor:
    """Positions p of `tokens` `[pos]` whose next token induction predicts: some earlier q < p has
    `tokens[q] == tokens[p]` and `tokens[q + 1] == tokens[p + 1]`. Long tensor, increasing."""
    t = torch.as_tensor(tokens).flatten()
    P = len(t)
    if P < 3:
        return torch.zeros(0, dtype=torch.long)
    cur, nxt = t[:-1], t[1:]  # [P - 1]
    same = (cur[:, None] == cur[None, :]) & (nxt[:, None] == nxt[None, :])  # [p, q]
    earlier = torch.ones(P - 1, P - 1, dtype=torch.bool).tril(-1)
    return (same & earlier).any(-1).nonzero().flatten()


@torch.no_grad()
def decisive_position(model: Transformer, tokens: torch.Tensor,
                      head: Head | Callable[[], Head] | None = None) -> int:
    """An induction position (`induction_positions`) where `head` (default `strongest_induction_head`)
    decides the next token most: the largest direct contribution of the head's output to the next
    token's logit, centred over the vocabulary (`result · (W_U[:, next] − mean_c W_U[:, c])`, ln_final
    ignored: a view's default, not a measurement). The last position when the input has none (or the
    model has no heads). `head` may be a callable returning the head: it is called only when there are
    induction positions to choose from (a view's opening-head rule can cost a repeat-length sweep).
    A lazy checkpoint or an nnsight / Hugging Face model: the head's write from one pass through its
    activation source (stopped after the head's layer), the unembedding read there (in blocks)."""
    src = None
    if not isinstance(model, Transformer):
        from .activations import as_source

        src = as_source(model)
    cfg = (src or model).cfg
    t = (src or model).check_tokens(torch.as_tensor(tokens).flatten()[None])[0]
    pos = induction_positions(t.cpu())
    if len(pos) == 0 or not cfg.n_layers:
        return len(t) - 1
    if callable(head):
        head = head()
    layer, h = _head(src or model, head if head is not None else strongest_induction_head(model))  # (cfg only)
    if src is not None:
        out = src.head_writes(t[None], [(layer, h)])[(layer, h)][0]  # [pos, d_model]
        direction = src.centred_unembedding(t[pos + 1])  # [d_model, n]
        contrib = (out[pos] * direction.T).sum(-1)
        return int(pos[int(contrib.argmax())])
    from .text_run import shared_text_run

    shared = shared_text_run(model, t)
    if shared is not None:  # a live run of these tokens (the explorer's) kept every head's z
        out = shared.head_output(layer, h)
    else:
        from .patterns import run_until

        name, kept = f"blocks.{layer}.attn.hook_result", []  # that one activation only, and stop there
        run_until(model, t[None], [(name, lambda x, hp: kept.append(x[0, :, h]))], last=name)
        out = kept[0]  # [pos, d_model]: what the head writes
    W_U = model.W_U
    direction = W_U[:, t[pos + 1]] - W_U.mean(1, keepdim=True)  # [d_model, n]
    contrib = (out[pos.to(out.device)] * direction.T).sum(-1)
    return int(pos[int(contrib.argmax())])
