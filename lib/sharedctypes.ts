// multiprocessing.sharedctypes: Value, Array, RawValue, RawArray in shared memory.
//
// Typecodes are Python's `array` module's: b B h H i I l L q Q f d, and c (one byte, read as a
// one-character string). l/L/q/Q are 64-bit and read as BigInt (as on 64-bit Linux). Integers wrap
// around on store like ctypes (200 in 'b' reads back as -56); a non-integer for an integer
// typecode is a TypeError, as in Python. The memory is a SharedArrayBuffer (heap.ts): `Atomics`
// work on `.array`/RawArray views, forked children share it, and `[kReduce]()` describes it for
// reopening by name elsewhere.
import { inspect } from 'node:util';
import { invalidArgType } from './errors';
import { allocate, attachBlock, blockRef, type Block, type BlockRef } from './heap';
import { kReduce } from './shared_memory';
import { setViewDescriber } from './reduction';
import { noteLock, sameContextAs } from './_spawning';
import { Lock, RLock, type AcquireOptions, type AsyncAcquireOptions } from './synchronize';

export type IntTypecode = 'b' | 'B' | 'h' | 'H' | 'i' | 'I';
export type BigTypecode = 'l' | 'L' | 'q' | 'Q';
export type FloatTypecode = 'f' | 'd';
export type Typecode = IntTypecode | BigTypecode | FloatTypecode | 'c';

/** What a typecode reads as. */
export type ValueOf<T extends Typecode> = T extends BigTypecode ? bigint : T extends 'c' ? string : number;

interface TypedArrayMap {
  b: Int8Array;
  B: Uint8Array;
  h: Int16Array;
  H: Uint16Array;
  i: Int32Array;
  I: Uint32Array;
  l: BigInt64Array;
  L: BigUint64Array;
  q: BigInt64Array;
  Q: BigUint64Array;
  f: Float32Array;
  d: Float64Array;
  c: Uint8Array;
}
export type TypedArrayOf<T extends Typecode> = TypedArrayMap[T];

type AnyTyped = TypedArrayMap[Typecode];
type Ctor = { new (buf: SharedArrayBuffer, offset: number, length: number): AnyTyped; BYTES_PER_ELEMENT: number };

const CTORS: Record<Typecode, Ctor> = {
  b: Int8Array,
  B: Uint8Array,
  h: Int16Array,
  H: Uint16Array,
  i: Int32Array,
  I: Uint32Array,
  l: BigInt64Array,
  L: BigUint64Array,
  q: BigInt64Array,
  Q: BigUint64Array,
  f: Float32Array,
  d: Float64Array,
  c: Uint8Array,
};
const TYPECODES = Object.keys(CTORS).join(', ');

function kind(tc: Typecode): 'int' | 'big' | 'float' | 'char' {
  if (tc === 'c') return 'char';
  if (tc === 'f' || tc === 'd') return 'float';
  if (tc === 'l' || tc === 'L' || tc === 'q' || tc === 'Q') return 'big';
  return 'int';
}

function checkTypecode(tc: unknown): Typecode {
  if (typeof tc === 'string' && Object.prototype.hasOwnProperty.call(CTORS, tc)) return tc as Typecode;
  const e = new TypeError(`bad typecode ${typeof tc === 'string' ? JSON.stringify(tc) : String(tc)} (must be one of ${TYPECODES})`) as TypeError & {
    code: string;
  };
  e.code = 'ERR_INVALID_ARG_VALUE';
  throw e;
}

