// TrainingHistory: a step slider (and play button) over a training run's snapshots. Every panel
// follows the step: loss and in-context-loss curves and every head's induction / previous-token
// score over training (the Olsson plot), each with the step marked; the selected head's pattern on
// BOS + r + r at that step; the induction circuit's positivities and K-composition at that step.
import "./lib/common.css";
import "./lib/panels.css";
import "./history.css";
import { lineChart } from "./lib/chart.js";
import { inkOn, mix, rgbCss, seqColor, theme } from "./lib/color.js";
import { decodeArray } from "./lib/decode.js";
import { publishDrawn, sig } from "./lib/digest.js";
import { cleanup, h, markDrawn, onThemeChange } from "./lib/dom.js";
import { headGrid } from "./lib/grid.js";
import { messageArea } from "./lib/message.js";
import { patternPanel } from "./lib/panels.js";
import { onModelChanges } from "./lib/redraw.js";
import { nextPlayIndex, playStart, stepIndex, valueAt } from "./lib/steps.js";
import { fmt } from "./lib/text.js";

const PLAY_MS = 700;
const lab = (l, hd) => `L${l}H${hd}`;

function headSelect(cls, heads, title) {
  const sel = h("select", { cls: `cw-select ${cls}`, title });
  for (const [l, hd] of heads) sel.append(h("option", { text: lab(l, hd), attrs: { value: `${l},${hd}` } }));
  return sel;
}

