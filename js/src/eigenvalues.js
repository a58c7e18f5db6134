// Eigenvalues: grid of heads (upper half OV positivity, lower half QK positivity); the selected
// head's eigenvalues of the full OV, full QK and positional QK circuits in the complex plane.
import "./lib/common.css";
import "./eigenvalues.css";
import { divColor, inkOn, rgbCss, theme } from "./lib/color.js";
import { decodeArray } from "./lib/decode.js";
import { publishDrawn, sig } from "./lib/digest.js";
import { cleanup, h, hidpi, markDrawn, onThemeChange } from "./lib/dom.js";
import { headGrid } from "./lib/grid.js";
import { messageArea, pendingNote } from "./lib/message.js";
import { onModelChanges } from "./lib/redraw.js";
import { fmt } from "./lib/text.js";

const SIZE = 230; // plot side, CSS px

function render({ model, el }) {
  const root = h("div", { cls: "cw-root cw-eigen" });
  el.append(root);
  let th = theme(root);

  const title = h("span", { cls: "cw-title" });
  const logBox = h("input", { cls: "cw-log", attrs: { type: "checkbox" } });
  const bar = h("div", { cls: "cw-bar" }, [
    title,
    h("label", { title: "draw each eigenvalue at radius log10(1 + |λ|), same angle" }, [logBox, "log magnitude"]),
  ]);
  const msg = messageArea(model);
  const computing = pendingNote(model, msg);
  const legend = h("div", {
    cls: "cw-legend",
    text: "cell: upper half OV positivity, lower half QK positivity (full circuits), Re(Σλ)/Σ|λ|; red −1 … +1 blue",
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
    },
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
    // unit circle |λ| = 1 (radius log10 2 in log mode)
    const u = logm ? Math.log10(2) : 1;
    ctx.setLineDash([4, 3]); ctx.strokeStyle = th.css.fg2;
    ctx.beginPath(); ctx.arc(X(0), Y(0), (u / R) * (SIZE / 2), 0, 2 * Math.PI); ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = th.css.fg2; ctx.font = `10px ${th.font}`;
    ctx.fillText("|λ|=1", X(u * 0.71) + 2, Y(u * 0.71) - 2);
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
    const drawnEigs = {};
    model.get("circuits").forEach(([c], k) => { drawnEigs[c] = items[k].drawnEigs; });
    publishDrawn(root, { layer: shown.layer, head: shown.head, log: model.get("log_magnitude") ? 1 : 0, eigs: drawnEigs });
    logBox.checked = model.get("log_magnitude");
    title.textContent = `${model.get("title") ? model.get("title") + " — " : ""}L${shown.layer}H${shown.head} eigenvalues`;
    markDrawn(root, { shownLayer: shown.layer, shownHead: shown.head, nEigs: total, drawMs: (performance.now() - t0).toFixed(1) });
  }

  logBox.addEventListener("change", () => { model.set("log_magnitude", logBox.checked); model.save_changes(); });
  // one redraw after all keys of a kernel update arrived (lib/redraw.js)
  const changes = onModelChanges(model, ["positivity", "shown", "eigs", "log_magnitude"], (c) => {
    if (c.has("positivity")) readPositivity();
    draw();
  });
  readPositivity();
  draw();
  const offTheme = onThemeChange(() => { th = theme(root); grid.refresh(); draw(); });
  return cleanup(computing, offTheme, changes, grid, msg);
}

export default { render };
