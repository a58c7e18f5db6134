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
function divColor(th, v) {
  if (!Number.isFinite(v)) return th.rgb.bg2;
  return v >= 0 ? mix(th.rgb.bg, th.rgb.accent, v) : mix(th.rgb.bg, th.rgb.negative, -v);
}
function inkOn(th, rgb) {
  return luminance(rgb) < 0.55 ? "#ffffff" : "#111111";
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

// src/lib/text.js
function fmt(x, digits = 3) {
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e4)) return x.toExponential(digits - 1);
  return x.toFixed(digits);
}

// src/eigenvalues.js
var SIZE = 230;
function render({ model, el }) {
  const root = h("div", { cls: "cw-root cw-eigen" });
  el.append(root);
  let th = theme(root);
  const title = h("span", { cls: "cw-title" });
  const logBox = h("input", { cls: "cw-log", attrs: { type: "checkbox" } });
  const bar = h("div", { cls: "cw-bar" }, [
    title,
    h("label", { title: "draw each eigenvalue at radius log10(1 + |λ|), same angle" }, [logBox, "log magnitude"])
  ]);
  const msg = messageArea(model);
  const computing = pendingNote(model, msg);
  const legend = h("div", {
    cls: "cw-legend",
    text: "cell: upper half OV positivity, lower half QK positivity (full circuits), Re(Σλ)/Σ|λ|; red −1 … +1 blue"
  });
  let pos = {};
  const grid = headGrid(model, {
    label: "heads by eigenvalue positivity",
    onRequest: computing.pending,
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
    }
  });
  const plots = h("div", { cls: "cw-eig-plots" });
  const readout = h("div", { cls: "cw-readout cw-eig-readout", text: "hover an eigenvalue" });
  root.append(bar, msg.el, h("div", { cls: "cw-main" }, [h("div", {}, [grid.el, legend]), h("div", {}, [plots, readout])]));
  function readPositivity() {
    pos = {};
    for (const [c, p] of Object.entries(model.get("positivity") || {})) pos[c] = decodeArray(p);
    grid.refresh();
  }
  function drawOne(c, label, vals, shown) {
    const n = vals.length / 2;
    const logm = model.get("log_magnitude");
    const pts = [];
    let R = logm ? Math.log10(2) : 1;
    for (let k = 0; k < n; k++) {
      let re = vals[2 * k], im = vals[2 * k + 1];
      const r = Math.hypot(re, im);
      if (logm && r > 0) {
        const s = Math.log10(1 + r) / r;
        re *= s;
        im *= s;
      }
      pts.push([re, im, vals[2 * k], vals[2 * k + 1]]);
      R = Math.max(R, Math.abs(re), Math.abs(im));
    }
    R *= 1.12;
    const canvas = h("canvas", { cls: "cw-canvas cw-eig-canvas", data: { circuit: c } });
    const ctx = hidpi(canvas, SIZE, SIZE);
    const X = (x) => SIZE / 2 + x / R * (SIZE / 2), Y = (y) => SIZE / 2 - y / R * (SIZE / 2);
    ctx.fillStyle = th.css.bg;
    ctx.fillRect(0, 0, SIZE, SIZE);
    ctx.strokeStyle = th.css.border;
    ctx.lineWidth = 1;
    ctx.strokeRect(0.5, 0.5, SIZE - 1, SIZE - 1);
    ctx.beginPath();
    ctx.moveTo(0, Y(0));
    ctx.lineTo(SIZE, Y(0));
    ctx.moveTo(X(0), 0);
    ctx.lineTo(X(0), SIZE);
    ctx.stroke();
    const u = logm ? Math.log10(2) : 1;
    ctx.setLineDash([4, 3]);
    ctx.strokeStyle = th.css.fg2;
    ctx.beginPath();
    ctx.arc(X(0), Y(0), u / R * (SIZE / 2), 0, 2 * Math.PI);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = th.css.fg2;
    ctx.font = `10px ${th.font}`;
    ctx.fillText("|λ|=1", X(u * 0.71) + 2, Y(u * 0.71) - 2);
    ctx.fillText(`±${fmt(R / 1.12, 2)}${logm ? " (log)" : ""}`, 4, 12);
    for (const [x, y, re] of pts) {
      ctx.fillStyle = rgbCss(re >= 0 ? th.rgb.accent : th.rgb.negative);
      ctx.beginPath();
      ctx.arc(X(x), Y(y), 3.2, 0, 2 * Math.PI);
      ctx.fill();
    }
    canvas.dataset.points = JSON.stringify(pts.map(([x, y]) => [+X(x).toFixed(1), +Y(y).toFixed(1)]));
    const p = pos[c] ? pos[c][shown.layer * model.get("n_heads") + shown.head] : NaN;
    const head = h("div", { cls: "cw-eig-title" }, [
      h("span", { cls: "cw-eig-name", text: label }),
      h("br"),
      h("span", { cls: "cw-eig-pos", text: `positivity ${fmt(p)}  ·  ${n} eigenvalues`, data: { circuit: c } })
    ]);
    canvas.addEventListener("mousemove", (ev) => {
      const r = canvas.getBoundingClientRect();
      const mx = ev.clientX - r.left, my = ev.clientY - r.top;
      let best = -1, bd = 64;
      pts.forEach(([x, y], k) => {
        const d = (X(x) - mx) ** 2 + (Y(y) - my) ** 2;
        if (d < bd) {
          bd = d;
          best = k;
        }
      });
      if (best < 0) {
        readout.textContent = `${label}: no eigenvalue here`;
        return;
      }
      const [, , re, im] = pts[best];
      readout.textContent = `${label}: λ${best + 1} = ${fmt(re, 4)} ${im < 0 ? "−" : "+"} ${fmt(Math.abs(im), 4)}i, |λ| = ${fmt(Math.hypot(re, im), 4)}`;
      readout.dataset.circuit = c;
    });
    return h("div", { cls: "cw-eig-plot" }, [head, canvas]);
  }
  function draw() {
    computing.settled();
    const t0 = performance.now();
    th = theme(root);
    const shown = model.get("shown") || {};
    const eigs = model.get("eigs") || {};
    const items = [];
    let total = 0;
    for (const [c, label] of model.get("circuits")) {
      const vals = decodeArray(eigs[c]);
      total += vals.length / 2;
      items.push(drawOne(c, label, vals, shown));
    }
    plots.replaceChildren(...items);
    logBox.checked = model.get("log_magnitude");
    title.textContent = `${model.get("title") ? model.get("title") + " — " : ""}L${shown.layer}H${shown.head} eigenvalues`;
    markDrawn(root, { shownLayer: shown.layer, shownHead: shown.head, nEigs: total, drawMs: (performance.now() - t0).toFixed(1) });
  }
  logBox.addEventListener("change", () => {
    model.set("log_magnitude", logBox.checked);
    model.save_changes();
  });
  const changes = onModelChanges(model, ["positivity", "shown", "eigs", "log_magnitude"], (c) => {
    if (c.has("positivity")) readPositivity();
    draw();
  });
  readPositivity();
  draw();
  const offTheme = onThemeChange(() => {
    th = theme(root);
    grid.refresh();
    draw();
  });
  return () => {
    computing.off();
    offTheme();
    changes.off();
    grid.off();
    msg.off();
  };
}
var eigenvalues_default = { render };
export {
  eigenvalues_default as default
};
