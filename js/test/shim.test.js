// The offline export's model shim: replays recorded kernel states as the kernel would send them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ShimModel, bootPage, canon, decode } from "../src/lib/shim.js";
import { tick } from "./fakes.js";

function pageData() {
  // two recorded states of one view, keyed by its inputs (layer, head); values stored once by hash
  const key = (l, h) => canon({ layer: l, head: h });
  return {
    link: true,
    values: { l0: 0, l1: 1, h0: 0, pa: "A", pb: "B", s0: { layer: 0, head: 0 }, s1: { layer: 1, head: 0 },
      bytes: { __cw_b64__: Buffer.from([1, 2, 3]).toString("base64") } },
    widgets: [0, 1].map(() => ({
      module: "view", inputs: ["layer", "head"], start: key(0, 0),
      states: {
        [key(0, 0)]: { layer: "l0", head: "h0", pattern: "pa", shown: "s0", data: "bytes" },
        [key(1, 0)]: { layer: "l1", head: "h0", pattern: "pb", shown: "s1", data: "bytes" },
      },
    })),
  };
}

test("bytes come back as a DataView", () => {
  const dv = decode({ x: [{ __cw_b64__: Buffer.from([7, 8]).toString("base64") }] }).x[0];
  assert.ok(dv instanceof DataView);
  assert.deepEqual([dv.getUint8(0), dv.getUint8(1)], [7, 8]);
  assert.equal(canon({ b: 1, a: [2, { d: 1, c: 0 }] }), '{"a":[2,{"c":0,"d":1}],"b":1}');
});

test("a recorded state is applied whole, then its change events fire", async () => {
  const data = pageData(), views = [];
  const modules = { view: { render: ({ model }) => views.push(model) } };
  const page = bootPage(data, modules, () => null);
  const [a, b] = views;
  assert.ok(a instanceof ShimModel);
  const seen = [];
  a.on("change:shown", () => seen.push([a.get("shown").layer, a.get("pattern")])); // data already there
  a.set("layer", 1);
  a.save_changes();
  assert.deepEqual(seen, [[1, "B"]]);
  assert.deepEqual(page.log[0], { widget: 0, key: canon({ layer: 1, head: 0 }), found: true });
  await tick();
  assert.equal(b.get("layer"), 1, "the linked view follows the selection");
  assert.equal(b.get("pattern"), "B");
});

test("a state that was not exported restores the inputs and says so", () => {
  const views = [];
  bootPage(pageData(), { view: { render: ({ model }) => views.push(model) } }, () => null);
  const a = views[0];
  const changed = [];
  a.on("change:error", () => changed.push("error"));
  a.on("change:head", () => changed.push("head"));
  a.set("head", 5);
  a.save_changes();
  assert.equal(a.get("head"), 0);
  assert.match(a.get("error"), /not exported/);
  assert.deepEqual(changed.sort(), ["error", "head"]);
});

test("a selection the kernel answered by also moving another input finds that recorded state", () => {
  // composition-like view: inputs pair + layer + head; selecting (1, 1) made the kernel move the pair
  const key = (p, l, h) => canon({ pair: p, layer: l, head: h });
  const data = {
    link: false,
    values: { p0: [0, 0, 1, 0], p1: [0, 2, 1, 1], p2: [0, 3, 1, 1], l0: 0, l1: 1, h0: 0, h1: 1, d0: "D0", d1: "D1", d2: "D2" },
    widgets: [{
      module: "view", inputs: ["pair", "layer", "head"], start: key([0, 0, 1, 0], 1, 0),
      states: {
        [key([0, 0, 1, 0], 1, 0)]: { pair: "p0", layer: "l1", head: "h0", details: "d0" },
        [key([0, 2, 1, 1], 1, 1)]: { pair: "p1", layer: "l1", head: "h1", details: "d1" },
        [key([0, 3, 1, 1], 0, 1)]: { pair: "p2", layer: "l0", head: "h1", details: "d2" },
      },
    }],
  };
  const views = [];
  bootPage(data, { view: { render: ({ model }) => views.push(model) } }, () => null);
  const [m] = views;
  m.set("head", 1);
  m.save_changes();  // no state {pair p0, layer 1, head 1}: the one with layer 1, head 1 is used
  assert.deepEqual([m.get("pair"), m.get("layer"), m.get("head"), m.get("details")], [[0, 2, 1, 1], 1, 1, "D1"]);
  assert.equal(m.get("error"), undefined);
  m.set("layer", 5);
  m.save_changes();  // nothing recorded for layer 5: the message, and the last good state back
  assert.equal(m.get("layer"), 1);
  assert.match(m.get("error"), /not exported/);
});

test("offline: the shim says so, and a refused click leaves no computing note behind", async () => {
  const { pendingNote } = await import("../src/lib/message.js");
  const views = [];
  bootPage(pageData(), { view: { render: ({ model }) => views.push(model) } }, () => null);
  const a = views[0];
  assert.equal(a.offline, true);
  const log = [];
  const n = pendingNote(a, { note: (t) => log.push(t), show: () => log.push("show") }, 5);
  a.set("layer", 1); a.set("head", 1); // a head whose state was not exported
  a.save_changes();
  n.pending(1, 1); // what the grid does after save_changes
  await new Promise((r) => setTimeout(r, 30));
  assert.ok(!log.some((t) => /computing/.test(t)), log);
  assert.match(a.get("error"), /not exported.*needs a live kernel/);
  n.off();
});