// JS value -> what the typed array stores (wrap-around is the typed array's modular store).
function toStored(tc: Typecode, v: unknown, name = 'value'): number | bigint {
  switch (kind(tc)) {
    case 'int':
      if (typeof v === 'number' && Number.isInteger(v)) return v;
      if (typeof v === 'bigint') return Number(BigInt.asIntN(64, v));
      if (typeof v === 'boolean') return v ? 1 : 0;
      throw invalidArgType(name, `an integer for typecode '${tc}'`, v);
    case 'big':
      if (typeof v === 'bigint') return v;
      if (typeof v === 'number' && Number.isInteger(v)) return BigInt(v);
      if (typeof v === 'boolean') return v ? 1n : 0n;
      throw invalidArgType(name, `a bigint or an integer for typecode '${tc}'`, v);
    case 'float':
      if (typeof v === 'number') return v;
      if (typeof v === 'bigint') return Number(v);
      if (typeof v === 'boolean') return v ? 1 : 0;
      throw invalidArgType(name, `a number for typecode '${tc}'`, v);
    case 'char':
      if (typeof v === 'string' && v.length === 1 && v.charCodeAt(0) < 256) return v.charCodeAt(0);
      if (v instanceof Uint8Array && v.length === 1) return v[0];
      throw invalidArgType(name, "a one-byte string or buffer for typecode 'c'", v);
  }
}

function fromStored<T extends Typecode>(tc: T, raw: number | bigint): ValueOf<T> {
  return (tc === 'c' ? String.fromCharCode(raw as number) : raw) as ValueOf<T>;
}

function isIntegerCode(tc: Typecode): boolean {
  const k = kind(tc);
  return k === 'int' || k === 'big';
}

function notInteger(tc: Typecode): TypeError {
  const e = new TypeError(`atomic operations need an integer typecode, not '${tc}'`) as TypeError & { code: string };
  e.code = 'ERR_MP_NOT_INTEGER_TYPECODE';
  return e;
}

const scratchArrays = new Map<Typecode, { [i: number]: number | bigint }>();
function scratch(tc: Typecode): { [i: number]: number | bigint } {
  let a = scratchArrays.get(tc);
  if (a === undefined) {
    a = new (CTORS[tc] as unknown as new (n: number) => { [i: number]: number | bigint })(1);
    scratchArrays.set(tc, a);
  }
  return a;
}

let rebuilding: Block | undefined;
function take(bytes: number): { b: Block; fresh: boolean } {
  if (rebuilding !== undefined) {
    const b = rebuilding;
    rebuilding = undefined;
    return { b, fresh: false };
  }
  return { b: allocate(bytes), fresh: true };
}

// Typed arrays handed out by RawArray / Array(lock: false), with the block they live in.
const rawBlocks = new WeakMap<object, { tc: Typecode; block: Block }>();

// ---------------------------------------------------------------- values

/** One shared scalar without a lock (Python's RawValue / Value(..., lock=False)). */
export class SharedValue<T extends Typecode = Typecode> {
  readonly typecode: T;
  #b: Block;
  #a: TypedArrayOf<T>;

