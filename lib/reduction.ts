// How values travel between processes (CPython's multiprocessing.reduction).
//
// A message is one tag byte and a body:
//   1  the fast binary codec of lib/codec.ts (numbers, strings, plain objects, arrays, Buffers)
//   2  v8.serialize(value)
//   3  v8.serialize({ v, h }): `v` with each of this library's handles replaced by a
//      placeholder, `h` the handles' reduced states, rebuilt on arrival.
//
// Handles. An object that can travel implements `[reduceHandle](ctx)` and returns
// `{ type, state }`; the receiving side calls the rebuilder registered for `type` with that
// state. Handles named by a kernel object that outlives the sender (a shared-memory segment, a
// named semaphore) put the name in `state`. Handles that are a file descriptor call
// `ctx.addFd(fd)` and keep the returned index in `state`; the descriptor then travels with
// the message as SCM_RIGHTS, which only a socket connection can carry (ctx.canPassFds tells).
//
//   class Lock { [reduceHandle](ctx) { return { type: 'multiproc.Lock', state: { name: this.#name } }; } }
//   registerRebuilder('multiproc.Lock', (state) => Lock.attach(state.name));
import { ArrayRange, Decoder, Encoder, newArray } from './codec';
import { ValueError } from './errors';
import { native } from './native';
import { kReduce } from './shared_memory';
import { assertSpawnable } from './_spawning';

// node:v8 is loaded at the first value only it can carry: compiling it was a seventh of this
// library's import time, which every spawn child pays.
let v8Module: typeof import('node:v8') | undefined;
const v8 = (): typeof import('node:v8') => (v8Module ??= require('node:v8') as typeof import('node:v8'));

/** The method an object implements to be sent to another process. */
export const reduceHandle: unique symbol = Symbol.for('multiproc.reduce') as never;

export interface ReduceContext {
  /** Whether this transport carries file descriptors (a socket connection does, a queue not). */
  readonly canPassFds: boolean;
  /** Sends a duplicate of fd along with the message; returns its index for `RebuildContext.takeFd`. */
  addFd(fd: number): number;
}

export interface RebuildContext {
  /** The descriptor sent as index `i` (the receiver owns it). */
  takeFd(i: number): number;
}

export interface Reduced {
  type: string;
  state: unknown;
}

export interface Reducible {
  [reduceHandle](ctx: ReduceContext): Reduced;
}

export type Rebuilder = (state: never, ctx: RebuildContext) => unknown;

const rebuilders = new Map<string, (state: unknown, ctx: RebuildContext) => unknown>();

/** Registers how handles of `type` are rebuilt in the receiving process. */
export function registerRebuilder<S>(type: string, fn: (state: S, ctx: RebuildContext) => unknown): void {
  rebuilders.set(type, fn as (state: unknown, ctx: RebuildContext) => unknown);
}

export function isReducible(v: unknown): v is Reducible {
  return typeof v === 'object' && v !== null && typeof (v as Partial<Reducible>)[reduceHandle] === 'function';
}

/** Handles of synchronize.ts / shared_memory.ts / sharedctypes.ts describe themselves by `[kReduce]()`. */
function isDescribable(v: unknown): v is { [kReduce](): { type: string } } {
  return typeof v === 'object' && v !== null && typeof (v as { [kReduce]?: unknown })[kReduce] === 'function';
}

// Typed arrays over shared memory (RawArray, an Array made with lock: false) are plain typed
// arrays; sharedctypes.ts tells which ones are (and how to reopen them), so they travel by name
// rather than as copies.
let describeView: (v: ArrayBufferView) => object | undefined = () => undefined;
/** @internal sharedctypes.ts registers how shared typed arrays describe themselves. */
export function setViewDescriber(fn: (v: ArrayBufferView) => object | undefined): void {
  describeView = fn;
}

/** The reduced type under which `[kReduce]()` descriptions travel (rebuilt by queues.ts). */
export const DESCRIBED = 'multiproc.described';

export const TAG_FAST = 1;
export const TAG_V8 = 2;
export const TAG_HANDLES = 3;

const PLACEHOLDER = '__multiproc_handle__';

const encoder = new Encoder();
const decoder = new Decoder();

/**
 * Encodes `value` as a message. The chunks are valid until the next call (they may point into
 * a shared scratch buffer or at the caller's large Buffers). `fds` collects descriptors to
 * send along, or is null when the transport cannot carry any.
 */
