// The plain data the catalog pages are rendered from. The live server and the static copy each
// build it their own way (redirector/ui/, publisher/static-catalog.ts); the rendering is shared.

export type ManifestKind = 'image' | 'index' | 'artifact';

export interface PlatformRow {
  /** os/arch[/variant], or "unknown" when the index doesn't say. */
  platform: string;
  digest: string;
  /** Compressed bytes (config + layers); undefined when the child is not published (yet). */
  size?: number;
}

export interface TagRow {
  tag: string;
  digest: string;
  mediaType: string;
  kind: ManifestKind;
  /** One row per child of an index; one row (or none, for an artifact) for an image. */
  platforms: PlatformRow[];
  /** Compressed bytes: config + layers, summed over the platforms of an index. */
  size?: number;
  signed: boolean;
  annotations: Record<string, string>;
}

/** A pull-through route: clients pull <prefix>/<upstream repo>:<tag>. */
export interface RouteView {
  prefix: string;
  upstream: string;
}

export interface RepoView {
  name: string;
  /** ISO time of the publish being served (its master directory's timestamp). */
  published?: string;
  tags: TagRow[];
  /** A crane data repo: served by crane's redirects; tags live in its own tags/list. */
  crane?: { repository: string; url: string };
  /** Set when the repo is a pull-through cache repo. */
  route?: RouteView & { upstreamRepo: string };
}

export interface ListView {
  /** The names on this page. */
  names: string[];
  /** Names matching the query, over all pages; a lower bound unless `exact`. */
  total: number;
  /** false: the live page stopped counting once it had this page (anonymous, cold catalog). */
  exact?: boolean;
  page: number;
  pages: number;
  query: string;
  routes: RouteView[];
}

/** What every page knows about where it is served. */
export interface PageContext {
  /** host[:port] clients pull from. */
  registryHost: string;
  /** Pull lines for podman/skopeo/ctr say the registry is plain http. */
  plainHttp: boolean;
  /** Whoever is signed in, when the page was rendered for one. */
  user?: string;
  /** Live pages can offer sign-in; the static copy (public repos only) can't. */
  canSignIn: boolean;
  /** The static copy: no server filters ?q=, so the script does on load. */
  static?: boolean;
}

export const PAGE_SIZE = 100;
