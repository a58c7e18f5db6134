// Drawing helpers shared by the views: a heatmap on a canvas with click / hover, a small
// attention-pattern panel (drawn by the one pattern renderer, pattern.js), a DOM bar chart, a
// colour-scale legend, a row of tokens. Strings from a tokenizer are drawn with canvas fillText
// or set as textContent only.
import { legendColours, rgbCss, scaleColor, scaleRange } from "./color.js";
import { sampleGrid } from "./digest.js";
import { h, hidpi } from "./dom.js";
import { cellAt, drawPattern, maxOf } from "./pattern.js";
import { fmt, shortLabel, visibleWhitespace } from "./text.js";

/** A heatmap of `vals` (row-major [nr, nc], NaN = no value) on a canvas.
 *
 * opts: rowLabels, colLabels (strings), cell (px, default from size), maxPx, diverging (bool),
 * vmin / vmax (default from the data), onClick(r, c), onHover(r, c, v) (null when outside),
 * rowGroups / colGroups (draw a separator every n rows / columns, e.g. every layer),
 * marks: {rows: [..], cols: [..], cell: [r, c]} (outlined).
 * Returns {el: canvas, geom, redraw(marks), sample (painted values, lib/digest.js)}. The geometry is also in canvas.dataset (for tests).
 */
