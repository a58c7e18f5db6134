"""The views in marimo (a real `marimo run` server + headless Chromium): clicks reach the kernel and
the page redraws the NEW head's data. marimo applies a kernel update key by key and fires each
`change:` event at once (JupyterLab sets every key first), so a view that redrew on `change:shown`
drew the previous head's pattern under the new head's title; the views now redraw once per update
(js/src/lib/redraw.js). Skipped when marimo or Chromium is missing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import labharness as lh
import pytest

pytest.importorskip("playwright.sync_api")
pytest.importorskip("marimo")
from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.timeout(600)

APP = '''import marimo

app = marimo.App()


@app.cell
def _():
    import json

    import marimo as mo
    import torch

    import circwidgets as cw
    from circwidgets.model.testing import random_model

    model = random_model(n_layers=2, n_heads=4, d_model=32, d_head=8, d_vocab=40, n_ctx=64, seed=1,
                         dtype=torch.float32)
    ids = [0] + list(range(1, 10)) + [10, 11, 12, 13, 10, 11, 12, 13, 2, 1]
    att = mo.ui.anywidget(cw.attention(model, ids))
    eig = mo.ui.anywidget(cw.eigenvalues(model))
    # every head's weight of query 5 on key 2, and its eigenvalue count: what the page must show
    wa = att.widget
    want = {f"{l},{h}": float(wa.data.head(l, h)[5, 2]) for l in range(2) for h in range(4)}
    return att, eig, json, mo, want


@app.cell
def _(att, eig, json, mo, want):
    mo.vstack([mo.md("EXPECTED " + json.dumps(want)), att, eig])
    return


if __name__ == "__main__":
    app.run()
'''


@pytest.fixture(scope="module")
def marimo_page(tmp_path_factory):
    if not lh.CHROMIUM:
        pytest.skip("no Chromium found (install it with `make chromium`); browser tests skipped")
    root = tmp_path_factory.mktemp("marimo")
    (root / "app.py").write_text(APP, encoding="utf-8")
    port = lh._free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(lh.REPO), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", HOME=str(root),
               # ipywidgets sends the keys of one update in set order (string hashes): with this seed
               # `shown` comes before `pattern`, the order that made the old views draw stale data
               PYTHONHASHSEED="1")
    log = open(root / "marimo.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "marimo", "run", str(root / "app.py"), "--headless",
                             "--host", "127.0.0.1", "--port", str(port), "--no-token"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        t_end = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(base, timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > t_end:
                    pytest.fail("marimo did not start:\n" + (root / "marimo.log").read_text())
                time.sleep(0.5)
        with lh.chromium_page("marimo", height=1400) as page:
            page.goto(base)
            yield page
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def local_numbers():
    """The app's model and views rebuilt in this process (same seed): the numbers the page must paint."""
    import torch

    import circwidgets as cw
    from circwidgets.model.testing import random_model

    model = random_model(n_layers=2, n_heads=4, d_model=32, d_head=8, d_vocab=40, n_ctx=64, seed=1,
                         dtype=torch.float32)
    ids = [0] + list(range(1, 10)) + [10, 11, 12, 13, 10, 11, 12, 13, 2, 1]
    return lh.local_asker({"model": model, "wa": cw.attention(model, ids), "torch": torch})


def test_marimo_redraws_the_clicked_heads_data(marimo_page):
    page = marimo_page
    ask = local_numbers()
    att = page.locator(".cw-root.cw-attention")
    expect(att).to_have_attribute("data-shown-layer", "0", timeout=120_000)
    text = page.get_by_text("EXPECTED").first.inner_text()
    want = json.loads(text.split("EXPECTED", 1)[1])
    canvas = att.locator("canvas.cw-pattern")
    for layer, head in ((1, 2), (0, 3), (1, 0), (0, 1)):
        att.locator(f'.cw-cell[data-layer="{layer}"][data-head="{head}"]').click()
        # what the canvas painted is the new head's pattern (not the previous head's under a new title)
        lh.check_attention(ask, "wa", lh.wait_drawn(att, layer=layer, head=head), layer, head)
        expect(att).to_have_attribute("data-shown-layer", str(layer), timeout=30_000)
        expect(att).to_have_attribute("data-shown-head", str(head), timeout=30_000)
        g = {k: float(canvas.get_attribute(f"data-{k}")) for k in ("ml", "mt", "side", "n")}
        step = g["side"] / g["n"]
        canvas.hover(position={"x": g["ml"] + 2.5 * step, "y": g["mt"] + 5.5 * step})
        ro = att.locator(".cw-pattern-readout")
        expect(ro).to_contain_text("query [5]")
        shown = float(re.search(r"weight (\S+)", ro.inner_text()).group(1))
        expect_w = want[f"{layer},{head}"]
        assert abs(shown - expect_w) < 2e-3 + 2e-3 * abs(expect_w), (layer, head, shown, expect_w)
        assert f"layer {layer} head {head}" in att.locator(".cw-panel-title").inner_text()
    # not only the last paint: every paint since the page opened showed its own head's numbers
    assert lh.check_attention_log(ask, "wa", att) >= 5
    eig = page.locator(".cw-root.cw-eigen")
    for layer, head in ((1, 3), (0, 2), (1, 1)):
        eig.locator(f'.cw-cell[data-layer="{layer}"][data-head="{head}"]').click()
        lh.check_eigenvalues(ask, "model", lh.wait_drawn(eig, layer=layer, head=head), layer, head)
    expect(eig).to_have_attribute("data-shown-layer", "1", timeout=30_000)
    expect(eig).to_have_attribute("data-shown-head", "1")
    assert not [m for m in page.cw_console if m.startswith("pageerror")], page.cw_console
