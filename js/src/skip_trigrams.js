// SkipTrigrams: the selected head's top table [A] … [B] → [C], a search box (per-source lookup in
// the kernel), more rows on demand. Tokens shown with visible whitespace, always as text.
import "./lib/common.css";
import "./skip_trigrams.css";
import { inkOn, rgbCss, seqColor, theme } from "./lib/color.js";
import { publishDrawn, sig } from "./lib/digest.js";
import { cleanup, h, markDrawn, onThemeChange } from "./lib/dom.js";
import { headGrid } from "./lib/grid.js";
import { cachedSelection } from "./lib/headcache.js";
import { messageArea, pendingNote } from "./lib/message.js";
import { needsKernel } from "./lib/offline.js";
import { onModelChanges } from "./lib/redraw.js";
import { fmt, visibleWhitespace } from "./lib/text.js";

function render({ model, el }) {
  const root = h("div", { cls: "cw-root cw-skip" });
  el.append(root);
  let th = theme(root);

  const title = h("span", { cls: "cw-title" });
  const search = h("input", {
    cls: "cw-search", attrs: { type: "text", placeholder: "source token or #id", "aria-label": "search source token", size: "18" },
  });
  const searchBtn = h("button", { cls: "cw-btn cw-search-btn", text: "look up", attrs: { type: "button" } });
  const moreBtn = h("button", { cls: "cw-btn cw-more", text: "more rows", attrs: { type: "button" } });
  // frequent-tokens filter: A, B and C only among the N most frequent corpus tokens (0 = all)
  const topN = h("input", { cls: "cw-top-n", attrs: { type: "number", min: "0", step: "100", value: String(model.get("top_n") || 0),
    "aria-label": "only the N most frequent corpus tokens (0 = all)" } });
  const hasCorpus = model.get("has_corpus");
  topN.disabled = !hasCorpus;
  const topLabel = h("label", { title: hasCorpus ? "A, B and C only among the N most frequent tokens of the corpus; 0 = every token"
    : "pass corpus= (token ids or text) to cw.skip_trigrams to filter by token frequency" }, ["frequent tokens only", topN]);
  const bar = h("div", { cls: "cw-bar" }, [title, h("label", {}, ["search", search]), searchBtn, moreBtn, topLabel]);
  needsKernel(model, [search, searchBtn, moreBtn, topN], bar);
  const msg = messageArea(model, { deferredText: "computing the skip-trigram table…" });
  const computing = pendingNote(model, msg);
  // heads already received (and the selected head's neighbours, prefetched) redraw from the page's
  // cache at the click (lib/headcache.js); the kernel is still told the selection
  const sel = cachedSelection(model, ["rows", "found"], (source) => draw(source));
  root.cwHeadCache = sel.cache; // for benchmarks (a property, not markup)
  const grid = headGrid(model, {
    label: "attention heads",
    onRequest(l, hd) { if (!sel.request(l, hd)) computing.pending(l, hd); },
  });
  const foundBox = h("div", { cls: "cw-found" });
  const readout = h("div", { cls: "cw-readout cw-skip-readout", text: "hover a token" });
  const table = h("table", { cls: "cw-skip-table" });
  const note = h("div", {
    cls: "cw-legend",
    text: "A = source (attended to), B = destination (query), C = output. B scores: centred full-QK column A; C scores: centred full-OV row A; strength = max(0, best B) × best C.",
  });
  root.append(bar, msg.el, h("div", { cls: "cw-main" }, [grid.el, h("div", { cls: "cw-skip-body" }, [foundBox, table, readout, note])]));

  function chip(label, id, value, maxv, role, src) {
    const c = seqColor(th, maxv > 0 ? Math.max(0, value) / maxv : 0);
    const s = h("span", {
      cls: `cw-chip cw-tok cw-${role}`, data: { id, value },
      title: `${role === "dest" ? "destination B" : "output C"} id ${id}: ${fmt(value)}`,
    }, [h("span", { cls: "cw-chip-text", text: visibleWhitespace(label) }), h("span", { cls: "cw-chip-val", text: fmt(value, 2) })]);
    s.style.background = rgbCss(c);
    s.style.color = inkOn(th, c);
    s.addEventListener("mouseenter", () => {
      readout.textContent = role === "dest"
        ? `[${visibleWhitespace(src)}] … [${visibleWhitespace(label)}]: destination ${visibleWhitespace(label)} attends to source ${visibleWhitespace(src)}, centred QK ${fmt(value, 4)}`
        : `[${visibleWhitespace(src)}] … → [${visibleWhitespace(label)}]: attending to ${visibleWhitespace(src)} raises ${visibleWhitespace(label)} by ${fmt(value, 4)} (centred OV)`;
    });
    return s;
  }

  function rowEl(r, maxD, maxO, cls) {
    return h("tr", { cls, data: { sourceId: r.source_id } }, [
      h("td", { cls: "cw-rank", text: r.rank === null || r.rank === undefined ? "" : String(r.rank + 1) }),
      h("td", { cls: "cw-src" }, [h("span", { cls: "cw-chip cw-tok cw-source", text: visibleWhitespace(r.source), title: `source A id ${r.source_id}` })]),
      h("td", { cls: "cw-num", text: fmt(r.strength) }),
      h("td", {}, r.dests.map(([s, id, v]) => chip(s, id, v, maxD, "dest", r.source))),
      h("td", {}, r.outs.map(([s, id, v]) => chip(s, id, v, maxO, "out", r.source))),
    ]);
  }

  function header() {
    return h("thead", {}, [h("tr", {}, ["#", "source A", "strength", "top destinations B (QK)", "top outputs C (OV)"].map((t) => h("th", { text: t })))]);
  }

  function maxima(rows) {
    let d = 0, o = 0;
    for (const r of rows) { for (const x of r.dests) d = Math.max(d, x[2]); for (const x of r.outs) o = Math.max(o, x[2]); }
    return [d, o];
  }

  function draw(source = "kernel") {
    computing.settled();
    const t0 = performance.now();
    th = theme(root);
    const shown = sel.get("shown") || {};
    const rows = sel.get("rows") || [];
    const [maxD, maxO] = maxima(rows);
    table.replaceChildren(header(), h("tbody", {}, rows.map((r) => rowEl(r, maxD, maxO, "cw-row"))));
    // the rows rendered: source id, strength, destination ids and output ids (lib/digest.js)
    publishDrawn(root, { layer: shown.layer, head: shown.head, n: rows.length,
      rows: rows.map((r) => [r.source_id, sig(r.strength, 4), r.dests.map((d) => d[1]), r.outs.map((o) => o[1])]) });
    title.textContent = `${model.get("title") ? model.get("title") + " — " : ""}L${shown.layer}H${shown.head} skip-trigrams`;
    // the kernel sends at most `max_rows` rows (widgets/skip_trigrams.py MAX_ROWS, and never more than d_vocab)
    moreBtn.disabled = !!model.offline || rows.length >= model.get("d_vocab") || model.get("n_rows") >= model.get("max_rows");
    drawFound();
    markDrawn(root, { shownLayer: shown.layer, shownHead: shown.head, nRows: rows.length, drawMs: (performance.now() - t0).toFixed(1),
      drawSource: source, cacheEntries: sel.cache.size });
  }

  function drawFound() {
    const f = sel.get("found") || {};
    if (!f.dests) { foundBox.replaceChildren(); foundBox.hidden = true; return; }
    const [maxD, maxO] = maxima([f]);
    foundBox.hidden = false;
    foundBox.replaceChildren(
      h("div", { cls: "cw-legend", text: `search result (rank ${f.rank + 1} of ${model.get("d_vocab")})` }),
      h("table", { cls: "cw-skip-table" }, [header(), h("tbody", {}, [rowEl(f, maxD, maxO, "cw-found-row")])]),
    );
  }

  const doSearch = () => {
    // same query twice: clear first so the kernel sees a change
    if (model.get("query") === search.value) { model.set("query", ""); model.save_changes(); }
    model.set("query", search.value);
    model.save_changes();
  };
  searchBtn.addEventListener("click", doSearch);
  search.addEventListener("keydown", (ev) => { ev.stopPropagation(); if (ev.key === "Enter") doSearch(); });
  moreBtn.addEventListener("click", () => {
    model.set("n_rows", Math.min(model.get("n_rows") + 20, model.get("max_rows")));
    model.save_changes();
  });
  topN.addEventListener("keydown", (ev) => ev.stopPropagation());
  topN.addEventListener("change", () => {
    const n = Math.max(0, Math.floor(Number(topN.value) || 0));
    model.set("top_n", n);
    model.save_changes();
  });

  // one redraw after all keys of a kernel update arrived (lib/redraw.js)
  const changes = onModelChanges(model, ["shown", "rows", "found", "top_n"], (c) => {
    if (c.has("top_n")) topN.value = String(model.get("top_n"));
    // (an answer to an older click while a newer one is on screen from the cache is not drawn)
    if (c.has("shown") || c.has("rows")) { if (sel.kernelUpdate()) draw(); } else drawFound();
  });
  draw();
  // a deferred first head (the explorer's panel, a 50k vocabulary): the kernel scans it now that the
  // view is on the page; its answer prefetches the neighbours (sel.kernelUpdate), not (0, 0)'s
  if (!model.get("deferred")) sel.start();
  const offTheme = onThemeChange(() => draw(sel.fromCache ? "cache" : "kernel"));
  return cleanup(computing, offTheme, changes, grid, msg, sel);
}

export default { render };
