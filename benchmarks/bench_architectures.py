"""Benchmark on a Llama-3.2-1B-shaped random model: prints a table of times and peak memory. Not a test.

    python benchmarks/bench_architectures.py --threads 2          # full size (needs ~6 GB RAM, minutes)
    python benchmarks/bench_architectures.py --quick              # small shapes, seconds (smoke test)

Model: 16 layers x 32 query heads, 8 K/V heads (grouped-query), d_model 2048, d_head 64, d_vocab 128,256,
rotary positions (base 500,000), RMSNorm, tied embeddings, float32, random weights (GPT-2 init), built
directly as a `Transformer`. Attention-only unless `--mlp` (Llama's gated MLPs would add 3.2 GB of weights
that none of the measured circuits reads; the attention view's forward pass is the only thing they slow).

Measured (each row one call, cold: the first needs the weights folded and the Gram matrices):
- OV positivity (full circuit W_E W_OV W_U) of all 512 heads; QK positivity at offset 0;
- K-composition scores over all head pairs (offset 0);
- one skip-trigram source query on a head (the head's factors built once, then `for_source`; the
  table's whole-vocabulary scan is timed separately on 4,096 sources and extrapolated);
- the attention view on 1,024 tokens: what one click on a not yet cached head costs in the kernel
  (engine + encoding), after the view's own forward pass.
Peak memory: the process' peak resident set (VmHWM) after each step, and the step's increase over the
resident size before it (/proc/self/clear_refs resets the peak).

Comparisons (`--compare`, on by default; same model, same run, so the machine's load is shared): the
rows OV positivity, QK positivity and K-composition get a "vs" column, the time another way of
computing the same numbers would take divided by ours, from a sample of heads / pairs extrapolated:
- naive dense K-composition: the `d_model x d_model` matrices `W_OV`, `W_QKᵀ` and their product per pair;
- TransformerLens (the installed version): `utilities.composition_scores` on its `FactoredMatrix`
  (as `all_composition_scores` builds them; the whole model at once would need ~137 GB here), and
  `FactoredMatrix.eigenvalues` of `W_E (W_V W_O) W_U` / `W_E (W_Q W_Kᵀ) W_Eᵀ` per head, the per-head
  chain without a shared Gram matrix (the `d_vocab x d_vocab` matrix itself, 66 GB per head, is out of
  reach for either). The sampled values are checked against ours (max |difference| printed).
The load (`os.getloadavg`) is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bench_engine import measure_full as measure  # noqa: E402  (same folder: one RSS/peak measurement)

from circwidgets import engine  # noqa: E402
from circwidgets.engine.skip_trigrams import SkipTrigramTable, _factors, source_maxima  # noqa: E402
from circwidgets.model import ModelConfig, Transformer  # noqa: E402


def build(quick: bool, mlp: bool) -> Transformer:
    if quick:
        cfg = dict(n_layers=4, d_model=256, n_heads=8, n_kv_heads=2, d_head=32, d_vocab=8000, n_ctx=1024)
    else:
        cfg = dict(n_layers=16, d_model=2048, n_heads=32, n_kv_heads=8, d_head=64, d_vocab=128256, n_ctx=2048)
    extra = dict(attn_only=False, d_mlp=4 * cfg["d_model"], gated_mlp=True, act_fn="silu") if mlp else {}
    c = ModelConfig(**cfg, positional="rotary", rotary_base=500000.0, normalization="RMS", tied_embeddings=True,
                    bos_token_id=0, name="llama-3.2-1b-shaped (random)", **extra)
    return Transformer(c, seed=0).eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--mlp", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-compare", dest="compare", action="store_false",
                    help="skip the naive / TransformerLens comparisons")
    ap.add_argument("--only", default="ov,qk,profile,comp,skip,attn",
                    help="comma-separated steps to run: ov, qk, profile, comp, skip, attn")
    args = ap.parse_args()
    steps = set(args.only.split(","))
    torch.set_num_threads(args.threads)
    rows = []

    print(f"load average at start (1, 5, 15 min): {os.getloadavg()}", flush=True)

    def row(name, target, res):
        _, dt, extra, peak = res
        rows.append([name, target, dt, extra, peak, ""])
        print(f"  {name}: {dt:.3f} s, +{(extra or 0) / 2**30:.2f} GB, peak {peak / 2**30:.2f} GB", flush=True)
        return res[0]

    model = row("build model (random weights)", "", measure(build, args.quick, args.mlp))
    cfg = model.cfg
    L, H = cfg.n_layers, cfg.n_heads
    print(f"{cfg.name}: {L} layers x {H} heads ({cfg.n_kv} K/V), d_model {cfg.d_model}, vocab {cfg.d_vocab}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters, {args.threads} threads")
    with torch.no_grad():
        if "ov" in steps:
            pos = row(f"OV positivity, all {L * H} heads (cold: fold + Gram)", "< 60 s, < 4 GB",
                      measure(engine.eigen_positivity, model, "ov"))
            if args.compare:
                compare_eigen(model, "ov", pos, rows[-1])
        else:
            row("fold the weights (engine.prep.weights)", "", measure(engine.weights, model))
        if "qk" in steps:
            pos = row(f"QK positivity at offset 0, all {L * H} heads", "< 60 s, < 4 GB",
                      measure(engine.eigen_positivity, model, "qk", offset=0))
            if args.compare:
                compare_eigen(model, "qk", pos, rows[-1])
            row("QK positivity at offset 1 (cores cached)", "",
                measure(engine.eigen_positivity, model, "qk", offset=1))
        if "profile" in steps:
            row("offset profile, 64 offsets, all heads", "", measure(engine.offset_profile, model, range(64)))
        if "comp" in steps:
            n_pairs = H * H * L * (L - 1) // 2
            comp = row(f"K-composition, all pairs ({n_pairs:,}, earlier layer -> later layer)", "< 30 s",
                       measure(engine.composition_scores, model, "k", offset=0))
            if args.compare:
                compare_composition(model, comp, rows[-1], n_pairs)
            del comp
            row("K-composition of one head with every other (the composition view's click; factors cached)", "",
                measure(engine.composition_for_head, model, L // 2, H // 3, "k", offset=0))
        if "skip" in steps:
            skip_step(model, row, rows)
    if "attn" in steps:
        attention_step(model, row, rows)
    print(f"load average at the end (1, 5, 15 min): {os.getloadavg()}")
    print("\n| step | target | time | extra peak | process peak | others' time / ours (same run) |\n"
          "|---|---|---|---|---|---|")
    for name, target, dt, extra, peak, vs in rows:
        t = f"{dt * 1e3:.1f} ms" if dt < 1 else f"{dt:.1f} s"
        print(f"| {name} | {target} | {t} | {(extra or 0) / 2**30:.2f} GB | {peak / 2**30:.2f} GB | {vs} |")


def _tl():
    """TransformerLens' `FactoredMatrix` and `composition_scores` (3.x or 4.x), or None."""
    try:
        from transformer_lens import FactoredMatrix
        try:
            from transformer_lens.utilities.matrix import composition_scores  # 4.x
        except ImportError:
            from transformer_lens.utils import composition_scores  # 3.x
        from importlib.metadata import version
    except ImportError:
        return None
    return FactoredMatrix, composition_scores, version("transformer-lens")


