"""Ablation: toggle heads off (zero / mean) and cut single composition paths, with the per-token
loss and the top predictions updated live; an activation-patching mode for a clean / corrupted pair."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
import traitlets

from ..engine import check_layer_head
from ..engine.ablation_state import AblatedRun, PathCut, ablated_run
from ..engine.interventions import path_cuts
from ..engine.text_run import supports_text_run
from ..model import Transformer
from ._data import as_model, encode_array, token_label, tokens_and_labels
from .base import CircuitWidget, head_rows, int_pairs, reacts_to

_EFFECTS_MAX = 40_000_000  # single-head effect table on setup only when L*H*pos*d_vocab is at most this
_LOGITS_MAX = 2_000_000  # runs keep (and cache) their logits only when pos*d_vocab is at most this
# A lazy checkpoint / nnsight model runs the patched runs (one per head and per (layer, position)) as copies of
# the batch, several per forward pass (trace). The patching mode is refused when the weights those passes read
# (passes x n_layers x d_model^2) exceed _SOURCE_PATCH_MAX (one run a pass, GPT-2 small at 20 tokens read 3e9:
# a couple of minutes on a CPU), or the runs' multiply-adds (runs x tokens x (12 n_layers d_model^2 + d_model
# d_vocab), every layer and the unembedding) exceed _SOURCE_PATCH_MACS (minutes on a CPU).
_SOURCE_PATCH_MAX = 1e10
_SOURCE_PATCH_MACS = 1e13


class Ablation(CircuitWidget):
    """Interactive ablation (`engine.ablation_state.ablated_run`) and activation patching
    (`engine.interventions.patch_heads` / `patch_residual`).

    Traits (synced): `off` ([[layer, head], ...] ablated), `cuts` ([[l1, h1, l2, h2, kind], ...]
    composition paths cut; kind "q" | "k" | "v"), `ablation` ("zero" | "mean"), `loss` /
    `clean_loss` (mean next-token loss, nats), `token_loss` / `clean_token_loss` (float32 `[pos - 1]`),
    `position` and `top` / `clean_top` (the top next-token predictions there: [label, id, prob]),
    `effects` (float32 `[L, H]`: loss change when each head alone is ablated, or {} when too costly),
    `computed_for` ({"off", "cuts", "ablation", "position"} the loss traits belong to),
    `mode` ("ablate" | "patch"), and with a corrupted text: `corrupt_labels`, `patch_heads`
    (float32 `[L, H]`), `patch_resid` (float32 `[L, pos]`), `patch_info` (metric and answers).
    A click on a head in the grid toggles it (and selects it); `layer` / `head` is the selection.
    """

    _front_end = "ablation"
    export_inputs = ("ablation", "mode", "off", "cuts", "position", "layer", "head")  # restore order
    # from the page: heads of the model (no negative indices), none twice (so at most n_layers * n_heads
    # heads off); cuts as [l1, h1, l2, h2, kind] rows of heads, none twice
    page_schema = {"off": int_pairs(heads=True, unique=True), "cuts": head_rows(2, kinds=("q", "k", "v"))}

    labels = traitlets.List(traitlets.Unicode(), []).tag(sync=True)
    off = traitlets.List([]).tag(sync=True)
    cuts = traitlets.List([]).tag(sync=True)
    ablation = traitlets.Unicode("zero").tag(sync=True)
    loss = traitlets.Float(0.0).tag(sync=True)
    clean_loss = traitlets.Float(0.0).tag(sync=True)
    token_loss = traitlets.Dict({}).tag(sync=True)
    clean_token_loss = traitlets.Dict({}).tag(sync=True)
    position = traitlets.Int(0).tag(sync=True)
    top = traitlets.List([]).tag(sync=True)
    clean_top = traitlets.List([]).tag(sync=True)
    effects = traitlets.Dict({}).tag(sync=True)
    mode = traitlets.Unicode("ablate").tag(sync=True)
    has_patching = traitlets.Bool(False).tag(sync=True)
    corrupt_labels = traitlets.List(traitlets.Unicode(), []).tag(sync=True)
    patch_heads = traitlets.Dict({}).tag(sync=True)
    patch_resid = traitlets.Dict({}).tag(sync=True)
    patch_info = traitlets.Unicode("").tag(sync=True)
    kv_group_size = traitlets.Int(1).tag(sync=True)
    notes = traitlets.List(traitlets.Unicode(), []).tag(sync=True)
    # the state `loss` / `token_loss` / `top` were computed for: the page's own `off` runs ahead of them
    # between a click and the kernel's answer, so the drawn digest names this one
    computed_for = traitlets.Dict({}).tag(sync=True)

    def __init__(self, model: Transformer, text_or_tokens, corrupted=None, labels: Sequence[str] | None = None,
                 ablation: str = "zero", off: Sequence = (), cuts: Sequence = (), position: int = -1,
                 layer: int = 0, head: int = 0, mode: str = "ablate", defer: bool = False):
        """`defer`: prepare the view (the clean run, the effects) when the page first shows it (or at
        `complete()`), not here."""
        self._init_input = (text_or_tokens, corrupted, labels, list(off), list(cuts), position)
        self._clean: AblatedRun | None = None
        self.run: AblatedRun | None = None
        self._patch_done = False
        if ablation not in ("zero", "mean"):
            raise ValueError(f"ablation={ablation!r} must be 'zero' or 'mean'")
        self._init_mode = mode
        super().__init__(model, layer=layer, head=head, ablation=ablation, kv_group_size=model.cfg.kv_group_size,
                         defer_setup=defer)

    def _after_setup(self) -> None:
        if self._init_mode != "ablate":
            self.mode = self._init_mode

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        text_or_tokens, corrupted, labels, off, cuts, position = self._init_input
        toks, labs = tokens_and_labels(self.model, text_or_tokens, labels)
        if toks.shape[0] < 2:
            raise ValueError("ablation needs a text of at least 2 tokens (the loss predicts the next token)")
        self.tokens = toks
        self._corrupt = None
        if corrupted is not None:
            ctoks, clabs = tokens_and_labels(self.model, corrupted)
            if ctoks.shape != toks.shape:
                raise ValueError(f"the corrupted input has {ctoks.shape[0]} tokens, the clean one {toks.shape[0]}: "
                                 "patching needs the same length")
            self._corrupt = ctoks
            self.corrupt_labels = clabs
            self.has_patching = True
        P = toks.shape[0]
        if not -P <= position < P:
            raise IndexError(f"position={position} is out of range: 0..{P - 1}")
        self._clean = ablated_run(self.model, toks[None], keep_logits=self._keep_logits())
        cfg = self.model.cfg
        effects = {}
        if cfg.n_layers * cfg.n_heads * P * cfg.d_vocab <= _EFFECTS_MAX:
            effects = self._effects(self.ablation)
        self.set_quietly(labels=labs, position=position % P, off=[list(x) for x in off], cuts=[list(x) for x in cuts],
                         clean_loss=self._clean.loss,
                         clean_token_loss=encode_array(self._clean.token_loss[0].float(), "float32"), effects=effects)
        self._update()

    def _keep_logits(self) -> bool:
        """Whether runs keep their `[pos, d_vocab]` logits: only when small (GPT-2 at 1,024 tokens: 206 MB
        a run, two runs held); otherwise `ablated_run(keep_logits=False)` keeps the loss and top-5 only."""
        return self.tokens.shape[0] * self.model.cfg.d_vocab <= _LOGITS_MAX

    def _effects(self, kind: str) -> dict:
        """Loss change of ablating each head alone (`interventions.ablation_table`), encoded, per kind."""
        from ..engine.interventions import ablation_table

        return self.cached(("effects", kind, self._version), lambda: encode_array(
            ablation_table(self.model, self.tokens[None], kind=kind).float(), "float32"))

    # ------------------------------------------------------------------ state -> engine
    def _state(self) -> tuple[list[tuple[int, int]], list[PathCut]]:
        """The heads off and the paths cut, checked and normalised (a negative index from Python counts from
        the end, as everywhere in the engine) with repeats dropped; a bad entry raises, naming it."""
        heads = []
        for x in self.off:
            if not (isinstance(x, (list, tuple)) and len(x) == 2):
                raise ValueError(f"a head off is [layer, head], got {x!r}")
            heads.append(check_layer_head(self.model, *map(operator.index, x)))
        cuts = path_cuts(self.model, self.cuts)  # the engine's parser: a malformed cut is a message naming it
        return list(dict.fromkeys(heads)), list(dict.fromkeys(cuts))

    def ablated(self) -> AblatedRun:
        """The engine's run under the current state (heads off, paths cut, zero / mean)."""
        heads, cuts = self._state()
        if not heads and not cuts and self._clean is not None:
            return self._clean  # nothing ablated: the model's own run, already made (one forward pass, not two)

        def run():
            return ablated_run(self.model, self.tokens[None], heads=heads, paths=cuts, kind=self.ablation,
                               keep_logits=self._keep_logits())

        if not self._keep_logits():  # big logits: no run cached (each holds its loss and top-5 table only)
            return run()
        key = ("run", tuple(sorted(heads)), tuple(sorted((c.src, c.dst, c.kind) for c in cuts)), self.ablation)
        return self.cached(key, run)

    def _top(self, run: AblatedRun) -> list:
        return [[token_label(self.model, t), t, p] for t, p, _ in run.top(self.position, 5)]

    def _update(self) -> None:
        heads, cuts = self._state()
        self.run = self.ablated()
        with self.hold_sync():
            self.set_quietly(off=[list(x) for x in heads], cuts=[[*c.src, *c.dst, c.kind] for c in cuts])
            self.loss = self.run.loss
            self.notes = list(self.run.notes)
            self.token_loss = encode_array(self.run.token_loss[0].float(), "float32")
            self.top = self._top(self.run)
            self.clean_top = self._top(self._clean)
            self.computed_for = {"off": [list(x) for x in self.off], "cuts": [list(x) for x in self.cuts],
                                 "ablation": self.ablation, "position": self.position}

    @reacts_to("off", "cuts", "ablation", "position")
    def _on_state(self, change) -> None:
        if self._clean is None:
            return

        def update():
            if change["name"] == "ablation" and change["new"] not in ("zero", "mean"):
                raise ValueError(f"ablation={change['new']!r} must be 'zero' or 'mean'")
            if change["name"] == "position" and not 0 <= change["new"] < self.tokens.shape[0]:
                raise IndexError(f"position={change['new']} is out of range: 0..{self.tokens.shape[0] - 1}")
            self._update()
            if change["name"] == "ablation" and self.effects:
                self.effects = self._effects(self.ablation)

        if self.apply_or_revert(change, update, "not applied"):
            self.error = ""

    def export_actions(self) -> list[dict[str, Any]]:
        heads = super().export_actions()
        off = [list(x) for x in self.off]
        acts = list(heads)
        for a in heads:  # a click in the grid: select, then toggle (two messages from the front end)
            lh = [a["layer"], a["head"]]
            acts.append({**a, "off": [x for x in off if x != lh] if lh in off else off + [lh]})
        acts += [{"ablation": "mean" if self.ablation == "zero" else "zero"}]
        acts += [{"position": p} for p in range(len(self.labels) - 1)]
        acts += [{"off": [], "cuts": []}]
        if self.has_patching:
            acts += [{"mode": "patch" if self.mode == "ablate" else "ablate"}]
        return acts

    def toggle(self, layer: int, head: int) -> None:
        """Ablate the head if it is on, restore it if it is off (what a click in the grid does)."""
        cur = [list(x) for x in self.off]
        cur = [x for x in cur if x != [layer, head]] if [layer, head] in cur else cur + [[layer, head]]
        self.off = cur

    # ------------------------------------------------------------------ patching
    def patching(self) -> dict[str, torch.Tensor]:
        """The engine's patching report (`interventions.patching_report`, metric chosen there) as
        {"heads": [L, H], "resid": [L, pos], "info": the metric in words, "report": the `PatchingReport`}."""
        from ..engine.interventions import patching_report

        def compute():
            r = patching_report(self.model, self.tokens[None], self._corrupt[None])
            info = (f"metric at the last position: logit[{token_label(self.model, r.good)!r}]"
                    + (f" − logit[{token_label(self.model, r.bad)!r}]" if r.bad != r.good else "")
                    + f"; clean {r.clean:.4f}, corrupted {r.corrupted:.4f}"
                    + ("; shown: fraction restored (patched − corrupted) / (clean − corrupted)" if r.normalized else
                       "; shown: metric of the patched run"))
            return {"heads": r.heads, "resid": r.resid, "info": info, "report": r}

        return self.cached(("patching", self._version), compute)

    def _check_patching_cost(self) -> None:
        """Refuse the patching mode of a lazy checkpoint / nnsight model that would take too long for a click: its
        runs (one per head and per (layer, position)) go through as copies of the batch, several per pass, and
        each pass reads every layer again."""
        if supports_text_run(self.model):  # in memory: the engine batches the patched runs
            return
        from ..engine.interventions import _copies_per_run

        cfg, toks = self.model.cfg, self.tokens[None]
        L, H, P = cfg.n_layers, cfg.n_heads, toks.shape[1]
        passes = 4  # the metric's choice (the clean and the corrupted run), the clean z and stream; then the copies
        for n in (L * H, L * P):
            passes += -(-n // _copies_per_run(self.model, toks, n, 2**26))  # (patching_report's default budget)
        runs = L * (H + P) + 4
        macs = runs * P * (12 * L * cfg.d_model ** 2 + cfg.d_model * cfg.d_vocab)
        if passes * L * cfg.d_model ** 2 > _SOURCE_PATCH_MAX or macs > _SOURCE_PATCH_MACS:
            raise ValueError(f"patching this model takes {runs} runs ({L} layers x ({H} heads + {P} positions) + 4) "
                             f"in {passes} forward passes, each reading every layer: too "
                             "much for a click. Patch the heads / positions of interest with engine.patch_heads / "
                             "engine.patch_residual, or load the model in memory")

    @reacts_to("mode")
    def _on_mode(self, change) -> None:
        if self._clean is None:
            return
        if change["new"] not in ("ablate", "patch") or (change["new"] == "patch" and self._corrupt is None):
            self._report(f"mode {change['new']!r} is not available"
                         + ("" if change["new"] != "patch" else ": pass corrupted=... for activation patching"))
            self.set_quietly(mode=change["old"])
            return
        if change["new"] == "patch" and not self._patch_done:
            try:
                self._check_patching_cost()
                p = self.patching()
            except Exception as e:  # noqa: BLE001
                self._report(f"patching failed: {type(e).__name__}: {e}")
                self.set_quietly(mode=change["old"])  # (was: left in "patch" with nothing to show)
                return
            with self.hold_sync():
                self.patch_heads = encode_array(p["heads"].float(), "float32")
                self.patch_resid = encode_array(p["resid"].float(), "float32")
                self.patch_info = p["info"]
            self._patch_done = True

    # ------------------------------------------------------------------ static fallback
    def _payload(self, layer: int, head: int) -> dict[str, Any]:
        return {}

    def summary(self) -> str:
        if self.mode == "patch":  # what the live view shows in patching mode: the metric and the heatmaps
            p = self.patching()
            layer, head = self.layer, self.head
            return (f"Ablation (activation patching, clean → corrupted): {p['info']}; head L{layer}H{head} "
                    f"patched: {float(p['heads'][layer, head]):.4f}; heatmaps: residual stream "
                    f"({self.n_layers} layers x {len(self.labels)} positions), head outputs ({self.n_layers} x "
                    f"{self.n_heads}) (live view needs a running kernel)")
        offs = ", ".join(f"L{a}H{b}" for a, b in self.off) or "none"
        cuts = ", ".join(f"L{c[0]}H{c[1]}→L{c[2]}H{c[3]}.{c[4]}" for c in self.cuts) or "none"
        return (f"Ablation ({self.ablation}): heads off: {offs}; paths cut: {cuts}; loss {self.loss:.4f} "
                f"(clean {self.clean_loss:.4f}) (live view needs a running kernel)")

    def figure(self):
        from .. import plot

        if self.mode == "patch":  # the patching heatmaps, as the live view's patching mode
            return plot.patching(self.patching()["report"], self.labels, self.corrupt_labels,
                                 selected=(self.layer, self.head), title=self.patch_info)
        return plot.ablation(self._clean, self.run, self.labels,
                             title=f"per-token loss: clean {self.clean_loss:.3f}, ablated {self.loss:.3f}")


def ablation(model, text_or_tokens, corrupted=None, labels: Sequence[str] | None = None, ablation: str = "zero",
             off: Sequence = (), cuts: Sequence = (), tokenizer=None) -> Ablation:
    """Ablation widget: click heads to ablate them (zero or mean), cut single composition paths
    (src head → dst head's Q / K / V), see the per-token loss and top predictions update; with
    `corrupted` (same length), an activation-patching mode with (layer x position) and
    (layer x head) heatmaps."""
    return Ablation(as_model(model, tokenizer), text_or_tokens, corrupted=corrupted, labels=labels,
                    ablation=ablation, off=off, cuts=cuts)
