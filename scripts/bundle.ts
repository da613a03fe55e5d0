// The build's last step: dist/cli.js, the bin, as one esbuild bundle with a chunk per lazily
// imported command (dist/chunks/), in place of the file tsc wrote. Node's ESM loader resolves,
// reads and links each module on its own: `derrick serve` loaded ~330 files (zod 99, yaml 84), and
// that was most of its start (issue 10: 10,000 x 50 catalog, spawn -> first answer, median of 5
// alternating runs: 577 ms unbundled, 400 ms bundled). The rest of dist/ is tsc's output, which
// the scripts (demo, bench, crash) import. Run after tsc: `node dist/scripts/bundle.js`.
import { build, type Plugin } from 'esbuild';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const dist = path.join(root, 'dist');

/**
 * zod exports every locale's messages as `z.locales` (64 languages, 366 KB of the 755 KB zod
 * chunk), so nothing of them can be shaken out, and `serve` compiled them at every start. derrick
 * uses only English, which zod configures itself with: the locales index becomes just `en`.
 */
const zodEnglishOnly: Plugin = {
  name: 'zod-english-only',
  setup(b) {
    b.onLoad({ filter: /[\\/]zod[\\/]v4[\\/]locales[\\/]index\.js$/ }, () => ({ contents: 'export { default as en } from "./en.js";', resolveDir: path.join(root, 'node_modules/zod/v4/locales') }));
  },
};

await fs.rm(path.join(dist, 'chunks'), { recursive: true, force: true });
await build({
  absWorkingDir: root,
  entryPoints: ['cli.ts'],
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  outdir: dist,
  chunkNames: 'chunks/[name]-[hash]',
  // undici stays in node_modules: bundled, the registry client's import('undici') found no Agent
  // (its CommonJS exports through esbuild's interop), and only publish and the cache load it.
  external: ['undici'],
  // Bundled CommonJS packages use require, __filename and __dirname, which an ES module lacks.
  // Where they use the file name (write-file-atomic hashes it into temp names, undici matches it in
  // stacks) the chunk's own name does; pino's worker files are for transports, which derrick does not use.
  banner: {
    js: [
      "import { createRequire as __derrickRequire } from 'node:module';",
      "import { fileURLToPath as __derrickFilePath } from 'node:url';",
      "import { dirname as __derrickDirname } from 'node:path';",
      'const require = __derrickRequire(import.meta.url);',
      'const __filename = __derrickFilePath(import.meta.url);',
      'const __dirname = __derrickDirname(__filename);',
    ].join('\n'),
  },
  logLevel: 'warning',
  plugins: [zodEnglishOnly],
});
// The bin is run as a program: its shebang (cli.ts's first line, kept by esbuild) passes derrick's node flags.
await fs.chmod(path.join(dist, 'cli.js'), 0o755);