function render({ model, el }) {
  const root = h("div", { cls: "cw-root cw-history" });
  el.append(root);
  let th = theme(root);
  const nL = model.get("n_layers"), nH = model.get("n_heads");

  const title = h("span", { cls: "cw-title" });
  const playBtn = h("button", { cls: "cw-btn cw-play", text: "▶ play", attrs: { type: "button", "aria-label": "play through the snapshots" } });
  const slider = h("input", { cls: "cw-step-slider", attrs: { type: "range", min: "0", step: "1", "aria-label": "training step" } });
  const stepLabel = h("span", { cls: "cw-step-label" });
  const msg = messageArea(model);
  const charts = h("div", { cls: "cw-main cw-history-charts" });
  const patternBox = h("div", { cls: "cw-history-pattern" });
  // each head's cell: its induction score on the shown snapshot (text and colour)
  const grid = headGrid(model, {
    label: "select the head whose pattern is shown (cells: induction score at this step)",
    paint(btn, l, hd) {
      const sd = model.get("step_data") || {};
      // no score (null: undefined at this step): the neutral colour of lib/color.js, marked "·"
      const v = sd.induction?.[l]?.[hd], col = seqColor(th, Number.isFinite(v) ? Math.max(0, Math.min(1, v)) : NaN);
      btn.textContent = Number.isFinite(v) ? v.toFixed(2).replace(/^0/, "") : "·";
      btn.style.background = rgbCss(col);
      btn.style.color = inkOn(th, col);
      btn.title = `L${l}H${hd} at step ${sd.step}: induction ${fmt(v)}, previous-token ${fmt(sd.previous_token?.[l]?.[hd])}`;
    },
  });
  const early = [], late = [];
  for (let l = 0; l < nL; l++) for (let j = 0; j < nH; j++) { if (l < nL - 1) early.push([l, j]); if (l >= 1) late.push([l, j]); }
  const prevSel = headSelect("cw-prev-head", early, "the previous-token head (earlier layer)");
  const indSel = headSelect("cw-ind-head", late, "the induction head");
  const readout = h("div", { cls: "cw-kv cw-circuit-readout" });
  const circuitChart = h("div", { cls: "cw-circuit-chart" });
  const circuitBox = h("div", { cls: "cw-history-circuit" }, [
    h("div", { cls: "cw-small-title", text: "induction circuit" }),
    h("label", {}, ["previous-token head ", prevSel]), " ", h("label", {}, ["induction head ", indSel]),
    readout, circuitChart,
  ]);
  root.append(h("div", { cls: "cw-bar" }, [title, playBtn, slider, stepLabel]), msg.el, charts,
    h("div", { cls: "cw-main cw-history-lower" }, [patternBox, h("div", {}, [h("div", { cls: "cw-legend", text: "selected head" }), grid.el]), circuitBox]));

  const steps = () => model.get("steps") || [];
  function request(i) {
    const s = steps()[i];
    if (s === undefined || s === model.get("step")) return;
    model.set("step", s);
    model.save_changes();
  }
  slider.addEventListener("input", () => request(Number(slider.value)));
  slider.addEventListener("keydown", (ev) => ev.stopPropagation()); // arrow keys move the slider, not the notebook

  // play: the next snapshot once the current one is drawn (a slow kernel is never queued up)
  let timer = null;
  const shownStep = () => (model.get("step_data") || {}).step;
  function stop() { clearInterval(timer); timer = null; playBtn.textContent = "▶ play"; root.dataset.playing = "0"; }
  function tick() {
    const n = steps().length, i = stepIndex(steps(), model.get("step"));
    if (shownStep() !== model.get("step")) return; // still waiting for the kernel's answer
    const next = nextPlayIndex(i, n);
    if (next === null) { stop(); return; }
    request(next);
  }
  playBtn.addEventListener("click", () => {
    if (timer) { stop(); return; }
    const n = steps().length, i = stepIndex(steps(), model.get("step"));
    playBtn.textContent = "❚❚ pause";
    root.dataset.playing = "1";
    const start = playStart(i, n);
    if (start !== i) request(start);
    timer = setInterval(tick, PLAY_MS);
  });

  function setCircuit() {
    const [l1, h1] = prevSel.value.split(",").map(Number), [l2, h2] = indSel.value.split(",").map(Number);
    model.set("circuit", [l1, h1, l2, h2]);
    model.save_changes();
  }
  prevSel.addEventListener("change", setCircuit);
  indSel.addEventListener("change", setCircuit);

  function draw() {
    th = theme(root);
    const t0 = performance.now();
    const st = steps(), step = model.get("step"), sd = model.get("step_data") || {};
    const c = model.get("curves") || {}, cc = model.get("circuit_curves") || {};
    const l = model.get("layer"), hd = model.get("head");
    const at = sd.step;  // the step the panels' data are for
    title.textContent = `training history — ${model.get("name") || model.get("title") || ""}`;
    slider.max = String(Math.max(st.length - 1, 0));
    slider.value = String(Math.max(stepIndex(st, step), 0));
    stepLabel.textContent = `step ${step} (snapshot ${stepIndex(st, step) + 1} of ${st.length})`;
    const col = th.rgb;
    // curves with the current step marked
    const xs = c.steps || [];
    const lossSeries = [
      { label: c.loss_label || "loss", pts: xs.map((x, i) => [x, c.loss?.[i] ?? NaN]), color: rgbCss(col.accent), dots: true },
      { label: "in-context: first copy", pts: xs.map((x, i) => [x, c.icl_first?.[i] ?? NaN]), color: rgbCss(col.negative), dash: [4, 3] },
      { label: "in-context: repeated copy", pts: xs.map((x, i) => [x, c.icl_repeated?.[i] ?? NaN]), color: rgbCss(col.select), width: 2 },
    ];
    const heads = [], selected = [];  // the selected head's lines are drawn last, over the others
    const ind = c.induction || [], prev = c.previous_token || [];
    for (let a = 0; a < nL; a++) for (let j = 0; j < nH; j++) {
      const on = a === l && j === hd, t = nL > 1 ? a / (nL - 1) : 1;
      const colour = rgbCss(on ? col.select : mix(mix(col.bg, col.fg2, 0.55), col.accent, t));
      (on ? selected : heads).push({ label: on ? `${lab(a, j)} induction` : "", pts: xs.map((x, i) => [x, ind[i]?.[a]?.[j] ?? NaN]), color: colour, width: on ? 2.5 : 1.1 });
      (on ? selected : heads).push({ label: on ? `${lab(a, j)} previous-token` : "", pts: xs.map((x, i) => [x, prev[i]?.[a]?.[j] ?? NaN]), color: colour, width: on ? 2 : 0.8, dash: [4, 3] });
    }
    const snapInd = sd.induction?.[l]?.[hd], snapPrev = sd.previous_token?.[l]?.[hd];
    charts.replaceChildren(
      lineChart(th, lossSeries, { title: `loss (nats; curves from ${c.source || "?"}; ○ measured on the snapshot)`, kind: "loss", marker: at,
        points: [{ x: at, y: sd.icl_repeated, color: rgbCss(col.select) }] }),
      lineChart(th, heads.concat(selected), { title: "every head's induction (solid) and previous-token (dashed) score; ○ the selected head, measured on the snapshot", kind: "heads", y0: 0, y1: 1, marker: at,
        points: [{ x: at, y: snapInd, color: rgbCss(col.fg) }, { x: at, y: snapPrev, color: rgbCss(col.fg) }] }),
    );
    // the selected head's pattern at the step its data are for (`shown.variant`)
    const shown = model.get("shown") || {}, pStep = (shown.variant || [])[0];
    const labels = model.get("labels") || [];
    const A = decodeArray(model.get("pattern"));
    const pp = patternPanel(th, A, labels.length, labels, { title: `${lab(shown.layer, shown.head)} on BOS + r + r at step ${pStep}`, kind: "history", size: 300 });
    patternBox.replaceChildren(pp.el, h("div", { cls: "cw-legend cw-head-scores", text:
      `at step ${at}: induction ${fmt(snapInd)}, previous-token ${fmt(snapPrev)} (measured on this snapshot)` }));
    // the circuit at this step, and per snapshot
    grid.refresh();
    const cir = model.get("circuit") || [];
    if (cir.length === 4) { prevSel.value = `${cir[0]},${cir[1]}`; indSel.value = `${cir[2]},${cir[3]}`; }
    const [l1, h1, l2, h2] = sd.circuit || cir;
    readout.replaceChildren(
      h("div", {}, [`${lab(l2, h2)} OV positivity `, h("span", { cls: "cw-ov-pos", text: fmt(sd.ov?.positivity) }),
        `  (top-1 copying ${fmt(sd.ov?.top1)} of ${sd.n_tokens} tokens)`]),
      h("div", {}, [`K-composition QK term via ${lab(l1, h1)}: positivity `, h("span", { cls: "cw-kqk-pos", text: fmt(sd.k_qk?.positivity) }),
        `  (top-1 diagonal ${fmt(sd.k_qk?.top1)})`]),
      h("div", {}, [`K-composition ${lab(l1, h1)} → ${lab(l2, h2)} `, h("span", { cls: "cw-kcomp", text: fmt(sd.k_comp, 4) }),
        `  (random baseline ${fmt(sd.baseline?.[0], 4)} ± ${fmt(sd.baseline?.[1], 4)})`]),
    );
    const cx = cc.steps || [];
    circuitChart.replaceChildren(lineChart(th, [
      { label: "OV positivity", pts: cx.map((x, i) => [x, cc.ov?.[i] ?? NaN]), color: rgbCss(col.accent), dots: true },
      { label: "K-comp. QK positivity", pts: cx.map((x, i) => [x, cc.k_qk?.[i] ?? NaN]), color: rgbCss(col.select), dots: true },
      { label: "K-composition", pts: cx.map((x, i) => [x, cc.k_comp?.[i] ?? NaN]), color: rgbCss(col.negative), dots: true },
      { label: "baseline", pts: cx.map((x) => [x, cc.baseline?.[0] ?? NaN]), color: rgbCss(col.fg2), dash: [2, 3], width: 1 },
    ], { title: "per snapshot", kind: "circuit", marker: at, y0: 0 }));
    // what was painted (lib/digest.js): the numbers at the marked step and the pattern's cells
    const sel = (arr) => xs.map((x, i) => arr[i]?.[l]?.[hd]);
    publishDrawn(root, {
      step: at ?? null, index: sd.index ?? null, circuit: sd.circuit || [], source: c.source || "",
      ov: sig(sd.ov?.positivity), ov_top1: sig(sd.ov?.top1), k_qk: sig(sd.k_qk?.positivity), k_qk_top1: sig(sd.k_qk?.top1),
      k_comp: sig(sd.k_comp), scores: { induction: sig(snapInd), previous_token: sig(snapPrev) },
      marker: { loss: sig(valueAt(xs, c.loss || [], at)), icl_repeated: sig(valueAt(xs, c.icl_repeated || [], at)),
        induction: sig(valueAt(xs, sel(ind), at)), previous_token: sig(valueAt(xs, sel(prev), at)) },
      circuit_at: { ov: sig(valueAt(cx, cc.ov || [], at)), k_comp: sig(valueAt(cx, cc.k_comp || [], at)) },
      pattern: { layer: shown.layer ?? null, head: shown.head ?? null, step: pStep ?? null, cells: pp.sample },
    });
    markDrawn(root, { step: at, shownLayer: shown.layer, shownHead: shown.head, patternStep: pStep, drawMs: (performance.now() - t0).toFixed(1) });
  }
  // one redraw after all keys of a kernel update arrived (lib/redraw.js)
  const changes = onModelChanges(model, ["step_data", "pattern", "shown", "curves", "circuit_curves", "circuit", "labels", "steps", "step", "layer", "head"], () => draw());
  draw();
  const offTheme = onThemeChange(draw);
  return cleanup(offTheme, changes, grid, msg, stop);
}

export default { render };
