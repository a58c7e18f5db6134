// A small line chart on a canvas (loss curves, head scores over training), shared by the training
// monitor and the history view, with an optional vertical marker at the current step.
import { h, hidpi } from "./dom.js";

const W = 430, H = 220, M = { l: 58, r: 10, t: 10, b: 28 };

/** Line chart of `series` ([{label, pts: [[x, y], ...], color, width, dash, dots}]); non-finite y
 * values are skipped. opts: title, kind (data-kind), xlabel, y0 / y1 (include these y values),
 * marker (an x value drawn as a vertical line: the current step), points ([{x, y, color}] drawn as
 * rings: values measured at the marker). Returns the panel element; its canvas carries data-n-points
 * and data-marker. */
export function lineChart(th, series, opts) {
  const canvas = h("canvas", { cls: "cw-canvas cw-curve", data: { kind: opts.kind } });
  const ctx = hidpi(canvas, W, H);
  ctx.fillStyle = th.css.bg; ctx.fillRect(0, 0, W, H);
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity, n = 0;
  for (const s of series) for (const [x, y] of s.pts) {
    if (!Number.isFinite(y)) continue;
    n++; x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
  }
  if (opts.y0 !== undefined) y0 = Math.min(y0, opts.y0);
  if (opts.y1 !== undefined) y1 = Math.max(y1, opts.y1);
  if (!n) { x0 = 0; x1 = 1; y0 = Math.min(0, y0); y1 = Math.max(1, y1); }
  if (Number.isFinite(opts.marker)) { x0 = Math.min(x0, opts.marker); x1 = Math.max(x1, opts.marker); }
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + 1;
  const X = (x) => M.l + ((x - x0) / (x1 - x0)) * (W - M.l - M.r);
  const Y = (y) => H - M.b - ((y - y0) / (y1 - y0)) * (H - M.t - M.b);
  ctx.strokeStyle = th.css.border; ctx.lineWidth = 1;
  ctx.strokeRect(M.l - 0.5, M.t - 0.5, W - M.l - M.r + 1, H - M.t - M.b + 1);
  ctx.fillStyle = th.css.fg2; ctx.font = `10px ${th.font}`;
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  const dig = Math.max(2, Math.min(4, 2 - Math.floor(Math.log10(y1 - y0))));  // enough digits to tell ticks apart
  for (const v of [y0, (y0 + y1) / 2, y1]) ctx.fillText(v.toFixed(dig), M.l - 4, Y(v));
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  for (const v of [x0, (x0 + x1) / 2, x1]) ctx.fillText(String(Math.round(v)), X(v), H - M.b + 4);
  ctx.fillText(opts.xlabel || "step", W / 2, H - 12);
  for (const s of series) {
    ctx.strokeStyle = s.color; ctx.lineWidth = s.width || 1.5; ctx.setLineDash(s.dash || []);
    ctx.beginPath();
    let first = true;
    for (const [x, y] of s.pts) {
      if (!Number.isFinite(y)) continue;
      if (first) { ctx.moveTo(X(x), Y(y)); first = false; } else ctx.lineTo(X(x), Y(y));
    }
    ctx.stroke();
    if (s.dots) { ctx.fillStyle = s.color; for (const [x, y] of s.pts) if (Number.isFinite(y)) { ctx.beginPath(); ctx.arc(X(x), Y(y), 2.2, 0, 7); ctx.fill(); } }
  }
  ctx.setLineDash([]);
  if (Number.isFinite(opts.marker)) {
    ctx.strokeStyle = th.css.fg; ctx.lineWidth = 1.2;
    ctx.beginPath(); ctx.moveTo(X(opts.marker) + 0.5, M.t); ctx.lineTo(X(opts.marker) + 0.5, H - M.b); ctx.stroke();
    canvas.dataset.marker = String(opts.marker);
  }
  for (const p of opts.points || []) {
    if (!Number.isFinite(p.y)) continue;
    ctx.strokeStyle = p.color; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(X(p.x), Y(p.y), 4, 0, 7); ctx.stroke();
  }
  canvas.dataset.nPoints = String(n);
  const legend = h("div", { cls: "cw-legend cw-curve-legend" }, series.filter((s) => s.label).map((s) => {
    const sw = h("span", { cls: "cw-swatch" });
    sw.style.background = s.color;
    return h("span", { cls: "cw-legend-item" }, [sw, s.label]);
  }));
  return h("div", { cls: "cw-small-panel" }, [h("div", { cls: "cw-small-title", text: opts.title }), canvas, legend]);
}
