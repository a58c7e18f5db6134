"""SkipTrigrams: one head's top skip-trigrams `[A] … [B] → [C]`, with search and more rows on demand."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import traitlets

from ..engine.skip_trigrams import SkipTrigramRow, SkipTrigramTable
from ..engine.skip_trigrams import skip_trigrams as engine_skip_trigrams
from ..model import Transformer
from ._data import as_model, find_token, token_label
from .base import CircuitWidget

PAGE = 20


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


class SkipTrigrams(CircuitWidget):
    """The skip-trigram table of the selected head (`engine.skip_trigrams`).

    Traits (synced): `rows` (top `n_rows` sources A, strongest first, each with its top destinations
    B (centred QK column) and top outputs C (centred OV row)), `n_rows` (the front end's "more" asks
    for `PAGE` more), `query` (a token string or `#id` to look up through `table.for_source`),
    `found` (that source's row, or {}). Python-side only: `n_dest` / `n_out` (list lengths).
    """

    _front_end = "skip_trigrams"
    page_inputs = ("query", "n_rows")
    table_cache_size = 4  # a table holds 4 d_vocab x d_head float32 factors (51 MB each for GPT-2 small)

    rows = traitlets.List([]).tag(sync=True)
    n_rows = traitlets.Int(PAGE).tag(sync=True)
    query = traitlets.Unicode("").tag(sync=True)
    found = traitlets.Dict({}).tag(sync=True)
    n_dest = traitlets.Int(5)  # not synced: the page only draws the lists it gets
    n_out = traitlets.Int(5)
    d_vocab = traitlets.Int(0).tag(sync=True)

    def __init__(self, model: Transformer, layer: int = 0, head: int = 0, k: int = PAGE, n_dest: int = 5,
                 n_out: int = 5):
        self._tables: OrderedDict = OrderedDict()
        super().__init__(model, layer=layer, head=head, n_rows=k, n_dest=n_dest, n_out=n_out,
                         d_vocab=model.cfg.d_vocab)

    def table(self, layer: int | None = None, head: int | None = None) -> SkipTrigramTable:
        """The engine's table for a head (the shown one by default), kept for the last few heads."""
        key = (self.layer if layer is None else layer, self.head if head is None else head)
        if key in self._tables:
            self._tables.move_to_end(key)
            return self._tables[key]
        t = engine_skip_trigrams(self.model, *key, k=PAGE, n_dest=self.n_dest, n_out=self.n_out)
        self._tables[key] = t
        while len(self._tables) > self.table_cache_size:
            self._tables.popitem(last=False)
        return t

    def _variant(self) -> tuple:
        return (self.n_rows,)

    def _payload(self, layer: int, head: int) -> dict[str, Any]:
        t = self.table(layer, head)
        n = max(1, min(self.n_rows, self.model.cfg.d_vocab))
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
        if change["new"] < 1:
            self._report(f"n_rows={change['new']} must be at least 1")
            self.set_quietly(n_rows=change["old"])
            return
        self._refresh()

    @traitlets.observe("query")
    def _on_query(self, change) -> None:
        if not change["new"]:
            self.found = {}
            return
        try:
            self.found = self._lookup(self.table(), change["new"])
            self.error = ""
        except Exception as e:  # noqa: BLE001 - unknown token: a message, not a dead comm
            self.found = {}
            self._report(f"search: {e}")
        self._results.clear()  # cached payloads carry the old search

    def summary(self) -> str:
        lines = [f"SkipTrigrams: layer {self.layer} head {self.head}, top sources A … B → C "
                 "(live view needs a running kernel)"]
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
                  tokenizer=None) -> SkipTrigrams:
    """SkipTrigrams widget for head (layer, head): top sources A with their destinations B and outputs C.

    The first view of a head scans its full QK and OV circuits once (streamed; seconds for a 50k
    vocabulary); the search box and "more rows" then answer from that scan.
    """
    return SkipTrigrams(as_model(model, tokenizer), layer=layer, head=head, k=k, n_dest=n_dest, n_out=n_out)
