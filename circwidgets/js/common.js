// Shared helpers for every circwidgets front end.
//
// The Python side inlines this file in front of each widget's module (anywidget loads one ESM
// string, so relative imports cannot be resolved); the widget files import from "./common.js"
// so that they stay valid modules for editors and for the offline HTML export.
//
// Rule for everything here: a string that came from a tokenizer is data, never markup. Only
// `textContent`, `setAttribute` with fixed attribute names, and canvas `fillText` touch it.

// ---------------------------------------------------------------------------- DOM
/** Create an element; `props.text` goes to textContent, `props.cls` to className, `props.attrs`
 * to setAttribute, `props.data` to dataset; children are nodes or strings (as text nodes). */
export function h(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  if (props.cls) node.className = props.cls;
  if (props.text !== undefined) node.textContent = String(props.text);
  if (props.title !== undefined) node.title = String(props.title);
  for (const [k, v] of Object.entries(props.attrs || {})) node.setAttribute(k, String(v));
  for (const [k, v] of Object.entries(props.data || {})) node.dataset[k] = String(v);
  for (const c of children) node.append(typeof c === "string" ? document.createTextNode(c) : c);
  return node;
}

/** Make whitespace in a token visible: space -> "␣", newline -> "↵", tab -> "⇥", other control -> "·". */
export function visibleWhitespace(s) {
  return String(s)
    .replace(/ /g, "\u2423")
    .replace(/\n/g, "\u21b5")
    .replace(/\r/g, "\u240d")
    .replace(/\t/g, "\u21e5")
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/g, "\u00b7");
}

// ---------------------------------------------------------------------------- colours
const FALLBACK = {
  bg: "#ffffff", bg2: "#eeeeee", fg: "rgba(0,0,0,0.87)", fg2: "rgba(0,0,0,0.54)",
  border: "#bdbdbd", accent: "#1976d2", negative: "#d32f2f", select: "#ff9800",
};
const VARS = {
  bg: "--jp-layout-color0", bg2: "--jp-layout-color2", fg: "--jp-ui-font-color1",
  fg2: "--jp-ui-font-color2", border: "--jp-border-color1", accent: "--jp-brand-color1",
  negative: "--jp-error-color1", select: "--jp-warn-color1",
};

let _probe = null;
/** Parse any CSS colour into [r, g, b] (0..255) through a 1x1 canvas. */
export function parseColor(css) {
  if (!_probe) _probe = document.createElement("canvas").getContext("2d", { willReadFrequently: true });
  _probe.clearRect(0, 0, 1, 1);
  _probe.fillStyle = "#000";
  _probe.fillStyle = css;
  _probe.fillRect(0, 0, 1, 1);
  const d = _probe.getImageData(0, 0, 1, 1).data;
  return [d[0], d[1], d[2]];
}

/** The theme as [r, g, b] triples and CSS strings, read from JupyterLab's CSS variables on `el`
 * (so light and dark themes both work), with fallbacks outside JupyterLab. */
export function theme(el) {
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

export function mix(a, b, t) {
  t = t < 0 ? 0 : t > 1 ? 1 : t;
  return [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t];
}

export function rgbCss(c) {
  return `rgb(${Math.round(c[0])},${Math.round(c[1])},${Math.round(c[2])})`;
}

/** Sequential colour for t in [0, 1]: background -> accent. */
export function seqColor(th, t) {
  return mix(th.rgb.bg, th.rgb.accent, Number.isFinite(t) ? t : 0);
}

/** Diverging colour for v in [-1, 1]: negative colour <- background -> accent. */
export function divColor(th, v) {
  if (!Number.isFinite(v)) return th.rgb.bg2;
  return v >= 0 ? mix(th.rgb.bg, th.rgb.accent, v) : mix(th.rgb.bg, th.rgb.negative, -v);
}

/** Text colour that reads on a given background. */
export function inkOn(th, rgb) {
  return luminance(rgb) < 0.55 ? "#ffffff" : "#111111";
}

// ---------------------------------------------------------------------------- binary decoding
/** Copy the bytes of a DataView (what a bytes trait becomes in JS) into a fresh ArrayBuffer,
 * so that typed arrays over it are always aligned. */
export function bytesOf(dv) {
  if (!dv) return new ArrayBuffer(0);
  if (dv instanceof ArrayBuffer) return dv.slice(0);
  return dv.buffer.slice(dv.byteOffset, dv.byteOffset + dv.byteLength);
}

export function decodeF32(dv) {
  return new Float32Array(bytesOf(dv));
}

export function decodeI32(dv) {
  return new Int32Array(bytesOf(dv));
}

let _f16table = null;
/** float16 bit patterns (sent as little-endian uint16) -> Float32Array, through a 65,536-entry table. */
export function decodeF16(dv) {
  if (!_f16table) {
    _f16table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) {
      const s = i & 0x8000 ? -1 : 1, e = (i >> 10) & 0x1f, f = i & 0x3ff;
      _f16table[i] = e === 0 ? s * f * 2 ** -24 : e === 31 ? (f ? NaN : s * Infinity) : s * (1 + f / 1024) * 2 ** (e - 15);
    }
  }
  const u = new Uint16Array(bytesOf(dv));
  const out = new Float32Array(u.length);
  for (let i = 0; i < u.length; i++) out[i] = _f16table[u[i]];
  return out;
}

/** uint8 quantised values -> Float32Array: q / 255 * (hi - lo) + lo. */
export function decodeU8(dv, lo = 0, hi = 1) {
  const u = new Uint8Array(bytesOf(dv));
  const out = new Float32Array(u.length);
  const s = (hi - lo) / 255;
  for (let i = 0; i < u.length; i++) out[i] = lo + u[i] * s;
  return out;
}

