// Reading a few top-level facts of a redirect file (its name, version, protected flag) without
// parsing all of it. The publisher writes these scalars first, so the scan usually stops within
// the first few hundred bytes. Whenever the answer could be wrong, it says "unsure" instead, and
// the caller parses the whole file: a later duplicate key or an escaped key name (JSON.parse
// keeps the last duplicate) must never make a protected repo look public.

const HEAD_MAX = 65536;
/** Decoded first: the scalars of every real file fit. The whole head is decoded only when they run past it. */
const PREFIX = 2048;

export type Scalar = string | number | boolean | null;

// One top-level member whose value is a scalar, then a ',' or the closing '}'.
const MEMBER =
  /\s*("(?:[^"\\\x00-\x1f]|\\.)*")\s*:\s*("(?:[^"\\\x00-\x1f]|\\.)*"|true|false|null|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*([,}])/y;
// A member whose value is an array or object: where the scalars end for sure.
const NON_SCALAR = /\s*"(?:[^"\\\x00-\x1f]|\\.)*"\s*:\s*[[{]/y;

interface Members {
  out: Map<string, Scalar>;
  closed: boolean;
  /** Where the scalar members end, in `text`. */
  end: number;
  /** The scan stopped where it can't tell why (the decoded text may have cut a member). */
  unsure: boolean;
  text: string;
}

/** The top-level scalar members at the start of the first `n` bytes of `buf`; undefined if no '{' opens them. */
function members(buf: Buffer, n: number, keys: readonly string[]): Members | undefined {
  const text = buf.toString('utf8', 0, n);
  const open = /^\s*\{/.exec(text);
  if (!open) return undefined;
  MEMBER.lastIndex = open[0].length;
  const out = new Map<string, Scalar>();
  let end = MEMBER.lastIndex;
  for (;;) {
    const m = MEMBER.exec(text);
    if (!m) break;
    const key = JSON.parse(m[1]!) as string;
    if (keys.includes(key)) out.set(key, JSON.parse(m[2]!) as Scalar);
    end = MEMBER.lastIndex;
    if (m[3] === '}') return { out, closed: true, end, unsure: false, text };
  }
  NON_SCALAR.lastIndex = end;
  return { out, closed: false, end, unsure: !NON_SCALAR.test(text), text };
}

/**
 * The values of `keys` among the file's top-level scalar members, or undefined when they can't be
 * known for sure without a full parse (a key may come after the first non-scalar value, or be
 * repeated or spelled with escapes there). An absent key is reported as missing from the result.
 */
export function scanHead(buf: Buffer, keys: readonly string[]): Map<string, Scalar> | undefined {
  // Scalars come first; 64 KiB of them is already more than any real file has.
  const limit = Math.min(buf.length, HEAD_MAX);
  let head = members(buf, Math.min(limit, PREFIX), keys);
  if ((!head || head.unsure) && limit > PREFIX) head = members(buf, limit, keys);
  if (!head) return undefined;
  if (head.closed) return head.out;
  // The rest is unscanned: any mention of a key we want, or any \u escape (a key could be spelled
  // with one), means a later member might override what we saw. Searched as bytes, not decoded:
  // these needles are ASCII, and in UTF-8 an ASCII byte is always that character.
  const scanned = head.text.slice(0, head.end);
  // A byte that did not decode (U+FFFD) would make the byte offset below overshoot: unsure.
  if (scanned.includes('\uFFFD')) return undefined;
  const from = Buffer.byteLength(scanned);
  if (buf.indexOf('\\u', from) !== -1) return undefined;
  // Without its opening quote: every '"key"' holds 'key"', and a needle that starts with a rare
  // byte is found 3x faster than one starting with '"', which every string value has.
  for (const k of keys) if (buf.indexOf(JSON.stringify(k).slice(1), from) !== -1) return undefined;
  return head.out;
}
