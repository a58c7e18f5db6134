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


# What each layer may import from the package (docs/ARCHITECTURE.md, "Layers"): `""` is the package's own
# facade (`circwidgets/__init__.py`, which loads the layers lazily).
LAYER_IMPORTS = {
    "model": set(),
    "engine": {"model"},
    "train": {"model", "engine"},
    "zoo": {"model", "engine", "train", ""},
    "plot": set(),
}


def test_each_layer_imports_only_the_layers_below_it():
    """Every import of the package's own modules, at module level or inside a function, read from the source
    (an import inside a function escapes the import-time checks above)."""
    import ast
    from pathlib import Path

    pkg = Path(__file__).resolve().parents[1] / "circwidgets"
    seen = 0
    for layer, allowed in LAYER_IMPORTS.items():
        files = [pkg / "plot.py"] if layer == "plot" else sorted((pkg / layer).rglob("*.py"))
        for f in files:
            depth = len(f.relative_to(pkg).parts) - 1  # folders between the package root and the file
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                targets = []
                if isinstance(node, ast.ImportFrom) and node.level:
                    up = node.level - 1  # how many folders up from the file's own
                    if up < depth:
                        continue  # inside its own layer
                    parts = (node.module or "").split(".")
                    targets = [parts[0]] if node.module else [a.name for a in node.names if up == depth] or [""]
                    targets = [t if (pkg / t).exists() or (pkg / f"{t}.py").exists() else "" for t in targets]
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                    targets = [n.split(".")[1] if "." in n else "" for n in names if n.split(".")[0] == "circwidgets"]
                for t in targets:
                    seen += 1
                    where = f.relative_to(pkg)
                    assert t == layer or t in allowed, f"{where} imports circwidgets.{t} ({layer}: {sorted(allowed)})"
    assert seen > 50, "no imports found: the source layout changed"


def test_a_notebook_kernel_gets_the_monitor_through_the_public_hook():
    """In a kernel, `import circwidgets` lets the widgets layer register its monitor factory with the
    trainer's public hook; outside one nothing of the widgets layer is imported."""
    code = ("import sys, types\nsys.modules['ipykernel'] = types.ModuleType('ipykernel')\n"
            "import circwidgets\nfrom circwidgets.train import trainer\nfrom circwidgets.widgets import monitor\n"
            "assert monitor.notebook_callbacks in trainer._DEFAULT_CALLBACK_FACTORIES\n")
    assert "circwidgets.widgets.monitor" in _imported_after(code)
    assert "circwidgets.widgets.monitor" not in _imported_after("import circwidgets\nimport circwidgets.train")


def test_trainer_callbacks_and_request_stop():
    from circwidgets.model import ModelConfig, Transformer
    from circwidgets.train import RepeatTask, TrainConfig, Trainer, register_default_callbacks
    from circwidgets.train import trainer as trainer_module
    from circwidgets.train.trainer import default_callbacks

    events = []

    class StopAtFive:
        def on_train_begin(self, t):
            events.append("begin")

        def on_step(self, t, loss):
            events.append(("step", t.step))
            if t.step >= 5:
                t.request_stop()

        def on_train_end(self, t):
            events.append(("end", t.step, t.stopped_by))

    cfg = ModelConfig(n_layers=1, d_model=8, n_heads=1, d_head=8, d_vocab=8, n_ctx=16)
    tc = TrainConfig(steps=100, batch_size=2, eval_every=1000, icl_n_seqs=2, icl_seq_len=4, eval_batches=1)

    def make(**kw):
        return Trainer(Transformer(cfg, seed=0), RepeatTask(8, 8, min_len=2, max_len=3), tc, progress=False, **kw)

    factory = register_default_callbacks(lambda t: [StopAtFive()])
    try:
        assert register_default_callbacks(factory) is factory  # registering twice: once
        assert trainer_module._DEFAULT_CALLBACK_FACTORIES.count(factory) == 1
        t = make()
        assert [type(c).__name__ for c in default_callbacks(t)] == ["StopAtFive"]
        with torch.enable_grad():
            t.train()
    finally:
        trainer_module._DEFAULT_CALLBACK_FACTORIES.remove(factory)
    # on_step runs every 10 steps: the stop requested at step 10 ends the run after that step
    assert events == ["begin", ("step", 10), ("end", 10, "interrupt")] and t.step == 10
    events.clear()
    with torch.enable_grad():
        make(callbacks=[]).train(3)  # explicit callbacks: no factory asked
    assert events == []


def test_public_surface():
    import circwidgets as cw

    assert cw.engine.__name__ == "circwidgets.engine" and cw.plot.__name__ == "circwidgets.plot"
    assert "engine" in dir(cw) and "plot" in cw.__all__
    with pytest.raises(AttributeError):
        cw.no_such_thing  # noqa: B018
    pytest.importorskip("anywidget")
    import circwidgets.widgets as W

    assert set(W.__all__) == set(cw._VIEWS)
    for name in W.__all__:
        assert getattr(cw, name) is getattr(W, name)
    views = {"AttentionPatterns", "Eigenvalues", "SkipTrigrams", "Composition", "PathExpansion", "Ablation",
             "CircuitExplorer", "TrainingMonitor"}
    assert views <= set(W.__all__)


