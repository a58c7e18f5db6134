import { test } from "node:test";
import assert from "node:assert/strict";
import { computingText, pendingNote } from "../src/lib/message.js";
import { FakeModel } from "./fakes.js";

const wait = (ms) => new Promise((r) => setTimeout(r, ms));

function fakeMsg() {
  const log = [];
  return { log, note: (t) => log.push(["note", t]), show: () => log.push(["show"]) };
}

test("the computing note names the head", () => {
  assert.equal(computingText(3, 5), "computing L3H5…");
});

test("a slow head request shows the note; the drawn head settles it", async () => {
  const model = new FakeModel({ layer: 0, head: 0, shown: { layer: 0, head: 0 } });
  const msg = fakeMsg();
  const n = pendingNote(model, msg, 5);
  n.pending(1, 2);
  await wait(20);
  assert.deepEqual(msg.log, [["note", "computing L1H2…"]]);
  n.settled();
  assert.deepEqual(msg.log.at(-1), ["show"]);
  n.off();
});

test("a fast answer clears the timer before the note appears", async () => {
  const model = new FakeModel({ layer: 0, head: 0, shown: { layer: 0, head: 0 } });
  const msg = fakeMsg();
  const n = pendingNote(model, msg, 30);
  n.pending(1, 1);
  n.settled();
  await wait(50);
  assert.deepEqual(msg.log, [["show"]]);
  n.off();
});

test("a reverted request (selection back on the shown head) settles by itself", async () => {
  const model = new FakeModel({ layer: 0, head: 0, shown: { layer: 0, head: 0 } });
  const msg = fakeMsg();
  const n = pendingNote(model, msg, 30);
  model.applyOneByOne({ layer: 1 });
  n.pending(1, 0);
  model.applyOneByOne({ layer: 0 }); // the kernel refused: back to the shown head
  await wait(50);
  assert.deepEqual(msg.log, [["show"]]);
  n.off();
  assert.equal(model.count("change:layer"), 0);
});

test("a request answered before pending() is called (offline export, sync refusal) shows no note", async () => {
  // the grid calls save_changes() and then pending(): the export's shim answers inside save_changes
  const model = new FakeModel({ layer: 1, head: 2, shown: { layer: 1, head: 2 } });
  const msg = fakeMsg();
  const n = pendingNote(model, msg, 5);
  n.pending(1, 2);
  await wait(20);
  assert.deepEqual(msg.log, []);
  model.offline = true; // the export's model: never a note, whatever the selection
  model.set("head", 3);
  n.pending(1, 3);
  await wait(20);
  assert.deepEqual(msg.log, []);
  n.off();
});
