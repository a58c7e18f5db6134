"""One place for each idea: the pins that keep the layers apart and each computation written once."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from circwidgets.engine import interventions
from circwidgets.engine.ablation_state import ablated_run
from circwidgets.model.testing import random_model

SMALL = dict(n_layers=3, d_model=16, n_heads=3, d_head=4, d_vocab=13, n_ctx=12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kw", [dict(), dict(normalization="LN", biases=True, attn_only=False, d_mlp=20)])
def test_ablation_view_and_notebook_functions_give_the_same_losses(dtype, kw):
    """The ablation view's run (`ablated_run`) and the notebooks' `ablate_heads` / `ablate_path` share
    their hooks and their loss: equal to the bit, float32 included (no tolerance)."""
    m = random_model(seed=7, dtype=dtype, **SMALL, **kw)
    toks = torch.randint(0, 13, (1, 10), generator=torch.Generator().manual_seed(1))
    assert ablated_run(m, toks).loss == interventions.ablate_heads(m, toks, []).clean
    for kind in ("zero", "mean"):
        assert (ablated_run(m, toks, heads=[(0, 1), (2, 2)], kind=kind).loss
                == interventions.ablate_heads(m, toks, [(0, 1), (2, 2)], kind=kind).intervened)
        assert (ablated_run(m, toks, paths=[(0, 1, 2, 0, "q"), (0, 1, 2, 0, "k")], kind=kind).loss
                == interventions.ablate_path(m, toks, (0, 1), (2, 0), kind=("q", "k"), ablation=kind).intervened)


def test_ablation_widget_shows_the_notebook_numbers():
    pytest.importorskip("anywidget")
    from circwidgets.widgets.ablation import Ablation

    m = random_model(seed=8, dtype=torch.float32, **SMALL)
    ids = [1, 5, 2, 7, 3, 5, 2, 7, 9]
    toks = torch.tensor([ids])
    w = Ablation(m, ids)
    assert w.clean_loss == interventions.ablate_heads(m, toks, [(1, 2)]).clean
    w.toggle(1, 2)
    assert w.loss == interventions.ablate_heads(m, toks, [(1, 2)]).intervened
    w.ablation = "mean"
    assert w.loss == interventions.ablate_heads(m, toks, [(1, 2)], kind="mean").intervened


def _imported_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_train_never_imports_widgets():
    mods = _imported_after("import circwidgets.train, circwidgets.train.trainer, circwidgets.train.recipes, "
                           "circwidgets.train.tasks, circwidgets.train.corpus, circwidgets.train.__main__")
    assert "circwidgets.train.trainer" in mods
    assert not {m for m in mods if m.startswith("circwidgets.widgets")}


def test_model_and_engine_never_import_views():
    mods = _imported_after("import circwidgets.engine, circwidgets.model, circwidgets.plot")
    assert "circwidgets.engine.interventions" in mods
    assert not {m for m in mods if m.startswith(("circwidgets.widgets", "circwidgets.train", "anywidget"))}
    mods = _imported_after("import circwidgets.model")
    assert not {m for m in mods if m.startswith("circwidgets.engine")}
