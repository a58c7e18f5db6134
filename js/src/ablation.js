// Ablation: click heads to ablate them (zero / mean), cut single composition paths, see the per-token
// loss and the top predictions; patching mode: (layer x position) and (layer x head) heatmaps.
import "./lib/common.css";
import "./lib/panels.css";
import "./ablation.css";
import { divColor, inkOn, rgbCss, theme } from "./lib/color.js";
import { decodeArray } from "./lib/decode.js";
import { publishDrawn, sig } from "./lib/digest.js";
import { cleanup, h, markDrawn, onThemeChange } from "./lib/dom.js";
import { headGrid } from "./lib/grid.js";
import { messageArea } from "./lib/message.js";
import { heatmap, scaleLegend } from "./lib/panels.js";
import { onModelChanges } from "./lib/redraw.js";
import { fmt, shortLabel, visibleWhitespace } from "./lib/text.js";

function render({ model, el }) {
  const root = h("div", { cls: "cw-root cw-ablation" });
  el.append(root);
  let th = theme(root);
  const nL = model.get("n_layers"), nH = model.get("n_heads");

  // ---- header
  const title = h("span", { cls: "cw-title" });
  const modeTabs = h("div", { cls: "cw-tabs", attrs: { role: "tablist", "aria-label": "mode" } });
  const modeBtns = {};
  for (const [m, lab] of [["ablate", "ablation"], ["patch", "activation patching"]]) {
    const b = h("button", { cls: "cw-tab", text: lab, data: { mode: m }, attrs: { type: "button", role: "tab" } });
    b.addEventListener("click", () => { model.set("mode", m); model.save_changes(); });
    if (m === "patch" && !model.get("has_patching")) { b.disabled = true; b.title = "pass corrupted=... to enable"; }
    modeBtns[m] = b;
    modeTabs.append(b);
  }
  const kindSel = h("select", { cls: "cw-ablation-kind", attrs: { "aria-label": "ablation kind" } });
  for (const k of ["zero", "mean"]) kindSel.append(h("option", { text: `${k} ablation`, attrs: { value: k } }));
  kindSel.addEventListener("change", () => { model.set("ablation", kindSel.value); model.save_changes(); });
  const resetBtn = h("button", { cls: "cw-btn cw-reset", text: "restore all", attrs: { type: "button" } });
  resetBtn.addEventListener("click", () => { model.set("off", []); model.set("cuts", []); model.save_changes(); });
  const bar = h("div", { cls: "cw-bar" }, [title, modeTabs, kindSel, resetBtn]);
  const msg = messageArea(model);
  const ablateView = h("div", { cls: "cw-ablate-view" });
  const patchView = h("div", { cls: "cw-patch-view" });
  root.append(bar, msg.el, ablateView, patchView);

  // ---- ablation view: grid (click toggles), loss, cuts, per-token loss, predictions
  let effects = new Float32Array(0), effMax = 1;
  const isOff = (l, hd) => (model.get("off") || []).some(([a, b]) => a === l && b === hd);
  const grid = headGrid(model, {
    label: "heads: click to ablate / restore",
    paint(btn, l, hd) {
      const e = effects.length ? effects[l * nH + hd] : NaN;
      const c = Number.isFinite(e) ? divColor(th, e / effMax) : th.rgb.bg;
      const off = isOff(l, hd);
      btn.style.background = rgbCss(c);
      btn.style.color = inkOn(th, c);
      btn.textContent = off ? "off" : Number.isFinite(e) ? (e >= 0 ? "+" : "") + e.toFixed(2) : "";
      btn.classList.toggle("cw-off", off);
      btn.dataset.off = off ? "1" : "0";
      btn.setAttribute("aria-pressed", off ? "true" : "false");
      const g = model.get("kv_group_size") || 1;
      btn.dataset.kvHead = String(Math.floor(hd / g));
      btn.style.borderLeftWidth = g > 1 && hd % g === 0 && hd > 0 ? "3px" : "";  // K/V group boundary
      btn.title = `L${l}H${hd}: ${off ? "ablated (click to restore)" : "on (click to ablate)"}` +
        (Number.isFinite(e) ? `\nloss change when ablated alone: ${fmt(e, 4)}` : "") +
        (g > 1 ? `\nK/V head ${Math.floor(hd / g)} (shared by heads ${Math.floor(hd / g) * g}–${Math.floor(hd / g) * g + g - 1}); ` +
          "a path cut into its keys or values changes it for the whole group" : "");
    },
  });
  grid.cells.forEach((row, l) => row.forEach((btn, hd) => btn.addEventListener("click", () => {
    const cur = (model.get("off") || []).map((x) => x.slice());
    const i = cur.findIndex(([a, b]) => a === l && b === hd);
    if (i >= 0) cur.splice(i, 1); else cur.push([l, hd]);
    model.set("off", cur);
    model.save_changes();
  })));
  const lossBox = h("div", { cls: "cw-kv cw-loss-box" });
  const cutsBox = h("div", { cls: "cw-cuts" });
  const tokTable = h("div", { cls: "cw-token-loss" });
  const predBox = h("div", { cls: "cw-preds" });

  // cut form: src head -> dst head, kind
  const headOpts = (sel, minL, maxL) => {
    sel.replaceChildren();
    for (let l = minL; l <= maxL; l++) for (let j = 0; j < nH; j++) sel.append(h("option", { text: `L${l}H${j}`, attrs: { value: `${l},${j}` } }));
  };
  const srcSel = h("select", { cls: "cw-cut-src", attrs: { "aria-label": "path source head" } });
  const dstSel = h("select", { cls: "cw-cut-dst", attrs: { "aria-label": "path destination head" } });
  const kSel = h("select", { cls: "cw-cut-kind", attrs: { "aria-label": "destination input" } });
  for (const k of ["q", "k", "v"]) kSel.append(h("option", { text: k.toUpperCase(), attrs: { value: k } }));
  kSel.value = "k";
  const cutBtn = h("button", { cls: "cw-btn cw-cut-add", text: "cut path", attrs: { type: "button" } });
  if (nL >= 2) { headOpts(srcSel, 0, nL - 2); headOpts(dstSel, 1, nL - 1); }
  cutBtn.addEventListener("click", () => {
    const [l1, h1] = srcSel.value.split(",").map(Number), [l2, h2] = dstSel.value.split(",").map(Number);
    const cur = (model.get("cuts") || []).map((x) => x.slice());
    if (!cur.some((c) => c.join() === [l1, h1, l2, h2, kSel.value].join())) cur.push([l1, h1, l2, h2, kSel.value]);
    model.set("cuts", cur);
    model.save_changes();
  });
  const cutForm = nL >= 2
    ? h("div", { cls: "cw-bar" }, [h("span", { text: "cut path" }), srcSel, h("span", { text: "→" }), dstSel, kSel, cutBtn])
    : h("div", { cls: "cw-legend", text: "one layer: no composition paths to cut" });

  ablateView.append(
    h("div", { cls: "cw-main" }, [
      h("div", {}, [grid.el, h("div", { cls: "cw-legend", text: "cell colour / number: loss change when that head alone is ablated" })]),
      h("div", {}, [lossBox, cutForm, cutsBox, predBox]),
    ]),
    h("div", { cls: "cw-legend", text: "per-token loss (predicting the next token); click a row for the top predictions there" }),
    tokTable,
  );

  const drawn = {}; // what was painted (lib/digest.js)

  function drawLoss() {
    const loss = model.get("loss"), clean = model.get("clean_loss");
    drawn.loss = sig(loss, 6); drawn.clean = sig(clean, 6);
    lossBox.replaceChildren(
      "loss ", h("span", { cls: "cw-loss", text: fmt(loss, 5), data: { loss: String(loss) } }),
      "   clean ", h("span", { cls: "cw-clean-loss", text: fmt(clean, 5) }),
      "   change ", h("span", { cls: "cw-loss-delta", text: (loss - clean >= 0 ? "+" : "") + fmt(loss - clean, 5) }),
      // grouped-query attention: a cut into keys / values changes a K/V head shared by a group of heads
      ...(model.get("notes") || []).map((n) => h("div", { cls: "cw-legend cw-kv-note", text: n })),
    );
  }

  function drawCuts() {
    const cuts = model.get("cuts") || [];
    cutsBox.replaceChildren(...cuts.map((c, i) => {
      const x = h("button", { cls: "cw-btn cw-cut-remove", text: "×", attrs: { type: "button", "aria-label": "restore this path" } });
      x.addEventListener("click", () => {
        const cur = (model.get("cuts") || []).filter((_, j) => j !== i);
        model.set("cuts", cur);
        model.save_changes();
      });
      return h("span", { cls: "cw-cut", data: { cut: c.join(",") } }, [
        h("span", { text: `L${c[0]}H${c[1]} → L${c[2]}H${c[3]} (${String(c[4]).toUpperCase()})` }), x,
      ]);
    }));
  }

  function drawTokens() {
    const labels = model.get("labels") || [];
    const tl = decodeArray(model.get("token_loss")), cl = decodeArray(model.get("clean_token_loss"));
    const pos = model.get("position");
    let m = 1e-9;
    for (let i = 0; i < tl.length; i++) m = Math.max(m, Math.abs(tl[i] - cl[i]));
    const head = h("div", { cls: "cw-tl-row cw-tl-head" }, ["pos", "token → next", "clean", "ablated", "change"].map((t) => h("span", { text: t })));
    const rows = [head];
    for (let i = 0; i < tl.length; i++) {
      const d = tl[i] - cl[i];
      const c = divColor(th, d / m);
      const dv = h("span", { cls: "cw-tl-delta", text: (d >= 0 ? "+" : "") + fmt(d, 3) });
      dv.style.background = rgbCss(c);
      dv.style.color = inkOn(th, c);
      const row = h("div", { cls: "cw-tl-row cw-clickable", data: { pos: i }, attrs: { tabindex: "0" } }, [
        h("span", { text: String(i) }),
        h("span", { cls: "cw-tok", text: `${shortLabel(labels[i] ?? "", 14)} → ${shortLabel(labels[i + 1] ?? "", 14)}` }),
        h("span", { text: fmt(cl[i], 3) }), h("span", { cls: "cw-tl-loss", text: fmt(tl[i], 3) }), dv,
      ]);
      if (i === pos) row.classList.add("cw-selected");
      row.addEventListener("click", () => { model.set("position", i); model.save_changes(); });
      rows.push(row);
    }
    tokTable.replaceChildren(...rows);
    drawn.tokenLoss = Array.from(tl.subarray(0, 32), (x) => sig(x));
  }

  function drawPreds() {
    const labels = model.get("labels") || [];
    const pos = model.get("position");
    const list = (name, items) => h("div", { cls: `cw-pred-list cw-pred-${name}` }, [
      h("div", { cls: "cw-legend", text: name }),
      ...items.map(([lab, id, p]) => h("div", { cls: "cw-pred", data: { token: id } }, [
        h("span", { cls: "cw-tok", text: visibleWhitespace(lab) }), h("span", { text: `  ${fmt(p * 100, 1)}%` }),
      ])),
    ]);
    predBox.replaceChildren(
      h("div", { cls: "cw-legend", text: `top next-token predictions after [${pos}] ` }, [h("span", { cls: "cw-tok", text: visibleWhitespace(labels[pos] ?? "") })]),
      h("div", { cls: "cw-pred-cols" }, [list("clean", model.get("clean_top") || []), list("ablated", model.get("top") || [])]),
    );
  }

  function readEffects() {
    effects = decodeArray(model.get("effects"));
    effMax = 1e-9;
    for (const e of effects) if (Number.isFinite(e)) effMax = Math.max(effMax, Math.abs(e));
  }

  // ---- patching view
  function drawPatch() {
    const ph = model.get("patch_heads"), pr = model.get("patch_resid");
    if (!ph || !ph.data) { patchView.replaceChildren(h("div", { cls: "cw-legend", text: "computing patching…" })); return; }
    const H = decodeArray(ph), R = decodeArray(pr);
    const labels = model.get("labels") || [], cl = model.get("corrupt_labels") || [];
    const P = pr.shape[1];
    const posLabels = labels.map((s, i) => (cl[i] !== undefined && cl[i] !== s ? `${s}/${cl[i]}` : s));
    const readout = h("div", { cls: "cw-readout cw-patch-readout", text: "hover a cell" });
    const hmR = heatmap(th, R, nL, P, {
      rowLabels: Array.from({ length: nL }, (_, l) => `L${l}`), colLabels: posLabels, diverging: true,
      maxPx: 520, marginLeft: 32, marginTop: 70,
      onHover(r, c, v) { readout.textContent = r === null ? "" : `resid_pre L${r}, position ${c} (${visibleWhitespace(labels[c] ?? "")}): ${fmt(v, 4)}`; },
    });
    hmR.el.classList.add("cw-patch-resid");
    const sel = [model.get("layer"), model.get("head")];
    const hmH = heatmap(th, H, nL, nH, {
      rowLabels: Array.from({ length: nL }, (_, l) => `L${l}`), colLabels: Array.from({ length: nH }, (_, j) => `H${j}`),
      diverging: true, maxPx: 300, marginLeft: 32, marginTop: 30, marks: { cell: sel },
      onHover(r, c, v) { readout.textContent = r === null ? "" : `head L${r}H${c} output patched: ${fmt(v, 4)}`; },
      onClick(r, c) { model.set("layer", r); model.set("head", c); model.save_changes(); },
    });
    hmH.el.classList.add("cw-patch-heads");
    drawn.patchHeads = hmH.sample; drawn.patchResid = hmR.sample;
    patchView.replaceChildren(
      h("div", { cls: "cw-legend cw-patch-info", text: model.get("patch_info") }),
      scaleLegend(th, hmR.geom.lo, hmR.geom.hi, true, "clean → corrupted patching (blue: restores the clean answer)"),
      h("div", { cls: "cw-main" }, [
        h("div", {}, [h("div", { cls: "cw-small-title", text: "residual stream (layer × position)" }), hmR.el]),
        h("div", {}, [h("div", { cls: "cw-small-title", text: "head outputs (layer × head)" }), hmH.el]),
      ]),
      readout,
    );
  }

  function draw() {
    const t0 = performance.now();
    th = theme(root);
    const mode = model.get("mode");
    for (const [m, b] of Object.entries(modeBtns)) b.setAttribute("aria-selected", m === mode ? "true" : "false");
    kindSel.value = model.get("ablation");
    ablateView.hidden = mode !== "ablate";
    patchView.hidden = mode !== "patch";
    title.textContent = `${model.get("title") ? model.get("title") + " — " : ""}${mode === "patch" ? "activation patching" : "ablation"}`;
    readEffects();
    grid.refresh();
    drawLoss();
    drawCuts();
    drawTokens();
    drawPreds();
    if (mode === "patch") drawPatch();
    // the loss drawn belongs to the kernel's `computed_for`, which lags the page's own `off` after a click
    const cf = model.get("computed_for") || {};
    publishDrawn(root, { mode, off: cf.off || [], cuts: cf.cuts || [], ablation: cf.ablation, ...drawn,
      ...(mode === "patch" ? {} : { patchHeads: undefined, patchResid: undefined }) });
    markDrawn(root, { shownLayer: model.get("layer"), shownHead: model.get("head"), loss: model.get("loss"),
      nOff: (model.get("off") || []).length, nCuts: (model.get("cuts") || []).length, mode, drawMs: (performance.now() - t0).toFixed(1) });
  }
  // one redraw after all keys of a kernel update arrived (lib/redraw.js)
  const changes = onModelChanges(model, ["loss", "token_loss", "top", "clean_top", "computed_for", "off", "cuts", "mode", "patch_heads",
    "patch_resid", "effects", "position", "ablation", "layer", "head"], () => draw());
  draw();
  const offTheme = onThemeChange(() => { th = theme(root); draw(); });
  return cleanup(offTheme, changes, grid, msg);
}

export default { render };
