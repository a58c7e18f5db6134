// The committed bundles (circwidgets/static/) load as ES modules and export what anywidget calls.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { VIEWS } from "../build.mjs";

const STATIC = new URL("../../circwidgets/static/", import.meta.url);

for (const view of VIEWS) {
  test(`${view}: one self-contained ES module with a default export {render}`, async () => {
    const src = readFileSync(new URL(`${view}.js`, STATIC), "utf8");
    assert.doesNotMatch(src, /^\s*import\b/m, "no imports left: anywidget loads one module");
    assert.match(src, /\bexport\s*\{\s*[\w$]+ as default\s*\};\s*$/);
    const mod = await import(new URL(`${view}.js`, STATIC));
    assert.equal(typeof mod.default.render, "function");
    assert.ok(readFileSync(new URL(`${view}.css`, STATIC), "utf8").includes(".cw-root"), "shared CSS bundled in");
  });
}
