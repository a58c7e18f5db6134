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
function computingText(layer, head) {
  return `computing L${layer}H${head}…`;
}
function pendingNote(model, msg, delayMs = 150) {
  let timer = null;
  const pending = (l, hd) => {
    clearTimeout(timer);
    timer = setTimeout(() => msg.note(computingText(l, hd)), delayMs);
  };
  const settled = () => {
    clearTimeout(timer);
    msg.show();
  };
  const onSel = () => {
    const s = model.get("shown") || {};
    if (s.layer === model.get("layer") && s.head === model.get("head")) settled();
  };
  model.on("change:layer", onSel);
  model.on("change:head", onSel);
  return {
    pending,
    settled,
    off() {
      clearTimeout(timer);
      model.off("change:layer", onSel);
      model.off("change:head", onSel);
    }
  };
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

// src/attention.js
var MAX_PX = 520;
function render({ model, el }) {
  const root = h("div", { cls: "cw-root cw-attention" });
  el.append(root);
  let th = theme(root);
  const title = h("span", { cls: "cw-title" });
  const scoreSel = h("select", { cls: "cw-score-select", attrs: { "aria-label": "colour heads by" } });
  const vwBox = h("input", { cls: "cw-vw", attrs: { type: "checkbox" } });
  const modeSel = h("select", { cls: "cw-mode", attrs: { "aria-label": "token colouring" } });
  for (const [v, t] of [["pays", "attention paid by hovered token"], ["receives", "attention received by hovered token"]]) {
    modeSel.append(h("option", { text: t, attrs: { value: v } }));
  }
  const scaleSel = h("select", { cls: "cw-scale", attrs: { "aria-label": "pattern colour scale" } });
  for (const [v, t] of [["linear", "linear"], ["sqrt", "sqrt"], ["log", "log 10⁻³…1"]]) {
    scaleSel.append(h("option", { text: t, attrs: { value: v } }));
  }
  const bar = h("div", { cls: "cw-bar" }, [
    title,
    h("label", {}, ["colour heads by", scoreSel]),
    h("label", {}, ["pattern colours", scaleSel]),
    h("label", { title: "attention × ‖v_src‖ (the paper's value-weighted pattern)" }, [vwBox, "value-weighted"])
  ]);
  const msg = messageArea(model);
  const computing = pendingNote(model, msg);
  let scores = new Float32Array(0), sLo = 0, sHi = 1;
  let thumbs = new Float32Array(0), tS = 0;
  const legend = h("div", { cls: "cw-legend" });
  function drawThumb(cv, l, hd, ink) {
    const n = tS, off0 = (l * model.get("n_heads") + hd) * n * n;
    cv.width = Math.max(n, 1);
    cv.height = Math.max(n, 1);
    const ctx = cv.getContext("2d");
    ctx.clearRect(0, 0, n, n);
    if (!n) return;
    let m = 0;
    for (let k = 0; k < n * n; k++) m = Math.max(m, thumbs[off0 + k]);
    const img = ctx.createImageData(n, n), d = img.data;
    const [r, g, b] = ink === "#ffffff" ? [255, 255, 255] : [17, 17, 17];
    for (let k = 0; k < n * n; k++) {
      d[4 * k] = r;
      d[4 * k + 1] = g;
      d[4 * k + 2] = b;
      d[4 * k + 3] = m > 0 ? Math.round(255 * Math.sqrt(Math.max(0, thumbs[off0 + k]) / m)) : 0;
    }
    ctx.putImageData(img, 0, 0);
  }
  const grid = headGrid(model, {
    label: "attention heads",
    cellWidth: 34,
    onRequest: computing.pending,
    paint(btn, l, hd) {
      const v = scores[l * model.get("n_heads") + hd];
      const t = sHi > sLo ? (v - sLo) / (sHi - sLo) : 0;
      const c = sLo < 0 ? divColor(th, v / Math.max(Math.abs(sLo), Math.abs(sHi), 1e-12)) : seqColor(th, t);
      btn.style.background = rgbCss(c);
      btn.style.color = inkOn(th, c);
      let cv = btn.querySelector("canvas.cw-thumb");
      if (!cv) {
        cv = h("canvas", { cls: "cw-thumb" });
        btn.replaceChildren(cv);
      }
      drawThumb(cv, l, hd, inkOn(th, c));
      btn.dataset.score = Number.isFinite(v) ? v.toFixed(4) : "nan";
      btn.title = `L${l}H${hd} ${model.get("score_name")} = ${fmt(v)}`;
    }
  });
  const canvas = h("canvas", { cls: "cw-canvas cw-pattern", attrs: { tabindex: "0", "aria-label": "attention pattern" } });
  const readout = h("div", { cls: "cw-readout cw-pattern-readout", text: "hover the pattern" });
  const panelTitle = h("div", { cls: "cw-panel-title" });
  const panel = h("div", { cls: "cw-panel" }, [panelTitle, canvas, readout]);
  const tokBox = h("div", { cls: "cw-tokens" });
  const tokReadout = h("div", { cls: "cw-readout cw-token-readout", text: "hover a token" });
  const textRow = h("div", { cls: "cw-bar" });
  const textInput = h("input", { cls: "cw-text-input", attrs: { type: "text", "aria-label": "text", size: "60" } });
  const textBtn = h("button", { cls: "cw-btn", text: "run", attrs: { type: "button" } });
  if (model.get("has_tokenizer")) textRow.append(h("label", {}, ["text", textInput]), textBtn);
  root.append(
    bar,
    msg.el,
    h("div", { cls: "cw-main" }, [h("div", {}, [grid.el, legend]), panel]),
    h("div", { cls: "cw-bar" }, [h("span", { text: "tokens — colour by" }), modeSel]),
    tokBox,
    tokReadout,
    textRow
  );
  let A = new Float32Array(0), N = 0, labels = [], spans = [], packed = false;
  const at = (i, j) => j > i ? 0 : packed ? A[i * (i + 1) / 2 + j] : A[i * N + j];
  let geom = { ml: 0, mt: 0, S: 0, N: 0 };
  function readThumbs() {
    const p = model.get("thumbs");
    thumbs = decodeArray(p);
    tS = p && p.shape ? p.shape[2] : 0;
  }
  function readScores() {
    const p = model.get("scores");
    scores = decodeArray(p);
    const fin = Array.from(scores).filter(Number.isFinite);
    sLo = fin.length ? Math.min(0, ...fin) : 0;
    sHi = fin.length ? Math.max(...fin) : 1;
    if (sHi <= sLo) sHi = sLo + 1;
    legend.textContent = `${model.get("score_label") || model.get("score_name")}: ${fmt(sLo)} … ${fmt(sHi)}`;
    scoreSel.replaceChildren();
    for (const [name, lab] of model.get("score_names")) {
      const o = h("option", { text: lab, attrs: { value: name } });
      scoreSel.append(o);
    }
    scoreSel.value = model.get("score_name");
    grid.refresh();
  }
  function readTokens() {
    labels = model.get("labels");
    spans = labels.map((s, i) => h("span", { cls: "cw-tok", text: visibleWhitespace(s), data: { pos: i } }));
    tokBox.replaceChildren(...spans);
    textInput.value = model.get("text");
  }
  function drawPattern2() {
    computing.settled();
    const t0 = performance.now();
    th = theme(root);
    const shown = model.get("shown") || {};
    const p = model.get("pattern");
    N = p && p.shape ? p.shape[0] : 0;
    packed = !!(p && p.layout === "tril");
    A = decodeArray(p, { keepPacked: true });
    const vw = model.get("value_weighted");
    const aMax = vw ? maxOf(A) || 1 : 1;
    geom = drawPattern(canvas, th, { A, N, packed, vmax: aMax, scale: scaleSel.value, labels, maxPx: MAX_PX });
    panel.style.maxWidth = `${Math.max(geom.ml + geom.S + 4, 320)}px`;
    panelTitle.textContent = `layer ${shown.layer} head ${shown.head} — ${vw ? "value-weighted pattern (A·‖v_src‖)" : "attention pattern"}; rows = query, columns = key; colour scale 0 … ${fmt(aMax)} (${scaleSel.value})`;
    title.textContent = model.get("title") ? `${model.get("title")} — L${shown.layer}H${shown.head}` : `L${shown.layer}H${shown.head}`;
    vwBox.checked = vw;
    const ms = performance.now() - t0;
    markDrawn(root, { shownLayer: shown.layer, shownHead: shown.head, valueWeighted: vw ? 1 : 0, nTokens: N, drawMs: ms.toFixed(1) });
  }
  let marked = [];
  function markTokens(idx) {
    for (const s of marked) s.classList.remove("cw-tok-mark");
    marked = idx.map((i) => spans[i]).filter(Boolean);
    for (const s of marked) s.classList.add("cw-tok-mark");
  }
  canvas.addEventListener("mousemove", (ev) => {
    const c = cellAt(canvas, geom, ev);
    if (!c) {
      readout.textContent = "";
      markTokens([]);
      return;
    }
    const [i, j] = c;
    if (j > i) {
      readout.textContent = `query [${i}] ${visibleWhitespace(labels[i])} · key [${j}] ${visibleWhitespace(labels[j])}: masked (key after query)`;
    } else {
      readout.textContent = `query [${i}] ${visibleWhitespace(labels[i])} → key [${j}] ${visibleWhitespace(labels[j])}: ${model.get("value_weighted") ? "A·‖v‖" : "weight"} ${fmt(at(i, j), 4)}`;
    }
    readout.dataset.query = i;
    readout.dataset.key = j;
    markTokens([i, j]);
  });
  canvas.addEventListener("mouseleave", () => markTokens([]));
  function colourTokens(k) {
    const pays = modeSel.value === "pays";
    let m = 0;
    const w = new Float32Array(N);
    for (let t = 0; t < N; t++) {
      const v = pays ? t <= k ? at(k, t) : NaN : t >= k ? at(t, k) : NaN;
      w[t] = v;
      if (v > m) m = v;
    }
    const scale = model.get("value_weighted") ? m || 1 : 1;
    for (let t = 0; t < spans.length; t++) {
      const v = w[t];
      if (Number.isFinite(v)) {
        const c = seqColor(th, v / scale);
        spans[t].style.background = rgbCss(c);
        spans[t].style.color = inkOn(th, c);
      } else {
        spans[t].style.background = "";
        spans[t].style.color = "";
      }
    }
    spans[k] && spans[k].classList.add("cw-tok-focus");
    tokReadout.textContent = `[${k}] ${visibleWhitespace(labels[k])} ${pays ? "pays" : "receives"} attention (L${model.get("shown").layer}H${model.get("shown").head})`;
    tokReadout.dataset.pos = k;
  }
  function clearTokens() {
    for (const s of spans) {
      s.style.background = "";
      s.style.color = "";
      s.classList.remove("cw-tok-focus");
    }
  }
  tokBox.addEventListener("mouseover", (ev) => {
    const s = ev.target.closest && ev.target.closest(".cw-tok");
    if (!s || !tokBox.contains(s)) return;
    clearTokens();
    colourTokens(Number(s.dataset.pos));
  });
  tokBox.addEventListener("mouseleave", clearTokens);
  scaleSel.addEventListener("change", () => drawPattern2());
  scoreSel.addEventListener("change", () => {
    model.set("score_name", scoreSel.value);
    model.save_changes();
  });
  vwBox.addEventListener("change", () => {
    model.set("value_weighted", vwBox.checked);
    model.save_changes();
  });
  const sendText = () => {
    model.set("text", textInput.value);
    model.save_changes();
  };
  textBtn.addEventListener("click", sendText);
  textInput.addEventListener("keydown", (ev) => {
    ev.stopPropagation();
    if (ev.key === "Enter") sendText();
  });
  const changes = onModelChanges(model, [
    "shown",
    "pattern",
    "scores",
    "score_name",
    "score_names",
    "score_label",
    "thumbs",
    "labels",
    "text"
  ], (c) => {
    if (c.has("labels")) readTokens();
    else if (c.has("text")) textInput.value = model.get("text");
    if (c.has("thumbs")) readThumbs();
    if (c.has("scores") || c.has("score_name") || c.has("score_names") || c.has("score_label")) readScores();
    else if (c.has("thumbs")) grid.refresh();
    if (c.has("shown") || c.has("pattern")) drawPattern2();
  });
  readTokens();
  readThumbs();
  readScores();
  drawPattern2();
  const offTheme = onThemeChange(() => {
    th = theme(root);
    grid.refresh();
    drawPattern2();
  });
  return () => {
    computing.off();
    offTheme();
    changes.off();
    grid.off();
    msg.off();
  };
}
var attention_default = { render };
export {
  attention_default as default
};
