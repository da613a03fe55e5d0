// A sha256 digest as 8 32-bit words, each the value of 8 hex digits: the form the redirector's
// tables hold (redirector/index/compact.ts) and the redirect index stores (redirect-index.ts).
export const WORDS_PER_DIGEST = 8;
const SHA256_PREFIX = 'sha256:';
const SHA256_LENGTH = SHA256_PREFIX.length + 64;

/** Hex digit value of a char code, -1 for anything but [0-9a-f] (a digest is lowercase). */
export const HEX = new Int8Array(256).fill(-1);
for (let i = 0; i < 10; i++) HEX[48 + i] = i;
for (let i = 0; i < 6; i++) HEX[97 + i] = 10 + i;

/** Decodes "sha256:<64 lowercase hex>" into `out` at `at`; false for any other digest. */
export function sha256Words(digest: string, out: Uint32Array, at: number): boolean {
  if (digest.length !== SHA256_LENGTH || !digest.startsWith(SHA256_PREFIX)) return false;
  for (let w = 0; w < WORDS_PER_DIGEST; w++) {
    let v = 0;
    for (let c = 0; c < 8; c++) {
      const code = digest.charCodeAt(SHA256_PREFIX.length + w * 8 + c);
      const h = code < 256 ? HEX[code]! : -1;
      if (h < 0) return false;
      v = (v << 4) | h; // int32 arithmetic; the Uint32Array store reads the bits unsigned
    }
    out[at + w] = v;
  }
  return true;
}

/** The digest stored as words in `words` at `at`. */
export function wordsToSha256(words: Uint32Array, at: number): string {
  let s = SHA256_PREFIX;
  for (let w = 0; w < WORDS_PER_DIGEST; w++) s += words[at + w]!.toString(16).padStart(8, '0');
  return s;
}
