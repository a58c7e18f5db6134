"""The attention, eigenvalue and skip-trigram views in real JupyterLab + headless Chromium: render, click, hover, keys,
hostile tokens, kernel state. One server, one notebook, one page for the module; every test sets the state it
needs (from the kernel or by clicks) and waits for the view's digest of what it painted (`data-drawn`,
js/src/lib/digest.js), so each test passes alone and in any order. After every click the painted numbers are
compared with the kernel's numbers for the newly selected head (labharness.check_*).
Screenshots and the console log: artifacts/browser/."""

from __future__ import annotations

import re

import labharness as lh
import pytest

pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.timeout(600)

HOSTILE = lh.HOSTILE
SETUP = lh.HOSTILE_SETUP + '''
print("SETUP OK", len(vocab), len(ids))'''
vis = lh.vis
CHECK = '''p = wa.current_pattern()
print(f"KERNEL att={wa.layer},{wa.head} vw={wa.value_weighted} eig={we.layer},{we.head} "
      f"skip={ws.layer},{ws.head} rows={len(ws.rows)} found={ws.found.get('source_id')} "
      f"p52={float(p[5, 2]):.6f} err={wa.error!r} thr={we.through}")'''
NOTEBOOK_CELLS = [
    SETUP,
    "wa = cw.attention(model, ids)\nwa",
    "we = cw.eigenvalues(model)\nwe",
    "ws = cw.skip_trigrams(model, 0, 0)\nws",
    "wa.head = 99  # a bad request: a message in the widget and a warning, no exception",
    CHECK,
    "wt = cw.attention(model, \"w1 w2 w3\")  # the text-box test's own view\nwt",
]
N_TOK = 20
CHECK_CELL, TEXT_CELL = 5, 6
CELL_OF = {"attention": 1, "eigen": 2, "skip": 3}


def kernel_says(page, text: str, timeout: int = 60_000) -> str:
    """Re-run the check cell and wait until its output contains `text`; return the output."""
    return lh.rerun_and_read(page, CHECK_CELL, text, timeout)


def root(page, kind: str):
    return lh.cell(page, CELL_OF[kind]).locator(f".cw-root.cw-{kind}")


def attention_at(page, layer: int, head: int, vw: bool = False) -> dict:
    """Put the attention view on (layer, head) from the kernel and wait until it painted that head."""
    lh.kernel_exec(page, f"wa.value_weighted = {vw}\nwa.select({layer}, {head})")
    d = lh.wait_drawn(root(page, "attention"), layer=layer, head=head, vw=int(vw), n=N_TOK, timeout=120_000)
    lh.check_attention(page, "wa", d, layer, head, vw)
    return d


def click_attention(page, layer: int, head: int) -> dict:
    """Click head (layer, head) in the attention grid; wait for its painting; compare with the kernel."""
    att = root(page, "attention")
    att.locator(f'[data-layer="{layer}"][data-head="{head}"]').click()
    d = lh.wait_drawn(att, layer=layer, head=head)
    lh.check_attention(page, "wa", d, layer, head, bool(d["vw"]))
    return d


# ---------------------------------------------------------------------------------------- attention
def test_attention_renders_with_bad_request_message(page):
    att = root(page, "attention")
    # cell 4's head=99 was refused at run-all; the same again from here, after L0H0 (any earlier test's
    # state is replaced): the kernel keeps L0H0, the page shows the message and paints L0H0's pattern
    attention_at(page, 0, 0)
    lh.kernel_exec(page, "wa.head = 99")
    lh.check_attention(page, "wa", lh.wait_drawn(att, layer=0, head=0, vw=0), 0, 0)
    expect(att).to_have_attribute("data-shown-layer", "0")
    expect(att).to_have_attribute("data-shown-head", "0")
    expect(att).to_have_attribute("data-n-tokens", str(N_TOK))
    expect(att.locator(".cw-tok")).to_have_count(N_TOK)
    expect(att.locator("[data-layer][data-head]")).to_have_count(8)
    # cell 4 asked for head 99: the widget says so, the kernel kept head 0 and did not raise
    expect(att.locator(".cw-message")).to_contain_text("head=99 is out of range")
    expect(lh.cell(page, 4).locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
           ).to_contain_text("CircuitWidgetWarning")
    att.scroll_into_view_if_needed()
    att.screenshot(path=str(lh.ARTIFACTS / "attention_initial.png"))


