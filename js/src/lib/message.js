// The message line of a view: the kernel's `error` trait, and local notes such as "computing L1H2…".
import { h } from "./dom.js";

/** A line for errors/notes from the kernel (`error` trait) and for local notes.
 *
 * A view whose kernel deferred part of its data (the `deferred` trait: a panel of a big model's explorer,
 * a skip-trigram scan, the head grid's behaviour scores) is asked for it here, once, when the view is
 * first drawn ({type: "complete"}); until the kernel sets `deferred` false the line says `deferredText`.
 * Nothing is asked offline (an export holds every computed value). */
export function messageArea(model, { deferredText = "computing…" } = {}) {
  const box = h("div", { cls: "cw-message", attrs: { role: "status", "aria-live": "polite" } });
  const show = () => {
    const msg = model.get("error") || "";
    const waiting = !msg && !!model.get("deferred") && !model.offline;
    box.textContent = msg || (waiting ? deferredText : "");
    box.classList.toggle("cw-error", !!msg);
    box.classList.toggle("cw-note", waiting);
    box.hidden = !msg && !waiting;
  };
  /** A transient local note, replaced by the next `show()`. */
  const note = (text) => {
    box.textContent = text;
    box.classList.remove("cw-error");
    box.classList.add("cw-note");
    box.hidden = false;
  };
  model.on("change:error", show);
  model.on("change:deferred", show);
  show();
  if (model.get("deferred") && !model.offline) model.send({ type: "complete" });
  return { el: box, show, note, off: () => { model.off("change:error", show); model.off("change:deferred", show); } };
}

/** The text of the note shown while the kernel works on a head. */
export function computingText(layer, head) {
  return `computing L${layer}H${head}…`;
}

/** "computing L…H…" on the message line when the kernel takes longer than `delayMs` to answer a
 * head request (a first skip-trigram scan of a 50k vocabulary takes seconds).
 *
 * `pending(l, hd)` starts the timer (call it when the page asks for a head); `settled()` clears it
 * and shows the kernel's message again (call it when the head's data was drawn). A selection that
 * comes back already shown (a reverted bad request) settles by itself. */
export function pendingNote(model, msg, delayMs = 150) {
  let timer = null;
  const shownIs = (l, hd) => {
    const s = model.get("shown") || {};
    return s.layer === l && s.head === hd;
  };
  const pending = (l, hd) => {
    clearTimeout(timer);
    // nothing to wait for: the offline export answers (or refuses) inside save_changes, before this
    // call; a head whose data is already shown needs no note either
    if (model.offline || shownIs(l, hd)) return;
    timer = setTimeout(() => msg.note(computingText(l, hd)), delayMs);
  };
  const settled = () => { clearTimeout(timer); msg.show(); };
  const onSel = () => { if (shownIs(model.get("layer"), model.get("head"))) settled(); };
  model.on("change:layer", onSel);
  model.on("change:head", onSel);
  return {
    pending, settled,
    off() { clearTimeout(timer); model.off("change:layer", onSel); model.off("change:head", onSel); },
  };
}
