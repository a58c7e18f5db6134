"""circwidgets: the mathematics of transformer circuits, clickable in a notebook.

Layers: `circwidgets.model` (weights) -> `circwidgets.engine` (mathematics) -> `circwidgets.widgets`
(views). `circwidgets.train` and `circwidgets.zoo` build and ship small models.
"""

from __future__ import annotations

import os
from pathlib import Path

from .model import (
    ModelConfig,
    ModelFileError,
    Transformer,
    fold_layernorm,
    from_hf,
    from_transformer_lens,
    load_file,
    save,
)

__version__ = "0.1.0"  # the one place: pyproject.toml reads it (dynamic version)


def load(name_or_path: str | os.PathLike, device: str = "cpu", **kwargs) -> Transformer:
    """Load a model from a `.safetensors` path written by `save`, or a shipped model by name
    (see `circwidgets.zoo.list()`)."""
    p = Path(name_or_path)
    if p.exists() or p.suffix == ".safetensors" or os.sep in str(name_or_path):
        return load_file(p, device=device, **kwargs)
    from . import zoo

    return load_file(zoo.path(str(name_or_path)), device=device, **kwargs)


# Subpackages and views load on first use (`cw.engine`, `cw.plot`, `cw.zoo`, `cw.train` without an
# explicit import; anywidget/ipywidgets only when a view is asked for). Every name `circwidgets.widgets`
# exports is reachable here (tests/test_architecture.py checks that the two lists agree).
_SUBPACKAGES = ("engine", "plot", "train", "widgets", "zoo")
_VIEWS = ("attention", "eigenvalues", "skip_trigrams", "composition", "paths", "ablation", "explore",
          "AttentionPatterns", "Eigenvalues", "SkipTrigrams", "Composition", "PathExpansion", "Ablation",
          "CircuitExplorer", "TrainingHistory", "TrainingMonitor", "training", "CircuitWidget", "CircuitWidgetWarning",
          "save_html")


def __getattr__(name: str):
    import importlib

    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    if name in _VIEWS:
        return getattr(importlib.import_module(".widgets", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBPACKAGES) | set(_VIEWS))


def _attach_notebook_monitor() -> None:
    """Inside a Jupyter kernel, import the widgets layer's training monitor, which registers itself with
    the trainer's public hook (`train.register_default_callbacks`): a `Trainer` started in a notebook then
    shows a live `TrainingMonitor`. Elsewhere (scripts, the CLI, tests) nothing more is imported; the
    train layer never imports the widgets layer."""
    import sys

    if "ipykernel" not in sys.modules:
        return
    try:
        import importlib

        importlib.import_module(".widgets.monitor", __name__)
    except Exception as e:  # noqa: BLE001 - no anywidget / ipywidgets: training shows progress bars only
        import warnings

        warnings.warn(f"no live training monitor: {e}", stacklevel=2)


__all__ = ["ModelConfig", "ModelFileError", "Transformer", "fold_layernorm", "from_hf", "from_transformer_lens",
           "load", "save", "__version__", *_SUBPACKAGES, *_VIEWS]

_attach_notebook_monitor()
