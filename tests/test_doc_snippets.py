"""Every code snippet a reader is told to type runs: the README's ```python blocks and the code in the
notebooks' exercise hints.

- README.md: the python blocks run in order in one namespace (a temporary working directory), on the
  shipped models. A block whose first line is `# needs the network: <why>` is skipped with that reason
  (e.g. a Hugging Face hub download); a block whose first line is `# needs: pkg[, pkg]` is skipped when
  one of those packages is not installed.
- Notebooks: each notebook's code cells (from its jupytext source) run in one namespace, in order; the
  backtick spans after "Hint:" in an exercise's markdown are run right after that exercise's solution
  cell (so they see the names the exercise is about). A span is an expression or a statement; a span that
  starts with "." is applied to the previous span's value (`vh.full_ov(model)` and its `.eigenvalues()`).
  A hint naming an attribute that does not exist (`eff.ablated`) fails here.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NB_SRC = REPO / "notebooks" / "src"
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
NETWORK = re.compile(r"^# needs the network: (.+)$")
NEEDS = re.compile(r"^# needs: (.+)$")


def readme_blocks() -> list[str]:
    return FENCE.findall((REPO / "README.md").read_text(encoding="utf-8"))


def hint_snippets(markdown: str) -> list[str]:
    """The backtick spans after "Hint:" (a span may wrap across lines)."""
    at = markdown.find("Hint:")
    if at < 0:
        return []
    return [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", markdown[at:], re.S)]


def run_snippet(code: str, ns: dict, previous=None):
    """Run one snippet: `.attr...` on `previous`, else an expression (its value) or statements (None)."""
    if code.startswith("."):
        ns["_previous_"] = previous
        code = "_previous_" + code
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError:
        exec(compile(code, "<hint>", "exec"), ns)
        return None
    return eval(compile(tree, "<hint>", "eval"), ns)


def test_readme_has_python_blocks_and_names_the_converters():
    blocks = readme_blocks()
    assert len(blocks) >= 3
    text = "\n".join(blocks)
    for name in ("cw.from_hf", "cw.from_transformer_lens", "save_html", "cw.save"):
        assert name in text, name


@pytest.mark.parametrize("base_install", [False, True])
def test_readme_python_blocks_run(tmp_path, monkeypatch, base_install):
    """Every README block runs in order; with `base_install`, as on a machine without the optional packages
    the `# needs:` blocks name (skipped there), so no later block may depend on one of them."""
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "__readme__"}
    ran, skipped = 0, []
    for i, block in enumerate(readme_blocks()):
        first = block.splitlines()[0] if block.strip() else ""
        if m := NETWORK.match(first):
            skipped.append(f"block {i}: {m.group(1)}")
            continue
        if (m := NEEDS.match(first)) and (base_install or any(importlib.util.find_spec(p.strip()) is None
                                                              for p in m.group(1).split(","))):
            skipped.append(f"block {i}: needs {m.group(1)}")
            continue
        try:
            exec(compile(block, f"README.md python block {i}", "exec"), ns)
        except Exception as e:  # noqa: BLE001 - name the block that broke
            raise AssertionError(f"README.md python block {i} failed: {type(e).__name__}: {e}\n{block}") from e
        ran += 1
    assert ran >= 2, skipped
    print("skipped:", skipped)


def _notebooks_with_hints() -> list[str]:
    return sorted(p.name for p in NB_SRC.glob("[0-9][0-9]_*.py") if "Hint:" in p.read_text(encoding="utf-8"))


def test_every_hint_is_found():
    names = _notebooks_with_hints()
    assert "00_tour.py" in names and len(names) >= 4


@pytest.mark.parametrize("name", _notebooks_with_hints())
def test_notebook_hints_run(name, tmp_path, monkeypatch, one_torch_thread):
    jupytext = pytest.importorskip("jupytext")
    import matplotlib

    matplotlib.use("Agg")
    nb = jupytext.read(NB_SRC / name, fmt="py:percent")
    from circwidgets import zoo

    needed = re.findall(r'^\w*MODEL = "([^"]+)"', (NB_SRC / name).read_text(encoding="utf-8"), re.M)
    missing = [m for m in needed if m not in zoo.list()]
    if missing:
        pytest.skip(f"{name} needs shipped model(s) {missing}")
    last_hint = max(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "Hint:" in c.source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    class _Handle:
        def update(self, *a, **k):
            pass

    ns: dict = {"__name__": "__main__", "display": lambda *a, **k: _Handle()}
    pending: list[str] = []  # the hint waiting for its exercise's solution cell
    checked = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and "Hint:" in cell.source:
            pending = hint_snippets(cell.source)
            assert pending, f"{name}: a hint without code in backticks: {cell.source[:80]!r}"
            continue
        if cell.cell_type != "code":
            continue
        src = "\n".join(ln for ln in cell.source.splitlines() if not ln.lstrip().startswith(("%", "!")))
        exec(compile(src, f"{name} cell {i}", "exec"), ns)
        if pending:
            previous = None
            for snip in pending:
                try:
                    previous = run_snippet(snip, ns, previous)
                except Exception as e:  # noqa: BLE001
                    raise AssertionError(f"{name}: hint snippet `{snip}` failed: {type(e).__name__}: {e}") from e
                checked += 1
            pending = []
        if i > last_hint and not pending:
            break
    assert checked >= 1
    assert os.getcwd() == str(tmp_path)
