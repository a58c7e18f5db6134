import { test } from "node:test";
import assert from "node:assert/strict";
import { HeadCache, cachedSelection, headKey, headPayloadCache, neighbours, payloadBytes, putBuffers } from "../src/lib/headcache.js";
import { PatternImages, imageKey, prepareImage } from "../src/lib/pattern.js";

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

test("cachedSelection: a cached click draws at once from the cache; an older answer does not replace it", () => {
  const traits = { n_layers: 2, n_heads: 2, layer: 0, head: 0, shown: { layer: 0, head: 0, variant: [], version: 0 }, eigs: { a: 1 } };
  const m = fakeModel(traits);
  const drawn = [];
  const sel = cachedSelection(m, ["eigs"], (source) => drawn.push([source, sel.get("shown").head, sel.get("eigs").a]));
  sel.start(); // remembers L0H0, asks for its neighbours
  assert.deepEqual(m.sent, [{ type: "prefetch", heads: [[0, 1], [1, 0]] }]);
  m.emit("msg:custom", { type: "payload", shown: { layer: 0, head: 1, variant: [], version: 0 }, values: { eigs: { a: 2 } }, buffer_paths: [] }, []);
  // a click on the prefetched L0H1: drawn from the cache, before the kernel answers
  traits.head = 1;
  assert.equal(sel.request(0, 1), true);
  assert.deepEqual(drawn, [["cache", 1, 2]]);
  assert.equal(sel.fromCache, true);
  assert.equal(sel.request(1, 1), false); // not received: the caller shows "computing"
  // then a click back on L0H0 (cached) while the kernel still answers the L0H1 click
  traits.head = 0;
  sel.request(0, 0);
  traits.shown = { layer: 0, head: 1, variant: [], version: 0 }; traits.eigs = { a: 2 };
  assert.equal(sel.kernelUpdate(), false); // the older answer: the newer click stays on screen
  assert.equal(sel.get("eigs").a, 1);
  traits.shown = { layer: 0, head: 0, variant: [], version: 0 }; traits.eigs = { a: 1 };
  assert.equal(sel.kernelUpdate(), true); // the answer to the click on screen: the kernel's data from now on
  assert.equal(sel.fromCache, false);
  sel.off();
});

test("PatternImages: keyed by payload, scale and theme; bounded by bytes; entries keep their sample", () => {
  const th = { rgb: { bg: [255, 255, 255], bg2: [240, 240, 240] } };
  const k1 = imageKey("[[],0,0,0]", "linear", th);
  assert.notEqual(k1, imageKey("[[],0,0,0]", "log", th));
  assert.notEqual(k1, imageKey("[[],0,0,0]", "linear", { rgb: { ...th.rgb, bg: [0, 0, 0] } }));
  const im = new PatternImages({ maxEntries: 10, maxBytes: 3 * (4 * 16 + 4 * 10) });
  for (let i = 0; i < 5; i++) im.put(`k${i}`, { A: new Float32Array(10), N: 4, packed: true, vmax: 1 });
  assert.equal(im.size, 3);
  assert.deepEqual([...im.map.keys()], ["k2", "k3", "k4"]);
  assert.ok(im.get("k2"));
  im.put("k5", { A: new Float32Array(10), N: 4 });
  assert.deepEqual([...im.map.keys()], ["k4", "k2", "k5"]); // k2 was used: k3 went first
  assert.equal(im.put("huge", { A: new Float32Array(1000), N: 100 }), false);
  const e = { A: new Float32Array(1), N: 1 };
  assert.equal(prepareImage(e, th).image, undefined); // no document (node): nothing painted, nothing thrown
});
