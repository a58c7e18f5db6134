"""The views in Notebook 7 (`jupyter notebook`: JupyterLab's components in the classic one-notebook page)
+ headless Chromium: after every click the page paints the kernel's numbers of the new head (the views'
`data-drawn` digests against the engine, labharness.check_*). Each test sets its own state. Skipped
when the `notebook` package (Notebook 7) or Chromium is missing."""

from __future__ import annotations

import labharness as lh
import pytest

pytest.importorskip("playwright.sync_api")
pytest.importorskip("notebook")
from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.timeout(600)

NOTEBOOK_CELLS = [
    lh.HOSTILE_SETUP,
    "wa = cw.attention(model, ids)\nwa",
    "we = cw.eigenvalues(model)\nwe",
    "ws = cw.skip_trigrams(model, 0, 0)\nws",
]


@pytest.fixture(scope="module")
def nb7_page(tmp_path_factory):
    if not lh.CHROMIUM:
        pytest.skip("no Chromium found (install it with `make chromium`); browser tests skipped")
    root, home = tmp_path_factory.mktemp("nb7root"), tmp_path_factory.mktemp("nb7home")
    lh.write_notebook(root / "widgets.ipynb", NOTEBOOK_CELLS)
    server = lh.Lab(root, home, app="notebook").start()
    try:
        with lh.chromium_page("notebook7") as page:
            lh.open_and_run(page, server, "widgets.ipynb")
            yield page
    finally:
        server.stop()


def test_notebook7_attention_paints_the_clicked_heads_pattern(nb7_page):
    page = nb7_page
    att = page.locator(".cw-root.cw-attention")
    lh.kernel_exec(page, "wa.value_weighted = False\nwa.select(0, 0)")
    lh.check_attention(page, "wa", lh.wait_drawn(att, layer=0, head=0, timeout=180_000), 0, 0)
    for layer, head in ((1, 2), (0, 3), (1, 0)):
        att.locator(f'.cw-cell[data-layer="{layer}"][data-head="{head}"]').click()
        lh.check_attention(page, "wa", lh.wait_drawn(att, layer=layer, head=head), layer, head)
    expect(att.locator(".cw-tok")).to_have_count(20)


def test_notebook7_eigenvalues_and_skip_trigrams_follow_clicks(nb7_page):
    page = nb7_page
    eig, sk = page.locator(".cw-root.cw-eigen"), page.locator(".cw-root.cw-skip")
    lh.kernel_exec(page, "we.log_magnitude = False\nwe.select(0, 0)\nws.n_rows = 20\nws.select(0, 0)")
    lh.wait_drawn(eig, layer=0, head=0, timeout=180_000)
    lh.wait_drawn(sk, layer=0, head=0, timeout=180_000)
    for layer, head in ((1, 3), (0, 1)):
        eig.locator(f'.cw-cell[data-layer="{layer}"][data-head="{head}"]').click()
        lh.check_eigenvalues(page, "model", lh.wait_drawn(eig, layer=layer, head=head), layer, head)
        sk.locator(f'.cw-cell[data-layer="{layer}"][data-head="{head}"]').click()
        lh.check_skip_trigrams(page, "ws", lh.wait_drawn(sk, layer=layer, head=head), layer, head)
    # (a host settings error of Notebook 7 run from a --system-site-packages venv is not ours)
    errors = [m for m in page.cw_console if m.startswith("pageerror") and "reading 'schema'" not in m]
    assert not errors, errors
