# ruff: noqa: E501  (the patches below are easier to check on one line each)
"""Hand-written mutants: apply each one (a text patch, in place), run the tests meant to catch it,
restore, and print which were killed.

    python tests/mutation/run_mutants.py            # all mutants
    python tests/mutation/run_mutants.py --list
    python tests/mutation/run_mutants.py eig_js_first_head copying_first_n
    python tests/mutation/run_mutants.py --no-browser   # engine mutants only

A mutant of a front-end file (js/src/...) is rebuilt into circwidgets/static/ (`npm run build`) before
its browser tests run; every touched file, the bundles included, is restored byte for byte afterwards
(also on Ctrl-C). A mutant is "killed" when its tests fail, "SURVIVED" when they pass, "not run" when
they were skipped (e.g. no Chromium, no marimo) or could not start (errors without a failing test).
Each run's pytest output is kept in artifacts/mutation/NAME.log. The patch must match exactly
once: a stale patch (the code moved on) is reported as "stale patch", never silently skipped.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STATIC = REPO / "circwidgets" / "static"
LOGS = REPO / "artifacts" / "mutation"  # each run's pytest output
WB = "tests/browser/test_widgets_browser.py"
CPA = "tests/browser/test_composition_paths_ablation_browser.py"


@dataclass
class Mutant:
    name: str
    what: str
    file: str
    patches: list[tuple[str, str]]  # (old, new): `old` must occur exactly once
    tests: list[str]
    browser: bool = False
    extra: list[str] = field(default_factory=list)  # pytest options


MUTANTS = [
    # ---------------------------------------------------------------- stale drawing (front ends)
    Mutant("eig_js_first_head", "eigenvalues.js plots the first head's eigenvalues after every click",
           "js/src/eigenvalues.js",
           [('  function draw(source = "kernel") {\n    computing.settled();',
             '  let firstEigs = null;\n  function draw(source = "kernel") {\n    computing.settled();'),
            ('    const eigs = sel.get("eigs") || {};',
             '    const eigs = firstEigs || (firstEigs = sel.get("eigs") || {});')],
           [f"{WB}::test_eigenvalues_click_hover_log"], browser=True),
    Mutant("att_js_first_pattern", "attention.js paints the first head's pattern; the hover read-out stays fresh",
           "js/src/attention.js",
           [('  function drawPattern(source = "kernel") {', '  let firstA = null;\n  function drawPattern(source = "kernel") {'),
            ("geom = drawPatternCanvas(canvas, th, { A, N,", "geom = drawPatternCanvas(canvas, th, { A: (firstA ||= A), N,")],
           [f"{WB}::test_attention_click_redraws_and_updates_kernel"], browser=True),
    Mutant("skip_js_previous_rows", "skip_trigrams.js renders the previous update's rows",
           "js/src/skip_trigrams.js",
           [('  function draw(source = "kernel") {', '  let prevRows = null;\n  function draw(source = "kernel") {'),
            ('    const rows = sel.get("rows") || [];',
             '    const rows = prevRows || sel.get("rows") || [];\n    prevRows = sel.get("rows") || [];')],
           [f"{WB}::test_skip_trigrams_click_search_more"], browser=True),
    Mutant("comp_js_first_details", "composition.js keeps painting the first pair's patterns and score",
           "js/src/composition.js",
           [("  function drawDetails() {\n    const d = model.get(\"details\") || {};",
             "  let firstD = null;\n  function drawDetails() {\n    const d = firstD || (firstD = model.get(\"details\") || {});")],
           [f"{CPA}::test_composition_cell_click_shows_details_and_moves_the_kernel_selection"], browser=True),
    Mutant("paths_js_previous_terms", "paths.js draws the previous update's bars",
           "js/src/paths.js",
           [("  function drawTerms() {", "  let prevTerms = null;\n  function drawTerms() {"),
            ('    const terms = model.get("terms") || [];',
             '    const terms = prevTerms || model.get("terms") || [];\n    prevTerms = model.get("terms") || [];')],
           [f"{CPA}::test_path_expansion_sum_equals_the_logit_and_bars_select_heads"], browser=True),
    Mutant("abl_js_clean_token_loss", "ablation.js paints the clean per-token losses as the ablated ones",
           "js/src/ablation.js",
           [('const tl = decodeArray(model.get("token_loss"))', 'const tl = decodeArray(model.get("clean_token_loss"))')],
           [f"{CPA}::test_ablation_toggle_shows_the_engines_loss_and_patching_maps"], browser=True),
    Mutant("explorer_js_eig_first_head", "in the explorer, the eigenvalue panel keeps its first head's plot",
           "js/src/eigenvalues.js",
           [('  function draw(source = "kernel") {\n    computing.settled();',
             '  let firstEigs = null;\n  function draw(source = "kernel") {\n    computing.settled();'),
            ('    const eigs = sel.get("eigs") || {};',
             '    const eigs = firstEigs || (firstEigs = sel.get("eigs") || {});')],
           [f"{CPA}::test_explorer_panels_follow_one_click"], browser=True),
    Mutant("export_js_att_first_pattern", "the exported page paints the first head's pattern",
           "js/src/attention.js",
           [('  function drawPattern(source = "kernel") {', '  let firstA = null;\n  function drawPattern(source = "kernel") {'),
            ("geom = drawPatternCanvas(canvas, th, { A, N,", "geom = drawPatternCanvas(canvas, th, { A: (firstA ||= A), N,")],
           [f"{CPA}::test_exported_html_works_offline"], browser=True),
    Mutant("redraw_js_first_event", "views redraw on the first change event (before the rest of the update)",
           "js/src/lib/redraw.js",
           [("export function onModelChanges(model, keys, handler, schedule = queueMicrotask) {",
             "export function onModelChanges(model, keys, handler, schedule = (f) => f()) {")],
           ["tests/browser/test_marimo_browser.py"], browser=True),
    # ---------------------------------------------------------------- engine maths
    Mutant("eig_ascending", "circuits.eigenvalues sorted by increasing magnitude (docstring: decreasing)",
           "circwidgets/engine/circuits.py",
           [("return lam[lam.abs().argsort(descending=True)]", "return lam[lam.abs().argsort(descending=False)]")],
           ["tests/test_engine_circuits.py"]),
    Mutant("copying_first_n", "copying_score's token subsample = the first n ids",
           "circwidgets/engine/heads.py",
           [("src = torch.randperm(V, generator=torch.Generator().manual_seed(seed))[:n_tokens].sort().values",
             "src = torch.arange(n_tokens)")],
           ["tests/test_engine_heads.py"]),
    Mutant("baseline_head_size", "composition baseline drawn with d_head + 1",
           "circwidgets/engine/composition.py",
           [("s = random_composition_scores(cfg.d_model, cfg.d_head, n_samples, seed)",
             "s = random_composition_scores(cfg.d_model, cfg.d_head + 1, n_samples, seed)")],
           ["tests/test_engine_composition.py"]),
    Mutant("positivity_real_abs", "eigenvalue positivity divides by sum |Re λ| instead of sum |λ|",
           "circwidgets/engine/circuits.py",
           [("num, den = lam.real.sum(-1), lam.abs().sum(-1)", "num, den = lam.real.sum(-1), lam.real.abs().sum(-1)")],
           ["tests/test_engine_circuits.py"]),
    Mutant("virtual_order", "virtual head pattern A1 A2 instead of A2 A1",
           "circwidgets/engine/virtual.py",
           [("    pattern = A2 @ A1", "    pattern = A1 @ A2")],
           ["tests/test_engine_virtual_paths.py"]),
    Mutant("rms_centres", "RMS normalisation centres like LayerNorm",
           "circwidgets/model/transformer.py",
           [('        if kind in ("LN", "LNPre"):\n            x = x - x.mean(-1, keepdim=True)',
             '        if kind in ("LN", "LNPre", "RMS", "RMSPre"):\n            x = x - x.mean(-1, keepdim=True)')],
           ["tests/test_properties.py"]),
    Mutant("rotary_sign", "rotary: the second coordinate turns the wrong way (half layout)",
           "circwidgets/model/rotary.py",
           [("out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)",
             "out = torch.cat((x1 * cos - x2 * sin, x2 * cos - x1 * sin), dim=-1)")],
           ["tests/test_properties.py"]),
    Mutant("attn_scale_ignored", "attention scores divided by sqrt(d_head) whatever attn_scale says",
           "circwidgets/model/transformer.py",
           [("scores = (q.transpose(1, 2) / cfg.attn_scale) @ k.permute(0, 2, 3, 1)",
             "scores = (q.transpose(1, 2) / math.sqrt(cfg.d_head)) @ k.permute(0, 2, 3, 1)")],
           ["tests/test_properties.py"]),
    Mutant("paths_rms_centred", "path terms centre the residual under an RMS norm",
           "circwidgets/engine/paths.py",
           [("    centre = ln and FOLDS[cfg.normalization].centres", "    centre = ln")],
           ["tests/test_properties.py"]),
]


def _pytest(tests: list[str], extra: list[str], timeout: int, log_name: str = "run") -> tuple[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:randomly", *extra, *tests]
    try:
        r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "killed", "timeout"
    LOGS.mkdir(parents=True, exist_ok=True)
    (LOGS / f"{log_name}.log").write_text(r.stdout + r.stderr)
    tail = (r.stdout + r.stderr).strip().splitlines()
    summary = tail[-1] if tail else ""
    if r.returncode == 1:
        first = next((ln for ln in tail if ln.startswith("FAILED")), None)
        if first is None:  # errors only (a fixture could not start, e.g. a server timeout): not a kill
            return "not run", f"errors, no failure: {summary}"
        return "killed", first[:150]
    if r.returncode == 0:
        if re.search(r"\d+ passed", summary):
            return "SURVIVED", summary
        return "not run", summary  # all skipped
    return "not run", f"pytest exit {r.returncode}: {summary}"


def _build() -> None:
    subprocess.run(["npm", "run", "build"], cwd=REPO / "js", check=True, capture_output=True)


def run(mutant: Mutant, timeout: int) -> tuple[str, str, float]:
    path = REPO / mutant.file
    original = path.read_bytes()
    text = original.decode()
    for old, new in mutant.patches:
        if text.count(old) != 1:
            return "stale patch", f"{old[:60]!r} occurs {text.count(old)} times in {mutant.file}", 0.0
        text = text.replace(old, new)
    bundles = {p: p.read_bytes() for p in STATIC.iterdir()} if mutant.file.startswith("js/") else {}
    t0 = time.monotonic()
    try:
        path.write_text(text)
        if bundles:
            _build()
        status, detail = _pytest(mutant.tests, mutant.extra, timeout, mutant.name)
    finally:
        path.write_bytes(original)
        for p, b in bundles.items():
            p.write_bytes(b)
    return status, detail, time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="mutants to run (default: all)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--no-browser", action="store_true", help="skip the front-end mutants")
    ap.add_argument("--baseline", action="store_true", help="first run every selected test file unmutated")
    ap.add_argument("--timeout", type=int, default=1200, help="seconds per mutant's test run")
    a = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if (not a.names or m.name in a.names) and not (a.no_browser and m.browser)]
    if a.list:
        for m in MUTANTS:
            print(f"{m.name:28s} {m.what}  [{', '.join(m.tests)}]")
        return 0
    if a.baseline:
        tests = sorted({t for m in chosen for t in m.tests})
        status, detail = _pytest(tests, [], a.timeout * 2, "baseline")
        print(f"baseline (unmutated): {'pass' if status == 'SURVIVED' else status} — {detail}")
        if status != "SURVIVED":
            return 2
    rows = []
    for m in chosen:
        status, detail, secs = run(m, a.timeout)
        rows.append((m, status, detail, secs))
        print(f"{m.name:28s} {status:12s} {secs:6.0f}s  {detail}", flush=True)
    print("\n| mutant | what | tests | result |\n| --- | --- | --- | --- |")
    for m, status, _detail, _ in rows:
        tests = ", ".join(t.split("/")[-1] for t in m.tests)
        print(f"| `{m.name}` | {m.what} | {tests} | {status} |")
    survived = [m.name for m, s, _, _ in rows if s != "killed"]
    print(f"\n{len(rows) - len(survived)} of {len(rows)} killed" + (f"; not killed: {', '.join(survived)}" if survived else ""))
    return 1 if any(s in ("SURVIVED", "stale patch") for _, s, _, _ in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
