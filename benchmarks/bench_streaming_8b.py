"""Streamed weight analyses on a Llama-3-8B-shaped random checkpoint (not a CI test).

    python benchmarks/bench_streaming_8b.py [--dir /work/bench-cache/llama8b] [--threads 2]
        [--layers 32] [--vocab 128256] [--keep]

Writes a random checkpoint of the given shape (default Llama 3 8B: 32 layers x 32 heads, 8 K/V heads,
d_model 4,096, d_head 128, d_mlp 14,336, d_vocab 128,256, untied, bfloat16, one shard per layer plus
embedding shards, `model.safetensors.index.json` + `config.json`: what a Hub download looks like).
Attention and embedding tensors are Gaussian; MLP tensors are present (the checkpoint is valid) but
filled from a small repeated random tile, because no analysis here reads them. Then, on
`cw.from_hf(dir, lazy=True)`, it times: the Gram matrices, OV and QK (offset 0) positivity of every
head, K-composition of every pair of heads, one head's skip-trigram factors and a per-source
skip-trigram query (median of 20, factors cached). Peak RSS (VmHWM: includes the mapped checkpoint
pages the process touched, which the kernel can drop at any time) and the peak anonymous memory
(RssAnon, sampled every 50 ms: what the process itself holds) are reported, with the FLOPs of each
pass divided by this machine's measured float32 GEMM rate (the physical floor). With `--layers` /
`--vocab` smaller than Llama's, the full-shape time is extrapolated by FLOPs (printed as such).
The checkpoint and cache are deleted at the end unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import threading
import time
from pathlib import Path

import torch


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


class AnonPeak:
    """Peak RssAnon, sampled in a thread."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _status("RssAnon"))
            time.sleep(0.05)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def gemm_rate(n: int = 2048, reps: int = 3) -> float:
    """Measured float32 GEMM FLOP/s (square n x n)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


def write_checkpoint(d: Path, L: int, H: int, K: int, D: int, E: int, M: int, V: int, seed: int = 0) -> float:
    """Write the random bfloat16 checkpoint; returns bytes written."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    d.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=0.02):
        out = torch.empty(shape, dtype=torch.bfloat16)
        flat = out.view(-1, shape[-1])
        for s in range(0, flat.shape[0], 4096):  # float32 in chunks: bounded memory
            flat[s:s + 4096] = (torch.randn(min(4096, flat.shape[0] - s), shape[-1], generator=g) * scale)
        return out

    def tile(*shape):  # present, valid, cheap: a random row repeated
        return (torch.randn(1, shape[-1], generator=g) * 0.02).to(torch.bfloat16).expand(*shape).contiguous()

    weight_map, total = {}, 0

    def save(name: str, tensors: dict):
        nonlocal total
        save_file(tensors, d / name, metadata={"format": "pt"})
        total += (d / name).stat().st_size
        weight_map.update({k: name for k in tensors})

    save("model-embed.safetensors", {"model.embed_tokens.weight": randn(V, D), "model.norm.weight":
                                     (1 + 0.1 * torch.randn(D, generator=g)).to(torch.bfloat16)})
    save("model-lm_head.safetensors", {"lm_head.weight": randn(V, D)})
    for l in range(L):
        p = f"model.layers.{l}."
        save(f"model-layer{l:03d}.safetensors", {
            p + "self_attn.q_proj.weight": randn(H * E, D), p + "self_attn.k_proj.weight": randn(K * E, D),
            p + "self_attn.v_proj.weight": randn(K * E, D), p + "self_attn.o_proj.weight": randn(D, H * E),
            p + "mlp.gate_proj.weight": tile(M, D), p + "mlp.up_proj.weight": tile(M, D),
            p + "mlp.down_proj.weight": tile(D, M),
            p + "input_layernorm.weight": (1 + 0.1 * torch.randn(D, generator=g)).to(torch.bfloat16),
            p + "post_attention_layernorm.weight": (1 + 0.1 * torch.randn(D, generator=g)).to(torch.bfloat16),
        })
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                 "weight_map": weight_map}))
    cfg = LlamaConfig(hidden_size=D, intermediate_size=M, num_hidden_layers=L, num_attention_heads=H,
                      num_key_value_heads=K, head_dim=E, vocab_size=V, max_position_embeddings=8192,
                      rope_theta=500000.0, tie_word_embeddings=False, torch_dtype="bfloat16")
    cfg.save_pretrained(d)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="/work/bench-cache/llama8b")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="a small shape, to check the script")
    ap.add_argument("--json", default=None, help="write the table here too")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import circwidgets as cw
    from circwidgets import engine
    from circwidgets.engine import streaming

    H, K, D, E, M = (32, 8, 4096, 128, 14336) if not a.tiny else (8, 2, 256, 32, 512)
    d = Path(a.dir)
    rate = gemm_rate()
    print(f"float32 GEMM rate, {a.threads} threads: {rate / 1e9:.1f} GFLOP/s (load average {os.getloadavg()})")
    rows = []
    t0 = time.perf_counter()
    size = write_checkpoint(d / "ckpt", a.layers, H, K, D, E, M, a.vocab)
    rows.append(("write checkpoint", time.perf_counter() - t0, None, f"{size / 1e9:.1f} GB on disk"))
    with AnonPeak() as anon:
        lazy = cw.from_hf(str(d / "ckpt"), lazy=True, cache_dir=d / "cache")
        fl = streaming.flops_estimate(lazy)

        def timed(name, fn, flops=None):
            t = time.perf_counter()
            out = fn()
            rows.append((name, time.perf_counter() - t, flops, ""))
            print(f"{name}: {rows[-1][1]:.1f} s", flush=True)
            return out

        timed("Gram matrices (W_E^T W_E, W_U W_E)", lazy.grams, fl["grams"])
        timed("OV positivity, all heads", lambda: engine.eigen_positivity(lazy, "ov"), fl["ov_positivity"])
        timed("QK positivity (offset 0), all heads", lambda: engine.eigen_positivity(lazy, "qk", offset=0),
              fl["qk_positivity"])
        timed("K-composition, all pairs", lambda: engine.composition_scores(lazy, "k", offset=0), fl["k_composition"])
        timed("skip-trigram factors, one head", lambda: streaming.skip_trigram_factors(lazy, a.layers - 1, 3),
              4 * a.vocab * D * E * 2)
        ts = []
        for tok in range(20):
            t = time.perf_counter()
            streaming.skip_trigram_query(lazy, a.layers - 1, 3, 1000 + tok)
            ts.append(time.perf_counter() - t)
        rows.append(("per-source skip-trigram query (median of 20)", statistics.median(ts), None, ""))
        cache = lazy.cache_info()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    full = dict(L=32, V=128256)
    scale = {"grams": full["V"] / a.vocab, "ov": full["L"] / a.layers, "qk": full["L"] / a.layers,
             "k": (full["L"] * (full["L"] - 1)) / (a.layers * (a.layers - 1))}
    print(f"\nshape: {a.layers} layers x {H} heads ({K} K/V), d_model {D}, d_head {E}, d_vocab {a.vocab}, bf16; "
          f"{a.threads} threads; GEMM {rate / 1e9:.1f} GFLOP/s")
    print("| pass | wall s | GFLOP | floor s (GFLOP / GEMM rate) | note |\n|---|---|---|---|---|")
    for name, s, flops, note in rows:
        fl_s = f"{flops / 1e9:.0f}" if flops else ""
        floor = f"{flops / rate:.1f}" if flops else ""
        print(f"| {name} | {s:.3f} | {fl_s} | {floor} | {note} |")
    print(f"\npeak RSS (VmHWM, incl. mapped checkpoint pages) {peak / 1e9:.2f} GB; peak anonymous "
          f"{anon.peak / 1e9:.2f} GB; cache {cache['files']} files, {cache['bytes'] / 1e6:.0f} MB in {cache['dir']}")
    if scale["grams"] != 1 or scale["ov"] != 1:
        by = {"Gram": scale["grams"], "OV": scale["ov"], "QK": scale["qk"], "K-comp": scale["k"]}
        timings = {r[0]: r[1] for r in rows}
        est = (timings["Gram matrices (W_E^T W_E, W_U W_E)"] * by["Gram"]
               + timings["OV positivity, all heads"] * by["OV"]
               + timings["QK positivity (offset 0), all heads"] * by["QK"]
               + timings["K-composition, all pairs"] * by["K-comp"])
        print(f"extrapolated to 32 layers x d_vocab 128,256 by FLOPs: {est:.0f} s for Gram + OV + QK + K-comp")
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "peak_rss": peak, "peak_anon": anon.peak,
                                            "gemm_rate": rate, "layers": a.layers, "vocab": a.vocab}))
    if not a.keep:
        shutil.rmtree(d)


if __name__ == "__main__":
    main()
