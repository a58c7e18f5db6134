// The stale-redraw family (marimo applies a kernel update key by key and fires each event at once):
// a view must draw once, after every key of the update has arrived.
import { test } from "node:test";
import assert from "node:assert/strict";
import { onModelChanges } from "../src/lib/redraw.js";
import { FakeModel, tick } from "./fakes.js";

// the kernel's update for a new head lists `shown` before the data (as CircuitWidget sends it)
const UPDATE = { shown: { layer: 1, head: 2 }, pattern: "pattern of L1H2", title: "L1H2" };

function view(model) {
  const draws = [];
  const changes = onModelChanges(model, ["shown", "pattern", "title"], (changed) => {
    draws.push({ shown: model.get("shown"), pattern: model.get("pattern"), changed: [...changed].sort() });
  });
  return { draws, changes };
}

for (const how of ["applyOneByOne", "applyAllThenFire"]) {
  test(`${how}: one redraw, with the new head's data under the new head's title`, async () => {
    const model = new FakeModel({ shown: { layer: 0, head: 0 }, pattern: "pattern of L0H0", title: "L0H0" });
    const { draws } = view(model);
    model[how](UPDATE);
    assert.equal(draws.length, 0, "nothing is drawn while the update is being applied");
    await tick();
    assert.equal(draws.length, 1);
    assert.deepEqual(draws[0], { shown: { layer: 1, head: 2 }, pattern: "pattern of L1H2", changed: ["pattern", "shown", "title"] });
  });
}

test("two updates in two tasks draw twice; keys of one burst are reported together", async () => {
  const model = new FakeModel({ shown: {}, pattern: "" });
  const { draws } = view(model);
  model.applyOneByOne({ pattern: "a" });
  await tick();
  model.applyOneByOne({ shown: { layer: 0, head: 1 } });
  await tick();
  assert.deepEqual(draws.map((d) => d.changed), [["pattern"], ["shown"]]);
});

test("off() removes the listeners and drops a pending redraw; flush() draws now", async () => {
  const model = new FakeModel({});
  const { draws, changes } = view(model);
  model.applyOneByOne({ pattern: "x" });
  changes.flush();
  assert.equal(draws.length, 1);
  await tick();
  assert.equal(draws.length, 1, "the flushed burst is not drawn again");
  model.applyOneByOne({ pattern: "y" });
  changes.off();
  await tick();
  assert.equal(draws.length, 1);
  assert.equal(model.count("change:pattern"), 0);
});

test("keys the view does not listen to never trigger a redraw", async () => {
  const model = new FakeModel({});
  const { draws } = view(model);
  model.applyOneByOne({ layer: 3, head: 1 });
  await tick();
  assert.equal(draws.length, 0);
});
