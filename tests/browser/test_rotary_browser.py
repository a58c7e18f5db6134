"""The eigenvalue view of a rotary, grouped-query, RMSNorm model in real JupyterLab + headless Chromium:
the offset control and the offset profile (a planted previous-token head peaks at Δ = 1), the kernel's
offset and QK positivity following the page. One server, one notebook, one page for the module."""

from __future__ import annotations

import re

import labharness as lh
import pytest

pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.timeout(600)

SETUP = '''import torch
import circwidgets as cw
from circwidgets.model import rotary
from circwidgets.model.testing import random_model
m = random_model(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, d_head=8, d_vocab=50, n_ctx=16,
                 positional="rotary", rotary_base=100.0, normalization="RMS", seed=2, dtype=torch.float32)
with torch.no_grad():  # a previous-token head L0H2: every token shares one direction, q R_1 = k along it
    m.W_E[:, 0] += 3.0
    key = torch.zeros(8)
    key[0], key[4] = 4.0, 4.0
    m.W_Q[0, 2, 0] = key @ rotary.rotation_matrix(m.cfg, 1, dtype=torch.float32).T
    m._W_K[0, 1, 0] = key  # K/V head 1 serves query heads 2 and 3
print("SETUP OK")'''
CHECK = '''print(f"KERNEL off={we.offset} shown={we.shown.get('variant')} head={we.layer},{we.head} "
      f"qk={float(we._pos['qk'][we.layer, we.head]):.6f} err={we.error!r}")'''
COMP_CHECK = '''from circwidgets import engine
w = we
_want = engine.k_composition_positivity(m, (0, 2), offset=w.offset)[w.layer, w.head]
print(f"COMP through={w.through} off={w.offset} head={w.layer},{w.head} want={float(_want):.6f} err={w.error!r}")'''
NOTEBOOK_CELLS = [SETUP, "we = cw.eigenvalues(m, layer=0, head=2)\nwe", CHECK, COMP_CHECK]
CHECK_CELL, COMP_CELL = 2, 3


def kernel_says(page, text: str, timeout: int = 60_000) -> str:
    return lh.rerun_and_read(page, CHECK_CELL, text, timeout)


def test_offset_control_and_profile(page):
    eig = page.locator(".cw-root.cw-eigen")
    expect(eig).to_have_attribute("data-shown-head", "2", timeout=120_000)
    expect(eig).to_have_attribute("data-offset", "0")
    expect(eig.locator("canvas.cw-eig-canvas")).to_have_count(2)  # OV and QK at Δ (no positional QK)
    prof = eig.locator("canvas.cw-profile-canvas")
    expect(prof).to_be_visible()
    expect(prof).to_have_attribute("data-peak", "1")  # the planted previous-token head
    expect(prof).to_have_attribute("data-n", "16")
    # type an offset: the kernel recomputes QK positivity at it and the page shows the kernel's number
    box = eig.locator("input.cw-offset")
    box.fill("3")
    box.press("Enter")
    expect(eig).to_have_attribute("data-offset", "3", timeout=30_000)
    expect(eig.locator(".cw-title")).to_contain_text("QK at Δ=3")
    out = kernel_says(page, "off=3 shown=[3]")
    qk = float(re.search(r"qk=([-\d.]+)", out).group(1))
    shown = eig.locator('.cw-eig-pos[data-circuit="qk"]').inner_text()
    assert abs(float(re.search(r"positivity (\S+)", shown).group(1)) - qk) < 2e-3
    # click the profile at Δ = 1
    g = prof.evaluate("e => ({w: e.getBoundingClientRect().width, n: +e.dataset.n})")
    prof.click(position={"x": 6 + (g["w"] - 12) * 1 / (g["n"] - 1), "y": 20})
    expect(eig).to_have_attribute("data-offset", "1", timeout=30_000)
    kernel_says(page, "off=1 shown=[1]")
    # another head: its own profile arrives (only the selected head's)
    eig.locator('[data-layer="1"][data-head="0"]').click()
    expect(eig).to_have_attribute("data-shown-layer", "1", timeout=30_000)
    kernel_says(page, "head=1,0")
    eig.scroll_into_view_if_needed()
    eig.screenshot(path=str(lh.ARTIFACTS / "eigenvalues_rotary.png"))


def test_qk_composed_through_follows_the_offset(page):
    """"QK composed through" on a rotary model (it was a dead control: the engine wanted an offset the page
    cannot send): pick a later head and the previous-token head, and the third plot is that head's QK circuit
    composed through L0H2 at the view's Δ; typing another Δ recomputes it. The page's positivity is the
    engine's `k_composition_positivity` at that Δ."""
    eig = page.locator(".cw-root.cw-eigen")
    eig.locator('[data-layer="1"][data-head="1"]').click()
    expect(eig).to_have_attribute("data-shown-head", "1", timeout=30_000)
    eig.locator("select.cw-through").select_option("0,2")
    comp = eig.locator('.cw-eig-pos[data-circuit="qk_comp"]')
    expect(comp).to_be_visible(timeout=30_000)
    expect(eig.locator(".cw-eig-name").nth(2)).to_contain_text("QK composed through L0H2 at Δ")
    for off in ("2", "5"):
        box = eig.locator("input.cw-offset")
        box.fill(off)
        box.press("Enter")
        expect(eig).to_have_attribute("data-offset", off, timeout=30_000)
        out = lh.rerun_and_read(page, COMP_CELL, f"COMP through=[0, 2] off={off} head=1,1")
        assert "err=''" in out, out
        want = float(re.search(r"want=([-\d.]+)", out).group(1))
        expect(comp).not_to_contain_text("n/a")
        shown = float(re.search(r"positivity (\S+)", comp.inner_text()).group(1))
        assert abs(shown - want) < 2e-3, (off, shown, want)
    assert eig.locator("canvas.cw-eig-canvas").count() == 3
    eig.scroll_into_view_if_needed()
    eig.screenshot(path=str(lh.ARTIFACTS / "eigenvalues_rotary_composed.png"))
