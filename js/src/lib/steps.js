// Pure helpers of the history view's step slider and play button (unit-tested in test/steps.test.js).

/** Index of `step` in the snapshot steps (ascending), -1 when it is not one of them. */
export function stepIndex(steps, step) {
  return steps.indexOf(step);
}

/** The snapshot index the play button shows after `i` (of `n`): the next one, or null at the end. */
export function nextPlayIndex(i, n) {
  return i + 1 < n ? i + 1 : null;
}

/** Where play starts from index `i` (of `n`): from the first snapshot when `i` is the last one. */
export function playStart(i, n) {
  return i >= n - 1 ? 0 : i;
}

/** The value of a curve (xs ascending, ys) at `x`: the last point at or before `x` (null before the
 * first point or when that value is not finite). */
export function valueAt(xs, ys, x) {
  let k = -1;
  for (let i = 0; i < xs.length && xs[i] <= x; i++) k = i;
  if (k < 0) return null;
  const v = ys[k];
  return Number.isFinite(v) ? v : null;
}
