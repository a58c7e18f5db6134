"""TrainingMonitor: live loss and head-score curves of a `circwidgets.train.Trainer` run, with a stop
button that ends the run after the current step and saves the model.

Shown automatically when a Trainer built with `callbacks=None` trains inside a notebook kernel: this
module registers `notebook_callbacks` with the trainer's public hook (`train.register_default_callbacks`;
`import circwidgets` imports this module when it runs in a kernel). Or pass
`callbacks=[TrainingMonitor(...)]` explicitly.

Stopping: the kernel is busy while `trainer.train()` runs in a cell, so it reads no widget messages
until the cell ends. The stop button therefore interrupts the kernel from the page (JupyterLab's
kernel connection, the same as the ■ button); the trainer turns that interrupt into "stop after
this step, save a resumable checkpoint", and the monitor's `on_train_end` saves the model file
(`save_path`). When training runs in a thread (the kernel is free), the button's `stop_requested`
message reaches the monitor directly and stops the run the same way.
"""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

import anywidget
import traitlets

from ..train.trainer import register_default_callbacks
from .base import PageInputs, StaticFallback, front_end_files


def _clean(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


class TrainingMonitor(PageInputs, StaticFallback, anywidget.AnyWidget):
    """Trainer callback + widget. Traits (synced): `steps` ([[step, running train loss], ...] every 10
    steps), `evals` (per evaluation: step, train / validation / in-context losses, max induction and
    previous-token scores and the per-head `induction` `[L][H]` scores, as the trainer records them),
    `step` / `total`, `status` ("waiting", "running", "stopping", "stopped", "finished"),
    `stop_requested` (set by the stop button), `saved_path` (the model file written on stop).
    Updates are sent at most every `min_interval` seconds (and at every evaluation)."""

    _esm, _css = front_end_files("monitor")
    page_inputs = ("stop_requested",)
    static_png = True  # the mimebundle gets image/png of the curves (`figure()`) as they are when displayed

    title = traitlets.Unicode("").tag(sync=True)
    steps = traitlets.List([]).tag(sync=True)
    evals = traitlets.List([]).tag(sync=True)
    step = traitlets.Int(0).tag(sync=True)
    total = traitlets.Int(0).tag(sync=True)
    status = traitlets.Unicode("waiting").tag(sync=True)
    stop_requested = traitlets.Bool(False).tag(sync=True)
    saved_path = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(self, save_path: str | os.PathLike | None = None, title: str = "", min_interval: float = 0.3):
        super().__init__(title=title)
        self.save_path = save_path
        self.min_interval = min_interval
        self._last = 0.0
        self._pending: list = []
        self.trainer = None
        self._stop_early = False  # a stop requested before the run was "running" (honoured when it begins)
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ trainer callbacks
    def on_train_begin(self, trainer) -> None:
        with self._lock:  # against a stop request arriving from the kernel's thread meanwhile
            self.trainer = trainer
            early, self._stop_early = self._stop_early, False
            with self.hold_sync():
                self.total = int(trainer.config.steps)
                self.step = int(trainer.step)
                self.status = "running"
                self.stop_requested = False
                self.saved_path = ""
                if not self.title:
                    self.title = trainer.extra_metadata.get("recipe", "") or trainer.model.cfg.name or "training"
                if not self.evals and trainer.history:
                    self.evals = [self._eval_record(r) for r in trainer.history]
            if early:  # the button was pressed while the run was starting: it ends after its first step
                self.stop_requested = True  # -> _on_stop: "stopping", trainer.request_stop()

    def on_step(self, trainer, loss: float) -> None:
        self._pending.append([int(trainer.step), _clean(float(loss))])
        now = time.monotonic()
        if now - self._last >= self.min_interval:
            self._flush(trainer)

    def _flush(self, trainer) -> None:
        self._last = time.monotonic()
        with self.hold_sync():
            if self._pending:
                self.steps = self.steps + self._pending
                self._pending = []
            self.step = int(trainer.step)

    @staticmethod
    def _eval_record(rec: dict) -> dict:
        keys = ("step", "train_loss", "val_loss", "icl_first", "icl_repeated", "max_induction",
                "max_previous_token", "induction", "previous_token")
        return {k: (_clean(rec[k]) if not isinstance(rec[k], list) else rec[k]) for k in keys if k in rec}

    def on_eval(self, trainer, rec: dict) -> None:
        with self.hold_sync():
            self._flush(trainer)
            self.evals = self.evals + [self._eval_record(rec)]

    def on_train_end(self, trainer) -> None:
        self._flush(trainer)
        stopped = trainer.stopped_by == "interrupt" or self.stop_requested
        if stopped:
            path = Path(self.save_path) if self.save_path else (
                Path(trainer.out_dir or ".") / f"stopped_step{trainer.step:06d}.safetensors")
            try:
                trainer.save_model(path)
                self.saved_path = str(path)
            except Exception as e:  # noqa: BLE001 - say why in the widget; the trainer keeps its state
                self.error = f"could not save the model: {type(e).__name__}: {e}"
            self.status = "stopped"
        else:
            self.status = trainer.stopped_by or "finished"  # e.g. "time_limit"

    @traitlets.observe("stop_requested")
    def _on_stop(self, change) -> None:
        # reaches the kernel only when it is free, i.e. when training runs in another thread
        if not change["new"]:
            return
        with self._lock:
            if self.trainer is not None and self.status == "running":
                self.status = "stopping"
                self.trainer.request_stop()  # takes effect after the step in progress
            elif self.status == "waiting":  # the run has not begun: remembered, honoured by on_train_begin
                self._stop_early = True

    def history(self, **kwargs):
        """The finished run in the history view (`cw.training`): a step slider over the snapshots the
        trainer kept (`TrainConfig(n_snapshots=N)` and an `out_dir`), with its logged metrics.
        `kwargs` go to `training` (step, circuit, layer, head, curves, eval_tokens)."""
        from .history import training

        if self.trainer is None:
            raise ValueError("this monitor has not watched a run yet")
        if self.status in ("running", "stopping"):
            raise ValueError(f"the run is still {self.status}: open its history when it has ended")
        if self.trainer.out_dir is None:
            raise ValueError("the run kept no snapshots: train with an out_dir and TrainConfig(n_snapshots=N)")
        return training(self.trainer.out_dir, **kwargs)

    def save_html(self, path, **kwargs):
        """The curves as they are now, in one self-contained offline HTML file (`export.save_html`)."""
        from .export import save_html

        return save_html(self, path, **kwargs)

    # ------------------------------------------------------------------ static fallback
    def figure(self):
        from .. import plot

        hist = list(self.evals) or ([] if self.trainer is None else self.trainer.history)
        return plot.training_curves(hist, title=self.title)

    def summary(self) -> str:
        """Plain-text state of the run (the text/plain fallback)."""
        last = self.evals[-1] if self.evals else {}
        return (f"TrainingMonitor: {self.title} step {self.step}/{self.total} ({self.status}); "
                + ", ".join(f"{k} {v:.3f}" for k, v in last.items() if isinstance(v, float) and k != "step"))


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where widgets can be shown)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def notebook_callbacks(trainer) -> list:
    """The trainer's default callbacks: a displayed TrainingMonitor in a notebook, nothing elsewhere."""
    if not in_notebook():
        return []
    from IPython.display import display

    mon = TrainingMonitor()
    display(mon)
    return [mon]


register_default_callbacks(notebook_callbacks)  # the widgets layer attaches itself; train never imports it
