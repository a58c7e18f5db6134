"""Kernel-side latency of the Composition / PathExpansion / Ablation interactions (what a click costs
in Python before the bytes go back to the page), for a small model of the shipped shape and a
GPT-2-small-sized random model.

    python benchmarks/bench_composition_paths_ablation_kernel.py [--skip-big] [--tokens 1024] [--path-tokens 256]

Each number is the median of a few distinct, uncached interactions (the widget's own caches cleared
where a repeat would hit them): a composition cell click (pair details: 3 patterns + virtual head),
a composition Q/K/V tab (scores for the new kind), a PathExpansion position change, a path bar
click (head pattern), an Ablation head toggle (one forward pass with hooks), an explorer selection
(every panel's new head). Build times (widget construction) are printed too. Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def ms(fn) -> float:
    t = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - t)


def bench(model, name: str, n_tok: int, n_path_tok: int, explorer: bool) -> dict:
    from circwidgets.widgets.ablation import Ablation
    from circwidgets.widgets.composition import Composition
    from circwidgets.widgets.explorer import CircuitExplorer
    from circwidgets.widgets.paths import PathExpansion

    cfg = model.cfg
    g = torch.Generator().manual_seed(1)
    toks = torch.randint(0, cfg.d_vocab, (n_tok,), generator=g)
    ptoks = toks[:n_path_tok]
    L, H = cfg.n_layers, cfg.n_heads
    out: dict = {"model": name, "tokens": n_tok, "path_tokens": n_path_tok}
    with torch.no_grad():
        out["build_composition_ms"] = ms(lambda: out.__setitem__("_c", Composition(model, toks)))
        wc = out.pop("_c")
        pairs = [[0, h, L - 1, (h + 1) % H] for h in range(min(H, 5))]
        out["composition_cell_click_ms"] = statistics.median(ms(lambda p=p: setattr(wc, "pair", p)) for p in pairs)
        out["composition_kind_tab_ms"] = statistics.median(
            ms(lambda k=k: setattr(wc, "kind", k)) for k in ("q", "v", "k"))
        out["build_paths_ms"] = ms(lambda: out.__setitem__("_p", PathExpansion(model, ptoks)))
        wp = out.pop("_p")
        out["paths_position_ms"] = statistics.median(
            ms(lambda q=q: setattr(wp, "position", q)) for q in range(1, min(6, n_path_tok)))
        heads = [(lay, h) for lay in range(L) for h in range(H)][1:6]
        out["paths_bar_click_ms"] = statistics.median(ms(lambda lh=lh: wp.select(*lh)) for lh in heads)
        out["build_ablation_ms"] = ms(lambda: out.__setitem__("_a", Ablation(model, toks)))
        wa = out.pop("_a")
        out["ablation_toggle_ms"] = statistics.median(ms(lambda lh=lh: wa.toggle(*lh)) for lh in heads)
        if explorer:
            out["build_explorer_ms"] = ms(lambda: out.__setitem__("_e", CircuitExplorer(model, toks)))
            ex = out.pop("_e")
            out["explorer_select_ms"] = statistics.median(ms(lambda lh=lh: ex.select(*lh)) for lh in heads[:3])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--path-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)  # 2 threads on 2 shared cores: contention
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from circwidgets.model.testing import random_model

    rows = []
    small = random_model(n_layers=2, n_heads=8, d_model=256, d_head=32, d_vocab=4096, n_ctx=1024,
                         positional="shortformer", dtype=torch.float32, seed=0)
    rows.append(bench(small, "random 2L x 8H, d 256, V 4096 (shipped shape)", 128, 128, explorer=True))
    if not args.skip_big:
        big = random_model(n_layers=12, n_heads=12, d_model=768, d_head=64, d_vocab=50257, n_ctx=1024,
                           attn_only=False, d_mlp=3072, normalization="LN", biases=True, dtype=torch.float32, seed=0)
        rows.append(bench(big, "random GPT-2-small size (12L x 12H, LN+MLP)", args.tokens, args.path_tokens,
                          explorer=False))
    keys = [k for k in rows[0] if k.endswith("_ms")]
    print(f"{'interaction':32s}" + "".join(f"{r['model'][:34]:>38s}" for r in rows))
    for k in keys:
        print(f"{k:32s}" + "".join(f"{r.get(k, float('nan')):38.1f}" for r in rows))
    out = Path(__file__).resolve().parents[1] / "artifacts" / "composition_paths_ablation_kernel_latency.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
