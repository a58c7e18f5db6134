// Page-side cache of per-head payloads (the data traits of one head), and background prefetch of
// the selected head's neighbours, so a click on a head already received redraws at once (< 1 frame)
// while the kernel is still told the selection (traits, as before).
//
// Keys are the kernel's `shown` dict ({layer, head, variant, version}): the variant (e.g. the
// value-weighted toggle) and the version (bumped by the kernel on every new input) are part of the
// key, so an entry is only ever used for the inputs it was computed from. Bounded by entries and by
// bytes (least recently used evicted first). The kernel answers {type: "prefetch", heads} with one
// {type: "payload", shown, values, buffer_paths} custom message per head, bytes as binary buffers
// (`CircuitWidget._on_page_message`).

/** The cache key of a head's payload: its `shown` dict (layer, head, variant, version). */
export function headKey(shown) {
  return JSON.stringify([shown.variant ?? [], shown.version ?? 0, shown.layer, shown.head]);
}

/** Bytes held by a payload (every DataView / ArrayBuffer / typed array in it, nested). */
export function payloadBytes(v) {
  if (v == null || typeof v !== "object") return typeof v === "string" ? 2 * v.length : 8;
  if (ArrayBuffer.isView(v) || v instanceof ArrayBuffer) return v.byteLength;
  let n = 0;
  for (const x of Array.isArray(v) ? v : Object.values(v)) n += payloadBytes(x);
  return n;
}

/** Put binary buffers back at their paths (ipywidgets' buffer_paths) into `obj`, in place. */
export function putBuffers(obj, paths, buffers) {
  (paths || []).forEach((path, i) => {
    let o = obj;
    for (const k of path.slice(0, -1)) o = o[k];
    const b = buffers[i];
    o[path[path.length - 1]] = b instanceof DataView ? b : ArrayBuffer.isView(b) ? new DataView(b.buffer, b.byteOffset, b.byteLength) : new DataView(b);
  });
  return obj;
}

/** Grid neighbours of (l, hd) in an nL x nH grid: same layer ±1 head, same head ±1 layer. */
export function neighbours(l, hd, nL, nH) {
  const out = [];
  for (const [a, b] of [[l, hd + 1], [l, hd - 1], [l + 1, hd], [l - 1, hd]]) {
    if (a >= 0 && a < nL && b >= 0 && b < nH) out.push([a, b]);
  }
  return out;
}

/** LRU map key -> payload, bounded by `maxEntries` and `maxBytes`. */
export class HeadCache {
  constructor({ maxEntries = 64, maxBytes = 32 * 1024 * 1024 } = {}) {
    this.maxEntries = maxEntries;
    this.maxBytes = maxBytes;
    this.map = new Map(); // insertion order = recency (oldest first)
    this.bytes = 0;
    this.hits = 0;
    this.misses = 0;
  }

  get size() { return this.map.size; }

  has(key) { return this.map.has(key); }

  /** The payload for `key` (marked most recently used), or undefined. */
  get(key) {
    const e = this.map.get(key);
    if (!e) { this.misses++; return undefined; }
    this.map.delete(key);
    this.map.set(key, e);
    this.hits++;
    return e.values;
  }

  /** Store a payload; one larger than `maxBytes` is not kept. Evicts least recently used entries. */
  put(key, values) {
    const n = payloadBytes(values);
    if (this.map.has(key)) { this.bytes -= this.map.get(key).bytes; this.map.delete(key); }
    if (n > this.maxBytes) return false;
    this.map.set(key, { values, bytes: n });
    this.bytes += n;
    while (this.map.size > this.maxEntries || this.bytes > this.maxBytes) {
      const [k, e] = this.map.entries().next().value;
      this.map.delete(k);
      this.bytes -= e.bytes;
    }
    return true;
  }

  clear() { this.map.clear(); this.bytes = 0; }
}

