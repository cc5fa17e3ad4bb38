// multiprocessing.shared_memory: named POSIX shared-memory segments any process can attach to.
//
// Also the internal segment API the rest of the library builds on (heap.ts for locks and Values,
// queues for their rings): createSegment / attachSegment / unlinkSegment give a SharedArrayBuffer
// over a named segment. Names are unguessable (`/mp-` + 64 random bits), created with O_EXCL and
// mode 0600, and registered with the resource tracker before they exist.
import { inspect } from 'node:util';
import { ValueError, invalidArgType, invalidArgValue } from './errors';
import { native } from './native';
import * as tracker from './resource_tracker';

/** Every name this library generates starts with this (the test suite checks /dev/shm for it). */
export const NAME_PREFIX = '/mp-';

/** Internal: a symbol under which handles describe themselves for reopening in another process. */
export const kReduce: unique symbol = Symbol('multiproc.reduce');

const { O_RDWR, O_CREAT, O_EXCL } = native.shmFlags;
const EINVAL = 22;

export interface Segment {
  /** POSIX name, with the leading slash. */
  readonly name: string;
  readonly size: number;
  readonly sab: SharedArrayBuffer;
}

// Random bytes are fetched 512 at a time (one crypto call per 64 names). The pool belongs to the
// process that filled it: a forked child must never reuse its parent's upcoming names.
let pool = Buffer.alloc(0);
let poolAt = 0;
let poolPid = 0;
export function randomName(): string {
  if (poolPid !== process.pid || poolAt + 8 > pool.length) {
    // node:crypto is loaded on first use: ~4 ms of every process start otherwise.
    pool = (require('node:crypto') as typeof import('node:crypto')).randomBytes(512);
    poolAt = 0;
    poolPid = process.pid;
  }
  poolAt += 8;
  return NAME_PREFIX + pool.toString('hex', poolAt - 8, poolAt);
}

function toPosixName(name: string): string {
  return name.startsWith('/') ? name : '/' + name;
}

/**
 * Creates a new segment of `size` bytes (zero-filled), exclusively: a random name unless one is
 * given. Tracked (unlinked at exit or by the tracker) unless `track` is false; 'lineage': only
 * the tracker unlinks it, when the whole process tree is gone (see resource_tracker.announce).
 */
