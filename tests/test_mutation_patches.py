"""The hand-written mutants of tests/mutation/run_mutants.py still apply: each patch's text occurs exactly
once in its file, so a refactor that moves the code makes this fail here (in CI) instead of leaving a
mutant that the runner can only report as a stale patch."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("run_mutants", REPO / "tests" / "mutation" / "run_mutants.py")
run_mutants = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("run_mutants", run_mutants)  # its dataclasses look their module up
_spec.loader.exec_module(run_mutants)


@pytest.mark.parametrize("mutant", run_mutants.MUTANTS, ids=lambda m: m.name)
def test_mutant_patch_applies_exactly_once(mutant):
    text = (REPO / mutant.file).read_text()
    for old, new in mutant.patches:
        assert text.count(old) == 1, f"{mutant.name}: {old[:70]!r} occurs {text.count(old)} times in {mutant.file}"
        text = text.replace(old, new)
    assert text != (REPO / mutant.file).read_text()
    for t in mutant.tests:
        assert (REPO / t.split("::")[0]).is_file(), t
