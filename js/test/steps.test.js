import assert from "node:assert/strict";
import { test } from "node:test";
import { nextPlayIndex, playStart, stepIndex, valueAt } from "../src/lib/steps.js";

test("stepIndex finds exact snapshot steps only", () => {
  const steps = [0, 50, 120, 400];
  assert.equal(stepIndex(steps, 120), 2);
  assert.equal(stepIndex(steps, 121), -1);
  assert.equal(stepIndex([], 0), -1);
});

test("play advances to the last snapshot and stops there; restarts from the first", () => {
  assert.equal(nextPlayIndex(0, 3), 1);
  assert.equal(nextPlayIndex(1, 3), 2);
  assert.equal(nextPlayIndex(2, 3), null);
  assert.equal(playStart(2, 3), 0);
  assert.equal(playStart(1, 3), 1);
  assert.equal(playStart(-1, 3), -1);
});

test("valueAt reads the last point at or before x", () => {
  const xs = [0, 100, 200, 300], ys = [4, 3, NaN, 1];
  assert.equal(valueAt(xs, ys, 0), 4);
  assert.equal(valueAt(xs, ys, 150), 3);
  assert.equal(valueAt(xs, ys, 250), null); // a non-finite value is not a value
  assert.equal(valueAt(xs, ys, 1000), 1);
  assert.equal(valueAt(xs, ys, -1), null);
  assert.equal(valueAt([], [], 5), null);
});
