"""A new user's first look, in real JupyterLab + headless Chromium (issue 15):

- every view renders and answers a click (the kernel follows);
- at 800 px and 1,600 px output widths no view overflows its output area (scrollWidth vs clientWidth),
  and the 128-token pattern is drawn readable (whole pixels per token, not 1);
- a selection made from Python (`select()`) moves the paths view's bar outline and the composition
  details to the new head (no stale outline / pair);
- a click on a head the page already received (or prefetched) redraws from the page's cache, and the
  kernel is still told the selection.
Screenshots per width under artifacts/browser/.
"""

from __future__ import annotations

import re

import labharness as lh
import pytest

pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.timeout(900)

TEXT = "def f(self): return self.x"
NOTEBOOK_CELLS = [
    "import torch\nimport circwidgets as cw\ntorch.set_num_threads(1)\nmodel = cw.load('toy-2l-code')\n"
    "r = torch.randint(1, model.cfg.d_vocab, (64,), generator=torch.Generator().manual_seed(0))\n"
    "toks = torch.cat([r, r])  # 128 tokens, the second half a repeat",
    "wa = cw.attention(model, toks)\nwa",
    "we = cw.eigenvalues(model)\nwe",
    "ws = cw.skip_trigrams(model, layer=0, head=1)\nws",
    f"wc = cw.composition(model, {TEXT!r})\nwc",
    f"wp = cw.paths(model, {TEXT!r})\nwp",
    f"wb = cw.ablation(model, {TEXT!r})\nwb",
    f"ex = cw.explore(model, {TEXT!r})\nex",
    "wp.select(1, 2)\nwc.select(1, 3)\nprint('CW_SELECT_DONE')",
    "print(f'KERNEL wa={wa.layer},{wa.head} we={we.layer},{we.head} ws={ws.layer},{ws.head} wb={wb.layer},{wb.head}')",
]
CHECK_CELL = len(NOTEBOOK_CELLS) - 1
VIEWS = ("attention", "eigen", "skip", "composition", "paths", "ablation")
OVERFLOW_JS = """() => {
  const bad = [];
  for (const el of document.querySelectorAll('.jp-OutputArea-output, .cw-root')) {
    const name = el.className.slice(0, 60);
    if (el.scrollWidth > el.clientWidth + 1) bad.push(`${name}: ${el.scrollWidth} > ${el.clientWidth}`);
  }
  return bad;
}"""


def set_output_width(page, width: int) -> None:
    page.set_viewport_size({"width": width + 520, "height": 1100})
    page.evaluate("""(w) => {
      let s = document.getElementById('cw-width');
      if (!s) { s = document.createElement('style'); s.id = 'cw-width'; document.head.append(s); }
      s.textContent = `.jp-Cell .jp-OutputArea-output { width: ${w}px !important; max-width: ${w}px !important;
        flex: none !important; }`;
    }""", width)


def kernel_says(page, text: str) -> str:
    return lh.rerun_and_read(page, CHECK_CELL, text)


def test_every_view_renders(page):
    for kind in VIEWS:
        expect(page.locator(f".cw-root.cw-{kind}").first).to_be_visible(timeout=180_000)
    expect(page.locator(".cw-explorer .cw-root")).to_have_count(6, timeout=180_000)
    expect(page.locator(".jp-OutputArea-output").filter(has_text="CW_SELECT_DONE")).to_have_count(1, timeout=180_000)
    assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']").count() == 0


def test_python_select_moves_paths_outline_and_composition_pair(page):
    paths = page.locator(".cw-root.cw-paths").first
    expect(paths).to_have_attribute("data-shown-layer", "1", timeout=60_000)
    expect(paths).to_have_attribute("data-shown-head", "2")
    sel = paths.locator(".cw-bar-row.cw-selected")
    expect(sel.first).to_be_visible(timeout=30_000)
    for i in range(sel.count()):
        assert (sel.nth(i).get_attribute("data-layer"), sel.nth(i).get_attribute("data-head")) == ("1", "2")
    comp = page.locator(".cw-root.cw-composition").first
    expect(comp).to_have_attribute("data-shown-head", "3", timeout=60_000)
    pair = comp.get_attribute("data-pair")
    assert pair and pair.split(",")[2:] == ["1", "3"], pair


@pytest.mark.parametrize("width", [800, 1600])
def test_no_view_overflows_the_output_area(page, width):
    set_output_width(page, width)
    page.wait_for_timeout(600)  # ResizeObserver redraws in the next frame
    att = page.locator(".cw-root.cw-attention").first
    att.locator('[data-layer="0"][data-head="1"]').click()
    expect(att).to_have_attribute("data-shown-head", "1", timeout=60_000)
    page.wait_for_timeout(300)
    bad = page.evaluate(OVERFLOW_JS)
    assert not bad, bad
    side = float(att.locator("canvas.cw-pattern").get_attribute("data-side"))
    box = att.bounding_box()
    assert box["width"] <= width + 1
    assert side >= (480 if width == 1600 else 256), side  # 128 tokens: >= 2-4 px per token
    page.screenshot(path=str(lh.ARTIFACTS / f"newcomer_{width}px.png"), full_page=True)


