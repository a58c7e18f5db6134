"""Interactive views (anywidget): they ask `circwidgets.engine` for numbers and send one head's
worth of them, as compact bytes, to the ESM front ends (`js/src/`, bundled into `circwidgets/static/`).
Every view is exported here and from the top-level package (`cw.attention(...)`, `cw.Ablation`, ...)."""

from .ablation import Ablation, ablation
from .attention import AttentionPatterns, attention
from .base import CircuitWidget, CircuitWidgetWarning
from .composition import Composition, composition
from .eigenvalues import Eigenvalues, eigenvalues
from .explorer import CircuitExplorer, explore
from .export import save_html
from .history import TrainingHistory, training
from .monitor import TrainingMonitor
from .paths import PathExpansion, paths
from .skip_trigrams import SkipTrigrams, skip_trigrams

__all__ = [
    "Ablation", "AttentionPatterns", "CircuitExplorer", "CircuitWidget", "CircuitWidgetWarning", "Composition",
    "Eigenvalues", "PathExpansion", "SkipTrigrams", "TrainingHistory", "TrainingMonitor", "ablation", "attention",
    "composition", "eigenvalues", "explore", "paths", "save_html", "skip_trigrams", "training",
]
