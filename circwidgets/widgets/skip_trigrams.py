"""SkipTrigrams: one head's top skip-trigrams `[A] … [B] → [C]`, with search and more rows on demand."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import traitlets

from ..engine.skip_trigrams import SkipTrigramRow, SkipTrigramTable, frequent_tokens
from ..engine.skip_trigrams import skip_trigrams as engine_skip_trigrams
from ..model import Transformer
from ._data import as_model, find_token, token_label
from .base import CircuitWidget

PAGE = 20
MAX_ROWS = 500  # the most rows the table sends (and never more than d_vocab): 25 pages of "more rows"


def _row_dict(model: Transformer, r: SkipTrigramRow) -> dict:
    """A row as JSON-able data: strings are labels (data, rendered as text by the front end)."""

    def lab(ids, strs):
        return strs if strs is not None else [token_label(model, i) for i in ids]

    return {
        "rank": r.rank, "source_id": r.source,
        "source": r.source_str if r.source_str is not None else token_label(model, r.source),
        "strength": r.strength, "top_qk": r.top_qk, "top_ov": r.top_ov,
        "dests": [[s, i, v] for s, i, v in zip(lab(r.dests, r.dest_strs), r.dests, r.dest_values)],
        "outs": [[s, i, v] for s, i, v in zip(lab(r.outs, r.out_strs), r.outs, r.out_values)],
    }


def _table_bytes(t: SkipTrigramTable) -> int:
    """Bytes of the tensors a table holds (its factors and per-token arrays)."""
    return sum(x.nbytes for x in [*t._f.values(), t.top_qk, t.top_ov, t.strength, t.order, t._rank]
               if isinstance(x, torch.Tensor))


SLOW_SCAN = 2e10  # d_vocab^2 x d_head multiply-adds of a head's scan above which the view defers it (~1 s)


def slow_scan(model: Transformer) -> bool:
    """Whether one head's skip-trigram scan (its full QK and OV circuits over the vocabulary) takes seconds:
    GPT-2's 50k vocabulary does (~10 s on one CPU thread), a toy model's does not."""
    return model.cfg.d_vocab ** 2 * model.cfg.d_head > SLOW_SCAN


class SkipTrigrams(CircuitWidget):
    """The skip-trigram table of the selected head (`engine.skip_trigrams`).

    Traits (synced): `rows` (top `n_rows` sources A, strongest first, each with its top destinations
    B (centred QK column) and top outputs C (centred OV row)), `n_rows` (the front end's "more" asks
    for `PAGE` more, up to `max_rows` = min(`MAX_ROWS`, d_vocab)), `query` (a token string or `#id` to look
    up through `table.for_source`),
    `found` (that source's row, or {}), `top_n` (0: every token; N: A, B and C only among the N most
    frequent tokens of `corpus`, `engine.frequent_tokens`), `has_corpus`. Python-side only:
    `n_dest` / `n_out` (list lengths).
    """

    _front_end = "skip_trigrams"
    page_inputs = ("query", "n_rows", "top_n")
    table_cache_size = 4  # a table holds 4 d_vocab x d_head float32 factors (51 MB each for GPT-2 small)
    table_cache_bytes = 128 * 2**20  # and at most this many bytes of them (2 tables at GPT-2 size; the page's
    # prefetch asks for 4 neighbours, whose rows stay in the payload cache while their tables may go)

    rows = traitlets.List([]).tag(sync=True)
    n_rows = traitlets.Int(PAGE).tag(sync=True)
    max_rows = traitlets.Int(PAGE).tag(sync=True)
    query = traitlets.Unicode("").tag(sync=True)
    found = traitlets.Dict({}).tag(sync=True)
    n_dest = traitlets.Int(5)  # not synced: the page only draws the lists it gets
    n_out = traitlets.Int(5)
    d_vocab = traitlets.Int(0).tag(sync=True)
    top_n = traitlets.Int(0).tag(sync=True)
    has_corpus = traitlets.Bool(False).tag(sync=True)

    def __init__(self, model: Transformer, layer: int = 0, head: int = 0, k: int = PAGE, n_dest: int = 5,
                 n_out: int = 5, corpus=None, top_n: int = 0, defer: bool | None = None):
        """`defer`: scan the first head's circuits when the page first shows the view (or Python first asks,
        `complete()`), not here; None: when the scan is slow (`slow_scan`)."""
        self._tables: OrderedDict = OrderedDict()
        self._frequent = None  # every corpus token id, most frequent first
        if corpus is not None:
            ids = model.to_tokens(corpus, prepend_bos=False) if isinstance(corpus, str) else corpus
            self._frequent = frequent_tokens(torch.as_tensor(ids), model.cfg.d_vocab, model.cfg.d_vocab)
        if top_n and self._frequent is None:
            raise ValueError("top_n needs corpus= (token ids or text) to count token frequencies")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_ROWS:
            raise ValueError(f"k={k!r} must be an integer in 1..{MAX_ROWS} (rows of the table)")
        max_rows = min(MAX_ROWS, model.cfg.d_vocab)
        super().__init__(model, layer=layer, head=head, max_rows=max_rows, n_rows=min(k, max_rows), n_dest=n_dest,
                         n_out=n_out, d_vocab=model.cfg.d_vocab, top_n=max(0, int(top_n)),
                         has_corpus=corpus is not None, defer_head=slow_scan(model) if defer is None else bool(defer))

    def vocab(self) -> torch.Tensor | None:
        """The token subset of the table (the `top_n` most frequent corpus tokens), or None: all."""
        if not self.top_n or self._frequent is None:
            return None
        return self._frequent[: self.top_n]

    def table(self, layer: int | None = None, head: int | None = None) -> SkipTrigramTable:
        """The engine's table for a head (the shown one by default), kept for the last few heads."""
        key = (self.layer if layer is None else layer, self.head if head is None else head, self.top_n)
        if key in self._tables:
            self._tables.move_to_end(key)
            return self._tables[key]
        t = engine_skip_trigrams(self.model, *key[:2], k=PAGE, n_dest=self.n_dest, n_out=self.n_out,
                                 vocab=self.vocab())
        self._tables[key] = t
        while len(self._tables) > 1 and (len(self._tables) > self.table_cache_size
                                         or sum(map(_table_bytes, self._tables.values())) > self.table_cache_bytes):
            self._tables.popitem(last=False)  # least recently used first; the newest always stays
        return t

    def _variant(self) -> tuple:
        # the search result is part of each head's payload: the page's cache keys name the query too
        return (self.n_rows, self.top_n, self.query)

    def _payload(self, layer: int, head: int) -> dict[str, Any]:
        t = self.table(layer, head)
        n = max(1, min(self.n_rows, len(t.order)))
        rows = [_row_dict(self.model, r) for r in t.rows(0, n)]
        try:  # the search box follows the head; a query this head cannot answer just shows nothing
            found = self._lookup(t, self.query) if self.query else {}
        except Exception:  # noqa: BLE001
            found = {}
        return {"rows": rows, "found": found}

    def _lookup(self, t: SkipTrigramTable, query: str) -> dict:
        return _row_dict(self.model, t.for_source(find_token(self.model, query)))

    @traitlets.observe("n_rows")
    def _on_rows(self, change) -> None:
        if not 1 <= change["new"] <= self.max_rows:
            self._report(f"n_rows={change['new']} not applied: must be at least 1 and at most {self.max_rows} "
                         f"(the table sends at most {MAX_ROWS} rows, and no more than d_vocab)")
            self.set_quietly(n_rows=change["old"])
            return
        self._refresh()

    @traitlets.observe("top_n")
    def _on_top_n(self, change) -> None:
        if change["new"] < 0 or (change["new"] and self._frequent is None):
            self._report("top_n needs corpus= (token ids or text) and must be >= 0" if change["new"] >= 0
                         else f"top_n={change['new']} must be >= 0")
            self.set_quietly(top_n=change["old"])
            return
        self._refresh()

    @traitlets.observe("query")
    def _on_query(self, change) -> None:
        if self._broken:
            return
        ok = True
        if change["new"]:
            try:
                self._lookup(self.table(), change["new"])
            except Exception as e:  # noqa: BLE001 - unknown token: a message, not a dead comm
                ok = False
                self._report(f"search: {e}")
        self._refresh(keep_error=not ok)  # the payload (rows + found) under the new query's cache key

    def summary(self) -> str:
        lines = [f"SkipTrigrams: layer {self.layer} head {self.head}, top sources A … B → C "
                 "(live view needs a running kernel)"]
        if self.deferred:
            lines.append("  (the table is computed when the view is first shown, or by complete())")
        for r in self.rows[:10]:
            d = ", ".join(repr(x[0]) for x in r["dests"][:3])
            o = ", ".join(repr(x[0]) for x in r["outs"][:3])
            lines.append(f"  {r['source']!r} … [{d}] → [{o}]  strength {r['strength']:.3g}")
        return "\n".join(lines)

    def figure(self):
        from .. import plot

        rows = self.table().rows(0, max(1, min(len(self.rows), 15)))
        return plot.skip_trigram_table(rows, title=f"L{self.layer}H{self.head} top skip-trigrams  A … B → C")


def skip_trigrams(model, layer: int = 0, head: int = 0, k: int = PAGE, n_dest: int = 5, n_out: int = 5,
                  tokenizer=None, corpus=None, top_n: int = 0) -> SkipTrigrams:
    """SkipTrigrams widget for head (layer, head): top sources A with their destinations B and outputs C.

    The first view of a head scans its full QK and OV circuits once (streamed; seconds for a 50k
    vocabulary); the search box and "more rows" then answer from that scan. `corpus` (token ids or
    text) enables the view's frequent-tokens filter: `top_n` = N keeps A, B and C among the N most
    frequent corpus tokens (rare BPE pieces otherwise dominate the strength ranking).
    """
    return SkipTrigrams(as_model(model, tokenizer), layer=layer, head=head, k=k, n_dest=n_dest, n_out=n_out,
                        corpus=corpus, top_n=top_n)
