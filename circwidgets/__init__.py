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

__version__ = "0.1.0"


def load(name_or_path: str | os.PathLike, device: str = "cpu", **kwargs) -> Transformer:
    """Load a model from a `.safetensors` path written by `save`, or a shipped model by name
    (see `circwidgets.zoo.list()`)."""
    p = Path(name_or_path)
    if p.exists() or p.suffix == ".safetensors" or os.sep in str(name_or_path):
        return load_file(p, device=device, **kwargs)
    from . import zoo

    return load_file(zoo.path(str(name_or_path)), device=device, **kwargs)


# Widgets load lazily (anywidget/ipywidgets only when a view is asked for).
_LAZY = {"attention": "widgets", "eigenvalues": "widgets", "skip_trigrams": "widgets",
         "composition": "widgets.composition", "paths": "widgets.paths", "ablation": "widgets.ablation",
         "explore": "widgets.explorer", "TrainingMonitor": "widgets.monitor"}


def __getattr__(name: str):
    if name in ("zoo", "train"):  # `cw.zoo.list()` without an explicit import
        import importlib

        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ModelConfig", "ModelFileError", "Transformer", "fold_layernorm", "from_hf", "from_transformer_lens",
           "load", "save", "__version__",
           "attention", "eigenvalues", "skip_trigrams", "composition", "paths", "ablation", "explore",
           "TrainingMonitor"]
