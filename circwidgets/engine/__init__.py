"""The framework's mathematics as pure functions of weights and activations (no widgets)."""

from .heads import all_head_scores, copying_score, head_scores, in_context_loss, repeated_tokens  # noqa: E402,F401
from .skip_trigrams import SkipTrigramTable, skip_trigrams  # noqa: E402,F401
