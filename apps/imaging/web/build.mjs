// Bundles src/main.js (fhirclient, Cornerstone3D core, Chart.js) into ../static/app.js.
// Run by `npm run build` (or `node build.mjs`); the server never runs npm: the built bundle
// is committed as package data, and tests/apps checks that a rebuild reproduces it.
import * as esbuild from "esbuild";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] || path.join(here, "..", "static", "app.js");

await esbuild.build({
  entryPoints: [path.join(here, "src", "main.js")],
  bundle: true,
  format: "iife",
  platform: "browser",
  target: ["chrome110", "firefox110", "safari16"],
  minify: true,
  legalComments: "none",
  outfile: out,
  define: { "process.env.NODE_ENV": '"production"' },
  logLevel: "warning",
  plugins: [
    {
      name: "node-builtins",
      setup(build) {
        build.onResolve({ filter: /^(url|events)$/ }, () => ({
          path: path.join(here, "src", "shims", "node-builtin.js"),
        }));
      },
    },
  ],
});
