// Connections between processes (CPython's multiprocessing.connection): Pipe, Connection,
// waitFor, Listener, Client.
//
// Wire format: CPython's framing (a 4-byte big-endian length, or -1 and an 8-byte length for
// 2 GiB and more), so sendBytes/recvBytes interoperate with a Python peer. send()/recv()
// bodies are this library's messages (lib/reduction.ts), not pickles.
//
// Async reads never touch the libuv thread pool: each Connection has one uv_poll watcher
// (native Watcher) that is started only while a recv/poll is pending, and a native
// FrameReader that consumes exactly one frame at a time, never bytes of the next one.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { AuthenticationError, BufferTooShort, EOFError, ProcessError, ValueError, invalidArgType, invalidArgValue } from './errors';
import { native, type NativeFrameReader, type NativeSockAddr, type NativeWatcher } from './native';
import { decodeMessage, encodeMessage, reduceHandle, registerRebuilder, type ReduceContext, type Reduced } from './reduction';

const READABLE = 1;
const WRITABLE = 2;

// Adaptive spinning before an async read parks (glibc's adaptive mutexes, Go's scheduler do the
// same). Parking costs an event-loop wake-up when the data comes (~15-25 µs on this VM, on top
// of the kernel's cross-process wake-up); a peer that answers within tens of µs is cheaper to
// wait for by polling the socket. A read spins only while the previous parked read was answered
// within SPIN_ENABLE_US, and at most SPIN_US: a slow peer costs one failed spin, then none.
const SPIN_US = 50;
const SPIN_ENABLE_US = 100;

/** Internal: a frame decoder other than the general one (see Connection.recvDecoded). */
type FrameDecoder = (frame: Buffer, dv: DataView) => unknown;

type ReadOp =
  | { kind: 'obj'; resolve: (v: unknown) => void; reject: (e: unknown) => void; since: number; decode?: FrameDecoder }
  | { kind: 'bytes'; maxLength: number; resolve: (v: Buffer) => void; reject: (e: unknown) => void }
  | { kind: 'into'; target: Uint8Array; offset: number; resolve: (n: number) => void; reject: (e: unknown) => void };

interface PollWaiter {
  resolve: (ready: boolean) => void;
  timer: NodeJS.Timeout | null;
}

function closedError(): ValueError {
  return new ValueError('handle is closed', { code: 'ERR_MP_CONNECTION_CLOSED' });
}

function checkTimeout(name: string, t: unknown): number {
  if (t === undefined || t === null) return -1;
  if (typeof t !== 'number' || Number.isNaN(t)) throw invalidArgType(name, 'of type number', t);
  if (t === Infinity) return -1;
  return t < 0 ? 0 : Math.ceil(t);
}

function asBytes(name: string, buf: unknown): Uint8Array {
  if (buf instanceof Uint8Array) return buf;
  if (ArrayBuffer.isView(buf)) return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  if (buf instanceof ArrayBuffer || buf instanceof SharedArrayBuffer) return new Uint8Array(buf);
  throw invalidArgType(name, 'a Buffer, TypedArray, DataView or ArrayBuffer', buf);
}

function frameDataView(b: Buffer): DataView {
  return new DataView(b.buffer, b.byteOffset, b.length);
}

export interface ConnectionOptions {
  readable?: boolean;
  writable?: boolean;
}

/**
 * A connection over a file descriptor (socket or pipe). Usually made by Pipe(), Listener or
 * Client; `new Connection(fd)` adopts a descriptor (the Connection then owns and closes it).
 */
export class Connection<T = unknown> {
  #fd: number;
  #readable: boolean;
  #writable: boolean;
  #sock: boolean;
  #reader: NativeFrameReader | null = null;
  #watcher: NativeWatcher | null = null;
  #watching = 0;
  #idle = false;
  #ops: ReadOp[] = [];
  #pollers = new Set<PollWaiter>();
  #closed = false;
  #pid = process.pid;
  /** Whether the next async recv() spins before parking (see SPIN_US). */
  #spin = false;

  constructor(fd: number, opts: ConnectionOptions = {}) {
    if (typeof fd !== 'number' || !Number.isInteger(fd)) throw invalidArgType('fd', 'an integer', fd);
    if (fd < 0) throw invalidArgValue('fd', fd, 'must be a non-negative descriptor');
    const readable = opts.readable ?? true;
    const writable = opts.writable ?? true;
    if (!readable && !writable) throw new ValueError('at least one of `readable` and `writable` must be true');
    this.#sock = native.fdKind(fd) === 'socket';
    this.#fd = fd;
    this.#readable = readable;
    this.#writable = writable;
  }