def _fmt_time(dt: float) -> str:
    return f"{dt:,.0f} s" if dt >= 10 else f"{dt:.2f} s"


def compare_eigen(model, circuit: str, ours: torch.Tensor, our_row: list, heads=((0, 0), (-1, -1))) -> None:
    """TransformerLens' route to the same positivity: per head the `FactoredMatrix` `W_E (W_V W_O) W_U`
    (QK at offset 0: `W_E (W_Q W_Kᵀ) W_Eᵀ`) and its `.eigenvalues`, timed on `heads`, extrapolated."""
    tl = _tl()
    if tl is None:
        our_row[5] = "TransformerLens not installed"
        return
    FactoredMatrix, _, tl_version = tl
    w = engine.weights(model)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    t, diffs = 0.0, []
    _ = FactoredMatrix(torch.randn(4, 2), torch.randn(2, 4)).eigenvalues  # warm-up: TransformerLens' lazy imports
    for l, h in heads:
        l, h = l % L, h % H
        t0 = time.perf_counter()
        if circuit == "ov":
            fm = w["W_E"] @ FactoredMatrix(w["W_V"][l, h], w["W_O"][l, h]) @ w["W_U"]
        else:  # rotary Δ = 0: R_0 = I, W_QK(0) = W_Q W_Kᵀ, what TransformerLens' QK is
            fm = w["W_E"] @ FactoredMatrix(w["W_Q"][l, h], w["W_K"][l, h].T) @ w["W_E"].T
        lam = fm.eigenvalues
        pos = float(lam.real.sum() / lam.abs().sum())
        t += time.perf_counter() - t0
        diffs.append(abs(pos - float(ours[l, h])))
        del fm, lam
    total = t / len(heads) * L * H
    our_row[5] = (f"TransformerLens {tl_version} FactoredMatrix.eigenvalues per head: {_fmt_time(total)} "
                  f"({len(heads)} heads timed, x{L * H // len(heads)}) = {total / our_row[2]:.0f}x; "
                  f"max |Δ positivity| {max(diffs):.1e}")
    print(f"  {our_row[5]}", flush=True)


