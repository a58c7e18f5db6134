// AttentionPatterns: head grid coloured by a head score, the selected head's pattern on a canvas
// with hover read-out, the tokens coloured by the attention a hovered token pays / receives.
import {
  h, visibleWhitespace, theme, seqColor, divColor, rgbCss, inkOn, decodeArray, fmt, messageArea,
  headGrid, hidpi, markDrawn, onThemeChange,
} from "./common.js";

const MAX_PX = 520; // largest side of the pattern on screen (CSS px)

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
  const bar = h("div", { cls: "cw-bar" }, [
    title,
    h("label", {}, ["colour heads by", scoreSel]),
    h("label", {}, ["pattern colours", scaleSel]),
    h("label", { title: "attention × ‖v_src‖ (the paper's value-weighted pattern)" }, [vwBox, "value-weighted"]),
  ]);
  const msg = messageArea(model);
  // a note while the kernel works on a head (a first skip-trigram scan of a 50k vocabulary takes seconds)
  let pendingTimer = null;
  const pending = (l, hd) => {
    clearTimeout(pendingTimer);
    pendingTimer = setTimeout(() => msg.note(`computing L${l}H${hd}…`), 150);
  };
  const settled = () => { clearTimeout(pendingTimer); msg.show(); };
  const onSel = () => {
    const s = model.get("shown") || {};
    if (s.layer === model.get("layer") && s.head === model.get("head")) settled(); // e.g. a reverted bad request
  };
  model.on("change:layer", onSel);
  model.on("change:head", onSel);

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
    onRequest: (l, hd) => pending(l, hd),
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
      btn.dataset.score = Number.isFinite(v) ? v.toFixed(4) : "nan";
      btn.title = `L${l}H${hd} ${model.get("score_name")} = ${fmt(v)}`;
    },
  });

  // ---- pattern panel
  const canvas = h("canvas", { cls: "cw-canvas cw-pattern", attrs: { tabindex: "0", "aria-label": "attention pattern" } });
  const readout = h("div", { cls: "cw-readout cw-pattern-readout", text: "hover the pattern" });
  const panelTitle = h("div", { cls: "cw-panel-title" });
  const panel = h("div", { cls: "cw-panel" }, [panelTitle, canvas, readout]);

  // ---- tokens
  const tokBox = h("div", { cls: "cw-tokens" });
  const tokReadout = h("div", { cls: "cw-readout cw-token-readout", text: "hover a token" });
  const textRow = h("div", { cls: "cw-bar" });
  const textInput = h("input", { cls: "cw-text-input", attrs: { type: "text", "aria-label": "text", size: "60" } });
  const textBtn = h("button", { cls: "cw-btn", text: "run", attrs: { type: "button" } });
  if (model.get("has_tokenizer")) textRow.append(h("label", {}, ["text", textInput]), textBtn);

  root.append(
    bar, msg.el,
    h("div", { cls: "cw-main" }, [h("div", {}, [grid.el, legend]), panel]),
    h("div", { cls: "cw-bar" }, [h("span", { text: "tokens — colour by" }), modeSel]),
    tokBox, tokReadout, textRow,
  );

  // ---- state decoded from traits
  let A = new Float32Array(0), N = 0, aMax = 1, labels = [], spans = [], packed = false;
  const at = (i, j) => (j > i ? 0 : packed ? A[(i * (i + 1)) / 2 + j] : A[i * N + j]); // weight of query i on key j
  let geom = { ml: 0, mt: 0, S: 0 };
  const off = document.createElement("canvas");

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
    legend.textContent = `${model.get("score_label") || model.get("score_name")}: ${fmt(sLo)} … ${fmt(sHi)}`;
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

  function drawPattern() {
    settled();
    const t0 = performance.now();
    th = theme(root);
    const shown = model.get("shown") || {};
    const p = model.get("pattern");
    N = p && p.shape ? p.shape[0] : 0;
    // the causal pattern comes as its lower triangle: keep it packed (row i starts at i(i+1)/2)
    A = p && p.layout === "tril" ? decodeArray({ ...p, layout: "dense" }) : decodeArray(p);
    packed = !!(p && p.layout === "tril");
    // plain patterns are coloured on the absolute 0..1 scale; value-weighted ones up to their max
    let m = 0;
    for (let i = 0; i < A.length; i++) if (A[i] > m) m = A[i];
    aMax = model.get("value_weighted") ? m || 1 : 1;
    // offscreen N x N image, one pixel per (query, key), written as 32-bit words through a 256-colour table
    const side = Math.max(N, 1);
    off.width = side; off.height = side;
    const octx = off.getContext("2d");
    const img = octx.createImageData(side, side);
    const px = new Uint32Array(img.data.buffer);
    const L = 4096, lut = new Uint32Array(L); // value levels (fine enough for the log scale's 10^-3)
    const word = (c) => (255 << 24) | (Math.round(c[2]) << 16) | (Math.round(c[1]) << 8) | Math.round(c[0]); // RGBA, little-endian
    const mode = scaleSel.value;
    const tone = mode === "sqrt" ? Math.sqrt : mode === "log" ? (x) => (x > 1e-3 ? 1 + Math.log10(x) / 3 : 0) : (x) => x;
    for (let k = 0; k < L; k++) lut[k] = word(seqColor(th, tone(k / (L - 1))));
    const maskWord = word(th.rgb.bg2), s = (L - 1) / aMax;
    for (let i = 0; i < N; i++) {
      const src = packed ? (i * (i + 1)) / 2 : i * N, dst = i * N;
      for (let j = 0; j <= i; j++) {
        const q = (A[src + j] * s + 0.5) | 0;
        px[dst + j] = lut[q < 0 ? 0 : q >= L ? L - 1 : q];
      }
      px.fill(maskWord, dst + i + 1, dst + N);
    }
    octx.putImageData(img, 0, 0);
    const withLabels = N <= 64;
    const cell = N <= 12 ? 28 : N <= 32 ? 14 : N <= 64 ? 8 : 1;
    const S = Math.max(160, Math.min(MAX_PX, N * cell));
    const ml = withLabels ? 84 : 4, mt = withLabels ? 84 : 4;
    geom = { ml, mt, S };
    Object.assign(canvas.dataset, { ml, mt, side: S, n: N }); // plot geometry, for tests
    const ctx = hidpi(canvas, ml + S + 4, mt + S + 4);
    panel.style.maxWidth = `${Math.max(ml + S + 4, 320)}px`; // titles wrap to the plot's width, so the panel fits beside the grid
    ctx.fillStyle = th.css.bg;
    ctx.fillRect(0, 0, ml + S + 4, mt + S + 4);
    ctx.imageSmoothingEnabled = N > S; // average when shrinking, crisp when enlarging
    ctx.drawImage(off, ml, mt, S, S);
    ctx.strokeStyle = th.css.border;
    ctx.strokeRect(ml - 0.5, mt - 0.5, S + 1, S + 1);
    if (withLabels && N) {
      const step = S / N;
      ctx.fillStyle = th.css.fg;
      ctx.font = `${Math.min(11, Math.max(7, step - 1))}px ${th.font}`;
      ctx.textBaseline = "middle";
      ctx.textAlign = "right";
      for (let i = 0; i < N; i++) ctx.fillText(short(labels[i]), ml - 3, mt + (i + 0.5) * step, ml - 6);
      ctx.save();
      ctx.translate(ml, mt - 3);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "left";
      for (let j = 0; j < N; j++) ctx.fillText(short(labels[j]), 0, (j + 0.5) * step, mt - 6);
      ctx.restore();
    }
    const vw = model.get("value_weighted");
    panelTitle.textContent = `layer ${shown.layer} head ${shown.head} — ${vw ? "value-weighted pattern (A·‖v_src‖)" : "attention pattern"}; rows = query, columns = key; colour scale 0 … ${fmt(aMax)} (${scaleSel.value})`;
    title.textContent = model.get("title") ? `${model.get("title")} — L${shown.layer}H${shown.head}` : `L${shown.layer}H${shown.head}`;
    vwBox.checked = vw;
    const ms = performance.now() - t0;
    markDrawn(root, { shownLayer: shown.layer, shownHead: shown.head, valueWeighted: vw ? 1 : 0, nTokens: N, drawMs: ms.toFixed(1) });
  }

  function short(s) {
    const v = visibleWhitespace(s);
    return v.length > 12 ? v.slice(0, 11) + "…" : v;
  }

  function cellAt(ev) {
    const r = canvas.getBoundingClientRect();
    const x = ev.clientX - r.left - geom.ml, y = ev.clientY - r.top - geom.mt;
    if (x < 0 || y < 0 || x >= geom.S || y >= geom.S || !N) return null;
    return [Math.floor((y / geom.S) * N), Math.floor((x / geom.S) * N)];
  }

  let marked = [];
  function markTokens(idx) {
    for (const s of marked) s.classList.remove("cw-tok-mark");
    marked = idx.map((i) => spans[i]).filter(Boolean);
    for (const s of marked) s.classList.add("cw-tok-mark");
  }

  canvas.addEventListener("mousemove", (ev) => {
    const c = cellAt(ev);
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
    tokReadout.textContent = `[${k}] ${visibleWhitespace(labels[k])} ${pays ? "pays" : "receives"} attention (L${model.get("shown").layer}H${model.get("shown").head})`;
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
  scoreSel.addEventListener("change", () => { model.set("score_name", scoreSel.value); model.save_changes(); });
  vwBox.addEventListener("change", () => { model.set("value_weighted", vwBox.checked); model.save_changes(); });
  const sendText = () => { model.set("text", textInput.value); model.save_changes(); };
  textBtn.addEventListener("click", sendText);
  textInput.addEventListener("keydown", (ev) => { ev.stopPropagation(); if (ev.key === "Enter") sendText(); });

  // ---- kernel -> view
  const onShown = () => drawPattern();
  const onScores = () => readScores();
  const onThumbs = () => { readThumbs(); grid.refresh(); };
  const onLabels = () => readTokens();
  const onText = () => { textInput.value = model.get("text"); }; // the kernel restores the old text after a bad one
  model.on("change:shown", onShown); // set last, in the same message as the data
  model.on("change:scores", onScores);
  model.on("change:thumbs", onThumbs);
  model.on("change:labels", onLabels);
  model.on("change:text", onText);
  readTokens();
  readThumbs();
  readScores();
  drawPattern();
  // the theme can change while the view is open: re-read the CSS variables and repaint
  const offTheme = onThemeChange(() => { th = theme(root); grid.refresh(); drawPattern(); });
  return () => {
    model.off("change:layer", onSel);
    model.off("change:head", onSel);
    clearTimeout(pendingTimer);
    offTheme();
    model.off("change:shown", onShown);
    model.off("change:scores", onScores);
    model.off("change:thumbs", onThumbs);
    model.off("change:labels", onLabels);
    model.off("change:text", onText);
    grid.off();
    msg.off();
  };
}

export default { render };
