// A strict JSON (RFC 8259) reader over bytes, for scan.ts: it accepts what JSON.parse accepts,
// builds ordinary values where asked, and lets its caller read the big maps its own way. A value
// nested over MAX_DEPTH is refused rather than overflowing the stack.
import { BadFileError } from './app-entry.js';
import { HEX } from './compact.js';

export type Json = Record<string, unknown>;

export const QUOTE = 0x22;
export const BACKSLASH = 0x5c;
const MAX_DEPTH = 64;

const ESCAPES: Record<number, string> = { 0x22: '"', 0x5c: '\\', 0x2f: '/', 0x62: '\b', 0x66: '\f', 0x6e: '\n', 0x72: '\r', 0x74: '\t' };

const hexDigit = (c: number | undefined) => (c === undefined ? -1 : c >= 0x41 && c <= 0x46 ? c - 0x41 + 10 : HEX[c]!);
const isDigit = (c: number | undefined) => c !== undefined && c >= 0x30 && c <= 0x39;

export class JsonReader {
  pos = 0;
  constructor(readonly buf: Buffer) {}

  fail(what: string): never {
    throw new BadFileError(`not valid JSON: ${what} at position ${this.pos}`);
  }

  /** Skips whitespace; the byte after it. */
  peek(): number | undefined {
    const buf = this.buf;
    let pos = this.pos;
    for (;;) {
      const c = buf[pos];
      if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) {
        this.pos = pos;
        return c;
      }
      pos++;
    }
  }

  expect(c: number): void {
    if (this.peek() !== c) this.fail(`expected '${String.fromCharCode(c)}'`);
    this.pos++;
  }

  /** After a member or an element: true when another follows (a ',' was read), false at `close`. */
  more(close: number): boolean {
    const c = this.peek();
    this.pos++;
    if (c === 0x2c) return true;
    if (c === close) return false;
    this.pos--;
    return this.fail(`expected ',' or '${String.fromCharCode(close)}'`);
  }

  /** Opens an object or array at pos; false when it is empty (its end is read too). */
  open(close: number): boolean {
    this.pos++;
    if (this.peek() !== close) return true;
    this.pos++;
    return false;
  }

  string(): string {
    if (this.peek() !== QUOTE) this.fail('expected a string');
    const buf = this.buf;
    const start = ++this.pos;
    for (let pos = start; ; pos++) {
      const c = buf[pos];
      if (c === QUOTE) {
        this.pos = pos + 1;
        return buf.toString('utf8', start, pos);
      }
      if (c === BACKSLASH) {
        this.pos = pos;
        return this.escaped(start);
      }
      if (c === undefined || c < 0x20) {
        this.pos = pos;
        this.fail(c === undefined ? 'unterminated string' : 'control character in a string');
      }
    }
  }

  /** The rest of a string that has escapes, from `start` (just after its quote). */
  private escaped(start: number): string {
    const buf = this.buf;
    let out = buf.toString('utf8', start, this.pos);
    let from = this.pos;
    for (;;) {
      const c = buf[this.pos];
      if (c === undefined) this.fail('unterminated string');
      if (c === QUOTE) return out + buf.toString('utf8', from, this.pos++);
      if (c! < 0x20) this.fail('control character in a string');
      if (c !== BACKSLASH) {
        this.pos++;
        continue;
      }
      out += buf.toString('utf8', from, this.pos);
      const e = buf[this.pos + 1]!;
      this.pos += 2;
      if (e === 0x75) {
        let v = 0;
        for (let k = 0; k < 4; k++) {
          const h = hexDigit(buf[this.pos + k]);
          if (h < 0) this.fail('bad \\u escape');
          v = v * 16 + h;
        }
        out += String.fromCharCode(v);
        this.pos += 4;
      } else {
        if (ESCAPES[e] === undefined) this.fail('bad escape');
        out += ESCAPES[e];
      }
      from = this.pos;
    }
  }

  private digits(): number {
    const from = this.pos;
    while (isDigit(this.buf[this.pos])) this.pos++;
    return this.pos - from;
  }

  number(): number {
    const buf = this.buf;
    this.peek();
    const start = this.pos;
    if (buf[this.pos] === 0x2d) this.pos++;
    if (buf[this.pos] === 0x30) this.pos++;
    else if (!this.digits()) this.fail('bad number');
    let plain = true;
    if (buf[this.pos] === 0x2e) {
      this.pos++;
      plain = false;
      if (!this.digits()) this.fail('bad number');
    }
    if (buf[this.pos] === 0x65 || buf[this.pos] === 0x45) {
      this.pos++;
      plain = false;
      if (buf[this.pos] === 0x2b || buf[this.pos] === 0x2d) this.pos++;
      if (!this.digits()) this.fail('bad number');
    }
    // Sizes are plain non-negative integers: no string for them.
    if (plain && buf[start] !== 0x2d && this.pos - start <= 15) {
      let v = 0;
      for (let k = start; k < this.pos; k++) v = v * 10 + buf[k]! - 0x30;
      return v;
    }
    return Number(buf.toString('latin1', start, this.pos));
  }

  /** Whether a number starts here (a size must be one). */
  atNumber(): boolean {
    const c = this.peek();
    return c === 0x2d || isDigit(c);
  }

  private literal(word: string, value: unknown): unknown {
    for (let k = 0; k < word.length; k++) if (this.buf[this.pos + k] !== word.charCodeAt(k)) this.fail('unexpected token');
    this.pos += word.length;
    return value;
  }

  value(depth: number): unknown {
    const c = this.peek();
    if (c === QUOTE) return this.string();
    if (c === 0x7b) return this.object(depth + 1);
    if (c === 0x5b) return this.array(depth + 1);
    if (c === 0x74) return this.literal('true', true);
    if (c === 0x66) return this.literal('false', false);
    if (c === 0x6e) return this.literal('null', null);
    if (c === 0x2d || isDigit(c)) return this.number();
    return this.fail(c === undefined ? 'unexpected end' : 'unexpected token');
  }

  /** An object at pos. `member` may read a member's value itself (returning true) instead of value(). */
  object(depth: number, member?: (o: Json, key: string) => boolean): Json {
    if (depth > MAX_DEPTH) this.fail('nested too deeply');
    const o: Json = {};
    if (!this.open(0x7d)) return o;
    do {
      const k = this.string();
      this.expect(0x3a);
      if (!member?.(o, k)) setMember(o, k, this.value(depth));
    } while (this.more(0x7d));
    return o;
  }

  private array(depth: number): unknown[] {
    if (depth > MAX_DEPTH) this.fail('nested too deeply');
    const a: unknown[] = [];
    if (!this.open(0x5d)) return a;
    do a.push(this.value(depth));
    while (this.more(0x5d));
    return a;
  }

  /** Only whitespace may follow the value read. */
  end(): void {
    if (this.peek() !== undefined) this.fail('unexpected data after the end');
  }
}

/** As JSON.parse sets a member: "__proto__" is an own property, not the prototype. */
export function setMember(o: Json, k: string, v: unknown): void {
  if (k === '__proto__') Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
  else o[k] = v;
}
