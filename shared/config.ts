// derrick.yaml: schema, loader and the errors that name the key and the line.
import fs from 'node:fs';
import path from 'node:path';
import { LineCounter, parseDocument, isNode } from 'yaml';
import { z } from 'zod';
import { parseAddressRange } from './address-range.js';
import { isValidName } from './oci.js';
import { parseDuration, parseSize } from './units.js';

export const DEFAULT_CONFIG_FILE = 'derrick.yaml';

const duration = z
  .union([z.string(), z.number()])
  .transform((v, ctx) => {
    const ms = parseDuration(v);
    if (ms === null) {
      ctx.addIssue({ code: 'custom', message: `"${v}" is not a duration (e.g. 30s, 10m, 1h)` });
      return z.NEVER;
    }
    return ms;
  });

const size = z
  .union([z.string(), z.number()])
  .transform((v, ctx) => {
    const n = parseSize(v);
    if (n === null) {
      ctx.addIssue({ code: 'custom', message: `"${v}" is not a size (e.g. 500MiB, 50GiB)` });
      return z.NEVER;
    }
    return n;
  });

const repoName = z.string().refine((n) => isValidName(n), {
  message: 'is not a valid repository name (lowercase [a-z0-9] components separated by ".", "_", "__", "-" or "/")',
});

const auth = z
  .object({
    username: z.string().min(1),
    'password-env': z.string().min(1),
  })
  .strict();

export type SourceRef =
  | { transport: 'oci'; path: string }
  | { transport: 'docker'; registry: string; repository: string };

/** Parses skopeo's transport syntax: oci:PATH or docker://HOST[:PORT]/REPO. */
export function parseSourceRef(ref: string): SourceRef | string {
  if (ref.startsWith('oci:')) {
    const p = ref.slice(4);
    if (!p) return 'oci: needs a directory path (oci:./images/hello)';
    return { transport: 'oci', path: p };
  }
  if (ref.startsWith('docker://')) {
    const rest = ref.slice('docker://'.length);
    const slash = rest.indexOf('/');
    if (slash <= 0) return `"${ref}" needs a host and a repository (docker://HOST[:PORT]/REPO)`;
    const registry = rest.slice(0, slash);
    const repository = rest.slice(slash + 1);
    if (!/^[A-Za-z0-9.-]+(:\d{1,5})?$/.test(registry) && !/^\[[0-9a-fA-F:]+\](:\d{1,5})?$/.test(registry)) {
      return `"${registry}" is not a registry host[:port]`;
    }
    if (repository.includes(':') || repository.includes('@')) {
      return `"${ref}" names a tag or digest; name the repository only and select tags with tags:`;
    }
    if (!isValidName(repository)) return `"${repository}" is not a valid repository name`;
    return { transport: 'docker', registry, repository };
  }
  return `"${ref}" has no known transport; use oci:PATH or docker://HOST/REPO`;
}

const repo = z
  .object({
    name: repoName,
    from: z.string().transform((v, ctx) => {
      const parsed = parseSourceRef(v);
      if (typeof parsed === 'string') {
        ctx.addIssue({ code: 'custom', message: parsed });
        return z.NEVER;
      }
      return parsed;
    }),
    tags: z.array(z.string().min(1)).default(['*']),
    exclude: z.array(z.string().min(1)).default([]),
    'tls-verify': z.boolean().default(true),
    auth: auth.optional(),
    protected: z.boolean().default(false),
    /** Mirror what refers to each image (signatures, SBOMs, attestations), whatever the tag globs say. */
    referrers: z.boolean().default(true),
  })
  .strict();

const listen = z.string().regex(/^[^\s:]*:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/, 'must be HOST:PORT');

const publicUrl = z
  .url({ protocol: /^https?$/ })
  .refine((v) => {
    const u = new URL(v);
    return !u.username && !u.password && !u.search && !u.hash && !v.includes('#') && !v.includes('?');
  }, 'must be http(s)://HOST[:PORT][/PATH], without credentials, query or fragment')
  .transform((v) => v.replace(/\/+$/, ''));

