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
function inkOn(th, rgb) {
  return luminance(rgb) < 0.55 ? "#ffffff" : "#111111";
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
function visibleWhitespace(s) {
  return String(s).replace(/ /g, "␣").replace(/\n/g, "↵").replace(/\r/g, "␍").replace(/\t/g, "⇥").replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/g, "·");
}
function fmt(x, digits = 3) {
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e4)) return x.toExponential(digits - 1);
  return x.toFixed(digits);
}

// src/skip_trigrams.js
function render({ model, el }) {
  const root = h("div", { cls: "cw-root cw-skip" });
  el.append(root);
  let th = theme(root);
  const title = h("span", { cls: "cw-title" });
  const search = h("input", {
    cls: "cw-search",
    attrs: { type: "text", placeholder: "source token or #id", "aria-label": "search source token", size: "18" }
  });
  const searchBtn = h("button", { cls: "cw-btn cw-search-btn", text: "look up", attrs: { type: "button" } });
  const moreBtn = h("button", { cls: "cw-btn cw-more", text: "more rows", attrs: { type: "button" } });
  const bar = h("div", { cls: "cw-bar" }, [title, h("label", {}, ["search", search]), searchBtn, moreBtn]);
  const msg = messageArea(model);
  const computing = pendingNote(model, msg);
  const grid = headGrid(model, { label: "attention heads", onRequest: computing.pending });
  const foundBox = h("div", { cls: "cw-found" });
  const readout = h("div", { cls: "cw-readout cw-skip-readout", text: "hover a token" });
  const table = h("table", { cls: "cw-skip-table" });
  const note = h("div", {
    cls: "cw-legend",
    text: "A = source (attended to), B = destination (query), C = output. B scores: centred full-QK column A; C scores: centred full-OV row A; strength = max(0, best B) × best C."
  });
  root.append(bar, msg.el, h("div", { cls: "cw-main" }, [grid.el, h("div", { cls: "cw-skip-body" }, [foundBox, table, readout, note])]));
  function chip(label, id, value, maxv, role, src) {
    const c = seqColor(th, maxv > 0 ? Math.max(0, value) / maxv : 0);
    const s = h("span", {
      cls: `cw-chip cw-tok cw-${role}`,
      data: { id, value },
      title: `${role === "dest" ? "destination B" : "output C"} id ${id}: ${fmt(value)}`
    }, [h("span", { cls: "cw-chip-text", text: visibleWhitespace(label) }), h("span", { cls: "cw-chip-val", text: fmt(value, 2) })]);
    s.style.background = rgbCss(c);
    s.style.color = inkOn(th, c);
    s.addEventListener("mouseenter", () => {
      readout.textContent = role === "dest" ? `[${visibleWhitespace(src)}] … [${visibleWhitespace(label)}]: destination ${visibleWhitespace(label)} attends to source ${visibleWhitespace(src)}, centred QK ${fmt(value, 4)}` : `[${visibleWhitespace(src)}] … → [${visibleWhitespace(label)}]: attending to ${visibleWhitespace(src)} raises ${visibleWhitespace(label)} by ${fmt(value, 4)} (centred OV)`;
    });
    return s;
  }
  function rowEl(r, maxD, maxO, cls) {
    return h("tr", { cls, data: { sourceId: r.source_id } }, [
      h("td", { cls: "cw-rank", text: r.rank === null || r.rank === void 0 ? "" : String(r.rank + 1) }),
      h("td", { cls: "cw-src" }, [h("span", { cls: "cw-chip cw-tok cw-source", text: visibleWhitespace(r.source), title: `source A id ${r.source_id}` })]),
      h("td", { cls: "cw-num", text: fmt(r.strength) }),
      h("td", {}, r.dests.map(([s, id, v]) => chip(s, id, v, maxD, "dest", r.source))),
      h("td", {}, r.outs.map(([s, id, v]) => chip(s, id, v, maxO, "out", r.source)))
    ]);
  }
  function header() {
    return h("thead", {}, [h("tr", {}, ["#", "source A", "strength", "top destinations B (QK)", "top outputs C (OV)"].map((t) => h("th", { text: t })))]);
  }
  function maxima(rows) {
    let d = 0, o = 0;
    for (const r of rows) {
      for (const x of r.dests) d = Math.max(d, x[2]);
      for (const x of r.outs) o = Math.max(o, x[2]);
    }
    return [d, o];
  }
  function draw() {
    computing.settled();
    const t0 = performance.now();
    th = theme(root);
    const shown = model.get("shown") || {};
    const rows = model.get("rows") || [];
    const [maxD, maxO] = maxima(rows);
    table.replaceChildren(header(), h("tbody", {}, rows.map((r) => rowEl(r, maxD, maxO, "cw-row"))));
    title.textContent = `${model.get("title") ? model.get("title") + " — " : ""}L${shown.layer}H${shown.head} skip-trigrams`;
    moreBtn.disabled = rows.length >= model.get("d_vocab");
    drawFound();
    markDrawn(root, { shownLayer: shown.layer, shownHead: shown.head, nRows: rows.length, drawMs: (performance.now() - t0).toFixed(1) });
  }
  function drawFound() {
    const f = model.get("found") || {};
    if (!f.dests) {
      foundBox.replaceChildren();
      foundBox.hidden = true;
      return;
    }
    const [maxD, maxO] = maxima([f]);
    foundBox.hidden = false;
    foundBox.replaceChildren(
      h("div", { cls: "cw-legend", text: `search result (rank ${f.rank + 1} of ${model.get("d_vocab")})` }),
      h("table", { cls: "cw-skip-table" }, [header(), h("tbody", {}, [rowEl(f, maxD, maxO, "cw-found-row")])])
    );
  }
  const doSearch = () => {
    if (model.get("query") === search.value) {
      model.set("query", "");
      model.save_changes();
    }
    model.set("query", search.value);
    model.save_changes();
  };
  searchBtn.addEventListener("click", doSearch);
  search.addEventListener("keydown", (ev) => {
    ev.stopPropagation();
    if (ev.key === "Enter") doSearch();
  });
  moreBtn.addEventListener("click", () => {
    model.set("n_rows", model.get("n_rows") + 20);
    model.save_changes();
  });
  const changes = onModelChanges(model, ["shown", "rows", "found"], (c) => {
    if (c.has("shown") || c.has("rows")) draw();
    else drawFound();
  });
  draw();
  const offTheme = onThemeChange(draw);
  return () => {
    computing.off();
    offTheme();
    changes.off();
    grid.off();
    msg.off();
  };
}
var skip_trigrams_default = { render };
export {
  skip_trigrams_default as default
};
