"""Skip-trigrams `[A] … [B] → [C]` of one attention head (docs/ARCHITECTURE.md §7), streamed.

A = source token (attended to, key side), B = destination token (query side), C = output token.
With the row convention, for a head (layer l, head h):

    full QK circuit   QK[b, a] = (W_E W_Q)[b] · (W_E W_K)[a] / attn_scale     (score units)
    full OV circuit   OV[a, c] = (W_E W_V)[a] · (W_O W_U)[:, c]                 (logit units)

Centring (QK values are only comparable within a query row; OV values within an output row):

    QKc[b, a] = QK[b, a] − mean_a' QK[b, a'] = (W_E W_Q)[b] · (K[a] − mean(K))      K = W_E W_K
    OVc[a, c] = OV[a, c] − mean_c' OV[a, c'] = (W_E W_V)[a] · (U[:, c] − mean(U))   U = W_O W_U

so centring is done on the d_head-wide factors, never on a vocab × vocab matrix.
For each source A the table lists the top `n_dest` destinations B from column A of QKc and the top
`n_out` outputs C from row A of OVc. Sources are ranked by

    strength(A) = max(0, max_b QKc[b, A]) · max_c OVc[A, c]

(how much the best destination attends to A more than to an average key, times how much attending
to A raises its best output logit above that row's mean). Ranking needs the two maxima for every
source: one streamed pass over tiles of `block_size` sources × `col_block` vocabulary columns, each a GEMM
reduced with `amax` tile by tile (peak memory `O(block · col_block)`). The lists themselves are computed
on demand (`for_source`, `rows`) from factors kept in memory: a GEMV per source, milliseconds.

The circuits are the engine's (`circuits.full_qk`, `circuits.full_ov`): weights only (no biases,
no positional embeddings), LayerNorm folded for LN models (`prep.prepared`). All maths in float32
on the weights' device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..model import Transformer
from ..model.lazy import is_lazy
from . import streaming
from ._check import check_count, check_finite_output, check_layer_head, check_token


@dataclass
class SkipTrigramRow:
    """One source token A with its top destinations B and outputs C.

    dests / dest_values: `[n_dest]` ids and centred QK values (attention-score units) of column A;
    outs / out_values: `[n_out]` ids and centred OV values (logit units) of row A.
    """

    source: int
    strength: float
    top_qk: float
    top_ov: float
    dests: list[int]
    dest_values: list[float]
    outs: list[int]
    out_values: list[float]
    source_str: str | None = None
    dest_strs: list[str] | None = None
    out_strs: list[str] | None = None
    rank: int | None = field(default=None)

    def triples(self, n: int | None = None) -> list[tuple[int, int, int]]:
        """(A, B, C) triples of this source, best destination × best output first (all pairs when n is None)."""
        pairs = [(self.source, b, c) for b in self.dests for c in self.outs]
        return pairs if n is None else pairs[:n]

    def __str__(self) -> str:
        def name(i, s):
            return repr(s) if s is not None else str(i)

        src = name(self.source, self.source_str)
        ds = ", ".join(name(b, s) for b, s in zip(self.dests[:5], self.dest_strs or [None] * len(self.dests)))
        cs = ", ".join(name(c, s) for c, s in zip(self.outs[:5], self.out_strs or [None] * len(self.outs)))
        return f"[{src}] … [{ds}] → [{cs}]  (strength {self.strength:.3g})"


def default_offset(model: Transformer):
    """The offset(s) a rotary model's skip-trigram QK circuit is read at when none is given: averaged
    over Δ = 1 .. min(n_ctx - 1, 64) (a source token anywhere among the last 64 before the destination;
    Δ = 0, the destination itself, is not a skip). None for other models."""
    if model.cfg.positional != "rotary":
        return None
    return range(1, max(2, min(model.cfg.n_ctx, 65)))


def _factors(model: Transformer, layer: int, head: int, offset=None) -> dict[str, torch.Tensor]:
    """float32 factors of the head's full circuits (from `circuits.head_full_qk` / `full_ov`, so LN is
    folded the way the rest of the engine folds it): `q [V, r]` (scaled by 1/attn_scale),
    centred `k [V, r]`, `v [V, r']`, centred `u [r', V]`, with r, r' = the circuits' smallest inner dims."""
    from .circuits import full_ov, head_full_qk

    fq = head_full_qk(model, layer, head, offset).to(torch.float32)
    fo = full_ov(model)[layer, head].to(torch.float32)
    q = fq.A / float(model.cfg.attn_scale)
    k = fq.B.T
    v, u = fo.A, fo.B
    return {"q": q.contiguous(), "k": (k - k.mean(0)).contiguous(), "v": v.contiguous(),
            "u": (u - u.mean(1, keepdim=True)).contiguous()}


class SkipTrigramTable:
    """The skip-trigram table of one head: every source's strength, lists on demand.

    strength, top_qk, top_ov: `[d_vocab]` float32 (CPU); order: `[d_vocab]` sources by strength,
    strongest first. `table[i]` / iteration / `rows(start, n)` go down that order;
    `for_source(token)` looks one source up by id (or string when the model has a tokenizer).
    """

    def __init__(self, model: Transformer, layer: int, head: int, factors: dict[str, torch.Tensor],
                 top_qk: torch.Tensor, top_ov: torch.Tensor, k: int, n_dest: int, n_out: int, block_size: int,
                 vocab: torch.Tensor | None = None):
        self.model, self.layer, self.head = model, layer, head
        self._f = factors
        # vocab: the token ids allowed as A, B and C (position i of the arrays below is token vocab[i]);
        # None = the whole vocabulary (position = token id)
        self.vocab = vocab
        self._pos = None
        if vocab is not None:
            self._pos = {int(t): i for i, t in enumerate(vocab.tolist())}
        self.top_qk, self.top_ov = top_qk, top_ov
        self.strength = top_qk.clamp(min=0) * top_ov
        self.order = torch.argsort(self.strength, descending=True, stable=True)
        self._rank = torch.empty_like(self.order)
        self._rank[self.order] = torch.arange(len(self.order))
        self.k, self.n_dest, self.n_out, self.block_size = k, n_dest, n_out, block_size
        self._strs = None

    # -------------------------------------------------------------- token strings
    def _to_strs(self, ids: list[int]) -> list[str] | None:
        tok = self.model.tokenizer
        return None if tok is None else tok.id_to_str(ids)

    def _resolve(self, token) -> int:
        if isinstance(token, str):
            tok = self.model.tokenizer
            if tok is None:
                raise ValueError("token given as a string but this model has no tokenizer: pass a token id")
            tid = tok.token_to_id(token)
            if tid is None:
                ids = tok.encode(token)
                if len(ids) != 1:
                    raise ValueError(f"token={token!r} is not a single token (encodes to {ids})")
                tid = ids[0]
            return check_token(self.model, int(tid))
        if isinstance(token, torch.Tensor):
            token = int(token.item())
        return check_token(self.model, token)

    # -------------------------------------------------------------- lists
    @torch.no_grad()
    def _lists(self, sources: torch.Tensor) -> list[SkipTrigramRow]:
        f = self._f
        dev = f["q"].device
        nd, no = min(self.n_dest, len(f["q"])), min(self.n_out, f["u"].shape[1])
        rows = []
        for s in range(0, len(sources), self.block_size):
            src = sources[s:s + self.block_size].to(dev)
            qk = f["k"][src] @ f["q"].T  # [n, V]: column src of centred QK, over destinations
            ov = f["v"][src] @ f["u"]  # [n, V]: row src of centred OV, over outputs
            dv, di = qk.topk(nd, dim=1)
            ovv, oi = ov.topk(no, dim=1)
            dv, di, ovv, oi = dv.cpu(), di.cpu(), ovv.cpu(), oi.cpu()
            if self.vocab is not None:  # positions in the subset -> token ids
                di, oi = self.vocab[di], self.vocab[oi]
            for j, p in enumerate(src.cpu().tolist()):
                a = p if self.vocab is None else int(self.vocab[p])
                dests, outs = di[j].tolist(), oi[j].tolist()
                rows.append(SkipTrigramRow(
                    source=a, strength=float(self.strength[p]), top_qk=float(self.top_qk[p]),
                    top_ov=float(self.top_ov[p]), dests=dests, dest_values=dv[j].tolist(), outs=outs,
                    out_values=ovv[j].tolist(), source_str=(self._to_strs([a]) or [None])[0],
                    dest_strs=self._to_strs(dests), out_strs=self._to_strs(outs), rank=int(self._rank[p]),
                ))
        return rows

    def for_source(self, token) -> SkipTrigramRow:
        """The row of one source token A (id, or string for models with a tokenizer); with a `vocab`
        subset, A must be in it (ValueError otherwise)."""
        t = self._resolve(token)
        if self._pos is not None:
            if t not in self._pos:
                raise ValueError(f"token {t} is not among this table's {len(self._pos)} allowed tokens (vocab=)")
            t = self._pos[t]
        return self._lists(torch.tensor([t]))[0]

    def rows(self, start: int = 0, n: int | None = None) -> list[SkipTrigramRow]:
        """Rows `start .. start + n` in strength order (n defaults to `k`)."""
        n = self.k if n is None else n
        V = len(self.order)
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < V:
            raise IndexError(f"start={start!r} is out of range: rows are 0..{V - 1}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n={n!r} must be a non-negative integer")
        return self._lists(self.order[start:start + n])

    def __len__(self) -> int:
        return self.k

    def __getitem__(self, i: int) -> SkipTrigramRow:
        if isinstance(i, bool) or not isinstance(i, int) or not -self.k <= i < self.k:
            raise IndexError(f"row {i!r} is out of range: this table shows rows 0..{self.k - 1} (use .rows())")
        return self.rows(i % self.k, 1)[0]

    def __iter__(self):
        return iter(self.rows(0, self.k))

    def triples(self, n: int = 20) -> list[tuple[int, int, int, float]]:
        """Top `n` (A, B, C, score) triples among the first `k` sources, score = max(0, QKc[B, A]) · OVc[A, C]."""
        cand = []
        for r in self.rows(0, self.k):
            for b, qv in zip(r.dests, r.dest_values):
                for c, ov in zip(r.outs, r.out_values):
                    cand.append((r.source, b, c, max(qv, 0.0) * ov))
        cand.sort(key=lambda t: -t[3])
        return cand[:n]

    def __repr__(self) -> str:
        head = f"SkipTrigramTable(layer={self.layer}, head={self.head}, top {self.k} of {len(self.order)} sources)"
        return "\n".join([head] + [f"{i:4d}  {r}" for i, r in enumerate(self.rows(0, min(self.k, 10)))])


def _block_maxima(left: torch.Tensor, rights: list[torch.Tensor]) -> torch.Tensor:
    """Row maxima of `left @ cat(rights, 1)` `[n]`, one cache-sized tile `[n, col_block]` at a time."""
    tile_max = torch.empty(len(rights), left.shape[0], dtype=left.dtype, device=left.device)
    buf = torch.empty(left.shape[0], rights[0].shape[1], dtype=left.dtype, device=left.device)
    for j, r in enumerate(rights):
        b = buf if r.shape[1] == buf.shape[1] else torch.empty(left.shape[0], r.shape[1], dtype=left.dtype,
                                                                device=left.device)
        torch.mm(left, r, out=b)
        torch.amax(b, 1, out=tile_max[j])
    return tile_max.amax(0)


@torch.no_grad()
def source_maxima(factors: dict[str, torch.Tensor], block_size: int | None = None, col_block: int | None = None,
                  progress: bool | None = None, workers: int | None = None,
                  threads_per_worker: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`(top_qk, top_ov)`, each `[d_vocab]` float32 on CPU: max over destinations of column A of the
    centred QK circuit, and max over outputs of row A of the centred OV circuit, for every A
    (for the sources whose rows `factors["k"]`, `factors["v"]` hold, when given a subset).

    Tiled: blocks of `block_size` sources, each multiplied `col_block` vocabulary columns at a time
    and reduced with amax while the tile is still in cache (no `[block, d_vocab]` output ever goes
    to memory). On CPU the blocks are shared out to `workers` threads (default min(4, torch threads)),
    each running its GEMMs with `threads_per_worker` threads (default the rest): no thread waits at a
    barrier for a core another process holds, so the scan keeps its speed on a shared machine.
    Measured (V = 50257, d_head 64, AMD EPYC host of an H200 machine, ratio to a square GEMM of the
    same FLOPs): 2 threads, quiet: 1.11 (OpenMP-only tiles 0.91); 2 threads with 5 other busy
    processes: 0.77–0.87 (OpenMP-only tiles: 10.5); 16 threads, quiet: 1.41 (4 workers × 4 threads).
    CPU defaults: 1024 sources × 512 columns (1024 when workers run multithreaded); GPU: 2048
    sources × the whole vocabulary, one stream.
    """
    from concurrent.futures import ThreadPoolExecutor

    from ._progress import tqdm

    q, k, v, u = factors["q"], factors["k"], factors["v"], factors["u"]
    V, n_src = q.shape[0], k.shape[0]  # k, v may hold a subset of sources; q, u always the whole vocabulary
    on_cpu = q.device.type == "cpu"
    n_threads = torch.get_num_threads()
    n_workers = (workers or min(n_threads, 4)) if on_cpu else 1
    tpw = threads_per_worker or max(1, n_threads // n_workers)
    block_size = block_size or (1024 if on_cpu else 2048)
    col_block = col_block or ((512 if tpw == 1 else 1024) if on_cpu else V)
    # contiguous column chunks of the right-hand factors, made once: [d_head, col_block] each
    qt = [q[c:c + col_block].T.contiguous() for c in range(0, V, col_block)]
    uc = [u[:, c:c + col_block].contiguous() for c in range(0, V, col_block)]
    top_qk = torch.empty(n_src, dtype=torch.float32, device=q.device)
    top_ov = torch.empty(n_src, dtype=torch.float32, device=q.device)
    starts = range(0, n_src, block_size)

    def run(s: int) -> None:
        e = min(s + block_size, n_src)
        top_qk[s:e] = _block_maxima(k[s:e], qt)
        top_ov[s:e] = _block_maxima(v[s:e], uc)

    if progress is None:
        progress = n_src * V * q.shape[1] > 2e10  # about a second or more of GEMM on a laptop
    bar = tqdm(total=len(starts), desc="skip-trigram scan", disable=not progress, leave=False)
    if n_workers <= 1:
        for s in starts:
            run(s)
            bar.update()
    else:
        # torch.set_num_threads in a worker sets that thread's OpenMP/MKL thread count only
        with ThreadPoolExecutor(n_workers, initializer=torch.set_num_threads, initargs=(tpw,)) as ex:
            for _ in ex.map(run, starts):
                bar.update()
    bar.close()
    return top_qk.cpu(), top_ov.cpu()


def frequent_tokens(tokens, n: int, d_vocab: int | None = None) -> torch.Tensor:
    """The `n` most frequent token ids of a corpus (`tokens`: ids of any shape, e.g. `[batch, pos]`),
    most frequent first (ties: smaller id first): `[min(n, distinct ids)]` int64. The `vocab=` of
    `skip_trigrams` for "the top-N corpus tokens"."""
    n = check_count(n, "n", 0)  # a negative n sliced `order[:n]` from the end: all but |n| tokens
    t = torch.as_tensor(tokens)
    if t.numel() and (t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool):  # [] reads as float
        raise TypeError(f"tokens must be integer ids, got dtype {t.dtype}")
    t = t.reshape(-1).to(torch.int64)
    if t.numel() and int(t.min()) < 0:
        raise ValueError("token ids must be >= 0")
    counts = torch.bincount(t, minlength=d_vocab or 0)
    present = int((counts > 0).sum())
    order = torch.argsort(-counts, stable=True)
    return order[: min(n, present)]


def skip_trigrams(model: Transformer, layer: int, head: int, k: int = 20, n_dest: int = 10, n_out: int = 10,
                  block_size: int | None = None, col_block: int | None = None,
                  progress: bool | None = None, offset=None, vocab=None) -> SkipTrigramTable:
    """The skip-trigram table of head (layer, head): sources ranked by strength (module docstring).

    k: rows shown by default (`len(table)`, iteration); more via `table.rows(start, n)`.
    n_dest, n_out: length of each source's destination and output lists.
    block_size, col_block: the scan's tile (sources × vocabulary columns; see `source_maxima`); lists
    for `rows` are computed up to 256 sources at a time (two `[256, d_vocab]` float32 blocks).
    Never materialises a d_vocab × d_vocab matrix; one pass costs 4 · d_vocab² · d_head FLOPs.
    offset: rotary models only: the query − key offset(s) the QK circuit is read at (an int, or a
    sequence to average over); default `default_offset(model)` (the mean over Δ = 1..64).
    vocab: token ids (e.g. `frequent_tokens(corpus, 300)`); sources A, destinations B and outputs C
    are then all taken from this subset only. The values stay the whole-vocabulary table's (centred
    over the whole vocabulary), so a row of the filtered table is the full row with the other tokens
    left out; `strength` etc. are then indexed by position in `table.vocab`. None: every token.
    """
    model = streaming.resolve(model)  # nnsight / HF models: their weights (lazily where possible)
    if is_lazy(model):  # a checkpoint read layer by layer
        if vocab is not None:
            raise ValueError("skip_trigrams(vocab=...) needs a model in memory: a lazy / streamed model ranks "
                             "the whole vocabulary (convert it with .to_transformer() to filter)")
        return streaming.skip_trigrams(model, layer, head, k, n_dest, n_out, block_size, col_block, progress, offset)
    layer, head = check_layer_head(model, layer, head)
    checks = (("k", k), ("n_dest", n_dest), ("n_out", n_out), ("block_size", 1 if block_size is None else block_size),
              ("col_block", 1 if col_block is None else col_block))
    for name, val in checks:
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{name}={val!r} must be an integer >= 1")
    if offset is None:
        offset = default_offset(model)
    f = _factors(model, layer, head, offset)
    ids = None
    if vocab is not None:
        ids = torch.as_tensor(vocab)
        if ids.numel() == 0:  # (before the dtype: torch reads [] as float32)
            raise ValueError("vocab is empty: give at least one token id")
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise TypeError(f"vocab must be integer token ids, got dtype {ids.dtype}")
        ids = ids.reshape(-1).to(torch.int64).cpu()
        if int(ids.min()) < 0 or int(ids.max()) >= model.cfg.d_vocab:
            raise ValueError(f"vocab holds ids outside 0..{model.cfg.d_vocab - 1}")
        if len(torch.unique(ids)) != len(ids):
            raise ValueError("vocab holds repeated token ids")
        dev = f["q"].device
        sel = ids.to(dev)
        f = {"q": f["q"][sel].contiguous(), "k": f["k"][sel].contiguous(), "v": f["v"][sel].contiguous(),
             "u": f["u"][:, sel].contiguous()}  # centred over the whole vocabulary first (_factors)
    k = min(k, model.cfg.d_vocab if ids is None else len(ids))
    top_qk, top_ov = source_maxima(f, block_size, col_block, progress)
    table = SkipTrigramTable(model, layer, head, f, top_qk, top_ov, k, n_dest, n_out, min(block_size or 256, 256),
                             vocab=ids)
    for what, v in (("QK maxima", top_qk), ("OV maxima", top_ov), ("strengths", table.strength)):
        check_finite_output(f"L{layer}H{head}'s skip-trigram {what}", v, axes=("source",))
    return table
