// A compact binary codec for the values that dominate IPC traffic: numbers, strings, booleans,
// null/undefined, plain objects, dense arrays, Buffers and Uint8Arrays. It is several times
// faster than v8.serialize for small items. Anything else (Map, Date, class instances, cycles,
// shared references, BigInt, holes, this library's handles...) makes `encodeFast` return
// false and the caller falls back to v8.serialize (lib/reduction.ts).
//
// Layout: one type byte per value, little-endian fixed-width fields.
//   0 undefined  1 null  2 true  3 false
//   4 int32 (4)  5 float64 (8)
//   6 string: u32 byteLength + UTF-8       7 ascii string: u8 length + bytes (length < 256)
//   8 array: u32 count + values            9 object: u32 count + (key string, value)*
//  10 Buffer: u32 length + bytes          11 Uint8Array: u32 length + bytes
//  12 array of int32s: u32 count + int32*  13 array of numbers: u32 count + float64*
//     (dense arrays of 8 or more numbers: no type byte per element, decoded in one loop)

import { native } from './native';

const T_UNDEF = 0, T_NULL = 1, T_TRUE = 2, T_FALSE = 3, T_I32 = 4, T_F64 = 5, T_STR = 6, T_ASCII = 7;
const T_ARR = 8, T_OBJ = 9, T_BUF = 10, T_U8 = 11, T_I32ARR = 12, T_F64ARR = 13;

/** Number arrays at least this long are packed (T_I32ARR / T_F64ARR). */
const PACK_MIN = 8;

/** Bytes at or above this size are not copied into the scratch buffer but referenced. */
const BIG = 4096;
const MAX_DEPTH = 200;

const objectProto = Object.prototype;
const arrayProto = Array.prototype;

/**
 * A new array of length n whose elements are generic (tagged) from birth, as v8.deserialize
 * makes them. V8 remembers, per allocation site, the most general element kind an array made
 * there ever held: once a decoded array held a double (a result [pid, 0.5]), every later array
 * of that site started as a double array, integers went in unboxed and came out as heap numbers,
 * and a user function optimized for small integers deoptimized on every call (a pool worker
 * forked after such a decode factorised 4x slower). Storing undefined first makes the site, and
 * this array, generic: integers stay small integers.
 */
export function newArray(n: number): unknown[] {
  const a = new Array<unknown>(n);
  if (n > 0) a[0] = undefined;
  return a;
}

/**
 * Part of an array, encoded as the array `arr.slice(start, end)` would be, without making that
 * array (a pool's map chunks: 8 x 25k-element slices were a fifth of the parent's work).
 * Only this fast codec understands it (encodeMessage materialises it for the general one).
 */
export class ArrayRange {
  constructor(
    readonly arr: readonly unknown[],
    readonly start: number,
    readonly end: number,
  ) {}

  slice(): unknown[] {
    return this.arr.slice(this.start, this.end);
  }
}

/**
 * Copies a[start..end) into out (from index 0) while the elements are int32 numbers (not -0);
 * returns the index of the first element that is not (end if none).
 *
 * The element loops of the packed number arrays are small functions of their own, so that V8
 * optimizes them after a few thousand turns (compiling a small function takes a fraction of a
 * millisecond). Inside the encoder's and decoder's large methods, the first big map of a process
 * ran them in the interpreter at ~50 ns an element: 20 ms of the parent's time for 200k items.
 */
function packInts(a: readonly unknown[], start: number, end: number, out: Int32Array): number {
  for (let i = start; i < end; i++) {
    const x = a[i];
    if (typeof x !== 'number' || (x | 0) !== x || (x === 0 && 1 / x < 0)) return i;
    out[i - start] = x;
  }
  return end;
}

/** Copies a[from..end) into out[from - start..] while the elements are numbers; see packInts. */
function packDoubles(a: readonly unknown[], start: number, from: number, end: number, out: Float64Array): number {
  for (let i = from; i < end; i++) {
    const x = a[i];
    if (typeof x !== 'number') return i;
    out[i - start] = x;
  }
  return end;
}

/** target[base + i] = view[i] for every i (see packInts). */
function unpackInts(view: Int32Array, target: unknown[], base: number): void {
  const n = view.length;
  for (let i = 0; i < n; i++) target[base + i] = view[i];
}
function unpackDoubles(view: Float64Array, target: unknown[], base: number): void {
  const n = view.length;
  for (let i = 0; i < n; i++) target[base + i] = view[i];
}