/**
 * Wire a view to the cache: `payloadKeys` are the traits one head's payload sets (e.g. ["pattern"]).
 * Returns {lookup(l, hd), remember(), prefetch(l, hd), off()}:
 * - `remember()` stores what the kernel just sent (current `shown` + payload traits);
 * - `lookup(l, hd)` returns {shown, values} for that head under the current variant / version, or null;
 * - `prefetch(l, hd)` asks the kernel for the neighbours not cached or asked for yet.
 * `opts.onPayload(shown, values)`: called for each prefetched payload that arrives.
 */
export function headPayloadCache(model, payloadKeys, opts = {}) {
  const cache = opts.cache || new HeadCache(opts);
  const asked = new Set();
  const shownFor = (l, hd) => {
    const s = model.get("shown") || {};
    return { layer: l, head: hd, variant: s.variant ?? [], version: s.version ?? 0 };
  };
  const onMsg = (msg, buffers) => {
    if (!msg || msg.type !== "payload" || !msg.shown) return;
    const key = headKey(msg.shown);
    asked.delete(key);
    const values = putBuffers(msg.values || {}, msg.buffer_paths, buffers || []);
    cache.put(key, values);
    if (opts.onPayload) opts.onPayload(msg.shown, values); // e.g. paint its pixels while the page is idle
  };
  model.on("msg:custom", onMsg);
  return {
    cache,
    remember() {
      const s = model.get("shown");
      if (!s || s.layer === undefined) return;
      const values = {};
      for (const k of payloadKeys) values[k] = model.get(k);
      cache.put(headKey(s), values);
    },
    lookup(l, hd) {
      const shown = shownFor(l, hd);
      const values = cache.get(headKey(shown));
      return values ? { shown, values } : null;
    },
    prefetch(l, hd) {
      const want = neighbours(l, hd, model.get("n_layers"), model.get("n_heads"))
        .filter(([a, b]) => { const k = headKey(shownFor(a, b)); return !cache.has(k) && !asked.has(k); });
      if (!want.length) return;
      for (const [a, b] of want) asked.add(headKey(shownFor(a, b)));
      if (asked.size > 256) asked.clear(); // answers that never came (a kernel restart): forget them
      model.send({ type: "prefetch", heads: want });
    },
    off() { model.off("msg:custom", onMsg); },
  };
}

/**
 * The selection of a per-head view, drawn from the page cache when it can be. `payloadKeys`: the
 * traits one head's payload sets; `draw(source)` repaints the view ("cache" | "kernel"). Returns:
 * - `get(k)`: a trait as drawn (the cached head's value while one is on screen, else the model's);
 * - `request(l, hd)`: a click on a head: drawn at once from the cache when it holds the head (true),
 *   else false (the caller shows "computing…"); the kernel is told the selection either way;
 * - `kernelUpdate()`: call when `shown` changed (the kernel sent a head's data): remembers it, asks
 *   for its neighbours, and says whether to draw it (false: the answer to an older click while a
 *   newer one is on screen from the cache, which stays until the kernel answers that one);
 * - `start()`: remember the first head and prefetch around it; `cache`, `fromCache`, `off()`.
 */
export function cachedSelection(model, payloadKeys, draw, opts = {}) {
  const hc = headPayloadCache(model, payloadKeys, opts);
  let overlay = null; // {shown, ...payload} drawn from the cache until the kernel's answer arrives
  const current = () => model.get("shown") || {};
  return {
    cache: hc.cache,
    get fromCache() { return overlay !== null; },
    get(k) { return overlay && k in overlay ? overlay[k] : model.get(k); },
    request(l, hd) {
      const hit = hc.lookup(l, hd);
      if (!hit) return false;
      overlay = { ...hit.values, shown: hit.shown };
      draw("cache");
      return true;
    },
    kernelUpdate() {
      hc.remember();
      const s = current();
      if (overlay && (s.layer !== model.get("layer") || s.head !== model.get("head"))) return false;
      overlay = null;
      hc.prefetch(s.layer, s.head);
      return true;
    },
    start() {
      hc.remember();
      const s = current();
      hc.prefetch(s.layer ?? 0, s.head ?? 0);
    },
    off() { hc.off(); },
  };
}
