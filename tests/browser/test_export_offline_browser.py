"""The offline HTML export is honest about what it cannot do (issue 14, item 9), in headless Chromium
(no JupyterLab: the exported file is opened on its own, offline).

- a click on a head whose state was not exported says so and never leaves "computing L…H…" on screen;
- controls that need a kernel (the attention view's text box and its "run" button, the skip-trigram
  search and "more rows", the path view's target search) are disabled, with "needs a live kernel";
- the history view's export scrubs every snapshot and paints that snapshot's numbers;
- the rotary offset and composed-QK controls are disabled offline; undefined values are "·" / "n/a".
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import labharness as lh  # noqa: E402


@pytest.fixture(scope="module")
def offline_page():
    if not lh.CHROMIUM:
        pytest.skip("no Chromium found (install it with `make chromium`); browser tests skipped")
    pytest.importorskip("playwright.sync_api")
    from playwright.sync_api import sync_playwright

    lh.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = lh.launch_browser(p)
        ctx = browser.new_context(offline=True, viewport={"width": 1300, "height": 1000})
        page = ctx.new_page()
        page.cw_log = []
        page.cw_requests = []
        page.route("**/*", lambda r: (page.cw_requests.append(r.request.url), r.abort())
                   if not r.request.url.startswith("file:") else r.continue_())
        page.on("console", lambda m: page.cw_log.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: page.cw_log.append(f"pageerror: {e}"))
        yield page
        ctx.close()
        browser.close()


def _pixels(png: bytes):
    """A screenshot as an RGB uint8 array [height, width, 3]."""
    import io

    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _model():
    import torch
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import models, pre_tokenizers

    from circwidgets.model import Tokenizer
    from circwidgets.model.testing import random_model

    vocab = ["<bos>"] + [f"w{i}" for i in range(30)]
    rt = RustTokenizer(models.WordLevel({s: i for i, s in enumerate(vocab)}, unk_token="<bos>"))
    rt.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    m = random_model(n_layers=2, n_heads=4, d_model=32, d_head=8, d_vocab=len(vocab), n_ctx=64, seed=1,
                     dtype=torch.float32)
    m.tokenizer = Tokenizer(rt)
    return m


def test_export_is_honest_offline(offline_page, tmp_path):
    from playwright.sync_api import expect

    import circwidgets as cw

    m = _model()
    p = offline_page
    # only the start state and a few heads: most heads are not in the file
    att = cw.attention(m, "w1 w2 w3 w4 w1 w2 w3 w4").save_html(tmp_path / "attention.html", max_states=3)
    p.goto(att.as_uri())
    expect(p.locator("body")).to_have_attribute("data-cw-ready", "1", timeout=30_000)
    root = p.locator(".cw-root.cw-attention")
    # the text box and its run button need a kernel: disabled, with the note
    expect(root.locator("input.cw-text-input")).to_be_disabled()
    expect(root.locator("button", has_text="run")).to_be_disabled()
    expect(root.locator(".cw-offline-note")).to_have_text("needs a live kernel")
    # a head that was not exported: the message says so, and no "computing" note stays on screen
    exported = set(p.evaluate("() => Object.keys(JSON.parse(document.getElementById('cw-data').textContent)"
                              ".widgets[0].states)"))
    cell = root.locator('[data-layer="1"][data-head="3"]')
    assert not any('"head":3' in k and '"layer":1' in k for k in exported), exported
    cell.click()
    msg = root.locator(".cw-message")
    expect(msg).to_contain_text("not exported", timeout=5_000)
    expect(msg).to_contain_text("needs a live kernel")
    p.wait_for_timeout(600)  # past the 150 ms delay of the computing note
    assert "computing L" not in msg.inner_text()
    assert "computing L" not in root.inner_text()
    assert p.evaluate("window.__cwLog.at(-1).found") is False
    p.screenshot(path=str(lh.ARTIFACTS / "export_offline_attention.png"), full_page=True)

    # the other views' kernel-only controls
    sk = cw.skip_trigrams(m, k=5).save_html(tmp_path / "skip.html", max_states=2)
    p.goto(sk.as_uri())
    expect(p.locator("body")).to_have_attribute("data-cw-ready", "1", timeout=30_000)
    root = p.locator(".cw-root")
    expect(root.locator("input.cw-search")).to_be_disabled()
    expect(root.locator("button.cw-more")).to_be_disabled()
    expect(root.locator("button.cw-search-btn")).to_be_disabled()
    expect(root.locator(".cw-offline-note")).to_have_text("needs a live kernel")

    pa = cw.paths(m, "w1 w2 w3 w4 w1 w2").save_html(tmp_path / "paths.html", max_states=5)
    p.goto(pa.as_uri())
    expect(p.locator("body")).to_have_attribute("data-cw-ready", "1", timeout=30_000)
    expect(p.locator("input.cw-target-search")).to_be_disabled()
    expect(p.locator(".cw-offline-note")).to_have_text("needs a live kernel")
    p.screenshot(path=str(lh.ARTIFACTS / "export_offline_paths.png"), full_page=True)
    assert p.cw_requests == [], p.cw_requests
    assert not [x for x in p.cw_log if x.startswith(("pageerror", "error"))], p.cw_log


def test_the_history_export_scrubs_every_snapshot_offline(offline_page, tmp_path):
    """`save_html` of the history view over a real (tiny) training run: offline, the slider moves through
    every snapshot and each step paints the numbers the engine gives for that snapshot
    (labharness.check_history, asked in this process)."""
    from playwright.sync_api import expect

    import circwidgets as cw
    from circwidgets.model import ModelConfig, Transformer
    from circwidgets.train.tasks import RepeatTask
    from circwidgets.train.trainer import TrainConfig, Trainer

    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=2, d_head=16, d_vocab=24, n_ctx=32, attn_only=True,
                      normalization=None, positional="shortformer", bos_token_id=0, name="tiny-history")
    Trainer(Transformer(cfg, seed=0), RepeatTask(24, 32, min_len=3, max_len=10),
            TrainConfig(steps=60, batch_size=16, lr=1e-2, warmup=5, eval_every=20, eval_batches=1, icl_n_seqs=2,
                        n_snapshots=5), out_dir=tmp_path / "run", progress=False, callbacks=[]).train()
    wh = cw.training(tmp_path / "run")
    ask = lh.local_asker({"wh": wh})
    p = offline_page
    p.goto(wh.save_html(tmp_path / "history.html").as_uri())
    expect(p.locator("body")).to_have_attribute("data-cw-ready", "1", timeout=30_000)
    root = p.locator(".cw-root.cw-history")
    lh.check_history(ask, "wh", lh.wait_drawn(root, step=wh.steps[-1]))
    root.locator("input.cw-step-slider").focus()
    p.keyboard.press("Home")
    for i, step in enumerate(wh.steps):
        if i:
            p.keyboard.press("ArrowRight")
        lh.check_history(ask, "wh", lh.wait_drawn(root, step=step, pattern__step=step))
    expect(root.locator("input.cw-step-slider")).to_have_value(str(len(wh.steps) - 1))
    root.screenshot(path=str(lh.ARTIFACTS / "export_offline_history.png"))
    assert p.cw_requests == [], p.cw_requests
    assert not [x for x in p.cw_log if x.startswith("pageerror")], p.cw_log


def test_offline_page_disables_kernel_only_controls_and_shows_undefined_values(offline_page, tmp_path):
    """The rotary offset and the "QK composed through" menu (eigenvalue view) and the composition view's
    offset are answered by a kernel only: disabled offline, with the note. A head with no score (a one-token
    text has no previous-token pairs) is painted neutral with "·", never the colour of 0; the history view
    shows "n/a" for a value that is undefined at a step (a zeroed W_O: OV positivity 0/0)."""
    import torch
    from playwright.sync_api import expect

    import circwidgets as cw
    from circwidgets.model.testing import random_model

    p = offline_page
    rot = random_model(n_layers=2, n_heads=2, d_model=16, d_head=4, d_vocab=13, n_ctx=12, positional="rotary",
                       dtype=torch.float32)
    for name, w, controls in (
            ("eigenvalues", cw.eigenvalues(rot, offset=2), ("input.cw-offset-range", "input.cw-offset",
                                                            "select.cw-through")),
            ("composition", cw.composition(rot, [1, 2, 3, 4, 1, 2, 3, 4]), ("input.cw-offset",))):
        p.goto(w.save_html(tmp_path / f"{name}.html", max_states=2).as_uri())
        expect(p.locator("body")).to_have_attribute("data-cw-ready", "1", timeout=30_000)
        root = p.locator(".cw-root")
        for sel in controls:
            expect(root.locator(sel)).to_be_disabled()
        expect(root.locator(".cw-offline-note")).to_have_text("needs a live kernel")
        p.screenshot(path=str(lh.ARTIFACTS / f"export_offline_disabled_{name}.png"), full_page=True)

    with pytest.warns(cw.CircuitWidgetWarning, match="no previous-token pairs in this text"):
        att = cw.attention(_model(), [1], score="previous_token_text")
    p.goto(att.save_html(tmp_path / "one_token.html", max_states=1).as_uri())
    expect(p.locator("body")).to_have_attribute("data-cw-ready", "1", timeout=30_000)
    cell = p.locator('.cw-attention [data-layer="0"][data-head="0"]')
    expect(cell).to_have_attribute("data-score", "nan")
    expect(cell.locator(".cw-no-score")).to_have_text("·")
    assert cell.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(238, 238, 238)"  # bg2, not bg (0)
    # what is drawn, not only the label: the one-token pattern's thumbnail is a solid block of ink, and the
    # mark must still show over it (a dark dot on a neutral disc; it was ink on ink, invisible)
    px = _pixels(cell.screenshot())
    cy, cx = px.shape[0] // 2, px.shape[1] // 2
    assert px[cy - 4:cy + 5, cx - 4:cx + 5].min() < 60, "no dark dot at the cell centre"
    ring = [px[cy + dy, cx + dx] for dy, dx in ((0, -6), (0, 6), (-6, 0), (6, 0))]
    assert min(v.min() for v in ring) > 200, f"the dot is not on a neutral disc: {ring}"
    expect(p.locator(".cw-attention .cw-legend").first).to_have_text("previous-token score (this text): no head has a "
                                                                      "value (·)")
    p.screenshot(path=str(lh.ARTIFACTS / "export_offline_no_score_cell.png"), full_page=True)

    a, b = cw.load("toy-2l-induction"), cw.load("toy-2l-induction")
    with torch.no_grad():
        b.W_O[1, 0].zero_()
    with pytest.warns(cw.CircuitWidgetWarning, match="L1H0 OV positivity undefined"):
        wh = cw.training([(100, a), (200, b)], circuit=[0, 1, 1, 0], layer=1, head=0)
    p.goto(wh.save_html(tmp_path / "history_na.html", max_states=2).as_uri())
    expect(p.locator("body")).to_have_attribute("data-cw-ready", "1", timeout=30_000)
    expect(p.locator(".cw-history .cw-ov-pos")).to_have_text("n/a")
    assert "null" not in p.locator(".cw-history .cw-circuit-readout").inner_text()
    p.locator(".cw-history").screenshot(path=str(lh.ARTIFACTS / "export_offline_history_undefined.png"))
    assert p.cw_requests == [], p.cw_requests
    assert not [x for x in p.cw_log if x.startswith(("pageerror", "error"))], p.cw_log
