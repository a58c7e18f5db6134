"""Shared pytest setup: the CI dependency guard (ci_deps.py) and a thread-count fixture."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from ci_deps import pytest_configure, pytest_make_collect_report, pytest_runtest_makereport  # noqa: E402, F401


@pytest.fixture
def one_torch_thread():
    """torch on one intra-op thread for the test (training loops on a shared 2-core machine are many
    times slower with 2), restored afterwards: a module-level `torch.set_num_threads(1)` would change
    the whole session for every test that runs later."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def run_tl_tests_on_other_version():
    """A function `run(test_file)`: run that file's `tl_` tests again in a subprocess against the other major
    version of TransformerLens, installed in `CW_TL_ALT_PATH` (default `.ci/tl3`, by .ci/install_interop.py)."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    alt = Path(os.environ.get("CW_TL_ALT_PATH", root / ".ci" / "tl3"))

    def run(test_file: str) -> None:
        if os.environ.get("CW_TL_SUBPROCESS") == "1":
            pytest.skip("already the other-version subprocess")
        if not alt.is_dir():
            pytest.skip(f"{alt} absent: run `python .ci/install_interop.py` to install the other TransformerLens")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(alt), str(root), os.environ.get("PYTHONPATH", "")]),
               "CW_TL_SUBPROCESS": "1"}
        code = "import transformer_lens, importlib.metadata as m; print(m.version('transformer-lens'))"
        probe = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        if probe.returncode:
            pytest.skip(f"TransformerLens in {alt} does not import: {probe.stderr.strip().splitlines()[-1:]}")
        alt_version = probe.stdout.strip()
        try:
            from importlib.metadata import version

            here = version("transformer-lens")
        except Exception:
            here = None
        if here is not None and here.split(".")[0] == alt_version.split(".")[0]:
            pytest.skip(f"{alt} holds TransformerLens {alt_version}, the same major version as installed ({here})")
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "tl_", test_file],
                           env=env, capture_output=True, text=True, timeout=900, cwd=root)
        out = r.stdout + r.stderr
        print(f"TransformerLens {alt_version} (from {alt}):\n{out[-3000:]}")
        assert r.returncode == 0, out[-5000:]
        assert " passed" in out and " failed" not in out

    return run


@pytest.fixture
def remote_trace_spy(monkeypatch):
    """`seen = remote_trace_spy(lm)`: every later `lm.trace(...)` appends its `remote=` argument to `seen`
    and runs locally (no nnsight server can run here: `nnsight-serve` needs vLLM), so a test can check
    that `remote=True` reaches each trace with everything before the request done."""

    def install(lm) -> list:
        seen = []
        real = type(lm).trace

        def spy(self, *args, **kwargs):
            seen.append(kwargs.get("remote"))
            kwargs["remote"] = False  # run locally what would have been sent
            return real(self, *args, **kwargs)

        monkeypatch.setattr(type(lm), "trace", spy)
        return seen

    return install
