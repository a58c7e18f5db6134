"""TrainingHistory: scrub through a model's training snapshots. One step slider (and a play button)
moves every panel: the loss and in-context-loss curves, every head's induction and previous-token
score over training (the Olsson plot), the selected head's attention pattern on a repeated random
sequence at that step, and the induction circuit at that step (the induction head's OV and
K-composition QK positivity, its K-composition score with the previous-token head).

Every number comes from `circwidgets.engine.history` (the engine's one definition of each quantity);
snapshots are found and loaded by `circwidgets.train.snapshots`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import traitlets

from ..engine import check_layer_head
from ..engine import history as eh
from ..engine.heads import induction_tokens
from ..engine.patterns import attention_patterns
from ..train.snapshots import TrainingRun, training_run
from ._data import encode_array
from .base import CircuitWidget, int_list, reacts_to

CURVES = ("auto", "metrics", "snapshots")


def _f(x: float | None) -> float | None:
    """A JSON number (None for NaN / inf / None)."""
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _na(x: float | None, spec: str = ".3f") -> str:
    """A number of the summary; "n/a" where the step data has none (undefined there, or not measured)."""
    return "n/a" if x is None else format(x, spec)


def _undefined(named: dict[str, float | None]) -> list[str]:
    """The names of the values that came out NaN / inf (None: not measured, which is not a problem)."""
    return [name for name, x in named.items() if x is not None and not math.isfinite(float(x))]


def _nested(t: torch.Tensor) -> list:
    return [[_f(v) for v in row] for row in t.tolist()] if t.ndim == 2 else [_nested(x) for x in t]


class TrainingHistory(CircuitWidget):
    """A step slider over a training run's snapshots (`circwidgets.train.snapshots.TrainingRun`).

    Traits (synced): `steps` (snapshot steps, oldest first), `step` (the shown snapshot's step; the
    slider and the play button set it), `circuit` ([prev layer, prev head, ind layer, ind head]: the
    previous-token head and the induction head the circuit panel measures; default from
    `engine.default_circuit` at the last snapshot), `curves` (`TrainingCurves` as JSON: `steps`,
    `loss`, `loss_label`, `icl_first`, `icl_repeated`, `induction` / `previous_token` `[n][L][H]`,
    `source` "metrics" | "snapshots"), `circuit_curves` (per snapshot: `ov`, `k_qk` positivities,
    `k_comp` scores, `baseline`), `step_data` (the shown snapshot's `SnapshotScores` and
    `CircuitMeasures`), `labels` and, per selected head and step, `pattern` (float16 `[pos, pos]`,
    the head's attention on `BOS + r + r` at that step). `layer` / `head`: the selected head.
    """

    _front_end = "history"
    export_inputs = ("circuit", "step", "layer", "head")  # restore order
    page_schema = {"circuit": int_list(4)}
    cache_size = 256  # per (head, step) patterns
    keep_loaded = 4  # snapshot models kept in memory (a 16-snapshot run of a vocabulary-8k model: ~20 MB each)

    name = traitlets.Unicode("").tag(sync=True)
    steps = traitlets.List(traitlets.Int(), []).tag(sync=True)
    step = traitlets.Int(0).tag(sync=True)
    circuit = traitlets.List([]).tag(sync=True)
    curves = traitlets.Dict({}).tag(sync=True)
    circuit_curves = traitlets.Dict({}).tag(sync=True)
    step_data = traitlets.Dict({}).tag(sync=True)
    labels = traitlets.List(traitlets.Unicode(), []).tag(sync=True)
    pattern = traitlets.Dict({}).tag(sync=True)

    def __init__(self, run: TrainingRun, step: int | None = None, circuit=None, layer: int | None = None,
                 head: int | None = None, curves: str = "auto", eval_tokens: torch.Tensor | None = None,
                 seq_len: int = 20, n_tokens: int | None = 512):
        if curves not in CURVES:
            raise ValueError(f"curves={curves!r} is not one of {CURVES}")
        self.run = run
        self._curves_from = curves
        self._eval_tokens = eval_tokens
        self._seq_len = seq_len
        self._n_tokens = n_tokens
        self._scores: dict[int, eh.SnapshotScores] = {}
        self._circuits: dict[tuple, eh.CircuitMeasures] = {}
        self._patterns: dict[int, Any] = {}
        self._loaded: list[int] = []  # snapshot indices in memory, least recently used first
        self.training_curves: eh.TrainingCurves | None = None
        final = run.snapshots[-1].load()
        self._init_circuit = circuit
        if circuit is None and final.cfg.n_layers >= 2:
            try:
                prev, ind = eh.default_circuit(final)
                self._init_circuit = [*prev, *ind]
            except Exception:  # noqa: BLE001 - _setup reports why (the widget shows it)
                pass
        if layer is None or head is None:
            c = self._init_circuit
            layer, head = (int(c[2]), int(c[3])) if isinstance(c, (list, tuple)) and len(c) == 4 else (0, 0)
        super().__init__(final, layer=layer, head=head, name=run.name, steps=run.steps, step=run.steps[-1])
        if self._broken:
            return
        if step is not None and step != self.step:
            self.step = step  # checked like a page request (message + revert when not a snapshot step)

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        run, model = self.run, self.model
        if model.cfg.n_layers < 2:
            raise ValueError("the history view measures an induction circuit: it needs a model with two or more layers")
        toks = induction_tokens(model, seq_len=min(self._seq_len, (model.cfg.n_ctx - 1) // 2), n_seqs=1)
        self.tokens = toks[0]
        self.labels = (model.tokenizer.id_to_str(self.tokens.tolist()) if model.tokenizer is not None
                       else [str(t) for t in self.tokens.tolist()])
        self.training_curves = self._make_curves()
        self.curves = self._curves_json(self.training_curves)
        prev, ind = (eh.default_circuit(model) if self._init_circuit is None
                     else self._check_circuit(self._init_circuit))
        circuit = [*prev, *ind]
        self.set_quietly(circuit=circuit)
        self.circuit_curves = self._circuit_curves(circuit)
        self.step_data = self._step_data(len(run.snapshots) - 1)
        self._report_undefined()

    def _make_curves(self) -> eh.TrainingCurves:
        run, how = self.run, self._curves_from
        if how in ("auto", "metrics") and run.metrics:
            try:
                return eh.TrainingCurves.from_metrics(run.metrics)
            except ValueError:
                if how == "metrics":
                    raise
        elif how == "metrics":
            raise ValueError(f"{run.name}: no metrics were logged (curves='snapshots' measures the snapshots)")
        toks = self._eval_tokens
        label = "loss on the evaluation tokens"
        if toks is None and self.model.tokenizer is not None:
            from ..zoo.lecture import REFERENCE_MODULES, code_windows

            toks = code_windows(self.model, n_windows=8, length=min(64, self.model.cfg.n_ctx))
            label = f"loss on code ({', '.join(REFERENCE_MODULES[:2])}, …)"
        scores = eh.score_snapshots([(s.step, s.load) for s in run.snapshots], eval_tokens=toks)
        for s in scores:
            self._scores[s.step] = s
        return eh.TrainingCurves.from_snapshots(scores, label)

    @staticmethod
    def _curves_json(c: eh.TrainingCurves) -> dict[str, Any]:
        return {"steps": c.steps, "loss": [_f(x) for x in c.loss], "loss_label": c.loss_label,
                "icl_first": [_f(x) for x in c.icl_first], "icl_repeated": [_f(x) for x in c.icl_repeated],
                "induction": _nested(c.induction), "previous_token": _nested(c.previous_token), "source": c.source}

    # ------------------------------------------------------------------ per snapshot (engine)
    def index_of(self, step: int) -> int:
        """Index of snapshot `step`; ValueError naming the steps when it is not one."""
        try:
            return self.run.steps.index(step)
        except ValueError:
            s = self.run.steps
            few = ", ".join(map(str, s)) if len(s) <= 12 else f"{s[0]}, {s[1]}, …, {s[-1]}"
            raise ValueError(f"step={step!r} is not a snapshot step ({len(s)} snapshots: {few})") from None

    def snapshot(self, step: int | None = None):
        """The model at snapshot `step` (default: the shown one). At most `keep_loaded` snapshot files
        stay in memory (the least recently used others are read again when asked for)."""
        i = self.index_of(self.step if step is None else step)
        if i in self._loaded:
            self._loaded.remove(i)
        self._loaded.append(i)
        while len(self._loaded) > self.keep_loaded:
            j = self._loaded.pop(0)
            if j != len(self.run.snapshots) - 1:  # the last one is the view's own model
                self.run.snapshots[j].release()
        return self.run.snapshots[i].load()

    def scores_at(self, step: int) -> eh.SnapshotScores:
        """`engine.snapshot_scores` of snapshot `step` (cached)."""
        if step not in self._scores:
            self._scores[step] = eh.snapshot_scores(self.snapshot(step), step)
        return self._scores[step]

    def circuit_at(self, step: int, circuit=None) -> eh.CircuitMeasures:
        """`engine.circuit_measures` of snapshot `step` for `circuit` (default: the shown one; cached)."""
        c = tuple(self.circuit if circuit is None else circuit)
        key = (step, c)
        if key not in self._circuits:
            self._circuits[key] = eh.circuit_measures(self.snapshot(step), c[:2], c[2:], n_tokens=self._n_tokens)
        return self._circuits[key]

    def patterns_at(self, step: int):
        """`engine.attention_patterns` of snapshot `step` on the view's repeated sequence (cached)."""
        if step not in self._patterns:
            if len(self._patterns) >= 8:
                self._patterns.pop(next(iter(self._patterns)))
            self._patterns[step] = attention_patterns(self.snapshot(step), self.tokens)
        return self._patterns[step]

    def _circuit_curves(self, circuit: list[int]) -> dict[str, Any]:
        from ..engine import progress_bar

        # about 0.1 s a snapshot for the zoo's models: a bar only for long runs
        ms = [self.circuit_at(s, circuit) for s in progress_bar(self.run.steps, desc="circuit per snapshot",
                                                                 leave=False, disable=len(self.run.steps) < 32)]
        return {"steps": list(self.run.steps), "circuit": list(circuit),
                "ov": [_f(m.ov.positivity) for m in ms], "k_qk": [_f(m.k_qk.positivity) for m in ms],
                "k_comp": [_f(m.k_composition) for m in ms], "baseline": list(ms[-1].baseline)}

    def _step_data(self, idx: int) -> dict[str, Any]:
        """The shown snapshot's numbers as JSON: NaN / inf become null (the page shows "n/a"), and `undefined`
        names them (`_report_undefined` says so in the message)."""
        step = self.run.steps[idx]
        s, c = self.scores_at(step), self.circuit_at(step)
        (l1, h1), (l2, h2) = c.prev_head, c.ind_head
        undefined = _undefined({
            "loss": s.loss, "in-context loss (first copy)": s.icl_first,
            "in-context loss (repeated copy)": s.icl_repeated,
            f"L{l2}H{h2} OV positivity": c.ov.positivity, f"L{l2}H{h2} OV top-1": c.ov.top1,
            f"K-composition QK positivity via L{l1}H{h1}": c.k_qk.positivity,
            f"K-composition QK top-1 via L{l1}H{h1}": c.k_qk.top1,
            f"K-composition L{l1}H{h1} → L{l2}H{h2}": c.k_composition})
        return {"step": step, "index": idx, "circuit": list(self.circuit), "undefined": undefined,
                "induction": _nested(s.induction), "previous_token": _nested(s.previous_token),
                "icl_first": _f(s.icl_first), "icl_repeated": _f(s.icl_repeated), "loss": _f(s.loss),
                "ov": {"positivity": _f(c.ov.positivity), "top1": _f(c.ov.top1)},
                "k_qk": {"positivity": _f(c.k_qk.positivity), "top1": _f(c.k_qk.top1)},
                "n_tokens": c.ov.n_tokens, "k_comp": _f(c.k_composition), "baseline": list(c.baseline)}

    def _report_undefined(self) -> None:
        """A message naming the shown step's values that are undefined (NaN / inf from the engine: e.g. the
        positivity of a zero circuit), shown as "n/a"; nothing when every value is a number."""
        d = self.step_data
        if d.get("undefined"):
            self._report(f"at step {d['step']}: {', '.join(d['undefined'])} undefined (NaN or inf; shown as n/a)")

    def _variant(self) -> tuple:
        return (self.step,)

    def _payload(self, layer: int, head: int) -> dict[str, Any]:
        return {"pattern": encode_array(self.patterns_at(self.step).head(layer, head).float(), "float16")}

    # ------------------------------------------------------------------ requests
    def _check_circuit(self, c) -> tuple[tuple[int, int], tuple[int, int]]:
        if not isinstance(c, (list, tuple)) or len(c) != 4:
            raise ValueError(f"circuit={c!r} must be [prev layer, prev head, ind layer, ind head]")
        l1, h1 = check_layer_head(self.model, int(c[0]), int(c[1]))
        l2, h2 = check_layer_head(self.model, int(c[2]), int(c[3]))
        if not l1 < l2:
            raise ValueError(f"the previous-token head's layer ({l1}) must be below the induction head's ({l2})")
        return (l1, h1), (l2, h2)

    @reacts_to("step")
    def _on_step(self, change) -> None:
        if self._broken:
            return

        def apply() -> None:
            data = self._step_data(self.index_of(change["new"]))
            with self.hold_sync():
                self.step_data = data
                self._refresh()
                self._report_undefined()

        self.apply_or_revert(change, apply, "step not shown")

    @reacts_to("circuit")
    def _on_circuit(self, change) -> None:
        if self._broken:
            return

        def apply() -> None:
            prev, ind = self._check_circuit(change["new"])
            circuit = [*prev, *ind]
            curves = self._circuit_curves(circuit)
            with self.hold_sync():
                self.set_quietly(circuit=circuit)
                self.circuit_curves = curves
                self.step_data = self._step_data(self.index_of(self.step))
                self.error = ""
                self._report_undefined()

        self.apply_or_revert(change, apply, "circuit not shown")

    def show_step(self, step: int) -> None:
        """Show snapshot `step` (same path as the slider)."""
        self.step = step

    def export_actions(self) -> list[dict[str, Any]]:
        return [{"step": s} for s in self.run.steps if s != self.step] + super().export_actions()

    # ------------------------------------------------------------------ static fallback
    def summary(self) -> str:
        d = self.step_data
        if not d:
            return f"TrainingHistory: {self.name} (nothing to show: {self.error})"
        l1, h1, l2, h2 = self.circuit
        ind = d["induction"][self.layer][self.head]
        prev = d["previous_token"][self.layer][self.head]
        return (f"TrainingHistory: {self.name}, {len(self.steps)} snapshots (steps {self.steps[0]}–{self.steps[-1]}); "
                f"step {d['step']}: L{self.layer}H{self.head} induction {_na(ind)}, previous-token {_na(prev)}; "
                f"L{l2}H{h2} OV positivity {_na(d['ov']['positivity'], '+.3f')}, K-composition QK positivity "
                f"{_na(d['k_qk']['positivity'], '+.3f')}, K-composition with L{l1}H{h1} {_na(d['k_comp'])} "
                f"(baseline {_na(d['baseline'][0])}); curves from {self.curves.get('source')} "
                "(live view needs a running kernel)")

    def figure(self):
        from .. import plot

        return plot.training_history(self.training_curves, self.step,
                                     self.patterns_at(self.step).head(self.layer, self.head),
                                     self.labels, self.circuit_curves, (self.layer, self.head),
                                     title=f"{self.name} at step {self.step}")


def _run(source) -> TrainingRun:
    """A shipped model's name goes to the zoo; a run directory or a list to `train.snapshots`."""
    if isinstance(source, str) and not Path(source).exists() and os.sep not in source \
            and not source.endswith(".safetensors"):
        from .. import zoo

        return zoo.training_run(source)
    return training_run(source)


def training(source, step: int | None = None, circuit=None, layer: int | None = None, head: int | None = None,
             curves: str = "auto", eval_tokens=None) -> TrainingHistory:
    """TrainingHistory view of a training run: scrub its snapshots with a step slider.

    source: a shipped model's name (its `cw.zoo.snapshots`), a trainer run directory
    (`snapshots/step_XXXXXX.safetensors` + `metrics.json`), or a list of checkpoint paths /
    `Transformer`s / `(step, either)` pairs. curves: "auto" (the logged metrics when there are any,
    else measured on each snapshot), "metrics" or "snapshots"; eval_tokens `[batch, pos]`: the fixed
    set the measured loss curve uses (default: code windows for a model with a tokenizer, none
    otherwise). circuit: [prev layer, prev head, ind layer, ind head] (default: the engine's detection
    at the last snapshot); layer / head: the head whose pattern is shown (default: the induction head).
    """
    return TrainingHistory(_run(source), step=step, circuit=circuit, layer=layer, head=head,
                           curves=curves, eval_tokens=eval_tokens)
