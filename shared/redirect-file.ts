// The redirect file: crane's v4 format, extended with what derrick needs to answer the whole
// pull API from memory. One schema, used by the publisher to write and the redirector to read.
// crane's own v1-v3 files parse too, so an existing crane data dir can be served.
import { z } from 'zod';
import { isDigestSyntax, isValidName, isValidTag } from './oci.js';

export const REDIRECT_FILE_TYPE = 'pulp-docker-redirect';

const digest = z.string().refine(isDigestSyntax, { message: 'is not a digest' });
const registryId = z.string().refine(isValidName, { message: 'is not a valid repository name' });

const platform = z
  .object({
    architecture: z.string(),
    os: z.string(),
    variant: z.string().optional(),
    'os.version': z.string().optional(),
    'os.features': z.array(z.string()).optional(),
  })
  .loose();

const descriptor = z
  .object({
    mediaType: z.string(),
    digest,
    size: z.number().int().nonnegative(),
    artifactType: z.string().optional(),
    annotations: z.record(z.string(), z.string()).optional(),
    platform: platform.optional(),
  })
  .loose();

export const ManifestEntrySchema = z
  .object({
    mediaType: z.string(),
    size: z.number().int().nonnegative(),
    /** An index's children, in order, so the amd64 fallback needs no disk read. */
    children: z.array(z.object({ digest, platform: platform.optional() })).optional(),
  })
  .strict();

/** derrick's extension; crane ignores keys it doesn't know. */
export const DerrickDataSchema = z
  .object({
    version: z.literal(1),
    /** Master directory name; also the publish time. */
    master: z.string(),
    published: z.string(),
    tags: z.record(z.string().refine(isValidTag, { message: 'is not a valid tag' }), digest),
    manifests: z.record(digest, ManifestEntrySchema),
    /** Every config and layer blob: digest -> size. */
    blobs: z.record(digest, z.number().int().nonnegative()),
    /** subject digest -> descriptors of the manifests that refer to it. */
    referrers: z.record(digest, z.array(descriptor)).default({}),
  })
  .strict();

const base = {
  type: z.literal(REDIRECT_FILE_TYPE).optional(),
  repository: z.string().min(1),
  'repo-registry-id': registryId,
  url: z.string().min(1),
  protected: z.boolean().default(false),
};

export const CraneV1Schema = z
  .object({ ...base, version: z.literal(1), images: z.array(z.object({ id: z.string() }).loose()), tags: z.record(z.string(), z.string()) })
  .loose();
export const CraneV2Schema = z.object({ ...base, version: z.literal(2) }).loose();
export const CraneV3Schema = z.object({ ...base, version: z.literal(3), schema2_data: z.array(z.string()) }).loose();

export const RedirectFileSchema = z
  .object({
    ...base,
    version: z.literal(4),
    schema2_data: z.array(z.string()),
    manifest_list_data: z.array(z.string()),
    /** tag -> [amd64 child digest, schema version 1|2]: crane's fallback for list-unaware clients. */
    manifest_list_amd64_tags: z.record(z.string(), z.tuple([digest, z.number().int()])),
    derrick: DerrickDataSchema.optional(),
  })
  .loose()
  .superRefine((file, ctx) => {
    const d = file.derrick;
    if (!d) return;
    // Every tag must resolve inside the file, so the redirector never meets a dangling one.
    for (const [tag, dg] of Object.entries(d.tags)) {
      if (!d.manifests[dg]) ctx.addIssue({ code: 'custom', path: ['derrick', 'tags', tag], message: `points at ${dg}, which is not in manifests` });
    }
    // An index's children may be absent: a pull-through cache publishes an index before every
    // platform was pulled, and fetches a missing one on its first request.
  });

export type RedirectFile = z.output<typeof RedirectFileSchema>;
export type DerrickData = z.output<typeof DerrickDataSchema>;
export type ManifestEntry = z.output<typeof ManifestEntrySchema>;
export type CraneV1File = z.output<typeof CraneV1Schema>;
export type CraneV2File = z.output<typeof CraneV2Schema>;
export type CraneV3File = z.output<typeof CraneV3Schema>;
export type AnyRedirectFile = CraneV1File | CraneV2File | CraneV3File | RedirectFile;

export class RedirectFileError extends Error {}

function formatIssues(err: z.ZodError): string {
  return err.issues
    .slice(0, 5)
    .map((i) => `${i.path.join('.') || '(top level)'}: ${i.message}`)
    .join('; ');
}

/** Parses any crane version (1-4) or derrick's extended v4; throws RedirectFileError naming the key. */
export function parseRedirectFile(text: string): AnyRedirectFile {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new RedirectFileError(`not valid JSON: ${(err as Error).message}`);
  }
  return parseRedirectJson(json);
}

/** parseRedirectFile for JSON already parsed (a caller that pre-checks it first). */
export function parseRedirectJson(json: unknown): AnyRedirectFile {
  const version = (json as { version?: unknown } | null)?.version;
  const schema =
    version === 1 ? CraneV1Schema : version === 2 ? CraneV2Schema : version === 3 ? CraneV3Schema : version === 4 ? RedirectFileSchema : null;
  if (!schema) throw new RedirectFileError(`version ${JSON.stringify(version)} is not supported (1-4)`);
  const r = schema.safeParse(json);
  if (!r.success) throw new RedirectFileError(formatIssues(r.error));
  return r.data as AnyRedirectFile;
}

export function serializeRedirectFile(file: RedirectFile): string {
  const r = RedirectFileSchema.safeParse(file);
  if (!r.success) throw new RedirectFileError(`refusing to write an invalid redirect file: ${formatIssues(r.error)}`);
  return JSON.stringify(file, null, 1) + '\n';
}
