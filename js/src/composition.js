// Composition: the selected head's Q / K / V composition with every other head, as a layer x head map
// (earlier heads -> it in the layers below, it -> later heads in the layers above: the kernel sends
// only these L x H numbers, `focus`, so a 32 x 32-head model stays light); click a cell -> the pair's
// patterns on the text, the virtual head's pattern, score and baseline.
import "./lib/common.css";
import "./lib/panels.css";
import { theme } from "./lib/color.js";
import { decodeArray } from "./lib/decode.js";
import { publishDrawn, sig } from "./lib/digest.js";
import { cleanup, h, markDrawn, onThemeChange } from "./lib/dom.js";
import { cursorMove, headGrid } from "./lib/grid.js";
import { messageArea } from "./lib/message.js";
import { needsKernel } from "./lib/offline.js";
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
  needsKernel(model, [offsetBox], offsetCtl); // a new offset recomputes the scores: a kernel answers it
  const msg = messageArea(model);
  const legendBox = h("div", { cls: "cw-legend-box" });
  const mapBox = h("div", { cls: "cw-map-box" });
  const readout = h("div", { cls: "cw-readout cw-comp-readout", text: "hover a cell; click it for the pair's details" });
  const grid = headGrid(model, { label: "select a head (the map shows its partners)", cellMin: 22 });
  const details = h("div", { cls: "cw-details" });
  root.append(bar, msg.el, legendBox,
    h("div", { cls: "cw-main" }, [h("div", {}, [mapBox, readout]), h("div", {}, [h("div", { cls: "cw-legend", text: "selected head" }), grid.el])]),
    details);

  const lab = (l, j) => `L${l}H${j}`;
  let S = new Float32Array(0), F = {}, hm = null, cursor = [0, 0];
  let drawnMap = {}, drawnPair = {}; // what was painted (lib/digest.js)

  // the pair a map cell stands for (null in the focused head's own layer)
  function pairAt(l, j) {
    if (F.layer === undefined || l === F.layer) return null;
    return l < F.layer ? [l, j, F.layer, F.head] : [F.layer, F.head, l, j];
  }
  function describe(l, j, val) {
    const p = pairAt(l, j);
    if (!p) return `${lab(l, j)}: same layer as ${lab(F.layer, F.head)} (no composition; click to select it)`;
    const minus = F.minus ? "minus baseline " : "";
    return `${lab(p[0], p[1])} → ${lab(p[2], p[3])}: ${NAMES[F.kind] || F.kind} ${minus}${fmt(val, 4)}`;
  }

  function pick(l, j) {
    const p = pairAt(l, j);
    if (!p) { model.set("layer", l); model.set("head", j); model.save_changes(); return; }
    model.set("pair", p);
    model.set("layer", p[2]);
    model.set("head", p[3]);
    model.save_changes();
  }

  function marks() {
    const m = { rows: F.layer === undefined ? [] : [F.layer] };
    const p = model.get("pair") || [];
    if (p.length === 4 && F.layer !== undefined) {
      if (p[2] === F.layer && p[3] === F.head) m.cell = [p[0], p[1]];
      else if (p[0] === F.layer && p[1] === F.head) m.cell = [p[2], p[3]];
    }
    return m;
  }

  function strongest() {
    // the focused head's strongest partner below and above it (from the same L x H numbers)
    const out = [];
    for (const [name, from, to] of [["earlier", 0, F.layer], ["later", F.layer + 1, nL]]) {
      let best = -Infinity, at = null;
      for (let l = from; l < to; l++) for (let j = 0; j < nH; j++) {
        const v = S[l * nH + j];
        if (Number.isFinite(v) && v > best) { best = v; at = [l, j]; }
      }
      if (at) {
        const p = pairAt(...at);
        out.push(`strongest with an ${name} head: ${lab(p[0], p[1])} → ${lab(p[2], p[3])} ${fmt(best, 4)}`);
      }
    }
    return out.join("; ");
  }

  function drawMap() {
    th = theme(root);
    F = model.get("focus") || {};
    S = F.scores ? decodeArray(F.scores) : new Float32Array(0);
    const kind = model.get("kind"), minus = model.get("subtract_baseline");
    for (const [k] of KINDS) tabBtns[k].setAttribute("aria-selected", k === kind ? "true" : "false");
    baseBox.checked = minus;
    offsetCtl.style.display = model.get("rotary") && kind !== "v" ? "" : "none";
    offsetBox.value = String(model.get("offset"));
    const [bm, bs] = model.get("baseline") || [NaN, NaN];
    const fk = F.kind || kind, fMinus = F.minus ?? minus;
    const who = F.layer === undefined ? "" : ` of ${lab(F.layer, F.head)} with every other head`;
    title.textContent = `${model.get("title") ? model.get("title") + " — " : ""}${NAMES[fk] || fk}${who}`;
    readout.textContent = "hover a cell; click it for the pair's details";
    if (nL < 2 || F.layer === undefined) { mapBox.replaceChildren(); drawnMap = { kind: fk, minus: fMinus ? 1 : 0, cells: [] }; return; }
    hm = heatmap(th, S, nL, nH, {
      rowLabels: Array.from({ length: nL }, (_, l) => `L${l}`), colLabels: Array.from({ length: nH }, (_, j) => `H${j}`),
      diverging: fMinus, vmin: fMinus ? undefined : 0, maxPx: 420, marginLeft: 40, marginTop: 34, marks: marks(),
      onHover(r, c, val) { readout.textContent = r === null ? "" : describe(r, c, val); },
      onClick(r, c) { cursor = [r, c]; pick(r, c); },
    });
    hm.el.classList.add("cw-comp-map");
    // painted cells as [layer, head, value] of the focused head's partners
    drawnMap = { kind: fk, minus: fMinus ? 1 : 0, focus: [F.layer, F.head], offset: F.offset ?? null,
      cells: hm.sample.map(([r, c, x]) => [r, c, x]) };
    hm.el.setAttribute("aria-label", `${NAMES[fk]} of ${lab(F.layer, F.head)}: rows layers, columns heads; ` +
      "earlier heads below its layer, later heads above; arrow keys move, Enter shows the pair");
    const m0 = marks();
    if (m0.cell) cursor = m0.cell.slice();
    // keyboard: arrows move a cursor over the cells (read out), Enter / Space selects that pair
    hm.el.addEventListener("keydown", (ev) => {
      const moved = cursorMove(ev.key, cursor, nL, nH);
      if (moved) {
        cursor = moved;
        readout.textContent = describe(cursor[0], cursor[1], S[cursor[0] * nH + cursor[1]]) + (pairAt(...cursor) ? " (Enter: details)" : "");
        hm.redraw(Object.assign(marks(), { cell: cursor }));
      } else if (ev.key === "Enter" || ev.key === " ") {
        hm.el.dispatchEvent(new CustomEvent("cw-pick", { detail: cursor }));
      } else return;
      ev.preventDefault();
      ev.stopPropagation(); // keep JupyterLab's notebook shortcuts out of it
    });
    hm.el.addEventListener("cw-pick", (ev) => pick(ev.detail[0], ev.detail[1]));
    mapBox.replaceChildren(hm.el, h("div", { cls: "cw-legend cw-comp-strongest", text: strongest() }));
    const note = `baseline (random matrices of these shapes): ${fmt(bm, 4)} ± ${fmt(bs, 4)} (mean ± spread)` +
      (fMinus ? "; shown: score − baseline mean" : "; shown: raw score in [0, 1]");
    legendBox.replaceChildren(scaleLegend(th, hm.geom.lo, hm.geom.hi, fMinus, note));
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
  // the kernel's scores for them arrive and is labelled with what `focus` says it was computed for)
  const changes = onModelChanges(model, ["focus", "baseline", "details", "labels", "layer", "head", "pair"], (c) => {
    const map = c.has("focus") || c.has("baseline");
    const det = c.has("details") || c.has("labels");
    if (map || det) draw(map && det ? "all" : map ? "map" : "details");
    if (!map && (c.has("layer") || c.has("head") || c.has("pair"))) onSel();
  });
  draw();
  const offTheme = onThemeChange(() => { th = theme(root); draw(); });
  return cleanup(offTheme, changes, grid, msg);
}

export default { render };
