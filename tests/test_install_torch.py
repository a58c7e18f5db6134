"""`make install` keeps a working torch and, without one, installs the CPU build (.ci/install_torch.py).

- `decide` unit tests: keep / install / refuse for each situation.
- A fresh venv holding a *fake* torch 2.5.0 (a module + dist-info, no real torch): the install script
  keeps it without calling pip, and pip's resolution of the package (`pip install --dry-run -e .`, as
  `make install` runs it) installs neither torch nor any CUDA package.
- Against PyPI (skipped when it cannot be reached): what a Linux machine without torch gets from a
  plain `pip install torch` -- the CUDA build and its nvidia-* packages, the reason for the CPU index.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("install_torch", ROOT / ".ci" / "install_torch.py")
it = importlib.util.module_from_spec(spec)
sys.modules["install_torch"] = it  # dataclasses look their module up
spec.loader.exec_module(it)


def test_decide_keeps_any_working_torch_in_range():
    for v in ("2.1.0", "2.5.0+cu121", "2.13.0+cpu", "3.0.0"):
        assert it.decide(v, "torch", it.CPU_INDEX, "torch>=2.1").action == "keep"


def test_decide_installs_cpu_build_when_torch_missing():
    plan = it.decide(None, "torch", it.CPU_INDEX, "torch>=2.1")
    assert plan.action == "install"
    assert plan.pip_args == ("install", "-q", "torch>=2.1", "--index-url", "https://download.pytorch.org/whl/cpu")


def test_decide_ci_pin_from_configured_indexes():
    plan = it.decide(None, "torch==2.13.0", "", "torch>=2.1")
    assert plan.pip_args == ("install", "-q", "torch==2.13.0")  # no --index-url: the local wheel
    assert it.decide("2.13.0+cpu", "torch==2.13.0", "", "torch>=2.1").action == "keep"
    assert it.decide("2.12.0", "torch==2.13.0", "", "torch>=2.1").action == "install"  # CI asked for its pin


def test_decide_never_replaces_an_old_torch_unasked():
    plan = it.decide("1.13.1", "torch", it.CPU_INDEX, "torch>=2.1")
    assert plan.action == "refuse" and "1.13.1" in plan.reason and "TORCH_SPEC" in plan.reason
    assert it.decide("1.13.1", "torch>=2.1", it.CPU_INDEX, "torch>=2.1").action == "install"


def test_package_range_is_wide_and_makefile_uses_the_script():
    req = it.package_torch_requirement()
    assert re.fullmatch(r"torch>=2\.\d+", req), req  # a lower bound only: any newer torch satisfies it
    recipe = re.search(r"^install:\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    lines = [ln.strip() for ln in recipe.splitlines()]
    assert lines[0] == "$(PY) .ci/install_torch.py", lines
    assert not any(re.search(r"install\s+(-q\s+)?torch", ln) for ln in lines)
    assert "TORCH_SPEC=" in (ROOT / ".ci" / "run").read_text()


def _fake_torch(site: Path, version: str) -> None:
    (site / "torch").mkdir()
    (site / "torch" / "__init__.py").write_text(f'__version__ = "{version}"\n')
    dist = site / f"torch-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
    (dist / "INSTALLER").write_text("pip\n")
    (dist / "RECORD").write_text(f"torch/__init__.py,,\ntorch-{version}.dist-info/METADATA,,\n")


@pytest.fixture(scope="module")
def venv_with_other_torch(tmp_path_factory) -> Path:
    env_dir = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    _fake_torch(site, "2.5.0")
    return py


def test_install_script_keeps_another_torch(venv_with_other_torch):
    py = venv_with_other_torch
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCH_", "PYTHONPATH"))}
    r = subprocess.run([str(py), str(ROOT / ".ci" / "install_torch.py")], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "torch 2.5.0 is importable" in r.stdout and "kept" in r.stdout
    v = subprocess.run([str(py), "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    assert v.stdout.strip() == "2.5.0"


def test_package_install_resolution_keeps_another_torch(venv_with_other_torch, tmp_path):
    """The second step of `make install` (`pip install -e .`) as pip resolves it in that venv."""
    py = venv_with_other_torch
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONPATH")}
    r = subprocess.run([str(py), "-m", "pip", "install", "--dry-run", "-q", "--report",
                        str(report), "-e", str(ROOT)], capture_output=True, text=True, env=env, timeout=900)
    if r.returncode != 0 and ("No matching distribution" in r.stderr or "connection" in r.stderr.lower()):
        pytest.skip(f"no package index reachable for the dependencies: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stderr[-2000:]
    names = {i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"]}
    assert "circwidgets" in names
    assert not names & {"torch", "triton"} and not any(n.startswith("nvidia") for n in names), names


def _pypi_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/torch/", timeout=10).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(sys.platform != "linux", reason="the CUDA default is PyPI's Linux torch wheel")
def test_plain_pypi_torch_on_linux_is_the_cuda_build(tmp_path):
    """Why the CPU index: a machine without torch that ran `pip install torch` against PyPI would get this."""
    if not _pypi_reachable():
        pytest.skip("network: pypi.org not reachable (this test reads PyPI's torch metadata)")
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHONPATH"))}
    env["PIP_CONFIG_FILE"] = os.devnull  # this machine's local wheels / constraints out of the way
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q",
                        "--report", str(report), "--index-url", "https://pypi.org/simple", "torch"],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    names = [i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"]]
    nvidia = [n for n in names if n.startswith("nvidia")]
    assert "torch" in names and len(nvidia) >= 5, names