def test_attention_click_redraws_and_updates_kernel(page):
    att = root(page, "attention")
    attention_at(page, 0, 0)
    lh.kernel_exec(page, "wa.head = 99")  # a bad request first: its message must go with the next good one
    expect(att.locator(".cw-message")).to_contain_text("head=99 is out of range", timeout=30_000)
    for layer, head in ((1, 2), (0, 3), (1, 0), (0, 1), (1, 2)):
        n0 = int(att.get_attribute("data-draw-count"))
        click_attention(page, layer, head)
        expect(att).to_have_attribute("data-shown-layer", str(layer))
        expect(att).to_have_attribute("data-shown-head", str(head))
        assert int(att.get_attribute("data-draw-count")) > n0
        expect(att.locator(f'[data-layer="{layer}"][data-head="{head}"]')).to_have_class(re.compile("cw-selected"))
    expect(att.locator(".cw-message")).to_be_hidden()  # the old error is cleared by a good request
    lh.check_attention_log(page, "wa", att)  # every paint so far showed its own head's numbers
    kernel_says(page, "att=1,2")


def test_attention_hover_readouts(page):
    att = root(page, "attention")
    attention_at(page, 1, 2)
    canvas = att.locator("canvas.cw-pattern")
    g = {k: float(canvas.get_attribute(f"data-{k}")) for k in ("ml", "mt", "side", "n")}
    step = g["side"] / g["n"]
    canvas.hover(position={"x": g["ml"] + 2.5 * step, "y": g["mt"] + 5.5 * step})
    ro = att.locator(".cw-pattern-readout")
    expect(ro).to_contain_text("query [5]")
    expect(ro).to_contain_text("key [2]")
    shown = float(re.search(r"weight (\S+)", ro.inner_text()).group(1))
    out = kernel_says(page, "att=1,2")
    want = float(re.search(r"p52=(\S+)", out).group(1))
    assert abs(shown - want) < 2e-3 + 2e-3 * abs(want), (shown, want)  # float16 transfer
    # hovering a token colours the tokens it attends to (pays) and names it in the read-out
    att.locator('.cw-tok[data-pos="5"]').hover()
    expect(att.locator(".cw-token-readout")).to_contain_text("[5]")
    bgs = att.locator(".cw-tok").evaluate_all("els => els.map(e => e.style.background)")
    assert all(bgs[:6]) and not any(bgs[6:]), bgs


def test_value_weighted_toggle(page):
    att = root(page, "attention")
    attention_at(page, 1, 2)
    att.locator("input.cw-vw").check()
    expect(att).to_have_attribute("data-value-weighted", "1", timeout=30_000)
    d = lh.wait_drawn(att, layer=1, head=2, vw=1)
    lh.check_attention(page, "wa", d, 1, 2, vw=True)  # the value-weighted numbers are painted
    d = click_attention(page, 0, 1)
    assert d["vw"] == 1
    att.locator('[data-layer="1"][data-head="2"]').click()
    lh.check_attention(page, "wa", lh.wait_drawn(att, layer=1, head=2, vw=1), 1, 2, vw=True)
    expect(att.locator(".cw-panel-title")).to_contain_text("value-weighted")
    kernel_says(page, "vw=True")
    att.locator("input.cw-vw").uncheck()
    expect(att).to_have_attribute("data-value-weighted", "0", timeout=30_000)
    lh.check_attention(page, "wa", lh.wait_drawn(att, layer=1, head=2, vw=0), 1, 2)
    # the colour scale is a display choice: redrawn locally, nothing asked of the kernel
    n = int(att.get_attribute("data-draw-count"))
    att.locator("select.cw-scale").select_option("log")
    expect(att.locator(".cw-panel-title")).to_contain_text("(log)")
    assert int(att.get_attribute("data-draw-count")) == n + 1
    att.locator("select.cw-scale").select_option("linear")


def test_keyboard_navigation(page):
    att = root(page, "attention")
    attention_at(page, 1, 2)
    att.locator('[data-layer="1"][data-head="2"]').focus()
    page.keyboard.press("ArrowRight")
    lh.check_attention(page, "wa", lh.wait_drawn(att, layer=1, head=3), 1, 3)
    page.keyboard.press("ArrowUp")
    lh.check_attention(page, "wa", lh.wait_drawn(att, layer=0, head=3), 0, 3)
    page.keyboard.press("ArrowRight")  # already the last head: stays
    page.keyboard.press("ArrowLeft")
    lh.check_attention(page, "wa", lh.wait_drawn(att, layer=0, head=2), 0, 2)
    focused = page.evaluate("() => [document.activeElement.dataset.layer, document.activeElement.dataset.head]")
    assert focused == ["0", "2"]
    kernel_says(page, "att=0,2")


