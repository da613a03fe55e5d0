// A loaded repo -> the view its page renders, read lazily from the master (the index keeps no
// layer sizes). A version never changes once published, so its view is kept beside it.
import fs from 'node:fs/promises';
import path from 'node:path';
import { describeRepo } from '../../shared/catalog-page/describe.js';
import type { RepoView } from '../../shared/catalog-page/model.js';
import { blobRelPath } from '../../shared/layout.js';
import { isDigestSyntax } from '../../shared/oci.js';
import type { IndexedRepo, RepoIndex, RepoVersion } from '../index.js';

const views = new WeakMap<RepoVersion, Promise<RepoView>>();

function craneView(repo: IndexedRepo): RepoView {
  const c = repo.crane!;
  return { name: repo.name, tags: [], crane: { repository: c.repository, url: c.url } };
}

export function repoView(index: RepoIndex, repo: IndexedRepo): Promise<RepoView> {
  if (repo.kind === 'crane') return Promise.resolve(craneView(repo));
  const version = repo.current;
  let view = views.get(version);
  if (!view) {
    const dir = version.dir;
    view = describeRepo({
      name: repo.name,
      master: version.master,
      tags: repo.tags,
      manifests: version.manifests,
      referrers: repo.referrers,
      readManifest: (digest) => index.readManifest(version, digest),
      readConfig: dir
        ? (digest) => (isDigestSyntax(digest) ? fs.readFile(path.join(dir, blobRelPath(digest))) : Promise.reject(new Error('bad digest')))
        : undefined,
    });
    views.set(version, view);
    // A failed read is not remembered: the next view tries again.
    view.catch(() => views.delete(version));
  }
  return view;
}
