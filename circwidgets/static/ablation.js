// src/lib/color.js
var FALLBACK = {
  bg: "#ffffff",
  bg2: "#eeeeee",
  fg: "rgba(0,0,0,0.87)",
  fg2: "rgba(0,0,0,0.54)",
  border: "#bdbdbd",
  accent: "#1976d2",
  negative: "#d32f2f",
  select: "#ff9800"
};
var VARS = {
  bg: "--jp-layout-color0",
  bg2: "--jp-layout-color2",
  fg: "--jp-ui-font-color1",
  fg2: "--jp-ui-font-color2",
  border: "--jp-border-color1",
  accent: "--jp-brand-color1",
  negative: "--jp-error-color1",
  select: "--jp-warn-color1"
};
var probe = null;
function parseColor(css) {
  if (!probe) probe = document.createElement("canvas").getContext("2d", { willReadFrequently: true });
  probe.clearRect(0, 0, 1, 1);
  probe.fillStyle = "#000";
  probe.fillStyle = css;
  probe.fillRect(0, 0, 1, 1);
  const d = probe.getImageData(0, 0, 1, 1).data;
  return [d[0], d[1], d[2]];
}
function theme(el) {
  const cs = getComputedStyle(el);
  const t = { css: {}, rgb: {} };
  for (const [k, v] of Object.entries(VARS)) {
    const val = (cs.getPropertyValue(v) || "").trim() || FALLBACK[k];
    t.css[k] = val;
    t.rgb[k] = parseColor(val);
  }
  t.font = (cs.getPropertyValue("--jp-code-font-family") || "").trim() || "monospace";
  t.dark = luminance(t.rgb.bg) < 0.5;
  return t;
}
function luminance([r, g, b]) {
  return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
}
function mix(a, b, t) {
  t = t < 0 ? 0 : t > 1 ? 1 : t;
  return [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t];
}
function rgbCss(c) {
  return `rgb(${Math.round(c[0])},${Math.round(c[1])},${Math.round(c[2])})`;
}
function seqColor(th, t) {
  return mix(th.rgb.bg, th.rgb.accent, Number.isFinite(t) ? t : 0);
}
function divColor(th, v) {
  if (!Number.isFinite(v)) return th.rgb.bg2;
  return v >= 0 ? mix(th.rgb.bg, th.rgb.accent, v) : mix(th.rgb.bg, th.rgb.negative, -v);
}
function inkOn(th, rgb) {
  return luminance(rgb) < 0.55 ? "#ffffff" : "#111111";
}
function scaleColor(th, v, lo, hi, diverging) {
  if (!Number.isFinite(v)) return th.rgb.bg2;
  if (diverging) return divColor(th, v / Math.max(Math.abs(lo), Math.abs(hi), 1e-12));
  return seqColor(th, (v - lo) / (hi - lo || 1));
}
function scaleRange(vals, diverging) {
  let a = Infinity, b = -Infinity;
  for (const v of vals) if (Number.isFinite(v)) {
    if (v < a) a = v;
    if (v > b) b = v;
  }
  if (!Number.isFinite(a)) {
    a = 0;
    b = 1;
  }
  if (diverging) {
    const m = Math.max(Math.abs(a), Math.abs(b), 1e-12);
    return [-m, m];
  }
  const lo = Math.min(0, a);
  return [lo, b > lo ? b : lo + 1];
}
function legendColours(th, diverging, n = 120) {
  const out = [];
  for (let x = 0; x < n; x++) {
    const t = n > 1 ? x / (n - 1) : 0;
    out.push(diverging ? divColor(th, 2 * t - 1) : seqColor(th, t));
  }
  return out;
}

// src/lib/decode.js
function bytesOf(dv) {
  if (!dv) return new ArrayBuffer(0);
  if (dv instanceof ArrayBuffer) return dv.slice(0);
  return dv.buffer.slice(dv.byteOffset, dv.byteOffset + dv.byteLength);
}
function decodeF32(dv) {
  return new Float32Array(bytesOf(dv));
}
function decodeI32(dv) {
  return new Int32Array(bytesOf(dv));
}
function halfToFloat(bits) {
  const s = bits & 32768 ? -1 : 1, e = bits >> 10 & 31, f = bits & 1023;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}
