"""How low can a model's loss on a repeated random copy go if its induction heads attended perfectly?

On `BOS + r + r` (the engine's induction probe), every query in the second copy whose token occurred before
has one "induction" key: the token after that earlier occurrence. This script measures the loss on the
repeated copy (`engine.in_context_loss`'s "repeated" positions) as the model computes it, then again with
the last layer's attention rows of some heads replaced by a one-hot row on that key: the best induction
head alone, then every head of the last layer. The gap between the measured loss and the forced one is
what better attention could win; what remains with attention forced is the limit of the heads' OV circuits
against the direct path. The last column says where the best head's attention goes from those queries:
the induction key, BOS, or elsewhere.

    python experiments/copy_ceiling.py toy-2l-code [--lens 10,23,50,100] [--n-seqs 16]
    python experiments/copy_ceiling.py runs/toy-2l-code/model.safetensors
    python experiments/copy_ceiling.py toy-2l-code --data-dir DATA --pool 500   # r from frequent tokens only
    python experiments/copy_ceiling.py toy-2l-code --data-dir DATA --boost 0,4,8,12   # what a stronger copy costs

With `--data-dir DATA` it also prints how often the copy guess is right in held-out code: at each position
of a window (the model's n_ctx) whose token occurred earlier in it, whether the next token is the one that
followed that token's most recent earlier occurrence. A model fitted to code learns how far to trust a copy
from that rate; on repeated random tokens the guess is always right.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import circwidgets as cw
from circwidgets.engine.heads import (
    detection_masks,
    head_scores,
    in_context_loss,
    induction_tokens,
    per_token_loss,
    repeated_tokens,
)


@torch.no_grad()
def copy_losses(model, seq_len: int, n_seqs: int = 16, seed: int = 0, pool: torch.Tensor | None = None
                ) -> dict[str, float]:
    """pool: draw r from these token ids only (without repetition) instead of the whole vocabulary."""
    toks = induction_tokens(model, seq_len, n_seqs, seed)  # [B, 1 + 2L]
    if pool is not None:  # the engine's sampler over positions in the pool, then its ids; BOS kept
        toks = torch.cat([toks[:, :1], pool[repeated_tokens(len(pool), seq_len, n_seqs, seed)]], 1)
    ind = detection_masks(toks)["induction"]  # [B, Q, K]
    last = model.cfg.n_layers - 1
    scores = head_scores(model, "induction", tokens=toks)[last]  # [H]
    best = int(scores.argmax())
    L = seq_len
    rep = torch.arange(L + 2, 2 * L + 1)  # targets of the repeated copy after its first token (BOS at 0)

    def loss(logits: torch.Tensor) -> float:
        return per_token_loss(logits.float(), toks)[:, rep - 1].mean().item()

    def forced(heads: list[int]) -> float:
        def hook(pattern, hook):
            pattern = pattern.clone()
            rows = ind.any(-1)  # [B, Q]: queries with an induction key
            one_hot = ind.to(pattern.dtype)
            for h in heads:
                pattern[:, h] = torch.where(rows[..., None], one_hot, pattern[:, h])
            return pattern

        return loss(model.run_with_hooks(toks, [(f"blocks.{last}.attn.hook_pattern", hook)]))

    seen = {}

    def keep(pattern, hook):
        seen["pattern"] = pattern[:, best].float()  # [B, Q, K]

    measured = loss(model.run_with_hooks(toks, [(f"blocks.{last}.attn.hook_pattern", keep)]))
    # where the best head's attention goes from the repeated copy's queries that have an induction key
    rows = ind.any(-1)  # [B, Q]
    pat = seen["pattern"][rows]  # [n, K]
    on_key = (pat * ind[rows]).sum(-1).mean().item()
    on_bos = pat[:, 0].mean().item()
    # the same positions as the engine's repeated-copy loss (the trainer's and the cards' definition)
    if pool is None:
        engine = in_context_loss(model, seq_len, n_seqs, seed).repeated
        assert abs(measured - engine) < 1e-4, (measured, engine)
    return {"induction_score": float(scores[best]), "best_head": best, "measured": measured,
            "forced_best": forced([best]), "forced_all": forced(list(range(model.cfg.n_heads))),
            "attn_key": on_key, "attn_bos": on_bos, "attn_rest": 1 - on_key - on_bos}


def copy_guesses(window: list[int], k: int = 1) -> list[int]:
    """At each position whose last `k` tokens occurred together earlier in `window`, the token that followed
    their most recent earlier occurrence (the copy guess for the next token); -1 where there is none."""
    last: dict[tuple, int] = {}
    out = [-1] * len(window)
    for t in range(k - 1, len(window) - 1):
        key = tuple(window[t - k + 1:t + 1])
        s = last.get(key)
        if s is not None:
            out[t] = window[s + 1]
        last[key] = t
    return out


def copy_guess_accuracy(tokens: np.ndarray, window: int, k: int = 1) -> tuple[int, float]:
    """(positions with a copy guess, fraction whose next token is the guess), over consecutive windows of
    `tokens`: k = 1 matches the current token, k = 2 the current and the previous one, ..."""
    hits = total = 0
    for start in range(0, len(tokens) - window + 1, window):
        w = tokens[start:start + window].tolist()
        for t, g in enumerate(copy_guesses(w, k)):
            if g >= 0:
                total += 1
                hits += w[t + 1] == g
    return total, hits / max(total, 1)


def copy_guess_by_occurrences(tokens: np.ndarray, window: int, most: int = 5) -> dict[int, tuple[int, float]]:
    """`{n: (positions, fraction right)}` of the one-token copy guess, by how often the current token occurred
    earlier in its window (n = 1 .. `most`, the last bucket "at least `most`"): n = 1 is the situation of the
    repeated random tokens, one earlier occurrence to copy from."""
    counts: dict[int, list[int]] = {}
    for start in range(0, len(tokens) - window + 1, window):
        w = tokens[start:start + window].tolist()
        seen: dict[int, list[int]] = {}
        for t in range(len(w) - 1):
            prev = seen.setdefault(w[t], [])
            if prev:
                c = counts.setdefault(min(len(prev), most), [0, 0])
                c[0] += 1
                c[1] += w[t + 1] == w[prev[-1] + 1]
            prev.append(t)
    return {n: (c[0], c[1] / c[0]) for n, c in sorted(counts.items())}


@torch.no_grad()
def boosted_losses(model, windows: torch.Tensor, boosts: list[float], k: int = 1,
                   positions: torch.Tensor | None = None, chunk: int = 32) -> list[float]:
    """Mean next-token loss on `windows` [N, T] (at `positions`, the predicting positions, or all of them)
    when each copy guess's logit is raised by `b` nats, for each b in `boosts`: the bluntest way to make the
    model trust a copy more, and what that costs where the guess is wrong."""
    pos = torch.arange(windows.shape[1] - 1) if positions is None else positions
    total = torch.zeros(len(boosts), dtype=torch.float64)
    for i in range(0, len(windows), chunk):
        w = windows[i:i + chunk].long()
        logits = model(w).float()[:, pos]  # [n, P, V]
        target = w[:, pos + 1]
        guess = torch.tensor([copy_guesses(row, k) for row in w.tolist()])[:, pos]
        has = guess >= 0
        onehot = torch.zeros_like(logits).scatter_(-1, guess.clamp(min=0)[..., None], 1.0) * has[..., None]
        for j, b in enumerate(boosts):
            nll = torch.nn.functional.cross_entropy((logits + b * onehot).transpose(1, 2), target, reduction="sum")
            total[j] += nll.item()
    n = len(windows) * len(pos)
    return [float(t / n) for t in total]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a zoo name or a model file")
    p.add_argument("--lens", default="10,23,50,100")
    p.add_argument("--n-seqs", type=int, default=16)
    p.add_argument("--data-dir", default=None, help="the corpus: also print the copy guess's accuracy in held-out code")
    p.add_argument("--pool", type=int, default=None,
                   help="draw r from the POOL most frequent tokens of the training split (needs --data-dir)")
    p.add_argument("--boost", default=None, metavar="B1,B2,...",
                   help="also tabulate held-out and repeated-copy loss with each copy guess's logit raised by B "
                        "nats (needs --data-dir)")
    p.add_argument("--windows", default=None, metavar="W1,W2,...",
                   help="with --data-dir: the copy guess's accuracy in windows of these lengths (default: the "
                        "model's n_ctx), e.g. 256,1024 to see what a longer training context would offer")
    p.add_argument("--match-lengths", default="1,2", metavar="K1,K2,...",
                   help="with --data-dir: the copy guess's accuracy when the last K tokens matched (default 1,2), "
                        "e.g. 1,2,4,8,16 to see how far code rewards trusting a longer repeat")
    a = p.parse_args(argv)
    if a.boost and not a.data_dir:
        p.error("--boost needs --data-dir (the held-out windows)")
    if a.windows and not a.data_dir:
        p.error("--windows needs --data-dir (the held-out split)")
    if a.pool is not None and not a.data_dir:
        p.error("--pool needs --data-dir (the token counts of the training split)")
    lens = [int(x) for x in a.lens.split(",")]
    if a.pool is not None and not max(lens) <= a.pool:
        p.error(f"--pool {a.pool}: r of {max(lens)} distinct tokens needs a pool at least that large")
    torch.set_num_threads(1)
    model = cw.load(a.model)
    pool = None
    if a.pool is not None:
        counts = np.bincount(np.load(Path(a.data_dir) / "train.npy"), minlength=model.cfg.d_vocab)
        bos = model.cfg.bos_token_id or 0
        order = np.argsort(-counts, kind="stable")
        order = order[order != bos]  # never BOS inside r
        if a.pool > len(order):
            p.error(f"--pool {a.pool}: this model has {len(order)} tokens besides BOS")
        pool = torch.as_tensor(order[:a.pool].copy())
        print(f"r drawn from the {a.pool} most frequent tokens of the training split")
    print(f"{a.model}: loss (nats) on the repeated copy of BOS + r + r, log V = "
          f"{torch.log(torch.tensor(float(model.cfg.d_vocab))):.2f}")
    last = model.cfg.n_layers - 1
    print(f"| repeat length | best layer-{last} head (induction score) | measured | best head forced "
          "| every head forced | best head's attention: induction key / BOS / elsewhere |")
    print("| --- | --- | --- | --- | --- | --- |")
    for L in lens:
        r = copy_losses(model, L, a.n_seqs, pool=pool)
        print(f"| {L} | H{r['best_head']} ({r['induction_score']:.2f}) | {r['measured']:.2f} | "
              f"{r['forced_best']:.2f} | {r['forced_all']:.2f} | "
              f"{r['attn_key']:.2f} / {r['attn_bos']:.2f} / {r['attn_rest']:.2f} |")
    if a.data_dir:
        val = np.load(Path(a.data_dir) / "val.npy")
        windows = [int(x) for x in a.windows.split(",")] if a.windows else [model.cfg.n_ctx]
        for w in windows:
            for k in (int(x) for x in a.match_lengths.split(",")):
                n, acc = copy_guess_accuracy(val, w, k)
                print(f"held-out code, windows of {w}, copy guess from the last {k} token(s): {n:,} positions "
                      f"({n / (len(val) // w * w):.1%}) have one; it is right at {acc:.1%} of them "
                      f"(-log = {-np.log(acc):.2f} nats)")
            for occ, (n, acc) in copy_guess_by_occurrences(val, w).items():
                print(f"held-out code, windows of {w}, one-token copy guess where the token occurred "
                      f"{occ if occ < 5 else 'at least 5'} time(s) before: {n:,} positions, right at {acc:.1%}")
    if a.boost:
        boost_table(model, a.data_dir, [float(b) for b in a.boost.split(",")], lens, a.n_seqs)


def boost_table(model, data_dir: str, boosts: list[float], lens: list[int], n_seqs: int) -> None:
    """What a stronger copy costs in code: the held-out loss and the repeated-copy loss with every copy
    guess's logit raised by b nats, the guess from the last token (what one induction head over one
    previous-token head can match) or from the last two."""
    from circwidgets.zoo.build import loss_windows

    held = loss_windows(data_dir, model.cfg.n_ctx, n=256)[0]["heldout_windows"]
    reps = {L: induction_tokens(model, L, n_seqs, 0) for L in lens}
    cols = {}
    for k in (1, 2):
        cols[k] = {"held": boosted_losses(model, held, boosts, k)}
        for L in lens:  # the repeated copy's targets after its first token, as copy_losses measures it
            cols[k][L] = boosted_losses(model, reps[L], boosts, k, positions=torch.arange(L + 1, 2 * L))
    print("\n| copy guess from | boost (nats) | held-out loss | repeated copy, |r| = " + " / ".join(map(str, lens))
          + " |\n| --- | --- | --- | --- |")
    for k in (1, 2):
        for j, b in enumerate(boosts):
            print(f"| last {k} token{'s' if k > 1 else ''} | {b:g} | {cols[k]['held'][j]:.3f} | "
                  + " / ".join(f"{cols[k][L][j]:.2f}" for L in lens) + " |")

if __name__ == "__main__":
    main()
