// Who may see a name in _catalog, without loading every repo: the config's repos[].protected,
// what a load learned, else one read of the file's head, remembered until the entry changes.
// Anything unsure counts as protected (fail closed): hiding a public name costs less than
// showing a protected one.
import { readEntry } from './app-entry.js';
import { scanHead } from './head-scan.js';
import { eachLimited, type CraneEntry } from './listing.js';
import type { Loader } from './loader.js';

export interface CatalogSources {
  loader: Loader;
  protectedNames?: ReadonlySet<string>;
  isApp(name: string): boolean;
  appFile(name: string): string;
  crane(name: string): CraneEntry | undefined;
  width: number;
}

export function createCatalog(s: CatalogSources) {
  /** true/false when known without a read; undefined when the file's head must be read. */
  const protectionOf = (name: string): boolean | undefined => {
    if (s.protectedNames?.has(name)) return true;
    const loaded = s.loader.lru.peek(name);
    if (loaded) return loaded.protected;
    if (s.isApp(name)) return s.loader.known.get(name)?.protected;
    return s.crane(name)?.protected ?? true;
  };

  const learn = async (name: string) => {
    const k = s.loader.knownOf(name);
    try {
      const e = await s.loader.probe(name, s.appFile(name));
      if (!e || k.seenBad) return void (k.protected = true);
      s.loader.countRead();
      const buf = await readEntry(e);
      const head = scanHead(buf, ['protected', 'repo-registry-id']) ?? new Map(Object.entries(JSON.parse(buf.toString('utf8')) as object));
      k.protected = head.get('repo-registry-id') !== name || (head.has('protected') && head.get('protected') !== false);
    } catch {
      k.protected = true;
    }
  };

  /** The names an (un)authenticated client may see; a Promise while some must be read. */
  return (all: string[], authed: boolean): string[] | Promise<string[]> => {
    if (authed) return all;
    const unknown = all.filter((n) => protectionOf(n) === undefined);
    const visible = () => all.filter((n) => protectionOf(n) === false);
    return unknown.length ? eachLimited(unknown, s.width, learn).then(visible) : visible();
  };
}
