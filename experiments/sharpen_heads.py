"""Would sharper induction heads fit code better? Scale their QK or OV circuits and measure both.

The lecture model's targets ask for induction scores >= 0.8 and a loss < 1 nat on a repeated random copy;
toy-2l-code reaches ~0.6 and 7-8 nats. Two readings: the model has not found sharper heads yet (training
would get there), or sharper heads cost it loss on the code it models (its weights sit where the data puts
them). This script tells them apart locally: it multiplies the layer-1 induction heads' W_Q by `a` (every
attention logit of the head times `a`: a colder softmax, so more weight on the best-matching key) and their
W_O by `b` (the head's whole output times `b`: a more confident copy; behind a final LayerNorm the logits grow
less than `b`-fold, since the norm divides the louder stream by its larger scale), and measures, for each (a, b), the
loss on held-out code beside the card's induction score and repeated-copy loss. If the card's behaviours
rise only as held-out loss rises, the data does not reward them at these weights.

    python experiments/sharpen_heads.py toy-2l-code --data-dir DATA
    python experiments/sharpen_heads.py runs/toy-2l-code/model.safetensors --data-dir DATA --min-score 0.2

Heads scaled: every layer-1 head whose induction score (mean over the repeat lengths) is at least
`--min-score`, or the best one if none is. Measured with the card's claims (`zoo.claims`, n_seqs 32,
seed 2024) on the held-out windows the card's held-out claims use (`zoo.build.loss_windows`).
"""

from __future__ import annotations

import argparse

import torch

import circwidgets as cw
from circwidgets.engine.heads import head_scores
from circwidgets.zoo.build import loss_windows
from circwidgets.zoo.claims import heldout_loss, icl_repeated_loss, induction_max

GRID = [(1, 1), (1.25, 1), (1.5, 1), (2, 1), (3, 1), (1, 1.25), (1, 1.5), (1, 2), (1, 3), (2, 2)]
LENS = (10, 23, 50, 100)


def scaled(name: str, layer: int, heads: list[int], a: float, b: float):
    """A fresh copy of the model with heads' W_Q times a and W_O times b in `layer`."""
    model = cw.load(name)
    with torch.no_grad():
        model.W_Q[layer, heads] *= a
        model.W_O[layer, heads] *= b
    return model


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a zoo name or a model file")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--min-score", type=float, default=0.5)
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    base = cw.load(a.model)
    if base.cfg.n_layers != 2 or base.cfg.biases:
        raise SystemExit("this experiment is written for two-layer models without biases (W_Q, W_O only)")
    stats, _ = loss_windows(a.data_dir, base.cfg.n_ctx, n=256)
    score = head_scores(base, "induction", list(LENS), 32, 2024)[1]  # [H]: mean over the lengths
    heads = [h for h in range(base.cfg.n_heads) if score[h] >= a.min_score] or [int(score.argmax())]
    print(f"{a.model}: scaling layer-1 heads {', '.join(f'H{h} ({float(score[h]):.2f})' for h in heads)}")
    print("| QK × a | OV × b | held-out loss | best induction score, |r| = " + " / ".join(map(str, LENS))
          + " | repeated-copy loss (nats) |")
    print("| --- | --- | --- | --- | --- |")
    for qa, ob in GRID:
        m = scaled(a.model, 1, heads, qa, ob)
        ind = [induction_max(m, stats, layer=1, seq_len=n, n_seqs=32, seed=2024) for n in LENS]
        cp = [icl_repeated_loss(m, stats, seq_len=n, n_seqs=32, seed=2024) for n in LENS]
        print(f"| {qa:g} | {ob:g} | {heldout_loss(m, stats):.3f} | {' / '.join(f'{x:.2f}' for x in ind)} | "
              f"{' / '.join(f'{x:.2f}' for x in cp)} |", flush=True)


if __name__ == "__main__":
    main()
