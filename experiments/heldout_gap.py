"""The held-out gap over training: memorisation, or held-out files that are harder?

The card claim `heldout_gap` is held-out minus training loss on 1024 corpus windows of each split. A gap
that comes from memorising the training split can only open after the model has seen those windows, i.e.
over passes through the data; a gap already present after a small fraction of one pass is the held-out
files being harder or differently mixed than the training files (the split is by file, 3 % of each package's
characters). This prints the claim's measurement on every shipped snapshot of a model, with the fraction of
one pass over the training split it had seen.

    python experiments/heldout_gap.py --data-dir DATA [--model toy-2l-code]
    python experiments/heldout_gap.py --data-dir DATA --run runs/toy-2l-code   # a trainer run's snapshots
    python experiments/heldout_gap.py --data-dir DATA --by-package             # the final model, split by package

`--by-package` asks how much of the gap is the held-out split's mix of packages (an unstratified hash split
of this corpus drew 18 % of its held-out tokens from twisted, 4 % of training's): it measures the final
model on every held-out file and on training files of the same packages in the same token shares (whole
files, the first 4,000 tokens of each, in windows of n_ctx starting with BOS), and prints both means.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np
import torch

import circwidgets as cw
from circwidgets.train.snapshots import training_run
from circwidgets.train.tasks import BOS  # the corpus starts every file with it (train.code_corpus)
from circwidgets.zoo.build import loss_windows
from circwidgets.zoo.claims import heldout_gap, heldout_loss


def split_files(tokens: np.ndarray) -> list[np.ndarray]:
    """A split's token array cut into its files (each starts with BOS)."""
    starts = np.flatnonzero(tokens == BOS)
    return [tokens[s:e] for s, e in zip(starts, [*starts[1:], len(tokens)])]


@torch.no_grad()
def file_nll(model, f: np.ndarray, cap: int = 4000) -> tuple[float, int]:
    """(summed next-token loss, count) over `f`'s first `cap` tokens, in windows of n_ctx that start with BOS."""
    body, w = f[1:cap], model.cfg.n_ctx - 1
    total, count = 0.0, 0
    for i in range(0, len(body) - 1, w):
        x = torch.as_tensor(np.concatenate([[BOS], body[i:i + w]]).astype(np.int64))[None]
        nll = torch.nn.functional.cross_entropy(model(x)[0, :-1].float(), x[0, 1:], reduction="sum")
        total, count = total + nll.item(), count + x.shape[1] - 1
    return total, count


def by_package(model, data_dir: Path, budget: int = 400_000, seed: int = 1) -> None:
    manifest = json.loads((data_dir / "manifest.json").read_text())
    val_names = manifest["val_files"]
    held_out = set(val_names)
    train_names = [k for k, _ in manifest["files"] if k not in held_out]
    val = split_files(np.load(data_dir / "val.npy").astype(np.int64))
    train = split_files(np.load(data_dir / "train.npy").astype(np.int64))
    assert len(val) == len(val_names) and len(train) == len(train_names), "the manifest does not fit the arrays"
    share: collections.Counter = collections.Counter()
    v_total = v_count = 0.0
    for name, f in zip(val_names, val):
        t, n = file_nll(model, f)
        v_total, v_count = v_total + t, v_count + n
        share[name.split("/", 1)[0]] += n
    by_pkg = collections.defaultdict(list)
    for i, name in enumerate(train_names):
        by_pkg[name.split("/", 1)[0]].append(i)
    rng = np.random.default_rng(seed)
    matched = 0.0
    for pkg, n_val in share.most_common():
        want, t_sum, n_sum = budget * n_val / v_count, 0.0, 0
        for i in rng.permutation(by_pkg[pkg]):
            t, n = file_nll(model, train[i])
            t_sum, n_sum = t_sum + t, n_sum + n
            if n_sum >= want:
                break
        matched += n_val / v_count * t_sum / n_sum
        print(f"{pkg}: {n_val / v_count:.1%} of the held-out tokens, training files' loss {t_sum / n_sum:.3f}",
              flush=True)
    print(f"held-out files {v_total / v_count:.3f}; training files in the same package mix {matched:.3f}; "
          f"gap {v_total / v_count - matched:+.3f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--model", default="toy-2l-code", help="a shipped model (its snapshots)")
    p.add_argument("--run", default=None, help="a trainer run directory instead of --model")
    p.add_argument("--windows", type=int, default=None, help="default: as many as the card claim")
    p.add_argument("--by-package", action="store_true", help="the final model: held-out vs package-matched files")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if a.by_package:
        return by_package(cw.load(a.run + "/model.safetensors" if a.run else a.model), Path(a.data_dir))
    run = training_run(Path(a.run)) if a.run else cw.zoo.training_run(a.model)
    n_train = json.loads((Path(a.data_dir) / "manifest.json").read_text())["n_tokens"]["train"]
    first = cw.load(run.snapshots[0].path)
    stats, _ = loss_windows(a.data_dir, first.cfg.n_ctx, **({'n': a.windows} if a.windows else {}))
    print("| step | passes over the training split | held-out loss | held-out − training loss |")
    print("| --- | --- | --- | --- |")
    for snap in run.snapshots:
        m = cw.load(snap.path)
        tokens = int(m.metadata.get("tokens_seen", 0))
        print(f"| {snap.step:,} | {tokens / n_train:.2f} | {heldout_loss(m, stats):.3f} | "
              f"{heldout_gap(m, stats):+.3f} |", flush=True)


if __name__ == "__main__":
    main()
