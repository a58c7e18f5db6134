// AttentionPatterns: head grid coloured by a head score, the selected head's pattern on a canvas
// with hover read-out, the tokens coloured by the attention a hovered token pays / receives.
import "./lib/common.css";
import "./attention.css";
import { divColor, inkOn, rgbCss, seqColor, theme } from "./lib/color.js";
import { decodeArray } from "./lib/decode.js";
import { publishDrawn, sig } from "./lib/digest.js";
import { cleanup, h, markDrawn, onThemeChange } from "./lib/dom.js";
import { headGrid } from "./lib/grid.js";
import { cachedSelection, headKey } from "./lib/headcache.js";
import { messageArea, pendingNote } from "./lib/message.js";
import { PatternImages, cellAt, drawPattern as drawPatternCanvas, imageKey, maxOf, prepareImage } from "./lib/pattern.js";
import { needsKernel } from "./lib/offline.js";
import { onModelChanges } from "./lib/redraw.js";
import { fmt, visibleWhitespace } from "./lib/text.js";

const MAX_PX = 520; // largest side of the pattern on screen (CSS px)
// run `fn` when the page has nothing else to do (a prefetched head's pixels: never in a click's frame)
const idle = (fn) => (typeof requestIdleCallback === "function" ? requestIdleCallback(fn, { timeout: 500 }) : setTimeout(fn, 0));

