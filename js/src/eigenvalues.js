// Eigenvalues: grid of heads (upper half OV positivity, lower half QK positivity); the selected
// head's eigenvalues of the full OV, full QK and positional QK circuits in the complex plane.
import "./lib/common.css";
import "./eigenvalues.css";
import { divColor, inkOn, rgbCss, theme } from "./lib/color.js";
import { decodeArray } from "./lib/decode.js";
import { publishDrawn, sig } from "./lib/digest.js";
import { cleanup, h, hidpi, markDrawn, onThemeChange } from "./lib/dom.js";
import { headGrid } from "./lib/grid.js";
import { cachedSelection } from "./lib/headcache.js";
import { messageArea, pendingNote } from "./lib/message.js";
import { needsKernel } from "./lib/offline.js";
import { circleLabelCandidates, placeLabel } from "./lib/place.js";
import { onModelChanges } from "./lib/redraw.js";
import { fmt } from "./lib/text.js";

const SIZE = 230; // plot side, CSS px
const MIN_UNIT_PX = 10; // the unit circle is never drawn smaller than this radius (CSS px)

function render({ model, el }) {
  const root = h("div", { cls: "cw-root cw-eigen" });
  el.append(root);
  let th = theme(root);

  const title = h("span", { cls: "cw-title" });
  const logBox = h("input", { cls: "cw-log", attrs: { type: "checkbox" } });
  // rotary models: the QK circuit depends on the offset Δ = query − key position
  const offsetSlider = h("input", { cls: "cw-offset-range", attrs: { type: "range", min: "0", step: "1" } });
  const offsetBox = h("input", { cls: "cw-offset", attrs: { type: "number", min: "0", step: "1" } });
  const offsetCtl = h("label", { cls: "cw-offset-ctl", title: "rotary positions: QK circuit W_E W_Q R_Δ W_Kᵀ W_Eᵀ at offset Δ = query − key position" },
    ["offset Δ", offsetSlider, offsetBox]);
  // "QK composed through" an earlier head h1: adds W_E W_Q W_Kᵀ (W_OV^h1)ᵀ W_Eᵀ (engine k_composition_qk)
  const through = h("select", { cls: "cw-through", attrs: { title: "add each later head's QK circuit composed through this head's output on the key side (K-composition)" } });
  through.append(h("option", { text: "none", attrs: { value: "" } }));
  for (let l = 0; l < model.get("n_layers") - 1; l++)
    for (let hd = 0; hd < model.get("n_heads"); hd++) through.append(h("option", { text: `L${l}H${hd}`, attrs: { value: `${l},${hd}` } }));
  through.addEventListener("change", () => {
    model.set("through", through.value ? through.value.split(",").map(Number) : []);
    model.save_changes();
  });
  const bar = h("div", { cls: "cw-bar" }, [
    title,
    h("label", { title: "draw each eigenvalue at radius log10(1 + |λ|), same angle" }, [logBox, "log magnitude"]),
    offsetCtl,
    h("label", {}, ["QK composed through ", through]),
  ]);
  // each recomputes every head's positivity: a kernel answers them (the offline export holds no such states)
  needsKernel(model, [offsetSlider, offsetBox, through], bar);
  const PW = 230, PH = 90; // offset profile plot, CSS px
  const profileCanvas = h("canvas", { cls: "cw-canvas cw-profile-canvas" });
  const profileBox = h("div", { cls: "cw-profile" }, [
    h("div", { cls: "cw-eig-title", text: "offset profile: mean attention score vs Δ (click to set Δ)" }), profileCanvas]);
  const note = h("div", { cls: "cw-note cw-qk-note" });
  const msg = messageArea(model);
  const computing = pendingNote(model, msg);
  const legend = h("div", {
    cls: "cw-legend",
    text: "cell: upper half OV positivity, lower half QK positivity (full circuits), Re(Σλ)/Σ|λ|; red −1 … +1 blue",
  });

  // heads already received (and the selected head's neighbours, prefetched) redraw from the page's
  // cache at the click (lib/headcache.js); the kernel is still told the selection
  const sel = cachedSelection(model, ["eigs", "profile"], (source) => draw(source));
  root.cwHeadCache = sel.cache; // for benchmarks (a property, not markup)
  let pos = {};
  const grid = headGrid(model, {
    label: "heads by eigenvalue positivity",
    onRequest(l, hd) { if (!sel.request(l, hd)) computing.pending(l, hd); },
    paint(btn, l, hd) {
      const i = l * model.get("n_heads") + hd;
      btn.replaceChildren();
      const tip = [`L${l}H${hd}`];
      for (const c of ["ov", "qk"]) {
        const v = pos[c] ? pos[c][i] : NaN;
        const col = divColor(th, v);
        const txt = Number.isFinite(v) ? (v < 0 ? "−" : "+") + Math.abs(v).toFixed(2).replace(/^0/, "") : "·";
        const half = h("span", { cls: `cw-half cw-half-${c}`, text: txt });
        half.style.background = rgbCss(col);
        half.style.color = inkOn(th, col);
        btn.append(half);
        tip.push(`${c.toUpperCase()} positivity ${fmt(v)}`);
      }
      btn.title = tip.join("\n");
    },
  });

  const plots = h("div", { cls: "cw-eig-plots" });
  const readout = h("div", { cls: "cw-readout cw-eig-readout", text: "hover an eigenvalue" });
  root.append(bar, msg.el, h("div", { cls: "cw-main" }, [h("div", {}, [grid.el, legend]),
    h("div", {}, [plots, profileBox, readout, note])]));

  function setOffset(v) {
    if (model.offline) { syncOffset(); return; } // (the profile click too: no kernel to answer it)
    const max = model.get("max_offset");
    const off = Math.max(0, Math.min(max, Math.round(Number(v))));
    if (!Number.isFinite(off) || off === model.get("offset")) { syncOffset(); return; }
    computing.pending();
    model.set("offset", off);
    model.save_changes();
  }
  function syncOffset() {
    const rot = model.get("rotary");
    offsetCtl.style.display = rot ? "" : "none";
    profileBox.style.display = rot ? "" : "none";
    const max = String(model.get("max_offset"));
    offsetSlider.max = max; offsetBox.max = max;
    offsetSlider.value = String(model.get("offset")); offsetBox.value = String(model.get("offset"));
    legend.textContent = rot
      ? `cell: upper half OV positivity, lower half QK positivity at Δ = ${model.get("offset")} (full circuits), Re(Σλ)/Σ|λ|; red −1 … +1 blue`
      : "cell: upper half OV positivity, lower half QK positivity (full circuits), Re(Σλ)/Σ|λ|; red −1 … +1 blue";
    note.textContent = model.get("qk_note") || "";
  }
  offsetSlider.addEventListener("change", () => setOffset(offsetSlider.value));
  offsetBox.addEventListener("change", () => setOffset(offsetBox.value));
  offsetBox.addEventListener("keydown", (ev) => { ev.stopPropagation(); if (ev.key === "Enter") setOffset(offsetBox.value); });

  function drawProfile() {
    if (!model.get("rotary")) return;
    const vals = decodeArray(sel.get("profile"));
    const ctx = hidpi(profileCanvas, PW, PH);
    ctx.fillStyle = th.css.bg; ctx.fillRect(0, 0, PW, PH);
    ctx.strokeStyle = th.css.border; ctx.strokeRect(0.5, 0.5, PW - 1, PH - 1);
    const n = vals ? vals.length : 0;
    if (!n) return;
    let lo = Infinity, hi = -Infinity, peak = 0;
    for (let i = 0; i < n; i++) { lo = Math.min(lo, vals[i]); hi = Math.max(hi, vals[i]); if (vals[i] > vals[peak]) peak = i; }
    if (hi === lo) { hi += 1; lo -= 1; }
    const X = (i) => 6 + (i / Math.max(1, n - 1)) * (PW - 12), Y = (v) => PH - 14 - ((v - lo) / (hi - lo)) * (PH - 26);
    ctx.strokeStyle = th.css.fg2; ctx.beginPath();
    for (let i = 0; i < n; i++) { if (i) ctx.lineTo(X(i), Y(vals[i])); else ctx.moveTo(X(i), Y(vals[i])); }
    ctx.stroke();
    const off = model.get("offset");
    if (off < n) {
      ctx.fillStyle = rgbCss(th.rgb.accent);
      ctx.beginPath(); ctx.arc(X(off), Y(vals[off]), 3.5, 0, 2 * Math.PI); ctx.fill();
    }
    ctx.fillStyle = th.css.fg2; ctx.font = `10px ${th.font}`;
    ctx.fillText(`Δ 0…${n - 1}; peak Δ=${peak} (${fmt(vals[peak])})`, 6, PH - 3);
    profileCanvas.dataset.peak = String(peak);
    profileCanvas.dataset.n = String(n);
    profileCanvas.onclick = (ev) => {
      const r = profileCanvas.getBoundingClientRect();
      setOffset(((ev.clientX - r.left - 6) / (PW - 12)) * Math.max(1, n - 1));
    };
  }

  function readPositivity() {
    pos = {};
    for (const [c, p] of Object.entries(model.get("positivity") || {})) pos[c] = decodeArray(p);
    grid.refresh();
  }

  function drawOne(c, label, vals, shown) {
    const n = vals.length / 2;
    const logm = model.get("log_magnitude");
    const pts = [];
    let R = logm ? Math.log10(2) : 1; // the unit circle is always inside the view
    for (let k = 0; k < n; k++) {
      let re = vals[2 * k], im = vals[2 * k + 1];
      const r = Math.hypot(re, im);
      if (logm && r > 0) { const s = Math.log10(1 + r) / r; re *= s; im *= s; }
      pts.push([re, im, vals[2 * k], vals[2 * k + 1]]);
      R = Math.max(R, Math.abs(re), Math.abs(im));
    }
    R *= 1.12;
    const canvas = h("canvas", { cls: "cw-canvas cw-eig-canvas", data: { circuit: c } });
    const ctx = hidpi(canvas, SIZE, SIZE);
    const X = (x) => SIZE / 2 + (x / R) * (SIZE / 2), Y = (y) => SIZE / 2 - (y / R) * (SIZE / 2);
    ctx.fillStyle = th.css.bg; ctx.fillRect(0, 0, SIZE, SIZE);
    ctx.strokeStyle = th.css.border; ctx.lineWidth = 1;
    ctx.strokeRect(0.5, 0.5, SIZE - 1, SIZE - 1);
    ctx.beginPath(); ctx.moveTo(0, Y(0)); ctx.lineTo(SIZE, Y(0)); ctx.moveTo(X(0), 0); ctx.lineTo(X(0), SIZE); ctx.stroke();
    // unit circle |λ| = 1 (radius log10 2 in log mode); at large scales it would shrink below a few
    // pixels: then it is drawn at MIN_UNIT_PX and its label says it is enlarged
    const u = logm ? Math.log10(2) : 1;
    const trueR = (u / R) * (SIZE / 2);
    const unitR = Math.max(trueR, MIN_UNIT_PX);
    ctx.setLineDash(trueR < MIN_UNIT_PX ? [2, 2] : [4, 3]); ctx.strokeStyle = th.css.fg2; ctx.lineWidth = 1.5;
    ctx.beginPath(); ctx.arc(X(0), Y(0), unitR, 0, 2 * Math.PI); ctx.stroke();
    ctx.setLineDash([]); ctx.lineWidth = 1;
    ctx.fillStyle = th.css.fg2; ctx.font = `10px ${th.font}`;
    const unitText = trueR < MIN_UNIT_PX ? "|λ|=1 (enlarged)" : "|λ|=1";
    const lw = ctx.measureText(unitText).width, lh = 10;
    const pxPts = pts.map(([x, y]) => [X(x), Y(y)]);
    const area = { w: SIZE, h: SIZE };
    const at = placeLabel(pxPts, circleLabelCandidates(X(0), Y(0), unitR, lw, lh, area), lw, lh, area);
    ctx.fillText(unitText, at.x, at.y + lh - 1);
    canvas.dataset.unitCircle = JSON.stringify({ r: +unitR.toFixed(1), trueR: +trueR.toFixed(3), label: [+at.x.toFixed(1), +at.y.toFixed(1), +lw.toFixed(1), lh] });
    ctx.fillText(`±${fmt(R / 1.12, 2)}${logm ? " (log)" : ""}`, 4, 12);
    for (const [x, y, re] of pts) {
      ctx.fillStyle = rgbCss(re >= 0 ? th.rgb.accent : th.rgb.negative);
      ctx.beginPath(); ctx.arc(X(x), Y(y), 3.2, 0, 2 * Math.PI); ctx.fill();
    }
    // where the points are (CSS px), for tests and assistive tools
    canvas.dataset.points = JSON.stringify(pts.map(([x, y]) => [+X(x).toFixed(1), +Y(y).toFixed(1)]));
    const p = pos[c] ? pos[c][shown.layer * model.get("n_heads") + shown.head] : NaN;
    const head = h("div", { cls: "cw-eig-title" }, [
      h("span", { cls: "cw-eig-name", text: label }),
      h("br"),
      h("span", { cls: "cw-eig-pos", text: `positivity ${fmt(p)}  ·  ${n} eigenvalues`, data: { circuit: c } }),
    ]);
    canvas.addEventListener("mousemove", (ev) => {
      const r = canvas.getBoundingClientRect();
      const mx = ev.clientX - r.left, my = ev.clientY - r.top;
      let best = -1, bd = 64; // within 8 px
      pts.forEach(([x, y], k) => { const d = (X(x) - mx) ** 2 + (Y(y) - my) ** 2; if (d < bd) { bd = d; best = k; } });
      if (best < 0) { readout.textContent = `${label}: no eigenvalue here`; return; }
      const [, , re, im] = pts[best];
      readout.textContent = `${label}: λ${best + 1} = ${fmt(re, 4)} ${im < 0 ? "−" : "+"} ${fmt(Math.abs(im), 4)}i, |λ| = ${fmt(Math.hypot(re, im), 4)}`;
      readout.dataset.circuit = c;
    });
    const plot = h("div", { cls: "cw-eig-plot" }, [head, canvas]);
    plot.drawnEigs = pts.map(([, , re, im]) => [sig(re, 4), sig(im, 4)]); // the plotted eigenvalues (digest)
    return plot;
  }

  function draw(source = "kernel") {
    computing.settled();
    const t0 = performance.now();
    th = theme(root);
    const shown = sel.get("shown") || {};
    const eigs = sel.get("eigs") || {};
    const items = [];
    let total = 0;
    for (const [c, label] of model.get("circuits")) {
      const vals = decodeArray(eigs[c]);
      total += vals.length / 2;
      items.push(drawOne(c, label, vals, shown));
    }
    plots.replaceChildren(...items);
    const drawnEigs = {};
    model.get("circuits").forEach(([c], k) => { drawnEigs[c] = items[k].drawnEigs; });
    publishDrawn(root, { layer: shown.layer, head: shown.head, log: model.get("log_magnitude") ? 1 : 0, eigs: drawnEigs });
    logBox.checked = model.get("log_magnitude");
    through.value = (model.get("through") || []).join(",");
    syncOffset();
    drawProfile();
    const at = model.get("rotary") ? ` (QK at Δ=${model.get("offset")})` : "";
    title.textContent = `${model.get("title") ? model.get("title") + " — " : ""}L${shown.layer}H${shown.head} eigenvalues${at}`;
    markDrawn(root, { shownLayer: shown.layer, shownHead: shown.head, nEigs: total, offset: model.get("offset"),
      drawMs: (performance.now() - t0).toFixed(1), drawSource: source, cacheEntries: sel.cache.size });
  }

  logBox.addEventListener("change", () => { model.set("log_magnitude", logBox.checked); model.save_changes(); });
  // one redraw after all keys of a kernel update arrived (lib/redraw.js)
  const changes = onModelChanges(model, ["positivity", "shown", "eigs", "log_magnitude", "offset", "profile", "through"], (c) => {
    if (c.has("positivity")) readPositivity();
    // (an answer to an older click while a newer one is on screen from the cache is not drawn)
    if (!(c.has("shown") || c.has("eigs")) || sel.kernelUpdate()) draw(sel.fromCache ? "cache" : "kernel");
  });
  readPositivity();
  draw();
  sel.start();
  const offTheme = onThemeChange(() => { th = theme(root); grid.refresh(); draw(); });
  return cleanup(computing, offTheme, changes, grid, msg, sel);
}

export default { render };
