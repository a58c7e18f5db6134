"""Composition, PathExpansion, Ablation, explorer, export and monitor views in real JupyterLab +
headless Chromium: Composition (click a cell -> details + kernel selection), PathExpansion (sum =
logit, bar click), Ablation (toggle a head -> the engine's loss; patching heatmaps),
CircuitExplorer (one click, every panel follows), hostile tokens, the offline HTML export opened
with networking off, and the TrainingMonitor's live curves and stop button. One server, one
notebook, one page for the module; every test sets the state it needs (from the kernel or by clicks)
and waits for the view's digest of what it painted (`data-drawn`, js/src/lib/digest.js), which is
compared with the kernel's numbers after every click (labharness.check_*), so each test passes alone
and in any order. Screenshots and console log: artifacts/browser/."""

from __future__ import annotations

import re
import time

import labharness as lh
import pytest

pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.timeout(900)

HOSTILE = lh.HOSTILE
SETUP = lh.HOSTILE_SETUP + '''
corrupt = ids[:11] + [14] + ids[12:]
print("SETUP OK", len(vocab), len(ids))'''
vis = lh.vis
CHECK = '''from circwidgets.engine import interventions as I
from circwidgets.engine.composition import composition_scores
_t = torch.tensor([ids])
_eng = I.ablate_heads(model, _t, [tuple(x) for x in wab.off]).intervened if wab.off else wab.clean_loss
_sc = float(composition_scores(model, wc.kind)[tuple(wc.pair)]) if wc.pair else float("nan")
print(f"KERNEL comp={wc.layer},{wc.head} pair={wc.pair} kind={wc.kind} score={_sc:.4f} "
      f"paths={wp.layer},{wp.head} logit={wp.model_logit:.5f} abl_off={wab.off} engine_loss={_eng!r} "
      f"ex={sorted(set(ex.selections().values()))} err={wc.error!r}{wp.error!r}{wab.error!r} "
      f"deferred={[n for n, w in ex.panels.items() if w.deferred]}")'''
TRAIN = '''import os, tempfile
from circwidgets.model import ModelConfig, Transformer
from circwidgets.train.tasks import RepeatTask
from circwidgets.train.trainer import TrainConfig, Trainer
if globals().get("GO"):  # run by the test (not by run-all): it trains until the stop button
    OUT = tempfile.mkdtemp()
    tr = Trainer(Transformer(ModelConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_vocab=12, n_ctx=12)),
                 RepeatTask(d_vocab=12, n_ctx=12, min_len=2, max_len=4),
                 TrainConfig(steps=100000, eval_every=10, batch_size=4, icl_n_seqs=1, eval_batches=1, warmup=5),
                 out_dir=OUT, progress=False)
    tr.train()
    print("TRAINED", tr.stopped_by, tr.step, sorted(os.listdir(OUT)))'''
NOTEBOOK_CELLS = [
    SETUP,
    "wc = cw.composition(model, ids)\nwc",
    "wp = cw.paths(model, ids, position=13)\nwp",
    "wab = cw.ablation(model, ids, corrupted=corrupt)\nwab",
    # deferred (as a GPT-2-sized model's explorer is): each panel's page asks the kernel for its data
    'ex = cw.explore(model, ids, panels=("attention", "eigenvalues", "composition", "ablation"), defer=True)\nex',
    CHECK,
    TRAIN,
    'GO = True\nprint("GO SET")',
]
CHECK_CELL, TRAIN_CELL, GO_CELL = 5, 6, 7
N_TOK = 20


def kernel_says(page, text: str, timeout: int = 60_000) -> str:
    return lh.rerun_and_read(page, CHECK_CELL, text, timeout)


def cell_root(page, i: int, kind: str):
    return lh.cell(page, i).locator(f".cw-root.cw-{kind}")



def click_map_cell(root, layer: int, head: int) -> None:
    """Click the composition map's cell (layer, head) (rows layers, columns heads)."""
    canvas = root.locator("canvas.cw-comp-map")
    g = canvas.evaluate("e => ({ml: +e.dataset.ml, mt: +e.dataset.mt, cell: +e.dataset.cell})")
    canvas.click(position={"x": g["ml"] + (head + 0.5) * g["cell"], "y": g["mt"] + (layer + 0.5) * g["cell"]})


def shoot(loc, name: str) -> None:
    loc.scroll_into_view_if_needed()
    loc.screenshot(path=str(lh.ARTIFACTS / f"composition_paths_ablation_{name}.png"))


