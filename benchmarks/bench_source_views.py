"""What a click costs in the views on a lazy checkpoint against the same model in memory (a benchmark, not a
test): the ablation view's run (`engine.ablated_run`: heads off and a path cut, the compact run), the
attention view's patterns with value norms (`engine.attention_patterns`), and the eigenvalue view's
"QK composed through" grid (`engine.k_composition_positivity`), and the paths view's default position
(`engine.decisive_position` on a repeated text: one pass stopped after the head's layer, the unembedding
read in blocks); then every head ablated (`engine.ablation_table`) and every head and residual position
patched (`engine.patching_report`), whose runs go through a lazy model as copies of the batch, several per
pass, against one copy a pass (`max_elements=1`).

Writes a random GPT-2-shaped checkpoint (float32 safetensors) once; the lazy model reads every layer from
it again on each call (the Gram matrix of the composed circuit is computed once and cached on disk, its
first call timed apart). Reports the median wall time of `--repeats` calls per operation, lazy and eager,
and their ratio, with the numbers of both checked equal (float32 rounding) before timing.

    python benchmarks/bench_source_views.py                    # GPT-2 small's shape: 12 layers, d_model 768
    python benchmarks/bench_source_views.py --quick            # 4 layers, d_model 256, 8k vocabulary
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch


def median_time(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def _quiet(op, *a, **k):
    """`op(*a, **k)` without its progress bars."""
    from circwidgets.engine._progress import quiet_progress

    with quiet_progress():
        return op(*a, **k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="4 layers, d_model 256, 8 heads, 8k vocabulary")
    a = ap.parse_args()
    if a.quick:
        a.layers, a.d_model, a.heads, a.vocab = 4, 256, 8, 8000
    warnings.simplefilter("ignore")
    torch.set_num_threads(a.threads)
    import transformers as tf

    import circwidgets as cw
    from circwidgets import engine

    cfg = tf.GPT2Config(n_embd=a.d_model, n_layer=a.layers, n_head=a.heads, vocab_size=a.vocab, n_positions=1024,
                        attn_implementation="eager")
    torch.manual_seed(0)
    hf = tf.GPT2LMHeadModel(cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(Path(d) / "ckpt")
        lazy = cw.from_hf(str(Path(d) / "ckpt"), lazy=True, cache_dir=Path(d) / "cache")
        eager = cw.from_hf(hf)
        del hf
        toks = torch.randint(0, a.vocab, (1, a.tokens), generator=torch.Generator().manual_seed(1))
        rep = torch.cat([toks[0, :a.tokens // 2]] * 2)  # every position of the second half an induction position
        state = dict(heads=[(1, 2), (a.layers - 1, 0)], paths=[(0, 1, 2, 3, "k")])
        ops = {
            "ablated_run (2 heads off, 1 cut)": lambda m: engine.ablated_run(m, toks, **state).token_loss,
            "attention_patterns (+ value norms)": lambda m: engine.attention_patterns(m, toks).v_norm,
            "k_composition_positivity (L0H1)": lambda m: engine.k_composition_positivity(m, (0, 1)),
            f"decisive_position (L{a.layers - 1}H0)": lambda m: torch.tensor(
                float(engine.decisive_position(m, rep, (a.layers - 1, 0)))),
        }
        t = time.perf_counter()
        engine.k_composition_positivity(lazy, (0, 1))
        first = time.perf_counter() - t
        print(f"GPT-2 shape: {a.layers} layers, d_model {a.d_model}, {a.heads} heads, vocab {a.vocab}; "
              f"{a.tokens} tokens; {a.threads} threads; median of {a.repeats}")
        print(f"(first composed-QK call on the lazy model, Gram matrix computed and cached: {first:.2f} s)")
        print(f"{'operation':40} {'lazy (s)':>10} {'eager (s)':>10} {'lazy/eager':>11}")
        for name, op in ops.items():
            got, want = op(lazy).float(), op(eager).float()
            torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4, equal_nan=True)
            tl, te = median_time(lambda op=op: op(lazy), a.repeats), median_time(lambda op=op: op(eager), a.repeats)
            print(f"{name:40} {tl:10.3f} {te:10.3f} {tl / te:11.1f}")
        # every head / (layer, position) patched or ablated: the runs go through as copies of the batch, several
        # per pass; `max_elements=1` is one copy a pass (how a source ran them before), timed once
        corrupt = toks.flip(-1)
        sweeps = {
            "ablation_table (every head)": lambda m, **k: _quiet(engine.ablation_table, m, toks, **k),
            "patching_report (heads + resid)":
                lambda m, **k: _quiet(engine.patching_report, m, toks, corrupt, **k).resid,
        }
        print(f"{'every head / position':40} {'lazy (s)':>10} {'1 a pass':>10} {'eager (s)':>10} {'1 a pass/lazy':>14}")
        for name, op in sweeps.items():
            got, one, want = op(lazy).float(), op(lazy, max_elements=1).float(), op(eager).float()
            torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
            torch.testing.assert_close(one, got, rtol=1e-3, atol=1e-3)
            tl, te = median_time(lambda op=op: op(lazy), a.repeats), median_time(lambda op=op: op(eager), a.repeats)
            t1 = median_time(lambda op=op: op(lazy, max_elements=1), 1)
            print(f"{name:40} {tl:10.3f} {t1:10.3f} {te:10.3f} {t1 / tl:14.1f}")


if __name__ == "__main__":
    main()
