// Composition: heatmap of earlier head (rows) x later head (columns) for Q / K / V composition;
// click a cell -> the pair's patterns on the text, the virtual head's pattern, score and baseline.
import "./lib/common.css";
import "./lib/panels.css";
import { theme } from "./lib/color.js";
import { decodeArray } from "./lib/decode.js";
import { publishDrawn, sig } from "./lib/digest.js";
import { cleanup, h, markDrawn, onThemeChange } from "./lib/dom.js";
import { cursorMove, headGrid } from "./lib/grid.js";
import { messageArea } from "./lib/message.js";
import { heatmap, patternPanel, scaleLegend } from "./lib/panels.js";
import { onModelChanges } from "./lib/redraw.js";
import { fmt } from "./lib/text.js";

const KINDS = [["q", "Q"], ["k", "K"], ["v", "V"]];
const NAMES = { q: "Q-composition", k: "K-composition", v: "V-composition" };

function render({ model, el }) {
  const root = h("div", { cls: "cw-root cw-composition" });
  el.append(root);
  let th = theme(root);
  const nL = model.get("n_layers"), nH = model.get("n_heads");

  const title = h("span", { cls: "cw-title" });
  const tabs = h("div", { cls: "cw-tabs", attrs: { role: "tablist", "aria-label": "composition kind" } });
  const tabBtns = {};
  for (const [k, lab] of KINDS) {
    const b = h("button", { cls: "cw-tab", text: lab, data: { kind: k }, attrs: { type: "button", role: "tab" } });
    b.addEventListener("click", () => { model.set("kind", k); model.save_changes(); });
    tabBtns[k] = b;
    tabs.append(b);
  }
  const baseBox = h("input", { cls: "cw-minus-baseline", attrs: { type: "checkbox" } });
  baseBox.addEventListener("change", () => { model.set("subtract_baseline", baseBox.checked); model.save_changes(); });
  // rotary models: Q/K scores read the later head's QK circuit at an offset Δ = query − key position
  const offsetBox = h("input", { cls: "cw-offset", attrs: { type: "number", min: "0", step: "1" } });
  offsetBox.style.width = "4.5em";
  offsetBox.addEventListener("change", () => {
    const v = Math.round(Number(offsetBox.value));
    if (Number.isFinite(v) && v >= 0) { model.set("offset", v); model.save_changes(); } else offsetBox.value = String(model.get("offset"));
  });
  offsetBox.addEventListener("keydown", (ev) => { ev.stopPropagation(); if (ev.key === "Enter") offsetBox.dispatchEvent(new Event("change")); });
  const offsetCtl = h("label", { cls: "cw-offset-ctl", title: "rotary positions: Q/K scores use W_Q R_Δ W_Kᵀ at this offset Δ" },
    ["offset Δ", offsetBox]);
  const bar = h("div", { cls: "cw-bar" }, [
    title, tabs,
    h("label", { title: "subtract the mean score of random matrices of the same shapes" }, [baseBox, "minus baseline"]),
    offsetCtl,
  ]);
  const msg = messageArea(model);
  const legendBox = h("div", { cls: "cw-legend-box" });
  const mapBox = h("div", { cls: "cw-map-box" });
  const readout = h("div", { cls: "cw-readout cw-comp-readout", text: "hover a cell; click it for the pair's details" });
  const grid = headGrid(model, { label: "select a head (its row and column are outlined)", cellMin: 22 });
  const details = h("div", { cls: "cw-details" });
  root.append(bar, msg.el, legendBox,
    h("div", { cls: "cw-main" }, [h("div", {}, [mapBox, readout]), h("div", {}, [h("div", { cls: "cw-legend", text: "selected head" }), grid.el])]),
    details);

  const rowHeads = [], colHeads = [];
  for (let l = 0; l < nL - 1; l++) for (let j = 0; j < nH; j++) rowHeads.push([l, j]);
  for (let l = 1; l < nL; l++) for (let j = 0; j < nH; j++) colHeads.push([l, j]);
  const lab = ([l, j]) => `L${l}H${j}`;
  let S = new Float32Array(0), hm = null, cursor = [0, 0];
  let drawnMap = {}, drawnPair = {}; // what was painted (lib/digest.js)

  function pick(r, c) {
    const a = rowHeads[r], b = colHeads[c];
    if (a[0] >= b[0]) { readout.textContent = `${lab(a)} → ${lab(b)}: no composition (not an earlier layer)`; return; }
    model.set("pair", [a[0], a[1], b[0], b[1]]);
    model.set("layer", b[0]);
    model.set("head", b[1]);
    model.save_changes();
  }

  function values() {
    // the engine's [L, H, L, H] array, rows = earlier heads, columns = later heads
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
    offsetCtl.style.display = model.get("rotary") && kind !== "v" ? "" : "none";
    offsetBox.value = String(model.get("offset"));
    const [bm, bs] = model.get("baseline") || [NaN, NaN];
    title.textContent = `${model.get("title") ? model.get("title") + " — " : ""}${NAMES[kind] || kind}`;
    readout.textContent = "hover a cell; click it for the pair's details";
    if (nL < 2) { mapBox.replaceChildren(); drawnMap = { kind, minus: minus ? 1 : 0, cells: [] }; return; }
    const v = values();
    hm = heatmap(th, v, rowHeads.length, colHeads.length, {
      rowLabels: rowHeads.map(lab), colLabels: colHeads.map(lab), diverging: minus,
      vmin: minus ? undefined : 0, maxPx: 420, marginLeft: 46, marginTop: 40,
      rowGroups: nH, colGroups: nH, marks: marks(),
      onHover(r, c, val) {
        if (r === null) { readout.textContent = ""; return; }
        const a = rowHeads[r], b = colHeads[c];
        readout.textContent = a[0] >= b[0]
          ? `${lab(a)} → ${lab(b)}: no composition (not an earlier layer)`
          : `${lab(a)} → ${lab(b)}: ${NAMES[kind]} ${minus ? "minus baseline " : ""}${fmt(val, 4)}`;
      },
      onClick(r, c) { cursor = [r, c]; pick(r, c); },
    });
    hm.el.classList.add("cw-comp-map");
    // painted cells as [earlier layer, head, later layer, head, value]
    drawnMap = { kind, minus: minus ? 1 : 0, cells: hm.sample.map(([r, c, x]) => [...rowHeads[r], ...colHeads[c], x]) };
    hm.el.setAttribute("aria-label", `${NAMES[kind]} scores: rows earlier heads, columns later heads; ` +
      "arrow keys move, Enter shows the pair");
    // keyboard: arrows move a cursor over the cells (read out), Enter / Space selects that pair
    hm.el.addEventListener("keydown", (ev) => {
      const nc = colHeads.length;
      const moved = cursorMove(ev.key, cursor, rowHeads.length, nc);
      if (moved) {
        cursor = moved;
        const a = rowHeads[cursor[0]], b = colHeads[cursor[1]];
        readout.textContent = a[0] >= b[0] ? `${lab(a)} → ${lab(b)}: no composition (not an earlier layer)`
          : `${lab(a)} → ${lab(b)}: ${NAMES[kind]} ${minus ? "minus baseline " : ""}${fmt(v[cursor[0] * nc + cursor[1]], 4)} (Enter: details)`;
        hm.redraw(Object.assign(marks(), { cell: cursor }));
      } else if (ev.key === "Enter" || ev.key === " ") {
        hm.el.dispatchEvent(new CustomEvent("cw-pick", { detail: cursor }));
      } else return;
      ev.preventDefault();
      ev.stopPropagation(); // keep JupyterLab's notebook shortcuts out of it
    });
    hm.el.addEventListener("cw-pick", (ev) => pick(ev.detail[0], ev.detail[1]));
    mapBox.replaceChildren(hm.el);
    const note = `baseline (random matrices of these shapes): ${fmt(bm, 4)} ± ${fmt(bs, 4)} (mean ± spread)` +
      (minus ? "; shown: score − baseline mean" : "; shown: raw score in [0, 1]");
    legendBox.replaceChildren(scaleLegend(th, hm.geom.lo, hm.geom.hi, minus, note));
    legendBox.querySelector(".cw-scale-note").classList.add("cw-baseline-note");
  }

  function drawDetails() {
    const d = model.get("details") || {};
    if (!d.pair) { details.replaceChildren(h("div", { cls: "cw-legend", text: "click a cell for the pair's details" })); drawnPair = {}; return; }
    const [l1, h1, l2, h2] = d.pair;
    const labels = model.get("labels") || [];
    const N = labels.length;
    const p1 = decodeArray(d.p1), p2 = decodeArray(d.p2), pv = decodeArray(d.pv);
    const head = h("div", { cls: "cw-kv cw-pair-summary", data: { pair: d.pair.join(",") } }, [
      h("strong", { text: `L${l1}H${h1} → L${l2}H${h2}` }),
      `  ${NAMES[d.kind] || d.kind}: score `, h("span", { cls: "cw-pair-score", text: fmt(d.raw, 4) }),
      `   baseline ${fmt(d.baseline_mean, 4)} ± ${fmt(d.baseline_std, 4)}`,
      `   score − baseline `, h("span", { cls: "cw-pair-minus", text: fmt(d.score, 4) }),
      `  (${fmt(d.baseline_std > 0 ? d.score / d.baseline_std : NaN, 3)} spreads)`,
      d.offset !== undefined ? `   at Δ = ${d.offset}` : "",
    ]);
    const kvNote = d.kv_note ? [h("div", { cls: "cw-legend cw-kv-note", text: d.kv_note, data: { group: (d.kv_group || []).join(",") } })] : [];
    const pp = [
      patternPanel(th, p1, N, labels, { title: `A^{L${l1}H${h1}} (earlier head)`, kind: "first" }),
      patternPanel(th, p2, N, labels, { title: `A^{L${l2}H${h2}} (later head)`, kind: "second" }),
      patternPanel(th, pv, N, labels, { title: `virtual head A^{L${l2}H${h2}} A^{L${l1}H${h1}}`, kind: "virtual", scaleToMax: true }),
    ];
    const panels = h("div", { cls: "cw-pair-panels" }, pp.map((p) => p.el));
    drawnPair = { pair: d.pair, kind: d.kind, raw: sig(d.raw), score: sig(d.score), p1: pp[0].sample, p2: pp[1].sample, pv: pp[2].sample };
    details.replaceChildren(head, ...kvNote, panels);
  }

  function draw(parts = "all") {
    const t0 = performance.now();
    if (parts !== "details") drawMap();
    if (parts !== "map") drawDetails();
    const p = model.get("pair") || [];
    publishDrawn(root, { map: drawnMap, details: drawnPair });
    markDrawn(root, {
      shownLayer: model.get("layer"), shownHead: model.get("head"), kind: model.get("kind"),
      pair: p.join(","), drawMs: (performance.now() - t0).toFixed(1),
    });
  }
  const onSel = () => { if (hm) hm.redraw(marks()); markDrawn(root, { shownLayer: model.get("layer"), shownHead: model.get("head") }); };
  // one redraw after all keys of a kernel update arrived (lib/redraw.js)
  // (a tab or the baseline box sets `kind` / `subtract_baseline` here first; the map redraws when
  // the kernel's scores for them arrive, never with the old scores under the new name)
  const changes = onModelChanges(model, ["scores", "baseline", "details", "labels", "layer", "head", "pair"], (c) => {
    const map = c.has("scores") || c.has("baseline");
    const det = c.has("details") || c.has("labels");
    if (map || det) draw(map && det ? "all" : map ? "map" : "details");
    if (!map && (c.has("layer") || c.has("head") || c.has("pair"))) onSel();
  });
  draw();
  const offTheme = onThemeChange(() => { th = theme(root); draw(); });
  return cleanup(offTheme, changes, grid, msg);
}

export default { render };
