import { test } from "node:test";
import assert from "node:assert/strict";
import { cursorMove, gridMove } from "../src/lib/grid.js";

test("arrow keys move between heads and layers, clamped to the grid", () => {
  assert.deepEqual(gridMove("ArrowRight", 0, 0, 2, 4), [0, 1]);
  assert.deepEqual(gridMove("ArrowLeft", 0, 0, 2, 4), [0, 0]);
  assert.deepEqual(gridMove("ArrowDown", 0, 3, 2, 4), [1, 3]);
  assert.deepEqual(gridMove("ArrowDown", 1, 3, 2, 4), [1, 3]);
  assert.deepEqual(gridMove("ArrowUp", 1, 2, 2, 4), [0, 2]);
});

test("Home / End jump along the layer, PageUp / PageDown across layers", () => {
  assert.deepEqual(gridMove("Home", 1, 2, 3, 4), [1, 0]);
  assert.deepEqual(gridMove("End", 1, 2, 3, 4), [1, 3]);
  assert.deepEqual(gridMove("PageUp", 2, 2, 3, 4), [0, 2]);
  assert.deepEqual(gridMove("PageDown", 0, 2, 3, 4), [2, 2]);
});

test("other keys are not the grid's (JupyterLab keeps them)", () => {
  for (const k of ["Enter", " ", "a", "Tab", "Escape"]) assert.equal(gridMove(k, 0, 0, 2, 2), null);
  assert.equal(cursorMove("Enter", [0, 0], 2, 2), null);
});

test("a one-cell grid stays put", () => {
  for (const k of ["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "Home", "End", "PageUp", "PageDown"]) {
    assert.deepEqual(gridMove(k, 0, 0, 1, 1), [0, 0], k);
  }
});

test("map cursor moves by one cell, clamped", () => {
  assert.deepEqual(cursorMove("ArrowRight", [0, 0], 3, 4), [0, 1]);
  assert.deepEqual(cursorMove("ArrowDown", [2, 3], 3, 4), [2, 3]);
  assert.deepEqual(cursorMove("ArrowUp", [0, 1], 3, 4), [0, 1]);
  assert.deepEqual(cursorMove("ArrowLeft", [1, 0], 3, 4), [1, 0]);
});
