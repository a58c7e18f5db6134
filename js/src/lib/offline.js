// Controls that need a live kernel (a text box the kernel tokenizes, a token search, more rows, the
// stop button) in the offline HTML export, where no kernel answers: disabled, with a short note.
import { h } from "./dom.js";

export const NEEDS_KERNEL = "needs a live kernel";

/** When `model.offline` (the export's model shim), disable `controls` and append a note to `where`;
 * returns the note element, or null in a live notebook (nothing changes there). */
export function needsKernel(model, controls, where) {
  if (!model.offline) return null;
  for (const c of controls) {
    c.disabled = true;
    c.title = NEEDS_KERNEL;
    c.setAttribute("aria-disabled", "true");
  }
  const note = h("span", { cls: "cw-offline-note", text: NEEDS_KERNEL });
  if (where) where.append(note);
  return note;
}