const addressRange = z.string().superRefine((v, ctx) => {
  const r = parseAddressRange(v);
  if (typeof r === 'string') ctx.addIssue({ code: 'custom', message: r });
});

const serve = z
  .object({
    listen: listen.default('127.0.0.1:5000'),
    blobs: z
      .union([z.literal('embedded'), z.url({ protocol: /^https?$/ })])
      .default('embedded'),
    manifests: z.enum(['inline', 'redirect']).default('inline'),
    'redirect-status': z.union([z.literal(302), z.literal(307)]).default(307),
    htpasswd: z.string().optional(),
    signing: z
      .object({ 'secret-env': z.string().min(1), ttl: duration.default(300_000) })
      .strict()
      .optional(),
    'crane-data': z.string().optional(),
    'anonymous': z.boolean().default(true),
    'rescan-interval': duration.default(30_000),
    /** PEM files: `derrick serve` speaks HTTPS (HTTP/1.1) with them; re-read on SIGHUP. */
    tls: z.object({ cert: z.string().min(1), key: z.string().min(1) }).strict().optional(),
    /** Repos kept loaded, counted as the bytes of their redirect files (the in-memory form is smaller). */
    'index-memory': size.default(8 * 1024 * 1024),
    /** Hot manifests' bytes kept in memory; the rest are read from the master (the page cache). */
    'manifest-cache': size.default(8 * 1024 * 1024),
    /** An app-dir entry larger than this is refused without being read (and logged). */
    'max-redirect-file': size.default(8 * 1024 * 1024),
    /** The origin clients reach derrick at; makes embedded-mode redirects absolute without trusting Host. */
    'public-url': publicUrl.optional(),
    /** Peers whose X-Forwarded-Proto / X-Forwarded-Host are believed (addresses or CIDR ranges). */
    'trusted-proxies': z.array(addressRange).default([]),
    /** Processes answering on the port (node:cluster); auto: one per CPU (os.availableParallelism). */
    workers: z.union([z.literal('auto'), z.number().int().min(1).max(999)]).default(1),
  })
  .strict();

const upstream = z
  .object({
    prefix: repoName,
    url: z.url({ protocol: /^https?$/ }),
    'tls-verify': z.boolean().default(true),
    auth: auth.optional(),
    include: z.array(z.string()).default(['**']),
    exclude: z.array(z.string()).default([]),
    'tag-ttl': duration.default(300_000),
    policy: z.enum(['Never', 'Always', 'IfNotPresent']).default('IfNotPresent'),
    'stale-on-error': z.boolean().default(true),
    /** How long one upstream request on a client's behalf may take; past it the upstream counts as failed. */
    timeout: duration.default(30_000),
    concurrency: z.number().int().min(1).max(64).default(4),
    /** Serve the referrer tags (cosign's `.sig`, the tag schema's `sha256-<hex>`) of what it caches. */
    referrers: z.boolean().default(true),
    /** Serving an unpublished image manifest starts fills of its blobs before the client asks. */
    'pull-ahead': z.boolean().default(true),
  })
  .strict();

const cache = z
  .object({
    'max-size': size.optional(),
    /** Memory running blob fills may keep for clients behind the download (shared by all fills). */
    'fill-memory': size.default(256 * 1024 * 1024),
  })
  .strict();

/** An edge host a publish is pushed to: rsync over ssh, or a plain rsync daemon. */
// A user or host that starts with "-" would reach ssh and rsync as an option (-oProxyCommand=...).
const targetUrl = z.string().refine((v) => /^(ssh:\/\/[^-/@\s][^/@\s]*@[^-/:\s][^/:\s]*(:\d{1,5})?\/.+|rsync:\/\/[^-/:\s][^/:\s]*(:\d{1,5})?\/[^/\s]+(\/.*)?)$/.test(v), {
  message: 'must be ssh://USER@HOST[:PORT]/PATH or rsync://HOST[:PORT]/MODULE[/PATH]',
});

