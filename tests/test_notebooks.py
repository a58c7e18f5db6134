"""The lecture notebooks (notebooks/*.ipynb): structure, freshness against their sources (notebooks/src/*.py,
jupytext percent files built by notebooks/build.py), the jupytext pairing of the two, and a
full offline run of each through nbval (`--nbval-lax`: the `# NBVAL_CHECK_OUTPUT` cells' printed numbers
must match the stored outputs, so a regression in the engine or the zoo breaks this test).

Why a subprocess per notebook rather than `notebooks` in pyproject's testpaths: nbval only collects
notebooks when `--nbval-lax` is on the command line, and putting that into `addopts` would apply to
every targeted `pytest tests/x.py` run and break pytest wherever nbval is missing. The subprocess keeps
`make test` (`python -m pytest`) the one command, runs each notebook in its own kernel with the
project's sanitize file, times it, and cuts the network (proxy to a dead port) to prove it runs offline.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NB_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(p.name for p in NB_DIR.glob("[0-9][0-9]_*.ipynb"))
EXPECTED = ["00_tour.ipynb", "01_zero_layer_bigrams.ipynb", "02_one_layer_skip_trigrams.ipynb",
            "03_two_layer_composition.ipynb", "04_virtual_weights_and_paths.ipynb",
            "05_ablation_and_patching.ipynb", "06_training_and_phase_change.ipynb", "07_real_architectures.ipynb"]
BUDGET_S = 120  # the goal per notebook on a laptop CPU
LIMIT_S = 300  # what this test enforces on a shared CI runner (kernel start included)

nbformat = pytest.importorskip("nbformat")


def _read(name: str):
    return nbformat.read(NB_DIR / name, as_version=4)


def _build_module():
    spec = importlib.util.spec_from_file_location("notebooks_build", NB_DIR / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


BUILD = _build_module()  # needs jupytext (the `test` extra): without it this module fails to load, loudly


def _needs_models(name: str) -> None:
    """Skip (saying which) when the zoo does not ship the models the notebook is built on; once they
    are shipped the notebook must exist, be fresh and pass."""
    gone = BUILD.missing(name)
    if gone:
        pytest.skip(f"{name} needs shipped model(s) {', '.join(gone)}, not in circwidgets/zoo yet")


def test_notebook_list_is_the_sources():
    assert BUILD.NOTEBOOKS == EXPECTED and set(NOTEBOOKS) <= set(EXPECTED)
    assert sorted(p.name for p in (NB_DIR / "src").glob("*.py")) == [n.replace(".ipynb", ".py") for n in EXPECTED]


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_present_and_matches_source(name):
    """The stored notebook's cells (type, source, metadata) are what notebooks/build.py builds from
    notebooks/src/NAME.py (regenerate with `python notebooks/build.py --execute NN`)."""
    _needs_models(name)
    assert (NB_DIR / name).exists(), f"{name} missing: run `python notebooks/build.py --execute {name[:2]}`"
    assert BUILD.cells(_read(name)) == BUILD.cells(BUILD.build(name)), \
        f"{name} is stale: run `python notebooks/build.py --execute {name[:2]}`"


def test_build_rejects_a_broken_convention(tmp_path, monkeypatch):
    """build() refuses a source whose solution cell is not hidden or whose badge names another notebook."""
    text = BUILD.source_path("00_tour.ipynb").read_text()
    monkeypatch.setattr(BUILD, "SRC", tmp_path)
    unhidden = text.replace('# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]',
                            '# %% tags=["solution"]', 1)
    assert unhidden != text
    (tmp_path / "00_tour.py").write_text(unhidden)
    with pytest.raises(ValueError, match="solution cell not hidden"):
        BUILD.build("00_tour.ipynb")
    (tmp_path / "00_tour.py").write_text(text.replace("notebooks/00_tour.ipynb)", "notebooks/01_x.ipynb)"))
    with pytest.raises(ValueError, match="Colab badge"):
        BUILD.build("00_tour.ipynb")


def test_build_keeps_an_edit_not_synced_to_the_source(tmp_path):
    """A notebook edited after its source (not yet `jupytext --sync`ed) is not overwritten without --force."""
    _needs_models("00_tour.ipynb")
    path = BUILD.write("00_tour.ipynb", tmp_path)
    assert BUILD.main(["--out", str(tmp_path), "00"]) == 0 and not BUILD.unsynced_edit("00_tour.ipynb", tmp_path)
    nb = _read("00_tour.ipynb")
    nb.cells[2].source += "\n\nA lecturer's note."
    nbformat.write(nb, path)
    assert BUILD.unsynced_edit("00_tour.ipynb", tmp_path)
    assert BUILD.main(["--out", str(tmp_path), "00"]) == 2
    assert "A lecturer's note." in path.read_text()
    assert BUILD.main(["--out", str(tmp_path), "--force", "00"]) == 0
    assert "A lecturer's note." not in path.read_text()


def _shared_cells(name: str) -> dict[str, str]:
    """The cells the lectures share, as written in notebook `name`'s source: the setup cell up to its
    `model = cw.zoo.lecture(MODEL)` line (the MODEL value masked; what follows is the notebook's own) and the
    example-tokens cell. What they do lives in the library (`cw.zoo.lecture`, `cw.zoo.example_tokens`), so
    each copy is a few lines."""
    shared = {}
    for c in BUILD.read_source(name).cells:
        if c.cell_type != "code":
            continue
        if re.search(r'^MODEL = "', c.source, re.M):
            setup = re.sub(r'^MODEL = "[^"]+"', 'MODEL = "..."', c.source, flags=re.M)
            head, sep, _ = setup.partition("model = cw.zoo.lecture(MODEL)")
            assert sep, f"{name}: the setup cell must load the model with cw.zoo.lecture(MODEL)"
            shared["setup"] = head + sep
        elif "cw.zoo.example_tokens(" in c.source:
            shared["example tokens"] = c.source
    return shared


def test_shared_cells_are_the_same_in_every_notebook():
    """Each source holds its own copy of the cells the lectures share (a notebook must run on its own, in
    Colab too); the Colab cell is checked by build.py against COLAB_CELL, and this test keeps the other
    copies equal, so that an edit to one of them cannot silently miss the others."""
    copies: dict[str, dict[str, list[str]]] = {}
    for name in EXPECTED:
        for kind, src in _shared_cells(name).items():
            copies.setdefault(kind, {}).setdefault(src, []).append(name)
    assert len(copies["setup"]) == 1 and sum(map(len, copies["setup"].values())) == len(EXPECTED), \
        f"setup cells differ: {list(copies['setup'].values())}"
    assert len(copies["example tokens"]) == 1 and len(next(iter(copies["example tokens"].values()))) >= 2, \
        f"example-tokens cells differ: {list(copies['example tokens'].values())}"


@pytest.mark.parametrize("name", EXPECTED)
def test_source_is_paired_with_notebook(name):
    """notebooks/jupytext.toml pairs NAME.ipynb with src/NAME.py, and the source is exactly what jupytext
    writes for the stored notebook: `jupytext --sync` after editing either file (or saving the .ipynb in
    Jupyter) carries the edit over without reformatting the rest of the source."""
    import jupytext
    from jupytext.config import load_jupytext_config
    from jupytext.formats import long_form_multiple_formats
    from jupytext.paired_paths import paired_paths

    ipynb, source = NB_DIR / name, BUILD.source_path(name)
    for path, fmt in ((ipynb, "ipynb"), (source, BUILD.SOURCE_FORMAT)):  # the pair, seen from either side
        formats = long_form_multiple_formats(load_jupytext_config(str(path)).default_formats(str(path)))
        assert {Path(p).resolve() for p, _ in paired_paths(str(path), fmt, formats)} == {ipynb, source.resolve()}
    config = load_jupytext_config(str(ipynb))
    text = source.read_text()
    assert jupytext.writes(BUILD.read_source(name), fmt=BUILD.SOURCE_FORMAT, config=config) == text, \
        "source not in the form jupytext writes"
    assert jupytext.read(source, config=config).metadata["jupytext"]["text_representation"]["format_name"] \
        == "percent", "jupytext would not read the source as a percent file"
    _needs_models(name)
    assert jupytext.writes(_read(name), fmt=BUILD.SOURCE_FORMAT, config=config) == text, \
        f"`jupytext --sync notebooks/{name}` would rewrite its source"


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_structure(name):
    _needs_models(name)
    nb = _read(name)
    cells = nb.cells
    assert cells[0].cell_type == "markdown" and "colab-badge.svg" in cells[0].source
    assert f"notebooks/{name}" in cells[0].source
    first_code = next(c for c in cells if c.cell_type == "code")
    assert 'if "google.colab" in sys.modules:' in first_code.source, "first code cell must install only in Colab"
    assert sum(len(re.findall(r"^MODEL = ", c.source, re.M)) for c in cells if c.cell_type == "code") == 1, \
        "the model is named in one variable, MODEL"
    checks = [c for c in cells if c.cell_type == "code" and c.source.startswith("# NBVAL_CHECK_OUTPUT")]
    assert checks, "no NBVAL_CHECK_OUTPUT cell"
    for c in checks:  # executed, with printed numbers to compare, and nothing on stderr
        kinds = {o.get("name") for o in c.outputs if o.output_type == "stream"}
        assert "stdout" in kinds and "stderr" not in kinds, f"check cell without clean stdout: {c.source[:80]}"
    sols = [c for c in cells if "solution" in c.metadata.get("tags", [])]
    assert sols and all(c.metadata["jupyter"]["source_hidden"] and c.metadata["cellView"] == "form" for c in sols)
    assert any("### Exercise" in c.source for c in cells if c.cell_type == "markdown")
    errors = [o for c in cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, f"stored outputs hold errors: {[e.ename for e in errors]}"
    # static fallbacks are stored for viewers without a kernel: every widget output has a text/plain,
    # and the notebook shows at least one picture
    outs = [o for c in cells if c.cell_type == "code" for o in c.outputs if "data" in o]
    assert any("image/png" in o.data for o in outs), "no stored PNG output"
    for o in outs:
        if "application/vnd.jupyter.widget-view+json" in o.data:
            assert "text/plain" in o.data


def test_tour_is_what_the_demo_opens():
    from circwidgets import demo

    _needs_models("00_tour.ipynb")
    assert demo.TOUR == NB_DIR / "00_tour.ipynb" and demo.TOUR.exists()


@pytest.mark.timeout(LIMIT_S + 120)
@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs_offline_and_matches(name, tmp_path):
    _needs_models(name)
    pytest.importorskip("nbval")
    pytest.importorskip("ipykernel")
    dead = "http://127.0.0.1:9"  # nothing listens there: any download attempt fails
    env = dict(os.environ, http_proxy=dead, https_proxy=dead, HTTP_PROXY=dead, HTTPS_PROXY=dead, no_proxy="",
               NO_PROXY="", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               MPLBACKEND="module://matplotlib_inline.backend_inline", IPYTHONDIR=str(tmp_path / "ipy"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env",
           "--nbval-sanitize-with", str(NB_DIR / "nbval_sanitize.cfg"), f"--nbval-cell-timeout={LIMIT_S}",
           "--rootdir", str(tmp_path), "-o", "addopts=", str(NB_DIR / name)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=LIMIT_S + 60)
    dt = time.perf_counter() - t0
    print(f"{name}: {dt:.1f} s under nbval (goal < {BUDGET_S} s)")
    (REPO / "artifacts").mkdir(exist_ok=True)
    rec = REPO / "artifacts" / "notebook_times.json"
    times = json.loads(rec.read_text()) if rec.exists() else {}
    times[name] = round(dt, 1)
    rec.write_text(json.dumps(times, indent=1, sort_keys=True))
    assert r.returncode == 0, f"nbval failed on {name}:\n{r.stdout[-6000:]}\n{r.stderr[-2000:]}"
    assert dt < LIMIT_S, f"{name} took {dt:.0f} s"