export function createSegment(size: number, opts?: { name?: string | undefined; track?: boolean | 'lineage' }): Segment {
  if (process.platform === 'win32') return createSegmentWindows(size, opts?.name);
  if (opts?.track === 'lineage') {
    const name = opts.name !== undefined ? toPosixName(opts.name) : randomName();
    // Announced before it exists, as a tracked random name (a kill in between leaks nothing).
    tracker.announce(name, 'shared_memory');
    try {
      return createSegment(size, { name, track: false });
    } catch (e) {
      tracker.withdraw(name, 'shared_memory');
      throw e;
    }
  }
  const track = opts?.track ?? true;
  const chosen = opts?.name !== undefined;
  for (;;) {
    const name = chosen ? toPosixName(opts.name as string) : randomName();
    // A random name is announced before it exists: a creator killed between shm_open and the
    // announcement would leak it otherwise. A chosen name is announced only once it is ours: it
    // may belong to another process of this lineage, whose announcement a failed attempt here
    // must not withdraw.
    if (track && !chosen) tracker.register(name, 'shared_memory');
    let fd: number;
    try {
      fd = native.shmOpen(name, O_RDWR | O_CREAT | O_EXCL, 0o600);
    } catch (e) {
      if (track && !chosen) tracker.unregister(name, 'shared_memory');
      // A random name that exists already: astronomically unlikely, but try another.
      if (!chosen && (e as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw e;
    }
    if (track && chosen) tracker.register(name, 'shared_memory');
    try {
      native.ftruncate(fd, size);
      return { name, size, sab: native.mmap(fd, size, 0) };
    } catch (e) {
      native.shmUnlink(name);
      if (track) tracker.unregister(name, 'shared_memory');
      throw e;
    } finally {
      native.closeFd(fd);
    }
  }
}

/**
 * Maps an existing segment by name, all of it. `minSize`: fail with EINVAL (a SystemError) if the
 * segment is smaller; ENOENT if it does not exist.
 */
/**
 * Windows (the platform seam): named file mappings (native/win/shm.cc). A mapping lives while a
 * process maps it, so nothing is tracked or unlinked there.
 */
function createSegmentWindows(size: number, name: string | undefined): Segment {
  const win = native as unknown as WindowsShm;
  for (;;) {
    const n = name !== undefined ? toPosixName(name) : randomName();
    try {
      return { name: n, size, sab: win.shmCreate(`Local\\multiproc${n.replace(/\//g, '_')}`, size) };
    } catch (e) {
      if (name === undefined && (e as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw e;
    }
  }
}

interface WindowsShm {
  shmCreate(name: string, size: number): SharedArrayBuffer;
  shmAttach(name: string): SharedArrayBuffer;
}

export function attachSegment(name: string, minSize?: number): Segment {
  if (process.platform === 'win32') {
    const posix = toPosixName(name);
    const sab = (native as unknown as WindowsShm).shmAttach(`Local\\multiproc${posix.replace(/\//g, '_')}`);
    if (minSize !== undefined && sab.byteLength < minSize) throw native.errnoError(EINVAL, 'MapViewOfFile', posix);
    return { name: posix, size: sab.byteLength, sab };
  }
  const posix = toPosixName(name);
  const fd = native.shmOpen(posix, O_RDWR, 0);
  try {
    const size = native.fstatSize(fd);
    if (size === 0 || (minSize !== undefined && size < minSize)) throw native.errnoError(EINVAL, 'mmap', posix);
    return { name: posix, size, sab: native.mmap(fd, size, 0) };
  } finally {
    native.closeFd(fd);
  }
}

/** Unlinks a segment and withdraws it from the tracker. ENOENT if it is already gone. */
export function unlinkSegment(name: string, opts?: { lineage?: boolean }): void {
  const posix = toPosixName(name);
  try {
    native.shmUnlink(posix);
  } finally {
    if (opts?.lineage) tracker.withdraw(posix, 'shared_memory');
    else tracker.unregister(posix, 'shared_memory');
  }
}

export interface SharedMemoryOptions {
  /** Name to create or attach to (with or without the leading slash). Generated if omitted on create. */
  name?: string;
  create?: boolean;
  /** Bytes, required (> 0) when creating; when attaching, a minimum the segment must have. */
  size?: number;
  /** Unlink the segment when its creator exits (or dies). Default true. */
  track?: boolean;
}

/**
 * A named shared-memory block (Python's shared_memory.SharedMemory). `buf` is a Buffer over a
 * SharedArrayBuffer mapping of the segment, so `Atomics` works on it and it can be posted to
 * worker_threads. Any process may attach to it by `name`.
 */
export class SharedMemory {
  #name: string;
  #size: number;
  #sab: SharedArrayBuffer | null;
  #buf: Buffer | null;

  constructor(opts: SharedMemoryOptions = {}) {
    if (opts === null || typeof opts !== 'object') throw invalidArgType('options', 'an object', opts);
    const { name, create = false, size = 0, track = true } = opts;
    if (name !== undefined && typeof name !== 'string') throw invalidArgType('name', 'a string', name);
    if (name !== undefined && (name.length === 0 || name.slice(1).includes('/') || name.includes('\0')))
      throw invalidArgValue('name', name, 'must be a non-empty name without "/" or NUL characters');
    if (typeof create !== 'boolean') throw invalidArgType('create', 'a boolean', create);
    if (typeof track !== 'boolean') throw invalidArgType('track', 'a boolean', track);
    if (typeof size !== 'number' || !Number.isSafeInteger(size)) throw invalidArgType('size', 'an integer', size);
    if (size < 0) throw new ValueError("'size' must be a positive integer");
    let seg: Segment;
    if (create) {
      if (size === 0) throw new ValueError("'size' must be a positive number different from zero");
      seg = createSegment(size, { name, track });
    } else {
      if (name === undefined) throw new ValueError("'name' can only be omitted if create is true");
      seg = attachSegment(name, size > 0 ? size : undefined);
    }
    this.#name = seg.name;
    this.#size = seg.size;
    this.#sab = seg.sab;
    this.#buf = Buffer.from(seg.sab);
  }

  /** The segment's name, without the leading slash (as CPython reports it). */
  get name(): string {
    return this.#name.slice(1);
  }

  get size(): number {
    return this.#size;
  }

  /** The bytes of the segment. Throws ValueError after close(). */
  get buf(): Buffer {
    if (this.#buf === null) throw new ValueError('operation on a closed SharedMemory', { code: 'ERR_MP_CLOSED' });
    return this.#buf;
  }

  /** The SharedArrayBuffer under `buf`. Throws ValueError after close(). */
  get sharedArrayBuffer(): SharedArrayBuffer {
    if (this.#sab === null) throw new ValueError('operation on a closed SharedMemory', { code: 'ERR_MP_CLOSED' });
    return this.#sab;
  }

  /**
   * Lets go of this process's view (idempotent). The mapping itself is released when the last
   * buffer over it is garbage-collected; the segment stays for the other processes.
   */
  close(): void {
    this.#buf = null;
    this.#sab = null;
  }

  /** Removes the name (once, from any one process); attached mappings stay valid. */
  unlink(): void {
    unlinkSegment(this.#name);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** Internal: how another process reopens this block. */
  [kReduce](): { type: 'SharedMemory'; name: string; size: number } {
    return { type: 'SharedMemory', name: this.#name, size: this.#size };
  }

  [inspect.custom](): string {
    return `SharedMemory(${JSON.stringify(this.name)}, size=${this.#size})`;
  }
}
