"""Acting as the page in-process: a comm `update` message, through the widget's PageInputs gate."""

from __future__ import annotations

from typing import Any


def page(w: Any, **state: Any) -> None:
    """Apply `state` as the page's comm `update` would (`w._handle_msg`: the PageInputs gate, no kernel)."""
    w._handle_msg({"content": {"data": {"method": "update", "state": state}}, "buffers": []})


def front_end_sets() -> dict[str, tuple[type, set[str], str]]:
    """Per view `{front end name: (widget class, traits its JS sets with model.set, the JS source)}`, read
    from js/src (what the page can send, for the tests of the page-input gate and of the offline page)."""
    import re
    from pathlib import Path

    from circwidgets.widgets import (
        Ablation,
        AttentionPatterns,
        Composition,
        Eigenvalues,
        PathExpansion,
        SkipTrigrams,
        TrainingHistory,
        TrainingMonitor,
    )

    src = Path(__file__).resolve().parents[1] / "js" / "src"
    views = {"attention": AttentionPatterns, "eigenvalues": Eigenvalues, "skip_trigrams": SkipTrigrams,
             "composition": Composition, "paths": PathExpansion, "ablation": Ablation, "monitor": TrainingMonitor,
             "history": TrainingHistory}
    out = {}
    for name, cls in views.items():
        js = (src / f"{name}.js").read_text()
        out[name] = (cls, set(re.findall(r"""model\.set\(\s*["'](\w+)["']""", js)), js)
    return out