const target = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'must be letters, digits, ".", "_" or "-"'),
    url: targetUrl,
    /** Private key for ssh:// targets (default: ssh's own choice). */
    'ssh-key': z.string().min(1).optional(),
    /** known_hosts file for ssh:// targets (default: ssh's own). */
    'known-hosts': z.string().min(1).optional(),
    /** Total bandwidth to this target, shared by its transfers (rsync --bwlimit). */
    bandwidth: size.optional(),
    /** Repos sent to this target at once. */
    concurrency: z.number().int().min(1).max(16).default(2),
    /** Connect timeout and rsync's I/O timeout: a dead or stalled edge fails this fast. */
    timeout: duration.default(30_000),
  })
  .strict();

export const ConfigSchema = z
  .object({
    root: z.string().min(1).default('./var'),
    keep: z.number().int().min(0).max(1000).default(2),
    grace: duration.default(600_000),
    concurrency: z.number().int().min(1).max(64).default(4),
    /**
     * Repos a publish run works on at once. Most of a repo's time is waiting (HEADs, fsyncs), so a
     * few in flight fill two cores; blob downloads stay bounded by `concurrency` per repo.
     */
    'repo-concurrency': z.number().int().min(1).max(64).default(4),
    repos: z.array(repo).default([]),
    serve: serve.default(serve.parse({})),
    upstreams: z.array(upstream).default([]),
    cache: cache.default(cache.parse({})),
    /** Every `derrick publish` also writes the static catalog page (as --catalog). */
    catalog: z.boolean().default(false),
    /** Edge hosts each publish is pushed to (derrick push). */
    targets: z.array(target).default([]),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    const names = new Map<string, number>();
    cfg.targets.forEach((t, i) => {
      const prev = names.get(t.name);
      if (prev !== undefined) ctx.addIssue({ code: 'custom', path: ['targets', i, 'name'], message: `repeats targets[${prev}].name "${t.name}"` });
      names.set(t.name, i);
    });
    const seen = new Map<string, number>();
    cfg.repos.forEach((r, i) => {
      const prev = seen.get(r.name);
      if (prev !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['repos', i, 'name'], message: `repeats repos[${prev}].name "${r.name}"` });
      }
      seen.set(r.name, i);
    });
  });

export type RawConfig = z.output<typeof ConfigSchema>;
export type RepoConfig = RawConfig['repos'][number];
export type ServeConfig = RawConfig['serve'];
export type UpstreamConfig = RawConfig['upstreams'][number];
export type TargetConfig = RawConfig['targets'][number];

export interface Config extends RawConfig {
  /** Absolute path of the file it came from. */
  file: string;
}

