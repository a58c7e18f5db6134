// One redraw per kernel update, after all of its keys have arrived.
//
// The kernel sends the traits of one update in one message, but hosts apply them differently:
// JupyterLab sets every key and then fires the `change:` events; marimo sets the keys one at a
// time and fires each key's event at once. A view that redraws on the first event it hears (e.g.
// `change:shown`) would draw the previous head's data under the new title in marimo. So views
// collect the names of the changed keys and redraw once, in a microtask, when the whole message
// has been applied (a microtask runs after the current synchronous task, before the next frame).

/** Listen to `change:<key>` for each of `keys`; call `handler(changed)` once per burst of changes,
 * with `changed` the Set of keys that changed in it. Returns {flush, off}: `flush()` runs a pending
 * handler now, `off()` stops listening (and drops a pending run). */
export function onModelChanges(model, keys, handler, schedule = queueMicrotask) {
  let changed = new Set();
  let queued = false;
  let live = true;
  const run = () => {
    queued = false;
    if (!live || !changed.size) return;
    const c = changed;
    changed = new Set();
    handler(c);
  };
  const listeners = keys.map((k) => {
    const cb = () => {
      changed.add(k);
      if (!queued) { queued = true; schedule(run); }
    };
    model.on(`change:${k}`, cb);
    return [k, cb];
  });
  return {
    flush: run,
    off() {
      live = false;
      for (const [k, cb] of listeners) model.off(`change:${k}`, cb);
    },
  };
}
