// Colours: the theme (read from the host's CSS variables, so light and dark themes both work) and
// the colour scales every view uses. Everything but `theme` / `parseColor` is pure.

export const FALLBACK = {
  bg: "#ffffff", bg2: "#eeeeee", fg: "rgba(0,0,0,0.87)", fg2: "rgba(0,0,0,0.54)",
  border: "#bdbdbd", accent: "#1976d2", negative: "#d32f2f", select: "#ff9800",
};
const VARS = {
  bg: "--jp-layout-color0", bg2: "--jp-layout-color2", fg: "--jp-ui-font-color1",
  fg2: "--jp-ui-font-color2", border: "--jp-border-color1", accent: "--jp-brand-color1",
  negative: "--jp-error-color1", select: "--jp-warn-color1",
};

let probe = null;
/** Parse any CSS colour into [r, g, b] (0..255) through a 1x1 canvas. */
export function parseColor(css) {
  if (!probe) probe = document.createElement("canvas").getContext("2d", { willReadFrequently: true });
  probe.clearRect(0, 0, 1, 1);
  probe.fillStyle = "#000";
  probe.fillStyle = css;
  probe.fillRect(0, 0, 1, 1);
  const d = probe.getImageData(0, 0, 1, 1).data;
  return [d[0], d[1], d[2]];
}

/** True when the page around `el` writes light text (a dark host: marimo's or VS Code's dark theme,
 * Colab dark) — read from the inherited text colour, since such hosts have no JupyterLab variables. */
export function hostIsDark(el) {
  const host = (el && el.parentElement) || el;
  if (!host) return false;
  return luminance(parseColor(getComputedStyle(host).color || "#000")) > 0.6;
}

/** The theme as [r, g, b] triples (`rgb`) and CSS strings (`css`), read from JupyterLab's CSS
 * variables on `el`, with fallbacks outside JupyterLab. Where the host defines no JupyterLab
 * variables, `el` gets the class `cw-dark` on a dark host (common.css then sets dark values for
 * those variables on the view itself), so the view follows the host's theme. */
export function theme(el) {
  const host = el.parentElement;
  if (el.classList && host && !(getComputedStyle(host).getPropertyValue(VARS.bg) || "").trim()) {
    el.classList.toggle("cw-dark", hostIsDark(el));
  }
  const cs = getComputedStyle(el);
  const t = { css: {}, rgb: {} };
  for (const [k, v] of Object.entries(VARS)) {
    const val = (cs.getPropertyValue(v) || "").trim() || FALLBACK[k];
    t.css[k] = val;
    t.rgb[k] = parseColor(val);
  }
  t.font = (cs.getPropertyValue("--jp-code-font-family") || "").trim() || "monospace";
  t.dark = luminance(t.rgb.bg) < 0.5;
  return t;
}

/** Relative brightness of [r, g, b] in 0..1 (Rec. 709 weights, no gamma). */
export function luminance([r, g, b]) {
  return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
}

/** Linear mix of two [r, g, b] colours, t clamped to [0, 1]. */
export function mix(a, b, t) {
  t = t < 0 ? 0 : t > 1 ? 1 : t;
  return [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t];
}

export function rgbCss(c) {
  return `rgb(${Math.round(c[0])},${Math.round(c[1])},${Math.round(c[2])})`;
}

/** Sequential colour for t in [0, 1]: background -> accent (non-finite t: bg2, the neutral "no value"
 * colour, as `divColor`: never the colour of 0). */
export function seqColor(th, t) {
  return Number.isFinite(t) ? mix(th.rgb.bg, th.rgb.accent, t) : th.rgb.bg2;
}

/** Diverging colour for v in [-1, 1]: negative colour <- background -> accent (non-finite: bg2). */
export function divColor(th, v) {
  if (!Number.isFinite(v)) return th.rgb.bg2;
  return v >= 0 ? mix(th.rgb.bg, th.rgb.accent, v) : mix(th.rgb.bg, th.rgb.negative, -v);
}

/** Text colour that reads on a given background. */
export function inkOn(th, rgb) {
  return luminance(rgb) < 0.55 ? "#ffffff" : "#111111";
}

/** The colour of value `v` on a scale from `lo` to `hi`: diverging (symmetric around zero,
 * v / max(|lo|, |hi|)) or sequential ((v - lo) / (hi - lo)). */
export function scaleColor(th, v, lo, hi, diverging) {
  if (!Number.isFinite(v)) return th.rgb.bg2;
  if (diverging) return divColor(th, v / Math.max(Math.abs(lo), Math.abs(hi), 1e-12));
  return seqColor(th, (v - lo) / (hi - lo || 1));
}

/** Default range of a colour scale over `vals` (NaN ignored): symmetric around zero when
 * diverging, else from min(0, min) to max; [0, 1] when nothing is finite. */
export function scaleRange(vals, diverging) {
  let a = Infinity, b = -Infinity;
  for (const v of vals) if (Number.isFinite(v)) { if (v < a) a = v; if (v > b) b = v; }
  if (!Number.isFinite(a)) { a = 0; b = 1; }
  if (diverging) {
    const m = Math.max(Math.abs(a), Math.abs(b), 1e-12);
    return [-m, m];
  }
  const lo = Math.min(0, a);
  return [lo, b > lo ? b : lo + 1];
}

/** The `n` colours of a legend bar, left to right: -1 … +1 when diverging, else 0 … 1. */
export function legendColours(th, diverging, n = 120) {
  const out = [];
  for (let x = 0; x < n; x++) {
    const t = n > 1 ? x / (n - 1) : 0;
    out.push(diverging ? divColor(th, 2 * t - 1) : seqColor(th, t));
  }
  return out;
}

/** Display mapping of an attention weight in [0, 1] to a colour position in [0, 1] (the weights
 * themselves are unchanged): "linear", "sqrt", or "log" (10^-3 … 1 on a log scale, below: 0). */
export function tone(scale) {
  if (scale === "sqrt") return Math.sqrt;
  if (scale === "log") return (x) => (x > 1e-3 ? 1 + Math.log10(x) / 3 : 0);
  return (x) => x;
}