export class ConfigError extends Error {
  constructor(
    message: string,
    readonly file: string,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** -c/--config, else $DERRICK_CONFIG, else ./derrick.yaml. */
export function configPath(explicit?: string): string {
  return path.resolve(explicit ?? process.env.DERRICK_CONFIG ?? DEFAULT_CONFIG_FILE);
}

function keyPath(p: readonly PropertyKey[]): string {
  let out = '';
  for (const k of p) out += typeof k === 'number' ? `[${k}]` : out ? `.${String(k)}` : String(k);
  return out || '(top level)';
}

export function parseConfig(text: string, file: string, env: NodeJS.ProcessEnv = process.env): Config {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    // linePos is only filled in with prettyErrors; pos (offsets) always is.
    const pos = e.linePos?.[0] ?? (e.pos ? lines.linePos(e.pos[0]) : undefined);
    throw new ConfigError(`${file}:${pos ? `${pos.line}:${pos.col}` : '?'}: invalid YAML: ${e.message.split('\n')[0]}`, file);
  }
  const data = doc.toJS() ?? {};
  const lineOf = (p: readonly PropertyKey[]): string => {
    // Walk up until a node exists, so an unknown or missing key still points at its parent's line.
    for (let n = p.length; n >= 0; n--) {
      const node = doc.getIn(p.slice(0, n) as unknown[], true);
      if (isNode(node) && node.range) return String(lines.linePos(node.range[0]).line);
    }
    return '1';
  };
  const result = ConfigSchema.safeParse(data);
  if (!result.success) {
    const msgs = result.error.issues.map((issue) => {
      let p = issue.path;
      let msg = issue.message;
      if (issue.code === 'unrecognized_keys') {
        const key = issue.keys[0]!;
        p = [...p, key];
        msg = `unknown key "${key}"`;
      }
      return `${file}:${lineOf(p)}: ${keyPath(p)}: ${msg}`;
    });
    throw new ConfigError(msgs.join('\n'), file);
  }
  const cfg = result.data;
  const dir = path.dirname(file);
  const missing: string[] = [];
  const checkAuth = (a: { 'password-env': string } | undefined, p: (string | number)[]) => {
    if (a && env[a['password-env']] === undefined) {
      missing.push(`${file}:${lineOf([...p, 'password-env'])}: ${keyPath([...p, 'password-env'])}: environment variable ${a['password-env']} is not set`);
    }
  };
  cfg.repos.forEach((r, i) => checkAuth(r.auth, ['repos', i, 'auth']));
  cfg.upstreams.forEach((u, i) => checkAuth(u.auth, ['upstreams', i, 'auth']));
  if (cfg.serve.signing && env[cfg.serve.signing['secret-env']] === undefined) {
    missing.push(`${file}:${lineOf(['serve', 'signing', 'secret-env'])}: serve.signing.secret-env: environment variable ${cfg.serve.signing['secret-env']} is not set`);
  }
  // Relative paths resolve against the config file's directory, not the cwd of cron.
  const resolve = (p: string) => path.resolve(dir, p);
  const tls = cfg.serve.tls && { cert: resolve(cfg.serve.tls.cert), key: resolve(cfg.serve.tls.key) };
  if (tls) {
    // Checked now, so a typo exits 2 at start instead of failing the first handshake.
    for (const k of ['cert', 'key'] as const) {
      const problem = unreadable(tls[k]);
      if (problem) missing.push(`${file}:${lineOf(['serve', 'tls', k])}: serve.tls.${k}: cannot read ${tls[k]} (${problem})`);
    }
  }
  if (missing.length) throw new ConfigError(missing.join('\n'), file);
  return {
    ...cfg,
    file,
    root: resolve(cfg.root),
    repos: cfg.repos.map((r) => ({
      ...r,
      from: r.from.transport === 'oci' ? { ...r.from, path: resolve(r.from.path) } : r.from,
    })),
    targets: cfg.targets.map((t) => ({
      ...t,
      'ssh-key': t['ssh-key'] ? resolve(t['ssh-key']) : undefined,
      'known-hosts': t['known-hosts'] ? resolve(t['known-hosts']) : undefined,
    })),
    serve: {
      ...cfg.serve,
      htpasswd: cfg.serve.htpasswd ? resolve(cfg.serve.htpasswd) : undefined,
      'crane-data': cfg.serve['crane-data'] ? resolve(cfg.serve['crane-data']) : undefined,
      tls,
    },
  };
}

/** Why a file can't be read (an error code, or "a directory"), or undefined when it can. */
function unreadable(file: string): string | undefined {
  try {
    fs.accessSync(file, fs.constants.R_OK);
    return fs.statSync(file).isFile() ? undefined : 'not a regular file';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

export function loadConfig(explicit?: string, env: NodeJS.ProcessEnv = process.env): Config {
  const file = configPath(explicit);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(`${file}: cannot read config (${code ?? String(err)})`, file);
  }
  return parseConfig(text, file, env);
}

/** The password for an auth block, read from the environment at use time. */
export function authPassword(a: { 'password-env': string } | undefined, env: NodeJS.ProcessEnv = process.env) {
  return a ? env[a['password-env']] : undefined;
}
