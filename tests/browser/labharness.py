"""A JupyterLab server + headless Chromium (Playwright) for real-browser widget checks.

Used by tests/browser/conftest.py and benchmarks/bench_widget_latency.py. Recipe and pitfalls:
the project's browser-test conventions (system Chromium, isolated Jupyter dirs, `window.jupyterapp`).
"""

from __future__ import annotations

import contextlib
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

    nodelay_switch: install NODELAY_CONFIG; `set_nodelay(True)` then applies to websockets opened later.
    app: "jupyterlab" or "notebook" (Notebook 7: the same front-end machinery, its own page layout)."""

    def __init__(self, root: Path, home: Path, nodelay_switch: bool = False, app: str = "jupyterlab"):
        self.root, self.home, self.nodelay_switch, self.app = root, home, nodelay_switch, app
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
        cls = "LabApp" if self.app == "jupyterlab" else "JupyterNotebookApp"
        extra = [] if self.app == "jupyterlab" else self._venv_dirs(env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.app, "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}",
             f"--ServerApp.root_dir={self.root}", f"--{cls}.expose_app_in_browser=True",
             f"--{cls}.user_settings_dir={self.home / 'settings'}", f"--{cls}.workspaces_dir={self.home / 'ws'}",
             *(["--LabApp.news_url=None"] if self.app == "jupyterlab" else extra)],
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

    def _venv_dirs(self, env: dict) -> list[str]:
        """In a virtual environment made with --system-site-packages, Notebook 7 looks for JupyterLab's
        settings schemas, themes and extensions under the venv only: merge both prefixes' schemas and
        point at the base prefix's themes and extensions (nothing to do in a plain environment)."""
        if sys.prefix == sys.base_prefix:
            return []
        base = Path(sys.base_prefix) / "share" / "jupyter"
        env["JUPYTER_PATH"] = os.pathsep.join([str(base), env.get("JUPYTER_PATH", "")])
        merged = self.home / "schemas"
        for pre in (base, Path(sys.prefix) / "share" / "jupyter"):
            if (pre / "lab" / "schemas").is_dir():
                shutil.copytree(pre / "lab" / "schemas", merged, dirs_exist_ok=True)
        out = [f"--JupyterNotebookApp.schemas_dir={merged}"]
        if (base / "lab" / "themes").is_dir():
            out.append(f"--JupyterNotebookApp.themes_dir={base / 'lab' / 'themes'}")
        return out

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
        where = "lab/tree" if self.app == "jupyterlab" else "notebooks"
        return f"{self.base}/{where}/{notebook}?token={TOKEN}"


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


# ---------------------------------------------------------------------------- what the views painted
# Every view publishes a digest of the arrays it painted as JSON in its root's `data-drawn`
# (js/src/lib/digest.js). The helpers below wait for a digest, ask the kernel for the engine's
# numbers of the same head and compare. Kernel code runs through the page's own kernel connection
# (JupyterLab's `requestExecute`), so no notebook cell is re-run and no cell output is raced.
KERNEL_EXEC = """async (code) => {
  const w = window.jupyterapp.shell.currentWidget;
  const k = w.sessionContext.session.kernel;
  const fut = k.requestExecute({code, silent: false, store_history: false});
  let out = "", err = "";
  fut.onIOPub = (msg) => {
    const t = msg.header.msg_type;
    if (t === "stream") out += msg.content.text;
    else if (t === "error") err += `${msg.content.ename}: ${msg.content.evalue}\\n${msg.content.traceback.join("\\n")}`;
  };
  await fut.done;
  return {out, err};
}"""


def kernel_exec(page, code: str) -> str:
    """Run `code` in the open notebook's kernel (not as a cell); return its stdout, raise on an error."""
    res = page.evaluate(KERNEL_EXEC, code)
    if res["err"]:
        raise AssertionError(f"kernel error running\n{code}\n{res['err']}")
    return res["out"]


def kernel_json(page, code: str):
    """Run `code` (which prints one JSON document last) in the kernel; return it parsed.
    `page` may also be a callable `code -> parsed JSON` (`local_asker`: a page without a kernel)."""
    if callable(page):
        return page(code)
    return json.loads(kernel_exec(page, code).strip().splitlines()[-1])


def local_asker(namespace: dict):
    """For pages without a kernel (exported HTML): run the check code in this process, in
    `namespace` (the objects the page was exported from)."""
    import contextlib
    import io

    def ask(code: str):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(code, namespace)  # noqa: S102 - test code written by the helpers above
        return json.loads(buf.getvalue().strip().splitlines()[-1])

    return ask


