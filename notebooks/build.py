"""Build the lecture notebooks (notebooks/NAME.ipynb) from their sources (notebooks/src/NAME.py, jupytext
percent format: one `# %%` block per cell), then execute them so that the stored outputs hold the widgets'
static fallbacks (PNG + text/plain) for viewers with no kernel (GitHub).

    python notebooks/build.py                  # write every notebook from its source (keeps unchanged outputs)
    python notebooks/build.py --execute        # write, then execute each one in place, in turn
    python notebooks/build.py --execute 03     # only notebooks whose name starts with 03
    python notebooks/build.py --check          # exit 1 if a stored notebook's cells differ from its source

A notebook edited in Jupyter after its source (cells differ, .ipynb newer) is not overwritten: sync it into
its source first (`jupytext --sync`, notebooks/jupytext.toml pairs the two), or pass --force to drop the edit.

Conventions of every notebook, checked here on the sources (`conventions`): a Colab badge in the first cell
and a first code cell that installs the package only in Colab (both naming GITHUB_REPO); the model name is
ONE variable (`MODEL = ...`) in the setup cell; exercises are followed by a solution cell that JupyterLab
shows collapsed (`jupyter.source_hidden`) and Colab shows as a form (`cellView: form` + `#@title`), written
in the source as `# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]`;
`# NBVAL_CHECK_OUTPUT` cells print rounded numbers that `pytest --nbval-lax` compares with the stored outputs
(tests/test_notebooks.py). A notebook is skipped while the zoo does not ship a model its source names in a
`...MODEL = "name"` line.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import jupytext
import nbformat

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SRC = HERE / "src"
GITHUB_REPO = "circwidgets/circwidgets"  # owner/name on GitHub: used by the Colab badges and the Colab install
# What every notebook's Colab cell installs: the one place to change when the package's public home moves
# (e.g. "circwidgets" once it is on PyPI, or another git URL); `build` rewrites every notebook from it.
COLAB_PIP_SPEC = f"circwidgets @ git+https://github.com/{GITHUB_REPO}"
TIMINGS = HERE / "timings.json"
SOURCE_FORMAT = "py:percent"  # what the sources' header says (notebooks/jupytext.toml keeps it to that)

# What `build` writes into every notebook's metadata (the sources hold cells only).
NOTEBOOK_METADATA = {
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"},
    "colab": {"provenance": []},
}
# Cell metadata nbclient adds when it executes a cell (timings): not part of the source.
EXECUTION_METADATA = ("execution",)

COLAB_CELL = f'''# Colab only: install circwidgets and turn on custom widgets. Anywhere else this cell does nothing.
import sys

if "google.colab" in sys.modules:
    %pip install -q "{COLAB_PIP_SPEC}"
    from google.colab import output

    output.enable_custom_widget_manager()'''
MODEL_LINE = re.compile(r'^\w*MODEL = "([^"]+)"', re.M)  # `MODEL = "toy-2l-code"`, `CODE_MODEL = "..."`

try:
    import circwidgets  # noqa: F401 - an installed (or PYTHONPATH) copy wins
except ImportError:
    sys.path.insert(0, str(ROOT))

NOTEBOOKS = [p.stem + ".ipynb" for p in sorted(SRC.glob("[0-9][0-9]_*.py"))]


def source_path(name: str) -> Path:
    """notebooks/src/NAME.py for notebook NAME.ipynb."""
    return SRC / (Path(name).stem + ".py")


def read_source(name: str) -> nbformat.NotebookNode:
    """The cells of notebook `name` as its source defines them (no outputs; no notebook metadata but the
    source's format)."""
    return jupytext.read(source_path(name), fmt=SOURCE_FORMAT)


def required_models(name: str) -> list[str]:
    """The zoo models the source names in its `...MODEL = "name"` lines."""
    return [m for c in read_source(name).cells if c.cell_type == "code" for m in MODEL_LINE.findall(c.source)]


def shipped() -> list[str]:
    from circwidgets import zoo

    return zoo.list()


def missing(name: str) -> list[str]:
    """The models notebook `name` needs that the zoo does not ship."""
    have = set(shipped())
    return [m for m in required_models(name) if m not in have]


def conventions(name: str, nb: nbformat.NotebookNode) -> list[str]:
    """What in notebook `name` breaks the conventions of the module docstring (empty when none)."""
    problems = []
    badge = f"https://colab.research.google.com/github/{GITHUB_REPO}/blob/main/notebooks/{name})"
    if not (nb.cells and nb.cells[0].cell_type == "markdown" and badge in nb.cells[0].source):
        problems.append(f"the first cell must be markdown with the Colab badge linking {badge[:-1]}")
    first_code = next((c for c in nb.cells if c.cell_type == "code"), None)
    if first_code is None or first_code.source != COLAB_CELL:
        problems.append("the first code cell must be the Colab-only install cell (COLAB_CELL in build.py)")
    for c in nb.cells:
        if "solution" in c.metadata.get("tags", []) and not (
                c.cell_type == "code" and c.metadata.get("jupyter", {}).get("source_hidden") is True
                and c.metadata.get("cellView") == "form" and c.source.startswith("#@title ")):
            problems.append(f"solution cell not hidden (jupyter.source_hidden, cellView form, #@title): "
                            f"{c.source[:60]!r}")
        # a heading written as a comment in a code cell (a missing `# %% [markdown]` marker) never renders
        heading = next((ln for ln in c.source.splitlines() if re.match(r"# #{1,6} ", ln)), None)
        if c.cell_type == "code" and heading:
            problems.append(f"markdown heading inside a code cell (add a `# %% [markdown]` marker): {heading!r}")
    return problems


def build(name: str) -> nbformat.NotebookNode:
    """Notebook `name` from its source: cells (sources and metadata), notebook metadata, stable cell ids."""
    src = read_source(name)
    cells = []
    for i, c in enumerate(src.cells):
        new = nbformat.v4.new_code_cell if c.cell_type == "code" else (
            nbformat.v4.new_markdown_cell if c.cell_type == "markdown" else nbformat.v4.new_raw_cell)
        cell = new(c.source, metadata=dict(c.metadata))
        cell["id"] = f"{Path(name).stem[:2]}-{i:02d}"  # stable ids: regenerating gives the same file
        cells.append(cell)
    nb = nbformat.v4.new_notebook(cells=cells, metadata=json.loads(json.dumps(NOTEBOOK_METADATA)))
    problems = conventions(name, nb)
    if problems:
        raise ValueError(f"{source_path(name)}: " + "; ".join(problems))
    return nb


def cells(nb) -> list[tuple[str, str, dict]]:
    """What a source defines of each cell: (type, source, metadata without execution timings)."""
    return [(c.cell_type, c.source, {k: v for k, v in c.metadata.items() if k not in EXECUTION_METADATA})
            for c in nb.cells]


def stale(name: str, folder: Path = HERE) -> bool:
    """Whether the stored notebook is missing or its cells differ from what its source builds."""
    path = folder / name
    return not path.exists() or cells(nbformat.read(path, as_version=4)) != cells(build(name))


def unsynced_edit(name: str, folder: Path = HERE) -> bool:
    """Whether the stored notebook was saved after its source and its cells differ from it: an edit made in
    the .ipynb that `jupytext --sync` has not carried to the source yet (building would drop it)."""
    path = folder / name
    return path.exists() and path.stat().st_mtime > source_path(name).stat().st_mtime and stale(name, folder)


def write(name: str, dest: Path = HERE) -> Path:
    """Write the notebook, keeping the stored outputs (and execution timings) of code cells whose source
    did not change, and the stored notebook metadata build does not set (e.g. the widget state nbconvert
    saved with those outputs; the kernel's language_info), so that writing an up-to-date notebook changes
    nothing."""
    nb = build(name)
    path = dest / name
    if path.exists():
        old = nbformat.read(path, as_version=4)
        keep = {c.source: c for c in old.cells if c.cell_type == "code"}
        for c in nb.cells:
            o = keep.get(c.source) if c.cell_type == "code" else None
            if o is not None:
                c.outputs, c.execution_count = o.outputs, o.execution_count
                c.metadata.update({k: o.metadata[k] for k in EXECUTION_METADATA if k in o.metadata})
        for k, v in old.metadata.items():
            if k != "jupytext":  # what `jupytext --sync` records in the .ipynb: not part of the built notebook
                nb.metadata.setdefault(k, v)
        if old.metadata.get("language_info", {}).get("name") == nb.metadata["language_info"]["name"]:
            nb.metadata["language_info"] = old.metadata["language_info"]  # the kernel's fuller record
    nbformat.write(nb, path)
    return path


def execute(path: Path, timeout: int = 600) -> float:
    """Execute in place with nbconvert (one kernel, offline); returns wall seconds."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--inplace",
                    f"--ExecutePreprocessor.timeout={timeout}", str(path)], check=True, cwd=ROOT)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", metavar="PREFIX", help="only notebooks whose name starts with PREFIX")
    p.add_argument("--execute", action="store_true", help="execute each written notebook in place")
    p.add_argument("--check", action="store_true", help="exit 1 when a stored notebook is stale")
    p.add_argument("--out", type=Path, default=HERE, help="folder to write to (default: notebooks/)")
    p.add_argument("--force", action="store_true", help="overwrite notebooks edited after their source")
    a = p.parse_args(argv)
    names = [n for n in NOTEBOOKS if not a.names or any(n.startswith(x) for x in a.names)]
    if a.names and not names:
        p.error(f"no notebook in {SRC.relative_to(ROOT)} starts with {' or '.join(a.names)}")
    if a.check:
        out_of_date = [n for n in names if not missing(n) and stale(n, a.out)]
        print("stale:", out_of_date or "none")
        return 1 if out_of_date else 0
    edited = [n for n in names if not missing(n) and unsynced_edit(n, a.out)]
    if edited and not a.force:
        print(f"not built: {', '.join(edited)} changed after the source. Carry the edit over first with "
              f"`jupytext --sync notebooks/NAME.ipynb` (or drop it with --force).", file=sys.stderr)
        return 2
    for n in list(names):
        if missing(n):
            print(f"skipped {n}: the zoo does not ship {', '.join(missing(n))} yet")
            names.remove(n)
            continue
        print("wrote", write(n, a.out))
    if a.execute:
        tpath = a.out / TIMINGS.name
        timings = json.loads(tpath.read_text()) if tpath.exists() else {}
        for n in names:
            dt = execute(a.out / n)
            timings[n] = round(dt, 1)
            print(f"executed {n} in {dt:.1f} s", flush=True)
        tpath.write_text(json.dumps(timings, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
