import { test } from "node:test";
import assert from "node:assert/strict";
import { colourTable, maxOf, patternGeometry, patternPixels, pixelWord } from "../src/lib/pattern.js";

const TH = { rgb: { bg: [255, 255, 255], bg2: [238, 238, 238], accent: [0, 0, 200] } };

test("pixel words are RGBA bytes of a little-endian Uint32", () => {
  const w = new Uint32Array([pixelWord([1, 2, 3])]);
  assert.deepEqual(Array.from(new Uint8Array(w.buffer)), [1, 2, 3, 255]);
});

test("the colour table runs from background (weight 0) to accent (weight 1)", () => {
  const lut = colourTable(TH, "linear", 11);
  assert.equal(lut[0], pixelWord(TH.rgb.bg));
  assert.equal(lut[10], pixelWord(TH.rgb.accent));
  const sq = colourTable(TH, "sqrt", 5);
  assert.equal(sq[1], pixelWord([255 - 255 * 0.5, 255 - 255 * 0.5, 255 - 55 * 0.5])); // sqrt(0.25) = 0.5
});

test("packed and dense causal patterns give the same pixels; masked above the diagonal", () => {
  const N = 3, lut = colourTable(TH, "linear", 101), mask = pixelWord(TH.rgb.bg2);
  const dense = new Float32Array([1, 0, 0, 0.5, 0.5, 0, 0.2, 0.3, 0.5]);
  const packed = new Float32Array([1, 0.5, 0.5, 0.2, 0.3, 0.5]);
  const a = patternPixels(dense, N, { lut, maskWord: mask });
  const b = patternPixels(packed, N, { packed: true, lut, maskWord: mask });
  assert.deepEqual(Array.from(a), Array.from(b));
  assert.equal(a[0 * N + 1], mask);
  assert.equal(a[1 * N + 2], mask);
  assert.equal(a[0], lut[100]);
  assert.equal(a[3], lut[50]);
  assert.equal(a[6], lut[20]);
});

test("vmax rescales (value-weighted patterns), out-of-range weights clamp", () => {
  const lut = colourTable(TH, "linear", 101), mask = 0;
  const px = patternPixels(new Float32Array([2, -1, 4]), 2, { packed: true, vmax: 4, lut, maskWord: mask });
  assert.deepEqual([px[0], px[2], px[3]], [lut[50], lut[0], lut[100]]);
  const over = patternPixels(new Float32Array([7]), 1, { vmax: 1, lut, maskWord: mask });
  assert.equal(over[0], lut[100]);
});

test("geometry: whole pixels per token while they fit, labels up to labelMax tokens", () => {
  assert.deepEqual(patternGeometry(10), { ml: 84, mt: 84, S: 280, N: 10, withLabels: true });
  assert.equal(patternGeometry(20).S, 280);
  assert.equal(patternGeometry(64).S, 512);
  const long = patternGeometry(1024);
  assert.equal(long.S, 520);
  assert.equal(long.withLabels, false);
  assert.equal(long.ml, 4);
  assert.equal(patternGeometry(2).S, 160); // never smaller than minPx
  assert.equal(patternGeometry(128).S, 512); // 4 px per token: readable (was 160)
  assert.equal(patternGeometry(1024, { maxPx: 4 * 520 }).S, 2048); // zoomed 4x: 2 px per token
  assert.equal(patternGeometry(1024, { maxPx: 300 }).S, 300); // a narrow output area
  const small = patternGeometry(20, { maxPx: 220, minPx: 120, labelMax: 40, margin: 56 });
  assert.deepEqual([small.S, small.ml, small.withLabels], [220, 56, true]);
  assert.equal(patternGeometry(0).withLabels, false);
});

test("maxOf", () => {
  assert.equal(maxOf(new Float32Array([0.1, 0.7, 0.3])), Math.fround(0.7));
  assert.equal(maxOf([]), 0);
  assert.equal(maxOf([-1, -2]), 0);
});
