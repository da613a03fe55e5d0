// Doc tests: the operator's guide (docs/) is run, not just read. Every ```sh block runs in document
// order on a tree built here (the guide's own setup blocks and config); every config key of the zod
// schema and every registered metric must be documented; the systemd units pass systemd-analyze.
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ConfigSchema } from '../shared/config.js';
import { createMetrics } from '../redirector/metrics.js';
import { CLI, derrick, startServe, type ServeProcess } from './helpers/derrick.js';
import { requireTool, run, which } from './helpers/proc.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DOCS = path.join(REPO_ROOT, 'docs');
const DOC_FILES = ['guide.md', 'config.md', 'troubleshooting.md', 'topology.md'];

interface Block {
  file: string;
  line: number;
  /** The fence's info string: "sh", "sh setup", "sh no-run", "yaml file=derrick.yaml", "crontab", ... */
  info: string;
  body: string;
}

/** Fenced blocks of a markdown file (fences may be indented, as in list items). */
function fencedBlocks(file: string, text: string): Block[] {
  const out: Block[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```(.*)$/.exec(lines[i]!);
    if (!open) continue;
    const indent = open[1]!.length;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !/^\s*```\s*$/.test(lines[i]!); i++) body.push(lines[i]!.slice(indent));
    out.push({ file, line: start + 1, info: open[2]!.trim(), body: body.join('\n') });
  }
  return out;
}

const docText = new Map<string, string>();
for (const f of DOC_FILES) docText.set(f, await fs.readFile(path.join(DOCS, f), 'utf8'));
const blocks = DOC_FILES.flatMap((f) => fencedBlocks(f, docText.get(f)!));
const isShell = (b: Block) => /^(sh|bash|shell|console)\b/.test(b.info);
const SHELL_INFOS = new Set(['sh', 'sh setup', 'sh no-run']);

/** Every key path of a zod schema: `serve.tls.cert`, `repos[].auth.username`. */
function schemaKeys(schema: z.ZodType, prefix = ''): string[] {
  const def = (schema as unknown as { _zod: { def: Record<string, unknown> & { type: string } } })._zod.def;
  switch (def.type) {
    case 'default':
    case 'optional':
    case 'nullable':
    case 'prefault':
      return schemaKeys(def.innerType as z.ZodType, prefix);
    case 'pipe':
      return schemaKeys(def.in as z.ZodType, prefix);
    case 'array':
      return schemaKeys(def.element as z.ZodType, `${prefix}[]`);
    case 'object': {
      const shape = def.shape as Record<string, z.ZodType>;
      return Object.entries(shape).flatMap(([k, v]) => {
        const p = prefix ? `${prefix}.${k}` : k;
        return [p, ...schemaKeys(v, p)];
      });
    }
    default:
      return [];
  }
}

describe('docs: what is documented', () => {
  it('every key of the config schema is in docs/config.md', () => {
    const keys = schemaKeys(ConfigSchema);
    // The walk must see the nested shapes, or the check below would pass on nothing.
    expect(keys).toEqual(expect.arrayContaining(['root', 'repos[].auth.password-env', 'serve.signing.secret-env', 'upstreams[].tag-ttl', 'cache.fill-memory']));
    const doc = docText.get('config.md')!;
    const missing = keys.filter((k) => !doc.includes('`' + k + '`'));
    expect(missing, `keys missing from docs/config.md`).toEqual([]);
  });

  it('every metric registered in redirector/metrics.ts is in docs/guide.md', async () => {
    const names = (await (await createMetrics().registry()).getMetricsAsJSON()).map((m) => m.name);
    expect(names.length).toBeGreaterThan(5);
    const doc = docText.get('guide.md')!;
    const missing = names.filter((n) => !new RegExp('`' + n + '(\\{[^`]*\\})?`').test(doc));
    expect(missing, 'metrics missing from docs/guide.md').toEqual([]);
  });

  it('every shell block uses a known fence (sh, sh setup, sh no-run), and few are no-run', () => {
    const shell = blocks.filter(isShell);
    expect(shell.filter((b) => !SHELL_INFOS.has(b.info)).map((b) => `${b.file}:${b.line} ${b.info}`)).toEqual([]);
    const noRun = shell.filter((b) => b.info === 'sh no-run').length;
    const runs = shell.length - noRun;
    expect(runs).toBeGreaterThan(noRun);
  });
});

const hasTools = ['openssl', 'curl', 'skopeo', 'nginx', 'bash'].every((t) => requireTool(t, 'the guide\'s commands are not run'));

