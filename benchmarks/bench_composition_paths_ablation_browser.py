"""Click-to-redraw latency of the Composition / PathExpansion / Ablation views in a real browser
(JupyterLab + headless Chromium).

    python benchmarks/bench_composition_paths_ablation_browser.py [--clicks 6]

One notebook: Composition, PathExpansion and Ablation of a random model of the shipped shape
(2 layers x 8 heads, d_model 256, d_vocab 4,096) on 128 tokens. In the page, the time from the click to
the animation frame after the redraw that shows the clicked state (click -> comm -> kernel asks the
engine -> data back -> redraw): a composition cell (pair details), a path-term bar (head pattern), an
Ablation head toggle (a forward pass). "first" = not seen before, "again" = the same click repeated
(kernel caches). Not a timed test; the table is printed and saved to
artifacts/browser/composition_paths_ablation_browser_latency.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "browser"))
import labharness as lh  # noqa: E402

CELLS = [
    """import torch, circwidgets as cw
from circwidgets.model.testing import random_model
m = random_model(n_layers=2, n_heads=8, d_model=256, d_head=32, d_vocab=4096, n_ctx=1024, positional="shortformer",
                 dtype=torch.float32, seed=0)
toks = torch.randint(0, 4096, (128,), generator=torch.Generator().manual_seed(1))""",
    "wc = cw.composition(m, toks)\nwc",
    "wp = cw.paths(m, toks)\nwp",
    "wa = cw.ablation(m, toks)\nwa",
]

CLICK_JS = """async ([kind, how, a, b]) => {
  const root = document.querySelector(`.cw-root.cw-${kind}`);
  const n0 = Number(root.dataset.drawCount);
  let target, ok;
  if (how === "cell") {  // composition heatmap: row a, column b
    const c = root.querySelector("canvas.cw-comp-map"), r = c.getBoundingClientRect(), d = c.dataset;
    const x = r.left + Number(d.ml) + (b + 0.5) * Number(d.cell), y = r.top + Number(d.mt) + (a + 0.5) * Number(d.cell);
    target = () => c.dispatchEvent(new MouseEvent("click", { clientX: x, clientY: y, bubbles: true }));
    const pair = `0,${a},1,${b}`;
    ok = () => root.dataset.pair === pair;
  } else if (how === "bar") {
    const el = root.querySelector(`.cw-bar-row[data-layer="${a}"][data-head="${b}"]`);
    target = () => el.click();
    ok = () => root.dataset.shownLayer === String(a) && root.dataset.shownHead === String(b);
  } else {  // ablation toggle
    const el = root.querySelector(`.cw-cell[data-layer="${a}"][data-head="${b}"]`);
    const want = el.dataset.off === "1" ? "0" : "1";
    target = () => el.click();
    ok = () => el.dataset.off === want;
  }
  const t0 = performance.now();
  const done = new Promise((res) => {
    const mo = new MutationObserver(() => {
      if (Number(root.dataset.drawCount) > n0 && ok()) { mo.disconnect(); res(); }
    });
    mo.observe(root, { attributes: true, subtree: true });
  });
  target();
  await done;
  await new Promise((r) => requestAnimationFrame(() => r()));
  return performance.now() - t0;
}"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clicks", type=int, default=6)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp())
    (tmp / "root").mkdir()
    lh.write_notebook(tmp / "root" / "bench.ipynb", CELLS)
    lab = lh.Lab(tmp / "root", tmp / "home").start()
    res = {}
    try:
        with sync_playwright() as p:
            b = lh.launch_browser(p)
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            lh.open_and_run(page, lab, "bench.ipynb")
            page.wait_for_selector(".cw-root.cw-ablation[data-draw-count]", timeout=300_000)
            page.wait_for_function(lh.KERNEL_IDLE, timeout=300_000)
            n = args.clicks
            cells = [(i % 8, (3 * i + 1) % 8) for i in range(n)]
            bars = [(i // 8 % 2, i % 8) for i in range(1, n + 1)]
            for name, kind, how, targets in (("composition cell", "composition", "cell", cells),
                                             ("path bar", "paths", "bar", bars),
                                             ("ablation toggle", "ablation", "toggle", bars)):
                for lab_ in ("first", "again"):
                    t = []
                    for a, c in targets:
                        if how == "bar":
                            page.locator(f'.cw-paths .cw-bar-row[data-layer="{a}"][data-head="{c}"]').first \
                                .scroll_into_view_if_needed()
                        t.append(page.evaluate(CLICK_JS, [kind, how, a, c]))
                        if how == "toggle":  # toggle back: the same state again next round
                            t[-1] = (t[-1] + page.evaluate(CLICK_JS, [kind, how, a, c])) / 2
                    res[f"{name} ({lab_})"] = t
            b.close()
    finally:
        lab.stop()
    print(f"{'interaction':28s} {'median ms':>10s} {'max ms':>8s}")
    for k, v in res.items():
        print(f"{k:28s} {statistics.median(v):10.1f} {max(v):8.1f}")
    out = lh.ARTIFACTS / "composition_paths_ablation_browser_latency.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
