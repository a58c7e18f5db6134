"""CircuitExplorer: one dashboard of views that share the selected head. Click a head in any panel
(a grid cell, a composition cell, a path-term bar, a patching cell) and every panel follows."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence

import ipywidgets
import traitlets

from ..engine.induction import opening_head, strongest_induction_head
from ..engine.patterns import attention_patterns
from ..engine.text_run import supports_text_run, text_run
from ..model import Transformer
from ._data import as_model, tokens_and_labels
from .ablation import Ablation
from .attention import AttentionPatterns
from .base import CircuitWidget, StaticFallback
from .composition import Composition
from .eigenvalues import Eigenvalues
from .paths import PathExpansion
from .skip_trigrams import SkipTrigrams

PANELS = ("attention", "eigenvalues", "skip_trigrams", "composition", "ablation", "paths")
SLOW_PREPARE = 2e10  # multiply-adds (about a second on one CPU thread) above which panels wait to be shown


def slow_to_prepare(model: Transformer, n_tokens: int) -> bool:
    """Whether preparing every panel takes seconds: one forward pass on `n_tokens` with the unembedding (the
    clean loss) plus the vocabulary-long Gram matrices of the eigenvalue panel, counted in multiply-adds
    (GPT-2 small at 1,024 tokens: 1.6e11, ~10 s on one thread; the zoo's toy models: < 5e9)."""
    cfg = model.cfg
    mlp = 0 if cfg.attn_only else 2 * cfg.d_model * (cfg.d_mlp or 4 * cfg.d_model)
    forward = n_tokens * (cfg.n_layers * (4 * cfg.d_model ** 2 + mlp) + cfg.d_vocab * cfg.d_model)
    return forward + cfg.d_vocab * cfg.d_model ** 2 > SLOW_PREPARE


class CircuitExplorer(StaticFallback, ipywidgets.VBox):
    """The views of one model on one text, with one shared selection `(layer, head)`.

    `panels` (dict name -> widget): "attention" (AttentionPatterns), "eigenvalues", "skip_trigrams",
    "composition" (the selected head's row and column outlined), "ablation" (the selected head
    outlined; clicks there toggle heads), "paths" (PathExpansion; a bar's click selects its head).
    A selection made in any panel, or with `select(layer, head)`, is set on every other panel in one
    step (both traits at once), so each panel computes the new head's data once.
    """

    layer = traitlets.Int(0)
    head = traitlets.Int(0)

    def __init__(self, model: Transformer, text_or_tokens, labels: Sequence[str] | None = None,
                 corrupted=None, panels: Sequence[str] = PANELS, layer: int | None = None,
                 head: int | None = None, defer: bool | None = None):
        unknown = [p for p in panels if p not in PANELS]
        if unknown:
            raise ValueError(f"unknown panels {unknown}: choose from {list(PANELS)}")
        self.model = model
        toks = None
        with contextlib.suppress(Exception):
            toks = tokens_and_labels(model, text_or_tokens, labels)[0]
        if defer is None:
            defer = toks is not None and slow_to_prepare(model, toks.shape[0])
        # ONE forward pass on the text for every panel (engine.text_run): the patterns of all heads (one
        # shared tensor: 12 x 12 heads x 1,024^2 positions is 600 MB), what the path expansion freezes, the
        # clean run's loss, each head's z. Held while the panels are made: the engine functions they call
        # answer from it; afterwards each panel keeps only what it shows.
        run, data = None, None
        if model.cfg.n_layers and model.cfg.n_heads and toks is not None:
            with contextlib.suppress(Exception):  # a bad input: each panel reports it itself
                if supports_text_run(model):
                    run = text_run(model, toks)
                    data = run.attention
                else:  # a lazy checkpoint or nnsight source: its own pass (patterns and value norms), shared
                    data = attention_patterns(model, toks)
                if layer is None or head is None:  # open on induction, measured on this text (engine.opening_head)
                    layer, head = opening_head(model, toks, data)
        if (layer is None or head is None) and model.cfg.n_layers:  # no patterns of the text: on repeated tokens
            with contextlib.suppress(Exception):
                layer, head = strongest_induction_head(model)
        if layer is None or head is None:
            layer, head = (0, 0)
        make = {
            # deferred (`defer`): the attention panel paints from the shared run at once, its grid's behaviour
            # scores (forward passes on repeated random tokens) wait; every other panel is prepared when the
            # page first draws it (a `complete` message), from the same run, held until then
            "attention": lambda: AttentionPatterns(model, text_or_tokens, labels=labels, layer=layer, head=head,
                                                   defer_scores=defer or None),
            "eigenvalues": lambda: Eigenvalues(model, layer=layer, head=head, defer=defer),
            "skip_trigrams": lambda: SkipTrigrams(model, layer=layer, head=head, k=10, defer=defer or None),
            "composition": lambda: Composition(model, text_or_tokens, labels=labels, layer=layer, head=head,
                                               defer=defer),
            "ablation": lambda: Ablation(model, text_or_tokens, corrupted=corrupted, labels=labels, layer=layer,
                                         head=head, defer=defer),
            "paths": lambda: PathExpansion(model, text_or_tokens, labels=labels, layer=layer, head=head, defer=defer),
        }
        self.panels: dict[str, CircuitWidget] = {name: make[name]() for name in panels}
        # the shared run lives while a panel still waits to be prepared from it (then each keeps its part)
        self._run = run if any(w.deferred for w in self.panels.values()) else None
        del run, data
        self._syncing = False
        title = ipywidgets.HTML()
        title.value = "<b>circuit explorer</b> — click a head in any panel; every panel follows"
        rows, names = [], list(self.panels)
        for i in range(0, len(names), 2):
            rows.append(ipywidgets.HBox([self.panels[n] for n in names[i:i + 2]],
                                        layout=ipywidgets.Layout(flex_flow="row wrap", align_items="flex-start")))
        super().__init__([title, *rows], layout=ipywidgets.Layout(width="100%"))
        self.add_class("cw-explorer")
        for w in self.panels.values():
            w.observe(self._follow, names=["layer", "head"])
            w.observe(self._release_run, names=["deferred"])
        self.layer, self.head = layer, head
        self.select(layer, head)

    @contextlib.contextmanager
    def unlinked(self) -> Iterator[None]:
        """Inside: a selection in one panel is not passed on to the others."""
        was, self._syncing = self._syncing, True
        try:
            yield
        finally:
            self._syncing = was

    def _follow(self, change) -> None:
        if self._syncing:
            return
        src = change["owner"]
        self.select(src.layer, src.head, _from=src)

    def select(self, layer: int, head: int, _from: CircuitWidget | None = None) -> None:
        """Select a head in every panel (what a click in any of them does)."""
        with self.unlinked():
            for w in self.panels.values():
                if w is not _from and (w.layer, w.head) != (layer, head):
                    w.select(layer, head)
            good = _from or next(iter(self.panels.values()))
            self.layer, self.head = good.layer, good.head  # a panel rejects an out-of-range head

    def _release_run(self, _change=None) -> None:
        if not any(w.deferred for w in self.panels.values()):
            self._run = None

    def complete(self) -> None:
        """Compute what the panels deferred (the attention grid's scores, the skip-trigram table) now."""
        for w in self.panels.values():
            w.complete()

    def selections(self) -> dict[str, tuple[int, int]]:
        """Each panel's (layer, head): all equal after any click."""
        return {n: (w.layer, w.head) for n, w in self.panels.items()}

    def summary(self) -> str:
        """Plain-text summary of every panel (the text/plain fallback)."""
        return "\n".join([f"CircuitExplorer: layer {self.layer} head {self.head}"]
                         + [f"  {w.summary()}" for w in self.panels.values()])

    static_png = True  # the mimebundle gets image/png: every panel's matplotlib twin, two per row

    def figure(self):
        """The panels' matplotlib twins in one figure (two per row, as laid out in the page)."""
        import matplotlib.image
        from matplotlib.figure import Figure

        images = []
        for w in self.panels.values():
            if w.deferred:  # not shown yet: its picture would cost what the first paint saved
                images.append(None)
                continue
            try:
                images.append(matplotlib.image.imread(io.BytesIO(w.png(dpi=60)), format="png"))
            except Exception:  # noqa: BLE001 - a panel without a picture leaves its cell empty
                images.append(None)
        n_rows = max(1, (len(images) + 1) // 2)
        fig = Figure(figsize=(12, 4.2 * n_rows))
        fig.suptitle(f"circuit explorer: layer {self.layer} head {self.head}")
        for i, img in enumerate(images):
            ax = fig.add_subplot(n_rows, 2, i + 1)
            ax.set_axis_off()
            if img is not None:
                ax.imshow(img)
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.95, wspace=0.02, hspace=0.02)
        return fig

    def save_html(self, path, **kwargs):
        """One self-contained HTML file of every panel with the shared selection (see `export.save_html`)."""
        from .export import save_html

        return save_html(self, path, **kwargs)


def explore(model, text_or_tokens, labels: Sequence[str] | None = None, corrupted=None,
            panels: Sequence[str] = PANELS, layer: int | None = None, head: int | None = None,
            tokenizer=None, defer: bool | None = None) -> CircuitExplorer:
    """CircuitExplorer: attention patterns, eigenvalues, skip-trigrams, composition, ablation and path
    expansion of `model` on `text_or_tokens`, all following one selected head (default: the strongest
    induction head on this text, `engine.opening_head`, or on repeated random tokens when no token of the
    text occurs twice; the paths panel opens on a position where it decides the next token,
    `engine.decisive_position`). The model runs once on the text for all panels (`engine.text_run`).
    defer: True = only the attention panel (patterns and thumbnails) is made here; the other panels, the
    attention grid's behaviour scores and the skip-trigram table are computed when the page first draws
    them, each showing "computing…" until then (`complete()` computes them from Python; the export does);
    None (default) = True when that work takes seconds (`slow_to_prepare`: GPT-2-sized models), else False
    (then only the skip-trigram scan of a big vocabulary waits)."""
    return CircuitExplorer(as_model(model, tokenizer), text_or_tokens, labels=labels, corrupted=corrupted,
                           panels=panels, layer=layer, head=head, defer=defer)