var f16table = null;
function decodeF16(dv) {
  if (!f16table) {
    f16table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) f16table[i] = halfToFloat(i);
  }
  const u = new Uint16Array(bytesOf(dv));
  const out = new Float32Array(u.length);
  for (let i = 0; i < u.length; i++) out[i] = f16table[u[i]];
  return out;
}
function decodeU8(dv, lo = 0, hi = 1) {
  const u = new Uint8Array(bytesOf(dv));
  const out = new Float32Array(u.length);
  const s = (hi - lo) / 255;
  for (let i = 0; i < u.length; i++) out[i] = lo + u[i] * s;
  return out;
}
function expandTril(packed, n) {
  const full = new Float32Array(n * n);
  for (let i = 0, o = 0; i < n; i++) {
    full.set(packed.subarray(o, o + i + 1), i * n);
    o += i + 1;
  }
  return full;
}
function decodeArray(p, { keepPacked = false } = {}) {
  if (!p || !p.data) return new Float32Array(0);
  let a;
  if (p.dtype === "float16") a = decodeF16(p.data);
  else if (p.dtype === "uint8") a = decodeU8(p.data, p.lo, p.hi);
  else if (p.dtype === "int32") a = decodeI32(p.data);
  else a = decodeF32(p.data);
  if (p.layout === "tril" && !keepPacked) return expandTril(a, p.shape[0]);
  return a;
}

