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

// src/monitor.js
var W = 430;
var H = 220;
var M = { l: 58, r: 10, t: 10, b: 28 };
function lineChart(th, series, opts) {
  const canvas = h("canvas", { cls: "cw-canvas cw-curve", data: { kind: opts.kind } });
  const ctx = hidpi(canvas, W, H);
  ctx.fillStyle = th.css.bg;
  ctx.fillRect(0, 0, W, H);
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity, n = 0;
  for (const s of series) for (const [x, y] of s.pts) {
    if (!Number.isFinite(y)) continue;
    n++;
    x0 = Math.min(x0, x);
    x1 = Math.max(x1, x);
    y0 = Math.min(y0, y);
    y1 = Math.max(y1, y);
  }
  if (opts.y0 !== void 0) y0 = Math.min(y0, opts.y0);
  if (opts.y1 !== void 0) y1 = Math.max(y1, opts.y1);
  if (!n) {
    x0 = 0;
    x1 = 1;
    y0 = 0;
    y1 = 1;
  }
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + 1;
  const X = (x) => M.l + (x - x0) / (x1 - x0) * (W - M.l - M.r);
  const Y = (y) => H - M.b - (y - y0) / (y1 - y0) * (H - M.t - M.b);
  ctx.strokeStyle = th.css.border;
  ctx.lineWidth = 1;
  ctx.strokeRect(M.l - 0.5, M.t - 0.5, W - M.l - M.r + 1, H - M.t - M.b + 1);
  ctx.fillStyle = th.css.fg2;
  ctx.font = `10px ${th.font}`;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  const dig = Math.max(2, Math.min(4, 2 - Math.floor(Math.log10(y1 - y0))));
  for (const v of [y0, (y0 + y1) / 2, y1]) ctx.fillText(v.toFixed(dig), M.l - 4, Y(v));
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (const v of [x0, (x0 + x1) / 2, x1]) ctx.fillText(String(Math.round(v)), X(v), H - M.b + 4);
  ctx.fillText(opts.xlabel || "step", W / 2, H - 12);
  for (const s of series) {
    ctx.strokeStyle = s.color;
    ctx.lineWidth = s.width || 1.5;
    ctx.setLineDash(s.dash || []);
    ctx.beginPath();
    let first = true;
    for (const [x, y] of s.pts) {
      if (!Number.isFinite(y)) continue;
      if (first) {
        ctx.moveTo(X(x), Y(y));
        first = false;
      } else ctx.lineTo(X(x), Y(y));
    }
    ctx.stroke();
    if (s.dots) {
      ctx.fillStyle = s.color;
      for (const [x, y] of s.pts) if (Number.isFinite(y)) {
        ctx.beginPath();
        ctx.arc(X(x), Y(y), 2.2, 0, 7);
        ctx.fill();
      }
    }
  }
  ctx.setLineDash([]);
  canvas.dataset.nPoints = String(n);
  const legend = h("div", { cls: "cw-legend cw-curve-legend" }, series.filter((s) => s.label).map((s) => {
    const sw = h("span", { cls: "cw-swatch" });
    sw.style.background = s.color;
    return h("span", { cls: "cw-legend-item" }, [sw, s.label]);
  }));
  return h("div", { cls: "cw-small-panel" }, [h("div", { cls: "cw-small-title", text: opts.title }), canvas, legend]);
}
function render({ model, el }) {
  const root = h("div", { cls: "cw-root cw-monitor" });
  el.append(root);
  let th = theme(root);
  const title = h("span", { cls: "cw-title" });
  const status = h("span", { cls: "cw-status", attrs: { role: "status" } });
  const stopBtn = h("button", { cls: "cw-btn cw-stop", text: "■ stop and save", attrs: { type: "button" } });
  const note = h("div", { cls: "cw-legend cw-stop-note" });
  const err = h("div", { cls: "cw-message cw-error" });
  const charts = h("div", { cls: "cw-main" });
  root.append(h("div", { cls: "cw-bar" }, [title, status, stopBtn]), note, err, charts);
  stopBtn.addEventListener("click", () => {
    stopBtn.disabled = true;
    note.textContent = "stopping after the current step…";
    model.set("stop_requested", true);
    model.save_changes();
    const wm = model.widget_manager;
    const k = wm && (wm.kernel || wm.context && wm.context.sessionContext && wm.context.sessionContext.session && wm.context.sessionContext.session.kernel);
    if (k && typeof k.interrupt === "function") {
      k.interrupt().then(() => {
        root.dataset.interrupted = "1";
      }, (e) => {
        note.textContent = `could not interrupt the kernel: ${e}`;
      });
    } else {
      note.textContent = "stop requested (press the kernel's interrupt button ■ if training runs in this cell)";
    }
  });
  function draw() {
    th = theme(root);
    const st = model.get("status");
    title.textContent = `training monitor — ${model.get("title") || ""}`;
    status.textContent = `step ${model.get("step")} / ${model.get("total")} · ${st}`;
    status.dataset.status = st;
    root.dataset.status = st;
    stopBtn.disabled = st !== "running";
    const saved = model.get("saved_path");
    if (saved) note.textContent = `stopped at step ${model.get("step")}; model saved to ${saved}`;
    err.textContent = model.get("error") || "";
    err.hidden = !model.get("error");
    const steps = model.get("steps") || [], evals = model.get("evals") || [];
    const c = th.rgb;
    const loss = [
      { label: "train (running mean)", pts: steps, color: rgbCss(c.accent) },
      { label: "validation", pts: evals.map((e) => [e.step, e.val_loss ?? NaN]), color: rgbCss(c.negative), dots: true },
      { label: "repeated half (in-context)", pts: evals.map((e) => [e.step, e.icl_repeated ?? NaN]), color: rgbCss(c.select), dots: true, dash: [4, 3] }
    ];
    const heads = [];
    const first = evals.find((e) => Array.isArray(e.induction));
    if (first) {
      const nL = first.induction.length, nH = first.induction[0].length;
      for (let l = 0; l < nL; l++) for (let j = 0; j < nH; j++) {
        const t = nL > 1 ? l / (nL - 1) : 1;
        heads.push({
          label: nL * nH <= 16 ? `L${l}H${j}` : "",
          pts: evals.filter((e) => Array.isArray(e.induction)).map((e) => [e.step, e.induction[l][j]]),
          color: rgbCss(mix(mix(c.bg, c.fg2, 0.55), c.accent, t)),
          width: 1.2
        });
      }
    }
    heads.push({ label: "max previous-token", pts: evals.map((e) => [e.step, e.max_previous_token ?? NaN]), color: rgbCss(c.negative), dash: [4, 3] });
    charts.replaceChildren(
      lineChart(th, loss, { title: "loss (nats)", kind: "loss" }),
      lineChart(th, heads, { title: "induction score of every head (phase change: a head jumps up)", kind: "heads", y0: 0, y1: 1 })
    );
    markDrawn(root, { step: model.get("step"), nEvals: evals.length, nSteps: steps.length });
  }
  const changes = onModelChanges(
    model,
    ["steps", "evals", "status", "saved_path", "error", "step", "total", "title"],
    () => draw()
  );
  draw();
  const offTheme = onThemeChange(draw);
  return () => {
    offTheme();
    changes.off();
  };
}
var monitor_default = { render };
export {
  monitor_default as default
};
