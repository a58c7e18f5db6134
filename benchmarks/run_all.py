"""Run every benchmarks/bench_*.py in turn (each in its own process) and report how each ended.

    python benchmarks/run_all.py [--quick]   # extra arguments are passed to every script
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time


def main() -> int:
    here = pathlib.Path(__file__).resolve().parent
    scripts = sorted(here.glob("bench_*.py"))
    results = []
    for script in scripts:
        print(f"\n===== {script.name} =====", flush=True)
        t = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script), *sys.argv[1:]], cwd=here.parent)
        results.append((script.name, rc, time.perf_counter() - t))
    print("\n===== summary =====")
    for name, rc, dt in results:
        print(f"{name:40} {'ok' if rc == 0 else f'exit {rc}':>8} {dt:8.1f} s")
    return max((rc for _, rc, _ in results), default=0) and 1


if __name__ == "__main__":
    sys.exit(main())