  constructor(typecode: T, initial?: ValueOf<T> | number | bigint) {
    const tc = checkTypecode(typecode) as T;
    const stored = initial === undefined ? undefined : toStored(tc, initial);
    const ctor = CTORS[tc];
    const { b, fresh } = take(ctor.BYTES_PER_ELEMENT);
    this.typecode = tc;
    this.#b = b;
    this.#a = new ctor(b.sab, b.offset, 1) as TypedArrayOf<T>;
    if (fresh && stored !== undefined) (this.#a as { [i: number]: number | bigint })[0] = stored;
  }

  get value(): ValueOf<T> {
    return fromStored(this.typecode, this.#a[0]);
  }
  set value(v: ValueOf<T> | number | bigint) {
    (this.#a as { [i: number]: number | bigint })[0] = toStored(this.typecode, v);
  }

  /** A one-element typed array over the value (for `Atomics`). */
  get array(): TypedArrayOf<T> {
    return this.#a;
  }

  /** Atomically adds `n`; returns the previous value (fetch-and-add). Integer typecodes only. */
  add(n: number | bigint): ValueOf<T> {
    if (!isIntegerCode(this.typecode)) throw notInteger(this.typecode);
    const a = this.#a as unknown as Int32Array;
    return Atomics.add(a, 0, toStored(this.typecode, n, 'n') as number) as ValueOf<T>;
  }

  /** Atomically replaces the value with `replacement` if it equals `expected`; returns the value found. */
  compareExchange(expected: number | bigint, replacement: number | bigint): ValueOf<T> {
    if (!isIntegerCode(this.typecode)) throw notInteger(this.typecode);
    const a = this.#a as unknown as Int32Array;
    const tc = this.typecode;
    // Compare in the stored domain: `expected` wraps the same way the stored value did.
    const probe = scratch(tc);
    probe[0] = toStored(tc, expected, 'expected');
    return Atomics.compareExchange(a, 0, probe[0] as number, toStored(tc, replacement, 'replacement') as number) as ValueOf<T>;
  }

  [kReduce](): { type: 'RawValue'; typecode: T; block: BlockRef } {
    return { type: 'RawValue', typecode: this.typecode, block: blockRef(this.#b) };
  }

  [inspect.custom](): string {
    return `<${this.typecode}(${inspect(this.value)})>`;
  }
}

export interface LockOption {
  /** true (default): a new RLock; false: no lock (the raw object is returned); or a given Lock/RLock. */
  lock?: boolean | Lock | RLock;
}

function resolveLock(opts: LockOption | undefined): Lock | RLock | null {
  if (opts === undefined) return new RLock();
  if (opts === null || typeof opts !== 'object') throw invalidArgType('options', 'an object', opts);
  const lock = opts.lock ?? true;
  if (lock === false) return null;
  if (lock === true) return new RLock();
  if (lock instanceof Lock || lock instanceof RLock) return lock;
  throw invalidArgType('lock', 'true, false, a Lock or an RLock', lock);
}

/**
 * What Value and Array with a lock share (CPython's SynchronizedBase): the lock, and the lock's
 * acquire/release methods on the object itself.
 */
abstract class SynchronizedBase {
  readonly #lock: Lock | RLock;

  protected constructor(lock: Lock | RLock) {
    this.#lock = lock;
    sameContextAs(this, lock);
    noteLock(this, lock);
  }

  getLock(): Lock | RLock {
    return this.#lock;
  }
  acquireSync(opts?: AcquireOptions): boolean {
    return this.#lock.acquireSync(opts);
  }
  acquire(opts?: AsyncAcquireOptions): Promise<boolean> {
    return this.#lock.acquire(opts);
  }
  release(): void {
    this.#lock.release();
  }
}

/** A shared scalar guarded by a lock: reading or writing `.value` holds the lock. */
export class SynchronizedValue<T extends Typecode = Typecode> extends SynchronizedBase {
  #obj: SharedValue<T>;

  constructor(obj: SharedValue<T>, lock: Lock | RLock) {
    super(lock);
    this.#obj = obj;
  }

  get typecode(): T {
    return this.#obj.typecode;
  }

  get value(): ValueOf<T> {
    const lock = this.getLock();
    lock.acquireSync();
    try {
      return this.#obj.value;
    } finally {
      lock.release();
    }
  }
  set value(v: ValueOf<T> | number | bigint) {
    const lock = this.getLock();
    lock.acquireSync();
    try {
      this.#obj.value = v;
    } finally {
      lock.release();
    }
  }

  getObj(): SharedValue<T> {
    return this.#obj;
  }

  /** Atomic fetch-and-add (no lock needed). Integer typecodes only. */
  add(n: number | bigint): ValueOf<T> {
    return this.#obj.add(n);
  }
  /** Atomic compare-and-exchange (no lock needed); returns the value found. */
  compareExchange(expected: number | bigint, replacement: number | bigint): ValueOf<T> {
    return this.#obj.compareExchange(expected, replacement);
  }

  [kReduce](): { type: 'Value'; obj: ReturnType<SharedValue<T>[typeof kReduce]>; lock: ReturnType<Lock[typeof kReduce]> } {
    return { type: 'Value', obj: this.#obj[kReduce](), lock: this.getLock()[kReduce]() };
  }

  [inspect.custom](): string {
    return `<Synchronized wrapper for ${inspect(this.#obj)}>`;
  }
}

/** Python's multiprocessing.Value. */
export function Value<T extends Typecode>(typecode: T, initial?: ValueOf<T> | number | bigint, opts?: LockOption): SynchronizedValue<T> | SharedValue<T> {
  const lock = resolveLock(opts);
  const obj = new SharedValue(typecode, initial);
  return lock === null ? obj : new SynchronizedValue(obj, lock);
}

/** Python's multiprocessing.RawValue: a shared scalar without a lock. */
export function RawValue<T extends Typecode>(typecode: T, initial?: ValueOf<T> | number | bigint): SharedValue<T> {
  return new SharedValue(typecode, initial);
}

// ---------------------------------------------------------------- arrays

function makeArray<T extends Typecode>(typecode: T, sizeOrInit: unknown): TypedArrayOf<T> {
  const tc = checkTypecode(typecode) as T;
  let init: unknown[] | undefined;
  let length: number;
  if (typeof sizeOrInit === 'number') {
    if (!Number.isSafeInteger(sizeOrInit) || sizeOrInit < 0) throw invalidArgType('size', 'a non-negative integer', sizeOrInit);
    length = sizeOrInit;
  } else if (typeof sizeOrInit === 'string' && tc === 'c') {
    init = [...Buffer.from(sizeOrInit, 'latin1')].map((b) => String.fromCharCode(b));
    length = init.length;
  } else if (sizeOrInit !== null && typeof sizeOrInit === 'object' && Symbol.iterator in sizeOrInit) {
    init = [...(sizeOrInit as Iterable<unknown>)];
    if (tc === 'c') init = init.map((v) => (typeof v === 'number' ? String.fromCharCode(v & 0xff) : v));
    length = init.length;
  } else {
    throw invalidArgType('sizeOrInit', 'a size or an iterable of initial values', sizeOrInit);
  }
  const stored = init?.map((v, i) => toStored(tc, v, `sizeOrInit[${i}]`));
  const ctor = CTORS[tc];
  const { b, fresh } = take(Math.max(1, length) * ctor.BYTES_PER_ELEMENT);
  const a = new ctor(b.sab, b.offset, length) as TypedArrayOf<T>;
  if (fresh && stored !== undefined) for (let i = 0; i < length; i++) (a as { [i: number]: number | bigint })[i] = stored[i];
  rawBlocks.set(a, { tc, block: b });
  return a;
}

function checkIndex(i: unknown, length: number): number {
  if (typeof i !== 'number' || !Number.isInteger(i)) throw invalidArgType('index', 'an integer', i);
  const j = i < 0 ? i + length : i;
  if (j < 0 || j >= length) {
    const e = new RangeError(`array index ${i} out of range (length ${length})`) as RangeError & { code: string };
    e.code = 'ERR_OUT_OF_RANGE';
    throw e;
  }
  return j;
}

/** A shared array guarded by a lock: get/set/toArray hold it. `.array` is the raw typed view. */
export class SynchronizedArray<T extends Typecode = Typecode> extends SynchronizedBase {
  readonly typecode: T;
  #a: TypedArrayOf<T>;

  constructor(typecode: T, a: TypedArrayOf<T>, lock: Lock | RLock) {
    super(lock);
    this.typecode = typecode;
    this.#a = a;
  }

  get length(): number {
    return this.#a.length;
  }

  /** The typed array over the shared memory (no locking: `Atomics` or your own discipline). */
  get array(): TypedArrayOf<T> {
    return this.#a;
  }

  get(i: number): ValueOf<T> {
    const j = checkIndex(i, this.#a.length);
    const lock = this.getLock();
    lock.acquireSync();
    try {
      return fromStored(this.typecode, this.#a[j]);
    } finally {
      lock.release();
    }
  }

  set(i: number, v: ValueOf<T> | number | bigint): void {
    const j = checkIndex(i, this.#a.length);
    const stored = toStored(this.typecode, v);
    const lock = this.getLock();
    lock.acquireSync();
    try {
      (this.#a as { [i: number]: number | bigint })[j] = stored;
    } finally {
      lock.release();
    }
  }

  /** A consistent snapshot (taken under the lock). */
  toArray(): ValueOf<T>[] {
    const lock = this.getLock();
    lock.acquireSync();
    try {
      return Array.from(this.#a as ArrayLike<number | bigint>, (x) => fromStored(this.typecode, x));
    } finally {
      lock.release();
    }
  }

  /** For typecode 'c': the bytes up to the first NUL, as a latin1 string (Python's `.value`). */
  get value(): string {
    if (this.typecode !== 'c') throw new TypeError("'value' is only defined for typecode 'c'");
    const bytes = Buffer.from(this.toArray().map((c) => (c as string).charCodeAt(0)));
    const nul = bytes.indexOf(0);
    return bytes.toString('latin1', 0, nul < 0 ? bytes.length : nul);
  }

  *[Symbol.iterator](): IterableIterator<ValueOf<T>> {
    yield* this.toArray();
  }

  getObj(): TypedArrayOf<T> {
    return this.#a;
  }

  [kReduce](): { type: 'Array'; obj: RawArrayDescription; lock: ReturnType<Lock[typeof kReduce]> } {
    return { type: 'Array', obj: describeRawArray(this.#a) as RawArrayDescription, lock: this.getLock()[kReduce]() };
  }

  [inspect.custom](): string {
    return `<SynchronizedArray '${this.typecode}' ${inspect(this.toArray())}>`;
  }
}

/** Python's multiprocessing.Array; `lock: false` returns the raw typed array. */
export function SharedArray<T extends Typecode>(
  typecode: T,
  sizeOrInit: number | Iterable<ValueOf<T> | number | bigint> | string,
  opts?: LockOption,
): SynchronizedArray<T> | TypedArrayOf<T> {
  const lock = resolveLock(opts);
  const a = makeArray(typecode, sizeOrInit);
  return lock === null ? a : new SynchronizedArray(typecode, a, lock);
}

/** Python's multiprocessing.RawArray: the typed array itself, over shared memory. */
export function RawArray<T extends Typecode>(typecode: T, sizeOrInit: number | Iterable<ValueOf<T> | number | bigint> | string): TypedArrayOf<T> {
  return makeArray(typecode, sizeOrInit);
}

export interface RawArrayDescription {
  type: 'RawArray';
  typecode: Typecode;
  length: number;
  block: BlockRef;
}

/** Internal: the description of a typed array made by RawArray / Array(lock: false), or undefined. */
export function describeRawArray(a: object): RawArrayDescription | undefined {
  const r = rawBlocks.get(a);
  if (r === undefined) return undefined;
  return { type: 'RawArray', typecode: r.tc, length: (a as AnyTyped).length, block: blockRef(r.block) };
}

export type SharedctypesDescription =
  | ReturnType<SharedValue[typeof kReduce]>
  | ReturnType<SynchronizedValue[typeof kReduce]>
  | ReturnType<SynchronizedArray[typeof kReduce]>
  | RawArrayDescription;

/** Internal: reopens a Value/Array/RawValue/RawArray from its description (by segment name). */
export function rebuildShared(
  desc: SharedctypesDescription,
  rebuildLock: (d: ReturnType<Lock[typeof kReduce]>) => Lock | RLock,
): SharedValue | SynchronizedValue | SynchronizedArray | AnyTyped {
  switch (desc.type) {
    case 'RawValue':
      rebuilding = attachBlock(desc.block);
      try {
        return new SharedValue(desc.typecode);
      } finally {
        rebuilding = undefined;
      }
    case 'RawArray':
      rebuilding = attachBlock(desc.block);
      try {
        return makeArray(desc.typecode, desc.length);
      } finally {
        rebuilding = undefined;
      }
    case 'Value':
      return new SynchronizedValue(rebuildShared(desc.obj, rebuildLock) as SharedValue, rebuildLock(desc.lock));
    case 'Array': {
      const a = rebuildShared(desc.obj, rebuildLock) as AnyTyped;
      return new SynchronizedArray(desc.obj.typecode, a, rebuildLock(desc.lock));
    }
  }
}

setViewDescriber((v) => describeRawArray(v));
