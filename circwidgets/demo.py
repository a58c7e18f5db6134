"""The README's main job: open JupyterLab on the tour notebook (notebooks/00_tour.ipynb).

`python -m circwidgets.demo` starts JupyterLab on the tour; `--no-browser`/`--port` are passed
through. `--text` prints a text summary of the shipped default model instead (no browser needed).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOUR = ROOT / "notebooks" / "00_tour.ipynb"
DEFAULT_MODEL = "toy-2l-code"


def text_summary(name: str = DEFAULT_MODEL) -> str:
    import circwidgets as cw
    from circwidgets import engine

    model = cw.load(name)
    lines = [f"{name}: {model.cfg.n_layers} layers x {model.cfg.n_heads} heads, d_model {model.cfg.d_model}, "
             f"vocab {model.cfg.d_vocab}"]
    scores = engine.head_scores(model, kind="induction")
    pos = engine.eigen_positivity(model, circuit="ov")
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            lines.append(f"  L{layer}H{head}: induction {scores[layer, head]:.2f}  "
                         f"OV positivity {pos[layer, head]:+.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--text" in argv or not TOUR.exists():
        print(text_summary())
        return 0
    cmd = [sys.executable, "-m", "jupyterlab", str(TOUR), f"--ServerApp.root_dir={ROOT / 'notebooks'}", *argv]
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in argv:
        cmd.append("--allow-root")  # containers and CI run as root; JupyterLab refuses to start without it
    print(f"opening {TOUR.name} in JupyterLab (with --no-browser: open /lab/tree/{TOUR.name} on the URL below)")
    return subprocess.call(cmd)


if __name__ == "__main__":
    raise SystemExit(main())
