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
function tone(scale) {
  if (scale === "sqrt") return Math.sqrt;
  if (scale === "log") return (x) => x > 1e-3 ? 1 + Math.log10(x) / 3 : 0;
  return (x) => x;
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
function cursorMove(key, cursor, nr, nc) {
  const mv = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] }[key];
  if (!mv) return null;
  return [clamp(cursor[0] + mv[0], 0, nr - 1), clamp(cursor[1] + mv[1], 0, nc - 1)];
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
var LEVELS = 4096;
function pixelWord(c) {
  return (255 << 24 | Math.round(c[2]) << 16 | Math.round(c[1]) << 8 | Math.round(c[0])) >>> 0;
}
function colourTable(th, scale = "linear", levels = LEVELS) {
  const f = tone(scale), lut = new Uint32Array(levels);
  for (let k = 0; k < levels; k++) lut[k] = pixelWord(seqColor(th, f(k / (levels - 1))));
  return lut;
}
function patternPixels(A, N, { packed = false, vmax = 1, lut, maskWord }) {
  const px = new Uint32Array(N * N), L = lut.length, s = (L - 1) / (vmax || 1);
  for (let i = 0; i < N; i++) {
    const src = packed ? i * (i + 1) / 2 : i * N, dst = i * N;
    for (let j = 0; j <= i; j++) {
      const q = A[src + j] * s + 0.5 | 0;
      px[dst + j] = lut[q < 0 ? 0 : q >= L ? L - 1 : q];
    }
    px.fill(maskWord, dst + i + 1, dst + N);
  }
  return px;
}
function patternGeometry(N, { maxPx = 520, minPx = 160, labelMax = 64, margin = 84 } = {}) {
  const withLabels = N > 0 && N <= labelMax;
  const cell = N <= 12 ? 28 : N <= 32 ? 14 : N <= 64 ? 8 : 1;
  const S = Math.max(minPx, Math.min(maxPx, N * cell));
  const m = withLabels ? margin : 4;
  return { ml: m, mt: m, S, N, withLabels };
}
function cellAt(canvas, geom, ev) {
  const r = canvas.getBoundingClientRect();
  const x = ev.clientX - r.left - geom.ml, y = ev.clientY - r.top - geom.mt;
  if (x < 0 || y < 0 || x >= geom.S || y >= geom.S || !geom.N) return null;
  return [Math.floor(y / geom.S * geom.N), Math.floor(x / geom.S * geom.N)];
}
function maxOf(A) {
  let m = 0;
  for (let i = 0; i < A.length; i++) if (A[i] > m) m = A[i];
  return m;
}
var offscreen = typeof document === "undefined" ? null : document.createElement("canvas");
function drawPattern(canvas, th, opts) {
  const { A, N, packed = false, vmax = 1, scale = "linear", labels = [], marks = {} } = opts;
  const geom = patternGeometry(N, opts);
  const { ml, mt, S } = geom;
  const side = Math.max(N, 1);
  offscreen.width = side;
  offscreen.height = side;
  const octx = offscreen.getContext("2d");
  const img = octx.createImageData(side, side);
  if (N) {
    const px = patternPixels(A, N, { packed, vmax, lut: colourTable(th, scale), maskWord: pixelWord(th.rgb.bg2) });
    new Uint32Array(img.data.buffer).set(px);
  }
  octx.putImageData(img, 0, 0);
  const W = ml + S + 4, H = mt + S + 4;
  const ctx = hidpi(canvas, W, H);
  ctx.fillStyle = th.css.bg;
  ctx.fillRect(0, 0, W, H);
  ctx.imageSmoothingEnabled = N > S;
  ctx.drawImage(offscreen, ml, mt, S, S);
  ctx.strokeStyle = th.css.border;
  ctx.lineWidth = 1;
  ctx.strokeRect(ml - 0.5, mt - 0.5, S + 1, S + 1);
  if (geom.withLabels) {
    const step = S / N;
    ctx.fillStyle = th.css.fg;
    ctx.font = `${Math.min(11, Math.max(7, step - 1))}px ${th.font}`;
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    for (let i = 0; i < N; i++) ctx.fillText(shortLabel(labels[i] ?? ""), ml - 3, mt + (i + 0.5) * step, ml - 6);
    ctx.save();
    ctx.translate(ml, mt - 3);
    ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "left";
    for (let j = 0; j < N; j++) ctx.fillText(shortLabel(labels[j] ?? ""), 0, (j + 0.5) * step, mt - 6);
    ctx.restore();
  }
  if (N && (marks.rows || []).length) {
    const step = S / N, hgt = Math.max(step, 4);
    ctx.strokeStyle = th.css.select;
    ctx.lineWidth = 1.5;
    for (const r of marks.rows) ctx.strokeRect(ml + 0.75, mt + r * step + 0.75, S - 1.5, hgt - 1.5);
  }
  Object.assign(canvas.dataset, { ml, mt, side: S, n: N, cell: N ? S / N : 0 });
  return geom;
}

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
function patternPanel(th, A, N, labels, opts = {}) {
  const m = opts.scaleToMax ? maxOf(A) || 1 : 1;
  const canvas = h("canvas", { cls: "cw-canvas cw-pattern-small", attrs: { tabindex: "0" } });
  if (opts.kind) canvas.dataset.kind = opts.kind;
  const geom = drawPattern(canvas, th, {
    A,
    N,
    vmax: m,
    labels,
    marks: opts.marks,
    maxPx: opts.size || 220,
    minPx: 120,
    labelMax: 40,
    margin: 56
  });
  if (opts.onHover) {
    canvas.addEventListener("mousemove", (ev) => {
      const c = cellAt(canvas, geom, ev);
      opts.onHover(c ? c[0] : null, c ? c[1] : null, c && c[1] <= c[0] ? A[c[0] * N + c[1]] : NaN);
    });
  }
  const box = h("div", { cls: "cw-small-panel" }, [h("div", { cls: "cw-small-title", text: opts.title || "" }), canvas]);
  return { el: box, canvas, max: m };
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

// src/composition.js
var KINDS = [["q", "Q"], ["k", "K"], ["v", "V"]];
var NAMES = { q: "Q-composition", k: "K-composition", v: "V-composition" };
function render({ model, el }) {
  const root = h("div", { cls: "cw-root cw-composition" });
  el.append(root);
  let th = theme(root);
  const nL = model.get("n_layers"), nH = model.get("n_heads");
  const title = h("span", { cls: "cw-title" });
  const tabs = h("div", { cls: "cw-tabs", attrs: { role: "tablist", "aria-label": "composition kind" } });
  const tabBtns = {};
  for (const [k, lab2] of KINDS) {
    const b = h("button", { cls: "cw-tab", text: lab2, data: { kind: k }, attrs: { type: "button", role: "tab" } });
    b.addEventListener("click", () => {
      model.set("kind", k);
      model.save_changes();
    });
    tabBtns[k] = b;
    tabs.append(b);
  }
  const baseBox = h("input", { cls: "cw-minus-baseline", attrs: { type: "checkbox" } });
  baseBox.addEventListener("change", () => {
    model.set("subtract_baseline", baseBox.checked);
    model.save_changes();
  });
  const bar = h("div", { cls: "cw-bar" }, [
    title,
    tabs,
    h("label", { title: "subtract the mean score of random matrices of the same shapes" }, [baseBox, "minus baseline"])
  ]);
  const msg = messageArea(model);
  const legendBox = h("div", { cls: "cw-legend-box" });
  const mapBox = h("div", { cls: "cw-map-box" });
  const readout = h("div", { cls: "cw-readout cw-comp-readout", text: "hover a cell; click it for the pair's details" });
  const grid = headGrid(model, { label: "select a head (its row and column are outlined)", cellMin: 22 });
  const details = h("div", { cls: "cw-details" });
  root.append(
    bar,
    msg.el,
    legendBox,
    h("div", { cls: "cw-main" }, [h("div", {}, [mapBox, readout]), h("div", {}, [h("div", { cls: "cw-legend", text: "selected head" }), grid.el])]),
    details
  );
  const rowHeads = [], colHeads = [];
  for (let l = 0; l < nL - 1; l++) for (let j = 0; j < nH; j++) rowHeads.push([l, j]);
  for (let l = 1; l < nL; l++) for (let j = 0; j < nH; j++) colHeads.push([l, j]);
  const lab = ([l, j]) => `L${l}H${j}`;
  let S = new Float32Array(0), hm = null, cursor = [0, 0];
  function pick(r, c) {
    const a = rowHeads[r], b = colHeads[c];
    if (a[0] >= b[0]) {
      readout.textContent = `${lab(a)} → ${lab(b)}: no composition (not an earlier layer)`;
      return;
    }
    model.set("pair", [a[0], a[1], b[0], b[1]]);
    model.set("layer", b[0]);
    model.set("head", b[1]);
    model.save_changes();
  }
  function values() {
    const nr = rowHeads.length, nc = colHeads.length, v = new Float32Array(nr * nc);
    rowHeads.forEach(([l1, h1], r) => colHeads.forEach(([l2, h2], c) => {
      v[r * nc + c] = S[((l1 * nH + h1) * nL + l2) * nH + h2];
    }));
    return v;
  }
  function marks() {
    const l = model.get("layer"), hd = model.get("head");
    const m = { rows: [], cols: [] };
    if (l < nL - 1) m.rows.push(l * nH + hd);
    if (l >= 1) m.cols.push((l - 1) * nH + hd);
    const p = model.get("pair") || [];
    if (p.length === 4) m.cell = [p[0] * nH + p[1], (p[2] - 1) * nH + p[3]];
    return m;
  }
  function drawMap() {
    th = theme(root);
    S = decodeArray(model.get("scores"));
    const kind = model.get("kind"), minus = model.get("subtract_baseline");
    for (const [k] of KINDS) tabBtns[k].setAttribute("aria-selected", k === kind ? "true" : "false");
    baseBox.checked = minus;
    const [bm, bs] = model.get("baseline") || [NaN, NaN];
    title.textContent = `${model.get("title") ? model.get("title") + " — " : ""}${NAMES[kind] || kind}`;
    readout.textContent = "hover a cell; click it for the pair's details";
    if (nL < 2) {
      mapBox.replaceChildren();
      return;
    }
    const v = values();
    hm = heatmap(th, v, rowHeads.length, colHeads.length, {
      rowLabels: rowHeads.map(lab),
      colLabels: colHeads.map(lab),
      diverging: minus,
      vmin: minus ? void 0 : 0,
      maxPx: 420,
      marginLeft: 46,
      marginTop: 40,
      rowGroups: nH,
      colGroups: nH,
      marks: marks(),
      onHover(r, c, val) {
        if (r === null) {
          readout.textContent = "";
          return;
        }
        const a = rowHeads[r], b = colHeads[c];
        readout.textContent = a[0] >= b[0] ? `${lab(a)} → ${lab(b)}: no composition (not an earlier layer)` : `${lab(a)} → ${lab(b)}: ${NAMES[kind]} ${minus ? "minus baseline " : ""}${fmt(val, 4)}`;
      },
      onClick(r, c) {
        cursor = [r, c];
        pick(r, c);
      }
    });
    hm.el.classList.add("cw-comp-map");
    hm.el.setAttribute("aria-label", `${NAMES[kind]} scores: rows earlier heads, columns later heads; arrow keys move, Enter shows the pair`);
    hm.el.addEventListener("keydown", (ev) => {
      const nc = colHeads.length;
      const moved = cursorMove(ev.key, cursor, rowHeads.length, nc);
      if (moved) {
        cursor = moved;
        const a = rowHeads[cursor[0]], b = colHeads[cursor[1]];
        readout.textContent = a[0] >= b[0] ? `${lab(a)} → ${lab(b)}: no composition (not an earlier layer)` : `${lab(a)} → ${lab(b)}: ${NAMES[kind]} ${minus ? "minus baseline " : ""}${fmt(v[cursor[0] * nc + cursor[1]], 4)} (Enter: details)`;
        hm.redraw(Object.assign(marks(), { cell: cursor }));
      } else if (ev.key === "Enter" || ev.key === " ") {
        hm.el.dispatchEvent(new CustomEvent("cw-pick", { detail: cursor }));
      } else return;
      ev.preventDefault();
      ev.stopPropagation();
    });
    hm.el.addEventListener("cw-pick", (ev) => pick(ev.detail[0], ev.detail[1]));
    mapBox.replaceChildren(hm.el);
    const note = `baseline (random matrices of these shapes): ${fmt(bm, 4)} ± ${fmt(bs, 4)} (mean ± spread)` + (minus ? "; shown: score − baseline mean" : "; shown: raw score in [0, 1]");
    legendBox.replaceChildren(scaleLegend(th, hm.geom.lo, hm.geom.hi, minus, note));
    legendBox.querySelector(".cw-scale-note").classList.add("cw-baseline-note");
  }
  function drawDetails() {
    const d = model.get("details") || {};
    if (!d.pair) {
      details.replaceChildren(h("div", { cls: "cw-legend", text: "click a cell for the pair's details" }));
      return;
    }
    const [l1, h1, l2, h2] = d.pair;
    const labels = model.get("labels") || [];
    const N = labels.length;
    const p1 = decodeArray(d.p1), p2 = decodeArray(d.p2), pv = decodeArray(d.pv);
    const head = h("div", { cls: "cw-kv cw-pair-summary", data: { pair: d.pair.join(",") } }, [
      h("strong", { text: `L${l1}H${h1} → L${l2}H${h2}` }),
      `  ${NAMES[d.kind] || d.kind}: score `,
      h("span", { cls: "cw-pair-score", text: fmt(d.raw, 4) }),
      `   baseline ${fmt(d.baseline_mean, 4)} ± ${fmt(d.baseline_std, 4)}`,
      `   score − baseline `,
      h("span", { cls: "cw-pair-minus", text: fmt(d.score, 4) }),
      `  (${fmt(d.baseline_std > 0 ? d.score / d.baseline_std : NaN, 3)} spreads)`
    ]);
    const panels = h("div", { cls: "cw-pair-panels" }, [
      patternPanel(th, p1, N, labels, { title: `A^{L${l1}H${h1}} (earlier head)`, kind: "first" }).el,
      patternPanel(th, p2, N, labels, { title: `A^{L${l2}H${h2}} (later head)`, kind: "second" }).el,
      patternPanel(th, pv, N, labels, { title: `virtual head A^{L${l2}H${h2}} A^{L${l1}H${h1}}`, kind: "virtual", scaleToMax: true }).el
    ]);
    details.replaceChildren(head, panels);
  }
  function draw(parts = "all") {
    const t0 = performance.now();
    if (parts !== "details") drawMap();
    if (parts !== "map") drawDetails();
    const p = model.get("pair") || [];
    markDrawn(root, {
      shownLayer: model.get("layer"),
      shownHead: model.get("head"),
      kind: model.get("kind"),
      pair: p.join(","),
      drawMs: (performance.now() - t0).toFixed(1)
    });
  }
  const onSel = () => {
    if (hm) hm.redraw(marks());
    markDrawn(root, { shownLayer: model.get("layer"), shownHead: model.get("head") });
  };
  const changes = onModelChanges(model, ["scores", "baseline", "details", "labels", "layer", "head", "pair"], (c) => {
    const map = c.has("scores") || c.has("baseline");
    const det = c.has("details") || c.has("labels");
    if (map || det) draw(map && det ? "all" : map ? "map" : "details");
    if (!map && (c.has("layer") || c.has("head") || c.has("pair"))) onSel();
  });
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
var composition_default = { render };
export {
  composition_default as default
};
