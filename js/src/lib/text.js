// Text helpers (pure). Rule for every front end: a string that came from a tokenizer is data,
// never markup; it reaches the page only through `textContent`, `setAttribute` with a fixed name,
// or canvas `fillText`.

/** Make whitespace in a token visible: space -> "␣", newline -> "↵", CR -> "␍", tab -> "⇥",
 * other control characters -> "·". */
export function visibleWhitespace(s) {
  return String(s)
    .replace(/ /g, "\u2423")
    .replace(/\n/g, "\u21b5")
    .replace(/\r/g, "\u240d")
    .replace(/\t/g, "\u21e5")
    // eslint-disable-next-line no-control-regex -- control characters are exactly what is replaced
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/g, "\u00b7");
}

/** A token label for an axis or a list: visible whitespace, at most `n` characters (ending "…"). */
export function shortLabel(s, n = 12) {
  const v = visibleWhitespace(s);
  return v.length > n ? v.slice(0, n - 1) + "\u2026" : v;
}

/** A number for a read-out: `digits` decimals, exponent notation below 1e-3 and from 1e4; "n/a" for
 * a value the kernel sent as null (undefined there: a NaN / inf it reported in the message) or none at all. */
export function fmt(x, digits = 3) {
  if (x === null || x === undefined) return "n/a";
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e4)) return x.toExponential(digits - 1);
  return x.toFixed(digits);
}
