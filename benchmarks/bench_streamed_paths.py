"""Peak memory of path expansion on a lazy checkpoint vs the same checkpoint loaded eagerly (a benchmark,
not a test).

Writes a random Llama-shaped checkpoint (bfloat16 shards) once, then runs, each in a fresh process:

- `lazy`: `cw.from_hf(dir, lazy=True)`, `engine.frozen_run` (the layer-by-layer forward pass) and
  `engine.logit_paths` of one logit (`--max-order`, default 1), then `engine.path_terms` (max_order 1);
- `eager`: `cw.from_hf(dir)` (the whole model in memory, in the checkpoint's bfloat16), the same calls.

and reports, per process, the peak resident set (VmHWM: includes the checkpoint's mapped file pages
the lazy run touched, which the kernel can drop at any time) and the peak anonymous memory (RssAnon,
sampled every 5 ms: what the process itself allocated; once after the one-logit expansion the paths
view needs, once after `path_terms`), minus the same numbers after `import circwidgets` (the
baseline), and the wall times.

    python benchmarks/bench_streamed_paths.py                      # d_model 1024, 8 layers, 32k vocabulary
    python benchmarks/bench_streamed_paths.py --layers 4 --d-model 512 --vocab 8000   # quick
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, threading, time, warnings
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(int(sys.argv[3]))
import circwidgets as cw
from circwidgets import engine

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024  # MiB
peak = {"anon": 0.0}
stop = False
def sample():
    while not stop:
        peak["anon"] = max(peak["anon"], status("RssAnon:"))
        time.sleep(0.005)
base_anon, base_hwm = status("RssAnon:"), status("VmHWM:")
threading.Thread(target=sample, daemon=True).start()
t0 = time.perf_counter()
mode, path, toks = sys.argv[1], sys.argv[2], torch.arange(1, 33) * 7
model = cw.from_hf(path, lazy=True) if mode == "lazy" else cw.from_hf(path)
run = engine.frozen_run(model, toks)
lp = engine.logit_paths(run, 31, 5, max_order=int(sys.argv[4]))
view_anon, view_wall = peak["anon"], time.perf_counter() - t0  # what the paths view needs
terms = engine.path_terms(model, toks, max_order=1)
err = abs(lp.total - lp.model_logit)
total_err = float((terms.total() - terms.model_logits).abs().max())
wall = time.perf_counter() - t0
stop = True
time.sleep(0.02)
print(json.dumps({"mode": mode, "peak_anon_mib": peak["anon"] - base_anon, "view_anon_mib": view_anon - base_anon,
                  "view_wall_s": view_wall, "peak_rss_mib": status("VmHWM:") - base_hwm,
                  "wall_s": wall, "logit": lp.model_logit, "sum_minus_logit": err, "terms": len(lp.values),
                  "path_terms_total_err": total_err}))
"""


def write_checkpoint(path: Path, layers: int, d_model: int, vocab: int) -> None:
    import torch
    import transformers

    cfg = transformers.LlamaConfig(hidden_size=d_model, intermediate_size=int(2.75 * d_model), num_hidden_layers=layers,
                                   num_attention_heads=d_model // 64, num_key_value_heads=max(1, d_model // 256),
                                   vocab_size=vocab, max_position_embeddings=256, tie_word_embeddings=False,
                                   attn_implementation="eager")
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(path, max_shard_size="200MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--d-model", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-order", type=int, default=1,
                    help="heads per path of the one-logit expansion (the view's default above 64 heads: 1; with 2 "
                         "the terms themselves, one per pair of heads in different layers and per source "
                         "written below the earlier one (~590,000 at 24 x 16 heads), dominate both modes)")
    ap.add_argument("--dir", type=Path, default=None, help="checkpoint directory (written if absent)")
    a = ap.parse_args()
    path = a.dir or Path(tempfile.gettempdir()) / f"cw-bench-paths-{a.layers}x{a.d_model}x{a.vocab}"
    if not (path / "config.json").is_file():
        t0 = time.perf_counter()
        write_checkpoint(path, a.layers, a.d_model, a.vocab)
        print(f"wrote {path} in {time.perf_counter() - t0:.0f} s", flush=True)
    size = sum(f.stat().st_size for f in path.glob("*.safetensors")) / 2**20
    print(f"checkpoint: {a.layers} layers, d_model {a.d_model}, vocabulary {a.vocab}, {size:.0f} MiB (bfloat16)")
    rows = []
    for mode in ("lazy", "eager"):
        out = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(a.threads), str(a.max_order)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| mode | one logit (view): peak anonymous MiB, s | + path_terms: peak anonymous MiB | "
          "peak RSS MiB (incl. mapped file pages) | total s | one logit: sum of terms - logit |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['view_anon_mib']:.0f}, {r['view_wall_s']:.1f} | {r['peak_anon_mib']:.0f} | "
              f"{r['peak_rss_mib']:.0f} | {r['wall_s']:.1f} | {r['sum_minus_logit']:.1e} |")


if __name__ == "__main__":
    main()
