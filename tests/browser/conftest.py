"""Real-browser fixtures: one JupyterLab server and one Chromium page per test module.

A module defines `NOTEBOOK_CELLS` (a list of code cells); the `notebook` fixture writes it, opens
it in JupyterLab and runs all cells once. Tests then share that page (in file order). Every test
leaves a screenshot under artifacts/browser/ and the module leaves the browser console log there.
Skipped, with the reason printed, when no Chromium is installed (CI installs it: `make chromium`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import labharness as lh  # noqa: E402


@pytest.fixture(scope="module")
def lab(request, tmp_path_factory):
    if not lh.CHROMIUM:
        pytest.skip("no Chromium found (install it with `make chromium`); browser tests skipped")
    pytest.importorskip("playwright.sync_api")
    root, home = tmp_path_factory.mktemp("nbroot"), tmp_path_factory.mktemp("jhome")
    lh.write_notebook(root / "widgets.ipynb", request.module.NOTEBOOK_CELLS)
    server = lh.Lab(root, home).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser_page(lab, request):
    from playwright.sync_api import sync_playwright

    lh.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = Path(request.module.__file__).stem
    log: list[str] = []
    dialogs: list[str] = []
    with sync_playwright() as p:
        browser = lh.launch_browser(p)
        page = lh.logged_page(browser, log)

        def on_dialog(d):
            dialogs.append(f"{d.type}: {d.message}")
            d.dismiss()

        page.on("dialog", on_dialog)
        page.cw_console, page.cw_dialogs = log, dialogs
        try:
            lh.open_and_run(page, lab, "widgets.ipynb")
            yield page
        finally:
            (lh.ARTIFACTS / f"{name}.console.log").write_text("\n".join(log + [f"DIALOG {d}" for d in dialogs]))
            browser.close()


@pytest.fixture
def page(browser_page, request):
    yield browser_page
    safe = request.node.name.replace("/", "_").replace("[", "_").replace("]", "")
    try:
        browser_page.screenshot(path=str(lh.ARTIFACTS / f"{safe}.png"), full_page=True)
    except Exception as e:  # noqa: BLE001 - a failed screenshot must not hide the test's own result
        print(f"screenshot failed: {e}")
