// The layer x head grid every view shares, and the keyboard logic of grids (pure, testable).
import { h } from "./dom.js";

const GRID_KEYS = {
  ArrowLeft: (l, hd) => [l, hd - 1], ArrowRight: (l, hd) => [l, hd + 1],
  ArrowUp: (l, hd) => [l - 1, hd], ArrowDown: (l, hd) => [l + 1, hd],
  Home: (l) => [l, 0], End: (l, hd, nL, nH) => [l, nH - 1],
  PageUp: (l, hd) => [0, hd], PageDown: (l, hd, nL) => [nL - 1, hd],
};

/** Where a key moves the selection of an nL x nH head grid from (l, hd): ←/→ heads, ↑/↓ layers,
 * Home/End first/last head, PageUp/PageDown first/last layer, clamped to the grid; null for any
 * other key. */
export function gridMove(key, l, hd, nL, nH) {
  const f = GRID_KEYS[key];
  if (!f) return null;
  const [a, b] = f(l, hd, nL, nH);
  return [clamp(a, 0, nL - 1), clamp(b, 0, nH - 1)];
}

/** Where an arrow key moves a cell cursor [r, c] in an nr x nc map (clamped); null for other keys. */
export function cursorMove(key, cursor, nr, nc) {
  const mv = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] }[key];
  if (!mv) return null;
  return [clamp(cursor[0] + mv[0], 0, nr - 1), clamp(cursor[1] + mv[1], 0, nc - 1)];
}

function clamp(x, lo, hi) {
  return Math.max(lo, Math.min(hi, x));
}

/** Grid of layer x head buttons, each with data-layer / data-head. Clicking or pressing keys
 * (`gridMove`) sets the model's `layer` and `head` and saves.
 *
 * opts.paint(btn, layer, head) colours one cell (called on `refresh()`); opts.onRequest(l, hd)
 * is told when the page asks the kernel for another head; opts.cellWidth / cellMin size columns.
 */
export function headGrid(model, opts = {}) {
  const nL = model.get("n_layers"), nH = model.get("n_heads");
  const root = h("div", { cls: "cw-grid", attrs: { role: "grid", "aria-label": opts.label || "layers and heads" } });
  // fixed-width columns when asked (thumbnails), else columns that share the width
  root.style.gridTemplateColumns = opts.cellWidth
    ? `auto repeat(${nH}, ${opts.cellWidth}px)`
    : `auto repeat(${nH}, minmax(${opts.cellMin || 26}px, 1fr))`;
  root.append(h("div", { cls: "cw-grid-corner", text: "" }));
  for (let hd = 0; hd < nH; hd++) root.append(h("div", { cls: "cw-grid-colhead", text: `H${hd}` }));
  const cells = [];
  for (let l = 0; l < nL; l++) {
    root.append(h("div", { cls: "cw-grid-rowhead", text: `L${l}` }));
    const row = [];
    for (let hd = 0; hd < nH; hd++) {
      const b = h("button", {
        cls: "cw-cell", data: { layer: l, head: hd },
        attrs: { type: "button", role: "gridcell", tabindex: "-1", "aria-label": `layer ${l} head ${hd}` },
      });
      b.addEventListener("click", () => select(l, hd, true));
      row.push(b);
      root.append(b);
    }
    cells.push(row);
  }
  function select(l, hd, focus) {
    l = clamp(l, 0, nL - 1);
    hd = clamp(hd, 0, nH - 1);
    if (focus) cells[l][hd].focus({ preventScroll: true });
    if (model.get("layer") !== l || model.get("head") !== hd) {
      model.set("layer", l);
      model.set("head", hd);
      model.save_changes();
      if (opts.onRequest) opts.onRequest(l, hd);
    }
    mark();
  }
  function mark() {
    const l = model.get("layer"), hd = model.get("head");
    for (let i = 0; i < nL; i++) {
      for (let j = 0; j < nH; j++) {
        const on = i === l && j === hd;
        cells[i][j].classList.toggle("cw-selected", on);
        cells[i][j].setAttribute("aria-selected", on ? "true" : "false");
        cells[i][j].tabIndex = on ? 0 : -1;
      }
    }
  }
  root.addEventListener("keydown", (ev) => {
    const m = gridMove(ev.key, model.get("layer"), model.get("head"), nL, nH);
    if (!m) return;
    ev.preventDefault();
    ev.stopPropagation(); // keep JupyterLab's notebook shortcuts out of it
    select(m[0], m[1], true);
  });
  const refresh = () => {
    if (opts.paint) for (let i = 0; i < nL; i++) for (let j = 0; j < nH; j++) opts.paint(cells[i][j], i, j);
    mark();
  };
  model.on("change:layer", mark);
  model.on("change:head", mark);
  refresh();
  return {
    el: root, cells, refresh, select,
    off: () => { model.off("change:layer", mark); model.off("change:head", mark); },
  };
}
