"""The training-history view in real JupyterLab + headless Chromium, over a real training run (the
package's Trainer, a tiny model, snapshots in a temporary folder): the step slider (keyboard) and
the play button move every panel, and after each move the page's digest of what it painted
(`data-drawn`, js/src/lib/digest.js) equals the engine's numbers of that snapshot (labharness.
check_history); the circuit menus and the head grid reach the kernel. One server, one page."""

from __future__ import annotations

import labharness as lh
import pytest

pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.timeout(900)

SETUP = '''import tempfile, torch
import circwidgets as cw
from circwidgets.model import ModelConfig, Transformer
from circwidgets.train.tasks import RepeatTask
from circwidgets.train.trainer import TrainConfig, Trainer
torch.set_num_threads(1)
cfg = ModelConfig(n_layers=2, d_model=32, n_heads=2, d_head=16, d_vocab=24, n_ctx=32, attn_only=True,
                  normalization=None, positional="shortformer", bos_token_id=0, name="tiny-history")
OUT = tempfile.mkdtemp()
tr = Trainer(Transformer(cfg, seed=0), RepeatTask(24, 32, min_len=3, max_len=10),
             TrainConfig(steps=60, batch_size=16, lr=1e-2, warmup=5, eval_every=20, eval_batches=1, icl_n_seqs=2,
                         n_snapshots=5), out_dir=OUT, progress=False, callbacks=[])
tr.train()
print("TRAINED", tr.step)'''
NOTEBOOK_CELLS = [SETUP, "wh = cw.training(OUT)\nwh"]


def test_slider_play_and_menus_paint_the_kernels_numbers_of_each_step(page):
    root = lh.cell(page, 1).locator(".cw-root.cw-history")
    steps = lh.kernel_json(page, "import json\nprint(json.dumps(wh.steps))")
    assert len(steps) >= 4
    lh.kernel_exec(page, f"wh.step = {steps[-1]}")
    lh.check_history(page, "wh", lh.wait_drawn(root, step=steps[-1], pattern__step=steps[-1], timeout=180_000))
    slider = root.locator("input.cw-step-slider")
    expect(slider).to_have_attribute("max", str(len(steps) - 1))
    # keyboard on the slider: Home -> the first snapshot, then → one step at a time
    slider.focus()
    page.keyboard.press("Home")
    d = lh.wait_drawn(root, step=steps[0], pattern__step=steps[0])
    lh.check_history(page, "wh", d)
    assert lh.kernel_json(page, "print(wh.step)") == steps[0]
    page.keyboard.press("ArrowRight")
    lh.check_history(page, "wh", lh.wait_drawn(root, step=steps[1], pattern__step=steps[1]))
    expect(root.locator(".cw-step-label")).to_contain_text(f"step {steps[1]} (snapshot 2 of {len(steps)})")
    for canvas in root.locator("canvas.cw-curve").all():  # every curve marks the shown step
        expect(canvas).to_have_attribute("data-marker", str(steps[1]))
    # another head from the grid: its pattern at the same step
    root.locator('.cw-cell[data-layer="0"][data-head="1"]').click()
    lh.check_history(page, "wh", lh.wait_drawn(root, step=steps[1], pattern__layer=0, pattern__head=1))
    # the induction head from the menu: the kernel recomputes the circuit, the page paints it
    l1, h1, l2, h2 = lh.kernel_json(page, "print(wh.circuit)")
    other = f"1,{1 - h2}"
    root.locator("select.cw-ind-head").select_option(other)
    d = lh.wait_drawn(root, circuit=[l1, h1, 1, 1 - h2])
    lh.check_history(page, "wh", d)
    assert lh.kernel_json(page, "print(wh.circuit)") == [l1, h1, 1, 1 - h2]
    # play: every snapshot in turn up to the last, then the button is back to ▶
    root.locator("button.cw-play").click()
    d = lh.wait_drawn(root, step=steps[-1], pattern__step=steps[-1], timeout=60_000)
    expect(root).to_have_attribute("data-playing", "0", timeout=30_000)
    lh.check_history(page, "wh", d)
    seen = root.evaluate("e => e.cwDrawnLog.map((s) => JSON.parse(s).step)")
    assert set(steps[1:]) <= set(seen), seen
    log = root.evaluate("e => e.cwDrawnLog.map((s) => JSON.parse(s))")
    stale = [(x["step"], x["pattern"]["step"]) for x in log if x["pattern"]["step"] != x["step"]]
    assert not stale, f"a pattern painted under another step's marker: {stale}"  # panels move together
    assert not [m for m in page.cw_console if m.startswith("pageerror")], page.cw_console
    root.scroll_into_view_if_needed()
    root.screenshot(path=str(lh.ARTIFACTS / "history.png"))