def test_engine_all_lists_what_the_notebooks_use():
    import re
    from pathlib import Path

    import circwidgets.engine as E

    assert len(E.__all__) == len(set(E.__all__)) and all(hasattr(E, n) for n in E.__all__)
    root = Path(__file__).resolve().parents[1] / "notebooks"
    used = set()
    for f in [*root.glob("*.py"), *root.glob("src/*.py")]:
        used |= set(re.findall(r"\bengine\.([a-zA-Z_]\w*)", f.read_text(encoding="utf-8")))
    used -= {"interventions", "ablation_state"}  # submodules
    assert used, "no notebook sources found"
    assert used <= set(E.__all__), sorted(used - set(E.__all__))


def test_engine_all_lists_what_the_views_use():
    """`engine.__all__` is the engine's public face for the views too: every public name a view or plot
    imports from the engine (from the package or a submodule, or reads off an engine submodule it imported)."""
    import ast
    import types
    from pathlib import Path

    import circwidgets.engine as E

    root = Path(__file__).resolve().parents[1] / "circwidgets"
    files = [*root.glob("widgets/*.py"), *root.glob("plot*.py"), *root.glob("plot/*.py")]
    used: dict[str, str] = {}
    for f in files:
        tree = ast.parse(f.read_text(encoding="utf-8"))
        modules = set()  # names bound to engine submodules (`from ..engine import heads`)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level and (node.module or "").split(".")[0] == "engine":
                for a in node.names:
                    if node.module == "engine" and isinstance(getattr(E, a.name, None), types.ModuleType):
                        modules.add(a.asname or a.name)
                    else:
                        used.setdefault(a.name, f.name)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
                used.setdefault(node.attr, f.name)
    assert len(used) > 20, "the views' engine imports were not found"
    missing = {n: f for n, f in used.items() if not n.startswith("_") and n not in E.__all__}
    assert not missing, missing


def test_plots_take_engine_objects():
    """The static figures are drawn from engine objects alone (no view, no synced state)."""
    pytest.importorskip("matplotlib")
    from circwidgets import engine, plot

    m = random_model(seed=9, dtype=torch.float32, **SMALL)
    toks = torch.tensor([[1, 5, 2, 7, 3, 5, 2, 7]])
    pt = engine.path_terms(m, toks, max_order=2)
    bars = pt.bars(5, 2, n_one=3, n_virtual=2)
    assert sum(b.value for b in bars) == pytest.approx(sum(v for _, v in pt.for_token(5, 2)), abs=1e-5)
    assert [b.section for b in bars].count("one head") == 3 and bars[-1].label.startswith("remainder")
    fig = plot.path_terms(pt, 5, 2, n_one=3, n_virtual=2)
    title = fig.axes[0].get_title()
    assert f"model logit {float(pt.model_logits[0, 5, 2]):.4f}" in title
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [b.label for b in bars]
    table = engine.skip_trigrams(m, 0, 1, k=4)
    fig = plot.skip_trigram_table(table)
    cells = fig.axes[0].tables[0].get_celld()
    assert cells[1, 0].get_text().get_text() == str(table[0].source)  # no tokenizer: ids
    clean, ablated = engine.ablated_run(m, toks), engine.ablated_run(m, toks, heads=[(1, 0)])
    fig = plot.ablation(clean, ablated)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights[:7] == pytest.approx(clean.token_loss[0].tolist())
    assert heights[7:] == pytest.approx(ablated.token_loss[0].tolist())


def test_every_document_the_code_cites_is_in_the_repository():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = [*root.glob("circwidgets/**/*.py"), root / "README.md", *root.glob("tests/*.py")]
    cited = set()
    for f in files:
        text = f.read_text(encoding="utf-8")
        assert "DESIGN.md" not in text or f.name == "test_architecture.py", f
        cited |= set(re.findall(r"\b(docs/[\w./-]+\.md)", text))
    assert "docs/ARCHITECTURE.md" in cited
    assert all((root / c).is_file() for c in cited), sorted(c for c in cited if not (root / c).is_file())
    sections = set(re.findall(r"\*\*§(\d+)", (root / "docs/ARCHITECTURE.md").read_text(encoding="utf-8")))
    for f in files:
        for ref in re.findall(r"docs/ARCHITECTURE\.md §(\d+)", f.read_text(encoding="utf-8")):
            assert ref in sections, (f, ref)


def test_layers_above_the_engine_use_its_public_names_only():
    import re
    from pathlib import Path

    pkg = Path(__file__).resolve().parents[1] / "circwidgets"
    for f in [*pkg.glob("widgets/*.py"), *pkg.glob("train/*.py"), *pkg.glob("zoo/*.py"), pkg / "plot.py"]:
        text = f.read_text(encoding="utf-8")
        assert not re.search(r"from \.\.engine\._\w+ import|engine\._check", text), f
        assert not re.search(r"^\s*(from \.\.widgets|import circwidgets\.widgets|from circwidgets\.widgets)", text,
                             re.M) or f.parent.name == "widgets", f
