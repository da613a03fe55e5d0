// Reading a few top-level facts of a redirect file (its name, version, protected flag) without
// parsing all of it. The publisher writes these scalars first, so the scan usually stops within
// the first few hundred bytes. Whenever the answer could be wrong, it says "unsure" instead, and
// the caller parses the whole file: a later duplicate key or an escaped key name (JSON.parse
// keeps the last duplicate) must never make a protected repo look public.

const HEAD_MAX = 65536;

export type Scalar = string | number | boolean | null;

// One top-level member whose value is a scalar, then a ',' or the closing '}'.
const MEMBER =
  /\s*("(?:[^"\\\x00-\x1f]|\\.)*")\s*:\s*("(?:[^"\\\x00-\x1f]|\\.)*"|true|false|null|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*([,}])/y;

/**
 * The values of `keys` among the file's top-level scalar members, or undefined when they can't be
 * known for sure without a full parse (a key may come after the first non-scalar value, or be
 * repeated or spelled with escapes there). An absent key is reported as missing from the result.
 */
export function scanHead(buf: Buffer, keys: readonly string[]): Map<string, Scalar> | undefined {
  // Scalars come first; 64 KiB of them is already more than any real file has.
  const text = buf.subarray(0, Math.min(buf.length, HEAD_MAX)).toString('utf8');
  const open = /^\s*\{/.exec(text);
  if (!open) return undefined;
  MEMBER.lastIndex = open[0].length;
  const out = new Map<string, Scalar>();
  let closed = false;
  let end = MEMBER.lastIndex;
  for (;;) {
    const m = MEMBER.exec(text);
    if (!m) break;
    const key = JSON.parse(m[1]!) as string;
    if (keys.includes(key)) out.set(key, JSON.parse(m[2]!) as Scalar);
    end = MEMBER.lastIndex;
    if (m[3] === '}') {
      closed = true;
      break;
    }
  }
  if (closed) return out;
  // The rest is unscanned: any mention of a key we want, or any \u escape (a key could be
  // spelled with one), means a later member might override what we saw.
  if (buf.length <= HEAD_MAX) {
    // All of it is in `text` already: searching the string is faster than the bytes.
    if (text.includes('\\u', end)) return undefined;
    for (const k of keys) if (text.includes(JSON.stringify(k), end)) return undefined;
    return out;
  }
  const rest = buf.subarray(Buffer.byteLength(text.slice(0, end)));
  if (rest.includes('\\u')) return undefined;
  for (const k of keys) if (rest.includes(JSON.stringify(k))) return undefined;
  return out;
}
