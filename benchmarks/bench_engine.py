"""Engine benchmark (circuits, positivity, composition): prints a table of times, peak memory and
ratios measured in one run. Not a test.

    python benchmarks/bench_engine.py            # GPT-2-small shape: 12x12 heads, d_model 768, vocab 50257
    python benchmarks/bench_engine.py --quick    # small shapes, seconds (smoke test)

Compared in the same run with
- a naive dense version (d_model x d_model products per head / per pair; run on a few heads or
  pairs and extrapolated linearly, marked "extrap."),
- TransformerLens (whatever `import transformer_lens` finds), doing exactly what its
  `W_E @ model.OV @ W_U` eigenvalues and `all_composition_scores` do. To keep this machine alive,
  TransformerLens runs on a subset (some layers for positivity; the first layers' heads for
  composition, whose all-pairs broadcast needs ~9.5 GB at full size) and is extrapolated linearly
  in heads / head pairs; the subset it ran on is printed.

On a CPU shared with other jobs, `--threads 1` gives steadier numbers (LAPACK/BLAS thread teams
spin badly under contention: a 768x768 eig took 14-33 s with 2 threads and 1.2 s with 1 here).

Peak memory: increase of the process' peak resident set size (Linux `VmHWM`, reset through
`/proc/self/clear_refs`) over the resident size before the call.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from circwidgets.engine import circuits as C  # noqa: E402
from circwidgets.engine import composition as CO  # noqa: E402
from circwidgets.engine.factored import eigvals  # noqa: E402
from circwidgets.engine.prep import prepared  # noqa: E402
from circwidgets.model import ModelConfig, Transformer  # noqa: E402


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(key + r":\s+(\d+)", f.read()).group(1)) * 1024


def _trim() -> None:
    """Give freed heap pages back to the OS, so that reused memory shows up in the next peak."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure_full(fn, *args, **kwargs):
    """(result, seconds, extra peak bytes over the resident size before or None, process peak bytes)."""
    gc.collect()
    _trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status("VmRSS")
    except OSError:
        base = None
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    dt = time.perf_counter() - t
    peak = _status("VmHWM")
    return out, dt, (peak - base if base is not None else None), peak


def measure(fn, *args, **kwargs):
    """(result, seconds, peak extra bytes or None)."""
    return measure_full(fn, *args, **kwargs)[:3]


def best_of(n, fn, *args, **kwargs):
    """Fastest of `n` runs (this machine is shared: the minimum is the least disturbed), max peak."""
    runs = [measure(fn, *args, **kwargs) for _ in range(n)]
    peaks = [r[2] for r in runs if r[2] is not None]
    return runs[0][0], min(r[1] for r in runs), max(peaks) if peaks else None


def fmt_mem(b) -> str:
    return "n/a" if b is None else f"{b / 2**20:,.0f} MB"


def build(quick: bool) -> Transformer:
    if quick:
        cfg = ModelConfig(n_layers=4, d_model=128, n_heads=4, d_head=32, d_vocab=5000, n_ctx=64, normalization="LN")
    else:
        cfg = ModelConfig(n_layers=12, d_model=768, n_heads=12, d_head=64, d_vocab=50257, n_ctx=1024,
                          normalization="LN")
    return Transformer(cfg, seed=0).eval()  # GPT-2 init, float32


# ------------------------------------------------------------------ ours
def ours_positivity(model):
    return C.eigen_positivity(model, "ov"), C.eigen_positivity(model, "qk")


def ours_composition(model, kind):
    return CO.composition_scores(model, kind)


# ------------------------------------------------------------------ naive dense
@torch.no_grad()
def naive_positivity(pm, heads):
    """Per head: the d_model x d_model matrices (W_U W_E)(W_V W_O) and (W_E^T W_E)(W_Q W_K^T), dense eig."""
    G_UE, G_EE = pm.W_U @ pm.W_E, pm.W_E.T @ pm.W_E
    out = []
    for l, h in heads:
        for M in (G_UE @ (pm.W_V[l, h] @ pm.W_O[l, h]), G_EE @ (pm.W_Q[l, h] @ pm.W_K[l, h].T)):
            lam = eigvals(M)
            out.append(lam.real.sum() / lam.abs().sum())
    return out


@torch.no_grad()
def naive_composition(pm, pairs, kind):
    OV = lambda l, h: pm.W_V[l, h] @ pm.W_O[l, h]  # noqa: E731
    QK = lambda l, h: pm.W_Q[l, h] @ pm.W_K[l, h].T  # noqa: E731
    out = []
    for (l1, h1), (l2, h2) in pairs:
        left = OV(l1, h1)
        right = {"q": QK, "k": lambda l, h: QK(l, h).T, "v": OV}[kind](l2, h2)
        out.append((left @ right).norm() / (left.norm() * right.norm()))
    return out


# ------------------------------------------------------------------ TransformerLens
@torch.no_grad()
def tl_positivity(tl, pm, layers):
    """What `(model.W_E @ model.OV @ model.W_U).eigenvalues` does, one layer (all its heads) at a time."""
    FM = tl.FactoredMatrix
    for l in layers:
        ov = pm.W_E @ FM(pm.W_V[l], pm.W_O[l]) @ pm.W_U
        lam = ov.eigenvalues
        (lam.real.sum(-1) / lam.abs().sum(-1)).tolist()
        del ov
        qk = pm.W_E @ FM(pm.W_Q[l], pm.W_K[l].mT) @ pm.W_E.T
        lam = qk.eigenvalues
        (lam.real.sum(-1) / lam.abs().sum(-1)).tolist()
        del qk


