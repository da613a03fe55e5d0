// The seam between where images come from and the store. A registry and an OCI layout both
// implement it, so sync and publish never care which one they talk to.
import type { Readable } from 'node:stream';
import type { Descriptor } from '../../shared/oci.js';

export interface FetchedManifest {
  bytes: Buffer;
  mediaType: string;
  /** sha256 of `bytes`, already checked against any digest the source claimed. */
  digest: string;
}

export interface Source {
  /** How operators wrote it, for messages: "docker://127.0.0.1:5000/library/alpine". */
  readonly description: string;
  listTags(): Promise<string[]>;
  /** The digest a tag points at now, as cheaply as the source allows (HEAD for a registry). */
  resolveTag(tag: string): Promise<Descriptor>;
  /** A manifest by tag or digest. */
  getManifest(ref: string): Promise<FetchedManifest>;
  /** The bytes of a blob; the store verifies digest and size as it writes them. */
  openBlob(desc: Descriptor): Promise<Readable>;
  /**
   * What the source's referrers API lists for a manifest (each with artifactType and annotations),
   * or undefined when the source has none; sync then looks for the referrer tags instead.
   */
  referrers(digest: string): Promise<Descriptor[] | undefined>;
}
