"""Make sure torch is importable, without ever replacing a working one; called by `make install`.

Decision (`decide`, unit-tested in tests/test_install_torch.py):

- `import torch` works and its version satisfies TORCH_SPEC (default `torch`: any version) and the
  package's own range (`torch>=...` in pyproject.toml) -> keep it, install nothing. A user's CUDA
  build, Colab's torch, a conda torch all stay as they are.
- torch works but is older than the package's range -> stop with a message (never replace it behind
  the user's back); `TORCH_SPEC='torch>=2.1' make install` or upgrading it by hand lifts this.
- no importable torch -> `pip install TORCH_SPEC --index-url TORCH_INDEX`. For users TORCH_INDEX is
  PyTorch's CPU wheel index: on Linux, PyPI's default `torch` wheel is the CUDA build and pulls about
  twenty `nvidia-*` packages (several GB; tests/test_install_torch.py shows it with a dry-run).
  CI sets `TORCH_SPEC=torch==2.13.0 TORCH_INDEX=` (its pinned wheel, from the configured indexes).

The check runs `import torch` in a subprocess, so a broken install (files there, import fails) counts
as "no torch" and a fake dist-info without a module does not fool it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.version import Version
except ImportError:  # pip always vendors packaging
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass(frozen=True)
class Plan:
    action: str  # "keep" | "install" | "refuse"
    reason: str
    pip_args: tuple[str, ...] = ()


def package_torch_requirement(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The `torch...` entry of the package's dependencies (e.g. "torch>=2.1")."""
    m = re.search(r'"(torch[<>=!~ ][^"]*)"', pyproject.read_text(encoding="utf-8"))
    return m.group(1).replace(" ", "") if m else "torch"


def installed_torch_version(python: str = sys.executable) -> str | None:
    """`torch.__version__` as `python` imports it, or None when `import torch` fails."""
    r = subprocess.run([python, "-c", "import torch; print(torch.__version__)"],
                       capture_output=True, text=True, timeout=300)
    return r.stdout.strip().splitlines()[-1] if r.returncode == 0 and r.stdout.strip() else None


def _satisfies(version: str, spec: str) -> bool:
    req = Requirement(spec)
    return req.specifier.contains(Version(version).public, prereleases=True) if req.specifier else True


def decide(installed: str | None, spec: str = "torch", index: str = CPU_INDEX,
           package_req: str = "torch") -> Plan:
    """What to do given the importable torch version (None: none), TORCH_SPEC, TORCH_INDEX and the
    package's own torch requirement."""
    explicit = spec.strip() != "torch"  # TORCH_SPEC set to something more than "any torch"
    if installed is not None:
        if _satisfies(installed, spec) and _satisfies(installed, package_req):
            return Plan("keep", f"torch {installed} is importable and satisfies {spec} ({package_req}): kept")
        if not explicit:
            return Plan("refuse", f"torch {installed} is importable but circwidgets needs {package_req}; it is "
                                  f"left as it is: upgrade it yourself (e.g. pip install -U torch --index-url "
                                  f"{CPU_INDEX}) or run `TORCH_SPEC='{package_req}' make install`")
    if not explicit:
        spec = package_req
    args = ["install", "-q", spec]
    if index:
        args += ["--index-url", index]
    why = "no importable torch" if installed is None else f"torch {installed} does not satisfy {spec}"
    where = f"from {index}" if index else "from the configured package indexes"
    return Plan("install", f"{why}: installing {spec} {where}", tuple(args))


def main() -> int:
    spec = os.environ.get("TORCH_SPEC", "torch") or "torch"
    index = os.environ.get("TORCH_INDEX", CPU_INDEX)
    plan = decide(installed_torch_version(), spec, index, package_torch_requirement())
    print(f"install_torch: {plan.reason}")
    if plan.action == "refuse":
        return 1
    if plan.action == "install":
        subprocess.run([sys.executable, "-m", "pip", *plan.pip_args], check=True)
        if installed_torch_version() is None:
            print("install_torch: torch still does not import after the install", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
