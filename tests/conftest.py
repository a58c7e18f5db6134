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
