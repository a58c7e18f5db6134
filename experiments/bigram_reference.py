"""What toy-0l-code's bigram claim measures: fit a zero-layer model to the corpus exactly and watch r.

    python experiments/bigram_reference.py --data-dir DATA [--steps 1500]

DATA is the prepared code corpus (`python -m circwidgets.train corpus --data-dir DATA`). A zero-layer model's
loss on the corpus depends on the data only through the bigram counts N[B, C]: it is
sum_BC N[B, C] * -log softmax(W_E W_U)[B, C]. So instead of sampling windows, this minimises that sum over
the full count matrix (AdamW, full batch, d_model as in the recipe) to the model's cross-entropy optimum, and
every 250 steps prints the loss and the card's two Pearson correlations over the 500 most frequent tokens
(`zoo.claims.bigram_pearson`'s definitions, against the shipped reference statistics): against the add-1
smoothed log P(C | B) of every pair, and over the pairs that occur in the corpus only.

Measured (2-core CPU, ~5 min for 1,500 steps alone, 13 min beside two training runs): from step 250 to 1,500
the loss falls 4.4008 -> 4.3593 nats while r over all pairs falls 0.754 -> 0.594 and r over the occurring
pairs stays 0.881-0.891. The 57 % of frequent-token pairs that
never occur have no corpus log-probability; the add-1 value the reference gives them is a convention, and a
model fitting the corpus better drives them further below it. Hence the card's target is on the occurring
pairs, and the all-pairs number is kept as a measured fact.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from circwidgets import zoo
from circwidgets.engine import pearson
from circwidgets.zoo.build import load_stats


def bigram_counts(data_dir: Path, d_vocab: int) -> torch.Tensor:
    """N[B, C] / sum(N) over the training split's consecutive token pairs `[d_vocab, d_vocab]`, float32."""
    t = np.load(data_dir / "train.npy").astype(np.int64)
    n = np.bincount(t[:-1] * d_vocab + t[1:], minlength=d_vocab * d_vocab).reshape(d_vocab, d_vocab)
    n = torch.tensor(n, dtype=torch.float32)
    return n / n.sum()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cfg = zoo.card("toy-0l-code")["architecture"]
    V, D = cfg["d_vocab"], cfg["d_model"]
    counts = bigram_counts(a.data_dir, V)
    stats = load_stats("toy-0l-code")
    ids, ref, seen = stats["bigram_ids"].long(), stats["bigram_log_probs"].double(), stats["bigram_seen"].bool()
    g = torch.Generator().manual_seed(0)
    W_E = (torch.randn(V, D, generator=g) * 0.0707).requires_grad_()
    W_U = (torch.randn(D, V, generator=g) * 0.0707).requires_grad_()
    opt = torch.optim.AdamW([W_E, W_U], lr=a.lr, weight_decay=0.0, betas=(0.9, 0.99))
    t0 = time.perf_counter()
    print("step  loss (nats)  r all pairs  r occurring pairs")
    for step in range(a.steps + 1):
        lp = (W_E @ W_U).log_softmax(-1)  # [B, C]
        loss = -(counts * lp).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 250 == 0:
            with torch.no_grad():
                sub = lp.double()[ids][:, ids]
                print(f"{step:5d}  {loss.item():.4f}  {pearson(sub.flatten(), ref.flatten()):.3f}  "
                      f"{pearson(sub[seen], ref[seen]):.3f}   ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
