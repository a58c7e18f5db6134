// PathExpansion: the logit of a target token at a position split into path terms (bars), the sum
// next to the model's own logit; click a token to move the position, a bar to see its head's pattern.
import "./lib/common.css";
import "./lib/panels.css";
import { theme } from "./lib/color.js";
import { decodeArray } from "./lib/decode.js";
import { publishDrawn, sig } from "./lib/digest.js";
import { cleanup, h, markDrawn, onThemeChange } from "./lib/dom.js";
import { messageArea } from "./lib/message.js";
import { barChart, patternPanel, tokenRow } from "./lib/panels.js";
import { needsKernel } from "./lib/offline.js";
import { onModelChanges } from "./lib/redraw.js";
import { fmt, visibleWhitespace } from "./lib/text.js";

function render({ model, el }) {
  const root = h("div", { cls: "cw-root cw-paths" });
  el.append(root);
  let th = theme(root);

  const title = h("span", { cls: "cw-title" });
  const predSel = h("select", { cls: "cw-target-select", attrs: { "aria-label": "target token" } });
  const search = h("input", { cls: "cw-target-search", attrs: { type: "text", size: "14", placeholder: "token or #id", "aria-label": "target token search" } });
  const bar = h("div", { cls: "cw-bar" }, [title, h("label", {}, ["target", predSel]), h("label", {}, ["or", search])]);
  needsKernel(model, [search], bar);
  const msg = messageArea(model);
  const tokBox = h("div", {});
  const sums = h("div", { cls: "cw-kv cw-sums" });
  const chart = h("div", { cls: "cw-chart" });
  const patBox = h("div", { cls: "cw-pattern-box" });
  root.append(bar, msg.el, h("div", { cls: "cw-legend", text: "tokens (click one to expand the logit at that position)" }), tokBox, sums,
    h("div", { cls: "cw-main" }, [chart, patBox]));

  let drawnBars = [], drawnPattern = {}; // what was painted (lib/digest.js)

  function drawTokens() {
    const pos = model.get("position");
    tokBox.replaceChildren(tokenRow(model.get("labels") || [], {
      mark: pos,
      onClick(i) { model.set("position", i); model.save_changes(); },
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
      "sum of all terms ", h("span", { cls: "cw-sum", text: fmt(total, 5) }),
      `   ${model.get("logit_label") || "model's own logit"} `, h("span", { cls: "cw-model-logit", text: fmt(ml, 5) }),
      `   |difference| ${Math.abs(total - ml).toExponential(1)}`,
    );
    const terms = model.get("terms") || [];
    const sel = [model.get("layer"), model.get("head")];
    const items = terms.map((t) => {
      const last = t.heads.length ? t.heads[t.heads.length - 1] : null;
      const data = { order: t.order, section: t.section };
      if (last) { data.layer = last[0]; data.head = last[1]; }
      return { label: t.label, value: t.value, data, heads: t.heads, cls: t.order < 0 ? "cw-bar-rest" : "",
        title: `${t.label}: ${fmt(t.value, 5)} (${t.section})${last ? " — click for L" + last[0] + "H" + last[1] + "'s pattern" : ""}` };
    });
    drawnBars = items.map((it) => [it.label, sig(it.value)]);
    const sections = [];
    let cur = null, group = [];
    const flush = () => { if (group.length) sections.push([cur, group]); group = []; };
    items.forEach((it) => { if (it.data.section !== cur) { flush(); cur = it.data.section; } group.push(it); });
    flush();
    chart.replaceChildren(...sections.flatMap(([name, its]) => [
      h("div", { cls: "cw-legend cw-section", text: name }),
      barChart(th, its, {
        onClick(it) {
          if (it.data.layer === undefined) return;
          model.set("path", it.heads);
          model.set("layer", Number(it.data.layer));
          model.set("head", Number(it.data.head));
          model.save_changes();
        },
        selected: (i) => its[i].data.layer !== undefined && Number(its[i].data.layer) === sel[0] && Number(its[i].data.head) === sel[1],
      }),
    ]));
  }

  function drawPattern() {
    const shown = model.get("shown") || {};
    const labels = model.get("labels") || [];
    const A = decodeArray(model.get("pattern"));
    const N = labels.length;
    const pos = model.get("position");
    const p = patternPanel(th, A, N, labels, {
      title: `L${shown.layer}H${shown.head} pattern (row ${pos} outlined: what position ${pos} attends to)`,
      marks: { rows: [pos] }, size: 260, kind: "head",
    });
    drawnPattern = { layer: shown.layer, head: shown.head, cells: p.sample };
    const v = model.get("virtual") || {}, hs = v.heads || [];
    const last = hs.length ? hs[hs.length - 1] : null;
    if (last && last[0] === shown.layer && last[1] === shown.head) {  // the clicked bar was a two-head path
      const pv = patternPanel(th, decodeArray(v), N, labels, {
        title: `virtual head A^{L${hs[1][0]}H${hs[1][1]}} A^{L${hs[0][0]}H${hs[0][1]}} (row ${pos} outlined)`,
        marks: { rows: [pos] }, size: 260, kind: "virtual", scaleToMax: true,
      });
      patBox.replaceChildren(p.el, pv.el);
      drawnPattern.virtual = { heads: hs, cells: pv.sample };
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
    if (parts === "all") { drawTokens(); drawTerms(); }
    if (parts === "shown") markBars();
    drawPattern();
    const shown = model.get("shown") || {};
    publishDrawn(root, { position: model.get("position"), target: model.get("target"), total: sig(model.get("total")),
      bars: drawnBars, pattern: drawnPattern });
    markDrawn(root, { shownLayer: shown.layer, shownHead: shown.head, position: model.get("position"),
      target: model.get("target"), nTerms: (model.get("terms") || []).length, drawMs: (performance.now() - t0).toFixed(1) });
  }

  predSel.addEventListener("change", () => { model.set("target", Number(predSel.value)); model.save_changes(); });
  search.addEventListener("keydown", (ev) => {
    ev.stopPropagation();
    if (ev.key === "Enter") { model.set("query", search.value); model.save_changes(); }
  });
  // one redraw after all keys of a kernel update arrived (lib/redraw.js): the bars when the terms
  // changed, the bar outline + pattern panel when only the shown head or the virtual head did.
  // (`position` / `target` are set here first by a click; the view follows the kernel's answer.)
  const ALL = ["terms", "labels", "predictions", "total", "model_logit", "logit_label", "target_label"];
  const changes = onModelChanges(model, [...ALL, "shown", "pattern", "virtual", "layer", "head"], (c) => {
    const all = ALL.some((k) => c.has(k));
    draw(all ? "all" : "shown");
  });
  draw();
  const offTheme = onThemeChange(() => { th = theme(root); draw(); });
  return cleanup(offTheme, changes, msg);
}

export default { render };
