// The one attention-pattern renderer: the big pattern of the attention view and the small
// patterns of composition / paths (both heads of a pair, virtual heads) are drawn by
// `drawPattern`. A causal pattern [query, key] is drawn one pixel per (query, key) into an
// offscreen image through a colour table, then scaled onto the canvas; keys after the query
// (masked) get the theme's second background colour.
import { seqColor, tone } from "./color.js";
import { samplePattern } from "./digest.js";
import { hidpi } from "./dom.js";
import { shortLabel } from "./text.js";

export const LEVELS = 4096; // colour-table levels: fine enough for the log scale's 10^-3

/** An [r, g, b] colour as one RGBA pixel word of a little-endian Uint32 view of ImageData. */
export function pixelWord(c) {
  return ((255 << 24) | (Math.round(c[2]) << 16) | (Math.round(c[1]) << 8) | Math.round(c[0])) >>> 0;
}

/** Colour table: LEVELS pixel words from weight 0 to weight 1 under the display scale. */
export function colourTable(th, scale = "linear", levels = LEVELS) {
  const f = tone(scale), lut = new Uint32Array(levels);
  for (let k = 0; k < levels; k++) lut[k] = pixelWord(seqColor(th, f(k / (levels - 1))));
  return lut;
}

/** Pixel words of an N x N causal pattern: weight A[i, j] / vmax looked up in `lut` for j <= i,
 * `maskWord` above the diagonal. `A` is row-major N x N, or the packed lower triangle when
 * `packed` (row i starts at i(i+1)/2). */
export function patternPixels(A, N, { packed = false, vmax = 1, lut, maskWord }) {
  const px = new Uint32Array(N * N), L = lut.length, s = (L - 1) / (vmax || 1);
  for (let i = 0; i < N; i++) {
    const src = packed ? (i * (i + 1)) / 2 : i * N, dst = i * N;
    for (let j = 0; j <= i; j++) {
      const q = (A[src + j] * s + 0.5) | 0;
      px[dst + j] = lut[q < 0 ? 0 : q >= L ? L - 1 : q];
    }
    px.fill(maskWord, dst + i + 1, dst + N);
  }
  return px;
}

/** Geometry of a pattern plot: side `S` (CSS px) between minPx and maxPx, whole pixels per token
 * while they fit (a long pattern gets as many whole pixels per token as maxPx allows: 128 tokens
 * at 4 px, not 1), labels when N <= labelMax (margins `margin` then, else 4). */
export function patternGeometry(N, { maxPx = 520, minPx = 160, labelMax = 64, margin = 84 } = {}) {
  const withLabels = N > 0 && N <= labelMax;
  const cell = N <= 12 ? 28 : N <= 32 ? 14 : N <= 64 ? 8 : Math.max(1, Math.floor(maxPx / N));
  const S = Math.max(minPx, Math.min(maxPx, N * cell));
  const m = withLabels ? margin : 4;
  return { ml: m, mt: m, S, N, withLabels };
}

/** The (query, key) cell under a mouse event, or null outside the plot. */
export function cellAt(canvas, geom, ev) {
  const r = canvas.getBoundingClientRect();
  const x = ev.clientX - r.left - geom.ml, y = ev.clientY - r.top - geom.mt;
  if (x < 0 || y < 0 || x >= geom.S || y >= geom.S || !geom.N) return null;
  return [Math.floor((y / geom.S) * geom.N), Math.floor((x / geom.S) * geom.N)];
}

/** Largest value of an array (0 when empty or all non-positive). */
export function maxOf(A) {
  let m = 0;
  for (let i = 0; i < A.length; i++) if (A[i] > m) m = A[i];
  return m;
}

const offscreen = typeof document === "undefined" ? null : document.createElement("canvas");

/** Paint an N x N pattern's pixels (one per (query, key), through the colour table of `scale`)
 * into `target` (a canvas, resized to N x N). */
function paintPixels(target, th, { A, N, packed = false, vmax = 1, scale = "linear" }) {
  const side = Math.max(N, 1);
  target.width = side;
  target.height = side;
  const octx = target.getContext("2d");
  const img = octx.createImageData(side, side);
  if (N) {
    const px = patternPixels(A, N, { packed, vmax, lut: colourTable(th, scale), maskWord: pixelWord(th.rgb.bg2) });
    new Uint32Array(img.data.buffer).set(px);
  }
  octx.putImageData(img, 0, 0);
  return target;
}

/**
 * The coloured pixels of patterns already drawn, per head: a click on a head whose pattern the page
 * holds only scales its image onto the canvas (no decoding, no colour lookups). An entry is
 * `{A, N, packed, vmax, image, sample}` (decoded values for the hover read-out and the digest, the
 * N x N image as a canvas); keys name the head's payload, the colour scale and the theme (`imageKey`).
 * Bounded by entries and bytes (4 bytes a pixel + the values), least recently used evicted first.
 */