describe.skipIf(!hasTools)('docs: every sh block runs', () => {
  let tmp: TmpDir;
  let tree: string;
  let bin: string;
  let serve: ServeProcess;

  /** The guide's placeholders (see its "Conventions" table) -> this test's tree. */
  const substitute = (text: string) =>
    text.replaceAll('/srv/derrick', tree).replaceAll('/opt/derrick', REPO_ROOT).replaceAll('127.0.0.1:5000', serve?.host ?? '127.0.0.1:5000');

  const runBlock = async (b: Block) => {
    const r = await run('bash', ['-e', '-o', 'pipefail', '-c', substitute(b.body)], {
      cwd: tree,
      env: { PATH: `${bin}:${process.env.PATH}`, DERRICK_CONFIG: path.join(tree, 'derrick.yaml') },
      timeoutMs: 180_000,
    });
    if (r.code !== 0) throw new Error(`${b.file}:${b.line} exited ${r.code}:\n${b.body}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`);
    return r;
  };

  beforeAll(async () => {
    tmp = await tmpDir('derrick-docs');
    tree = path.join(tmp.dir, 'srv');
    bin = path.join(tmp.dir, 'bin');
    await fs.mkdir(tree, { recursive: true });
    await fs.mkdir(bin);
    // `derrick` on PATH is the built CLI, as /usr/local/bin/derrick is in the guide.
    await fs.writeFile(path.join(bin, 'derrick'), `#!/bin/sh\nexec "${process.execPath}" "${CLI}" "$@"\n`, { mode: 0o755 });
    for (const b of blocks.filter((x) => x.info === 'sh setup')) await runBlock(b);
    const files = blocks.filter((x) => /^yaml file=/.test(x.info));
    expect(files.map((x) => x.info)).toContain('yaml file=derrick.yaml');
    for (const b of files) await fs.writeFile(path.join(tree, b.info.slice('yaml file='.length)), substitute(b.body) + '\n');
    // The tree the commands run on: the guide's config, published by the real CLI, served over TLS.
    const pub = await derrick(['publish', '-c', path.join(tree, 'derrick.yaml')]);
    expect(pub.code, pub.stderr).toBe(0);
    serve = await startServe(path.join(tree, 'derrick.yaml'), {}, { tls: true });
  });
  afterAll(async () => {
    await serve?.stop();
    await tmp?.cleanup();
  });

  for (const b of blocks.filter((x) => x.info === 'sh')) {
    it(`${b.file}:${b.line}`, async () => {
      await runBlock(b);
    });
  }

  // A crontab line runs its command (the fields after minute, hour, day, month, weekday and user).
  for (const b of blocks.filter((x) => x.info === 'crontab')) {
    it(`${b.file}:${b.line} (crontab command)`, async () => {
      const lines = b.body.split('\n').filter((l) => l.trim() && !l.startsWith('#') && !/^\w+=/.test(l));
      expect(lines.length).toBeGreaterThan(0);
      for (const l of lines) await runBlock({ ...b, body: l.trim().split(/\s+/).slice(6).join(' ') });
    });
  }
});

describe('docs: systemd units', () => {
  const hasAnalyze = which('systemd-analyze') !== undefined;
  if (!hasAnalyze && process.env.CI === 'true') {
    it('systemd-analyze is installed (CI=true)', () => {
      throw new Error('systemd-analyze is not installed (CI=true, so the unit check may not be skipped)');
    });
  } else if (!hasAnalyze) {
    console.warn('[skip] systemd-analyze not installed: docs/systemd units are not verified');
  }

  it.skipIf(!hasAnalyze)('docs/systemd/* pass systemd-analyze verify, with no warning about them', async () => {
    const units = (await fs.readdir(path.join(DOCS, 'systemd'))).filter((f) => /\.(service|timer)$/.test(f));
    expect(units.sort()).toEqual(['derrick-publish.service', 'derrick-publish.timer', 'derrick-serve.service']);
    const tmp = await tmpDir('derrick-units');
    try {
      // The units name /usr/local/bin/derrick and /srv/derrick; verify checks that ExecStart exists.
      const exe = path.join(tmp.dir, 'derrick');
      await fs.writeFile(exe, `#!/bin/sh\nexec "${process.execPath}" "${CLI}" "$@"\n`, { mode: 0o755 });
      for (const u of units) {
        const text = await fs.readFile(path.join(DOCS, 'systemd', u), 'utf8');
        await fs.writeFile(path.join(tmp.dir, u), text.replaceAll('/usr/local/bin/derrick', exe).replaceAll('/srv/derrick', tmp.dir));
      }
      const r = await run('systemd-analyze', ['verify', '--man=no', ...units.map((u) => path.join(tmp.dir, u))], { timeoutMs: 60_000 });
      const aboutOurs = r.stderr.split('\n').filter((l) => units.some((u) => l.includes(u)));
      expect({ code: r.code, warnings: aboutOurs }).toEqual({ code: 0, warnings: [] });
    } finally {
      await tmp.cleanup();
    }
  });
});
