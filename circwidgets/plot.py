"""Static matplotlib twins of the widgets (for nbconvert, GitHub's viewer, PDF, papers).

Every function returns a `matplotlib.figure.Figure` built without pyplot (no global state, no
backend switch); pass `ax=` to draw into an existing axes instead. Inputs are engine objects and
numbers (`PathTerms`, `SkipTrigramTable`, `AblatedRun`, tensors or arrays), never a view's synced
state, so a figure can be drawn without a view; nothing here computes framework quantities.
Token strings are drawn with mathtext off, so a `$` in a token stays a `$`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np


def _np(x) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().cpu().float().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(x, dtype=np.float64)


def _fig(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def show_ws(s: str) -> str:
    """Visible whitespace, as the widgets show it (space ␣, newline ↵, tab ⇥, CR ␍, other control
    characters · as in js/src/lib/text.js: no font has glyphs for them)."""
    s = str(s).replace(" ", "\u2423").replace("\n", "\u21b5").replace("\t", "\u21e5").replace("\r", "\u240d")
    return _CONTROL.sub("\u00b7", s)


def _label(s: str, n: int = 12) -> str:
    s = show_ws(s)
    return s if len(s) <= n else s[: n - 1] + "…"


def _ticklabels(ax, axis: str, labels: Sequence[str], **kw):
    ticks = np.arange(len(labels))
    if axis == "x":
        ax.set_xticks(ticks)
        texts = ax.set_xticklabels([_label(s) for s in labels], **kw)
    else:
        ax.set_yticks(ticks)
        texts = ax.set_yticklabels([_label(s) for s in labels], **kw)
    for t in texts:
        t.set_parse_math(False)


def attention_pattern(pattern, labels: Sequence[str] | None = None, title: str = "", ax=None, cmap: str = "Blues"):
    """Heatmap of one head's pattern `[query, key]` (rows = query/destination, columns = key/source)."""
    a = _np(pattern)
    n = a.shape[0]
    fig, ax = _fig(ax, (min(9, 2.5 + 0.22 * n), min(8, 2.2 + 0.2 * n)))
    masked = np.ma.masked_where(np.triu(np.ones_like(a, dtype=bool), 1), a)
    vmax = max(1.0, float(np.nanmax(a))) if a.size else 1.0
    im = ax.imshow(masked, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
    if labels is not None and n <= 48:
        _ticklabels(ax, "x", labels, rotation=90, fontsize=7, fontfamily="monospace")
        _ticklabels(ax, "y", labels, fontsize=7, fontfamily="monospace")
    ax.set_xlabel("key (source) position")
    ax.set_ylabel("query (destination) position")
    t = ax.set_title(title or "attention pattern")
    t.set_parse_math(False)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def head_grid(scores, title: str = "", ax=None, cmap: str | None = None, vmin: float | None = None,
              vmax: float | None = None):
    """Heatmap of a per-head score `[n_layers, n_heads]` with the values written in the cells."""
    s = _np(scores)
    L, H = s.shape
    fig, ax = _fig(ax, (1.2 + 0.5 * H, 1.0 + 0.45 * L))
    if cmap is None:
        cmap = "RdBu" if np.nanmin(s) < 0 else "Blues"
    if cmap == "RdBu" and vmin is None:
        m = float(np.nanmax(np.abs(s))) or 1.0
        vmin, vmax = -m, m
    im = ax.imshow(s, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    for i in range(L):
        for j in range(H):
            if np.isfinite(s[i, j]):
                ax.text(j, i, f"{s[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(H))
    ax.set_yticks(range(L))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title).set_parse_math(False)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def eigenvalues(eigs: dict, positivity: dict | None = None, title: str = "", log_magnitude: bool = False):
    """Eigenvalues in the complex plane, one panel per circuit: `eigs = {"full OV": complex array, ...}`.

    The unit circle |λ| = 1 is drawn; with `log_magnitude` each λ is drawn at radius log10(1 + |λ|)
    (same angle), so large and small eigenvalues share one picture.
    """
    from matplotlib.figure import Figure

    names = list(eigs)
    fig = Figure(figsize=(3.6 * max(1, len(names)), 3.8), layout="constrained")
    axes = fig.subplots(1, max(1, len(names)), squeeze=False)[0]
    th = np.linspace(0, 2 * np.pi, 256)
    for ax, name in zip(axes, names):
        lam = np.asarray(eigs[name], dtype=np.complex128).reshape(-1)
        if log_magnitude and lam.size:
            r = np.log10(1 + np.abs(lam))
            lam = r * np.exp(1j * np.angle(lam))
            unit = np.log10(2.0)
        else:
            unit = 1.0
        ax.plot(unit * np.cos(th), unit * np.sin(th), lw=0.8, color="0.5", ls="--", label="|λ| = 1")
        ax.axhline(0, color="0.8", lw=0.6)
        ax.axvline(0, color="0.8", lw=0.6)
        if lam.size:
            ax.scatter(lam.real, lam.imag, s=14, c=np.where(lam.real >= 0, "tab:blue", "tab:red"))
        ax.set_aspect("equal", adjustable="datalim")
        if lam.size and np.abs(lam).max() > 15 * unit:  # the circle would be a dot: an inset zoomed on it
            ins = ax.inset_axes([0.02, 0.02, 0.3, 0.3])
            ins.plot(unit * np.cos(th), unit * np.sin(th), lw=0.8, color="0.5", ls="--")
            near = lam[np.abs(lam) < 2 * unit]
            ins.scatter(near.real, near.imag, s=6, c=np.where(near.real >= 0, "tab:blue", "tab:red"))
            ins.set_xlim(-1.6 * unit, 1.6 * unit)
            ins.set_ylim(-1.6 * unit, 1.6 * unit)
            ins.set_xticks([])
            ins.set_yticks([])
            ins.set_title("|λ| ≤ 1.6 (zoom)", fontsize=6).set_parse_math(False)
        p = (positivity or {}).get(name)
        head = f"{name}" + (f"\npositivity {p:+.3f}" if p is not None and np.isfinite(p) else "")
        ax.set_title(head, fontsize=9).set_parse_math(False)
        ax.set_xlabel("Re" + (" (log10(1+|λ|) scale)" if log_magnitude else ""))
        ax.set_ylabel("Im")
        ax.legend(loc="best", fontsize=7)  # "best": where it covers the fewest eigenvalues
    if title:
        fig.suptitle(title).set_parse_math(False)
    return fig


def skip_trigram_table(table, title: str = "", max_rows: int = 15, n_each: int = 3):
    """The skip-trigram table as a figure: per source token A, its top destinations B and outputs C.

    table: an `engine.SkipTrigramTable` (its first `max_rows` rows) or a sequence of
    `engine.SkipTrigramRow`s; tokens are shown by their strings (ids for a model without tokenizer).
    """
    from matplotlib.figure import Figure

    rows = table.rows(0, min(len(table), max_rows)) if hasattr(table, "rows") else list(table)[:max_rows]
    fig = Figure(figsize=(10, 0.7 + 0.24 * max(1, len(rows))), layout="constrained")
    ax = fig.add_subplot()
    ax.axis("off")

    def cell(ids, strs, values):
        names = strs if strs is not None else [str(i) for i in ids]
        return "  ".join(f"{_label(t, 10)} {s:+.2f}" for t, s in list(zip(names, values))[:n_each])

    text = [[_label(r.source_str if r.source_str is not None else str(r.source), 14), f"{r.strength:.2f}",
             cell(r.dests, r.dest_strs, r.dest_values), cell(r.outs, r.out_strs, r.out_values)] for r in rows]
    if text:
        tab = ax.table(cellText=text, colLabels=["source A", "score", "top destinations B", "top outputs C"],
                       loc="upper center", cellLoc="left", colWidths=[0.14, 0.08, 0.39, 0.39])
        tab.auto_set_font_size(False)
        tab.set_fontsize(8)
        for c in tab.get_celld().values():
            c.get_text().set_parse_math(False)
            c.get_text().set_fontfamily("monospace")
    ax.set_title(title or "top skip-trigrams  A … B → C").set_parse_math(False)
    return fig


# ---------------------------------------------------------------------------- composition, paths, ablation
def composition(scores, kind: str = "composition", baseline: tuple[float, float] | None = None,
                subtracted: bool = False, selected: tuple[int, int] | None = None, pair: tuple | None = None,
                ax=None):
    """Heatmap of composition scores `[L, H, L, H]` (NaN where layer1 >= layer2): rows = earlier heads
    (layers 0..L-2), columns = later heads (layers 1..L-1); the selected head's row / column and the
    selected pair are outlined; the baseline (mean ± spread) is in the title."""
    s = _np(scores)
    L, H = s.shape[0], s.shape[1]
    m = s[: L - 1, :, 1:, :].reshape((L - 1) * H, (L - 1) * H)
    fig, ax = _fig(ax, (2.0 + 0.32 * m.shape[1], 1.6 + 0.3 * m.shape[0]))
    if subtracted:
        v = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 1.0
        im = ax.imshow(m, cmap="RdBu", vmin=-v, vmax=v, interpolation="nearest")
    else:
        im = ax.imshow(m, cmap="Blues", vmin=0, interpolation="nearest")
    rows = [f"L{l}H{h}" for l in range(L - 1) for h in range(H)]
    cols = [f"L{l}H{h}" for l in range(1, L) for h in range(H)]
    if len(rows) <= 48:
        _ticklabels(ax, "y", rows, fontsize=6)
        _ticklabels(ax, "x", cols, rotation=90, fontsize=6)
    from matplotlib.patches import Rectangle

    if selected is not None:
        sl, sh = selected
        if sl < L - 1:
            ax.add_patch(Rectangle((-0.5, sl * H + sh - 0.5), m.shape[1], 1, fill=False, ec="orange", lw=1.2))
        if sl >= 1:
            ax.add_patch(Rectangle(((sl - 1) * H + sh - 0.5, -0.5), 1, m.shape[0], fill=False, ec="orange", lw=1.2))
    if pair is not None and len(pair) == 4:
        ax.add_patch(Rectangle(((pair[2] - 1) * H + pair[3] - 0.5, pair[0] * H + pair[1] - 0.5), 1, 1,
                               fill=False, ec="red", lw=2))
    ax.set_ylabel("earlier head")
    ax.set_xlabel("later head")
    t = f"{kind}" + (" minus baseline" if subtracted else "")
    if baseline is not None:
        t += f"\nbaseline {baseline[0]:.3f} ± {baseline[1]:.3f} (random matrices)"
    ax.set_title(t, fontsize=9).set_parse_math(False)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def path_terms(terms, pos: int, token: int, n_one: int = 16, n_virtual: int = 8, batch: int = 0,
               title: str = "", ax=None, logit_label: str = "model logit"):
    """Horizontal bars of the path expansion of one logit (`engine.PathTerms.bars`: the bars the path
    view shows) for `token` at position `pos`, with the sum of all terms and the model's own logit in
    the title. terms: an `engine.PathTerms`, or the `engine.LogitPaths` of that one logit."""
    if hasattr(terms, "model_logit"):  # LogitPaths: one logit's expansion, already computed
        bars, total, model_logit = terms.bars(n_one=n_one, n_virtual=n_virtual), terms.total, terms.model_logit
    else:
        bars = terms.bars(pos, token, n_one=n_one, n_virtual=n_virtual, batch=batch)
        total = float(sum(v for _, v in terms.for_token(pos, token, batch)))
        model_logit = float(terms.model_logits[batch, pos, token])
    labels = [b.label for b in bars]
    vals = np.array([float(b.value) for b in bars])
    fig, ax = _fig(ax, (7, 1.2 + 0.24 * len(bars)))
    y = np.arange(len(bars))
    ax.barh(y, vals, color=np.where(vals >= 0, "tab:blue", "tab:red"))
    ax.set_yticks(y)
    for t in ax.set_yticklabels(labels, fontsize=7, fontfamily="monospace"):  # term labels, not tokens
        t.set_parse_math(False)
    ax.invert_yaxis()
    ax.axvline(0, color="0.5", lw=0.6)
    ax.set_xlabel("contribution to the logit")
    head = title or "path expansion of a logit"
    head += f"\nsum of terms {total:.4f}   {logit_label} {model_logit:.4f}"
    ax.set_title(head, fontsize=9).set_parse_math(False)
    return fig


def ablation(clean, ablated, labels: Sequence[str] | None = None, title: str = "", ax=None, batch: int = 0):
    """Per-token loss `[pos - 1]` (predicting token i + 1 from position i) of two `engine.AblatedRun`s:
    clean and ablated (sequence `batch` of each); `labels`: the tokens' strings."""
    c, a = _np(clean.token_loss[batch]), _np(ablated.token_loss[batch])
    n = len(c)
    fig, ax = _fig(ax, (min(12, 2.5 + 0.3 * n), 3.2))
    x = np.arange(n)
    ax.bar(x - 0.2, c, 0.4, label="clean", color="0.6")
    ax.bar(x + 0.2, a, 0.4, label="ablated", color="tab:red")
    if labels is not None and n <= 48:
        _ticklabels(ax, "x", [f"{labels[i + 1]}" for i in range(n)], rotation=90, fontsize=7, fontfamily="monospace")
    ax.set_xlabel("predicted token")
    ax.set_ylabel("loss (nats)")
    ax.legend(fontsize=7)
    ax.set_title(title or "per-token loss").set_parse_math(False)
    return fig


def patching(report, labels: Sequence[str] | None = None, corrupt_labels: Sequence[str] | None = None,
             selected: tuple[int, int] | None = None, title: str = ""):
    """The two heatmaps of an `engine.PatchingReport` (what the ablation view shows in patching mode):
    the residual stream `[layer, position]` and the head outputs `[layer, head]`, clean patched into the
    corrupted run, on one diverging scale each (blue: restores the clean answer); positions labelled
    `clean/corrupted` where the two texts differ; the `selected` head outlined."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    resid, heads = _np(report.resid), _np(report.heads)
    (L, P), H = resid.shape, heads.shape[1]
    fig = Figure(figsize=(min(14, 4.5 + 0.3 * P + 0.4 * H), 1.6 + 0.45 * L), layout="constrained")
    ar, ah = fig.subplots(1, 2, width_ratios=[max(P, 1), max(H, 1)])
    for ax, m, what in ((ar, resid, "residual stream (layer × position)"), (ah, heads, "head outputs (layer × head)")):
        v = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 1.0
        im = ax.imshow(m, cmap="RdBu", vmin=-(v or 1.0), vmax=v or 1.0, aspect="auto", interpolation="nearest")
        ax.set_yticks(range(L))
        ax.set_yticklabels([f"L{i}" for i in range(L)])
        ax.set_title(what, fontsize=9).set_parse_math(False)
        fig.colorbar(im, ax=ax, shrink=0.8)
    if labels is not None and P <= 48:
        cl = corrupt_labels if corrupt_labels is not None else labels
        _ticklabels(ar, "x", [s if c == s else f"{s}/{c}" for s, c in zip(labels, cl)], rotation=90, fontsize=7,
                    fontfamily="monospace")
    ar.set_xlabel("position")
    ah.set_xticks(range(H))
    ah.set_xticklabels([f"H{j}" for j in range(H)])
    ah.set_xlabel("head")
    if selected is not None:
        ah.add_patch(Rectangle((selected[1] - 0.5, selected[0] - 0.5), 1, 1, fill=False, ec="orange", lw=2))
    fig.suptitle(title or "activation patching (clean → corrupted)", fontsize=9).set_parse_math(False)
    return fig


def training_curves(history: Sequence[dict], title: str = ""):
    """Loss curves (train / validation / in-context) and the largest head scores over training
    steps, from a trainer's history records (`{"step", "train_loss", "val_loss", "max_induction", ...}`)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.2), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    steps = [r.get("step", i) for i, r in enumerate(history)]
    panels = ((a1, "loss (nats)", (("train_loss", "train"), ("val_loss", "validation"),
                                   ("icl_repeated", "repeated half"))),
              (a2, "head score", (("max_induction", "max induction score"),
                                  ("max_previous_token", "max previous-token score"))))
    for ax, ylabel, curves in panels:
        for key, lab in curves:
            pts = [(s, r[key]) for s, r in zip(steps, history) if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=lab)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        if ax.get_legend_handles_labels()[0]:  # nothing logged yet (a monitor shown before its run): no legend
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title).set_parse_math(False)
    return fig


def training_history(curves, step: int, pattern, labels: Sequence[str] | None = None, circuit: dict | None = None,
                     head: tuple[int, int] | None = None, title: str = ""):
    """The history view at one step: loss and in-context-loss curves, every head's induction
    (solid) and previous-token (dashed) score over training, `head`'s `pattern` `[query, key]` at
    that step, and the induction circuit's positivities and K-composition score per snapshot
    (`circuit`: `{"steps", "ov", "k_qk", "k_comp", "baseline", "circuit"}`); the current `step` is a
    vertical line. `curves`: an `engine.TrainingCurves`."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 6.5), layout="constrained")
    (a_loss, a_heads), (a_pat, a_circ) = fig.subplots(2, 2)
    steps = np.asarray(curves.steps)
    for ys, lab, style in ((curves.loss, curves.loss_label, "-"), (curves.icl_first, "in-context: first copy", "--"),
                           (curves.icl_repeated, "in-context: repeated copy", ":")):
        y = np.asarray(ys, dtype=float)
        if np.isfinite(y).any():
            a_loss.plot(steps, y, style, marker=".", label=lab)
    a_loss.set_ylabel("loss (nats)")
    a_loss.legend(fontsize=7)
    ind, prev = _np(curves.induction), _np(curves.previous_token)
    L, H = ind.shape[1:]
    for layer in range(L):
        for h in range(H):
            on = head == (layer, h)
            colour = f"C{layer % 10}"
            a_heads.plot(steps, ind[:, layer, h], "-", color=colour, lw=2.5 if on else 0.9,
                         label=f"L{layer}H{h} induction" if on else None)
            a_heads.plot(steps, prev[:, layer, h], "--", color=colour, lw=2.0 if on else 0.6, alpha=0.8,
                         label=f"L{layer}H{h} previous-token" if on else None)
    a_heads.set_ylim(0, 1)
    a_heads.set_ylabel("head score")
    a_heads.set_title("induction (solid) and previous-token (dashed) score of every head; colour = layer",
                      fontsize=8)
    a_heads.legend(fontsize=7)
    for ax in (a_loss, a_heads):
        ax.axvline(step, color="k", lw=1)
        ax.set_xlabel("step")
    lab = f"L{head[0]}H{head[1]}" if head else "head"
    attention_pattern(pattern, labels, title=f"{lab} on BOS + r + r at step {step}", ax=a_pat)
    if circuit:
        cs = np.asarray(circuit["steps"])
        l1, h1, l2, h2 = circuit["circuit"]
        for key, name in (("ov", f"L{l2}H{h2} OV positivity"), ("k_qk", f"K-comp. QK positivity via L{l1}H{h1}"),
                          ("k_comp", f"K-composition L{l1}H{h1}→L{l2}H{h2}")):
            a_circ.plot(cs, np.asarray(circuit[key], dtype=float), marker="o", label=name)
        a_circ.axhline(circuit["baseline"][0], color="grey", lw=0.8, ls=":", label="K-composition baseline")
        a_circ.axvline(step, color="k", lw=1)
        a_circ.set_xlabel("step")
        a_circ.legend(fontsize=7)
        a_circ.set_title("induction circuit per snapshot")
    if title:
        fig.suptitle(title).set_parse_math(False)
    return fig
