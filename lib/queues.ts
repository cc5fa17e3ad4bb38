// Queues shared by processes (CPython's multiprocessing.queues): Queue, JoinableQueue,
// SimpleQueue, over a shared-memory ring buffer of serialized frames.
//
// Shared segment: a 256-byte header of 32-bit words, then a power-of-two ring of records.
//   record = u32 length | u32 kind | payload | padding to 8 bytes
//   kind 0: an item encoded by lib/reduction.ts; 1: a side-channel item (payload = the name of
//   a shared-memory segment holding the encoded item: items larger than half the ring never
//   wait for ring space that can never come); 2: padding to the end of the ring (wrap).
// HEAD and TAIL are free-running byte counters (int32, wrapping); offset = counter & (cap - 1),
// bytes in use = HEAD - TAIL.
//
// Concurrency and crashes. Producers serialize on a put Lock, consumers on a get Lock (both
// from synchronize.ts: a lock whose holder dies is taken over by the next acquirer). Nobody ever
// sleeps while holding one: a producer that finds no room, or a consumer that finds no item,
// releases the lock and futex-waits on the other side's counter (TAIL / HEAD: every get moves
// TAIL, every put HEAD, so no separate sequence word is bumped per item), so a lock is held only
// for a copy. Each side publishes with a single atomic store (HEAD after the record
// is written, TAIL after the item was copied out), so:
//   - a producer killed mid-put leaves HEAD unchanged: its half-written record is invisible
//     and is overwritten by the next put;
//   - a consumer killed mid-get leaves TAIL unchanged: the item stays for the next consumer.
//     It cannot be delivered twice: the dead consumer never returned it.
// A JoinableQueue counts unfinished tasks as PUTS - DONE. Its put counts the item (PUTS) before
// publishing it, so a consumer's taskDone never finds the item uncounted; a producer killed
// between the two would leave a task counted that nobody can take, and join() would wait
// forever. So the put first writes a journal (J_HEAD, J_PUTS, then J_BUSY = 1) and clears
// J_BUSY after publishing. Whoever next holds the put lock and finds J_BUSY set (a live
// producer never releases the lock with it set, so its holder died) repairs PUTS from HEAD:
// unchanged HEAD = not published, PUTS back to J_PUTS; moved = published, J_PUTS + 1. The next
// put does that, and so does join() (it takes the put lock without blocking when it sees J_BUSY).
// Wake-ups are batched: a side calls futex wake only if the other side registered a sleeper
// (DATA_WAITERS / SPACE_WAITERS).
import { inspect } from 'node:util';

import { waitWord, waitWordSync, wakeWord } from './_wait';
import { Empty, Full, ValueError, invalidArgType, invalidArgValue } from './errors';
import { DESCRIBED, decodeMessage, encodeMessage, reduceHandle, registerRebuilder, type Reduced } from './reduction';
import { attachSegment, createSegment, unlinkSegment, kReduce, SharedMemory, type Segment } from './shared_memory';
import { rebuildShared } from './sharedctypes';
import { native } from './native';
import { Lock, rebuild, type SyncDescription } from './synchronize';
import { noteContext } from './_spawning';

// Header words (int32), one 64-byte cache line per writer so that a producer and a consumer on
// two cores do not invalidate each other's line on every item (false sharing halved the rate):
//   line 0, written by producers: HEAD, PUTS, and a JoinableQueue's put journal
//   line 1, written by consumers: TAIL, GETS
//   line 2, written only by processes about to sleep: DATA_WAITERS, SPACE_WAITERS
//   line 3, JoinableQueue: DONE (taskDone calls), JOIN_SEQ
const HEAD = 0;
const PUTS = 1;
const J_BUSY = 3;
const J_HEAD = 4;
const J_PUTS = 5;
const TAIL = 16;
const GETS = 17;
const DATA_WAITERS = 32;
const SPACE_WAITERS = 33;
const DONE = 48;
const JOIN_SEQ = 49;
const HEADER = 256;

const K_ITEM = 0;
const K_SIDE = 1;
const K_PAD = 2;