def test_zoom_draws_a_long_pattern_larger_inside_a_scroll_box(page):
    set_output_width(page, 800)
    att = page.locator(".cw-root.cw-attention").first
    side1 = float(att.locator("canvas.cw-pattern").get_attribute("data-side"))
    att.locator("select.cw-zoom").select_option("4")
    expect(att).to_have_attribute("data-zoom", "4", timeout=10_000)
    side4 = float(att.locator("canvas.cw-pattern").get_attribute("data-side"))
    assert side4 >= 2 * side1
    scroll = att.locator(".cw-pattern-scroll")
    dims = scroll.evaluate("(e) => [e.scrollWidth, e.clientWidth]")
    assert dims[0] > dims[1]  # pans inside its box ...
    assert not page.evaluate(OVERFLOW_JS)  # ... and the output area does not overflow
    att.locator("select.cw-zoom").select_option("1")


def test_every_view_answers_a_click(page):
    set_output_width(page, 1600)
    for kind, (layer, head) in [("eigen", (1, 1)), ("skip", (1, 2)), ("ablation", (0, 3))]:
        root = page.locator(f".cw-root.cw-{kind}").first
        root.locator(f'.cw-grid [data-layer="{layer}"][data-head="{head}"]').click()
        if kind != "ablation":  # an ablation click toggles the head off; its selection is asserted by the kernel
            expect(root).to_have_attribute("data-shown-layer", str(layer), timeout=60_000)
            expect(root).to_have_attribute("data-shown-head", str(head), timeout=60_000)
    kernel_says(page, "we=1,1 ws=1,2 wb=0,3")


CLICK_NOW = """([l, h, kind]) => {
  const root = document.querySelector(`.cw-root.cw-${kind || 'attention'}`);
  root.querySelector(`.cw-grid [data-layer="${l}"][data-head="${h}"]`).click();
  const d = root.dataset;  // read in the click's own task: before any kernel reply can arrive
  return [d.drawSource, d.shownLayer, d.shownHead];
}"""


def test_cached_and_prefetched_heads_redraw_from_the_page(page):
    att = page.locator(".cw-root.cw-attention").first
    assert page.evaluate(CLICK_NOW, [1, 0])[0] in ("kernel", "cache")
    expect(att).to_have_attribute("data-shown-layer", "1", timeout=60_000)
    expect(att).to_have_attribute("data-shown-head", "0", timeout=60_000)
    expect(att).to_have_attribute("data-draw-source", "kernel", timeout=60_000)
    page.wait_for_timeout(1500)  # the neighbours' payloads arrive in the background
    assert page.evaluate(CLICK_NOW, [1, 1]) == ["cache", "1", "1"]  # a neighbour of L1H0: prefetched
    expect(att).to_have_attribute("data-draw-source", "kernel", timeout=60_000)  # then the kernel's answer
    assert 2 <= int(att.get_attribute("data-cache-entries")) <= 64
    kernel_says(page, "wa=1,1")  # the kernel was told the selection
    assert page.evaluate(CLICK_NOW, [1, 0]) == ["cache", "1", "0"]  # seen before: cached
    kernel_says(page, "wa=1,0")


def test_eigenvalue_and_skip_trigram_clicks_redraw_from_the_page(page):
    """The page cache + prefetch of the attention view, in the other views whose click fetches per-head data."""
    for kind in ("eigen", "skip"):
        root = page.locator(f".cw-root.cw-{kind}").first
        page.evaluate(CLICK_NOW, [0, 0, kind])
        expect(root).to_have_attribute("data-shown-layer", "0", timeout=60_000)
        expect(root).to_have_attribute("data-shown-head", "0", timeout=60_000)
        expect(root).to_have_attribute("data-draw-source", "kernel", timeout=60_000)
        page.wait_for_timeout(1500)  # the neighbours' payloads arrive in the background
        assert page.evaluate(CLICK_NOW, [0, 1, kind]) == ["cache", "0", "1"], kind  # a prefetched neighbour
        expect(root).to_have_attribute("data-draw-source", "kernel", timeout=60_000)  # then the kernel's answer
        assert int(root.get_attribute("data-cache-entries")) >= 2
        assert page.evaluate(CLICK_NOW, [0, 0, kind]) == ["cache", "0", "0"], kind  # seen before: cached
        expect(root).to_have_attribute("data-draw-source", "kernel", timeout=60_000)
    kernel_says(page, "we=0,0 ws=0,0")  # the kernel was told every selection


def test_views_follow_a_dark_host_without_jupyterlab_variables(page, tmp_path):
    """An offline export (no JupyterLab variables) inside a dark page, as in marimo / VS Code / Colab dark."""
    import circwidgets as cw

    model = cw.load("toy-2l-code")
    path = cw.eigenvalues(model).save_html(tmp_path / "eig.html", max_states=2)
    style = "<style>html, body { background: #121212 !important; color: #e8e8e8 !important; }</style>"
    html = path.read_text(encoding="utf-8").replace("</head>", style + "</head>", 1)
    path.write_text(html, encoding="utf-8")
    ctx = page.context.browser.new_context()
    dark = ctx.new_page()
    try:
        dark.goto(path.as_uri())
        root = dark.locator(".cw-root.cw-eigen")
        expect(root).to_have_attribute("data-draw-count", re.compile(r"\d+"), timeout=30_000)
        expect(root).to_have_class(re.compile(r"\bcw-dark\b"), timeout=10_000)
        bg = root.evaluate("(e) => getComputedStyle(e).backgroundColor")
        assert bg in ("rgb(30, 30, 30)",), bg
        dark.screenshot(path=str(lh.ARTIFACTS / "newcomer_dark_host.png"))
    finally:
        ctx.close()