# ---------------------------------------------------------------------------------------- composition
def test_composition_cell_click_shows_details_and_moves_the_kernel_selection(page):
    comp = cell_root(page, 1, "composition")
    lh.kernel_exec(page, 'wc.kind = "k"\nwc.subtract_baseline = False\nwc.pair = [0, 0, 1, 0]\nwc.select(1, 0)')
    d = lh.wait_drawn(comp, map__kind="k", map__minus=0, details__pair=[0, 0, 1, 0], timeout=180_000)
    lh.check_composition(page, "wc", d)
    expect(comp).to_have_attribute("data-pair", "0,0,1,0", timeout=30_000)
    expect(comp.locator(".cw-baseline-note")).to_contain_text("±")
    # the map is L1H0's partners (rows layers, columns heads); a cell in its own layer selects that head
    assert d["map"]["focus"] == [1, 0], d["map"]
    click_map_cell(comp, 1, 2)
    expect(comp).to_have_attribute("data-shown-head", "2", timeout=30_000)
    lh.check_composition(page, "wc", lh.wait_drawn(comp, map__focus=[1, 2]))
    # now L1H2's partners: the cell (layer 0, head 1) is the pair L0H1 -> L1H2
    click_map_cell(comp, 0, 1)
    expect(comp).to_have_attribute("data-pair", "0,1,1,2", timeout=30_000)
    lh.check_composition(page, "wc", lh.wait_drawn(comp, details__pair=[0, 1, 1, 2]))
    summary = comp.locator(".cw-pair-summary")
    expect(summary).to_contain_text("L0H1 → L1H2")
    expect(comp.locator("canvas.cw-pattern-small")).to_have_count(3)
    out = kernel_says(page, "comp=1,2 pair=[0, 1, 1, 2] kind=k")
    score = re.search(r"score=([-\d.]+)", out).group(1)
    expect(comp.locator(".cw-pair-score")).to_have_text(score)
    # Q tab: the kernel switches kind and the pair's score follows
    comp.locator('.cw-tab[data-kind="q"]').click()
    expect(comp.locator(".cw-pair-summary")).to_contain_text("Q-composition", timeout=30_000)
    lh.check_composition(page, "wc", lh.wait_drawn(comp, map__kind="q", details__kind="q", details__pair=[0, 1, 1, 2]))
    out = kernel_says(page, "kind=q")
    expect(comp.locator(".cw-pair-score")).to_have_text(re.search(r"score=([-\d.]+)", out).group(1))
    comp.locator(".cw-minus-baseline").check()
    expect(comp.locator(".cw-baseline-note")).to_contain_text("score − baseline mean", timeout=30_000)
    lh.check_composition(page, "wc", lh.wait_drawn(comp, map__kind="q", map__minus=1))
    # keyboard: the cursor starts on the pair's cell; → then Enter picks L0H2 → L1H2
    comp.locator("canvas.cw-comp-map").focus()
    page.keyboard.press("ArrowRight")
    expect(comp.locator(".cw-comp-readout")).to_contain_text("L0H2 → L1H2")
    page.keyboard.press("Enter")
    expect(comp).to_have_attribute("data-pair", "0,2,1,2", timeout=30_000)
    lh.check_composition(page, "wc", lh.wait_drawn(comp, details__pair=[0, 2, 1, 2]))
    kernel_says(page, "pair=[0, 2, 1, 2]")
    shoot(comp, "composition")


