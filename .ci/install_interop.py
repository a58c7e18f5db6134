"""Install the optional interop packages that tests/test_convert.py uses; called by `make install-test`.

- Into this environment: transformers + TransformerLens 4.x (`TransformerBridge`) + nnsight (activation sources)
  + accelerate (`device_map` dispatch: layers offloaded to the CPU / disk).
- Into `.ci/tl3/` (pip --target, git-ignored): TransformerLens 3.x (`HookedTransformer`, removed in
  4.0), without dependencies: 3.9 needs the same ones as 4.3 (transformers>=5.9, jaxtyping, ...)
  plus better-abc. The tests run the 3.x checks in a subprocess with `.ci/tl3` first on PYTHONPATH.

torch is never touched: pip runs with a constraint pinning the installed torch version, after a
`--dry-run` that must not list torch or any CUDA package. Every failure is a warning: the tests
that need a missing package skip. Fast when everything is already there (no pip call at all).
Set CW_SKIP_INTEROP=1 to skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAIN = {"transformers": "5.24.0", "transformer-lens": "4.3.0", "nnsight": "0.8.1", "accelerate": "1.15.0"}
ALT_DIR = ROOT / ".ci" / "tl3"
ALT = {"transformer-lens": "3.9.0", "better-abc": "0.0.3"}
FORBIDDEN = {"torch", "torchvision", "torchaudio", "triton"}  # and nvidia-*: never pulled in by these installs
TIMEOUT = 900


def warn(msg: str) -> None:
    print(f"WARNING (interop): {msg}; tests that need it will be skipped", file=sys.stderr)


def installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=TIMEOUT)


def install_main() -> None:
    todo = [f"{n}=={v}" for n, v in MAIN.items() if installed(n) != v]
    if not todo:
        print(f"interop: {', '.join(f'{n} {v}' for n, v in MAIN.items())} already installed")
        return
    torch_v = installed("torch")
    if torch_v is None:
        warn("torch is not installed (run `make install` first), not installing transformers / transformer-lens")
        return
    with tempfile.TemporaryDirectory() as tmp:
        cons = Path(tmp) / "constraints.txt"
        cons.write_text(f"torch=={torch_v.split('+')[0]}\n")
        report = Path(tmp) / "report.json"
        r = pip("install", "--dry-run", "-q", "--report", str(report), "-c", str(cons), *todo)
        if r.returncode:
            warn(f"pip cannot resolve {todo} next to torch {torch_v}: {r.stderr.strip()[-500:]}")
            return
        would = [i["metadata"]["name"].lower() for i in json.loads(report.read_text()).get("install", [])]
        bad = [n for n in would if n in FORBIDDEN or n.startswith("nvidia-")]
        if bad:
            warn(f"installing {todo} would also install {bad}; refused")
            return
        print(f"interop: installing {' '.join(todo)} (+ {len(would) - len(todo)} dependencies)", flush=True)
        r = pip("install", "-q", "-c", str(cons), *todo)
    if r.returncode:
        warn(f"pip install {todo} failed: {r.stderr.strip()[-800:]}")
    if installed("torch") != torch_v:
        print(f"WARNING (interop): torch changed from {torch_v} to {installed('torch')}!", file=sys.stderr)


def install_alt() -> None:
    marker = [ALT_DIR / f"{n.replace('-', '_')}-{v}.dist-info" for n, v in ALT.items()]
    if all(m.is_dir() for m in marker):
        print(f"interop: transformer-lens {ALT['transformer-lens']} already in {ALT_DIR.relative_to(ROOT)}")
        return
    shutil.rmtree(ALT_DIR, ignore_errors=True)  # a stale or partial install
    pkgs = [f"{n}=={v}" for n, v in ALT.items()]
    print(f"interop: installing {' '.join(pkgs)} into {ALT_DIR.relative_to(ROOT)} (--no-deps)", flush=True)
    r = pip("install", "-q", "--no-deps", "--target", str(ALT_DIR), *pkgs)
    if r.returncode:
        shutil.rmtree(ALT_DIR, ignore_errors=True)
        warn(f"pip install --target {ALT_DIR} {pkgs} failed: {r.stderr.strip()[-800:]}")


def main() -> int:
    if os.environ.get("CW_SKIP_INTEROP") == "1":
        print("interop: skipped (CW_SKIP_INTEROP=1)")
        return 0
    for step in (install_main, install_alt):
        try:
            step()
        except Exception as e:  # no network, timeout, odd pip: never fail the build over optional packages
            warn(f"{step.__name__}: {type(e).__name__}: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
