import { describe, expect, it } from 'vitest';
import { signedDigests } from './signed.js';

const A = 'sha256:' + 'a'.repeat(64);
const B = 'sha256:' + 'b'.repeat(64);
const C = 'sha256:' + 'c'.repeat(64);

describe('signedDigests', () => {
  it('finds cosign signature tags and sigstore referrers, nothing else', () => {
    const tags = ['latest', `sha256-${'a'.repeat(64)}.sig`, `sha256-${'c'.repeat(64)}.att`];
    const referrers = {
      [B]: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: C, size: 1, artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json' }],
      [C]: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: A, size: 1, artifactType: 'application/spdx+json' }],
    };
    expect([...signedDigests(tags, referrers)].sort()).toEqual([A, B]);
  });
});
