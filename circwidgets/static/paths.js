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
function barChart(th, items, opts = {}) {
  const root = h("div", { cls: "cw-bars", attrs: { role: "list" } });
  let m = 0;
  for (const it of items) if (Number.isFinite(it.value)) m = Math.max(m, Math.abs(it.value));
  m = m || 1;
  items.forEach((it, i) => {
    const frac = Number.isFinite(it.value) ? Math.abs(it.value) / m : 0;
    const fill = h("span", { cls: "cw-bar-fill" });
    fill.style.width = `${(frac * 50).toFixed(2)}%`;
    fill.style.background = rgbCss(it.value >= 0 ? th.rgb.accent : th.rgb.negative);
    if (it.value >= 0) fill.style.left = "50%";
    else fill.style.right = "50%";
    const track = h("span", { cls: "cw-bar-track" }, [fill, h("span", { cls: "cw-bar-zero" })]);
    const row = h("div", {
      cls: `cw-bar-row${it.cls ? " " + it.cls : ""}${opts.onClick ? " cw-clickable" : ""}`,
      data: it.data || {},
      attrs: { role: "listitem", tabindex: opts.onClick ? "0" : "-1" },
      title: it.title
    }, [
      h("span", { cls: "cw-bar-label", text: it.label }),
      track,
      h("span", { cls: "cw-bar-value", text: fmt(it.value, opts.digits || 3) })
    ]);
    if (opts.selected && opts.selected(i)) row.classList.add("cw-selected");
    if (opts.onClick) {
      row.addEventListener("click", () => opts.onClick(it, i));
      row.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" || ev.key === " ") {
          ev.preventDefault();
          ev.stopPropagation();
          opts.onClick(it, i);
        }
      });
    }
    root.append(row);
  });
  return root;
}
function tokenRow(labels, opts = {}) {
  const box = h("div", { cls: "cw-tokens2" });
  labels.forEach((s, i) => {
    const sp = h("span", { cls: "cw-tok", text: visibleWhitespace(s), data: { pos: i } });
    if (opts.mark === i) sp.classList.add("cw-tok-focus");
    if (opts.onClick) {
      sp.classList.add("cw-clickable");
      sp.addEventListener("click", () => opts.onClick(i));
    }
    if (opts.colour) {
      const c = opts.colour(i);
      if (c) {
        sp.style.background = c.bg;
        sp.style.color = c.fg;
      }
    }
    if (opts.title) sp.title = opts.title(i);
    box.append(sp);
  });
  return box;
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

// src/paths.js
function render({ model, el }) {
  const root = h("div", { cls: "cw-root cw-paths" });
  el.append(root);
  let th = theme(root);
  const title = h("span", { cls: "cw-title" });
  const predSel = h("select", { cls: "cw-target-select", attrs: { "aria-label": "target token" } });
  const search = h("input", { cls: "cw-target-search", attrs: { type: "text", size: "14", placeholder: "token or #id", "aria-label": "target token search" } });
  const bar = h("div", { cls: "cw-bar" }, [title, h("label", {}, ["target", predSel]), h("label", {}, ["or", search])]);
  const msg = messageArea(model);
  const tokBox = h("div", {});
  const sums = h("div", { cls: "cw-kv cw-sums" });
  const chart = h("div", { cls: "cw-chart" });
  const patBox = h("div", { cls: "cw-pattern-box" });
  root.append(
    bar,
    msg.el,
    h("div", { cls: "cw-legend", text: "tokens (click one to expand the logit at that position)" }),
    tokBox,
    sums,
    h("div", { cls: "cw-main" }, [chart, patBox])
  );
  function drawTokens() {
    const pos = model.get("position");
    tokBox.replaceChildren(tokenRow(model.get("labels") || [], {
      mark: pos,
      onClick(i) {
        model.set("position", i);
        model.save_changes();
      }
    }));
  }
  function drawTerms() {
    th = theme(root);
    const pos = model.get("position"), labels = model.get("labels") || [];
    const tgt = model.get("target_label");
    title.textContent = `logit of “${visibleWhitespace(tgt)}” (#${model.get("target")}) at [${pos}] “${visibleWhitespace(labels[pos] ?? "")}”`;
    predSel.replaceChildren();
    let found = false;
    for (const [lab, id, logit] of model.get("predictions") || []) {
      predSel.append(h("option", { text: `${visibleWhitespace(lab)}  (#${id}, ${fmt(logit, 3)})`, attrs: { value: id } }));
      if (id === model.get("target")) found = true;
    }
    if (!found) predSel.append(h("option", { text: `${visibleWhitespace(tgt)}  (#${model.get("target")})`, attrs: { value: model.get("target") } }));
    predSel.value = String(model.get("target"));
    const total = model.get("total"), ml = model.get("model_logit");
    sums.replaceChildren(
      "sum of all terms ",
      h("span", { cls: "cw-sum", text: fmt(total, 5) }),
      "   model's own logit ",
      h("span", { cls: "cw-model-logit", text: fmt(ml, 5) }),
      `   |difference| ${Math.abs(total - ml).toExponential(1)}`
    );
    const terms = model.get("terms") || [];
    const sel = [model.get("layer"), model.get("head")];
    const items = terms.map((t) => {
      const last = t.heads.length ? t.heads[t.heads.length - 1] : null;
      const data = { order: t.order, section: t.section };
      if (last) {
        data.layer = last[0];
        data.head = last[1];
      }
      return {
        label: t.label,
        value: t.value,
        data,
        heads: t.heads,
        cls: t.order < 0 ? "cw-bar-rest" : "",
        title: `${t.label}: ${fmt(t.value, 5)} (${t.section})${last ? " — click for L" + last[0] + "H" + last[1] + "'s pattern" : ""}`
      };
    });
    const sections = [];
    let cur = null, group = [];
    const flush = () => {
      if (group.length) sections.push([cur, group]);
      group = [];
    };
    items.forEach((it) => {
      if (it.data.section !== cur) {
        flush();
        cur = it.data.section;
      }
      group.push(it);
    });
    flush();
    chart.replaceChildren(...sections.flatMap(([name, its]) => [
      h("div", { cls: "cw-legend cw-section", text: name }),
      barChart(th, its, {
        onClick(it) {
          if (it.data.layer === void 0) return;
          model.set("path", it.heads);
          model.set("layer", Number(it.data.layer));
          model.set("head", Number(it.data.head));
          model.save_changes();
        },
        selected: (i) => its[i].data.layer !== void 0 && Number(its[i].data.layer) === sel[0] && Number(its[i].data.head) === sel[1]
      })
    ]));
  }
  function drawPattern2() {
    const shown = model.get("shown") || {};
    const labels = model.get("labels") || [];
    const A = decodeArray(model.get("pattern"));
    const N = labels.length;
    const pos = model.get("position");
    const p = patternPanel(th, A, N, labels, {
      title: `L${shown.layer}H${shown.head} pattern (row ${pos} outlined: what position ${pos} attends to)`,
      marks: { rows: [pos] },
      size: 260,
      kind: "head"
    });
    const v = model.get("virtual") || {}, hs = v.heads || [];
    const last = hs.length ? hs[hs.length - 1] : null;
    if (last && last[0] === shown.layer && last[1] === shown.head) {
      const pv = patternPanel(th, decodeArray(v), N, labels, {
        title: `virtual head A^{L${hs[1][0]}H${hs[1][1]}} A^{L${hs[0][0]}H${hs[0][1]}} (row ${pos} outlined)`,
        marks: { rows: [pos] },
        size: 260,
        kind: "virtual",
        scaleToMax: true
      });
      patBox.replaceChildren(p.el, pv.el);
    } else {
      patBox.replaceChildren(p.el);
    }
  }
  function markBars() {
    const l = String(model.get("layer")), hd = String(model.get("head"));
    for (const row of chart.querySelectorAll(".cw-bar-row")) {
      row.classList.toggle("cw-selected", row.dataset.layer === l && row.dataset.head === hd);
    }
  }
  function draw(parts = "all") {
    const t0 = performance.now();
    if (parts === "all") {
      drawTokens();
      drawTerms();
    }
    if (parts === "shown") markBars();
    drawPattern2();
    const shown = model.get("shown") || {};
    markDrawn(root, {
      shownLayer: shown.layer,
      shownHead: shown.head,
      position: model.get("position"),
      target: model.get("target"),
      nTerms: (model.get("terms") || []).length,
      drawMs: (performance.now() - t0).toFixed(1)
    });
  }
  predSel.addEventListener("change", () => {
    model.set("target", Number(predSel.value));
    model.save_changes();
  });
  search.addEventListener("keydown", (ev) => {
    ev.stopPropagation();
    if (ev.key === "Enter") {
      model.set("query", search.value);
      model.save_changes();
    }
  });
  const ALL = ["terms", "labels", "predictions", "total", "model_logit", "target_label"];
  const changes = onModelChanges(model, [...ALL, "shown", "pattern", "virtual", "layer", "head"], (c) => {
    const all = ALL.some((k) => c.has(k));
    draw(all ? "all" : "shown");
  });
  draw();
  const offTheme = onThemeChange(() => {
    th = theme(root);
    draw();
  });
  return () => {
    offTheme();
    changes.off();
    msg.off();
  };
}
var paths_default = { render };
export {
  paths_default as default
};