# ---------------------------------------------------------------------------------------- paths
def test_path_expansion_sum_equals_the_logit_and_bars_select_heads(page):
    paths = cell_root(page, 2, "paths")
    lh.kernel_exec(page, "wp.position = 13\nwp.path = []\nwp.select(0, 0)")
    d = lh.wait_drawn(paths, position=13, pattern__layer=0, pattern__head=0, timeout=60_000)
    lh.check_paths(page, "wp", d, 0, 0)
    expect(paths).to_have_attribute("data-position", "13", timeout=30_000)
    out = kernel_says(page, "logit=")
    logit = re.search(r"logit=([-\d.]+)", out).group(1)
    expect(paths.locator(".cw-model-logit")).to_have_text(logit)
    expect(paths.locator(".cw-sum")).to_have_text(logit)  # the terms add up to the model's logit
    bar = paths.locator('.cw-bar-row[data-layer="1"][data-head="3"]').first
    bar.click()
    expect(paths).to_have_attribute("data-shown-layer", "1", timeout=30_000)
    expect(paths).to_have_attribute("data-shown-head", "3")
    expect(paths.locator(".cw-small-title")).to_contain_text("L1H3 pattern")
    lh.check_paths(page, "wp", lh.wait_drawn(paths, position=13, pattern__layer=1, pattern__head=3), 1, 3)
    kernel_says(page, "paths=1,3")
    two = paths.locator('.cw-bar-row[data-order="2"]').first  # a virtual-head term: A^{h2} A^{h1} too
    two.click()
    expect(paths.locator('canvas.cw-pattern-small[data-kind="virtual"]')).to_be_visible(timeout=30_000)
    sel = lh.kernel_json(page, "import json\nprint(json.dumps([wp.layer, wp.head, wp.path]))")
    d = lh.wait_drawn(paths, pattern__layer=sel[0], pattern__head=sel[1])
    assert d["pattern"]["virtual"]["heads"] == sel[2] and sel[2][-1] == sel[:2], (d["pattern"], sel)
    lh.check_paths(page, "wp", d, sel[0], sel[1])
    # click a token: the expansion moves to that position
    before = paths.locator(".cw-sums").text_content()
    paths.locator('.cw-tokens2 .cw-tok[data-pos="5"]').click()
    expect(paths).to_have_attribute("data-position", "5", timeout=30_000)
    lh.check_paths(page, "wp", lh.wait_drawn(paths, position=5), sel[0], sel[1])  # the new position's terms
    expect(paths.locator(".cw-sums")).not_to_have_text(before, timeout=30_000)  # the kernel's new terms
    assert paths.locator(".cw-sum").text_content() == paths.locator(".cw-model-logit").text_content()
    shoot(paths, "paths")


# ---------------------------------------------------------------------------------------- ablation
def test_ablation_toggle_shows_the_engines_loss_and_patching_maps(page):
    abl = cell_root(page, 3, "ablation")
    lh.kernel_exec(page, 'wab.mode = "ablate"\nwab.ablation = "zero"\nwab.cuts = []\nwab.off = []')
    lh.check_ablation(page, "wab", lh.wait_drawn(abl, mode="ablate", off=[], cuts=[], timeout=60_000), "ids")
    expect(abl).to_have_attribute("data-n-off", "0", timeout=30_000)
    clean_s = abl.locator(".cw-loss").get_attribute("data-loss")
    clean = float(clean_s)
    abl.locator('[data-layer="1"][data-head="2"]').click()
    expect(abl).to_have_attribute("data-n-off", "1", timeout=30_000)
    expect(abl.locator(".cw-loss")).not_to_have_attribute("data-loss", clean_s, timeout=30_000)
    expect(abl.locator('[data-layer="1"][data-head="2"]')).to_have_attribute("data-off", "1")
    lh.check_ablation(page, "wab", lh.wait_drawn(abl, off=[[1, 2]]), "ids")
    abl.locator('[data-layer="0"][data-head="3"]').click()  # a second head: the loss of both off
    lh.check_ablation(page, "wab", lh.wait_drawn(abl, off=[[1, 2], [0, 3]]), "ids")
    abl.locator('[data-layer="0"][data-head="3"]').click()
    lh.check_ablation(page, "wab", lh.wait_drawn(abl, off=[[1, 2]]), "ids")
    out = kernel_says(page, "abl_off=[[1, 2]]")
    engine = float(re.search(r"engine_loss=([-\d.e]+)", out).group(1))
    # the loss read-out of the last toggle (its redraw may land a frame after the digest we waited on)
    deadline = time.monotonic() + 30
    while True:
        shown = float(abl.locator(".cw-loss").get_attribute("data-loss"))
        if shown == pytest.approx(engine, abs=1e-5) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert shown != pytest.approx(clean, abs=1e-6)
    assert shown == pytest.approx(engine, abs=1e-5)
    assert abl.locator(".cw-tl-row[data-pos]").count() == N_TOK - 1
    shoot(abl, "ablation_one_head_off")
    # restore it: the clean loss again
    abl.locator('[data-layer="1"][data-head="2"]').click()
    expect(abl).to_have_attribute("data-n-off", "0", timeout=30_000)
    expect(abl.locator(".cw-loss")).to_have_attribute("data-loss", clean_s, timeout=30_000)
    lh.check_ablation(page, "wab", lh.wait_drawn(abl, off=[]), "ids")
    # a path cut through the form
    abl.locator(".cw-cut-src").select_option("0,1")
    abl.locator(".cw-cut-dst").select_option("1,2")
    abl.locator(".cw-cut-add").click()
    expect(abl.locator(".cw-cut")).to_have_count(1, timeout=30_000)
    expect(abl.locator(".cw-cut")).to_have_attribute("data-cut", "0,1,1,2,k")
    abl.locator(".cw-cut-remove").click()
    expect(abl.locator(".cw-cut")).to_have_count(0, timeout=30_000)
    # activation patching
    abl.locator('.cw-tab[data-mode="patch"]').click()
    expect(abl.locator("canvas.cw-patch-heads")).to_be_visible(timeout=60_000)
    expect(abl.locator("canvas.cw-patch-resid")).to_be_visible()
    expect(abl.locator(".cw-patch-info")).to_contain_text("metric at the last position")
    d = lh.wait_drawn(abl, mode="patch")
    want = lh.kernel_json(page, "import json\n_p = wab.patching()\nprint(json.dumps({'h': _p['heads'].tolist(),"
                                " 'r': _p['resid'].tolist()}))")
    for key, ref in (("patchHeads", want["h"]), ("patchResid", want["r"])):
        for r, c, v in d[key]:  # the painted heatmap cells are the engine's patching numbers
            assert lh.close(v, ref[r][c], 1e-4, 1e-5), (key, r, c, v, ref[r][c])
    shoot(abl, "ablation_patching")
    abl.locator('.cw-tab[data-mode="ablate"]').click()
    lh.wait_drawn(abl, mode="ablate")


