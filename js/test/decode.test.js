// Decoding against values encoded by the Python side (fixtures/encoded_arrays.json, written by
// tests/test_js_fixtures.py with circwidgets.widgets._data.encode_array / decode_array).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import {
  bytesOf, decodeArray, decodeF16, expandTril, halfToFloat, trilIndex,
} from "../src/lib/decode.js";

const fixture = JSON.parse(readFileSync(new URL("./fixtures/encoded_arrays.json", import.meta.url), "utf8"));
const num = (x) => (x === "nan" ? NaN : x === "inf" ? Infinity : x === "-inf" ? -Infinity : x);

/** A DataView over the bytes at an odd offset of a bigger buffer, as a bytes trait can arrive. */
function unalignedView(b64) {
  const raw = Buffer.from(b64, "base64");
  const buf = new ArrayBuffer(raw.length + 3);
  new Uint8Array(buf, 3).set(raw);
  return new DataView(buf, 3, raw.length);
}

function payload(c) {
  return { dtype: c.dtype, shape: c.shape, layout: c.layout, lo: num(c.lo), hi: num(c.hi), data: unalignedView(c.data_b64) };
}

test("the fixture covers every dtype and layout the Python side sends", () => {
  const kinds = new Set(fixture.cases.map((c) => `${c.dtype}/${c.layout}`));
  for (const k of ["float16/dense", "float32/dense", "int32/dense", "uint8/dense", "float16/tril", "float32/tril"]) {
    assert.ok(kinds.has(k), k);
  }
});

for (const c of fixture.cases) {
  test(`decodes ${c.name} as the Python decoder does`, () => {
    const got = decodeArray(payload(c));
    const want = c.expected.map(num);
    assert.equal(got.length, want.length);
    for (let i = 0; i < want.length; i++) {
      const g = got[i], w = want[i];
      if (Number.isNaN(w)) assert.ok(Number.isNaN(g), `${i}: ${g}`);
      else if (c.dtype === "uint8") assert.ok(Math.abs(g - w) <= 1e-6 * Math.max(1, Math.abs(w)), `${i}: ${g} vs ${w}`);
      else assert.ok(Object.is(g, Math.fround(w)) || g === w, `${i}: ${g} vs ${w}`); // exact (-0 kept)
    }
  });
}

test("a tril payload can stay packed: row i starts at i(i+1)/2", () => {
  const c = fixture.cases.find((x) => x.layout === "tril" && x.dtype === "float32" && x.shape[0] > 1);
  const n = c.shape[0];
  const packed = decodeArray(payload(c), { keepPacked: true });
  const full = decodeArray(payload(c));
  assert.equal(packed.length, (n * (n + 1)) / 2);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) assert.equal(full[i * n + j], j > i ? 0 : packed[trilIndex(i, j)]);
  }
  assert.deepEqual(Array.from(expandTril(packed, n)), Array.from(full));
});

test("half floats: every bit pattern's value", () => {
  assert.equal(halfToFloat(0x3c00), 1);
  assert.equal(halfToFloat(0xc000), -2);
  assert.equal(halfToFloat(0x7bff), 65504);
  assert.equal(halfToFloat(0x0001), 2 ** -24); // smallest subnormal
  assert.equal(halfToFloat(0x0400), 2 ** -14); // smallest normal
  assert.ok(Object.is(halfToFloat(0x8000), -0));
  assert.equal(halfToFloat(0x7c00), Infinity);
  assert.ok(Number.isNaN(halfToFloat(0x7e00)));
  const all = new Uint16Array(65536).map((_, i) => i);
  const dec = decodeF16(new DataView(all.buffer));
  for (let i = 0; i < 65536; i += 97) assert.ok(Object.is(dec[i], Math.fround(halfToFloat(i))), String(i));
});

test("missing or empty payloads decode to an empty array; bytesOf copies", () => {
  assert.equal(decodeArray(undefined).length, 0);
  assert.equal(decodeArray({}).length, 0);
  const src = new Uint8Array([1, 2, 3, 4]);
  const copy = bytesOf(new DataView(src.buffer, 1, 2));
  assert.deepEqual(Array.from(new Uint8Array(copy)), [2, 3]);
  src[1] = 9;
  assert.deepEqual(Array.from(new Uint8Array(copy)), [2, 3]);
});