@torch.no_grad()
def tl_composition(tl, pm, n_layers, kind):
    """TransformerLens' all_composition_scores on the first `n_layers` layers (all pairs of their heads)."""
    try:
        from transformer_lens.utils import composition_scores
    except ImportError:
        from transformer_lens.utilities.matrix import composition_scores
    FM = tl.FactoredMatrix
    s = slice(0, n_layers)
    left = FM(pm.W_V[s], pm.W_O[s])
    qk = FM(pm.W_Q[s], pm.W_K[s].mT)
    right = {"q": qk, "k": qk.T, "v": left}[kind]
    return composition_scores(left, right, broadcast_dims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shapes (smoke test)")
    ap.add_argument("--no-tl", action="store_true", help="skip TransformerLens even if installed")
    ap.add_argument("--tl-pos-layers", type=int, default=1, help="layers TransformerLens positivity runs on")
    ap.add_argument("--tl-comp-layers", type=int, default=3, help="first layers TransformerLens composition runs on")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tl = None
    if not args.no_tl:
        try:
            import transformer_lens as tl  # noqa: F811
        except Exception as e:  # noqa: BLE001
            print(f"(TransformerLens not available: {type(e).__name__}: {e})")

    # warm up the BLAS/LAPACK paths so that first-call library loading is not timed
    x = torch.randn(64, 64)
    torch.linalg.qr(x), torch.linalg.eigvals(x.double()), x @ x
    model, t_build, _ = measure(build, args.quick)
    cfg = model.cfg
    L, H = cfg.n_layers, cfg.n_heads
    print(f"model: {L}x{H} heads, d_model {cfg.d_model}, d_head {cfg.d_head}, d_vocab {cfg.d_vocab}, LN, float32; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"TransformerLens {getattr(tl, '__version__', None) or ('n/a' if tl is None else 'installed')}; "
          f"built in {t_build:.1f} s")
    rows = []

    # ---- positivity, OV + QK full circuits, all heads
    (_, t_cold, m_cold) = measure(ours_positivity, model)
    (_, t_warm, m_warm) = best_of(3, ours_positivity, model)
    pm = prepared(model)
    few = [(L // 2, 1)]
    _, t_naive, _ = measure(naive_positivity, pm, few)
    t_naive_all = t_naive * L * H / len(few)
    rows.append(("positivity OV+QK, all heads", "ours, first call (checks, LN fold, Grams)", t_cold, m_cold, ""))
    rows.append(("", "ours, warm (fold/Grams cached)", t_warm, m_warm, ""))
    rows.append(("", f"naive dense d_model^2 eig ({len(few)} head, extrap.)", t_naive_all, None,
                 f"{t_naive_all / t_cold:.1f}x vs cold"))
    if tl is not None:
        nl = min(args.tl_pos_layers, L)
        _, t_tl, m_tl = measure(tl_positivity, tl, pm, range(nl))
        t_tl_all = t_tl * L / nl
        rows.append(("", f"TransformerLens ({nl} layer(s), extrap. x{L / nl:.3g})", t_tl_all, m_tl,
                     f"{t_tl_all / t_cold:.1f}x vs cold, {t_tl_all / t_warm:.1f}x vs warm"))

    # ---- composition, Q/K/V, all pairs
    CO.composition_baseline(model)  # the cached baseline is not part of the timing
    n_pairs = sum(H * H * (L - l - 1) for l in range(L))
    for kind in "qkv":
        _, t_ours, m_ours = best_of(2, ours_composition, model, kind)
        rows.append((f"composition {kind.upper()}, all {n_pairs} pairs", "ours", t_ours, m_ours, ""))
        pairs = [((0, 0), (1, 0)), ((0, 1), (L - 1, 2 % H)), ((L // 2, 0), (L - 1, H - 1))]
        _, t_nv, _ = measure(naive_composition, pm, pairs, kind)
        t_nv_all = t_nv * n_pairs / len(pairs)
        rows.append(("", f"naive dense d_model^2 products ({len(pairs)} pairs, extrap.)", t_nv_all, None,
                     f"{t_nv_all / t_ours:.0f}x"))
        if tl is not None:
            nl = min(args.tl_comp_layers, L)
            _, t_tl, m_tl = measure(tl_composition, tl, pm, nl, kind)
            # TL computes all (nl*H)^2 pairs of the subset; the full run does (L*H)^2
            f = (L / nl) ** 2
            rows.append(("", f"TransformerLens (first {nl} layers, extrap. x{f:.3g})", t_tl * f, m_tl,
                         f"{t_tl * f / t_ours:.1f}x; its memory grows ~x{f:.3g} too"))

    w = max(len(r[1]) for r in rows)
    print(f"load average before the table: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"\n{'task':36} {'implementation':{w}} {'time':>10} {'peak mem':>10}  ratio (other / ours)")
    for task, impl, t, mem, ratio in rows:
        print(f"{task:36} {impl:{w}} {t:9.2f}s {fmt_mem(mem):>10}  {ratio}")


if __name__ == "__main__":
    main()
