"""The framework's mathematics as pure functions of weights and activations (no widgets).

Every function the views and the notebooks call is listed in `__all__` and importable from here
(`from circwidgets import engine; engine.ablate_heads(...)`). Definitions and conventions:
docs/ARCHITECTURE.md. `prep` (how the engine reads a model's weights: normalisation folded, cached)
and `_check` (argument checks) are plumbing.
"""

from . import activations, streaming  # noqa: F401  (lazy checkpoints, nnsight sources)
from ._check import NonFiniteResultError, check_finite, check_head, check_layer, check_layer_head, check_token
from ._progress import quiet_progress
from ._progress import tqdm as progress_bar
from .ablation_state import AblatedRun, ablated_run
from .circuits import (
    W_OV,
    W_QK,
    check_offset,
    circuit_cores,
    eigen_positivity,
    eigenvalues,
    full_ov,
    full_qk,
    keys_at,
    offset_matrices,
    offset_profile,
    positional_qk,
    positivity,
    trace_copying_score,
)
from .composition import (
    HeadComposition,
    composition_baseline,
    composition_for_head,
    composition_scores,
    composition_scores_one_sided,
    top_composition_pairs,
)
from .corpus_stats import (
    Bigrams,
    SkipTrigramCounts,
    empirical_bigrams,
    empirical_skip_trigrams,
    pearson,
    precision_at_k,
    rank_correlation,
)
from .factored import FactoredMatrix
from .heads import (
    REPEAT_LENS,
    InContextLoss,
    all_head_scores,
    copying_score,
    detection_lengths,
    detection_masks,
    head_scores,
    in_context_loss,
    induction_tokens,
    repeated_tokens,
    scores_by_length,
    scores_from_patterns,
)
from .history import (
    CircuitMeasures,
    SnapshotScores,
    TrainingCurves,
    circuit_measures,
    default_circuit,
    rise_window,
    score_snapshots,
    snapshot_scores,
    steepest_step,
)
from .induction import (
    DiagonalStats,
    PositionalProfile,
    decisive_position,
    diagonal_stats,
    induction_offsets,
    induction_positions,
    k_composition_cores,
    k_composition_eigenvalues,
    k_composition_positivity,
    k_composition_qk,
    opening_head,
    ov_copying,
    positional_qk_profile,
    strongest_induction_head,
    text_induction_head,
)
from .interventions import (
    Effect,
    LogitAttribution,
    PatchingReport,
    PathCut,
    ablate_heads,
    ablate_path,
    ablation_hooks,
    ablation_table,
    direct_logit_attribution,
    kv_group_notes,
    logit_attribution,
    logit_diff_metric,
    loss_metric,
    patch_heads,
    patch_kv_heads,
    patch_residual,
    patching_report,
    path_cuts,
    per_token_loss,
)
from .paths import FrozenRun, LogitPaths, PathTerms, frozen_run, logit_paths, path_budget, path_terms
from .patterns import (
    AttentionData,
    attention_patterns,
    pattern_thumbnails,
    shared_patterns,
    value_weighted_pattern,
)
from .prep import prepared, weights
from .skip_trigrams import SkipTrigramRow, SkipTrigramTable, frequent_tokens, skip_trigrams
from .streaming import resolve as model_weights  # an nnsight / HF model's weights: lazily from its checkpoint
from .text_run import TextRun, supports_text_run, text_run
from .virtual import VirtualHead, VirtualWeights, virtual_heads, virtual_weights

__all__ = [
    # circuits (weights only)
    "W_OV", "W_QK", "circuit_cores", "eigen_positivity", "eigenvalues", "full_ov", "full_qk", "positional_qk",
    "trace_copying_score", "FactoredMatrix", "check_offset", "positivity", "keys_at",
    "offset_matrices", "offset_profile",
    # composition, virtual weights and heads, path expansion
    "composition_baseline", "composition_for_head", "composition_scores", "composition_scores_one_sided",
    "HeadComposition",
    "top_composition_pairs", "VirtualHead", "VirtualWeights",
    "virtual_heads", "virtual_weights", "PathTerms", "path_budget", "path_terms",
    "FrozenRun", "LogitPaths", "frozen_run", "logit_paths",
    # skip-trigrams, patterns, head behaviour
    "SkipTrigramRow", "SkipTrigramTable", "skip_trigrams", "frequent_tokens", "AttentionData",
    "attention_patterns", "pattern_thumbnails", "shared_patterns", "value_weighted_pattern",
    "InContextLoss", "REPEAT_LENS", "all_head_scores",
    "copying_score", "detection_lengths", "detection_masks", "head_scores", "in_context_loss", "induction_tokens",
    "repeated_tokens", "scores_by_length", "scores_from_patterns",
    # the induction mechanism in the weights
    "DiagonalStats", "PositionalProfile", "decisive_position", "diagonal_stats", "induction_offsets",
    "induction_positions",
    "k_composition_cores", "k_composition_eigenvalues", "k_composition_positivity", "k_composition_qk",
    "opening_head", "ov_copying",
    "positional_qk_profile", "strongest_induction_head",
    "text_induction_head",
    # one forward pass on a text, shared by every view of it
    "TextRun", "supports_text_run", "text_run",
    # the same quantities over training snapshots
    "CircuitMeasures", "SnapshotScores", "TrainingCurves", "circuit_measures", "default_circuit", "rise_window",
    "score_snapshots", "snapshot_scores", "steepest_step",
    # interventions (one implementation: ablation_hooks) and metrics
    "AblatedRun", "Effect", "LogitAttribution", "PatchingReport", "PathCut", "ablate_heads", "ablate_path",
    "ablated_run", "ablation_hooks", "ablation_table", "path_cuts", "direct_logit_attribution", "logit_attribution",
    "logit_diff_metric", "loss_metric", "patch_heads", "patch_residual", "patch_kv_heads", "kv_group_notes",
    "patching_report", "per_token_loss",
    # corpus statistics
    "Bigrams", "SkipTrigramCounts", "empirical_bigrams", "empirical_skip_trigrams", "pearson", "precision_at_k",
    "rank_correlation",
    # weights as the engine reads them; argument checks (shared with the views)
    "prepared", "weights", "model_weights", "quiet_progress", "progress_bar",
    "NonFiniteResultError", "check_finite", "check_head", "check_layer", "check_layer_head", "check_token",
]