function render({ model, el }) {
  const root = h("div", { cls: "cw-root cw-attention" });
  el.append(root);
  let th = theme(root);

  // ---- header
  const title = h("span", { cls: "cw-title" });
  const scoreSel = h("select", { cls: "cw-score-select", attrs: { "aria-label": "colour heads by" } });
  const vwBox = h("input", { cls: "cw-vw", attrs: { type: "checkbox" } });
  const modeSel = h("select", { cls: "cw-mode", attrs: { "aria-label": "token colouring" } });
  for (const [v, t] of [["pays", "attention paid by hovered token"], ["receives", "attention received by hovered token"]]) {
    modeSel.append(h("option", { text: t, attrs: { value: v } }));
  }
  // display mapping only (weights are unchanged): long inputs spread attention thin, so a log scale helps
  const scaleSel = h("select", { cls: "cw-scale", attrs: { "aria-label": "pattern colour scale" } });
  for (const [v, t] of [["linear", "linear"], ["sqrt", "sqrt"], ["log", "log 10⁻³…1"]]) {
    scaleSel.append(h("option", { text: t, attrs: { value: v } }));
  }
  // zoom: the pattern drawn larger inside a scroll box (drag or scroll to pan) for long contexts
  const zoomSel = h("select", { cls: "cw-zoom", attrs: { "aria-label": "pattern zoom" } });
  for (const z of [1, 2, 4, 8]) zoomSel.append(h("option", { text: `${z}×`, attrs: { value: String(z) } }));
  const bar = h("div", { cls: "cw-bar" }, [
    title,
    h("label", {}, ["colour heads by", scoreSel]),
    h("label", {}, ["pattern colours", scaleSel]),
    h("label", { title: "zoom the pattern; drag or scroll it to pan" }, ["zoom", zoomSel]),
    h("label", { title: "attention × ‖v_src‖ (the paper's value-weighted pattern)" }, [vwBox, "value-weighted"]),
  ]);
  const msg = messageArea(model, { deferredText: "computing the head scores…" });
  const computing = pendingNote(model, msg);
  // heads already received (and the selected head's neighbours, prefetched) redraw from the page's
  // cache at the click; the kernel is still told the selection and its answer replaces the overlay.
  // Their coloured pixels are kept too (`images`): a cached click only scales an image onto the canvas,
  // and a prefetched head's pixels are painted when it arrives, while the page is idle.
  const images = new PatternImages();
  const sel = cachedSelection(model, ["pattern"], (source) => drawPattern(source), {
    onPayload(shown, values) { idle(() => prepareImage(imageEntry(shown, values.pattern), th, scaleSel.value)); },
  });
  let drawnWidth = 0; // the view's width when the pattern was last drawn (a resize redraws)
  const get = (k) => sel.get(k);
  root.cwHeadCache = sel.cache; // for benchmarks/bench_widget_latency.py (a property, not markup)
  root.cwPatternImages = images;

  // ---- head grid + legend
  let scores = new Float32Array(0), sLo = 0, sHi = 1;
  let thumbs = new Float32Array(0), tS = 0; // every head's pattern pooled to tS x tS (engine.pattern_thumbnails)
  const legend = h("div", { cls: "cw-legend" });
  function drawThumb(cv, l, hd, ink) {
    const n = tS, off0 = (l * model.get("n_heads") + hd) * n * n;
    cv.width = Math.max(n, 1); cv.height = Math.max(n, 1);
    const ctx = cv.getContext("2d");
    ctx.clearRect(0, 0, n, n);
    if (!n) return;
    let m = 0;
    for (let k = 0; k < n * n; k++) m = Math.max(m, thumbs[off0 + k]);
    const img = ctx.createImageData(n, n), d = img.data;
    const [r, g, b] = ink === "#ffffff" ? [255, 255, 255] : [17, 17, 17];
    for (let k = 0; k < n * n; k++) {
      d[4 * k] = r; d[4 * k + 1] = g; d[4 * k + 2] = b;
      d[4 * k + 3] = m > 0 ? Math.round(255 * Math.sqrt(Math.max(0, thumbs[off0 + k]) / m)) : 0; // sqrt: diffuse heads stay visible
    }
    ctx.putImageData(img, 0, 0);
  }
  const grid = headGrid(model, {
    label: "attention heads",
    cellWidth: 34,
    onRequest(l, hd) {
      if (!sel.request(l, hd)) computing.pending(l, hd);
    },
    paint(btn, l, hd) {
      const v = scores[l * model.get("n_heads") + hd];
      const t = sHi > sLo ? (v - sLo) / (sHi - sLo) : 0;
      const c = sLo < 0 ? divColor(th, v / Math.max(Math.abs(sLo), Math.abs(sHi), 1e-12)) : seqColor(th, t);
      btn.style.background = rgbCss(c);
      btn.style.color = inkOn(th, c);
      // thumbnail of the head's pattern over the score colour (the score's value is in the tooltip)
      let cv = btn.querySelector("canvas.cw-thumb");
      if (!cv) { cv = h("canvas", { cls: "cw-thumb" }); btn.replaceChildren(cv); }
      drawThumb(cv, l, hd, inkOn(th, c));
      // no score for this head (undefined: e.g. a text without previous-token pairs; the kernel says so in
      // the message): a neutral cell marked "·", never the colour of 0
      let mark = btn.querySelector("span.cw-no-score");
      if (Number.isFinite(v)) mark?.remove();
      else if (!mark) { mark = h("span", { cls: "cw-no-score", text: "·" }); btn.append(mark); }
      if (mark) { mark.style.color = inkOn(th, c); mark.style.background = rgbCss(c); }
      btn.dataset.score = Number.isFinite(v) ? v.toFixed(4) : "nan";
      btn.title = `L${l}H${hd} ${model.get("score_name")} = ${fmt(v)}`;
    },
  });

  // ---- pattern panel
  const canvas = h("canvas", { cls: "cw-canvas cw-pattern", attrs: { tabindex: "0", "aria-label": "attention pattern" } });
  const readout = h("div", { cls: "cw-readout cw-pattern-readout", text: "hover the pattern" });
  const panelTitle = h("div", { cls: "cw-panel-title" });
  const scroller = h("div", { cls: "cw-pattern-scroll" }, [canvas]);
  const panel = h("div", { cls: "cw-panel" }, [panelTitle, scroller, readout]);

  // ---- tokens
  const tokBox = h("div", { cls: "cw-tokens" });
  const tokReadout = h("div", { cls: "cw-readout cw-token-readout", text: "hover a token" });
  const textRow = h("div", { cls: "cw-bar" });
  const textInput = h("input", { cls: "cw-text-input", attrs: { type: "text", "aria-label": "text", size: "60" } });
  const textBtn = h("button", { cls: "cw-btn", text: "run", attrs: { type: "button" } });
  if (model.get("has_tokenizer")) {
    textRow.append(h("label", {}, ["text", textInput]), textBtn);
    needsKernel(model, [textInput, textBtn], textRow);
  }

  root.append(
    bar, msg.el,
    h("div", { cls: "cw-main" }, [h("div", {}, [grid.el, legend]), panel]),
    h("div", { cls: "cw-bar" }, [h("span", { text: "tokens — colour by" }), modeSel]),
    tokBox, tokReadout, textRow,
  );

  // ---- state decoded from traits
  let A = new Float32Array(0), N = 0, labels = [], spans = [], packed = false;
  const at = (i, j) => (j > i ? 0 : packed ? A[(i * (i + 1)) / 2 + j] : A[i * N + j]); // weight of query i on key j
  let geom = { ml: 0, mt: 0, S: 0, N: 0 };

  function readThumbs() {
    const p = model.get("thumbs");
    thumbs = decodeArray(p);
    tS = p && p.shape ? p.shape[2] : 0;
  }

  function readScores() {
    const p = model.get("scores");
    scores = decodeArray(p);
    const fin = Array.from(scores).filter(Number.isFinite);
    sLo = fin.length ? Math.min(0, ...fin) : 0;
    sHi = fin.length ? Math.max(...fin) : 1;
    if (sHi <= sLo) sHi = sLo + 1;
    const label = model.get("score_label") || model.get("score_name");
    // deferred: the kernel computes the scores once the view is on the page (lib/message.js asks)
    legend.textContent = model.get("deferred") && !scores.length ? `computing ${label}…`
      : scores.length && !fin.length ? `${label}: no head has a value (·)` : `${label}: ${fmt(sLo)} … ${fmt(sHi)}`;
    scoreSel.replaceChildren();
    for (const [name, lab] of model.get("score_names")) {
      const o = h("option", { text: lab, attrs: { value: name } });
      scoreSel.append(o);
    }
    scoreSel.value = model.get("score_name");
    grid.refresh();
  }

  function readTokens() {
    labels = model.get("labels");
    spans = labels.map((s, i) => h("span", { cls: "cw-tok", text: visibleWhitespace(s), data: { pos: i } }));
    tokBox.replaceChildren(...spans);
    textInput.value = model.get("text");
  }

  /** The image-cache entry of a head's pattern payload (decoded once; its pixels painted on first draw). */
  function imageEntry(shown, p) {
    const key = imageKey(headKey(shown), scaleSel.value, th);
    let e = images.get(key);
    if (!e) {
      const vals = decodeArray(p, { keepPacked: true });
      // plain patterns are coloured on the absolute 0..1 scale; value-weighted ones up to their max
      const vw = (shown.variant || [])[0] === true;
      e = { A: vals, N: p && p.shape ? p.shape[0] : 0, packed: !!(p && p.layout === "tril"), vmax: vw ? maxOf(vals) || 1 : 1 };
      images.put(key, e);
    }
    return e;
  }

  function drawPattern(source = "kernel") {
    computing.settled();
    const t0 = performance.now();
    th = theme(root);
    const shown = get("shown") || {};
    const vw = model.get("value_weighted");
    // the causal pattern comes as its lower triangle: kept packed (row i starts at i(i+1)/2)
    const e = imageEntry(shown, get("pattern"));
    A = e.A; N = e.N; packed = e.packed;
    const aMax = e.vmax;
    // sized from the room the view has (an 800 px output area, a 1,600 px one), times the zoom
    const room = Math.max(160, (root.clientWidth || 800) - 28 - (N <= 64 ? 84 : 4));
    const zoom = Number(zoomSel.value) || 1;
    geom = drawPatternCanvas(canvas, th, { A, N, packed, vmax: aMax, scale: scaleSel.value, labels, maxPx: Math.min(MAX_PX, room) * zoom, entry: e });
    // titles wrap to the plot's width, so the panel fits beside the grid; never wider than the view
    panel.style.maxWidth = `${Math.min(Math.max(geom.ml + geom.S + 4, 320), Math.max(200, (root.clientWidth || 800) - 16))}px`;
    drawnWidth = root.clientWidth;
    panelTitle.textContent = `layer ${shown.layer} head ${shown.head} — ${vw ? "value-weighted pattern (A·‖v_src‖)" : "attention pattern"}; rows = query, columns = key; colour scale 0 … ${fmt(aMax)} (${scaleSel.value})`;
    title.textContent = model.get("title") ? `${model.get("title")} — L${shown.layer}H${shown.head}` : `L${shown.layer}H${shown.head}`;
    vwBox.checked = vw;
    const ms = performance.now() - t0;
    // what was painted: sampled cells of the array given to the canvas (lib/digest.js)
    publishDrawn(root, { layer: shown.layer, head: shown.head, vw: vw ? 1 : 0, n: geom.N, vmax: sig(aMax), cells: geom.sample });
    markDrawn(root, { shownLayer: shown.layer, shownHead: shown.head, valueWeighted: vw ? 1 : 0, nTokens: N, drawMs: ms.toFixed(1), zoom,
      drawSource: source, cacheEntries: sel.cache.size, cacheBytes: sel.cache.bytes, images: images.size });
  }

  let marked = [];
  function markTokens(idx) {
    for (const s of marked) s.classList.remove("cw-tok-mark");
    marked = idx.map((i) => spans[i]).filter(Boolean);
    for (const s of marked) s.classList.add("cw-tok-mark");
  }

  canvas.addEventListener("mousemove", (ev) => {
    const c = cellAt(canvas, geom, ev);
    if (!c) { readout.textContent = ""; markTokens([]); return; }
    const [i, j] = c;
    if (j > i) {
      readout.textContent = `query [${i}] ${visibleWhitespace(labels[i])} · key [${j}] ${visibleWhitespace(labels[j])}: masked (key after query)`;
    } else {
      readout.textContent = `query [${i}] ${visibleWhitespace(labels[i])} → key [${j}] ${visibleWhitespace(labels[j])}: ${model.get("value_weighted") ? "A·‖v‖" : "weight"} ${fmt(at(i, j), 4)}`;
    }
    readout.dataset.query = i; readout.dataset.key = j;
    markTokens([i, j]);
  });
  canvas.addEventListener("mouseleave", () => markTokens([]));

  // tokens: colour by attention paid / received by the hovered one
  function colourTokens(k) {
    const pays = modeSel.value === "pays";
    let m = 0;
    const w = new Float32Array(N);
    for (let t = 0; t < N; t++) {
      const v = pays ? (t <= k ? at(k, t) : NaN) : (t >= k ? at(t, k) : NaN);
      w[t] = v;
      if (v > m) m = v;
    }
    const scale = model.get("value_weighted") ? (m || 1) : 1;
    for (let t = 0; t < spans.length; t++) {
      const v = w[t];
      if (Number.isFinite(v)) {
        const c = seqColor(th, v / scale);
        spans[t].style.background = rgbCss(c);
        spans[t].style.color = inkOn(th, c);
      } else {
        spans[t].style.background = "";
        spans[t].style.color = "";
      }
    }
    spans[k] && spans[k].classList.add("cw-tok-focus");
    tokReadout.textContent = `[${k}] ${visibleWhitespace(labels[k])} ${pays ? "pays" : "receives"} attention (L${get("shown").layer}H${get("shown").head})`;
    tokReadout.dataset.pos = k;
  }
  function clearTokens() {
    for (const s of spans) { s.style.background = ""; s.style.color = ""; s.classList.remove("cw-tok-focus"); }
  }
  tokBox.addEventListener("mouseover", (ev) => {
    const s = ev.target.closest && ev.target.closest(".cw-tok");
    if (!s || !tokBox.contains(s)) return;
    clearTokens();
    colourTokens(Number(s.dataset.pos));
  });
  tokBox.addEventListener("mouseleave", clearTokens);

  // ---- controls -> kernel
  scaleSel.addEventListener("change", () => drawPattern());
  zoomSel.addEventListener("change", () => drawPattern());
  // drag to pan a zoomed pattern
  let drag = null;
  scroller.addEventListener("mousedown", (ev) => {
    if (Number(zoomSel.value) > 1) drag = { x: ev.clientX, y: ev.clientY, l: scroller.scrollLeft, t: scroller.scrollTop };
  });
  const endDrag = () => { drag = null; };
  const onDrag = (ev) => {
    if (!drag) return;
    scroller.scrollLeft = drag.l - (ev.clientX - drag.x);
    scroller.scrollTop = drag.t - (ev.clientY - drag.y);
  };
  window.addEventListener("mousemove", onDrag);
  window.addEventListener("mouseup", endDrag);
  // the output area changed width (a resized window, a sidebar): draw the pattern for the new room
  let resizeQueued = false;
  const ro = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(() => {
    if (resizeQueued || Math.abs(root.clientWidth - drawnWidth) < 8) return;
    resizeQueued = true;
    requestAnimationFrame(() => { resizeQueued = false; drawPattern(sel.fromCache ? "cache" : "kernel"); });
  });
  if (ro) ro.observe(root);
  const offWindow = () => { window.removeEventListener("mousemove", onDrag); window.removeEventListener("mouseup", endDrag); if (ro) ro.disconnect(); };
  scoreSel.addEventListener("change", () => { model.set("score_name", scoreSel.value); model.save_changes(); });
  vwBox.addEventListener("change", () => { model.set("value_weighted", vwBox.checked); model.save_changes(); });
  const sendText = () => { model.set("text", textInput.value); model.save_changes(); };
  textBtn.addEventListener("click", sendText);
  textInput.addEventListener("keydown", (ev) => { ev.stopPropagation(); if (ev.key === "Enter") sendText(); });

  // ---- kernel -> view: one redraw after all keys of a kernel update arrived (lib/redraw.js)
  // (`shown` changes with every new pattern: the kernel sets it last, in the same update as the data)
  const changes = onModelChanges(model, ["shown", "pattern", "scores", "score_name", "score_names", "score_label",
    "thumbs", "labels", "text", "deferred"], (c) => {
    if (c.has("labels")) readTokens();
    else if (c.has("text")) textInput.value = model.get("text"); // the kernel restores the old text after a bad one
    if (c.has("thumbs")) readThumbs();
    if (c.has("scores") || c.has("score_name") || c.has("score_names") || c.has("score_label") || c.has("deferred")) readScores();
    else if (c.has("thumbs")) grid.refresh();
    // (an answer to an older click while a newer one is on screen from the cache is not drawn)
    if ((c.has("shown") || c.has("pattern")) && sel.kernelUpdate()) drawPattern();
  });
  readTokens();
  readThumbs();
  readScores();
  drawPattern();
  sel.start();
  // the theme can change while the view is open: re-read the CSS variables and repaint
  const offTheme = onThemeChange(() => { th = theme(root); grid.refresh(); drawPattern(); });
  return cleanup(computing, offTheme, changes, grid, msg, sel, offWindow, () => images.clear());
}

export default { render };