def compare_composition(model, ours: torch.Tensor, our_row: list, n_pairs: int, n_tl: int = 6,
                        n_naive: int = 2) -> None:
    """The same K-composition scores, naive dense (`d_model x d_model` products per pair, `n_naive`
    pairs) and by TransformerLens' `composition_scores` on `FactoredMatrix` (heads 0..n_tl-1 of layer 0
    x heads 0..n_tl-1 of layer 1), timed and extrapolated to all pairs."""
    w = engine.weights(model)
    W_Q, W_K, W_V, W_O = (w[k] for k in ("W_Q", "W_K", "W_V", "W_O"))  # offset 0: R_0 = I
    parts = []
    t0 = time.perf_counter()
    diffs = []
    pairs = [(0, 1, 1, 2), (model.cfg.n_layers - 2, 3, model.cfg.n_layers - 1, 5)][:n_naive]
    for l1, h1, l2, h2 in pairs:
        OV = W_V[l1, h1] @ W_O[l1, h1]
        QKt = W_K[l2, h2] @ W_Q[l2, h2].T
        s = float((OV @ QKt).norm() / (OV.norm() * QKt.norm()))
        diffs.append(abs(s - float(ours[l1, h1, l2, h2])))
        del OV, QKt
    naive = (time.perf_counter() - t0) / len(pairs) * n_pairs
    parts.append(f"naive dense: {_fmt_time(naive)} ({len(pairs)} pairs timed) = {naive / our_row[2]:,.0f}x, "
                 f"max |Δ| {max(diffs):.1e}")
    tl = _tl()
    if tl is None:
        parts.append("TransformerLens not installed")
    else:
        FactoredMatrix, composition_scores, tl_version = tl
        n = n_tl
        t0 = time.perf_counter()
        left = FactoredMatrix(W_V[0, :n], W_O[0, :n])
        right = FactoredMatrix(W_Q[1, :n], W_K[1, :n].mT).T
        got = composition_scores(left[:, None], right[None, :], broadcast_dims=False)
        got = getattr(got, "scores", got)
        t_tl = (time.perf_counter() - t0) / (n * n) * n_pairs
        d = float((got - ours[0, :n, 1, :n]).abs().max())
        parts.append(f"TransformerLens {tl_version} composition_scores: {_fmt_time(t_tl)} ({n * n} pairs timed) "
                     f"= {t_tl / our_row[2]:,.0f}x, max |Δ| {d:.1e}")
    our_row[5] = "; ".join(parts)
    print(f"  {our_row[5]}", flush=True)


def skip_step(model, row, rows) -> None:
    """One head's skip-trigram factors, a source query on them, and the scan (on 4,096 sources)."""
    cfg = model.cfg
    L, H = cfg.n_layers, cfg.n_heads
    lay, hd = L - 1, H // 2
    f = row("skip-trigram factors of one head (offset 1)", "", measure(_factors, model, lay, hd, 1))
    V = cfg.d_vocab
    zeros = torch.zeros(V)
    table = SkipTrigramTable(model, lay, hd, f, zeros, zeros, 20, 10, 10, 256)
    table.for_source(3)  # warm
    row("skip-trigram query, one source", "< 50 ms", measure(table.for_source, 1234 % V))
    sub = {**f, "k": f["k"][:4096], "v": f["v"][:4096]}
    res = measure(source_maxima, sub)
    rows.append([f"skip-trigram scan, whole vocabulary (4,096 sources x {V / 4096:.1f})", "",
                 res[1] * V / 4096, res[2], res[3], ""])
    print(f"  scan extrapolated: {res[1] * V / 4096:.1f} s", flush=True)


def attention_step(model, row, rows) -> None:
    """The attention view on 1,024 tokens: set-up, then clicks on heads not cached yet (kernel side)."""
    from circwidgets.widgets.attention import AttentionPatterns

    cfg = model.cfg
    L, H = cfg.n_layers, cfg.n_heads
    toks = torch.randint(1, cfg.d_vocab, (1024,), generator=torch.Generator().manual_seed(0))
    toks[0] = 0
    w = row("attention view on 1,024 tokens: set-up (forward pass)", "", measure(AttentionPatterns, model, toks))
    clicks = []
    for l, h in [(1, 3), (L // 2, H - 5), (L - 1, H - 1)]:
        w._results.clear()
        clicks.append(measure(w._payload, l, h))
    best = min(clicks, key=lambda r: r[1])
    rows.append(["attention view: click on a new head (kernel: engine + encoding), best of 3", "< 200 ms",
                 best[1], best[2], best[3], ""])


if __name__ == "__main__":
    main()