export function encodeMessage(value: unknown, fds: number[] | null): { chunks: Uint8Array[]; length: number } {
  encoder.begin();
  encoder.byte(TAG_FAST);
  if (encoder.value(value)) return encoder.finish();
  // General case: v8.serialize, after replacing handles (if any) by placeholders. Array ranges
  // (only ever at the top level of a message, see ArrayRange) become the arrays they stand for.
  if (value instanceof ArrayRange) value = value.slice();
  else if (Array.isArray(value) && value.some((x) => x instanceof ArrayRange)) {
    value = value.map((x: unknown) => (x instanceof ArrayRange ? x.slice() : x));
  }
  const reduced: Reduced[] = [];
  const ctx: ReduceContext = {
    canPassFds: fds !== null,
    addFd(fd: number): number {
      if (fds === null) {
        throw new ValueError('this handle holds a file descriptor and can only be sent over a socket Connection', {
          code: 'ERR_MP_CANNOT_PASS_FD',
        });
      }
      fds.push(fd);
      return fds.length - 1;
    },
  };
  const replaced = hasHandle(value, new Set()) ? substitute(value, reduced, ctx, new Map()) : value;
  const body = reduced.length === 0 ? v8().serialize(value) : v8().serialize({ v: replaced, h: reduced });
  encoder.begin();
  encoder.byte(reduced.length === 0 ? TAG_V8 : TAG_HANDLES);
  encoder.bytes(body);
  return encoder.finish();
}

let spawning: string | null = null;

/** The start method whose child is being prepared while encoding (CPython's get_spawning_popen()), else null. */
export function spawningMethod(): string | null {
  return spawning;
}

/** Encodes what a spawn/forkserver child starts from: handles may check spawningMethod(). */
export function encodeForChild(value: unknown, fds: number[] | null, method: string): Buffer {
  const outer = spawning;
  spawning = method;
  try {
    return encodeToBuffer(value, fds);
  } finally {
    spawning = outer;
  }
}

/** Encodes into one new Buffer (for callers that must keep the bytes). */
export function encodeToBuffer(value: unknown, fds: number[] | null): Buffer {
  const { chunks, length } = encodeMessage(value, fds);
  return Buffer.concat(chunks, length);
}

/** What decodePairs stores in place of a value it wrote straight into its target. */
export const PLACED: unique symbol = Symbol('multiproc.placed');

/**
 * Decodes a message that is an array of [status, value] pairs (a pool worker's results),
 * writing each value that is an array straight into the array `place(i, status)` names
 * (at its base index) instead of making it; PLACED stands in for those values. Returns null,
 * consuming nothing, for a message the fast codec did not write (decode it with decodeMessage).
 */
export function decodePairs(
  buf: Buffer,
  dv: DataView,
  place: (i: number, status: unknown) => { target: unknown[]; base: number } | null,
): unknown[] | null {
  if (buf[0] !== TAG_FAST) return null;
  decoder.reset(buf, dv, 1, false);
  const top = decoder.header();
  if (top < 0) return null;
  const out = newArray(top);
  for (let i = 0; i + 1 < top; i += 2) {
    const status = decoder.value();
    out[i] = status;
    const where = place(i >> 1, status);
    out[i + 1] = where !== null && decoder.arrayInto(where.target, where.base) >= 0 ? PLACED : decoder.value();
  }
  if (decoder.pos !== buf.length) throw new ValueError('corrupt message: trailing bytes', { code: 'ERR_MP_CORRUPT_MESSAGE' });
  return out;
}

/**
 * Decodes a message from buf[start, end). `copy`: the bytes are transient (shared memory), so
 * nothing returned may alias them. `takeFd` yields descriptors that arrived with the message.
 */
export function decodeMessage(buf: Buffer, dv: DataView, start: number, end: number, copy: boolean, takeFd?: (i: number) => number): unknown {
  const tag = buf[start];
  if (tag === TAG_FAST) {
    decoder.reset(buf, dv, start + 1, copy);
    const v = decoder.value();
    if (decoder.pos !== end) throw new ValueError('corrupt message: trailing bytes', { code: 'ERR_MP_CORRUPT_MESSAGE' });
    return v;
  }
  if (tag === TAG_V8 || tag === TAG_HANDLES) {
    // v8.deserialize returns Buffers that alias its input: give it private bytes when the
    // input is transient.
    let body = buf.subarray(start + 1, end);
    if (copy) {
      const own = Buffer.allocUnsafe(body.length);
      native.copyBytes(own, 0, body, 0, body.length); // memcpy out of shared memory
      body = own;
    }
    const v = v8().deserialize(body);
    if (tag === TAG_V8) return v;
    const { v: inner, h } = v as { v: unknown; h: Reduced[] };
    const ctx: RebuildContext = {
      takeFd(i: number): number {
        if (takeFd === undefined) throw new ValueError('message refers to a file descriptor that did not arrive', { code: 'ERR_MP_CORRUPT_MESSAGE' });
        return takeFd(i);
      },
    };
    const handles = h.map((r) => {
      const fn = rebuilders.get(r.type);
      if (fn === undefined) {
        throw new ValueError(`cannot rebuild a handle of type ${r.type} in this process (is its module loaded?)`, {
          code: 'ERR_MP_UNKNOWN_HANDLE',
        });
      }
      return fn(r.state, ctx);
    });
    return restore(inner, handles, new Set());
  }
  throw new ValueError(`corrupt message: unknown tag ${tag}`, { code: 'ERR_MP_CORRUPT_MESSAGE' });
}

