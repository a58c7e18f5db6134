import { test } from "node:test";
import assert from "node:assert/strict";
import {
  divColor, inkOn, legendColours, luminance, mix, rgbCss, scaleColor, scaleRange, seqColor, tone,
} from "../src/lib/color.js";

const TH = { rgb: { bg: [255, 255, 255], bg2: [238, 238, 238], accent: [25, 118, 210], negative: [211, 47, 47] } };
const DARK = { rgb: { bg: [17, 17, 17], bg2: [40, 40, 40], accent: [66, 165, 245], negative: [239, 83, 80] } };

test("mix clamps t and interpolates linearly", () => {
  assert.deepEqual(mix([0, 0, 0], [100, 200, 50], 0.5), [50, 100, 25]);
  assert.deepEqual(mix([0, 0, 0], [100, 200, 50], 2), [100, 200, 50]);
  assert.deepEqual(mix([0, 0, 0], [100, 200, 50], -1), [0, 0, 0]);
  assert.equal(rgbCss([1.4, 2.6, 255]), "rgb(1,3,255)");
});

test("sequential scale: background at 0, accent at 1, the neutral bg2 (never the colour of 0) for NaN / inf", () => {
  for (const th of [TH, DARK]) {
    assert.deepEqual(seqColor(th, 0), th.rgb.bg);
    assert.deepEqual(seqColor(th, 1), th.rgb.accent);
    for (const bad of [NaN, Infinity, -Infinity, undefined]) {
      assert.deepEqual(seqColor(th, bad), th.rgb.bg2);
      assert.notDeepEqual(seqColor(th, bad), seqColor(th, 0));
    }
  }
});

test("diverging scale: negative colour <- background -> accent; bg2 for NaN", () => {
  assert.deepEqual(divColor(TH, 0), TH.rgb.bg);
  assert.deepEqual(divColor(TH, 1), TH.rgb.accent);
  assert.deepEqual(divColor(TH, -1), TH.rgb.negative);
  assert.deepEqual(divColor(TH, -0.5), mix(TH.rgb.bg, TH.rgb.negative, 0.5));
  assert.deepEqual(divColor(TH, NaN), TH.rgb.bg2);
});

test("scale ranges and colours of a heatmap", () => {
  assert.deepEqual(scaleRange([0.2, NaN, 0.8], false), [0, 0.8]);
  assert.deepEqual(scaleRange([-3, 1], true), [-3, 3]);
  assert.deepEqual(scaleRange([2, 5], false), [0, 5]);
  assert.deepEqual(scaleRange([-2, -1], false), [-2, -1]);
  assert.deepEqual(scaleRange([NaN], false), [0, 1]);
  assert.deepEqual(scaleRange([0, 0], true), [-1e-12, 1e-12]);
  assert.deepEqual(scaleColor(TH, 5, 0, 5, false), TH.rgb.accent);
  assert.deepEqual(scaleColor(TH, -3, -3, 3, true), TH.rgb.negative);
  assert.deepEqual(scaleColor(TH, NaN, 0, 1, false), TH.rgb.bg2);
});

test("legends run from the scale's low end to its high end", () => {
  const seq = legendColours(TH, false, 5), div = legendColours(TH, true, 5);
  assert.equal(seq.length, 5);
  assert.deepEqual(seq[0], TH.rgb.bg);
  assert.deepEqual(seq[4], TH.rgb.accent);
  assert.deepEqual(div[0], TH.rgb.negative);
  assert.deepEqual(div[2], TH.rgb.bg);
  assert.deepEqual(div[4], TH.rgb.accent);
  for (let i = 1; i < 5; i++) assert.ok(luminance(seq[i]) <= luminance(seq[i - 1])); // light -> accent
});

test("ink: white on dark colours, black on light ones", () => {
  assert.equal(inkOn(TH, [0, 0, 0]), "#ffffff");
  assert.equal(inkOn(TH, [255, 255, 255]), "#111111");
  assert.equal(inkOn(TH, DARK.rgb.bg), "#ffffff");
});

test("pattern display scales map [0, 1] onto [0, 1], monotonic", () => {
  for (const s of ["linear", "sqrt", "log"]) {
    const f = tone(s);
    assert.equal(f(1), 1, s);
    assert.equal(f(0), 0, s);
    let prev = -1;
    for (let x = 0; x <= 1; x += 0.01) { assert.ok(f(x) >= prev, `${s} at ${x}`); prev = f(x); }
  }
  assert.equal(tone("sqrt")(0.25), 0.5);
  assert.ok(Math.abs(tone("log")(0.01) - 1 / 3) < 1e-12);
  assert.equal(tone("log")(1e-4), 0);
});
