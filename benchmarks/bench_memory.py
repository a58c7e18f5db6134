"""Peak memory and time to first paint of every view and engine entry point on a GPT-2-small-shaped
model (random weights: 12 layers x 12 heads, d_model 768, d_vocab 50,257, MLPs, LayerNorm, biases).

    python benchmarks/bench_memory.py [--tokens 1024] [--threads 1] [--cases paths,explore,...]

Each case runs in a fresh Python process: import circwidgets and its views (once per kernel, not timed
with the view), build the model (its resident size is the "model" column), then construct the view (or
call the engine function) once. "first paint" is the kernel-side construction time of the view (what the
page waits for before it can draw); "+ deferred" the time of `complete()` after it: what a view leaves to
be computed when the page first shows it (the explorer's other panels, the head grid's behaviour scores,
a skip-trigram scan), which the page shows as "computing…" meanwhile. "peak" is the process's peak
resident set size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) over the whole run (deferred work
included), model included.
Targets (issue 14): every view < 2.5 GB peak and < 5 s to first paint at 1,024 tokens. Not a timed
test: a table is printed (and written as JSON with --json PATH). Numbers on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASE = r"""
import json, resource, sys, time, warnings
import torch
torch.set_num_threads({threads})
warnings.simplefilter("ignore")
t_import = time.perf_counter()
import circwidgets as cw
import circwidgets.engine as E
import circwidgets.widgets  # noqa: F401  (once per kernel: not part of a view's first paint)
import_s = time.perf_counter() - t_import
from circwidgets.model import ModelConfig, Transformer

def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

cfg = ModelConfig(n_layers=12, d_model=768, n_heads=12, d_head=64, d_vocab=50257, n_ctx=1024, attn_only=False,
                  normalization="LN", biases=True, act_fn="gelu_new", name="gpt2-small-shaped")
with torch.no_grad():
    model = Transformer(cfg, seed=0).eval()
from circwidgets.model.testing import varied_repeat_tokens
toks = (varied_repeat_tokens({tokens}, cfg.d_vocab, seed=0) if {text!r} == "repeats" else
        torch.randint(0, cfg.d_vocab, ({tokens},), generator=torch.Generator().manual_seed(0)))
model_mb = rss_mb()
case = {case!r}
t0 = time.perf_counter()
if case == "attention":
    w = cw.attention(model, toks)
elif case == "eigenvalues":
    w = cw.eigenvalues(model)
elif case == "skip_trigrams":
    w = cw.skip_trigrams(model)
elif case == "composition":
    w = cw.composition(model, toks)
elif case == "ablation":
    w = cw.ablation(model, toks)
elif case == "paths":
    w = cw.paths(model, toks)
elif case == "explore":
    w = cw.explore(model, toks)
elif case == "engine.attention_patterns":
    w = E.attention_patterns(model, toks)
elif case == "engine.composition_scores":
    w = E.composition_scores(model, "k")
elif case == "engine.eigen_positivity":
    w = E.eigen_positivity(model, "ov")
elif case == "engine.skip_trigrams":
    w = E.skip_trigrams(model, 0, 0)
elif case == "engine.all_head_scores":
    w = E.all_head_scores(model)
elif case == "engine.ablate_heads":
    w = E.ablate_heads(model, toks[None], [(0, 0)])
elif case == "engine.text_run":
    w = E.text_run(model, toks)
elif case == "model.forward":  # the floor: one plain forward pass with the unembedding, nothing kept
    with torch.no_grad():
        w = model(toks[None])
elif case == "engine.logit_paths":
    from circwidgets.engine.paths import frozen_run, logit_paths
    w = logit_paths(frozen_run(model, toks[None]), {tokens} - 1, 0, max_order=1)
else:
    raise SystemExit(f"unknown case {{case}}")
first = time.perf_counter() - t0
first_mb = rss_mb()
# what the view deferred until the page shows it (panels, scores, a skip-trigram scan), computed now
t1 = time.perf_counter()
if hasattr(w, "complete"):
    w.complete()
complete = time.perf_counter() - t1
err = getattr(w, "error", "") or ""
if hasattr(w, "panels"):
    err = "; ".join(p.error for p in w.panels.values() if p.error)
print(json.dumps({{"case": case, "model_mb": model_mb, "first_mb": first_mb, "peak_mb": rss_mb(), "first_s": first,
                  "complete_s": complete, "import_s": import_s, "error": err[:200]}}))
"""

VIEWS = ["attention", "eigenvalues", "skip_trigrams", "composition", "ablation", "paths", "explore"]
ENGINE = ["model.forward", "engine.text_run", "engine.attention_patterns", "engine.composition_scores",
          "engine.eigen_positivity", "engine.skip_trigrams", "engine.all_head_scores", "engine.ablate_heads",
          "engine.logit_paths"]


def run_case(case: str, tokens: int, threads: int, timeout: float, text: str = "random") -> dict:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    code = CASE.format(case=case, tokens=tokens, threads=threads, text=text)
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"case": case, "error": f"timed out after {timeout:.0f} s"}
    if out.returncode != 0:
        return {"case": case, "error": f"exit {out.returncode}: {out.stderr.strip().splitlines()[-1:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--cases", default=",".join(VIEWS + ENGINE))
    ap.add_argument("--json", default="")
    ap.add_argument("--text", choices=("random", "repeats"), default="random",
                    help="random token ids (few repeats: the explorer's opening head then comes from the "
                         "repeat-length sweep) or random ids with copied stretches at many distances (like text)")
    args = ap.parse_args()
    rows = []
    print(f"GPT-2-small shape, {args.tokens} tokens ({args.text}), {args.threads} thread(s); peak RSS incl. the model")
    print(f"{'case':28s} {'model MB':>9s} {'peak MB':>9s} {'first paint s':>14s} {'+ deferred s':>13s}  note")
    for case in args.cases.split(","):
        r = run_case(case, args.tokens, args.threads, args.timeout, args.text)
        rows.append(r)
        ok = "peak_mb" in r
        note = r.get("error", "")
        if ok and not case.startswith(("engine.", "model.")) and (r["peak_mb"] >= 2500 or r["first_s"] >= 5):
            note = ("OVER TARGET " + note).strip()
        print(f"{case:28s} {r.get('model_mb', float('nan')):9.0f} {r.get('peak_mb', float('nan')):9.0f} "
              f"{r.get('first_s', float('nan')):14.2f} {r.get('complete_s', float('nan')):13.2f}  {note}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
