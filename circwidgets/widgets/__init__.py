"""Interactive views (anywidget): they ask `circwidgets.engine` for numbers and send one head's
worth of them, as compact bytes, to the ESM front ends (`js/src/`, bundled into `circwidgets/static/`)."""

from .attention import AttentionPatterns, attention
from .base import CircuitWidget, CircuitWidgetWarning
from .eigenvalues import Eigenvalues, eigenvalues
from .skip_trigrams import SkipTrigrams, skip_trigrams

__all__ = [
    "AttentionPatterns", "CircuitWidget", "CircuitWidgetWarning", "Eigenvalues", "SkipTrigrams", "attention",
    "eigenvalues", "skip_trigrams",
]