WAIT_DRAWN = """([el, want]) => {
  if (!el.dataset.drawn) return false;
  const d = JSON.parse(el.dataset.drawn);
  return Object.entries(want).every(([path, v]) => {
    let x = d;
    for (const p of path.split(".")) { if (x === null || x === undefined) return false; x = x[p]; }
    return JSON.stringify(x) === JSON.stringify(v);
  });
}"""


def drawn(loc) -> dict:
    """The digest a view's root published (what it painted last)."""
    return json.loads(loc.get_attribute("data-drawn"))


def wait_drawn(loc, timeout: int = 30_000, **want) -> dict:
    """Wait until the digest of view `loc` has `want` (keys are dotted paths: `details.pair`, values
    compared as JSON); return the digest."""
    loc.first.wait_for(state="attached", timeout=timeout)
    want = {k.replace("__", "."): v for k, v in want.items()}
    loc.page.wait_for_function(WAIT_DRAWN, arg=[loc.element_handle(timeout=timeout), want], timeout=timeout)
    return drawn(loc)


def close(a, b, rel: float, abs_: float) -> bool:
    return a is not None and b is not None and abs(a - b) <= abs_ + rel * abs(b)


def assert_cells(got: list, want: list, what: str, rel: float = 3e-3, abs_: float = 2e-3) -> None:
    """Sampled [i, j, value] cells of a painted pattern against the kernel's values at those cells
    (float16 transfer: about 1e-3 relative)."""
    assert len(got) == len(want) and got, (what, got, want)
    bad = [(i, j, v, w) for (i, j, v), w in zip(got, want) if not close(v, w, rel, abs_)]
    assert not bad, f"{what}: painted cells differ from the kernel's (i, j, painted, kernel): {bad}"


def check_attention(page, var: str, d: dict, layer: int, head: int, vw: bool = False) -> None:
    """The attention view `var` painted head (layer, head)'s pattern: the digest's cells are the
    kernel's pattern of that head (the engine's `AttentionData` the widget computed)."""
    assert (d["layer"], d["head"], d["vw"]) == (layer, head, int(vw)), d
    cells = [[i, j] for i, j, _ in d["cells"]]
    want = kernel_json(page, f"import json\n_P = {var}.data.head({layer}, {head}, value_weighted={bool(vw)})\n"
                             f"print(json.dumps([float(_P[i, j]) for i, j in {cells!r}]))")
    assert_cells(d["cells"], want, f"{var} L{layer}H{head}")


def check_attention_log(page, var: str, loc) -> int:
    """Every paint the attention view `loc` logged (`cwDrawnLog`, lib/digest.js) showed the numbers of the
    head it was titled with: no transient paint of one head's data under another head's title."""
    log = [json.loads(x) for x in loc.evaluate("el => el.cwDrawnLog || []")]
    for d in log:
        check_attention(page, var, d, d["layer"], d["head"], bool(d["vw"]))
    return len(log)


def check_eigenvalues(page, model_var: str, d: dict, layer: int, head: int) -> None:
    """The eigenvalue view plotted head (layer, head)'s eigenvalues: each circuit's plotted list matches
    `engine.circuits.eigenvalues` of that head (as a multiset; float32 transfer) and is ordered by
    decreasing magnitude."""
    assert (d["layer"], d["head"]) == (layer, head), d
    want = kernel_json(page, "import json\nfrom circwidgets.engine import circuits as _C\n"
                             f"print(json.dumps({{c: [[float(z.real), float(z.imag)] for z in _C.eigenvalues("
                             f"{model_var}, {layer}, {head}, circuit=c, full=True)] for c in {sorted(d['eigs'])!r}}}))")
    for c, pts in d["eigs"].items():
        ref = want[c]
        assert len(pts) == len(ref), (c, pts, ref)
        scale = max(1e-6, max(abs(complex(*z)) for z in ref))
        left = [complex(*z) for z in ref]
        for re_, im_ in pts:
            z = complex(re_, im_)
            k = min(range(len(left)), key=lambda t: abs(left[t] - z))
            assert abs(left[k] - z) <= 2e-3 * scale, f"{c} L{layer}H{head}: plotted {z} not among the kernel's {ref}"
            left.pop(k)
        mags = [abs(complex(*z)) for z in pts]
        assert all(a >= b - 2e-3 * scale for a, b in zip(mags, mags[1:])), (c, mags)


