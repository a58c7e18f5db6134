// DOM helpers shared by every view. Strings become text nodes or attribute values, never markup.

/** Create an element; `props.text` goes to textContent, `props.cls` to className, `props.title`
 * to the title, `props.attrs` to setAttribute, `props.data` to dataset; children are nodes or
 * strings (as text nodes). */
export function h(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  if (props.cls) node.className = props.cls;
  if (props.text !== undefined) node.textContent = String(props.text);
  if (props.title !== undefined) node.title = String(props.title);
  for (const [k, v] of Object.entries(props.attrs || {})) node.setAttribute(k, String(v));
  for (const [k, v] of Object.entries(props.data || {})) node.dataset[k] = String(v);
  for (const c of children) node.append(typeof c === "string" ? document.createTextNode(c) : c);
  return node;
}

/** Size a canvas for crisp drawing at the device pixel ratio; returns its 2D context scaled so
 * that drawing units are CSS pixels. */
export function hidpi(canvas, w, h_) {
  const r = window.devicePixelRatio || 1;
  canvas.width = Math.round(w * r);
  canvas.height = Math.round(h_ * r);
  canvas.style.width = `${w}px`;
  canvas.style.height = `${h_}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(r, 0, 0, r, 0, 0);
  return ctx;
}

/** Call `cb` when JupyterLab switches theme (it rewrites data-jp-theme-* on <body>); returns an unsubscribe. */
export function onThemeChange(cb) {
  if (typeof MutationObserver === "undefined") return () => {};
  const mo = new MutationObserver(() => cb());
  mo.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-name", "data-jp-theme-light"] });
  return () => mo.disconnect();
}

/** Mark the root element after a redraw so tests and benchmarks can wait for it. */
export function markDrawn(el, info) {
  el.dataset.drawCount = String((Number(el.dataset.drawCount) || 0) + 1);
  for (const [k, v] of Object.entries(info)) el.dataset[k] = String(v);
  el.dataset.drawnAt = String(performance.now());
}

/** The cleanup a view's `render` returns: calls `off()` of each listener set (or the item itself
 * when it is a function), so a removed view leaves no listener on the model or the page. */
export function cleanup(...items) {
  return () => {
    for (const it of items) {
      if (typeof it === "function") it();
      else it.off();
    }
  };
}
