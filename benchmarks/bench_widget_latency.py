"""Click-to-redraw latency of the widgets in a real browser (JupyterLab + headless Chromium).

    python benchmarks/bench_widget_latency.py [--clicks 8] [--skip-big]

For each model, a notebook shows AttentionPatterns (and Eigenvalues); the script clicks heads in the
page and measures, in the page, the time from the click to the frame after the redraw (JS click ->
comm -> kernel asks the engine / cache -> bytes back -> canvas redraw -> next animation frame).
"first" = a head not clicked before (the kernel computes + sends, unless the page prefetched it),
"again" = a head clicked before (now drawn from the page's cache). A second table measures the page
cache on its own: a new head (page cache emptied), a prefetched neighbour, a cached head.
Kernel-only time (the engine call + encoding) is measured in the notebook itself.
Models: the first shipped zoo model found (`--shipped`, default toy-2l-code, toy-2l-induction,
toy-1l-code, toy-1l-trigrams; its own n_ctx caps the tokens), otherwise (or with `--random-small`) a
random model larger than toy-2l-code (2 layers x 8 heads, d_model 256, d_vocab 4,096) at
1,024 tokens, and a GPT-2-small-sized random model
(12 x 12 heads, d_model 768, d_vocab 50,257, LN + MLP) at 1,024 tokens. Targets: < 50 ms (small),
< 200 ms (GPT-2 small). Not a timed test: a table printed at the end (and saved to
artifacts/browser/latency.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "browser"))
import labharness as lh  # noqa: E402

SETUP = r'''import json, time, torch
import circwidgets as cw
from circwidgets.model.testing import random_model
def small_model():
    for name in SHIPPED:  # the first shipped model that exists on this machine
        try:
            return cw.load(name), f"{name} (shipped)"
        except Exception:
            pass
    return random_model(n_layers=2, n_heads=8, d_model=256, d_head=32, d_vocab=4096, n_ctx=1024,
                        positional="shortformer", dtype=torch.float32, seed=0), "random 2L x 8H, d 256, V 4096"
def kernel_ms(w, heads):  # empties the widget cache: "first" clicks afterwards are uncached
    """engine call + encoding for heads not cached yet (what a first click costs in the kernel)"""
    out = []
    for l, h in heads:
        w._results.clear(); t = time.perf_counter(); w._payload(l, h); out.append(1e3 * (time.perf_counter() - t))
    return out
'''
SMALL = r'''if "ws" not in globals():  # a second page reuses the kernel: show the same widgets again
    small, small_name = small_model()
    g = torch.Generator().manual_seed(1)
    n_small = min(N_SMALL, small.cfg.n_ctx)
    ws = cw.attention(small, torch.randint(0, small.cfg.d_vocab, (n_small,), generator=g))
ws'''
SMALL_EIG = "es = globals().get('es') or cw.eigenvalues(small)\nes"
BIG = r'''if "wb" not in globals():
    t0 = time.perf_counter()
    big = random_model(n_layers=12, n_heads=12, d_model=768, d_head=64, d_vocab=50257, n_ctx=1024,
                       attn_only=False, d_mlp=3072, normalization="LN", biases=True, dtype=torch.float32, seed=0)
    wb = cw.attention(big, torch.randint(0, 50257, (1024,), generator=torch.Generator().manual_seed(2)))
    print(f"big model + widget ready in {time.perf_counter() - t0:.1f} s")
wb'''
BIG_EIG = "eb = globals().get('eb') or cw.eigenvalues(big)\neb"
REPORT = r'''L, H = small.cfg.n_layers, small.cfg.n_heads
hs = [(1 % L, 3 % H), (0, 5 % H), (1 % L, 6 % H)]
rep = {"small_name": small_name, "n_small": n_small, "small_shape": [L, H],
       "kernel_small": kernel_ms(ws, hs), "kernel_small_eig": kernel_ms(es, hs[:2])}
if "wb" in globals():
    rep["kernel_big"] = kernel_ms(wb, [(5, 3), (9, 7), (11, 1)])
    rep["kernel_big_eig"] = kernel_ms(eb, [(5, 3), (9, 7)])
print("REPORT " + json.dumps(rep))'''

CLICK_JS = """async ([kind, idx, l, h]) => {
  const root = document.querySelectorAll(`.cw-root.cw-${kind}`)[idx];
  const cell = root.querySelector(`[data-layer="${l}"][data-head="${h}"]`);
  const n0 = Number(root.dataset.drawCount);
  let src = "";  // where the first redraw's data came from (attention view: "cache" / "kernel")
  const t0 = performance.now();
  const done = new Promise((res) => {
    const mo = new MutationObserver(() => {
      const d = root.dataset;
      if (Number(d.drawCount) > n0 && d.shownLayer === String(l) && d.shownHead === String(h)) {
        src = d.drawSource || "";
        mo.disconnect(); res();
      }
    });
    mo.observe(root, { attributes: true });
  });
  cell.click();
  await done;
  await new Promise((r) => requestAnimationFrame(() => r()));
  const t1 = performance.now();
  // data arrival = start of the redraw (drawnAt - drawMs)
  return [t1 - t0, Number(root.dataset.drawMs), Number(root.dataset.drawnAt) - Number(root.dataset.drawMs) - t0, src];
}"""


def measure(page, kind: str, idx: int, heads: list[tuple[int, int]], rounds: int = 3) -> dict:
    """Click each head once (not cached in the kernel yet), then `rounds` more times (cached)."""
    first = [page.evaluate(CLICK_JS, [kind, idx, lay, h]) for lay, h in heads]
    again = [page.evaluate(CLICK_JS, [kind, idx, lay, h]) for _ in range(rounds) for lay, h in heads]
    return {"first": [x[0] for x in first], "again": [x[0] for x in again], "draw": [x[1] for x in first + again],
            "arrive": [x[2] for x in first + again]}


SETTLE_JS = """async ([kind, idx, want, ms]) => {  // wait until the page cache holds `want` entries
  const root = document.querySelectorAll(`.cw-root.cw-${kind}`)[idx];
  const t0 = performance.now();
  const nap = () => new Promise((r) => setTimeout(r, 20));
  while (root.cwHeadCache.size < want && performance.now() - t0 < ms) await nap();
  while (root.dataset.drawSource !== "kernel" && performance.now() - t0 < ms) await nap();
  return root.cwHeadCache.size;
}"""


def measure_page_cache(page, idx: int, heads: list[tuple[int, int]], n_layers: int, n_heads: int) -> dict:
    """Attention view with the page-side cache: per head X, "new" = X with the page cache emptied (the
    kernel may hold it), "prefetched" = a grid neighbour of X after X's neighbours arrived in the
    background, "cached" = X again. Each value: click -> frame after the redraw (ms), and where the
    drawn data came from ("cache" / "kernel")."""
    out: dict = {"new": [], "prefetched": [], "cached": [], "sources": {"new": [], "prefetched": [], "cached": []}}

    def click(kind_of, lay, h):
        r = page.evaluate(CLICK_JS, ["attention", idx, lay, h])
        out[kind_of].append(r[0])
        out["sources"][kind_of].append(r[3])

    for lay, h in heads:
        nb = [(a, b) for a, b in ((lay, h + 1), (lay, h - 1), (lay + 1, h), (lay - 1, h))
              if 0 <= a < n_layers and 0 <= b < n_heads]
        page.evaluate("([i]) => { const r = document.querySelectorAll('.cw-root.cw-attention')[i];"
                      " r.cwHeadCache.clear(); r.cwPatternImages.clear(); }", [idx])  # payloads and pixels
        click("new", lay, h)
        page.evaluate(SETTLE_JS, ["attention", idx, 1 + len(nb), 5000])
        click("prefetched", *nb[0])
        page.evaluate(SETTLE_JS, ["attention", idx, 0, 5000])
        click("cached", lay, h)
        page.evaluate(SETTLE_JS, ["attention", idx, 0, 5000])
    return out


page_cache: dict = {}  # name -> measure_page_cache(...)


def run_page(p, lab, cells: list[str], args, server: str, shots: bool) -> dict:
    """Open the notebook in a fresh page (a new kernel websocket), run it, click, measure."""
    lh.write_notebook(lab.root / "bench.ipynb", cells)  # no outputs from an autosave of the last page
    browser = lh.launch_browser(p)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    results = {}
    try:
        t0 = time.monotonic()
        lh.open_and_run(page, lab, "bench.ipynb")
        out = lh.cell(page, len(cells) - 1).locator(".jp-OutputArea-output")
        out.filter(has_text="REPORT").wait_for(timeout=900_000)
        rep = json.loads(out.inner_text().split("REPORT ", 1)[1].strip())
        print(f"[{server}] notebook ran in {time.monotonic() - t0:.0f} s")
        L, H = rep["small_shape"]
        small_heads = [(lay, h) for lay in range(L) for h in range(H)][1:args.clicks + 1]
        results[f"small ({rep['small_name']}), {rep['n_small']} tok | attention"] = (
            measure(page, "attention", 0, small_heads), rep["kernel_small"])
        page_cache[f"{server:8s}| small ({rep['small_name']}), {rep['n_small']} tok"] = measure_page_cache(
            page, 0, small_heads, L, H)
        results[f"small ({rep['small_name']}) | eigenvalues"] = (
            measure(page, "eigen", 0, small_heads), rep["kernel_small_eig"])
        if not args.skip_big:
            big_heads = [(lay, (5 * lay + 3) % 12) for lay in range(12)][1:args.clicks + 1]
            results["GPT-2-small-sized random, 1024 tok | attention"] = (
                measure(page, "attention", 1, big_heads), rep["kernel_big"])
            page_cache[f"{server:8s}| GPT-2-small-sized random, 1024 tok"] = measure_page_cache(
                page, 1, big_heads, 12, 12)
            results["GPT-2-small-sized random | eigenvalues"] = (
                measure(page, "eigen", 1, big_heads), rep["kernel_big_eig"])
        if shots:
            lh.ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(lh.ARTIFACTS / "bench_latency.png"))
            last = page.locator(".cw-root.cw-attention").last  # 1,024 tokens on a log colour scale
            last.locator("select.cw-scale").select_option("log")
            last.scroll_into_view_if_needed()
            last.screenshot(path=str(lh.ARTIFACTS / "attention_1024_log.png"))
    finally:
        browser.close()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clicks", type=int, default=8, help="distinct heads clicked per widget")
    ap.add_argument("--skip-big", action="store_true", help="only the small model")
    ap.add_argument("--tokens", type=int, default=1024, help="tokens shown by the small model's view")
    ap.add_argument("--shipped", default="toy-2l-code,toy-2l-induction,toy-1l-code,toy-1l-trigrams",
                    help="zoo models to try for the small view, in order (first one found is used)")
    ap.add_argument("--random-small", action="store_true", help="use the random toy-2l-code-shaped model")
    ap.add_argument("--server", choices=["default", "nodelay", "both"], default="both",
                    help="jupyter_server as shipped (Nagle on), with TCP_NODELAY, or both on one kernel")
    args = ap.parse_args()
    if not lh.CHROMIUM:
        sys.exit("no Chromium found: install it (make chromium)")
    from playwright.sync_api import sync_playwright

    big = [] if args.skip_big else [BIG, BIG_EIG]
    shipped = [] if args.random_small else args.shipped.split(",")
    cells = [SETUP + f"\nN_SMALL = {args.tokens}\nSHIPPED = {shipped!r}\n", SMALL, SMALL_EIG, *big, REPORT]
    tmp = Path(tempfile.mkdtemp(prefix="cw-bench-"))
    (tmp / "root").mkdir()
    (tmp / "home").mkdir()
    lh.write_notebook(tmp / "root" / "bench.ipynb", cells)
    lab = lh.Lab(tmp / "root", tmp / "home", nodelay_switch=True).start()
    servers = ["default", "nodelay"] if args.server == "both" else [args.server]
    results = {}
    try:
        with sync_playwright() as p:
            for i, server in enumerate(servers):
                lab.set_nodelay(server == "nodelay")
                for name, val in run_page(p, lab, cells, args, server, shots=i == 0).items():
                    results[f"{server:8s}| {name}"] = val
    finally:
        lab.stop()

    def med(x):
        return statistics.median(x) if x else float("nan")

    print("\nclick-to-redraw latency in JupyterLab + headless Chromium (ms, median; max in brackets)")
    print("arrive = click -> data in the page; draw = JS redraw; kernel = engine + encoding of one new head")
    cols = f"{'first click':>16s} {'cached click':>16s} {'arrive':>7s} {'draw':>6s} {'kernel':>7s}"
    print(f"{'server  | view':66s} {cols}")
    for name, (m, kern) in results.items():
        print(f"{name:66s} {med(m['first']):8.1f} [{max(m['first']):5.0f}] {med(m['again']):8.1f} "
              f"[{max(m['again']):5.0f}] {med(m['arrive']):7.1f} {med(m['draw']):6.1f} {med(kern):7.1f}")
    print("\nattention view with the page-side cache: click -> frame after the redraw (ms, median; max)")
    print(f"{'server  | model':50s} {'new head':>16s} {'prefetched':>16s} {'cached':>16s}  from cache (n/pref/c)")
    for name, m in page_cache.items():
        src = "/".join(f"{sum(s == 'cache' for s in m['sources'][k])}c{len(m['sources'][k])}"
                       for k in ("new", "prefetched", "cached"))
        print(f"{name:50s} " + " ".join(f"{med(m[k]):8.1f} [{max(m[k]):5.0f}]" for k in ("new", "prefetched", "cached"))
              + f"  {src}")
    lh.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (lh.ARTIFACTS / "latency_page_cache.json").write_text(json.dumps(page_cache, indent=1))
    (lh.ARTIFACTS / "latency.json").write_text(json.dumps({k: {"browser": v[0], "kernel_ms": v[1]}
                                                           for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
