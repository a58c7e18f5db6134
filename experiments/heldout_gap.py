"""The held-out gap over training: memorisation, or held-out files that are harder?

The card claim `heldout_gap` is held-out minus training loss on 256 corpus windows of each split. A gap
that comes from memorising the training split can only open after the model has seen those windows, i.e.
over passes through the data; a gap already present after a small fraction of one pass is the held-out
files being harder (the split is by file: 145 files, 2 % of 7,301). This prints the claim's measurement
on every shipped snapshot of a model, with the fraction of one pass over the training split it had seen.

    python experiments/heldout_gap.py --data-dir runs/data/pycode-bpe4096 [--model toy-2l-code]
    python experiments/heldout_gap.py --data-dir DATA --run runs/toy-2l-code   # a trainer run's snapshots
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import circwidgets as cw
from circwidgets.train.snapshots import training_run
from circwidgets.zoo.build import loss_windows
from circwidgets.zoo.claims import heldout_gap, heldout_loss


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--model", default="toy-2l-code", help="a shipped model (its snapshots)")
    p.add_argument("--run", default=None, help="a trainer run directory instead of --model")
    p.add_argument("--windows", type=int, default=256)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    run = training_run(Path(a.run)) if a.run else cw.zoo.training_run(a.model)
    n_train = json.loads((Path(a.data_dir) / "manifest.json").read_text())["n_tokens"]["train"]
    first = cw.load(run.snapshots[0].path)
    stats, _ = loss_windows(a.data_dir, first.cfg.n_ctx, n=a.windows)
    print("| step | passes over the training split | held-out loss | held-out − training loss |")
    print("| --- | --- | --- | --- |")
    for snap in run.snapshots:
        m = cw.load(snap.path)
        tokens = int(m.metadata.get("tokens_seen", 0))
        print(f"| {snap.step:,} | {tokens / n_train:.2f} | {heldout_loss(m, stats):.3f} | "
              f"{heldout_gap(m, stats):+.3f} |", flush=True)


if __name__ == "__main__":
    main()
