"""Two or more trainer runs side by side, at the steps they share: the trainer's own evaluations.

Every run of `python -m circwidgets.train` writes `metrics.json` into its directory: at each evaluation the
held-out loss, every head's induction and previous-token score on repeated random tokens (the engine's
definitions, averaged over the repeat lengths), and the loss on the first and the repeated half of
`BOS + r + r`. This prints those numbers for each run at the given steps (or the nearest evaluation at or
before each; `-` where a run has not got there), so that an architecture change is compared with the
shipped recipe at equal steps rather than at their ends.

    python experiments/compare_runs.py runs/toy-2l-code runs/toy-2l-code-lnf --steps 2000,10000,20000
    python experiments/compare_runs.py RUN_A RUN_B --markdown    # a table for docs/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = (("held-out loss", "val_loss", "{:.3f}"), ("best induction", "max_induction", "{:.2f}"),
           ("best previous-token", "max_previous_token", "{:.2f}"))


def evaluations(run: Path) -> list[dict]:
    path = run / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"{run}: no metrics.json (not a trainer run directory)")
    rows = json.loads(path.read_text())
    if not isinstance(rows, list) or not rows:
        raise SystemExit(f"{path}: no evaluations")
    return sorted(rows, key=lambda r: r["step"])


def at(rows: list[dict], step: int) -> dict | None:
    """The last evaluation at or before `step`, if it is within one evaluation interval of it."""
    before = [r for r in rows if r["step"] <= step]
    if not before:
        return None
    gap = rows[1]["step"] - rows[0]["step"] if len(rows) > 1 else 0
    return before[-1] if step - before[-1]["step"] <= gap else None


def copy_cell(r: dict) -> str:
    by = r.get("icl_repeated_by_len") or {}
    if not by:
        return f"{r['icl_repeated']:.2f}"
    lens = sorted(by, key=int)
    return ", ".join(f"{by[k]:.1f}" for k in (lens[0], lens[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--steps", default=None, help="comma-separated steps (default: every 2,000 the first run has)")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    a = ap.parse_args()
    runs = {r: evaluations(r) for r in a.runs}
    if a.steps:
        steps = [int(s) for s in a.steps.split(",")]
    else:
        first = runs[a.runs[0]]
        steps = [r["step"] for r in first if r["step"] % 2000 == 0 and r["step"]]
    names = [r.name for r in a.runs]
    head = ["step"] + [f"{c} ({' / '.join(names)})" for c, _, _ in COLUMNS] + \
        [f"repeated copy, shortest and longest r ({' / '.join(names)})"]
    lines = []
    for s in steps:
        got = [at(rows, s) for rows in runs.values()]
        cells = [f"{s:,}"]
        for _, key, fmt in COLUMNS:
            cells.append(" / ".join("-" if r is None else fmt.format(r[key]) for r in got))
        cells.append(" / ".join("-" if r is None else copy_cell(r) for r in got))
        lines.append(cells)
    if a.markdown:
        print("| " + " | ".join(head) + " |")
        print("| " + " | ".join("---" for _ in head) + " |")
        for c in lines:
            print("| " + " | ".join(c) + " |")
    else:
        print("\t".join(head))
        for c in lines:
            print("\t".join(c))


if __name__ == "__main__":
    main()
