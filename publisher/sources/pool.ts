// The Sources of one publish run. Repos that share an origin share its reader: one registry
// client (with its connections, scheme detection and token cache) per registry host and
// credentials, and one reader per OCI layout directory, so index.json is read once per run
// however many repos name that layout.
import { authPassword, type Config, type RepoConfig } from '../../shared/config.js';
import { createRegistryClient, type RegistryClient } from '../../shared/registry/client.js';
import { ociLayoutSource } from './oci-layout.js';
import { registrySource } from './registry.js';
import type { Source } from './source.js';

export interface SourcePool {
  sourceFor(repo: RepoConfig): Source;
}

export function createSourcePool(config: Pick<Config, 'concurrency' | 'repo-concurrency'>): SourcePool {
  const layouts = new Map<string, Source>();
  const clients = new Map<string, RegistryClient>();
  // A client's bound covers every repo using it: as many requests as that many repos would
  // have had with a client each, so sharing changes nothing for one repo's downloads.
  const perHost = config.concurrency * config['repo-concurrency'];

  return {
    sourceFor(repo) {
      if (repo.from.transport === 'oci') {
        const dir = repo.from.path;
        let s = layouts.get(dir);
        if (!s) layouts.set(dir, (s = ociLayoutSource(dir)));
        return s;
      }
      const { registry, repository } = repo.from;
      const username = repo.auth?.username;
      const password = authPassword(repo.auth);
      // Different credentials are different principals (and token caches): never mix them.
      const key = JSON.stringify([registry, repo['tls-verify'], username ?? null, password ?? null]);
      let client = clients.get(key);
      if (!client) {
        client = createRegistryClient({ registry, tlsVerify: repo['tls-verify'], username, password, concurrency: perHost });
        clients.set(key, client);
      }
      return registrySource({ registry, repository }, { client });
    },
  };
}