const DEFAULT_CAPACITY = 4 * 1024 * 1024;
const WINDOW = 256 * 1024;
/** Puts during which #tryPut runs its rare branches too (V8 optimizes it after a few hundred). */
const WARM_PUTS = 1024;

// Adaptive spinning of a consumer that found the queue empty: spin up to SPIN_MS while the
// previous sleep lasted less than SPIN_ENABLE_MS.
const SPIN_MS = 0.05;
const SPIN_ENABLE_MS = 0.1;
// A spinning consumer polls the producers' line every SPIN_PAUSE_MS, not back to back: each
// poll takes the cache line away from the producer writing it, which then waits for it back
// (a tight poll cut a streaming producer's rate by a third here).
const SPIN_PAUSE_MS = 0.002;
// A streaming consumer (one that spins) that finds less than LAG_BYTES of records waits
// LAG_MS once before taking them, so that it reads whole cache lines the producer has finished
// with instead of the line the producer is writing (measured: 200k small items 1.3 -> 1.5 M/s).
const LAG_BYTES = 1024;
const LAG_MS = 0.001;

export interface PutOptions {
  block?: boolean;
  /** Milliseconds; undefined waits forever. */
  timeout?: number;
}
export type GetOptions = PutOptions;

export interface QueueOptions {
  /** Ring size in bytes (rounded up to a power of two, at least 64 KiB). Default 4 MiB. */
  capacity?: number;
}

interface QueueState {
  seg: string;
  size: number;
  cap: number;
  maxsize: number;
  putLock: ReturnType<Lock[typeof kReduce]>;
  getLock: ReturnType<Lock[typeof kReduce]>;
  kind: 'Queue' | 'JoinableQueue' | 'SimpleQueue';
}

function deadline(timeout: number | undefined): number {
  return timeout === undefined ? Infinity : Date.now() + Math.max(0, timeout);
}

const BLOCK_FOREVER: { readonly block: boolean; readonly timeout: number | undefined } = Object.freeze({ block: true, timeout: undefined });

const NO_WAIT: { readonly block: boolean; readonly timeout: number | undefined } = Object.freeze({ block: false, timeout: undefined });

function checkOpts(opts: unknown): { readonly block: boolean; readonly timeout: number | undefined } {
  // The common calls (no options, the *Nowait forms) allocate nothing: garbage per item is a
  // forked producer's copy-on-write faults and scavenges.
  if (opts === undefined) return BLOCK_FOREVER;
  if (opts === NO_WAIT) return NO_WAIT;
  if (typeof opts !== 'object' || opts === null) throw invalidArgType('options', 'an object', opts);
  const { block = true, timeout } = opts as PutOptions;
  if (typeof block !== 'boolean') throw invalidArgType('block', 'of type boolean', block);
  if (timeout !== undefined && (typeof timeout !== 'number' || Number.isNaN(timeout))) throw invalidArgType('timeout', 'of type number', timeout);
  return { block, timeout: timeout === Infinity ? undefined : timeout };
}

let ids = 0;

/** An item ready for the ring: its encoded chunks, or (side) the name of the segment holding it. */
interface Encoded {
  chunks: Uint8Array[];
  length: number;
  side?: Segment | null;
}

/** A FIFO (per producer) queue shared by processes; items are anything v8.serialize accepts, plus handles. */
export class Queue<T = unknown> {
  #seg: Segment;
  #w: Int32Array;
  #buf: Buffer;
  #dv: DataView;
  #cap: number;
  #mask: number;
  #maxsize: number;
  #putLock: Lock;
  #getLock: Lock;
  #closed = false;
  #id = ++ids;
  // The other side's counter as last read: it only moves forward, so a stale value means less
  // room (producer) or fewer items (consumer) than there are, never more. Reading the other
  // side's cache line only when the stale view says "full" / "empty" keeps it out of ours.
  #tailSeen = 0;
  #headSeen = 0;
  /** Puts by this process on this queue, counted up to WARM_PUTS (see #tryPut). */
  #warmPuts = 0;
  /** The ring is big enough for small items to circle in its first WINDOW bytes. */
  #windowed = false;
  /** Whether a get spins before sleeping (see #spinGet). */
  #spin = false;
  protected readonly kind: 'Queue' | 'JoinableQueue' | 'SimpleQueue' = 'Queue';