/**
 * Encodes into a reusable scratch buffer. The result is a list of chunks that stay valid until
 * the next `begin()`: small values are packed into the scratch, large Buffers are referenced.
 */
export class Encoder {
  #buf: Buffer = Buffer.allocUnsafeSlow(64 * 1024);
  #dv = new DataView(this.#buf.buffer, this.#buf.byteOffset, this.#buf.length);
  #pos = 0;
  #start = 0;
  #chunks: Uint8Array[] = [];
  #total = 0;
  #seen: Set<object> | null = null;

  // The result of finish() and its chunk list are reused by the next message (like the scratch
  // bytes they point into), and so are views of the scratch's first bytes: a stream of small
  // items then encodes without allocating (a third of a small queue put was garbage).
  #result: { chunks: Uint8Array[]; length: number } = { chunks: this.#chunks, length: 0 };
  #heads: Array<Uint8Array | undefined> = [];
  // A message of one chunk (every small one) is returned in this array of one, never emptied:
  // emptying an array (`length = 0`) drops its backing store, and the next push allocates a new
  // one (152 bytes per small put, 30 MB of garbage for 200k items, measured).
  #one: Uint8Array[] = [Buffer.alloc(0)];

  begin(): void {
    this.#pos = 0;
    this.#start = 0;
    if (this.#chunks.length !== 0) this.#chunks.length = 0;
    this.#total = 0;
    this.#seen = null;
  }

  /** The encoded chunks and their total length (valid until the next begin()). */
  finish(): { chunks: Uint8Array[]; length: number } {
    if (this.#pos > this.#start) {
      let view: Uint8Array | undefined;
      if (this.#start === 0 && this.#pos < 256) {
        view = this.#heads[this.#pos] ??= this.#buf.subarray(0, this.#pos);
      } else {
        view = this.#buf.subarray(this.#start, this.#pos);
      }
      this.#total += this.#pos - this.#start;
      this.#start = this.#pos;
      if (this.#chunks.length === 0) {
        this.#one[0] = view;
        this.#result.chunks = this.#one;
        this.#result.length = this.#total;
        return this.#result;
      }
      this.#chunks.push(view);
    }
    this.#result.chunks = this.#chunks;
    this.#result.length = this.#total;
    return this.#result;
  }

  /** Appends raw bytes (copied if small, referenced if large). */
  bytes(b: Uint8Array): void {
    if (b.length >= BIG) {
      this.#flushSegment();
      this.#chunks.push(b);
      this.#total += b.length;
    } else {
      this.#ensure(b.length);
      this.#buf.set(b, this.#pos);
      this.#pos += b.length;
    }
  }

  byte(v: number): void {
    this.#ensure(1);
    this.#buf[this.#pos++] = v;
  }

  #flushSegment(): void {
    if (this.#pos > this.#start) {
      this.#chunks.push(this.#buf.subarray(this.#start, this.#pos));
      this.#total += this.#pos - this.#start;
    }
    this.#start = this.#pos;
  }

