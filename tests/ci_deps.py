"""pytest plugin: in CI a missing *declared* test dependency fails the run instead of skipping.

Locally a test may skip when an optional tool is absent (no Chromium, no Node.js, no `nbval`, ...). In
CI (`CI` set to 1 / true / yes, as `.ci/run` does) such a skip would hide that the suite did not test
what it claims, so the skip is turned into a failure that names the dependency. Skips for other
reasons (no CUDA, a check that belongs to the other TransformerLens major version, models not shipped
yet) stay skips. Without the `pytest-timeout` plugin every `timeout` mark is silently ignored, so in
CI its absence stops the run at start-up.

Loaded by tests/conftest.py (`from ci_deps import ...`); also usable as `-p ci_deps`.
"""

from __future__ import annotations

import os
import re

import pytest

# the declared test / interop dependencies (pyproject `test` and `interop` extras, `make chromium`,
# `make js-check`, `.ci/install_interop.py`) and the skip messages their absence produces
DECLARED_MODULES = ("nbval", "nbformat", "ipykernel", "hypothesis", "jupyterlab", "jupytext", "playwright",
                    "pytest_timeout", "notebook", "transformers", "transformer_lens", "anywidget", "matplotlib",
                    "tokenizers", "nnsight", "accelerate", "marimo")
MISSING_DEPENDENCY = [
    re.compile(r"could not import '(" + "|".join(DECLARED_MODULES) + r")[\w.]*'"),
    re.compile(r"no Chromium found"),
    re.compile(r"node not installed"),
    re.compile(r"\.ci/tl3\S* absent|TransformerLens in \S*\.ci/tl3\S* does not import"),
    # a check that needs TransformerLens 4.x when the installed one is not (CI installs 4.x natively, 3.x in .ci/tl3)
    re.compile(r"this check builds a TransformerLens 4\.x|is tested with TransformerLens 4\.x|is TransformerLens 4\.x"),
]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing_dependency(reason: str) -> str | None:
    """The matching pattern's text when `reason` says a declared dependency is missing, else None."""
    for pat in MISSING_DEPENDENCY:
        m = pat.search(reason)
        if m:
            return m.group(0)
    return None


def _skip_reason(longrepr) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (file, line, "Skipped: reason")
        return str(longrepr[2])
    return str(longrepr)


def pytest_configure(config: pytest.Config) -> None:
    if in_ci() and not config.pluginmanager.hasplugin("timeout"):
        raise pytest.UsageError("CI: pytest-timeout (a declared test dependency) is not installed: every "
                                "timeout mark would be ignored. pip install -e '.[test]'")


def _fail_if_missing(report) -> None:
    if not in_ci() or not report.skipped:
        return
    reason = _skip_reason(report.longrepr)
    dep = missing_dependency(reason)
    if dep is None:
        return
    report.outcome = "failed"
    report.longrepr = (f"CI: skipped for a missing declared test dependency ({dep}); in CI this fails.\n"
                       f"skip reason: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_if_missing(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_if_missing(outcome.get_result())  # module-level importorskip / pytest.skip