  get closed(): boolean {
    return this.#closed;
  }
  get readable(): boolean {
    return this.#readable;
  }
  get writable(): boolean {
    return this.#writable;
  }

  fileno(): number {
    this.#checkOpen();
    return this.#fd;
  }

  #checkOpen(): void {
    if (this.#closed) throw closedError();
  }
  #checkReadable(): void {
    if (this.#closed) throw closedError();
    if (!this.#readable) throw new ValueError('connection is write-only', { code: 'ERR_MP_CONNECTION_WRITE_ONLY' });
    this.#forkCheck();
  }
  #checkWritable(): void {
    if (this.#closed) throw closedError();
    if (!this.#writable) throw new ValueError('connection is read-only', { code: 'ERR_MP_CONNECTION_READ_ONLY' });
  }

  // In a forked child, reads and polls the parent had pending belong to the parent's (unwound)
  // program: drop them unsettled rather than let them consume the child's messages.
  #forkCheck(): void {
    if (this.#pid === process.pid) return;
    this.#pid = process.pid;
    this.#ops = [];
    this.#pollers = new Set();
    this.#watching = 0;
    this.#idle = false;
  }

  #getReader(): NativeFrameReader {
    return (this.#reader ??= new native.FrameReader(this.#fd, this.#sock));
  }

  // ---- sending

  /** Sends a value (anything v8.serialize accepts, plus this library's handles). */
  send(obj: T): void {
    this.#checkWritable();
    const fds: number[] = [];
    const { chunks } = encodeMessage(obj, this.#sock ? fds : null);
    native.sendFrame(this.#fd, this.#sock, chunks, fds.length > 0 ? fds : undefined);
  }

  /** Sends bytes [offset, offset + size) of buf as one message. */
  sendBytes(buf: ArrayBufferView | ArrayBuffer, offset = 0, size?: number): void {
    this.#checkWritable();
    const b = asBytes('buf', buf);
    if (typeof offset !== 'number' || !Number.isInteger(offset)) throw invalidArgType('offset', 'an integer', offset);
    const n = b.byteLength;
    if (offset < 0) throw new ValueError('offset is negative', { code: 'ERR_MP_BAD_OFFSET' });
    if (n < offset) throw new ValueError('buffer length < offset', { code: 'ERR_MP_BAD_OFFSET' });
    let sz: number;
    if (size === undefined || size === null) sz = n - offset;
    else {
      if (typeof size !== 'number' || !Number.isInteger(size)) throw invalidArgType('size', 'an integer', size);
      if (size < 0) throw new ValueError('size is negative', { code: 'ERR_MP_BAD_SIZE' });
      if (offset + size > n) throw new ValueError('buffer length < offset + size', { code: 'ERR_MP_BAD_SIZE' });
      sz = size;
    }
    native.sendFrame(this.#fd, this.#sock, [b.subarray(offset, offset + sz)]);
  }

  // ---- receiving, blocking

  recvSync(): T {
    this.#checkReadable();
    const reader = this.#getReader();
    let r = reader.tryRead();
    if (r === null && this.#spin && this.#ops.length === 0) {
      const deadline = performance.now() + SPIN_US / 1000;
      while ((r = reader.tryRead()) === null && performance.now() < deadline);
    }
    if (r === null) {
      // Blocking: the same adaptation as recv() (a quick answer enables spinning next time).
      const since = performance.now();
      r = reader.readSync(-1);
      this.#spin = performance.now() - since < SPIN_ENABLE_US / 1000;
    }
    return this.#finishObj(r);
  }

  recvBytesSync(maxLength?: number): Buffer {
    this.#checkReadable();
    const max = checkMaxLength(maxLength);
    return this.#finishBytes(this.#getReader().readSync(-1, max), max);
  }

  recvBytesIntoSync(buf: ArrayBufferView | ArrayBuffer, offset = 0): number {
    this.#checkReadable();
    const target = asBytes('buf', buf);
    checkIntoOffset(target, offset);
    return this.#finishInto(this.#getReader().readSync(-1), target, offset);
  }

  /** Whether data (or EOF) is available to read, waiting up to timeout ms. */
  pollSync(timeout: number | null = 0): boolean {
    this.#checkReadable();
    const t = checkTimeout('timeout', timeout);
    return native.pollFds([this.#fd], t).length > 0;
  }

  // ---- receiving, async (event loop, no thread pool)

  recv(): Promise<T> {
    return this.#recvObj(undefined) as Promise<T>;
  }

  /**
   * @internal The next message decoded by `decode` (a frame the fast codec wrote, as
   * lib/reduction.ts decodePairs reads) instead of the general decoder. A frame that carried
   * file descriptors has them closed.
   */
  recvDecoded<R>(decode: (frame: Buffer, dv: DataView) => R): Promise<R> {
    return this.#recvObj(decode) as Promise<R>;
  }

  #recvObj(decode: FrameDecoder | undefined): Promise<unknown> {
    try {
      this.#checkReadable();
    } catch (e) {
      return Promise.reject(e);
    }
    // Fast path: a complete frame is already there (or arrives while we spin) and nobody is
    // queued before us.
    if (this.#ops.length === 0) {
      try {
        const reader = this.#getReader();
        let r = reader.tryRead();
        if (r === null && this.#spin) {
          const deadline = performance.now() + SPIN_US / 1000;
          while ((r = reader.tryRead()) === null && performance.now() < deadline);
          if (r === null) this.#spin = false; // a slow answer: park, and let it decide again
        }
        if (r !== null) return Promise.resolve(this.#finishObj(r, decode));
      } catch (e) {
        return Promise.reject(e);
      }
    }
    return new Promise<unknown>((resolve, reject) => {
      this.#ops.push({ kind: 'obj', resolve, reject, since: performance.now(), decode });
      this.#pump();
    });
  }

  recvBytes(maxLength?: number): Promise<Buffer> {
    let max: number;
    try {
      this.#checkReadable();
      max = checkMaxLength(maxLength);
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise<Buffer>((resolve, reject) => {
      this.#ops.push({ kind: 'bytes', maxLength: max, resolve, reject });
      this.#pump();
    });
  }

  recvBytesInto(buf: ArrayBufferView | ArrayBuffer, offset = 0): Promise<number> {
    let target: Uint8Array;
    try {
      this.#checkReadable();
      target = asBytes('buf', buf);
      checkIntoOffset(target, offset);
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise<number>((resolve, reject) => {
      this.#ops.push({ kind: 'into', target, offset, resolve, reject });
      this.#pump();
    });
  }

  poll(timeout: number | null = 0): Promise<boolean> {
    let t: number;
    try {
      this.#checkReadable();
      t = checkTimeout('timeout', timeout);
      if (native.pollFds([this.#fd], 0).length > 0) return Promise.resolve(true);
    } catch (e) {
      return Promise.reject(e);
    }
    if (t === 0) return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      const w: PollWaiter = { resolve, timer: null };
      if (t > 0) {
        w.timer = setTimeout(() => {
          this.#pollers.delete(w);
          this.#updateWatch();
          resolve(false);
        }, t);
      }
      this.#pollers.add(w);
      this.#updateWatch();
    });
  }

  // Serves queued reads in order while complete frames are available.
  #pump(): void {
    const reader = this.#getReader();
    while (this.#ops.length > 0) {
      const op = this.#ops[0]!;
      let r: Buffer | null | false | number;
      try {
        r = reader.tryRead(op.kind === 'bytes' ? op.maxLength : undefined);
      } catch (e) {
        this.#ops.shift();
        op.reject(e);
        continue;
      }
      if (r === null) break;
      this.#ops.shift();
      try {
        if (op.kind === 'obj') {
          // The only read in flight was answered quickly: spin for the next one.
          if (this.#ops.length === 0) this.#spin = performance.now() - op.since < SPIN_ENABLE_US / 1000;
          op.resolve(this.#finishObj(r, op.decode));
        }
        else if (op.kind === 'bytes') op.resolve(this.#finishBytes(r, op.maxLength));
        else op.resolve(this.#finishInto(r, op.target, op.offset));
      } catch (e) {
        op.reject(e);
      }
    }
    this.#updateWatch();
  }

  // The watcher stays armed (but unref'd: it does not keep the process alive) between reads,
  // so a request/response loop does not pay epoll_ctl twice per message; it is stopped for
  // real when it fires with nobody waiting.
  #updateWatch(): void {
    if (this.#closed) return;
    const want = this.#ops.length > 0 || this.#pollers.size > 0;
    if (want) {
      if (this.#watching === READABLE) {
        if (this.#idle) {
          this.#idle = false;
          this.#watcher!.setRef(true);
        }
        return;
      }
      this.#watcher ??= new native.Watcher(this.#fd, (ev) => this.#onEvent(ev));
      this.#watcher.start(READABLE);
      this.#watching = READABLE;
      this.#idle = false;
    } else if (this.#watching === READABLE && !this.#idle) {
      this.#idle = true;
      this.#watcher!.setRef(false);
    }
  }

  #stopWatch(): void {
    this.#watcher?.stop();
    this.#watching = 0;
    this.#idle = false;
  }

  #onEvent(ev: number): void {
    if (this.#ops.length === 0 && this.#pollers.size === 0) {
      this.#stopWatch(); // readable with nobody waiting: disarm until the next read
      return;
    }
    this.#wakePollers();
    this.#pump(); // a read surfaces the real condition (data, EOF, ECONNRESET...)
    if (ev < 0 && this.#ops.length > 0) {
      // libuv stopped polling after an error-only wake-up (it reports POLLERR as EBADF) and
      // the read found nothing to say: fail the pending reads rather than wait forever.
      this.#stopWatch();
      const err = native.errnoError(-ev, 'poll');
      for (const op of this.#ops.splice(0)) op.reject(err);
    }
  }

  #wakePollers(): void {
    if (this.#pollers.size === 0) return;
    const ps = [...this.#pollers];
    this.#pollers.clear();
    for (const p of ps) {
      if (p.timer) clearTimeout(p.timer);
      p.resolve(true);
    }
  }

  // ---- frame results

  #finishObj(r: Buffer | null | false | number, decode?: FrameDecoder): T {
    if (r === false) throw new EOFError();
    if (r === null || typeof r === 'number') throw new ProcessError('unexpected read result', { code: 'ERR_MP_INTERNAL' });
    const fds = this.#sock ? this.#reader!.takeFds() : [];
    if (decode !== undefined) {
      for (const fd of fds) native.close(fd);
      return decode(r, frameDataView(r)) as T;
    }
    let used = 0;
    try {
      const v = decodeMessage(r, frameDataView(r), 0, r.length, false, (i) => {
        const fd = fds[i];
        if (fd === undefined) throw new ValueError('message refers to a file descriptor that did not arrive', { code: 'ERR_MP_CORRUPT_MESSAGE' });
        fds[i] = -1;
        used++;
        return fd;
      });
      return v as T;
    } finally {
      // Descriptors the message did not claim (or all of them if decoding failed) are closed.
      if (used < fds.length) for (const fd of fds) if (fd >= 0) native.close(fd);
    }
  }

  #finishBytes(r: Buffer | null | false | number, max: number): Buffer {
    if (r === false) throw new EOFError();
    if (typeof r === 'number') {
      throw new ValueError(`bad message length: ${r} bytes exceeds maxLength ${max}`, { code: 'ERR_MP_BAD_MESSAGE_LENGTH' });
    }
    if (r === null) throw new ProcessError('unexpected read result', { code: 'ERR_MP_INTERNAL' });
    this.#dropFds();
    return r;
  }

  #finishInto(r: Buffer | null | false | number, target: Uint8Array, offset: number): number {
    if (r === false) throw new EOFError();
    if (r === null || typeof r === 'number') throw new ProcessError('unexpected read result', { code: 'ERR_MP_INTERNAL' });
    this.#dropFds();
    if (target.byteLength < offset + r.length) throw new BufferTooShort(r);
    target.set(r, offset);
    return r.length;
  }

  #dropFds(): void {
    if (this.#sock) for (const fd of this.#reader!.takeFds()) native.close(fd);
  }

  // ---- lifetime

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watcher?.close();
    this.#watcher = null;
    this.#reader?.dispose();
    this.#reader = null;
    for (const p of this.#pollers) if (p.timer) clearTimeout(p.timer);
    const pollers = [...this.#pollers];
    this.#pollers.clear();
    const ops = this.#ops.splice(0);
    native.close(this.#fd);
    for (const p of pollers) p.resolve(false);
    for (const op of ops) op.reject(closedError());
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** A Connection travels as its descriptor (SCM_RIGHTS): only over a socket Connection. */
  [reduceHandle](ctx: ReduceContext): Reduced {
    this.#checkOpen();
    const i = ctx.addFd(this.#fd);
    return { type: 'multiproc.Connection', state: { fd: i, readable: this.#readable, writable: this.#writable } };
  }

  get [Symbol.toStringTag](): string {
    return 'Connection';
  }
}

registerRebuilder<{ fd: number; readable: boolean; writable: boolean }>('multiproc.Connection', (s, ctx) => {
  return new Connection(ctx.takeFd(s.fd), { readable: s.readable, writable: s.writable });
});

function checkMaxLength(maxLength: unknown): number {
  if (maxLength === undefined || maxLength === null) return -1;
  if (typeof maxLength !== 'number' || !Number.isInteger(maxLength)) throw invalidArgType('maxLength', 'an integer', maxLength);
  if (maxLength < 0) throw new ValueError('negative maxlength', { code: 'ERR_MP_BAD_MESSAGE_LENGTH' });
  return maxLength;
}

function checkIntoOffset(target: Uint8Array, offset: unknown): void {
  if (typeof offset !== 'number' || !Number.isInteger(offset)) throw invalidArgType('offset', 'an integer', offset);
  if (offset < 0) throw new ValueError('negative offset', { code: 'ERR_MP_BAD_OFFSET' });
  if (offset > target.byteLength) throw new ValueError('offset too large', { code: 'ERR_MP_BAD_OFFSET' });
}

/** A pair of connected Connections: duplex (socketpair) or [reader, writer] (pipe). */
export function Pipe<T = unknown>(opts: { duplex?: boolean } = {}): [Connection<T>, Connection<T>] {
  if (typeof opts !== 'object' || opts === null) throw invalidArgType('opts', 'an object', opts);
  if (opts.duplex ?? true) {
    const [a, b] = native.socketpair();
    return [new Connection<T>(a), new Connection<T>(b)];
  }
  const [r, w] = native.pipe();
  return [new Connection<T>(r, { writable: false }), new Connection<T>(w, { readable: false })];
}

// ---------------------------------------------------------------- waitFor

export type Waitable = Connection | number;

function waitableFd(o: unknown): number {
  if (o instanceof Connection) return o.fileno();
  if (typeof o === 'number' && Number.isInteger(o) && o >= 0) return o;
  if (typeof o === 'object' && o !== null && typeof (o as { fileno?: unknown }).fileno === 'function') {
    const fd = (o as { fileno(): unknown }).fileno();
    if (typeof fd === 'number') return fd;
  }
  throw invalidArgType('objects', 'an array of Connections or file descriptors', o);
}

/**
 * Waits until one or more of `objects` (Connections or descriptors such as a process sentinel)
 * is ready to read (data, EOF or error) and returns those, or [] after `timeout` ms.
 */
export function waitFor<W extends Waitable>(objects: Iterable<W>, timeout?: number | null): Promise<W[]> {
  let list: W[];
  let fds: number[];
  let t: number;
  try {
    if (objects === null || typeof (objects as Iterable<W>)[Symbol.iterator] !== 'function') {
      throw invalidArgType('objects', 'an iterable', objects);
    }
    list = [...objects];
    fds = list.map(waitableFd);
    t = checkTimeout('timeout', timeout);
    const ready = readyOf(list, fds, 0);
    if (ready.length > 0 || t === 0 || list.length === 0 && t < 0) return Promise.resolve(ready);
  } catch (e) {
    return Promise.reject(e);
  }
  return new Promise<W[]>((resolve, reject) => {
    // libuv allows one poll handle per descriptor and loop, and a Connection may be watched by
    // its own recv(): watch private duplicates instead.
    const dups: number[] = [];
    const watchers: NativeWatcher[] = [];
    let timer: NodeJS.Timeout | null = null;
    let done = false;
    const finish = (err: unknown, value?: W[]) => {
      if (done) return;
      done = true;
      if (timer) clearTimeout(timer);
      for (const w of watchers) w.close();
      for (const d of dups) native.close(d);
      if (err) reject(err);
      else resolve(value!);
    };
    try {
      for (const fd of new Set(fds)) {
        const d = native.dup(fd);
        dups.push(d);
        const w = new native.Watcher(d, () => {
          try {
            const ready = readyOf(list, fds, 0);
            if (ready.length > 0) finish(null, ready);
          } catch (e) {
            finish(e);
          }
        });
        watchers.push(w);
        w.start(READABLE);
      }
      if (t > 0) timer = setTimeout(() => finish(null, []), t);
    } catch (e) {
      finish(e);
    }
  });
}

/** Blocking twin of waitFor. */
export function waitForSync<W extends Waitable>(objects: Iterable<W>, timeout?: number | null): W[] {
  const list = [...objects];
  const fds = list.map(waitableFd);
  return readyOf(list, fds, checkTimeout('timeout', timeout));
}

function readyOf<W>(list: W[], fds: number[], timeoutMs: number): W[] {
  if (list.length === 0) return [];
  const ready = new Set(native.pollFds(fds, timeoutMs));
  return list.filter((_, i) => ready.has(fds[i]!));
}

// ---------------------------------------------------------------- Listener / Client

export type Family = 'AF_UNIX' | 'AF_INET' | 'AF_INET6';
/** A Unix socket path, or [host, port] for TCP. */
export type Address = string | [host: string, port: number];

export interface ListenerOptions {
  address?: Address;
  family?: Family;
  backlog?: number;
  /** Both sides prove knowledge of this key (HMAC-SHA256 challenge/response); '' is a valid key. */
  authkey?: Buffer | Uint8Array | string;
}

function addressFamily(address: Address): Family {
  if (typeof address === 'string') return 'AF_UNIX';
  if (Array.isArray(address) && address.length === 2 && typeof address[0] === 'string' && typeof address[1] === 'number') {
    return address[0].includes(':') ? 'AF_INET6' : 'AF_INET';
  }
  throw invalidArgType('address', 'a socket path or a [host, port] pair', address);
}

function checkFamily(family: unknown): Family | undefined {
  if (family === undefined) return undefined;
  if (family === 'AF_UNIX' || family === 'AF_INET' || family === 'AF_INET6') return family;
  throw invalidArgValue('family', family, "must be 'AF_UNIX', 'AF_INET' or 'AF_INET6'");
}

function toAuthkey(k: unknown): Buffer | null {
  if (k === undefined || k === null) return null;
  if (typeof k === 'string') return Buffer.from(k);
  if (k instanceof Uint8Array) return Buffer.from(k);
  throw invalidArgType('authkey', 'a Buffer, Uint8Array or string', k);
}

function fromSockAddr(a: NativeSockAddr): Address {
  return a.family === 'AF_UNIX' ? a.path : [a.host, a.port];
}

/** A server socket accepting Connections (Unix socket by default, or TCP). */
export class Listener {
  #fd: number;
  #family: Family;
  #address: Address;
  #authkey: Buffer | null;
  #tmpDir: string | null = null;
  #watcher: NativeWatcher | null = null;
  #accepts: { resolve: (fd: number) => void; reject: (e: unknown) => void }[] = [];
  #closed = false;
  #pid = process.pid;
  #acceptPid = process.pid;
  #lastAccepted: Address | null = null;

  constructor(opts: ListenerOptions = {}) {
    if (typeof opts !== 'object' || opts === null) throw invalidArgType('opts', 'an object', opts);
    let family = checkFamily(opts.family);
    let address = opts.address;
    if (address !== undefined) {
      const f = addressFamily(address);
      family ??= f;
      if ((family === 'AF_UNIX') !== (f === 'AF_UNIX')) throw invalidArgValue('family', family, `does not match the address ${JSON.stringify(address)}`);
    }
    family ??= 'AF_UNIX';
    const backlog = opts.backlog ?? 1;
    if (typeof backlog !== 'number' || !Number.isInteger(backlog) || backlog < 0) throw invalidArgValue('backlog', backlog, 'must be a non-negative integer');
    this.#authkey = toAuthkey(opts.authkey);
    if (address === undefined) {
      if (family === 'AF_UNIX') {
        // A private directory (mkdtemp creates it 0700): nobody else can connect or race us.
        this.#tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-'));
        address = path.join(this.#tmpDir, `listener-${lazyCrypto().randomBytes(6).toString('hex')}`);
      } else address = [family === 'AF_INET6' ? '::1' : '127.0.0.1', 0];
    }
    const [host, port] = typeof address === 'string' ? [address, 0] : address;
    let r: { fd: number; address: NativeSockAddr };
    try {
      r = native.socketListen(family, host, port, backlog);
    } catch (e) {
      if (this.#tmpDir) fs.rmSync(this.#tmpDir, { recursive: true, force: true });
      throw e;
    }
    this.#fd = r.fd;
    this.#family = family;
    this.#address = fromSockAddr(r.address);
    if (family === 'AF_UNIX') this.#address = address;
  }

  get address(): Address {
    return this.#address;
  }
  get family(): Family {
    return this.#family;
  }
  get lastAccepted(): Address | null {
    return this.#lastAccepted;
  }
  get closed(): boolean {
    return this.#closed;
  }
  fileno(): number {
    if (this.#closed) throw closedError();
    return this.#fd;
  }

  /** Waits for a client, then (with an authkey) authenticates it both ways. */
  async accept<T = unknown>(): Promise<Connection<T>> {
    if (this.#closed) throw closedError();
    const fd = await this.#acceptFd();
    const conn = new Connection<T>(fd);
    this.#lastAccepted = this.#family === 'AF_UNIX' ? this.#address : fromSockAddr(native.socketName(fd));
    if (this.#authkey !== null) {
      try {
        await deliverChallenge(conn, this.#authkey);
        await answerChallenge(conn, this.#authkey);
      } catch (e) {
        conn.close();
        throw e;
      }
    }
    return conn;
  }

  /** Blocking twin of accept(). */
  acceptSync<T = unknown>(): Connection<T> {
    if (this.#closed) throw closedError();
    let fd = native.socketAccept(this.#fd);
    while (fd < 0) {
      native.pollFds([this.#fd], -1);
      if (this.#closed) throw closedError();
      fd = native.socketAccept(this.#fd);
    }
    const conn = new Connection<T>(fd);
    if (this.#authkey !== null) {
      try {
        deliverChallengeSync(conn, this.#authkey);
        answerChallengeSync(conn, this.#authkey);
      } catch (e) {
        conn.close();
        throw e;
      }
    }
    return conn;
  }

  #acceptFd(): Promise<number> {
    if (this.#acceptPid !== process.pid) {
      // A forked child: accepts pending in the parent are the parent's.
      this.#acceptPid = process.pid;
      this.#accepts = [];
    }
    if (this.#accepts.length === 0) {
      const fd = native.socketAccept(this.#fd);
      if (fd >= 0) return Promise.resolve(fd);
    }
    return new Promise<number>((resolve, reject) => {
      this.#accepts.push({ resolve, reject });
      this.#watcher ??= new native.Watcher(this.#fd, (ev) => this.#onReadable(ev));
      this.#watcher.start(READABLE);
    });
  }

  #onReadable(ev: number): void {
    while (this.#accepts.length > 0) {
      let fd: number;
      try {
        if (ev < 0) throw native.errnoError(-ev, 'poll');
        fd = native.socketAccept(this.#fd);
      } catch (e) {
        this.#accepts.shift()!.reject(e);
        continue;
      }
      if (fd < 0) break;
      this.#accepts.shift()!.resolve(fd);
    }
    if (this.#accepts.length === 0) this.#watcher?.stop();
  }

  /** Stops listening; removes the socket file (and the private directory made for it). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watcher?.close();
    this.#watcher = null;
    native.close(this.#fd);
    // Only the process that created the socket file removes it (a forked child's close must
    // not pull the address from under the parent).
    if (this.#family === 'AF_UNIX' && process.pid === this.#pid) {
      try {
        fs.unlinkSync(this.#address as string);
      } catch {
        // already gone
      }
      if (this.#tmpDir) fs.rmSync(this.#tmpDir, { recursive: true, force: true });
    }
    for (const a of this.#accepts.splice(0)) a.reject(closedError());
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

export interface ClientOptions {
  family?: Family;
  authkey?: Buffer | Uint8Array | string;
}

/** Connects to a Listener at `address`; with an authkey both sides authenticate. */
export async function Client<T = unknown>(address: Address, opts: ClientOptions = {}): Promise<Connection<T>> {
  const family = checkFamily(opts.family) ?? addressFamily(address);
  const authkey = toAuthkey(opts.authkey);
  const [host, port] = typeof address === 'string' ? [address, 0] : address;
  const fd = await connectFd(family, host, port);
  const conn = new Connection<T>(fd);
  if (authkey !== null) {
    try {
      await answerChallenge(conn, authkey);
      await deliverChallenge(conn, authkey);
    } catch (e) {
      conn.close();
      throw e;
    }
  }
  return conn;
}

async function connectFd(family: Family, host: string, port: number): Promise<number> {
  for (let attempt = 0; ; attempt++) {
    let r: [number, boolean];
    try {
      r = native.socketConnect(family, host, port);
    } catch (e) {
      // A full Unix-socket backlog: retry for a while, as a blocking connect would wait.
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN' && attempt < 200) {
        await new Promise((res) => setTimeout(res, 10));
        continue;
      }
      throw e;
    }
    const [fd, inProgress] = r;
    if (!inProgress) return fd;
    try {
      // libuv reports an error-only wake-up (POLLERR, e.g. connection refused) as EBADF: the
      // real outcome is the socket's SO_ERROR, which socketConnectFinish throws.
      await new Promise<void>((resolve) => {
        const w = new native.Watcher(fd, () => {
          w.close();
          resolve();
        });
        w.start(WRITABLE);
      });
      native.socketConnectFinish(fd);
      return fd;
    } catch (e) {
      native.close(fd);
      throw e;
    }
  }
}

/** node:crypto on first use (authentication, Listener names): ~4 ms of every process start otherwise. */
function lazyCrypto(): typeof import('node:crypto') {
  return require('node:crypto') as typeof import('node:crypto');
}

// ---- authentication: CPython 3.12's challenge/response with HMAC-SHA256.
//
// The side that delivers sends b'#CHALLENGE#{sha256}' + 40 random bytes; the answering side
// replies b'{sha256}' + HMAC-SHA256(authkey, b'{sha256}' + random); the deliverer answers
// b'#WELCOME#' or b'#FAILURE#'. The server delivers then answers, the client answers then
// delivers, so each side proves the other knows the key. Same bytes as CPython 3.12 with
// digest sha256, so a Python peer can authenticate against us.

const CHALLENGE = Buffer.from('#CHALLENGE#');
const WELCOME = Buffer.from('#WELCOME#');
const FAILURE = Buffer.from('#FAILURE#');
const DIGEST_PREFIX = Buffer.from('{sha256}');
const MESSAGE_LENGTH = 40;
const AUTH_MAX = 256;

function makeChallenge(): Buffer {
  return Buffer.concat([DIGEST_PREFIX, lazyCrypto().randomBytes(MESSAGE_LENGTH)]);
}

function response(authkey: Buffer, message: Buffer): Buffer {
  if (!message.subarray(0, DIGEST_PREFIX.length).equals(DIGEST_PREFIX)) {
    throw new AuthenticationError('unsupported digest in challenge (only {sha256} is accepted)');
  }
  return Buffer.concat([DIGEST_PREFIX, lazyCrypto().createHmac('sha256', authkey).update(message).digest()]);
}

function verify(authkey: Buffer, message: Buffer, resp: Buffer): boolean {
  const expected = response(authkey, message);
  return resp.length === expected.length && lazyCrypto().timingSafeEqual(resp, expected);
}

async function deliverChallenge(conn: Connection, authkey: Buffer): Promise<void> {
  const message = makeChallenge();
  conn.sendBytes(Buffer.concat([CHALLENGE, message]));
  const resp = await recvAuth(conn);
  if (!verify(authkey, message, resp)) {
    conn.sendBytes(FAILURE);
    throw new AuthenticationError('digest received was wrong');
  }
  conn.sendBytes(WELCOME);
}

async function answerChallenge(conn: Connection, authkey: Buffer): Promise<void> {
  const message = await recvAuth(conn);
  conn.sendBytes(answerFor(authkey, message));
  const r = await recvAuth(conn);
  if (!r.equals(WELCOME)) throw new AuthenticationError('digest sent was rejected');
}

function deliverChallengeSync(conn: Connection, authkey: Buffer): void {
  const message = makeChallenge();
  conn.sendBytes(Buffer.concat([CHALLENGE, message]));
  const resp = recvAuthSync(conn);
  if (!verify(authkey, message, resp)) {
    conn.sendBytes(FAILURE);
    throw new AuthenticationError('digest received was wrong');
  }
  conn.sendBytes(WELCOME);
}

function answerChallengeSync(conn: Connection, authkey: Buffer): void {
  const message = recvAuthSync(conn);
  conn.sendBytes(answerFor(authkey, message));
  const r = recvAuthSync(conn);
  if (!r.equals(WELCOME)) throw new AuthenticationError('digest sent was rejected');
}

function answerFor(authkey: Buffer, message: Buffer): Buffer {
  if (!message.subarray(0, CHALLENGE.length).equals(CHALLENGE)) {
    throw new AuthenticationError('protocol error: expected a challenge');
  }
  const m = message.subarray(CHALLENGE.length);
  if (m.length < 20) throw new AuthenticationError(`challenge too short: ${m.length} bytes`);
  return response(authkey, m);
}

async function recvAuth(conn: Connection): Promise<Buffer> {
  try {
    return await conn.recvBytes(AUTH_MAX);
  } catch (e) {
    throw authFailure(e);
  }
}

function recvAuthSync(conn: Connection): Buffer {
  try {
    return conn.recvBytesSync(AUTH_MAX);
  } catch (e) {
    throw authFailure(e);
  }
}

function authFailure(e: unknown): unknown {
  if (e instanceof EOFError) return new AuthenticationError('connection closed during authentication', { cause: e });
  if (e instanceof ValueError && e.code === 'ERR_MP_BAD_MESSAGE_LENGTH') return new AuthenticationError('protocol error: authentication message too long', { cause: e });
  return e;
}
