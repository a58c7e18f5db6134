// Decoding of the arrays the Python side sends (`circwidgets.widgets._data.encode_array`):
// {dtype, shape, layout, data, lo, hi}, where `data` arrives as a DataView (a bytes trait).
// Pure: runs in the browser and under node's test runner alike.

/** Copy the bytes of a DataView (what a bytes trait becomes in JS) into a fresh ArrayBuffer,
 * so that typed arrays over it are always aligned. */
export function bytesOf(dv) {
  if (!dv) return new ArrayBuffer(0);
  if (dv instanceof ArrayBuffer) return dv.slice(0);
  return dv.buffer.slice(dv.byteOffset, dv.byteOffset + dv.byteLength);
}

export function decodeF32(dv) {
  return new Float32Array(bytesOf(dv));
}

export function decodeI32(dv) {
  return new Int32Array(bytesOf(dv));
}

/** The float value of one IEEE-754 half-precision bit pattern (0..65535). */
export function halfToFloat(bits) {
  const s = bits & 0x8000 ? -1 : 1, e = (bits >> 10) & 0x1f, f = bits & 0x3ff;
  if (e === 0) return s * f * 2 ** -24; // zero and subnormals
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

let f16table = null;
/** float16 bit patterns (sent as little-endian uint16) -> Float32Array, through a 65,536-entry table. */
export function decodeF16(dv) {
  if (!f16table) {
    f16table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) f16table[i] = halfToFloat(i);
  }
  const u = new Uint16Array(bytesOf(dv));
  const out = new Float32Array(u.length);
  for (let i = 0; i < u.length; i++) out[i] = f16table[u[i]];
  return out;
}

/** uint8 quantised values -> Float32Array: lo + q / 255 * (hi - lo). */
export function decodeU8(dv, lo = 0, hi = 1) {
  const u = new Uint8Array(bytesOf(dv));
  const out = new Float32Array(u.length);
  const s = (hi - lo) / 255;
  for (let i = 0; i < u.length; i++) out[i] = lo + u[i] * s;
  return out;
}

/** Expand the lower triangle of an n x n matrix, stored row by row (n(n+1)/2 values), to the
 * full row-major matrix with zeros above the diagonal. */
export function expandTril(packed, n) {
  const full = new Float32Array(n * n);
  for (let i = 0, o = 0; i < n; i++) {
    full.set(packed.subarray(o, o + i + 1), i * n);
    o += i + 1;
  }
  return full;
}

/** Index of (row i, column j <= i) in a lower triangle stored row by row. */
export function trilIndex(i, j) {
  return (i * (i + 1)) / 2 + j;
}

/** Decode an array payload to a flat Float32Array (Int32Array for int32), row-major.
 * layout "tril" is expanded to the full matrix unless `keepPacked` (then the packed triangle). */
export function decodeArray(p, { keepPacked = false } = {}) {
  if (!p || !p.data) return new Float32Array(0);
  let a;
  if (p.dtype === "float16") a = decodeF16(p.data);
  else if (p.dtype === "uint8") a = decodeU8(p.data, p.lo, p.hi);
  else if (p.dtype === "int32") a = decodeI32(p.data);
  else a = decodeF32(p.data);
  if (p.layout === "tril" && !keepPacked) return expandTril(a, p.shape[0]);
  return a;
}
