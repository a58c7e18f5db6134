import { test } from "node:test";
import assert from "node:assert/strict";
import { fmt, shortLabel, visibleWhitespace } from "../src/lib/text.js";

test("whitespace and control characters become visible marks", () => {
  assert.equal(visibleWhitespace(" lead"), "\u2423lead");
  assert.equal(visibleWhitespace("a\nb\r\tc"), "a\u21b5b\u240d\u21e5c");
  assert.equal(visibleWhitespace("\u0000\u0007\u001b\u007f"), "\u00b7\u00b7\u00b7\u00b7");
  assert.equal(visibleWhitespace("<img src=x onerror=alert(1)>"), "<img\u2423src=x\u2423onerror=alert(1)>"); // text, unchanged
  assert.equal(visibleWhitespace(42), "42");
  assert.equal(visibleWhitespace("é漢\u00a0"), "é漢\u00a0"); // other characters stay
});

test("labels are shortened to n characters with an ellipsis", () => {
  assert.equal(shortLabel("short"), "short");
  assert.equal(shortLabel("exactly12chr"), "exactly12chr");
  assert.equal(shortLabel("thirteen char"), "thirteen\u2423ch\u2026");
  assert.equal(shortLabel("thirteen char").length, 12);
  assert.equal(shortLabel("abcdef", 4), "abc\u2026");
  assert.equal(shortLabel(" x\n", 12), "\u2423x\u21b5"); // whitespace made visible first
});

test("numbers: fixed decimals, exponent outside [1e-3, 1e4)", () => {
  assert.equal(fmt(0.5), "0.500");
  assert.equal(fmt(-1.23456, 2), "-1.23");
  assert.equal(fmt(0), "0.000");
  assert.equal(fmt(1e-4), "1.00e-4");
  assert.equal(fmt(12345, 3), "1.23e+4");
  assert.equal(fmt(NaN), "NaN");
  assert.equal(fmt(-Infinity), "-Infinity");
  assert.equal(fmt(null), "n/a"); // JSON null: a value the kernel could not give (history's step data)
  assert.equal(fmt(undefined, 4), "n/a");
});