  constructor(maxsize = 0, opts: QueueOptions = {}) {
    const restored = restoring;
    restoring = undefined;
    if (restored) {
      this.#seg = attachSegment(restored.seg, restored.size);
      this.#cap = restored.cap;
      this.#maxsize = restored.maxsize;
      this.#putLock = rebuild(restored.putLock) as Lock;
      this.#getLock = rebuild(restored.getLock) as Lock;
    } else {
      if (typeof maxsize !== 'number' || !Number.isInteger(maxsize)) throw invalidArgType('maxsize', 'an integer', maxsize);
      const want = opts.capacity ?? DEFAULT_CAPACITY;
      if (typeof want !== 'number' || !Number.isInteger(want) || want <= 0) throw invalidArgValue('capacity', want, 'must be a positive integer');
      let cap = 64 * 1024;
      while (cap < want) cap *= 2;
      if (cap > 1 << 30) throw invalidArgValue('capacity', want, 'must be at most 1 GiB');
      this.#cap = cap;
      this.#maxsize = maxsize <= 0 ? 0 : maxsize;
      this.#seg = createSegment(HEADER + cap);
      this.#putLock = new Lock();
      this.#getLock = new Lock();
    }
    this.#mask = this.#cap - 1;
    this.#windowed = this.#cap >= 4 * WINDOW;
    this.#w = new Int32Array(this.#seg.sab, 0, HEADER / 4);
    this.#buf = Buffer.from(this.#seg.sab, HEADER, this.#cap);
    this.#dv = new DataView(this.#seg.sab, HEADER, this.#cap);
    if (!restored) registerCreated(this);
    noteContext(this, restored ? null : undefined);
  }

