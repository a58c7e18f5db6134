import { test } from "node:test";
import assert from "node:assert/strict";
import { HeadCache, headKey, headPayloadCache, neighbours, payloadBytes, putBuffers } from "../src/lib/headcache.js";

const dv = (n) => new DataView(new ArrayBuffer(n));

test("keys include variant and version", () => {
  const a = headKey({ layer: 1, head: 2, variant: [false], version: 0 });
  assert.notEqual(a, headKey({ layer: 1, head: 2, variant: [true], version: 0 }));
  assert.notEqual(a, headKey({ layer: 1, head: 2, variant: [false], version: 1 }));
  assert.notEqual(a, headKey({ layer: 2, head: 1, variant: [false], version: 0 }));
  assert.equal(a, headKey({ head: 2, layer: 1, version: 0, variant: [false] }));
});

test("LRU by entries: the least recently used goes first; get refreshes", () => {
  const c = new HeadCache({ maxEntries: 2, maxBytes: 1e9 });
  c.put("a", { p: dv(4) }); c.put("b", { p: dv(4) });
  assert.ok(c.get("a"));
  c.put("c", { p: dv(4) });
  assert.deepEqual([...c.map.keys()], ["a", "c"]);
  assert.equal(c.get("b"), undefined);
  assert.equal(c.hits, 1); assert.equal(c.misses, 1);
});

test("bounded by bytes; an entry larger than the bound is not kept", () => {
  const c = new HeadCache({ maxEntries: 100, maxBytes: 1000 });
  for (let i = 0; i < 10; i++) c.put(`k${i}`, { pattern: { data: dv(300), shape: [10] } });
  assert.ok(c.bytes <= 1000, `${c.bytes}`);
  assert.equal(c.size, 3);
  assert.deepEqual([...c.map.keys()], ["k7", "k8", "k9"]);
  assert.equal(c.put("huge", { p: dv(2000) }), false);
  assert.equal(c.has("huge"), false);
  c.put("k9", { p: dv(10) }); // replacing an entry updates the byte count
  assert.equal(c.bytes, payloadBytes({ pattern: { data: dv(300), shape: [10] } }) * 2 + 10);
});

test("buffers go back to their paths; neighbours stay in the grid", () => {
  const o = putBuffers({ pattern: { shape: [2] } }, [["pattern", "data"]], [new Uint8Array([1, 2, 3]).buffer]);
  assert.ok(o.pattern.data instanceof DataView);
  assert.equal(o.pattern.data.getUint8(2), 3);
  assert.deepEqual(neighbours(0, 0, 2, 3), [[0, 1], [1, 0]]);
  assert.deepEqual(neighbours(1, 1, 3, 3).length, 4);
  assert.deepEqual(neighbours(0, 0, 1, 1), []);
});

function fakeModel(traits) {
  const handlers = {}, sent = [];
  return {
    sent,
    get: (k) => traits[k],
    on: (ev, cb) => { (handlers[ev] ||= []).push(cb); },
    off: (ev, cb) => { handlers[ev] = (handlers[ev] || []).filter((f) => f !== cb); },
    send: (msg) => sent.push(msg),
    emit: (ev, ...a) => (handlers[ev] || []).forEach((f) => f(...a)),
  };
}

test("view wiring: remember, prefetch once, answers fill the cache, lookup uses the current variant", () => {
  const traits = { n_layers: 2, n_heads: 2, shown: { layer: 0, head: 0, variant: [false], version: 3 }, pattern: { data: dv(8) } };
  const m = fakeModel(traits);
  const hc = headPayloadCache(m, ["pattern"]);
  hc.remember();
  assert.ok(hc.lookup(0, 0));
  assert.equal(hc.lookup(0, 1), null);
  hc.prefetch(0, 0);
  hc.prefetch(0, 0); // asked already: no second request
  assert.deepEqual(m.sent, [{ type: "prefetch", heads: [[0, 1], [1, 0]] }]);
  m.emit("msg:custom", { type: "payload", shown: { layer: 0, head: 1, variant: [false], version: 3 }, values: { pattern: { shape: [1] } }, buffer_paths: [["pattern", "data"]] }, [dv(8)]);
  const hit = hc.lookup(0, 1);
  assert.ok(hit && hit.values.pattern.data instanceof DataView);
  assert.deepEqual(hit.shown, { layer: 0, head: 1, variant: [false], version: 3 });
  // a new input (version 4): nothing old is used
  traits.shown = { layer: 0, head: 0, variant: [false], version: 4 };
  assert.equal(hc.lookup(0, 1), null);
  m.emit("msg:custom", { type: "other" }, []);
  hc.off();
  m.emit("msg:custom", { type: "payload", shown: { layer: 1, head: 1, variant: [false], version: 4 }, values: {}, buffer_paths: [] }, []);
  assert.equal(hc.lookup(1, 1), null);
});