# ---------------------------------------------------------------------------------------- eigenvalues
def test_eigenvalues_click_hover_log(page):
    eig = root(page, "eigen")
    lh.kernel_exec(page, "we.log_magnitude = False\nwe.select(0, 0)")
    lh.check_eigenvalues(page, "model", lh.wait_drawn(eig, layer=0, head=0, log=0, timeout=60_000), 0, 0)
    expect(eig.locator("canvas.cw-eig-canvas")).to_have_count(3)
    expect(eig.locator(".cw-eig-pos").first).to_contain_text("positivity")
    for layer, head in ((0, 2), (1, 0), (1, 3)):  # every click paints the new head's eigenvalues
        eig.locator(f'[data-layer="{layer}"][data-head="{head}"]').click()
        lh.check_eigenvalues(page, "model", lh.wait_drawn(eig, layer=layer, head=head), layer, head)
    expect(eig).to_have_attribute("data-shown-layer", "1", timeout=30_000)
    expect(eig).to_have_attribute("data-shown-head", "3")
    expect(eig).to_have_attribute("data-n-eigs", "24")  # 3 circuits x d_head 8
    c = eig.locator('canvas[data-circuit="ov"]')
    x, y = c.evaluate("el => JSON.parse(el.dataset.points)[0]")
    c.hover(position={"x": x, "y": y})
    expect(eig.locator(".cw-eig-readout")).to_contain_text("λ1 =")
    before = c.get_attribute("data-points")
    eig.locator("input.cw-log").check()
    expect(eig.locator('canvas[data-circuit="ov"]')).not_to_have_attribute("data-points", before, timeout=30_000)
    lh.check_eigenvalues(page, "model", lh.wait_drawn(eig, layer=1, head=3, log=1), 1, 3)
    kernel_says(page, "eig=1,3")
    # "QK composed through" L0H1: a fourth plot, the K-composition term of L1H3's QK circuit through L0H1
    eig.locator("select.cw-through").select_option("0,1")
    expect(eig.locator("canvas.cw-eig-canvas")).to_have_count(4, timeout=30_000)
    expect(eig.locator('canvas[data-circuit="qk_comp"]')).to_have_count(1)
    expect(eig).to_have_attribute("data-n-eigs", "32")  # 4 circuits x d_head 8
    kernel_says(page, "thr=[0, 1]")
    eig.locator("select.cw-through").select_option("")
    expect(eig.locator("canvas.cw-eig-canvas")).to_have_count(3, timeout=30_000)
    kernel_says(page, "thr=[]")
    eig.scroll_into_view_if_needed()
    eig.screenshot(path=str(lh.ARTIFACTS / "eigenvalues.png"))


# ---------------------------------------------------------------------------------------- skip-trigrams
def test_skip_trigrams_click_search_more(page):
    sk = root(page, "skip")
    lh.kernel_exec(page, "ws.n_rows = 20\nws.query = ''\nws.select(0, 0)")
    lh.check_skip_trigrams(page, "ws", lh.wait_drawn(sk, layer=0, head=0, n=20, timeout=60_000), 0, 0)
    for layer, head in ((0, 3), (1, 2), (1, 1)):  # every click renders the new head's rows
        sk.locator(f'[data-layer="{layer}"][data-head="{head}"]').click()
        lh.check_skip_trigrams(page, "ws", lh.wait_drawn(sk, layer=layer, head=head), layer, head)
    expect(sk).to_have_attribute("data-shown-layer", "1", timeout=30_000)
    expect(sk).to_have_attribute("data-shown-head", "1")
    sk.locator("input.cw-search").fill("</script>")
    sk.locator("input.cw-search").press("Enter")
    expect(sk.locator("tr.cw-found-row")).to_have_attribute("data-source-id", "2", timeout=30_000)
    expect(sk.locator("tr.cw-found-row .cw-source")).to_have_text("</script>")
    sk.locator("button.cw-more").click()
    expect(sk).to_have_attribute("data-n-rows", "40", timeout=30_000)  # the whole 40-token vocabulary
    lh.check_skip_trigrams(page, "ws", lh.wait_drawn(sk, layer=1, head=1, n=40), 1, 1)
    sk.locator("tr.cw-row .cw-dest").first.hover()
    expect(sk.locator(".cw-skip-readout")).to_contain_text("centred QK")
    # an unknown token: a message, the kernel lives on
    sk.locator("input.cw-search").fill("no-such-token")
    sk.locator("input.cw-search").press("Enter")
    expect(sk.locator(".cw-message")).to_contain_text("not a single token", timeout=30_000)
    kernel_says(page, "skip=1,1 rows=40")
    sk.scroll_into_view_if_needed()
    sk.screenshot(path=str(lh.ARTIFACTS / "skip_trigrams.png"))