  /**
   * At the creating process's exit (when the ring's name goes away too): unlinks the side
   * segments of items nobody took, so nothing is left in /dev/shm.
   */
  _unlinkPendingSideItems(): void {
    const w = this.#w;
    let tail = Atomics.load(w, TAIL);
    const head = Atomics.load(w, HEAD);
    while (tail !== head) {
      let off = tail & this.#mask;
      if (this.#dv.getUint32(off + 4, true) === K_PAD) {
        tail = (tail + (this.#cap - off)) | 0;
        off = 0;
        if (tail === head) break;
      }
      const len = this.#dv.getUint32(off, true);
      if (this.#dv.getUint32(off + 4, true) === K_SIDE) {
        try {
          unlinkSegment(this.#buf.toString('latin1', off + 8, off + 8 + len), { lineage: true });
        } catch {
          // taken meanwhile
        }
      }
      tail = (tail + ((8 + len + 7) & ~7)) | 0;
    }
  }

  // ---- put

  putSync(item: T, opts?: PutOptions): void {
    const { block, timeout } = checkOpts(opts);
    this.#checkClosed();
    const enc = this.#encode(item);
    try {
      // Room there: put without reading TAIL, which lives on the consumers' cache line (as getSync).
      if (this.#tryPut(enc.chunks, enc.length, enc.side ?? null)) return;
      if (!block) throw new Full();
      const end = deadline(timeout);
      for (;;) {
        const seq = Atomics.load(this.#w, TAIL);
        if (this.#tryPut(enc.chunks, enc.length, enc.side ?? null)) return;
        const left = end - Date.now();
        if (left <= 0) throw new Full();
        Atomics.add(this.#w, SPACE_WAITERS, 1);
        try {
          waitWordSync(this.#w, TAIL, seq, left === Infinity ? undefined : left);
        } finally {
          Atomics.sub(this.#w, SPACE_WAITERS, 1);
        }
      }
    } catch (e) {
      this.#dropSide(enc);
      throw e;
    }
  }

  /** A put that failed (Full, timeout, closed): its side segment, if any, is nobody's. */
  #dropSide(enc: Encoded | undefined): void {
    if (enc?.side) {
      try {
        unlinkSegment(enc.side.name, { lineage: true });
      } catch {
        // already gone
      }
    }
  }

  put(item: T, opts?: PutOptions): Promise<void> {
    // Not an async function: the common case (room in the ring) settles without one, which
    // is a third of the cost of a small put.
    let block: boolean;
    let timeout: number | undefined;
    let enc: Encoded | undefined;
    try {
      ({ block, timeout } = checkOpts(opts));
      this.#checkClosed();
      enc = this.#encode(item);
      if (this.#tryPut(enc.chunks, enc.length, enc.side ?? null)) return RESOLVED;
      if (!block) throw new Full();
    } catch (e) {
      this.#dropSide(enc);
      return Promise.reject(e);
    }
    return this.#putSlow(enc, timeout);
  }

  async #putSlow(enc: Encoded, timeout: number | undefined): Promise<void> {
    // We are going to wait: small chunks point into the encoder's shared scratch buffer, which
    // the next encode reuses, so copy them; large chunks are the caller's own Buffers, kept by
    // reference until the put completes (CPython also serializes a put item after put returns).
    const own = { chunks: enc.chunks.map((c) => (c.length < 4096 ? Buffer.from(c) : c)), length: enc.length, side: enc.side };
    const end = deadline(timeout);
    try {
      for (;;) {
        const seq = Atomics.load(this.#w, TAIL);
        if (this.#tryPut(own.chunks, own.length, own.side ?? null)) return;
        const left = end - Date.now();
        if (left <= 0) throw new Full();
        Atomics.add(this.#w, SPACE_WAITERS, 1);
        try {
          await waitWord(this.#w, TAIL, seq, { timeout: left === Infinity ? undefined : left });
        } finally {
          Atomics.sub(this.#w, SPACE_WAITERS, 1);
        }
        this.#checkClosed();
      }
    } catch (e) {
      this.#dropSide(own);
      throw e;
    }
  }

  putNowait(item: T): void {
    this.putSync(item, NO_WAIT);
  }

  #encode(item: T): Encoded {
    const enc = encodeMessage(item, null);
    const { chunks, length } = enc;
    // The encoder's reused result, valid until the next encode (as the bytes it points to).
    if (8 + length <= this.#cap / 2) return enc as { chunks: Uint8Array[]; length: number; side: null };
    // Side channel: the item goes into its own segment, the ring carries its name. The consumer
    // unlinks it (the producer may have exited by then); if the whole process tree dies with
    // the item still queued, the resource tracker does.
    const seg = createSegment(length, { track: 'lineage' });
    const b = Buffer.from(seg.sab, 0, length);
    let off = 0;
    for (const c of chunks) {
      native.copyBytes(b, off, c, 0, c.length);
      off += c.length;
    }
    const name = Buffer.from(seg.name);
    return { chunks: [name], length: name.length, side: seg };
  }

  // One attempt under the put lock; false if there is no room (or the queue is at maxsize).
  // (The item comes as separate arguments: the objects that carry it have two shapes, and the
  // second one, met in optimized code, deoptimized it.)
  #tryPut(chunks: Uint8Array[], length: number, side: Segment | null): boolean {
    const w = this.#w;
    const need = (8 + length + 7) & ~7;
    this.#putLock.acquireSync();
    try {
      if (Atomics.load(w, J_BUSY) !== 0) this.#repairPut();
      if (this.#maxsize > 0 && ((Atomics.load(w, PUTS) - Atomics.load(w, GETS)) | 0) >= this.#maxsize) return false;
      const head = Atomics.load(w, HEAD);
      const cap = this.#cap;
      const windowed = this.#windowed;
      let off = head & this.#mask;
      const toEnd = cap - off;
      let pad = need > toEnd ? toEnd : 0;
      // The rare branches below (a look at TAIL, a lap of the window, a pad record) also run,
      // without effect, in this process's first WARM_PUTS puts on the queue, so that V8 has seen
      // them run before it optimizes this method. Met for the first time in optimized code, each
      // one deoptimized it and it was compiled again: a 200k-item stream made 4-9 such and took
      // 42-57 ms (measured with --trace-deopt).
      const warm = this.#warmPuts < WARM_PUTS;
      if (warm) this.#warmPuts++;
      let tailSeen = this.#tailSeen;
      let used = (head - tailSeen) | 0;
      if (used < 0 || used > cap || used + pad + need > cap || warm) {
        tailSeen = Atomics.load(w, TAIL);
        used = (head - tailSeen) | 0;
        if (used + pad + need > cap) {
          this.#tailSeen = tailSeen;
          return false;
        }
      }
      // Small items circle in the ring's first WINDOW bytes while the consumers keep up: a
      // record that would cross the window goes to offset 0 instead (the rest of the ring is
      // skipped with a pad record, as at the ring's end). The ring's pages stay few and warm:
      // each page a process touches first costs it a page fault (~12 us on a VM measured), and a
      // stream of 200k small items would otherwise walk 3 MB of them. Once the consumers fall
      // behind by half a window, records go on past it and the whole ring is used.
      const lap = pad === 0 && off < WINDOW && off + need >= WINDOW && windowed;
      if (lap || warm) {
        tailSeen = Atomics.load(w, TAIL); // once per lap of the window
        used = (head - tailSeen) | 0;
        if (used + need <= WINDOW / 2 && lap) pad = toEnd;
      }
      this.#tailSeen = tailSeen;
      const dv = this.#dv;
      // A pad record's header, written on every put: without a pad the item's header overwrites
      // it at once (nothing past HEAD is visible to anyone yet).
      dv.setUint32(off, 0, true);
      dv.setUint32(off + 4, K_PAD, true);
      if (pad > 0) off = 0;
      dv.setUint32(off, length, true);
      dv.setUint32(off + 4, side !== null ? K_SIDE : K_ITEM, true);
      let p = off + 8;
      for (const c of chunks) {
        // V8 copies into shared memory byte-wise when unaligned: memcpy for anything sizable.
        const n = c.length;
        if (n >= 256) native.copyBytes(this.#buf, p, c, 0, n);
        else if (n > 16) this.#buf.set(c, p);
        else for (let i = 0; i < n; i++) this.#buf[p + i] = c[i] as number; // a small item: no builtin call
        p += n;
      }
      if (this.kind === 'JoinableQueue') {
        // Counted before it is visible, under the journal (see the top of this file).
        const puts = Atomics.load(w, PUTS);
        Atomics.store(w, J_HEAD, head);
        Atomics.store(w, J_PUTS, puts);
        Atomics.store(w, J_BUSY, 1);
        Atomics.store(w, PUTS, (puts + 1) | 0);
        if (dieMidPut === 1) process.kill(process.pid, 'SIGKILL');
        Atomics.store(w, HEAD, (head + pad + need) | 0);
        if (dieMidPut === 2) process.kill(process.pid, 'SIGKILL');
        Atomics.store(w, J_BUSY, 0);
      } else {
        // Publish: the one store that makes the record visible.
        Atomics.store(w, HEAD, (head + pad + need) | 0);
        Atomics.add(w, PUTS, 1);
      }
    } finally {
      this.#putLock.release();
    }
    if (Atomics.load(w, DATA_WAITERS) > 0) wakeWord(w, HEAD);
    return true;
  }

  /** Put lock held, J_BUSY set: its last holder died mid-put; makes PUTS right again. */
  #repairPut(): void {
    const w = this.#w;
    const puts = Atomics.load(w, J_PUTS);
    Atomics.store(w, PUTS, Atomics.load(w, HEAD) === Atomics.load(w, J_HEAD) ? puts : (puts + 1) | 0);
    Atomics.store(w, J_BUSY, 0);
    Atomics.add(w, JOIN_SEQ, 1); // a join() may be waiting for the count that just went down
    wakeWord(w, JOIN_SEQ);
  }

  /** For join(): repairs the put journal of a producer that died mid-put, if there is one. */
  protected _repairDeadPut(): void {
    if (Atomics.load(this.#w, J_BUSY) === 0) return;
    // Not blocking: a live producer holds the lock while J_BUSY is set; a dead one's lock is taken over.
    if (!this.#putLock.acquireSync({ block: false })) return;
    try {
      if (Atomics.load(this.#w, J_BUSY) !== 0) this.#repairPut();
    } finally {
      this.#putLock.release();
    }
  }

  // ---- get

  getSync(opts?: GetOptions): T {
    const { block, timeout } = checkOpts(opts);
    this.#checkClosed();
    // An item there already: taken without reading HEAD, which lives on the producers' cache
    // line (read on every get, it cost the producer a line transfer per item; as get()).
    const r = this.#tryGet();
    if (r !== NONE) return r as T;
    const end = deadline(timeout);
    for (;;) {
      const r = this.#getTurn(end, block);
      if (r !== SLEEP) return r as T;
      const since = this.#sleeping();
      try {
        waitWordSync(this.#w, HEAD, this.#sleepSeq, this.#sleepLeft);
      } finally {
        this.#woke(since);
      }
    }
  }

  get(opts?: GetOptions): Promise<T> {
    // Not an async function, for the same reason as put().
    let block: boolean;
    let timeout: number | undefined;
    try {
      ({ block, timeout } = checkOpts(opts));
      this.#checkClosed();
      const r = this.#tryGet();
      if (r !== NONE) return Promise.resolve(r as T);
      if (!block) throw new Empty();
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#getSlow(timeout);
  }

  async #getSlow(timeout: number | undefined): Promise<T> {
    const end = deadline(timeout);
    for (;;) {
      const r = this.#getTurn(end, true);
      if (r !== SLEEP) return r as T;
      const since = this.#sleeping();
      try {
        await waitWord(this.#w, HEAD, this.#sleepSeq, { timeout: this.#sleepLeft });
      } finally {
        this.#woke(since);
      }
      this.#checkClosed();
    }
  }

  // One turn of a get that may sleep, shared by getSync and get (they differ only in how they
  // sleep): the item, or SLEEP with what to sleep on in #sleepSeq / #sleepLeft (read at once by
  // the caller, before anything else can run). HEAD is read before looking, so a put between
  // the look and the sleep changes it and the sleep returns at once.
  #sleepSeq = 0;
  #sleepLeft: number | undefined = undefined;

  #getTurn(end: number, block: boolean): unknown {
    const seq = Atomics.load(this.#w, HEAD);
    const r = this.#tryGet();
    if (r !== NONE) return r;
    if (!block) throw new Empty();
    const spun = this.#spinGet();
    if (spun !== NONE) return spun;
    const left = end - Date.now();
    if (left <= 0) throw new Empty();
    this.#sleepSeq = seq;
    this.#sleepLeft = left === Infinity ? undefined : left;
    return SLEEP;
  }

  #sleeping(): number {
    Atomics.add(this.#w, DATA_WAITERS, 1);
    return performance.now();
  }

  /** After a sleep: a short one means items come fast, so the next empty get spins first. */
  #woke(since: number): void {
    Atomics.sub(this.#w, DATA_WAITERS, 1);
    this.#spin = performance.now() - since < SPIN_ENABLE_MS;
  }

  getNowait(): T {
    return this.getSync(NO_WAIT);
  }

  /**
   * Before sleeping for an item: poll for a moment if the last sleep was short. A producer
   * streaming items then never has to wake us (a futex wake plus an event-loop or thread
   * wake-up per item otherwise); a quiet queue costs one failed spin, then none.
   */
  #spinGet(): unknown {
    if (!this.#spin) return NONE;
    let now = performance.now();
    const until = now + SPIN_MS;
    do {
      const r = this.#tryGet();
      if (r !== NONE) return r;
      const next = now + SPIN_PAUSE_MS;
      while ((now = performance.now()) < next);
    } while (now < until);
    this.#spin = false;
    return NONE;
  }

  #tryGet(): unknown {
    const w = this.#w;
    const avail = (this.#headSeen - Atomics.load(w, TAIL)) | 0;
    if (avail <= 0 || avail > this.#cap) {
      this.#headSeen = Atomics.load(w, HEAD);
      const tail = Atomics.load(w, TAIL);
      if (this.#headSeen === tail) return NONE;
      if (this.#spin && ((this.#headSeen - tail) | 0) < LAG_BYTES) {
        const until = performance.now() + LAG_MS;
        while (performance.now() < until);
        this.#headSeen = Atomics.load(w, HEAD);
      }
    }
    let value: unknown = NONE;
    let err: unknown = null;
    let side: string | null = null;
    this.#getLock.acquireSync();
    try {
      let tail = Atomics.load(w, TAIL);
      const inRing = (this.#headSeen - tail) | 0;
      if (inRing <= 0 || inRing > this.#cap) {
        // Another consumer took what we had seen: look again.
        this.#headSeen = Atomics.load(w, HEAD);
        if (this.#headSeen === tail) return NONE;
      }
      const dv = this.#dv;
      let off = tail & this.#mask;
      // A pad record is skipped by arithmetic that runs for every item: a branch of its own,
      // first met in optimized code at the first lap, deoptimized this method (see #tryPut).
      const rest = this.#cap - off;
      const isPad = dv.getUint32(off + 4, true) === K_PAD;
      tail = (tail + (isPad ? rest : 0)) | 0;
      if (isPad) off = 0;
      const len = dv.getUint32(off, true);
      const kind = dv.getUint32(off + 4, true);
      try {
        if (kind === K_SIDE) {
          side = this.#buf.toString('latin1', off + 8, off + 8 + len);
          const seg = attachSegment(side);
          const b = Buffer.from(seg.sab, 0, seg.size);
          value = decodeMessage(b, new DataView(seg.sab), 0, seg.size, true);
        } else {
          value = decodeMessage(this.#buf, dv, off + 8, off + 8 + len, true);
        }
      } catch (e) {
        err = e; // a corrupt item is skipped, not retried forever
      }
      // Publish: the one store that frees the record.
      Atomics.store(w, TAIL, (tail + ((8 + len + 7) & ~7)) | 0);
      Atomics.add(w, GETS, 1);
    } finally {
      this.#getLock.release();
    }
    if (side !== null) {
      try {
        unlinkSegment(side, { lineage: true });
      } catch {
        // already removed
      }
    }
    if (Atomics.load(w, SPACE_WAITERS) > 0) wakeWord(w, TAIL);
    if (err !== null) throw err;
    return value;
  }

  // ---- state

  /** Approximate number of items (exact when nobody is putting or getting). */
  qsize(): number {
    const n = (Atomics.load(this.#w, PUTS) - Atomics.load(this.#w, GETS)) | 0;
    return n < 0 ? 0 : n;
  }
  empty(): boolean {
    return Atomics.load(this.#w, HEAD) === Atomics.load(this.#w, TAIL);
  }
  full(): boolean {
    if (this.#maxsize > 0 && this.qsize() >= this.#maxsize) return true;
    return false;
  }
  get maxsize(): number {
    return this.#maxsize;
  }

  /** This process will use the queue no more: put/get then throw ValueError. Idempotent. */
  close(): void {
    this.#closed = true;
  }
  [Symbol.dispose](): void {
    this.close();
  }

  #checkClosed(): void {
    if (this.#closed) throw new ValueError(`${this.kind} ${this.#id} is closed`, { code: 'ERR_MP_QUEUE_CLOSED' });
  }

  protected get words(): Int32Array {
    return this.#w;
  }

  [reduceHandle](): Reduced {
    const state: QueueState = {
      seg: this.#seg.name,
      size: this.#seg.size,
      cap: this.#cap,
      maxsize: this.#maxsize,
      putLock: this.#putLock[kReduce](),
      getLock: this.#getLock[kReduce](),
      kind: this.kind,
    };
    return { type: 'multiproc.Queue', state };
  }

  [inspect.custom](): string {
    return `<${this.kind}(qsize=${this.qsize()}, maxsize=${this.#maxsize})>`;
  }
}

const NONE = Symbol('none');
const SLEEP = Symbol('sleep');
const RESOLVED: Promise<void> = Promise.resolve();

// Queues this process created (weakly held), for the exit-time cleanup of side segments.
let created: { pid: number; queues: Set<WeakRef<Queue>> } | null = null;
function registerCreated(q: Queue): void {
  if (created === null || created.pid !== process.pid) {
    // First queue of this process (a forked child starts its own list and its own hook).
    const mine = { pid: process.pid, queues: new Set<WeakRef<Queue>>() };
    created = mine;
    process.on('exit', () => {
      if (process.pid !== mine.pid) return;
      for (const r of mine.queues) r.deref()?._unlinkPendingSideItems();
    });
  }
  created.queues.add(new WeakRef(q));
}
let restoring: QueueState | undefined;

/** Tests only: a JoinableQueue put in this process SIGKILLs it after counting (1) or publishing (2) the item. */
let dieMidPut = 0;
export function _dieMidPutForTests(stage: 0 | 1 | 2): void {
  dieMidPut = stage;
}

/** A Queue whose consumers acknowledge items with taskDone(); join() waits until all are done. */
export class JoinableQueue<T = unknown> extends Queue<T> {
  protected override readonly kind: 'Queue' | 'JoinableQueue' | 'SimpleQueue' = 'JoinableQueue';

  constructor(maxsize = 0, opts: QueueOptions = {}) {
    super(maxsize, opts);
  }

  taskDone(): void {
    const w = this.words;
    for (;;) {
      const done = Atomics.load(w, DONE);
      // PUTS only grows, except when a dead producer's put is undone (see #repairPut).
      if (((Atomics.load(w, PUTS) - done) | 0) <= 0) throw new ValueError('task_done() called too many times', { code: 'ERR_MP_TASK_DONE' });
      if (Atomics.compareExchange(w, DONE, done, (done + 1) | 0) === done) {
        if (((Atomics.load(w, PUTS) - done - 1) | 0) <= 0) {
          Atomics.add(w, JOIN_SEQ, 1);
          wakeWord(w, JOIN_SEQ);
        }
        return;
      }
    }
  }

  #unfinished(): number {
    const w = this.words;
    return (Atomics.load(w, PUTS) - Atomics.load(w, DONE)) | 0;
  }

  joinSync(): void {
    const w = this.words;
    for (;;) {
      const seq = Atomics.load(w, JOIN_SEQ);
      if (this.#unfinished() <= 0) return;
      this._repairDeadPut();
      waitWordSync(w, JOIN_SEQ, seq, 1000);
    }
  }

  async join(): Promise<void> {
    const w = this.words;
    for (;;) {
      const seq = Atomics.load(w, JOIN_SEQ);
      if (this.#unfinished() <= 0) return;
      this._repairDeadPut();
      await waitWord(w, JOIN_SEQ, seq, { timeout: 1000 });
    }
  }
}

/** A Queue without maxsize (CPython's SimpleQueue: put, get, empty, close). */
export class SimpleQueue<T = unknown> extends Queue<T> {
  protected override readonly kind: 'Queue' | 'JoinableQueue' | 'SimpleQueue' = 'SimpleQueue';
  constructor(opts: QueueOptions = {}) {
    super(0, opts);
  }
}

registerRebuilder<QueueState>('multiproc.Queue', (s) => {
  restoring = s;
  try {
    if (s.kind === 'JoinableQueue') return new JoinableQueue();
    if (s.kind === 'SimpleQueue') return new SimpleQueue();
    return new Queue();
  } finally {
    restoring = undefined;
  }
});

// Handles of synchronize.ts, shared_memory.ts and sharedctypes.ts travel as their `[kReduce]()`
// descriptions (by shared-memory name) and are reopened here.
registerRebuilder<{ type: string; name?: string }>(DESCRIBED, (d) => {
  switch (d.type) {
    case 'SharedMemory':
      return new SharedMemory({ name: d.name as string });
    case 'RawValue':
    case 'RawArray':
    case 'Value':
    case 'Array':
      return rebuildShared(d as never, (l) => rebuild(l) as never);
    default:
      return rebuild(d as SyncDescription);
  }
});
