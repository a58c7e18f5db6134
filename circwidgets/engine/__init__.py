"""The framework's mathematics as pure functions of weights and activations (no widgets)."""

from .circuits import (  # noqa: E402,F401
    W_OV,
    W_QK,
    eigen_positivity,
    eigenvalues,
    full_ov,
    full_qk,
    positional_qk,
    trace_copying_score,  # noqa: E402,F401
)
from .composition import composition_baseline, composition_scores, composition_scores_one_sided  # noqa: E402,F401
from .corpus_stats import (  # noqa: E402,F401
    empirical_bigrams,
    empirical_skip_trigrams,
    pearson,
    precision_at_k,
    rank_correlation,
)
from .factored import FactoredMatrix  # noqa: E402,F401
from .heads import all_head_scores, copying_score, head_scores, in_context_loss, repeated_tokens  # noqa: E402,F401
from .interventions import (  # noqa: E402,F401
    ablate_heads,
    ablate_path,
    ablation_table,
    direct_logit_attribution,
    logit_attribution,
    patch_heads,
    patch_residual,
)
from .paths import PathTerms, path_terms  # noqa: E402,F401
from .skip_trigrams import SkipTrigramTable, skip_trigrams  # noqa: E402,F401
from .virtual import VirtualHead, VirtualWeights, virtual_heads, virtual_weights  # noqa: E402,F401