# ---------------------------------------------------------------------------------------- security, theme
def test_hostile_tokens_render_as_text(page):
    roots = page.locator(".cw-root")
    expect(roots).to_have_count(4, timeout=120_000)
    lh.kernel_exec(page, "ws.n_rows = 40\nws.select(0, 0)")  # the whole vocabulary, hostile tokens included
    lh.wait_drawn(root(page, "skip"), layer=0, head=0, n=40, timeout=60_000)
    expect(root(page, "attention").locator(".cw-tok")).to_have_count(N_TOK)
    # nothing the tokens spell was created as an element, nothing executed
    for sel in ("img", "script", "b"):
        assert page.locator(f".cw-root {sel}").count() == 0, sel
    assert page.locator('img[src="x"]').count() == 0
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    assert page.cw_dialogs == [], page.cw_dialogs
    toks = root(page, "attention").locator(".cw-tok").all_text_contents()
    for s in HOSTILE:
        assert vis(s) in toks, (s, toks)
    chips = root(page, "skip").locator(".cw-chip-text, .cw-source").all_text_contents()
    assert any("<img" in c for c in chips) and "</script>" in chips


def test_dark_theme_and_clean_console(page):
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
    att = root(page, "attention")
    attention_at(page, 0, 0)
    click_attention(page, 1, 0)  # redraw with the dark theme's colours
    bg = att.evaluate("el => getComputedStyle(el).backgroundColor")
    r, g, b = (int(v) for v in re.findall(r"\d+", bg)[:3])
    assert r + g + b < 200, bg  # the widget follows --jp-layout-color0
    att.scroll_into_view_if_needed()
    att.screenshot(path=str(lh.ARTIFACTS / "attention_dark.png"))
    root(page, "eigen").locator('[data-layer="0"][data-head="1"]').click()
    lh.check_eigenvalues(page, "model", lh.wait_drawn(root(page, "eigen"), layer=0, head=1), 0, 1)
    root(page, "eigen").screenshot(path=str(lh.ARTIFACTS / "eigenvalues_dark.png"))
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'true'", timeout=30_000)
    errors = [m for m in page.cw_console if m.startswith("pageerror") or "circwidgets" in m.lower() and "error" in m]
    assert not errors, errors


def test_text_box_retokenises_in_the_kernel(page):
    att = lh.cell(page, TEXT_CELL).locator(".cw-root.cw-attention")
    lh.kernel_exec(page, 'wt.text = "w1 w2 w3"\nwt.select(0, 0)')
    lh.wait_drawn(att, layer=0, head=0, n=3, timeout=60_000)
    box = att.locator("input.cw-text-input")
    box.fill("w1 w2 w3 w1 w2 w3")
    box.press("Enter")
    expect(att).to_have_attribute("data-n-tokens", "6", timeout=30_000)
    lh.check_attention(page, "wt", lh.wait_drawn(att, layer=0, head=0, n=6), 0, 0)  # the new text's pattern
    att.locator('[data-layer="1"][data-head="3"]').click()
    lh.check_attention(page, "wt", lh.wait_drawn(att, layer=1, head=3, n=6), 1, 3)
    expect(att.locator(".cw-tok")).to_have_text(["w1", "w2", "w3", "w1", "w2", "w3"])
    box.fill(" ".join(["w4"] * 70))  # longer than n_ctx = 64: a message, the old text stays
    box.press("Enter")
    expect(att.locator(".cw-message")).to_contain_text("n_ctx allows at most 64", timeout=30_000)
    expect(att).to_have_attribute("data-n-tokens", "6")
    expect(box).to_have_value("w1 w2 w3 w1 w2 w3", timeout=30_000)