# ---------------------------------------------------------------------------------------- explorer
def test_explorer_panels_follow_one_click(page):
    ex = lh.cell(page, 4).locator(".cw-explorer")
    expect(ex.locator(".cw-root")).to_have_count(4, timeout=120_000)
    # the deferred panels asked for their data when drawn: the kernel prepared every one
    kernel_says(page, "deferred=[]", timeout=120_000)
    att, eig, comp = (ex.locator(f".cw-root.cw-{k}") for k in ("attention", "eigen", "composition"))
    lh.kernel_exec(page, "ex.select(0, 0)")
    lh.check_attention(page, "ex.panels['attention']", lh.wait_drawn(att, layer=0, head=0, timeout=60_000), 0, 0)
    ex.locator('.cw-eigen [data-layer="1"][data-head="3"]').click()
    # every panel painted the new head's numbers (not only its title)
    lh.check_attention(page, "ex.panels['attention']", lh.wait_drawn(att, layer=1, head=3), 1, 3)
    lh.check_eigenvalues(page, "model", lh.wait_drawn(eig, layer=1, head=3), 1, 3)
    lh.check_composition(page, "ex.panels['composition']", lh.drawn(comp))
    for kind in ("attention", "eigen"):
        expect(ex.locator(f".cw-root.cw-{kind}")).to_have_attribute("data-shown-layer", "1", timeout=30_000)
        expect(ex.locator(f".cw-root.cw-{kind}")).to_have_attribute("data-shown-head", "3")
    for kind in ("composition", "ablation"):
        expect(ex.locator(f".cw-root.cw-{kind}")).to_have_attribute("data-shown-layer", "1", timeout=30_000)
        expect(ex.locator(f".cw-root.cw-{kind}")).to_have_attribute("data-shown-head", "3")
    for kind in ("attention", "eigen", "composition", "ablation"):  # the selected cell is marked everywhere
        expect(ex.locator(f'.cw-{kind} .cw-cell.cw-selected[data-layer="1"][data-head="3"]')).to_have_count(1)
    kernel_says(page, "ex=[(1, 3)]")
    # a click on a composition cell (pair L0H2 -> L1H0) moves every panel to the later head: first L0H2
    # from the composition's head grid (its map then shows L0H2's later partners), then the cell L1H0
    ex.locator('.cw-composition .cw-cell[data-layer="0"][data-head="2"]').click()
    expect(ex.locator(".cw-root.cw-attention")).to_have_attribute("data-shown-layer", "0", timeout=30_000)
    lh.check_composition(page, "ex.panels['composition']", lh.wait_drawn(comp, map__focus=[0, 2]))
    click_map_cell(comp, 1, 0)
    expect(ex.locator(".cw-root.cw-attention")).to_have_attribute("data-shown-head", "0", timeout=30_000)
    expect(ex.locator(".cw-root.cw-eigen")).to_have_attribute("data-shown-layer", "1")
    lh.check_attention(page, "ex.panels['attention']", lh.wait_drawn(att, layer=1, head=0), 1, 0)
    lh.check_eigenvalues(page, "model", lh.wait_drawn(eig, layer=1, head=0), 1, 0)
    lh.check_composition(page, "ex.panels['composition']", lh.wait_drawn(comp, details__pair=[0, 2, 1, 0]))
    kernel_says(page, "ex=[(1, 0)]")
    shoot(ex, "explorer")


