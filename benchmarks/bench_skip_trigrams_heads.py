"""Benchmark: skip-trigram scan, per-source lookups and head scores on GPT-2-small shapes.

    python benchmarks/bench_skip_trigrams_heads.py [--threads N] [--device cuda]

Prints one table of times and ratios measured in this run (random weights, float32, CPU or the
weights' device). References, same run:
- "square GEMM, same FLOPs": one dense `[n, n] @ [n, n]` with 2n³ = the scan's 4·V²·d_head FLOPs;
- "block GEMM pass": the same factored products as the scan, `[256, V]` blocks, outputs discarded
  (what a straightforward streamed implementation costs before any reduction).
Ratios are measured on a subset of sources with the three computations interleaved over several
rounds (min of each), so that load from other processes hits them alike; the full scan is timed once.
Peak memory: resident set size sampled every 2 ms during the full scan, and its increase over the
RSS with the model loaded.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from circwidgets.engine.heads import all_head_scores, head_scores  # noqa: E402
from circwidgets.engine.skip_trigrams import _factors, skip_trigrams, source_maxima  # noqa: E402
from circwidgets.model import ModelConfig, Transformer  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


class PeakRSS:
    """Samples the process's resident memory every 2 ms in a thread; `.peak` in MB."""

    def __enter__(self):
        self.peak, self._run = rss_mb(), True
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        return self

    def _loop(self):
        while self._run:
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._run = False
        self._t.join()


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def interleaved(fns: dict, rounds: int) -> dict:
    """Min time of each function over `rounds`, the functions run in turn (shared-machine noise
    then hits all of them alike)."""
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def ratio_runs(f: dict, ns: int, rounds: int, dev) -> tuple[dict, int]:
    """Scan of `ns` sources (ours) vs a square GEMM and a block GEMM pass of the same FLOPs."""
    V = f["q"].shape[0]
    sub = {"q": f["q"], "u": f["u"], "k": f["k"][:ns].contiguous(), "v": f["v"][:ns].contiguous()}
    n = round((4 * ns * V * f["q"].shape[1] / 2) ** (1 / 3))
    A, B = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    qt = f["q"].T.contiguous()
    buf = torch.empty(256, V, device=dev)

    def block_pass():
        for s in range(0, ns, 256):
            e = min(s + 256, ns)
            torch.mm(sub["k"][s:e], qt, out=buf[: e - s])
            torch.mm(sub["v"][s:e], sub["u"], out=buf[: e - s])

    t = interleaved({"ours": lambda: source_maxima(sub, progress=False), "square": lambda: A @ B,
                     "block": block_pass}, rounds)
    return t, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--subset", type=int, default=None,
                    help="sources in the interleaved ratio runs (default 4096 on CPU, all on CUDA)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    V, D, E = 50257, 768, 64
    rows = []

    # ------------------------------------------------------------ skip-trigrams (one layer + embeddings)
    cfg1 = ModelConfig(n_layers=1, d_model=D, n_heads=12, d_head=E, d_vocab=V, n_ctx=1024, name="gpt2-shaped-1L")
    m1 = Transformer(cfg1, seed=0).to(dev)
    flops = 4 * V * V * E
    ns = args.subset or (V if cuda else 4096)
    # ratios first (they also warm up thread pools / kernels): same FLOPs, interleaved rounds
    t, n = ratio_runs(_factors(m1, 0, 3), ns, args.rounds, dev)
    sub_flops = 4 * ns * V * E

    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() / 2**20 if cuda else rss_mb()
    with PeakRSS() as mem:
        sync()
        t0 = time.perf_counter()
        table = skip_trigrams(m1, 0, 4, k=20, progress=False)
        sync()
        t_scan = time.perf_counter() - t0
    if cuda:
        mem.peak = torch.cuda.max_memory_allocated() / 2**20

    src = torch.randint(0, V, (50,), generator=torch.Generator().manual_seed(0)).tolist()
    table.for_source(src[0])  # warm-up
    q_times = []
    for s in src:
        t0 = time.perf_counter()
        table.for_source(s)
        q_times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    table.rows(0, 20)
    t_rows = time.perf_counter() - t0

    rows += [
        ("skip-trigram table, 1 head, V=50257, full", f"{t_scan:.2f} s",
         f"{flops / t_scan / 1e9:.0f} GFLOP/s (factors + scan + sort)"),
        (f"  scan of {ns} sources (ours, interleaved)", f"{t['ours']:.3f} s",
         f"{sub_flops / t['ours'] / 1e9:.0f} GFLOP/s"),
        (f"  square GEMM of the same FLOPs (n={n})", f"{t['square']:.3f} s",
         f"ours / ref = {t['ours'] / t['square']:.2f} (target <= 1)"),
        ("  block GEMM pass, same products", f"{t['block']:.3f} s", f"ours / ref = {t['ours'] / t['block']:.2f}"),
        ("  peak " + ("GPU memory" if cuda else "RSS") + " during the full scan", f"{mem.peak:.0f} MB",
         f"+{mem.peak - base:.0f} MB over the loaded model (target < 1 GB)"),
        ("per-source query (for_source), 50 tokens", f"{1e3 * statistics.median(q_times):.1f} ms median",
         f"max {1e3 * max(q_times):.1f} ms (target < 20 ms)"),
        ("rows(0, 20)", f"{1e3 * t_rows:.0f} ms", ""),
    ]

    # ------------------------------------------------------------ head scores, 12 x 12, 1025 tokens
    cfg = ModelConfig(n_layers=12, d_model=D, n_heads=12, d_head=E, d_vocab=V, n_ctx=1025, normalization="LN",
                      name="gpt2-shaped-attn-only")
    m = Transformer(cfg, seed=0).to(dev)
    all_head_scores(m, seq_len=16, n_seqs=1)  # warm-up
    toks = torch.randint(0, V, (1, 1025), device=dev)
    t = interleaved({"all": lambda: all_head_scores(m, seq_len=512, n_seqs=1),
                     "one": lambda: head_scores(m, "induction", seq_len=512, n_seqs=1),
                     "fwd": lambda: m(toks)}, max(1, args.rounds - 1))
    rows += [
        ("all_head_scores, 12x12, BOS+512+512 tokens", f"{t['all']:.2f} s",
         f"target < 1 s; {t['all'] / t['fwd']:.2f} x one full forward"),
        ("head_scores('induction'), same", f"{t['one']:.2f} s", ""),
        ("  reference: one full forward (logits)", f"{t['fwd']:.2f} s", ""),
    ]

    w = max(len(r[0]) for r in rows)
    name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {name}, "
          f"load average before/after {LOAD0} / {os.getloadavg()[0]:.1f}")
    for name, a, b in rows:
        print(f"{name:<{w}}  {a:>16}  {b}")


if __name__ == "__main__":
    LOAD0 = f"{os.getloadavg()[0]:.1f}"
    with torch.no_grad():
        main()
