"""The CI guard (tests/ci_deps.py): with CI=true a skip caused by a missing declared test dependency
fails, other skips stay skips, and a missing pytest-timeout stops the run; without CI all skip."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ci_deps import missing_dependency

TESTS = Path(__file__).resolve().parent

PROBE = textwrap.dedent('''
    import sys
    import pytest
    sys.modules["nbval"] = None  # a declared dependency that is "not installed"

    def test_needs_nbval():
        pytest.importorskip("nbval")

    def test_needs_chromium():
        pytest.skip("no Chromium found (install it with `make chromium`); browser tests skipped")

    def test_needs_cuda():
        pytest.skip("needs CUDA")  # hardware, not a declared dependency: a skip everywhere

    def test_plain():
        assert True
''')
MODULE_LEVEL = textwrap.dedent('''
    import sys
    import pytest
    sys.modules["transformers"] = None
    transformers = pytest.importorskip("transformers")

    def test_never_collected():
        pass
''')


def run_probe(tmp_path: Path, ci: bool, *extra: str, source: str = PROBE) -> subprocess.CompletedProcess:
    (tmp_path / "test_probe.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "ci_deps", "-p", "no:cacheprovider", "-rA",
                           "-p", "no:randomly", *extra, str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_locally_missing_dependencies_skip(tmp_path):
    r = run_probe(tmp_path, ci=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed, 3 skipped" in r.stdout, r.stdout
    r = run_probe(tmp_path, ci=False, source=MODULE_LEVEL)
    assert r.returncode in (0, 5) and "1 skipped" in r.stdout, r.stdout  # 5: no test collected


def test_in_ci_missing_declared_dependencies_fail(tmp_path):
    r = run_probe(tmp_path, ci=True)
    out = r.stdout
    assert r.returncode == 1, out + r.stderr
    assert "FAILED" in out and "test_needs_nbval" in out and "test_needs_chromium" in out, out
    assert "SKIPPED" in out and "needs CUDA" in out, out  # other skips stay skips
    assert "missing declared test dependency" in out, out
    assert "2 failed, 1 passed, 1 skipped" in out, out
    # a module-level importorskip of a declared dependency: a collection error (the run is interrupted)
    r = run_probe(tmp_path, ci=True, source=MODULE_LEVEL)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "ERROR test_probe.py" in r.stdout and "could not import 'transformers'" in r.stdout, r.stdout


def test_in_ci_pytest_timeout_must_be_installed(tmp_path):
    pytest.importorskip("pytest_timeout")  # the plugin to switch off below
    r = run_probe(tmp_path, True, "-p", "no:timeout")
    assert r.returncode == 4, r.stdout + r.stderr  # usage error: the run does not start
    assert "pytest-timeout" in r.stderr + r.stdout


@pytest.mark.parametrize("reason,missing", [
    ("could not import 'nbval': No module named 'nbval'", True),
    ("could not import 'playwright.sync_api': No module named 'playwright'", True),
    ("could not import 'transformer_lens': No module named 'transformer_lens'", True),
    ("/x/.ci/tl3 absent: run `python .ci/install_interop.py` to install the other TransformerLens", True),
    ("node not installed: syntax check skipped", True),
    ("this check builds a TransformerLens 4.x TransformerBridge", True),
    ("needs CUDA", False),
    ("no shipped models yet", False),
    ("already the other-version subprocess", False),
    ("could not import 'marimo': No module named 'marimo'", True),  # the test extra pins it (marimo browser test)
    ("could not import 'vllm': No module named 'vllm'", False),  # not a declared dependency
])
def test_skip_reasons_are_classified(reason, missing):
    assert (missing_dependency(reason) is not None) == missing