// src/lib/dom.js
function h(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  if (props.cls) node.className = props.cls;
  if (props.text !== void 0) node.textContent = String(props.text);
  if (props.title !== void 0) node.title = String(props.title);
  for (const [k, v] of Object.entries(props.attrs || {})) node.setAttribute(k, String(v));
  for (const [k, v] of Object.entries(props.data || {})) node.dataset[k] = String(v);
  for (const c of children) node.append(typeof c === "string" ? document.createTextNode(c) : c);
  return node;
}
function hidpi(canvas, w, h_) {
  const r = window.devicePixelRatio || 1;
  canvas.width = Math.round(w * r);
  canvas.height = Math.round(h_ * r);
  canvas.style.width = `${w}px`;
  canvas.style.height = `${h_}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(r, 0, 0, r, 0, 0);
  return ctx;
}
function onThemeChange(cb) {
  if (typeof MutationObserver === "undefined") return () => {
  };
  const mo = new MutationObserver(() => cb());
  mo.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-name", "data-jp-theme-light"] });
  return () => mo.disconnect();
}
function markDrawn(el, info) {
  el.dataset.drawCount = String((Number(el.dataset.drawCount) || 0) + 1);
  for (const [k, v] of Object.entries(info)) el.dataset[k] = String(v);
  el.dataset.drawnAt = String(performance.now());
}

// src/lib/grid.js
var GRID_KEYS = {
  ArrowLeft: (l, hd) => [l, hd - 1],
  ArrowRight: (l, hd) => [l, hd + 1],
  ArrowUp: (l, hd) => [l - 1, hd],
  ArrowDown: (l, hd) => [l + 1, hd],
  Home: (l) => [l, 0],
  End: (l, hd, nL, nH) => [l, nH - 1],
  PageUp: (l, hd) => [0, hd],
  PageDown: (l, hd, nL) => [nL - 1, hd]
};
function gridMove(key, l, hd, nL, nH) {
  const f = GRID_KEYS[key];
  if (!f) return null;
  const [a, b] = f(l, hd, nL, nH);
  return [clamp(a, 0, nL - 1), clamp(b, 0, nH - 1)];
}
function clamp(x, lo, hi) {
  return Math.max(lo, Math.min(hi, x));
}
function headGrid(model, opts = {}) {
  const nL = model.get("n_layers"), nH = model.get("n_heads");
  const root = h("div", { cls: "cw-grid", attrs: { role: "grid", "aria-label": opts.label || "layers and heads" } });
  root.style.gridTemplateColumns = opts.cellWidth ? `auto repeat(${nH}, ${opts.cellWidth}px)` : `auto repeat(${nH}, minmax(${opts.cellMin || 26}px, 1fr))`;
  root.append(h("div", { cls: "cw-grid-corner", text: "" }));
  for (let hd = 0; hd < nH; hd++) root.append(h("div", { cls: "cw-grid-colhead", text: `H${hd}` }));
  const cells = [];
  for (let l = 0; l < nL; l++) {
    root.append(h("div", { cls: "cw-grid-rowhead", text: `L${l}` }));
    const row = [];
    for (let hd = 0; hd < nH; hd++) {
      const b = h("button", {
        cls: "cw-cell",
        data: { layer: l, head: hd },
        attrs: { type: "button", role: "gridcell", tabindex: "-1", "aria-label": `layer ${l} head ${hd}` }
      });
      b.addEventListener("click", () => select(l, hd, true));
      row.push(b);
      root.append(b);
    }
    cells.push(row);
  }
  function select(l, hd, focus) {
    l = clamp(l, 0, nL - 1);
    hd = clamp(hd, 0, nH - 1);
    if (focus) cells[l][hd].focus({ preventScroll: true });
    if (model.get("layer") !== l || model.get("head") !== hd) {
      model.set("layer", l);
      model.set("head", hd);
      model.save_changes();
      if (opts.onRequest) opts.onRequest(l, hd);
    }
    mark();
  }
  function mark() {
    const l = model.get("layer"), hd = model.get("head");
    for (let i = 0; i < nL; i++) {
      for (let j = 0; j < nH; j++) {
        const on = i === l && j === hd;
        cells[i][j].classList.toggle("cw-selected", on);
        cells[i][j].setAttribute("aria-selected", on ? "true" : "false");
        cells[i][j].tabIndex = on ? 0 : -1;
      }
    }
  }
  root.addEventListener("keydown", (ev) => {
    const m = gridMove(ev.key, model.get("layer"), model.get("head"), nL, nH);
    if (!m) return;
    ev.preventDefault();
    ev.stopPropagation();
    select(m[0], m[1], true);
  });
  const refresh = () => {
    if (opts.paint) for (let i = 0; i < nL; i++) for (let j = 0; j < nH; j++) opts.paint(cells[i][j], i, j);
    mark();
  };
  model.on("change:layer", mark);
  model.on("change:head", mark);
  refresh();
  return {
    el: root,
    cells,
    refresh,
    select,
    off: () => {
      model.off("change:layer", mark);
      model.off("change:head", mark);
    }
  };
}

// src/lib/message.js
function messageArea(model) {
  const box = h("div", { cls: "cw-message", attrs: { role: "status", "aria-live": "polite" } });
  const show = () => {
    const msg = model.get("error") || "";
    box.textContent = msg;
    box.classList.toggle("cw-error", !!msg);
    box.classList.remove("cw-note");
    box.hidden = !msg;
  };
  const note = (text) => {
    box.textContent = text;
    box.classList.remove("cw-error");
    box.classList.add("cw-note");
    box.hidden = false;
  };
  model.on("change:error", show);
  show();
  return { el: box, show, note, off: () => model.off("change:error", show) };
}

// src/lib/text.js
function visibleWhitespace(s) {
  return String(s).replace(/ /g, "␣").replace(/\n/g, "↵").replace(/\r/g, "␍").replace(/\t/g, "⇥").replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/g, "·");
}
function shortLabel(s, n = 12) {
  const v = visibleWhitespace(s);
  return v.length > n ? v.slice(0, n - 1) + "…" : v;
}
function fmt(x, digits = 3) {
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e4)) return x.toExponential(digits - 1);
  return x.toFixed(digits);
}

// src/lib/pattern.js
var offscreen = typeof document === "undefined" ? null : document.createElement("canvas");

// src/lib/panels.js
function heatmap(th, vals, nr, nc, opts = {}) {
  const canvas = h("canvas", { cls: "cw-canvas cw-heatmap", attrs: { tabindex: "0" } });
  const rl = opts.rowLabels || [], cl = opts.colLabels || [];
  const maxPx = opts.maxPx || 440;
  const nMax = Math.max(nr, nc, 1);
  const cell = opts.cell || (nMax * 4 <= maxPx ? Math.min(28, Math.floor(maxPx / nMax)) : maxPx / nMax);
  const ml = rl.length ? opts.marginLeft || 64 : 4, mt = cl.length ? opts.marginTop || 52 : 4;
  const W = Math.ceil(ml + nc * cell + 4), H = Math.ceil(mt + nr * cell + 4);
  let lo = opts.vmin, hi = opts.vmax;
  if (lo === void 0 || hi === void 0) {
    const [a, b] = scaleRange(vals, opts.diverging);
    if (lo === void 0) lo = a;
    if (hi === void 0) hi = opts.diverging || b > lo ? b : lo + 1;
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
    } else {
      const off = document.createElement("canvas");
      off.width = nc;
      off.height = nr;
      const octx = off.getContext("2d");
      const img = octx.createImageData(nc, nr), d = img.data;
      for (let i = 0; i < nr * nc; i++) {
        const col = colour(vals[i]);
        d[4 * i] = col[0];
        d[4 * i + 1] = col[1];
        d[4 * i + 2] = col[2];
        d[4 * i + 3] = 255;
      }
      octx.putImageData(img, 0, 0);
      ctx.imageSmoothingEnabled = cell < 1;
      ctx.drawImage(off, ml, mt, nc * cell, nr * cell);
    }
    ctx.strokeStyle = th.css.border;
    ctx.lineWidth = 1;
    ctx.strokeRect(ml - 0.5, mt - 0.5, nc * cell + 1, nr * cell + 1);
    if (opts.rowGroups > 1 || opts.colGroups > 1) {
      ctx.strokeStyle = th.css.fg2;
      ctx.beginPath();
      if (opts.rowGroups > 1) for (let r = opts.rowGroups; r < nr; r += opts.rowGroups) {
        ctx.moveTo(ml, mt + r * cell + 0.5);
        ctx.lineTo(ml + nc * cell, mt + r * cell + 0.5);
      }
      if (opts.colGroups > 1) for (let c = opts.colGroups; c < nc; c += opts.colGroups) {
        ctx.moveTo(ml + c * cell + 0.5, mt);
        ctx.lineTo(ml + c * cell + 0.5, mt + nr * cell);
      }
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
    const cs = Math.max(cell, 4);
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
  return { el: canvas, geom, redraw };
}
function scaleLegend(th, lo, hi, diverging, note = "") {
  const bar = h("canvas", { cls: "cw-scale" });
  const ctx = hidpi(bar, 120, 10);
  legendColours(th, diverging, 120).forEach((c, x) => {
    ctx.fillStyle = rgbCss(c);
    ctx.fillRect(x, 0, 1, 10);
  });
  return h("div", { cls: "cw-legend cw-scale-legend" }, [
    h("span", { text: fmt(lo) + " " }),
    bar,
    h("span", { text: " " + fmt(hi) }),
    ...note ? [h("span", { cls: "cw-scale-note", text: "  " + note })] : []
  ]);
}

// src/lib/redraw.js
function onModelChanges(model, keys, handler, schedule = queueMicrotask) {
  let changed = /* @__PURE__ */ new Set();
  let queued = false;
  let live = true;
  const run = () => {
    queued = false;
    if (!live || !changed.size) return;
    const c = changed;
    changed = /* @__PURE__ */ new Set();
    handler(c);
  };
  const listeners = keys.map((k) => {
    const cb = () => {
      changed.add(k);
      if (!queued) {
        queued = true;
        schedule(run);
      }
    };
    model.on(`change:${k}`, cb);
    return [k, cb];
  });
  return {
    flush: run,
    off() {
      live = false;
      for (const [k, cb] of listeners) model.off(`change:${k}`, cb);
    }
  };
}

// src/ablation.js
function render({ model, el }) {
  const root = h("div", { cls: "cw-root cw-ablation" });
  el.append(root);
  let th = theme(root);
  const nL = model.get("n_layers"), nH = model.get("n_heads");
  const title = h("span", { cls: "cw-title" });
  const modeTabs = h("div", { cls: "cw-tabs", attrs: { role: "tablist", "aria-label": "mode" } });
  const modeBtns = {};
  for (const [m, lab] of [["ablate", "ablation"], ["patch", "activation patching"]]) {
    const b = h("button", { cls: "cw-tab", text: lab, data: { mode: m }, attrs: { type: "button", role: "tab" } });
    b.addEventListener("click", () => {
      model.set("mode", m);
      model.save_changes();
    });
    if (m === "patch" && !model.get("has_patching")) {
      b.disabled = true;
      b.title = "pass corrupted=... to enable";
    }
    modeBtns[m] = b;
    modeTabs.append(b);
  }
  const kindSel = h("select", { cls: "cw-ablation-kind", attrs: { "aria-label": "ablation kind" } });
  for (const k of ["zero", "mean"]) kindSel.append(h("option", { text: `${k} ablation`, attrs: { value: k } }));
  kindSel.addEventListener("change", () => {
    model.set("ablation", kindSel.value);
    model.save_changes();
  });
  const resetBtn = h("button", { cls: "cw-btn cw-reset", text: "restore all", attrs: { type: "button" } });
  resetBtn.addEventListener("click", () => {
    model.set("off", []);
    model.set("cuts", []);
    model.save_changes();
  });
  const bar = h("div", { cls: "cw-bar" }, [title, modeTabs, kindSel, resetBtn]);
  const msg = messageArea(model);
  const ablateView = h("div", { cls: "cw-ablate-view" });
  const patchView = h("div", { cls: "cw-patch-view" });
  root.append(bar, msg.el, ablateView, patchView);
  let effects = new Float32Array(0), effMax = 1;
  const isOff = (l, hd) => (model.get("off") || []).some(([a, b]) => a === l && b === hd);
  const grid = headGrid(model, {
    label: "heads: click to ablate / restore",
    paint(btn, l, hd) {
      const e = effects.length ? effects[l * nH + hd] : NaN;
      const c = Number.isFinite(e) ? divColor(th, e / effMax) : th.rgb.bg;
      const off = isOff(l, hd);
      btn.style.background = rgbCss(c);
      btn.style.color = inkOn(th, c);
      btn.textContent = off ? "off" : Number.isFinite(e) ? (e >= 0 ? "+" : "") + e.toFixed(2) : "";
      btn.classList.toggle("cw-off", off);
      btn.dataset.off = off ? "1" : "0";
      btn.setAttribute("aria-pressed", off ? "true" : "false");
      btn.title = `L${l}H${hd}: ${off ? "ablated (click to restore)" : "on (click to ablate)"}` + (Number.isFinite(e) ? `
loss change when ablated alone: ${fmt(e, 4)}` : "");
    }
  });
  grid.cells.forEach((row, l) => row.forEach((btn, hd) => btn.addEventListener("click", () => {
    const cur = (model.get("off") || []).map((x) => x.slice());
    const i = cur.findIndex(([a, b]) => a === l && b === hd);
    if (i >= 0) cur.splice(i, 1);
    else cur.push([l, hd]);
    model.set("off", cur);
    model.save_changes();
  })));
  const lossBox = h("div", { cls: "cw-kv cw-loss-box" });
  const cutsBox = h("div", { cls: "cw-cuts" });
  const tokTable = h("div", { cls: "cw-token-loss" });
  const predBox = h("div", { cls: "cw-preds" });
  const headOpts = (sel, minL, maxL) => {
    sel.replaceChildren();
    for (let l = minL; l <= maxL; l++) for (let j = 0; j < nH; j++) sel.append(h("option", { text: `L${l}H${j}`, attrs: { value: `${l},${j}` } }));
  };
  const srcSel = h("select", { cls: "cw-cut-src", attrs: { "aria-label": "path source head" } });
  const dstSel = h("select", { cls: "cw-cut-dst", attrs: { "aria-label": "path destination head" } });
  const kSel = h("select", { cls: "cw-cut-kind", attrs: { "aria-label": "destination input" } });
  for (const k of ["q", "k", "v"]) kSel.append(h("option", { text: k.toUpperCase(), attrs: { value: k } }));
  kSel.value = "k";
  const cutBtn = h("button", { cls: "cw-btn cw-cut-add", text: "cut path", attrs: { type: "button" } });
  if (nL >= 2) {
    headOpts(srcSel, 0, nL - 2);
    headOpts(dstSel, 1, nL - 1);
  }
  cutBtn.addEventListener("click", () => {
    const [l1, h1] = srcSel.value.split(",").map(Number), [l2, h2] = dstSel.value.split(",").map(Number);
    const cur = (model.get("cuts") || []).map((x) => x.slice());
    if (!cur.some((c) => c.join() === [l1, h1, l2, h2, kSel.value].join())) cur.push([l1, h1, l2, h2, kSel.value]);
    model.set("cuts", cur);
    model.save_changes();
  });
  const cutForm = nL >= 2 ? h("div", { cls: "cw-bar" }, [h("span", { text: "cut path" }), srcSel, h("span", { text: "→" }), dstSel, kSel, cutBtn]) : h("div", { cls: "cw-legend", text: "one layer: no composition paths to cut" });
  ablateView.append(
    h("div", { cls: "cw-main" }, [
      h("div", {}, [grid.el, h("div", { cls: "cw-legend", text: "cell colour / number: loss change when that head alone is ablated" })]),
      h("div", {}, [lossBox, cutForm, cutsBox, predBox])
    ]),
    h("div", { cls: "cw-legend", text: "per-token loss (predicting the next token); click a row for the top predictions there" }),
    tokTable
  );
  function drawLoss() {
    const loss = model.get("loss"), clean = model.get("clean_loss");
    lossBox.replaceChildren(
      "loss ",
      h("span", { cls: "cw-loss", text: fmt(loss, 5), data: { loss: String(loss) } }),
      "   clean ",
      h("span", { cls: "cw-clean-loss", text: fmt(clean, 5) }),
      "   change ",
      h("span", { cls: "cw-loss-delta", text: (loss - clean >= 0 ? "+" : "") + fmt(loss - clean, 5) })
    );
  }
  function drawCuts() {
    const cuts = model.get("cuts") || [];
    cutsBox.replaceChildren(...cuts.map((c, i) => {
      const x = h("button", { cls: "cw-btn cw-cut-remove", text: "×", attrs: { type: "button", "aria-label": "restore this path" } });
      x.addEventListener("click", () => {
        const cur = (model.get("cuts") || []).filter((_, j) => j !== i);
        model.set("cuts", cur);
        model.save_changes();
      });
      return h("span", { cls: "cw-cut", data: { cut: c.join(",") } }, [
        h("span", { text: `L${c[0]}H${c[1]} → L${c[2]}H${c[3]} (${String(c[4]).toUpperCase()})` }),
        x
      ]);
    }));
  }
  function drawTokens() {
    const labels = model.get("labels") || [];
    const tl = decodeArray(model.get("token_loss")), cl = decodeArray(model.get("clean_token_loss"));
    const pos = model.get("position");
    let m = 1e-9;
    for (let i = 0; i < tl.length; i++) m = Math.max(m, Math.abs(tl[i] - cl[i]));
    const head = h("div", { cls: "cw-tl-row cw-tl-head" }, ["pos", "token → next", "clean", "ablated", "change"].map((t) => h("span", { text: t })));
    const rows = [head];
    for (let i = 0; i < tl.length; i++) {
      const d = tl[i] - cl[i];
      const c = divColor(th, d / m);
      const dv = h("span", { cls: "cw-tl-delta", text: (d >= 0 ? "+" : "") + fmt(d, 3) });
      dv.style.background = rgbCss(c);
      dv.style.color = inkOn(th, c);
      const row = h("div", { cls: "cw-tl-row cw-clickable", data: { pos: i }, attrs: { tabindex: "0" } }, [
        h("span", { text: String(i) }),
        h("span", { cls: "cw-tok", text: `${shortLabel(labels[i] ?? "", 14)} → ${shortLabel(labels[i + 1] ?? "", 14)}` }),
        h("span", { text: fmt(cl[i], 3) }),
        h("span", { cls: "cw-tl-loss", text: fmt(tl[i], 3) }),
        dv
      ]);
      if (i === pos) row.classList.add("cw-selected");
      row.addEventListener("click", () => {
        model.set("position", i);
        model.save_changes();
      });
      rows.push(row);
    }
    tokTable.replaceChildren(...rows);
  }
  function drawPreds() {
    const labels = model.get("labels") || [];
    const pos = model.get("position");
    const list = (name, items) => h("div", { cls: `cw-pred-list cw-pred-${name}` }, [
      h("div", { cls: "cw-legend", text: name }),
      ...items.map(([lab, id, p]) => h("div", { cls: "cw-pred", data: { token: id } }, [
        h("span", { cls: "cw-tok", text: visibleWhitespace(lab) }),
        h("span", { text: `  ${fmt(p * 100, 1)}%` })
      ]))
    ]);
    predBox.replaceChildren(
      h("div", { cls: "cw-legend", text: `top next-token predictions after [${pos}] ` }, [h("span", { cls: "cw-tok", text: visibleWhitespace(labels[pos] ?? "") })]),
      h("div", { cls: "cw-pred-cols" }, [list("clean", model.get("clean_top") || []), list("ablated", model.get("top") || [])])
    );
  }
  function readEffects() {
    effects = decodeArray(model.get("effects"));
    effMax = 1e-9;
    for (const e of effects) if (Number.isFinite(e)) effMax = Math.max(effMax, Math.abs(e));
  }
  function drawPatch() {
    const ph = model.get("patch_heads"), pr = model.get("patch_resid");
    if (!ph || !ph.data) {
      patchView.replaceChildren(h("div", { cls: "cw-legend", text: "computing patching…" }));
      return;
    }
    const H = decodeArray(ph), R = decodeArray(pr);
    const labels = model.get("labels") || [], cl = model.get("corrupt_labels") || [];
    const P = pr.shape[1];
    const posLabels = labels.map((s, i) => cl[i] !== void 0 && cl[i] !== s ? `${s}/${cl[i]}` : s);
    const readout = h("div", { cls: "cw-readout cw-patch-readout", text: "hover a cell" });
    const hmR = heatmap(th, R, nL, P, {
      rowLabels: Array.from({ length: nL }, (_, l) => `L${l}`),
      colLabels: posLabels,
      diverging: true,
      maxPx: 520,
      marginLeft: 32,
      marginTop: 70,
      onHover(r, c, v) {
        readout.textContent = r === null ? "" : `resid_pre L${r}, position ${c} (${visibleWhitespace(labels[c] ?? "")}): ${fmt(v, 4)}`;
      }
    });
    hmR.el.classList.add("cw-patch-resid");
    const sel = [model.get("layer"), model.get("head")];
    const hmH = heatmap(th, H, nL, nH, {
      rowLabels: Array.from({ length: nL }, (_, l) => `L${l}`),
      colLabels: Array.from({ length: nH }, (_, j) => `H${j}`),
      diverging: true,
      maxPx: 300,
      marginLeft: 32,
      marginTop: 30,
      marks: { cell: sel },
      onHover(r, c, v) {
        readout.textContent = r === null ? "" : `head L${r}H${c} output patched: ${fmt(v, 4)}`;
      },
      onClick(r, c) {
        model.set("layer", r);
        model.set("head", c);
        model.save_changes();
      }
    });
    hmH.el.classList.add("cw-patch-heads");
    patchView.replaceChildren(
      h("div", { cls: "cw-legend cw-patch-info", text: model.get("patch_info") }),
      scaleLegend(th, hmR.geom.lo, hmR.geom.hi, true, "clean → corrupted patching (blue: restores the clean answer)"),
      h("div", { cls: "cw-main" }, [
        h("div", {}, [h("div", { cls: "cw-small-title", text: "residual stream (layer × position)" }), hmR.el]),
        h("div", {}, [h("div", { cls: "cw-small-title", text: "head outputs (layer × head)" }), hmH.el])
      ]),
      readout
    );
  }
  function draw() {
    const t0 = performance.now();
    th = theme(root);
    const mode = model.get("mode");
    for (const [m, b] of Object.entries(modeBtns)) b.setAttribute("aria-selected", m === mode ? "true" : "false");
    kindSel.value = model.get("ablation");
    ablateView.hidden = mode !== "ablate";
    patchView.hidden = mode !== "patch";
    title.textContent = `${model.get("title") ? model.get("title") + " — " : ""}${mode === "patch" ? "activation patching" : "ablation"}`;
    readEffects();
    grid.refresh();
    drawLoss();
    drawCuts();
    drawTokens();
    drawPreds();
    if (mode === "patch") drawPatch();
    markDrawn(root, {
      shownLayer: model.get("layer"),
      shownHead: model.get("head"),
      loss: model.get("loss"),
      nOff: (model.get("off") || []).length,
      nCuts: (model.get("cuts") || []).length,
      mode,
      drawMs: (performance.now() - t0).toFixed(1)
    });
  }
  const changes = onModelChanges(model, [
    "loss",
    "token_loss",
    "top",
    "clean_top",
    "off",
    "cuts",
    "mode",
    "patch_heads",
    "patch_resid",
    "effects",
    "position",
    "ablation",
    "layer",
    "head"
  ], () => draw());
  draw();
  const offTheme = onThemeChange(() => {
    th = theme(root);
    draw();
  });
  return () => {
    offTheme();
    changes.off();
    grid.off();
    msg.off();
  };
}
var ablation_default = { render };
export {
  ablation_default as default
};