# ---------------------------------------------------------------------------------------- hostile tokens
def test_hostile_tokens_render_as_text_in_the_new_views(page):
    paths = cell_root(page, 2, "paths")
    lh.wait_drawn(paths, timeout=120_000)
    lh.wait_drawn(cell_root(page, 3, "ablation"), timeout=120_000)
    expect(paths.locator(".cw-tokens2 .cw-tok")).to_have_count(N_TOK)
    expect(cell_root(page, 3, "ablation").locator(".cw-tl-row[data-pos]")).to_have_count(N_TOK - 1)
    toks = paths.locator(".cw-tokens2 .cw-tok").all_text_contents()
    assert toks[1:10] == [vis(s) for s in HOSTILE]
    rows = cell_root(page, 3, "ablation").locator(".cw-tl-row[data-pos] .cw-tok").all_text_contents()
    assert any("<img" in r for r in rows) and any("</script>" in r for r in rows)
    opts = paths.locator(".cw-target-select option").all_text_contents()
    assert opts  # predictions are shown as text (option labels)
    for sel in ('img[src="x"]', "b:text('bold')"):
        assert page.locator(f".cw-root {sel}").count() == 0
    assert page.evaluate("() => document.querySelectorAll('.cw-root script').length") == 0
    assert page.cw_dialogs == [], page.cw_dialogs
    errors = [m for m in page.cw_console if m.startswith("pageerror")]
    assert errors == [], errors


# ---------------------------------------------------------------------------------------- offline export
def test_exported_html_works_offline(page, tmp_path):
    import torch
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import models, pre_tokenizers

    import circwidgets as cw
    from circwidgets.model import Tokenizer
    from circwidgets.model.testing import random_model

    vocab = ["<bos>"] + HOSTILE + [f"w{i}" for i in range(30)]
    rt = RustTokenizer(models.WordLevel({s: i for i, s in enumerate(vocab)}, unk_token="<bos>"))
    rt.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    m = random_model(n_layers=2, n_heads=4, d_model=32, d_head=8, d_vocab=len(vocab), n_ctx=64, seed=1,
                     dtype=torch.float32)
    m.tokenizer = Tokenizer(rt)
    ids = [0] + list(range(1, 10)) + [10, 11, 12, 13, 10, 11, 12, 13, 2, 1]
    wc = cw.composition(m, ids)
    comp = wc.save_html(tmp_path / "composition.html")
    exw = cw.explore(m, ids, panels=("attention", "composition"))
    ex = exw.save_html(tmp_path / "explorer.html", max_states=80)
    ask = lh.local_asker({"wc": wc, "exw": exw, "m": m, "torch": torch})  # no kernel: this process's numbers

    ctx = page.context.browser.new_context(offline=True, viewport={"width": 1300, "height": 1000})
    p = ctx.new_page()
    attempted, log = [], []
    p.route("**/*", lambda r: (attempted.append(r.request.url), r.abort())
            if not r.request.url.startswith("file:") else r.continue_())
    p.on("requestfailed", lambda r: log.append(f"failed: {r.url}"))
    p.on("console", lambda msg: log.append(f"{msg.type}: {msg.text}"))
    p.on("pageerror", lambda e: log.append(f"pageerror: {e}"))
    dialogs = []
    p.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        p.goto(comp.as_uri())
        expect(p.locator("body")).to_have_attribute("data-cw-ready", "1", timeout=30_000)
        root = p.locator(".cw-root.cw-composition")
        expect(root).to_have_attribute("data-pair", "0,0,1,0")
        click_map_cell(root, 0, 2)  # L1H0's map: the cell (layer 0, head 2) is the pair L0H2 -> L1H0
        expect(root).to_have_attribute("data-pair", "0,2,1,0", timeout=10_000)
        lh.check_composition(ask, "wc", lh.wait_drawn(root, details__pair=[0, 2, 1, 0]))
        expect(root.locator(".cw-pair-summary")).to_contain_text("L0H2 → L1H0")
        expect(root.locator("canvas.cw-pattern-small")).to_have_count(3)
        assert p.evaluate("window.__cwLog.at(-1).found") is True
        p.screenshot(path=str(lh.ARTIFACTS / "composition_paths_ablation_export_composition.png"), full_page=True)
        # the explorer page: one click, both panels follow, hostile tokens as text
        p.goto(ex.as_uri())
        expect(p.locator("body")).to_have_attribute("data-cw-ready", "1", timeout=30_000)
        att = p.locator(".cw-root.cw-attention")
        expect(att.locator(".cw-tok")).to_have_count(len(ids))
        assert att.locator(".cw-tok").all_text_contents()[1:10] == [vis(s) for s in HOSTILE]
        att.locator('[data-layer="1"][data-head="2"]').click()
        expect(att).to_have_attribute("data-shown-layer", "1", timeout=10_000)
        expect(att).to_have_attribute("data-shown-head", "2")
        lh.check_attention(ask, "exw.panels['attention']", lh.wait_drawn(att, layer=1, head=2), 1, 2)
        expect(p.locator('.cw-composition .cw-cell.cw-selected[data-layer="1"][data-head="2"]')).to_have_count(1)
        lh.check_composition(ask, "exw.panels['composition']", lh.drawn(p.locator(".cw-root.cw-composition")))
        att.locator('[data-layer="0"][data-head="3"]').click()  # another recorded head: its own numbers painted
        lh.check_attention(ask, "exw.panels['attention']", lh.wait_drawn(att, layer=0, head=3), 0, 3)
        att.locator('[data-layer="1"][data-head="2"]').click()
        lh.check_attention(ask, "exw.panels['attention']", lh.wait_drawn(att, layer=1, head=2), 1, 2)
        assert p.locator('img[src="x"]').count() == 0
        p.screenshot(path=str(lh.ARTIFACTS / "composition_paths_ablation_export_explorer.png"), full_page=True)
    finally:
        (lh.ARTIFACTS / "composition_paths_ablation_export.console.log").write_text("\n".join(log + attempted))
        ctx.close()
    assert attempted == [], attempted  # nothing but the file itself was requested
    assert not [x for x in log if x.startswith(("failed", "pageerror", "error"))], log
    assert dialogs == []