def check_skip_trigrams(page, var: str, d: dict, layer: int, head: int) -> None:
    """The skip-trigram view rendered head (layer, head)'s rows: source, destination and output ids
    equal the engine's table of that head, strengths within float rounding."""
    assert (d["layer"], d["head"]) == (layer, head), d
    n = len(d["rows"])
    want = kernel_json(page, f"import json\n_t = {var}.table({layer}, {head})\n"
                             "print(json.dumps([[r.source, float(r.strength), list(r.dests), list(r.outs)]"
                             f" for r in _t.rows(0, {n})]))")
    assert [[r[0], r[2], r[3]] for r in d["rows"]] == [[w[0], w[2], w[3]] for w in want], (d["rows"][:3], want[:3])
    assert all(close(r[1], w[1], 1e-3, 1e-6) for r, w in zip(d["rows"], want))


def check_composition(page, var: str, d: dict) -> None:
    """The composition view painted the kernel's scores: sampled map cells (the focused head's partners,
    `[layer, head, value]`) against `composition_scores(model, kind, baseline=minus)` at the pair each
    cell stands for, the pair's score against the engine's and its patterns against the kernel's
    patterns of the two heads."""
    m, det = d["map"], d["details"]
    fl, fh = m["focus"]
    pairs = [[c[0], c[1], fl, fh] if c[0] < fl else [fl, fh, c[0], c[1]] for c in m["cells"] if c[0] != fl]
    assert all(c[2] is None for c in m["cells"] if c[0] == fl), m["cells"]  # its own layer: no score
    off = f", offset={m['offset']!r}" if m.get("offset") is not None else ""
    ij1, ij2 = ([c[:2] for c in det.get(k, [])] for k in ("p1", "p2"))
    code = (f"import json\nfrom circwidgets.engine.composition import composition_scores as _cs\n"
            f"_S = _cs({var}.model, {m['kind']!r}, baseline={bool(m['minus'])}{off})\n"
            f"_R = _cs({var}.model, {det.get('kind', m['kind'])!r}{off if det.get('kind', m['kind']) != 'v' else ''})\n"
            f"_pr = {det.get('pair')!r}\n"
            f"_pp = (lambda a, b: [[float({var}.data.head(*a)[i, j]) for i, j in {ij1!r}],"
            f" [float({var}.data.head(*b)[i, j]) for i, j in {ij2!r}]])"
            f"(_pr[:2], _pr[2:]) if _pr else [[], []]\n"
            f"print(json.dumps({{'map': [float(_S[tuple(c)]) for c in {pairs!r}],"
            " 'raw': float(_R[tuple(_pr)]) if _pr else None, 'p': _pp}))")
    want = kernel_json(page, code)
    cells = [c for c in m["cells"] if c[0] != fl]
    assert len(cells) == len(want["map"]) and cells, (m, want)
    for c, w in zip(cells, want["map"]):
        assert close(c[2], w, 2e-4, 2e-5), (m["kind"], m["focus"], c, w)
    if det.get("pair"):
        assert close(det["raw"], want["raw"], 2e-4, 2e-5), (det, want["raw"])
        assert_cells(det["p1"], want["p"][0], f"pair {det['pair']} earlier head")
        assert_cells(det["p2"], want["p"][1], f"pair {det['pair']} later head")


def check_history(page, var: str, d: dict) -> None:
    """The history view `var` painted the numbers of the step its digest names: the engine functions
    called on that snapshot's file, loaded afresh (circuit positivities and K-composition, the selected
    head's scores), the pattern's sampled cells from the snapshot's own forward pass, and the curves'
    values at the marker from the trainer's metrics (the last record at or before the step)."""
    pat = d["pattern"]
    assert pat["step"] == d["step"], d  # the pattern painted is the marked step's
    cells = [[i, j] for i, j, _ in pat["cells"]]
    l1, h1, l2, h2 = d["circuit"]
    code = (f"import json\nimport circwidgets as cw\nfrom circwidgets import engine\n"
            f"_m = cw.load([s.path for s in {var}.run.snapshots if s.step == {d['step']}][0])\n"
            f"_c = engine.circuit_measures(_m, ({l1}, {h1}), ({l2}, {h2}))\n"
            f"_s = engine.all_head_scores(_m, n_seqs=8, seed=0)\n"
            f"_, _cache = _m.run_with_cache({var}.tokens[None])\n"
            f"_P = _cache['pattern', {pat['layer']}][0, {pat['head']}].detach()\n"
            f"_r = [r for r in ({var}.run.metrics or []) if 'induction' in r and r['step'] <= {d['step']}][-1:]\n"
            f"print(json.dumps({{'ov': _c.ov.positivity, 'k_qk': _c.k_qk.positivity, 'k_comp': _c.k_composition,"
            f" 'ind': float(_s['induction'][{pat['layer']}, {pat['head']}]),"
            f" 'prev': float(_s['previous_token'][{pat['layer']}, {pat['head']}]),"
            f" 'cells': [float(_P[i, j]) for i, j in {cells!r}],"
            f" 'm_ind': _r[0]['induction'][{pat['layer']}][{pat['head']}] if _r else None,"
            f" 'm_loss': _r[0]['val_loss'] if _r else None}}))")
    want = kernel_json(page, code)
    for k in ("ov", "k_qk", "k_comp"):
        assert close(d[k], want[k], 1e-4, 1e-5), (k, d[k], want[k])
    assert close(d["scores"]["induction"], want["ind"], 1e-4, 1e-5), (d["scores"], want)
    assert close(d["scores"]["previous_token"], want["prev"], 1e-4, 1e-5), (d["scores"], want)
    assert_cells(pat["cells"], want["cells"], f"{var} pattern at step {d['step']}")
    if d["source"] == "metrics":
        assert close(d["marker"]["induction"], want["m_ind"], 1e-4, 1e-6), (d["marker"], want)
        assert close(d["marker"]["loss"], want["m_loss"], 1e-4, 1e-6), (d["marker"], want)


