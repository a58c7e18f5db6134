// Bundle every view's entry module (src/<view>.js, with the CSS it imports) into one ES module
// `circwidgets/static/<view>.js` + `<view>.css`, and the offline-export page shim into a classic
// script `circwidgets/static/export_shim.js`.
//
//   node build.mjs            build (what is committed: no source maps, byte-for-byte reproducible)
//   node build.mjs --watch    rebuild on every change, with inline source maps (for ANYWIDGET_HMR=1;
//                             run `npm run build` before committing: the check below rejects dev builds)
//   node build.mjs --check    build into a temporary folder and fail if the committed bundles differ
import * as esbuild from "esbuild";
import { mkdtempSync, readdirSync, readFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const SRC = join(HERE, "src");
const STATIC = resolve(HERE, "..", "circwidgets", "static");

/** One entry module per view: anywidget loads one ES module (and one stylesheet) per widget class. */
export const VIEWS = ["attention", "eigenvalues", "skip_trigrams", "composition", "paths", "ablation", "monitor", "history"];

function options(outdir, dev) {
  const common = {
    absWorkingDir: HERE, // paths in the bundle's comments are relative to js/, wherever the build runs
    bundle: true,
    outdir,
    target: "es2020",
    charset: "utf8", // keep "…", "λ", "␣" readable instead of \u escapes
    legalComments: "none",
    logLevel: "warning",
    sourcemap: dev ? "inline" : false,
    // whitespace and syntax minified, names kept (readable stack traces); the sources are js/src,
    // the committed bundles are build output (and `npm run dev` adds source maps)
    minifyWhitespace: true,
    minifySyntax: true,
  };
  return [
    { ...common, entryPoints: VIEWS.map((v) => join(SRC, `${v}.js`)), format: "esm" },
    // the offline HTML page's model shim is a plain script (it runs before the view modules)
    { ...common, entryPoints: [join(SRC, "export_shim.js")], format: "iife" },
  ];
}

async function build(outdir, dev = false) {
  for (const o of options(outdir, dev)) await esbuild.build(o);
}

function listing(dir) {
  return existsSync(dir) ? readdirSync(dir).filter((f) => /\.(js|css)$/.test(f)).sort() : [];
}

async function check() {
  const tmp = mkdtempSync(join(tmpdir(), "cw-bundles-"));
  try {
    await build(tmp);
    const want = listing(tmp), have = listing(STATIC);
    const problems = [];
    for (const f of want) {
      if (!have.includes(f)) problems.push(`missing: circwidgets/static/${f}`);
      else if (!readFileSync(join(tmp, f)).equals(readFileSync(join(STATIC, f)))) problems.push(`stale: circwidgets/static/${f}`);
    }
    for (const f of have) if (!want.includes(f)) problems.push(`not built from js/src (remove it): circwidgets/static/${f}`);
    if (problems.length) {
      console.error(`${problems.join("\n")}\nThe committed bundles do not match js/src: run \`npm run build\` in js/ and commit circwidgets/static/.`);
      process.exit(1);
    }
    console.log(`bundles up to date (${want.length} files in circwidgets/static/)`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

// run as a script (importing this module, e.g. for VIEWS, builds nothing)
if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  await main(process.argv[2]);
}

async function main(arg) {
  if (arg === "--check") {
    await check();
  } else if (arg === "--watch") {
    const ctxs = await Promise.all(options(STATIC, true).map((o) => esbuild.context(o)));
    await Promise.all(ctxs.map((c) => c.watch()));
    console.log(`watching js/src -> circwidgets/static (set ANYWIDGET_HMR=1 in the kernel's environment)`);
  } else if (arg === undefined) {
    await build(STATIC);
    console.log(`built ${listing(STATIC).length} files into circwidgets/static/`);
  } else {
    console.error(`unknown argument ${arg}: use no argument, --watch or --check`);
    process.exit(2);
  }
}