export function heatmap(th, vals, nr, nc, opts = {}) {
  const canvas = h("canvas", { cls: "cw-canvas cw-heatmap", attrs: { tabindex: "0" } });
  const rl = opts.rowLabels || [], cl = opts.colLabels || [];
  const maxPx = opts.maxPx || 440;
  const nMax = Math.max(nr, nc, 1);
  // whole pixels per cell while they fit (4..28 px); fractional below that (long texts: the image is scaled down)
  const cell = opts.cell || (nMax * 4 <= maxPx ? Math.min(28, Math.floor(maxPx / nMax)) : maxPx / nMax);
  const ml = rl.length ? opts.marginLeft || 64 : 4, mt = cl.length ? opts.marginTop || 52 : 4;
  const W = Math.ceil(ml + nc * cell + 4), H = Math.ceil(mt + nr * cell + 4);
  let lo = opts.vmin, hi = opts.vmax;
  if (lo === undefined || hi === undefined) {
    const [a, b] = scaleRange(vals, opts.diverging);
    if (lo === undefined) lo = a;
    if (hi === undefined) hi = opts.diverging || b > lo ? b : lo + 1;
  }
  const geom = { ml, mt, cell, nr, nc, lo, hi };
  Object.assign(canvas.dataset, { ml, mt, cell, nr, nc, vmin: lo, vmax: hi });
  const colour = (v) => scaleColor(th, v, lo, hi, opts.diverging);
  function redraw(marks = opts.marks || {}) {
    const ctx = hidpi(canvas, W, H);
    ctx.fillStyle = th.css.bg;
    ctx.fillRect(0, 0, W, H);
    if (nr * nc <= 2500) {
      for (let r = 0; r < nr; r++) {
        for (let c = 0; c < nc; c++) {
          ctx.fillStyle = rgbCss(colour(vals[r * nc + c]));
          ctx.fillRect(ml + c * cell, mt + r * cell, cell, cell);
        }
      }
    } else {  // large maps: one pixel per value in an offscreen image, scaled (a fillRect each is slow)
      const off = document.createElement("canvas");
      off.width = nc; off.height = nr;
      const octx = off.getContext("2d");
      const img = octx.createImageData(nc, nr), d = img.data;
      for (let i = 0; i < nr * nc; i++) {
        const col = colour(vals[i]);
        d[4 * i] = col[0]; d[4 * i + 1] = col[1]; d[4 * i + 2] = col[2]; d[4 * i + 3] = 255;
      }
      octx.putImageData(img, 0, 0);
      ctx.imageSmoothingEnabled = cell < 1;  // average when shrinking, crisp when enlarging
      ctx.drawImage(off, ml, mt, nc * cell, nr * cell);
    }
    ctx.strokeStyle = th.css.border;
    ctx.lineWidth = 1;
    ctx.strokeRect(ml - 0.5, mt - 0.5, nc * cell + 1, nr * cell + 1);
    if (opts.rowGroups > 1 || opts.colGroups > 1) {
      ctx.strokeStyle = th.css.fg2;
      ctx.beginPath();
      if (opts.rowGroups > 1) for (let r = opts.rowGroups; r < nr; r += opts.rowGroups) { ctx.moveTo(ml, mt + r * cell + 0.5); ctx.lineTo(ml + nc * cell, mt + r * cell + 0.5); }
      if (opts.colGroups > 1) for (let c = opts.colGroups; c < nc; c += opts.colGroups) { ctx.moveTo(ml + c * cell + 0.5, mt); ctx.lineTo(ml + c * cell + 0.5, mt + nr * cell); }
      ctx.stroke();
    }
    ctx.fillStyle = th.css.fg;
    const fs = Math.min(11, Math.max(7, cell - 1));
    ctx.font = `${fs}px ${th.font}`;
    ctx.textBaseline = "middle";
    if (rl.length && (cell >= 7 || opts.forceLabels)) {
      ctx.textAlign = "right";
      for (let r = 0; r < nr; r++) ctx.fillText(shortLabel(rl[r] ?? ""), ml - 3, mt + (r + 0.5) * cell, ml - 6);
    }
    if (cl.length && (cell >= 7 || opts.forceLabels)) {
      ctx.save();
      ctx.translate(ml, mt - 3);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "left";
      for (let c = 0; c < nc; c++) ctx.fillText(shortLabel(cl[c] ?? ""), 0, (c + 0.5) * cell, mt - 6);
      ctx.restore();
    }
    ctx.strokeStyle = th.css.select;
    ctx.lineWidth = 1.5;
    const cs = Math.max(cell, 4);  // marks stay visible when cells are smaller than a pixel
    for (const r of marks.rows || []) ctx.strokeRect(ml + 0.75, mt + r * cell + 0.75, nc * cell - 1.5, cs - 1.5);
    for (const c of marks.cols || []) ctx.strokeRect(ml + c * cell + 0.75, mt + 0.75, cs - 1.5, nr * cell - 1.5);
    if (marks.cell) {
      ctx.lineWidth = 2.5;
      ctx.strokeRect(ml + marks.cell[1] * cell + 1, mt + marks.cell[0] * cell + 1, cs - 2, cs - 2);
    }
  }
  function at(ev) {
    const b = canvas.getBoundingClientRect();
    const x = ev.clientX - b.left - ml, y = ev.clientY - b.top - mt;
    if (x < 0 || y < 0 || x >= nc * cell || y >= nr * cell) return null;
    return [Math.floor(y / cell), Math.floor(x / cell)];
  }
  canvas.addEventListener("mousemove", (ev) => {
    if (!opts.onHover) return;
    const p = at(ev);
    opts.onHover(p ? p[0] : null, p ? p[1] : null, p ? vals[p[0] * nc + p[1]] : NaN);
  });
  canvas.addEventListener("click", (ev) => {
    const p = at(ev);
    if (p && opts.onClick) opts.onClick(p[0], p[1], vals[p[0] * nc + p[1]]);
  });
  canvas.style.cursor = opts.onClick ? "pointer" : "crosshair";
  redraw();
  return { el: canvas, geom, redraw, sample: sampleGrid(vals, nr, nc) };
}

/** A small attention pattern [N, N] (row-major, causal; colours 0..1, or 0..max when
 * `scaleToMax`), titled; drawn by the shared pattern renderer. opts: title, kind (data-kind),
 * size (largest side, px), marks ({rows}), onHover(query, key, value) (null outside). */