export class PatternImages {
  constructor({ maxEntries = 64, maxBytes = 48 * 1024 * 1024 } = {}) {
    this.maxEntries = maxEntries;
    this.maxBytes = maxBytes;
    this.map = new Map(); // insertion order = recency (oldest first)
    this.bytes = 0;
  }

  get size() { return this.map.size; }

  get(key) {
    const e = this.map.get(key);
    if (!e) return undefined;
    this.map.delete(key);
    this.map.set(key, e);
    return e;
  }

  /** Store an entry (its `image` painted by `prepare` or `drawPattern`); one above `maxBytes` is not kept. */
  put(key, e) {
    const n = 4 * Math.max(e.N, 1) ** 2 + (e.A ? e.A.byteLength : 0);
    if (this.map.has(key)) { this.bytes -= this.map.get(key).bytes; this.map.delete(key); }
    if (n > this.maxBytes) return false;
    e.bytes = n;
    this.map.set(key, e);
    this.bytes += n;
    while (this.map.size > this.maxEntries || this.bytes > this.maxBytes) {
      const [k, old] = this.map.entries().next().value;
      this.map.delete(k);
      this.bytes -= old.bytes;
    }
    return true;
  }

  clear() { this.map.clear(); this.bytes = 0; }
}

/** Cache key of a pattern image: the payload's key (head, variant, version), the scale, the theme. */
export function imageKey(payloadKey, scale, th) {
  return `${payloadKey}|${scale}|${JSON.stringify(th.rgb)}`;
}

/** Paint an entry's image ahead of a draw (e.g. a prefetched head's, while the page is idle). */
export function prepareImage(entry, th, scale = "linear") {
  if (!entry.image && typeof document !== "undefined") {
    entry.image = paintPixels(document.createElement("canvas"), th, { ...entry, scale });
  }
  return entry;
}

/** Draw a causal pattern on `canvas`. opts: A, N, packed, vmax (colour of weight vmax = full
 * accent), scale ("linear" | "sqrt" | "log"), labels (one per position), geometry options (see
 * `patternGeometry`), marks ({rows: [query, ...]} outlined), entry (a `PatternImages` entry for these
 * values: its image is used when painted, else painted and kept in it). Returns the geometry, also
 * written to canvas.dataset (ml, mt, side, n, cell: for tests), with `sample`: sampled values of the
 * painted `A` (lib/digest.js). */
export function drawPattern(canvas, th, opts) {
  const { A, N, packed = false, vmax = 1, scale = "linear", labels = [], marks = {}, entry = null } = opts;
  const geom = patternGeometry(N, opts);
  const { ml, mt, S } = geom;
  // an entry's pixels are painted once (from the values given here), then only scaled onto the canvas
  const image = entry ? (entry.image ||= paintPixels(document.createElement("canvas"), th, { A, N, packed, vmax, scale }))
    : paintPixels(offscreen, th, { A, N, packed, vmax, scale });
  const W = ml + S + 4, H = mt + S + 4;
  const ctx = hidpi(canvas, W, H);
  ctx.fillStyle = th.css.bg;
  ctx.fillRect(0, 0, W, H);
  ctx.imageSmoothingEnabled = N > S; // average when shrinking, crisp when enlarging
  ctx.drawImage(image, ml, mt, S, S);
  ctx.strokeStyle = th.css.border;
  ctx.lineWidth = 1;
  ctx.strokeRect(ml - 0.5, mt - 0.5, S + 1, S + 1);
  if (geom.withLabels) {
    const step = S / N;
    ctx.fillStyle = th.css.fg;
    ctx.font = `${Math.min(11, Math.max(7, step - 1))}px ${th.font}`;
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    for (let i = 0; i < N; i++) ctx.fillText(shortLabel(labels[i] ?? ""), ml - 3, mt + (i + 0.5) * step, ml - 6);
    ctx.save();
    ctx.translate(ml, mt - 3);
    ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "left";
    for (let j = 0; j < N; j++) ctx.fillText(shortLabel(labels[j] ?? ""), 0, (j + 0.5) * step, mt - 6);
    ctx.restore();
  }
  if (N && (marks.rows || []).length) {
    const step = S / N, hgt = Math.max(step, 4); // marks stay visible when a row is under a pixel
    ctx.strokeStyle = th.css.select;
    ctx.lineWidth = 1.5;
    for (const r of marks.rows) ctx.strokeRect(ml + 0.75, mt + r * step + 0.75, S - 1.5, hgt - 1.5);
  }
  Object.assign(canvas.dataset, { ml, mt, side: S, n: N, cell: N ? S / N : 0 });
  geom.sample = entry ? (entry.sample ||= samplePattern(A, N, packed)) : samplePattern(A, N, packed);
  return geom;
}
