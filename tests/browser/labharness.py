"""A JupyterLab server + headless Chromium (Playwright) for real-browser widget checks.

Used by tests/browser/conftest.py and benchmarks/bench_widget_latency.py. Recipe and pitfalls:
shared/recipes/browser-e2e.md (system Chromium, isolated Jupyter dirs, `window.jupyterapp`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]
TOKEN = "circwidgets-e2e"
ARTIFACTS = Path(os.environ.get("CW_ARTIFACTS", REPO / "artifacts" / "browser"))
KERNEL_IDLE = """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle'; }"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_notebook(path: Path, cells: list[str]) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


# jupyter_server leaves Nagle's algorithm on for the kernel websocket: a reply that follows the
# kernel's "busy" status within a delayed-ACK window waits up to 40 ms (measured here). The
# latency benchmark reports both: this server config sets TCP_NODELAY on kernel websockets opened
# while the flag file exists (so one server and one kernel serve both measurements).
NODELAY_CONFIG = """
import os
from jupyter_server.services.kernels.websocket import KernelWebsocketHandler as _K
_open = _K.open
async def _open_maybe_nodelay(self, *args, **kwargs):
    if os.path.exists({flag!r}):
        self.set_nodelay(True)
    return await _open(self, *args, **kwargs)
_K.open = _open_maybe_nodelay
"""


class Lab:
    """One JupyterLab server on a free port, with its own config/data/runtime/settings dirs.

    nodelay_switch: install NODELAY_CONFIG; `set_nodelay(True)` then applies to websockets opened later."""

    def __init__(self, root: Path, home: Path, nodelay_switch: bool = False):
        self.root, self.home, self.nodelay_switch = root, home, nodelay_switch
        self._flag = home / "nodelay.on"
        self.proc: subprocess.Popen | None = None
        self.base = ""

    def set_nodelay(self, on: bool) -> None:
        if on:
            self._flag.touch()
        else:
            self._flag.unlink(missing_ok=True)

    def start(self, timeout: float = 120.0) -> Lab:
        settings = self.home / "settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True, exist_ok=True)  # no "fetch news?" toast
        if self.nodelay_switch:
            (self.home / "cfg").mkdir(parents=True, exist_ok=True)
            (self.home / "cfg" / "jupyter_server_config.py").write_text(NODELAY_CONFIG.format(flag=str(self._flag)))
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env = dict(os.environ, JUPYTER_CONFIG_DIR=str(self.home / "cfg"), JUPYTER_DATA_DIR=str(self.home / "data"),
                   JUPYTER_RUNTIME_DIR=str(self.home / "rt"), IPYTHONDIR=str(self.home / "ipy"),
                   PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                   OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        port = _free_port()
        self.log_path = self.home / "lab.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}",
             f"--ServerApp.root_dir={self.root}", "--LabApp.expose_app_in_browser=True",
             f"--LabApp.user_settings_dir={self.home / 'settings'}", f"--LabApp.workspaces_dir={self.home / 'ws'}",
             "--LabApp.news_url=None"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.root)
        self.base = f"http://127.0.0.1:{port}"
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            try:
                urllib.request.urlopen(f"{self.base}/api/status?token={TOKEN}", timeout=2)
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("jupyter lab exited:\n" + self.log_path.read_text()) from None
                time.sleep(0.25)
        self.stop()
        raise RuntimeError("jupyter lab did not start:\n" + self.log_path.read_text())

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None
            self._log.close()

    def url(self, notebook: str) -> str:
        return f"{self.base}/lab/tree/{notebook}?token={TOKEN}"


def launch_browser(p):
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)


def open_and_run(page, lab: Lab, notebook: str, timeout_ms: int = 180_000) -> None:
    """Open a notebook, wait for an idle kernel, run all cells."""
    page.goto(lab.url(notebook))
    page.wait_for_function(KERNEL_IDLE, timeout=timeout_ms)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")


def cell(page, i: int):
    return page.locator(".jp-Notebook .jp-Cell").nth(i)


def rerun_cell(page, i: int) -> None:
    """Run cell i in place (Control+Enter; Shift+Enter would add a cell)."""
    cell(page, i).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Control+Enter")


def rerun_and_read(page, i: int, text: str, timeout: int = 60_000) -> str:
    """Re-run cell i, wait until its output contains `text`, return the output's text."""
    from playwright.sync_api import expect

    rerun_cell(page, i)
    out = cell(page, i).locator(".jp-OutputArea-output")
    expect(out).to_contain_text(text, timeout=timeout)
    return out.inner_text()


# ---------------------------------------------------------------------------- a model with hostile tokens
# token strings that would be markup if a front end ever wrote one as HTML (they must show as text)
HOSTILE = ["<img src=x onerror=alert(1)>", "</script>", "<b>bold</b>", "<script>alert(2)</script>", " lead",
           "tab\there", "new\nline", "$x$", "&amp;"]
# the first notebook cell of the browser tests: `model` (2 layers x 4 heads, a word-level tokenizer
# whose vocabulary holds HOSTILE) and `ids` (20 tokens: BOS, the hostile ones, a repeated run)
HOSTILE_SETUP = f'''import torch, warnings
import circwidgets as cw
from tokenizers import Tokenizer as RustTokenizer, models, pre_tokenizers
from circwidgets.model import Tokenizer
from circwidgets.model.testing import random_model
HOSTILE = {HOSTILE!r}
vocab = ["<bos>"] + HOSTILE + [f"w{{i}}" for i in range(30)]
rt = RustTokenizer(models.WordLevel({{s: i for i, s in enumerate(vocab)}}, unk_token="<bos>"))
rt.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
model = random_model(n_layers=2, n_heads=4, d_model=32, d_head=8, d_vocab=len(vocab), n_ctx=64, seed=1,
                     dtype=torch.float32)
model.tokenizer = Tokenizer(rt)
ids = [0] + list(range(1, 10)) + [10, 11, 12, 13, 10, 11, 12, 13, 2, 1]'''


def vis(s: str) -> str:
    """A token as the front ends show it (visible whitespace)."""
    return s.replace(" ", "\u2423").replace("\n", "\u21b5").replace("\t", "\u21e5")
