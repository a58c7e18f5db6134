import { test } from "node:test";
import assert from "node:assert/strict";
import { publishDrawn, sampleCells, sampleGrid, samplePattern, sig } from "../src/lib/digest.js";

test("sig rounds to significant digits and maps non-finite to null", () => {
  assert.equal(sig(0.123456789, 4), 0.1235);
  assert.equal(sig(-1234.5678, 3), -1230);
  assert.equal(sig(0), 0);
  assert.equal(sig(NaN), null);
  assert.equal(sig(Infinity), null);
  assert.equal(sig(null), null); // a value the kernel sent as null is not a 0
  assert.equal(sig(undefined), null);
});

test("sampled cells are causal, distinct and cover first, middle and last rows", () => {
  for (const N of [1, 2, 3, 7, 20, 200]) {
    const c = sampleCells(N);
    assert.ok(c.length >= 1);
    assert.ok(c.every(([i, j]) => j <= i && i < N && j >= 0));
    assert.equal(new Set(c.map((x) => x.join())).size, c.length);
    assert.ok(c.some(([i]) => i === N - 1));
  }
  assert.deepEqual(sampleCells(0), []);
});

test("packed and dense patterns give the same sample; the sample reads the given array", () => {
  const N = 3;
  const dense = new Float32Array([1, 0, 0, 0.5, 0.5, 0, 0.2, 0.3, 0.5]);
  const packed = new Float32Array([1, 0.5, 0.5, 0.2, 0.3, 0.5]);
  assert.deepEqual(samplePattern(dense, N), samplePattern(packed, N, true));
  const s = samplePattern(dense, N);
  for (const [i, j, v] of s) assert.equal(v, sig(dense[i * N + j]));
  const other = new Float32Array(dense).map((x) => 1 - x);
  assert.notDeepEqual(samplePattern(other, N), s); // a different painted array, a different digest
});

test("grid sample lists in-range cells with their values", () => {
  const vals = Float32Array.from({ length: 12 }, (_, k) => k / 10);
  const s = sampleGrid(vals, 3, 4);
  assert.ok(s.some(([r, c]) => r === 2 && c === 3));
  for (const [r, c, v] of s) assert.equal(v, sig(vals[r * 4 + c]));
});

test("publishDrawn writes JSON to data-drawn", () => {
  const el = { dataset: {} };
  publishDrawn(el, { a: 1, b: [sig(0.5)] });
  assert.deepEqual(JSON.parse(el.dataset.drawn), { a: 1, b: [0.5] });
  for (let k = 0; k < 70; k++) publishDrawn(el, { k });
  assert.equal(el.cwDrawnLog.length, 64);
  assert.deepEqual(JSON.parse(el.cwDrawnLog.at(-1)), { k: 69 });
});