/** Decode an array payload {dtype, shape, layout, data, lo?, hi?} sent by the Python side
 * (`circwidgets.widgets._data.encode_array`). layout "tril": the lower triangle of a square
 * matrix, row by row; expanded here to the full row-major matrix (zeros above the diagonal). */
export function decodeArray(p) {
  if (!p || !p.data) return new Float32Array(0);
  let a;
  if (p.dtype === "float16") a = decodeF16(p.data);
  else if (p.dtype === "uint8") a = decodeU8(p.data, p.lo, p.hi);
  else if (p.dtype === "int32") a = decodeI32(p.data);
  else a = decodeF32(p.data);
  if (p.layout === "tril") {
    const n = p.shape[0], full = new Float32Array(n * n);
    for (let i = 0, o = 0; i < n; i++) {
      full.set(a.subarray(o, o + i + 1), i * n);
      o += i + 1;
    }
    return full;
  }
  return a;
}

export function fmt(x, digits = 3) {
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e4)) return x.toExponential(digits - 1);
  return x.toFixed(digits);
}

// ---------------------------------------------------------------------------- message area
/** A line for errors/notes from the kernel (`error` trait) and for local notes. */
export function messageArea(model) {
  const box = h("div", { cls: "cw-message", attrs: { role: "status", "aria-live": "polite" } });
  const show = () => {
    const msg = model.get("error") || "";
    box.textContent = msg;
    box.classList.toggle("cw-error", !!msg);
    box.classList.remove("cw-note");
    box.hidden = !msg;
  };
  /** A transient local note (e.g. "computing L3H5…"), replaced by the next `show()`. */
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

// ---------------------------------------------------------------------------- head grid
/** Grid of layer x head buttons, each with data-layer / data-head. Clicking or pressing arrow keys
 * (←/→ heads, ↑/↓ layers, Home/End) sets the model's `layer` and `head` and saves.
 *
 * opts.paint(btn, layer, head) colours one cell (called on `refresh()`).
 */
export function headGrid(model, opts = {}) {
  const nL = model.get("n_layers"), nH = model.get("n_heads");
  const root = h("div", { cls: "cw-grid", attrs: { role: "grid", "aria-label": opts.label || "layers and heads" } });
  // fixed-width columns when asked (thumbnails), else columns that share the width
  root.style.gridTemplateColumns = opts.cellWidth
    ? `auto repeat(${nH}, ${opts.cellWidth}px)`
    : `auto repeat(${nH}, minmax(${opts.cellMin || 26}px, 1fr))`;
  root.append(h("div", { cls: "cw-grid-corner", text: "" }));
  for (let hd = 0; hd < nH; hd++) root.append(h("div", { cls: "cw-grid-colhead", text: `H${hd}` }));
  const cells = [];
  for (let l = 0; l < nL; l++) {
    root.append(h("div", { cls: "cw-grid-rowhead", text: `L${l}` }));
    const row = [];
    for (let hd = 0; hd < nH; hd++) {
      const b = h("button", {
        cls: "cw-cell", data: { layer: l, head: hd },
        attrs: { type: "button", role: "gridcell", tabindex: "-1", "aria-label": `layer ${l} head ${hd}` },
      });
      b.addEventListener("click", () => select(l, hd, true));
      row.push(b);
      root.append(b);
    }
    cells.push(row);
  }
  function select(l, hd, focus) {
    l = Math.max(0, Math.min(nL - 1, l));
    hd = Math.max(0, Math.min(nH - 1, hd));
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
    const l = model.get("layer"), hd = model.get("head");
    const moves = {
      ArrowLeft: [l, hd - 1], ArrowRight: [l, hd + 1], ArrowUp: [l - 1, hd], ArrowDown: [l + 1, hd],
      Home: [l, 0], End: [l, nH - 1], PageUp: [0, hd], PageDown: [nL - 1, hd],
    };
    const m = moves[ev.key];
    if (!m) return;
    ev.preventDefault();
    ev.stopPropagation(); // keep JupyterLab's notebook shortcuts out of it
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
    el: root, cells, refresh, select,
    off: () => { model.off("change:layer", mark); model.off("change:head", mark); },
  };
}

// ---------------------------------------------------------------------------- canvas
/** Size a canvas for crisp drawing at the device pixel ratio; returns its 2D context scaled so
 * that drawing units are CSS pixels. */
export function hidpi(canvas, w, h_) {
  const r = window.devicePixelRatio || 1;
  canvas.width = Math.round(w * r);
  canvas.height = Math.round(h_ * r);
  canvas.style.width = `${w}px`;
  canvas.style.height = `${h_}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(r, 0, 0, r, 0, 0);
  return ctx;
}

/** Call `cb` when JupyterLab switches theme (it rewrites data-jp-theme-* on <body>); returns an unsubscribe. */
export function onThemeChange(cb) {
  if (typeof MutationObserver === "undefined") return () => {};
  const mo = new MutationObserver(() => cb());
  mo.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-name", "data-jp-theme-light"] });
  return () => mo.disconnect();
}

/** Mark the root element after a redraw so tests and benchmarks can wait for it. */
export function markDrawn(el, info) {
  el.dataset.drawCount = String((Number(el.dataset.drawCount) || 0) + 1);
  for (const [k, v] of Object.entries(info)) el.dataset[k] = String(v);
  el.dataset.drawnAt = String(performance.now());
}
