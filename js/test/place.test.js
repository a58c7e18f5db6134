import { test } from "node:test";
import assert from "node:assert/strict";
import { placeLabel, circleLabelCandidates } from "../src/lib/place.js";

test("the label goes where no point is", () => {
  const area = { w: 200, h: 200 };
  // points crowd the upper right of the unit circle (centre 100,100, r 40)
  const pts = [];
  for (let k = 0; k < 40; k++) pts.push([100 + 30 + (k % 8) * 4, 100 - 30 - Math.floor(k / 8) * 4]);
  const cands = circleLabelCandidates(100, 100, 40, 30, 10, area);
  const p = placeLabel(pts, cands, 30, 10, area);
  assert.ok(p.clearance > 10, `clearance ${p.clearance}`);
  for (const [x, y] of pts) assert.ok(!(x >= p.x && x <= p.x + 30 && y >= p.y && y <= p.y + 10));
});

test("boxes outside the area are skipped; no candidate gives a corner", () => {
  const p = placeLabel([[5, 5]], [{ x: -10, y: 0 }, { x: 50, y: 50 }], 20, 10, { w: 100, h: 100 });
  assert.deepEqual([p.x, p.y], [50, 50]);
  assert.equal(placeLabel([], [], 5, 5).clearance, 0);
});
