// What a view actually painted, published on its root element as `data-drawn` (JSON), for tests.
//
// The digest is computed inside the draw functions from the very arrays handed to the painters
// (the pattern given to the canvas, the eigenvalues plotted, the rows rendered), never from the
// `shown` trait: a view that paints the previous head's data under the new head's title publishes
// the previous head's numbers, and the browser tests compare them with the kernel's.

/** A number rounded to `d` significant digits (null when not finite: JSON has no NaN). */
export function sig(x, d = 5) {
  if (x === null || x === undefined) return null; // (Number(null) is 0: a missing value is not a zero)
  const v = Number(x);
  if (!Number.isFinite(v)) return null;
  return v === 0 ? 0 : Number(v.toPrecision(d));
}

/** Deterministic cells [query, key] (key <= query) of an N-token causal pattern: a few rows spread
 * over the sequence, in each the first key, a middle key and the diagonal. */
export function sampleCells(N) {
  const out = [], seen = new Set();
  if (N <= 0) return out;
  for (const i of [N - 1, Math.floor((2 * N) / 3), Math.floor(N / 3), Math.min(5, N - 1)]) {
    for (const j of [0, Math.floor(i / 2), Math.max(i - 1, 0), i]) {
      const k = `${i},${j}`;
      if (!seen.has(k)) { seen.add(k); out.push([i, j]); }
    }
  }
  return out;
}

/** Sampled values [query, key, value] of a causal pattern `A` (row-major N x N, or the packed lower
 * triangle when `packed`) — the array that is painted. */
export function samplePattern(A, N, packed = false) {
  return sampleCells(N).map(([i, j]) => [i, j, sig(packed ? A[(i * (i + 1)) / 2 + j] : A[i * N + j])]);
}

/** Sampled values [row, col, value] of a row-major [nr, nc] heatmap: the corners, the centre and
 * the diagonal's first cells. */
export function sampleGrid(vals, nr, nc) {
  const out = [], seen = new Set();
  const cand = [[0, 0], [0, nc - 1], [nr - 1, 0], [nr - 1, nc - 1], [nr >> 1, nc >> 1]];
  for (let k = 0; k < Math.min(nr, nc, 4); k++) cand.push([k, k]);
  for (const [r, c] of cand) {
    if (r < 0 || c < 0 || r >= nr || c >= nc || seen.has(`${r},${c}`)) continue;
    seen.add(`${r},${c}`);
    out.push([r, c, sig(vals[r * nc + c])]);
  }
  return out;
}

/** Publish `digest` (a plain JSON object) as `el.dataset.drawn`; returns it. The last 64 digests are
 * also kept in `el.cwDrawnLog` (JSON strings): a test can check every paint, not only the last one
 * (a view that briefly paints old data under a new title and then repaints is caught too). */
export function publishDrawn(el, digest) {
  el.dataset.drawn = JSON.stringify(digest);
  const log = el.cwDrawnLog || (el.cwDrawnLog = []);
  log.push(el.dataset.drawn);
  if (log.length > 64) log.shift();
  return digest;
}
