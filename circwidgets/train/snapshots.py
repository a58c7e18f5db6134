"""A training run's snapshots: where they are and how they load (no mathematics here).

A `TrainingRun` is a name, its snapshots (`Snapshot`: a step and a model file or a model in memory,
oldest first) and the metrics the trainer logged (a list of evaluation records, or None). Sources:

- a shipped model's name: `circwidgets.zoo.training_run(name)` (its `NAME.stepNNNNNN.safetensors`, plus
  the shipped model itself when it is later than the last snapshot; metrics from the shipped file's
  metadata);
- a trainer run directory (`Trainer(out_dir=...)`): `snapshots/step_XXXXXX.safetensors` and
  `metrics.json`;
- a list of checkpoint paths, `Transformer`s, or `(step, path or Transformer)` pairs. A step not given
  is read from the model's metadata (`"step"`, written by the trainer), else the list index.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..model import Transformer

__all__ = ["Snapshot", "TrainingRun", "read_metrics", "run_snapshots", "training_run"]

_RUN_SNAPSHOT = re.compile(r"step_(\d+)\.safetensors")


@dataclass
class Snapshot:
    """One training snapshot: `step` and a model file `path` or a `model` in memory. `load()` reads the
    file once (read-only weights) and keeps the model."""

    step: int
    path: Path | None = None
    model: Transformer | None = field(default=None, repr=False)

    def load(self) -> Transformer:
        if self.model is None:
            from ..model import load_file

            if self.path is None:
                raise ValueError(f"snapshot at step {self.step} has neither a path nor a model")
            self.model = load_file(self.path).requires_grad_(False)
        return self.model

    def release(self) -> None:
        """Drop the loaded model when it can be read again from `path` (a model given in memory stays)."""
        if self.path is not None:
            self.model = None


@dataclass
class TrainingRun:
    """Snapshots (oldest first, distinct steps) and the logged metrics (None when there are none)."""

    name: str
    snapshots: list[Snapshot]
    metrics: list[dict] | None = None

    @property
    def steps(self) -> list[int]:
        return [s.step for s in self.snapshots]

    def __post_init__(self) -> None:
        if not self.snapshots:
            raise ValueError(f"{self.name}: no training snapshots")
        self.snapshots = sorted(self.snapshots, key=lambda s: s.step)
        steps = self.steps
        dup = sorted({s for s in steps if steps.count(s) > 1})
        if dup:
            raise ValueError(f"{self.name}: several snapshots at step(s) {dup}")


def read_metrics(run_dir: str | os.PathLike) -> list[dict] | None:
    """The trainer's `metrics.json` in `run_dir` (a list of evaluation records), or None when absent."""
    p = Path(run_dir) / "metrics.json"
    if not p.is_file():
        return None
    data = json.loads(p.read_text())
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError(f"{p}: expected a list of evaluation records")
    return data


def run_snapshots(run_dir: str | os.PathLike) -> list[Snapshot]:
    """The snapshots a `Trainer(out_dir=run_dir)` wrote (`snapshots/step_XXXXXX.safetensors`), oldest first."""
    d = Path(run_dir) / "snapshots"
    out = [Snapshot(int(m.group(1)), p) for p in d.glob("step_*.safetensors")
           if (m := _RUN_SNAPSHOT.fullmatch(p.name))] if d.is_dir() else []
    return sorted(out, key=lambda s: s.step)


def _metrics_of(meta: dict) -> list[dict] | None:
    try:
        m = json.loads(meta["metrics"])
    except (KeyError, ValueError, TypeError):
        return None
    return m if isinstance(m, list) else None


def _from_list(items: Sequence) -> TrainingRun:
    from ..model.io import read_metadata

    snaps: list[Snapshot] = []
    logged: list[tuple[int, list[dict]]] = []  # (step, history) of each item that carries one
    for i, it in enumerate(items):
        step = None
        if isinstance(it, tuple):
            if len(it) != 2:
                raise ValueError(f"item {i}: expected (step, path or Transformer), got a {len(it)}-tuple")
            step, it = it
            if isinstance(step, bool) or not isinstance(step, int) or step < 0:
                raise ValueError(f"item {i}: step {step!r} must be an integer >= 0")
        if isinstance(it, Transformer):
            meta = getattr(it, "metadata", None) or {}
            snap = Snapshot(step if step is not None else int(meta.get("step", i)), None, it)
        elif isinstance(it, (str, os.PathLike)):
            p = Path(it)
            if not p.is_file():
                raise FileNotFoundError(f"item {i}: no checkpoint file {p}")
            meta = read_metadata(p)
            snap = Snapshot(step if step is not None else int(meta.get("step", i)), p)
        else:
            raise TypeError(f"item {i}: expected a checkpoint path, a Transformer or (step, either), "
                            f"got {type(it).__name__}")
        snaps.append(snap)
        if (m := _metrics_of(meta)) is not None:
            logged.append((snap.step, m))
    # the latest snapshot's history covers the earlier ones (the trainer writes it into every file)
    return TrainingRun("snapshots", snaps, max(logged, key=lambda x: x[0])[1] if logged else None)


def training_run(source) -> TrainingRun:
    """A `TrainingRun` from a trainer run directory or a list of checkpoints (module docstring); a shipped
    model's runs come from `circwidgets.zoo.training_run(name)` (the zoo sits above this layer)."""
    if isinstance(source, TrainingRun):
        return source
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not p.is_dir():
            raise FileNotFoundError(f"{source}: not a run directory (a list of checkpoint files works too; a "
                                    "shipped model's snapshots: circwidgets.zoo.training_run(name))")
        snaps = run_snapshots(p)
        if not snaps:
            raise FileNotFoundError(f"{p}: no snapshots/step_XXXXXX.safetensors (train with "
                                    "TrainConfig(n_snapshots=N) and an out_dir to keep them)")
        return TrainingRun(p.name, snaps, read_metrics(p))
    if isinstance(source, Sequence):
        return _from_list(list(source))
    raise TypeError(f"expected a run directory or a list of checkpoints, got {type(source).__name__}")