// ---- the handle walk (only on the general path)

function hasHandle(v: unknown, seen: Set<object>): boolean {
  if (typeof v !== 'object' || v === null) return false;
  if (seen.has(v)) return false;
  seen.add(v);
  if (isReducible(v) || isDescribable(v)) return true;
  if (ArrayBuffer.isView(v)) return describeView(v) !== undefined;
  if (v instanceof ArrayBuffer || v instanceof Date || v instanceof RegExp) return false;
  if (v instanceof Map) {
    for (const [k, x] of v) if (hasHandle(k, seen) || hasHandle(x, seen)) return true;
    return false;
  }
  if (v instanceof Set) {
    for (const x of v) if (hasHandle(x, seen)) return true;
    return false;
  }
  for (const k of Object.keys(v)) if (hasHandle((v as Record<string, unknown>)[k], seen)) return true;
  return false;
}

function substitute(v: unknown, out: Reduced[], ctx: ReduceContext, memo: Map<object, unknown>): unknown {
  if (typeof v !== 'object' || v === null) return v;
  const m = memo.get(v);
  if (m !== undefined) return m;
  if (isReducible(v) || isDescribable(v)) {
    if (spawning !== null) assertSpawnable(v, spawning);
    const r = isReducible(v) ? v[reduceHandle](ctx) : { type: DESCRIBED, state: v[kReduce]() };
    out.push(r);
    const ph = { [PLACEHOLDER]: out.length - 1 };
    memo.set(v, ph);
    return ph;
  }
  if (ArrayBuffer.isView(v)) {
    const d = describeView(v);
    if (d === undefined) return v;
    out.push({ type: DESCRIBED, state: d });
    const ph = { [PLACEHOLDER]: out.length - 1 };
    memo.set(v, ph);
    return ph;
  }
  if (v instanceof ArrayBuffer || v instanceof Date || v instanceof RegExp) return v;
  if (v instanceof Map) {
    const c = new Map();
    memo.set(v, c);
    for (const [k, x] of v) c.set(substitute(k, out, ctx, memo), substitute(x, out, ctx, memo));
    return c;
  }
  if (v instanceof Set) {
    const c = new Set();
    memo.set(v, c);
    for (const x of v) c.add(substitute(x, out, ctx, memo));
    return c;
  }
  if (Array.isArray(v)) {
    const c: unknown[] = new Array(v.length);
    memo.set(v, c);
    for (let i = 0; i < v.length; i++) if (i in v) c[i] = substitute(v[i], out, ctx, memo);
    return c;
  }
  if (v instanceof Error) return v;
  const c: Record<string, unknown> = {};
  memo.set(v, c);
  for (const k of Object.keys(v)) c[k] = substitute((v as Record<string, unknown>)[k], out, ctx, memo);
  return c;
}

function restore(v: unknown, handles: unknown[], seen: Set<object>): unknown {
  if (typeof v !== 'object' || v === null) return v;
  const idx = (v as Record<string, unknown>)[PLACEHOLDER];
  if (typeof idx === 'number' && Object.keys(v).length === 1) return handles[idx];
  if (seen.has(v)) return v;
  seen.add(v);
  if (ArrayBuffer.isView(v) || v instanceof ArrayBuffer || v instanceof Date || v instanceof RegExp || v instanceof Error) return v;
  if (v instanceof Map) {
    const entries = [...v];
    v.clear();
    for (const [k, x] of entries) v.set(restore(k, handles, seen), restore(x, handles, seen));
    return v;
  }
  if (v instanceof Set) {
    const items = [...v];
    v.clear();
    for (const x of items) v.add(restore(x, handles, seen));
    return v;
  }
  for (const k of Object.keys(v)) (v as Record<string, unknown>)[k] = restore((v as Record<string, unknown>)[k], handles, seen);
  return v;
}