def check_paths(page, var: str, d: dict, layer: int, head: int) -> None:
    """The paths view drew the kernel's terms (label, value) and head (layer, head)'s pattern."""
    want = kernel_json(page, f"import json\nprint(json.dumps({{'bars': [[t['label'], t['value']] for t in {var}.terms],"
                             f" 'logit': {var}.model_logit, 'position': {var}.position,"
                             f" 'p': [float({var}.data.head({layer}, {head})[i, j]) for i, j in "
                             f"{[c[:2] for c in d['pattern']['cells']]!r}]}}))")
    assert d["position"] == want["position"], (d["position"], want["position"])
    assert [b[0] for b in d["bars"]] == [b[0] for b in want["bars"]]
    assert all(close(a[1], b[1], 1e-4, 1e-6) for a, b in zip(d["bars"], want["bars"])), (d["bars"], want["bars"])
    assert close(sum(b[1] for b in d["bars"]), want["logit"], 1e-3, 1e-3), (d["bars"], want["logit"])
    assert (d["pattern"]["layer"], d["pattern"]["head"]) == (layer, head), d["pattern"]
    assert_cells(d["pattern"]["cells"], want["p"], f"paths L{layer}H{head}")


def check_ablation(page, var: str, d: dict, tokens_expr: str) -> None:
    """The ablation view drew the engine's loss with its heads off (`ablate_heads`, recomputed here)
    and the kernel's per-token losses of that run."""
    assert d["cuts"] == [], d["cuts"]  # the engine call below ablates heads only
    off = [tuple(x) for x in d["off"]]
    kind = d["ablation"]  # the state the drawn loss was computed for (the widget's `computed_for`)
    want = kernel_json(page, "import json, torch\nfrom circwidgets.engine import interventions as _I\n"
                             f"_t = torch.tensor([{tokens_expr}])\n"
                             f"_e = _I.ablate_heads({var}.model, _t, {off!r}, kind={kind!r}).intervened "
                             f"if {off!r} else {var}.clean_loss\n"
                             f"_tl = [float(x) for x in {var}.run.token_loss[0][:32]]\n"
                             "print(json.dumps({'loss': float(_e), 'tl': _tl}))")
    assert close(d["loss"], want["loss"], 1e-5, 1e-5), (d["loss"], want["loss"])
    assert len(d["tokenLoss"]) == len(want["tl"]), (d["tokenLoss"], want["tl"])
    assert all(close(a, b, 1e-4, 1e-5) for a, b in zip(d["tokenLoss"], want["tl"])), (d["tokenLoss"], want["tl"])


def logged_page(browser, log: list[str], height: int = 1000):
    """A new 1400-px-wide page whose console messages and page errors are appended to `log`."""
    page = browser.new_page(viewport={"width": 1400, "height": height})
    page.on("console", lambda m: log.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: log.append(f"pageerror: {e}"))
    return page


def save_page_artifacts(page, name: str, log: list[str]) -> None:
    """Full-page screenshot `artifacts/browser/<name>.png` and the console log beside it."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    (ARTIFACTS / f"{name}.console.log").write_text("\n".join(log))


@contextlib.contextmanager
def chromium_page(name: str, height: int = 1000):
    """A headless Chromium page whose console goes to `page.cw_console`; on exit (also on failure) the page's
    screenshot and console log are saved as `artifacts/browser/<name>.*` and the browser is closed."""
    from playwright.sync_api import sync_playwright

    log: list[str] = []
    with sync_playwright() as p:
        browser = launch_browser(p)
        page = logged_page(browser, log, height=height)
        page.cw_console = log
        try:
            yield page
        finally:
            save_page_artifacts(page, name, log)
            browser.close()