export function patternPanel(th, A, N, labels, opts = {}) {
  const m = opts.scaleToMax ? maxOf(A) || 1 : 1;
  const canvas = h("canvas", { cls: "cw-canvas cw-pattern-small", attrs: { tabindex: "0" } });
  if (opts.kind) canvas.dataset.kind = opts.kind;
  const geom = drawPattern(canvas, th, {
    A, N, vmax: m, labels, marks: opts.marks, maxPx: opts.size || 220, minPx: 120, labelMax: 40, margin: 56,
  });
  if (opts.onHover) {
    canvas.addEventListener("mousemove", (ev) => {
      const c = cellAt(canvas, geom, ev);
      opts.onHover(c ? c[0] : null, c ? c[1] : null, c && c[1] <= c[0] ? A[c[0] * N + c[1]] : NaN);
    });
  }
  const box = h("div", { cls: "cw-small-panel" }, [h("div", { cls: "cw-small-title", text: opts.title || "" }), canvas]);
  return { el: box, canvas, max: m, sample: geom.sample };
}

/** Horizontal bar chart in the DOM (so that every bar is an element that can be clicked and found).
 *
 * items: [{label, value, data: {...}, title, cls}]; opts.onClick(item, i); opts.selected(i) -> bool.
 * Bars share one scale centred on zero; values are printed beside the bars.
 */
export function barChart(th, items, opts = {}) {
  const root = h("div", { cls: "cw-bars", attrs: { role: "list" } });
  let m = 0;
  for (const it of items) if (Number.isFinite(it.value)) m = Math.max(m, Math.abs(it.value));
  m = m || 1;
  items.forEach((it, i) => {
    const frac = Number.isFinite(it.value) ? Math.abs(it.value) / m : 0;
    const fill = h("span", { cls: "cw-bar-fill" });
    fill.style.width = `${(frac * 50).toFixed(2)}%`;
    fill.style.background = rgbCss(it.value >= 0 ? th.rgb.accent : th.rgb.negative);
    if (it.value >= 0) fill.style.left = "50%"; else fill.style.right = "50%";
    const track = h("span", { cls: "cw-bar-track" }, [fill, h("span", { cls: "cw-bar-zero" })]);
    const row = h("div", {
      cls: `cw-bar-row${it.cls ? " " + it.cls : ""}${opts.onClick ? " cw-clickable" : ""}`,
      data: it.data || {}, attrs: { role: "listitem", tabindex: opts.onClick ? "0" : "-1" },
      title: it.title,
    }, [
      h("span", { cls: "cw-bar-label", text: it.label }),
      track,
      h("span", { cls: "cw-bar-value", text: fmt(it.value, opts.digits || 3) }),
    ]);
    if (opts.selected && opts.selected(i)) row.classList.add("cw-selected");
    if (opts.onClick) {
      row.addEventListener("click", () => opts.onClick(it, i));
      row.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); ev.stopPropagation(); opts.onClick(it, i); }
      });
    }
    root.append(row);
  });
  return root;
}

/** A colour-scale legend: "lo ▭▭▭ hi" plus a note. */
export function scaleLegend(th, lo, hi, diverging, note = "") {
  const bar = h("canvas", { cls: "cw-scale" });
  const ctx = hidpi(bar, 120, 10);
  legendColours(th, diverging, 120).forEach((c, x) => {
    ctx.fillStyle = rgbCss(c);
    ctx.fillRect(x, 0, 1, 10);
  });
  return h("div", { cls: "cw-legend cw-scale-legend" }, [
    h("span", { text: fmt(lo) + " " }), bar, h("span", { text: " " + fmt(hi) }),
    ...(note ? [h("span", { cls: "cw-scale-note", text: "  " + note })] : []),
  ]);
}

/** Tokens as spans (textContent), optionally with one position marked. */
export function tokenRow(labels, opts = {}) {
  const box = h("div", { cls: "cw-tokens2" });
  labels.forEach((s, i) => {
    const sp = h("span", { cls: "cw-tok", text: visibleWhitespace(s), data: { pos: i } });
    if (opts.mark === i) sp.classList.add("cw-tok-focus");
    if (opts.onClick) { sp.classList.add("cw-clickable"); sp.addEventListener("click", () => opts.onClick(i)); }
    if (opts.colour) { const c = opts.colour(i); if (c) { sp.style.background = c.bg; sp.style.color = c.fg; } }
    if (opts.title) sp.title = opts.title(i);
    box.append(sp);
  });
  return box;
}
