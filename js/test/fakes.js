// A stand-in for anywidget's model with the two ways hosts apply one kernel update.

export class FakeModel {
  constructor(state = {}) {
    this.state = { ...state };
    this.listeners = new Map();
    this.saved = 0;
  }
  get(k) { return this.state[k]; }
  set(k, v) { this.state[k] = v; }
  save_changes() { this.saved += 1; }
  on(ev, cb) { if (!this.listeners.has(ev)) this.listeners.set(ev, []); this.listeners.get(ev).push(cb); }
  off(ev, cb) { this.listeners.set(ev, (this.listeners.get(ev) || []).filter((f) => f !== cb)); }
  fire(ev) { for (const cb of (this.listeners.get(ev) || []).slice()) cb(); }
  count(ev) { return (this.listeners.get(ev) || []).length; }

  /** marimo: each key is set and its change event fired at once, in the message's order. */
  applyOneByOne(update) {
    for (const [k, v] of Object.entries(update)) { this.state[k] = v; this.fire(`change:${k}`); }
  }

  /** JupyterLab: every key set first, then the change events. */
  applyAllThenFire(update) {
    Object.assign(this.state, update);
    for (const k of Object.keys(update)) this.fire(`change:${k}`);
  }
}

export const tick = () => new Promise((r) => setTimeout(r, 0));