# ---------------------------------------------------------------------------------------- training monitor
def test_training_monitor_is_shown_live_and_stop_saves_the_model(page):
    lh.rerun_cell(page, TRAIN_CELL)  # run-all ran this cell before GO was set: now it trains
    mon = cell_root(page, TRAIN_CELL, "monitor")
    expect(mon).to_have_attribute("data-status", "running", timeout=120_000)
    page.wait_for_function(
        "() => { const e = document.querySelector('.cw-root.cw-monitor'); return e && +e.dataset.nEvals >= 3; }",
        timeout=180_000)
    assert int(mon.locator('canvas[data-kind="heads"]').get_attribute("data-n-points")) > 0
    shoot(mon, "monitor_running")
    mon.locator(".cw-stop").click()
    expect(mon).to_have_attribute("data-status", "stopped", timeout=120_000)
    expect(mon.locator(".cw-stop-note")).to_contain_text("model saved to", timeout=30_000)
    out = lh.cell(page, TRAIN_CELL).locator(".jp-OutputArea")
    expect(out).to_contain_text("TRAINED interrupt", timeout=60_000)
    text = out.inner_text()
    assert "stopped_step" in text and "checkpoint.safetensors" in text, text
    # the curves' last points are the monitor's last recorded numbers
    d = lh.wait_drawn(mon, status="stopped")
    want = lh.kernel_json(page, "import json\n_m = next(c for c in tr._cbs if type(c).__name__ == 'TrainingMonitor')\n"
                                "_e = _m.evals[-1]\n"
                                "print(json.dumps({'step': _m.steps[-1], 'val': [_e['step'], _e['val_loss']]}))")
    assert d["loss"][0][0] == want["step"][0] and lh.close(d["loss"][0][1], want["step"][1], 1e-4, 1e-6), (d, want)
    assert d["loss"][1][0] == want["val"][0] and lh.close(d["loss"][1][1], want["val"][1], 1e-4, 1e-6), (d, want)
    shoot(mon, "monitor_stopped")


# ---------------------------------------------------------------------------------------- dark theme
def test_new_views_follow_the_dark_theme(page):
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=60_000)
    for i, kind in ((1, "composition"), (3, "ablation")):
        root = cell_root(page, i, kind)
        bg = root.evaluate("el => getComputedStyle(el).backgroundColor")
        rgb = [int(x) for x in re.findall(r"\d+", bg)[:3]]
        assert sum(rgb) < 3 * 100, bg  # a dark background, from JupyterLab's variables
        shoot(root, f"{kind}_dark")
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
