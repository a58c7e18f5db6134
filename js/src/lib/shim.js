// In-page model shim of the offline HTML export (circwidgets/widgets/export.py): get / set / on / off /
// save_changes / send over the states recorded at export time; links the selection across views.
// Pure (no DOM): the page's boot code is export_shim.js.

/** A value of the export's JSON: {__cw_b64__: "..."} becomes a DataView (what a bytes trait is). */
export function decode(v) {
  if (v && typeof v === "object") {
    if (Array.isArray(v)) return v.map(decode);
    if (typeof v.__cw_b64__ === "string") {
      const s = atob(v.__cw_b64__), u = new Uint8Array(s.length);
      for (let i = 0; i < s.length; i++) u[i] = s.charCodeAt(i);
      return new DataView(u.buffer);
    }
    const o = {};
    for (const k of Object.keys(v)) o[k] = decode(v[k]);
    return o;
  }
  return v;
}
function encode(v) {
  if (v instanceof DataView) return { __cw_b64__: "" }; // inputs are never bytes
  if (Array.isArray(v)) return v.map(encode);
  if (v && typeof v === "object") {
    const o = {};
    for (const k of Object.keys(v).sort()) o[k] = encode(v[k]);
    return o;
  }
  return v;
}
/** Canonical JSON of a value (keys sorted), the key of a recorded state. */
export function canon(obj) { return JSON.stringify(encode(obj)); }

/** The model a view sees in the exported page: spec = {inputs, start, states} of one widget,
 * page = {values (hash -> value), log, follow(model)}. */
export class ShimModel {
  constructor(page, spec, idx) {
    this.page = page; this.spec = spec; this.idx = idx;
    this.hashes = Object.assign({}, spec.states[spec.start]);
    this.state = {};
    for (const [k, h] of Object.entries(this.hashes)) this.state[k] = decode(page.values[h]);
    this.listeners = new Map();
    this.good = this.inputs();
    this.widget_manager = null;
    this.offline = true; // no kernel: views disable what only a kernel can answer (lib/offline.js)
  }
  inputs() { const o = {}; for (const k of this.spec.inputs) o[k] = this.state[k]; return o; }
  get(k) { return this.state[k]; }
  set(k, v) { this.state[k] = v; }
  on(ev, cb) { if (!this.listeners.has(ev)) this.listeners.set(ev, []); this.listeners.get(ev).push(cb); }
  off(ev, cb) {
    if (ev === undefined) { this.listeners.clear(); return; }
    if (!this.listeners.has(ev)) return;
    if (cb === undefined) { this.listeners.delete(ev); return; }
    this.listeners.set(ev, this.listeners.get(ev).filter((f) => f !== cb));
  }
  fire(ev) { for (const cb of (this.listeners.get(ev) || []).slice()) { try { cb(); } catch (e) { console.error(e); } } }
  send() {}
  /** A recorded state for a request whose exact inputs were not recorded because the kernel, answering
   * it, also changed another input (a selected head moves the composition view's pair): the recorded
   * state that agrees on every input the page just set and on as many of the others as possible. */
  nearest() {
    const want = this.inputs();
    const setNow = Object.keys(want).filter((k) => canon(want[k]) !== canon(this.good[k]));
    if (!setNow.length) return undefined;
    let best, bestScore = -1;
    for (const key of Object.keys(this.spec.states)) {
      let ins;
      try { ins = JSON.parse(key); } catch { continue; }
      if (!setNow.every((k) => JSON.stringify(ins[k]) === canon(want[k]))) continue;
      const score = Object.keys(want).filter((k) => JSON.stringify(ins[k]) === canon(want[k])).length;
      if (score > bestScore) { best = this.spec.states[key]; bestScore = score; }
    }
    return best;
  }
  save_changes() {
    const key = canon(this.inputs());
    const st = this.spec.states[key] || this.nearest();
    const changed = [];
    if (!st) {
      for (const [k, v] of Object.entries(this.good)) if (canon(this.state[k]) !== canon(v)) { this.state[k] = v; changed.push(k); }
      this.state.error = "this state was not exported with the page: it needs a live kernel";
      changed.push("error");
    } else {
      for (const [k, h] of Object.entries(st)) {
        if (this.hashes[k] !== h || (this.spec.inputs.includes(k))) {
          const was = this.hashes[k];
          this.hashes[k] = h;
          this.state[k] = decode(this.page.values[h]);
          if (was !== h) changed.push(k);
        }
      }
      this.good = this.inputs();
    }
    this.page.log.push({ widget: this.idx, key, found: !!st });
    // the kernel sends one message with every changed trait: set them all, then notify
    for (const k of changed) this.fire("change:" + k);
    if (changed.length) this.fire("change");
    if (st && (changed.includes("layer") || changed.includes("head"))) this.page.follow(this);
  }
}

/** A page of exported views: `data` = {values, widgets: [spec], link}; `modules` = {name: view
 * module}; `mount(i)` = the element of view i. The views' selections follow each other when
 * `data.link` (an explorer). Returns the page (its `log` lists every lookup). */
export function bootPage(data, modules, mount) {
  const page = { values: data.values, log: [], models: [], link: data.link };
  page.follow = (src) => {
    if (!page.link || page.busy) return;
    page.busy = true;
    try {
      for (const m of page.models) {
        if (m === src) continue;
        if (m.get("layer") !== src.get("layer") || m.get("head") !== src.get("head")) {
          m.set("layer", src.get("layer")); m.set("head", src.get("head")); m.save_changes();
        }
      }
    } finally { page.busy = false; }
  };
  data.widgets.forEach((spec, i) => {
    const model = new ShimModel(page, spec, i);
    page.models.push(model);
    const mod = modules[spec.module];
    if (mod.initialize) mod.initialize({ model });
    mod.render({ model, el: mount(i) });
  });
  return page;
}