  #ensure(n: number): void {
    if (this.#pos + n <= this.#buf.length) return;
    // Chunks may reference the current scratch: keep it for them and continue in a new one.
    this.#flushSegment();
    const size = Math.max(this.#buf.length * 2, n + 1024);
    this.#buf = Buffer.allocUnsafeSlow(size);
    this.#dv = new DataView(this.#buf.buffer, this.#buf.byteOffset, this.#buf.length);
    this.#heads = []; // views of the old scratch
    this.#pos = 0;
    this.#start = 0;
  }

  /** Encodes v; false if v needs the general codec (the encoder is then in an undefined state). */
  value(v: unknown, depth = 0): boolean {
    switch (typeof v) {
      case 'number': {
        this.#ensure(9);
        if ((v | 0) === v && !(v === 0 && 1 / v < 0)) {
          this.#buf[this.#pos] = T_I32;
          this.#dv.setInt32(this.#pos + 1, v, true);
          this.#pos += 5;
        } else {
          this.#buf[this.#pos] = T_F64;
          this.#dv.setFloat64(this.#pos + 1, v, true);
          this.#pos += 9;
        }
        return true;
      }
      case 'string':
        this.#string(v);
        return true;
      case 'boolean':
        this.byte(v ? T_TRUE : T_FALSE);
        return true;
      case 'undefined':
        this.byte(T_UNDEF);
        return true;
      case 'object': {
        if (v === null) {
          this.byte(T_NULL);
          return true;
        }
        if (depth > MAX_DEPTH) return false;
        const proto = Object.getPrototypeOf(v);
        if (proto === arrayProto) return this.#array(v as unknown[], v, 0, (v as unknown[]).length, depth);
        if (v instanceof ArrayRange) return this.#array(v.arr, v, v.start, v.end, depth);
        if (proto === objectProto || proto === null) return this.#object(v as Record<string, unknown>, depth);
        if (v instanceof Uint8Array && proto !== null) {
          const isBuf = Buffer.isBuffer(v);
          if (!isBuf && proto !== Uint8Array.prototype) return false;
          // Shared memory (a RawArray('B')...) travels by name on the general path, not as a copy.
          if (v.buffer instanceof SharedArrayBuffer) return false;
          if (!this.#mark(v)) return false;
          this.#ensure(5);
          this.#buf[this.#pos] = isBuf ? T_BUF : T_U8;
          this.#dv.setUint32(this.#pos + 1, v.length, true);
          this.#pos += 5;
          this.bytes(v);
          return true;
        }
        return false;
      }
      default:
        return false;
    }
  }

  // Shared references and cycles are left to v8.serialize, which preserves identity.
  #mark(o: object): boolean {
    if (this.#seen === null) this.#seen = new Set();
    else if (this.#seen.has(o)) return false;
    this.#seen.add(o);
    return true;
  }

  #string(s: string): void {
    const n = s.length;
    if (n < 256) {
      this.#ensure(2 + n);
      const buf = this.#buf;
      const p = this.#pos + 2;
      let i = 0;
      for (; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) break;
        buf[p + i] = c;
      }
      if (i === n) {
        buf[this.#pos] = T_ASCII;
        buf[this.#pos + 1] = n;
        this.#pos = p + n;
        return;
      }
    }
    const max = n * 3;
    this.#ensure(5 + max);
    const written = this.#buf.utf8Write(s, this.#pos + 5, max);
    this.#buf[this.#pos] = T_STR;
    this.#dv.setUint32(this.#pos + 1, written, true);
    this.#pos += 5 + written;
  }

  #array(a: readonly unknown[], self: object, start: number, end: number, depth: number): boolean {
    if (!this.#mark(self)) return false;
    const n = end - start;
    if (n >= PACK_MIN && typeof a[start] === 'number') {
      // All numbers (holes are undefined, so they fail the test): packed, int32 when they all fit.
      const i32 = new Int32Array(n);
      let i = packInts(a, start, end, i32);
      let packed: Int32Array | Float64Array = i32;
      if (i < end && typeof a[i] === 'number') {
        const f64 = new Float64Array(n);
        f64.set(i32.subarray(0, i - start));
        i = packDoubles(a, start, i, end, f64);
        packed = f64;
      }
      if (i === end) {
        const ints = packed === i32;
        this.#ensure(5);
        this.#buf[this.#pos] = ints ? T_I32ARR : T_F64ARR;
        this.#dv.setUint32(this.#pos + 1, n, true);
        this.#pos += 5;
        this.bytes(new Uint8Array(packed.buffer));
        return true;
      }
    }
    this.#ensure(5);
    this.#buf[this.#pos] = T_ARR;
    this.#dv.setUint32(this.#pos + 1, n, true);
    this.#pos += 5;
    for (let i = start; i < end; i++) {
      const x = a[i];
      if (x === undefined && !(i in a)) return false;  // a hole: v8 keeps it, so must we
      if (!this.value(x, depth + 1)) return false;
    }
    return true;
  }

  #object(o: Record<string, unknown>, depth: number): boolean {
    if (!this.#mark(o)) return false;
    const keys = Object.keys(o);
    const n = keys.length;
    this.#ensure(5);
    this.#buf[this.#pos] = T_OBJ;
    this.#dv.setUint32(this.#pos + 1, n, true);
    this.#pos += 5;
    for (let i = 0; i < n; i++) {
      const k = keys[i]!;
      this.#string(k);
      if (!this.value(o[k], depth + 1)) return false;
    }
    return true;
  }
}

/**
 * Decodes values written by Encoder from `u8` (which may be a view of shared memory: with
 * `copy` true every Buffer/Uint8Array decoded is a fresh copy, otherwise a view of `u8`).
 */
export class Decoder {
  #u8!: Buffer;
  #dv!: DataView;
  #pos = 0;
  #copy = true;

  reset(u8: Buffer, dv: DataView, pos: number, copy: boolean): void {
    this.#u8 = u8;
    this.#dv = dv;
    this.#pos = pos;
    this.#copy = copy;
  }

  get pos(): number {
    return this.#pos;
  }

  value(): unknown {
    const u8 = this.#u8;
    const t = u8[this.#pos++];
    switch (t) {
      case T_UNDEF:
        return undefined;
      case T_NULL:
        return null;
      case T_TRUE:
        return true;
      case T_FALSE:
        return false;
      case T_I32: {
        const v = this.#dv.getInt32(this.#pos, true);
        this.#pos += 4;
        return v;
      }
      case T_F64: {
        const v = this.#dv.getFloat64(this.#pos, true);
        this.#pos += 8;
        return v;
      }
      case T_ASCII:
        return this.#ascii();
      case T_STR: {
        const n = this.#dv.getUint32(this.#pos, true);
        const a = this.#pos + 4;
        this.#pos = a + n;
        return u8.utf8Slice(a, a + n);
      }
      case T_ARR:
      case T_I32ARR:
      case T_F64ARR: {
        const out = newArray(this.#dv.getUint32(this.#pos, true));
        this.#elementsInto(t, out, 0);
        return out;
      }
      case T_OBJ: {
        const n = this.#dv.getUint32(this.#pos, true);
        this.#pos += 4;
        const out: Record<string, unknown> = {};
        for (let i = 0; i < n; i++) {
          const kt = u8[this.#pos++];
          let k: string;
          if (kt === T_ASCII) k = this.#ascii();
          else {
            const m = this.#dv.getUint32(this.#pos, true);
            const a = this.#pos + 4;
            this.#pos = a + m;
            k = u8.utf8Slice(a, a + m);
          }
          out[k] = this.value();
        }
        return out;
      }
      case T_BUF:
      case T_U8: {
        const n = this.#dv.getUint32(this.#pos, true);
        const a = this.#pos + 4;
        this.#pos = a + n;
        let b: Buffer;
        if (this.#copy) {
          b = Buffer.allocUnsafe(n);
          if (n >= 256) native.copyBytes(b, 0, u8, a, n); // V8 copies out of shared memory byte-wise
          else b.set(u8.subarray(a, a + n));
        } else b = u8.subarray(a, a + n);
        return t === T_BUF ? b : new Uint8Array(b.buffer, b.byteOffset, b.length);
      }
      default:
        throw new Error(`corrupt message: unknown type byte ${t}`);
    }
  }

  /** If the next value is a (non-packed) array: consumes its header and returns its length; else -1. */
  header(): number {
    if (this.#u8[this.#pos] !== T_ARR) return -1;
    const n = this.#dv.getUint32(this.#pos + 1, true);
    this.#pos += 5;
    return n;
  }

  /**
   * If the next value is an array, stores its elements at target[base..] instead of making an
   * array (a pool's map results go straight into the result) and returns its length; otherwise
   * consumes nothing and returns -1.
   */
  arrayInto(target: unknown[], base: number): number {
    const t = this.#u8[this.#pos];
    if (t !== T_ARR && t !== T_I32ARR && t !== T_F64ARR) return -1;
    this.#pos++;
    return this.#elementsInto(t, target, base);
  }

  /** An array's elements (its tag t already read) into target[base..]; returns their count. */
  #elementsInto(t: number, target: unknown[], base: number): number {
    const u8 = this.#u8;
    const n = this.#dv.getUint32(this.#pos, true);
    if (t === T_ARR) {
      this.#pos += 4;
      for (let i = 0; i < n; i++) target[base + i] = this.value();
      return n;
    }
    const width = t === T_I32ARR ? 4 : 8;
    const at = u8.byteOffset + this.#pos + 4;
    this.#pos += 4 + n * width;
    // A typed view where the bytes are aligned, else over an aligned copy; a plain loop over
    // a typed array is the fastest way to a JS array once warm (builtins are 5x slower).
    const buf = at % width === 0 ? u8.buffer : u8.buffer.slice(at, at + n * width);
    const off = at % width === 0 ? at : 0;
    if (width === 4) unpackInts(new Int32Array(buf, off, n), target, base);
    else unpackDoubles(new Float64Array(buf, off, n), target, base);
    return n;
  }

  #ascii(): string {
    const u8 = this.#u8;
    const n = u8[this.#pos]!;
    const a = this.#pos + 1;
    this.#pos = a + n;
    if (n <= 16) {
      let s = '';
      for (let i = a; i < a + n; i++) s += String.fromCharCode(u8[i]!);
      return s;
    }
    return u8.latin1Slice(a, a + n);
  }
}

declare global {
  interface Buffer {
    utf8Write(s: string, offset: number, length: number): number;
    utf8Slice(start: number, end: number): string;
    latin1Slice(start: number, end: number): string;
  }
}
