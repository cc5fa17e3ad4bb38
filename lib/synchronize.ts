// multiprocessing.synchronize: Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition,
// Barrier, shared between processes.
//
// Each primitive is a few 32-bit words in shared memory (heap.ts), so it works in forked children
// (the mapping is inherited) and can be reopened by name in any process (`[kReduce]()` +
// `rebuild()`). The uncontended paths are JS `Atomics` operations on those words and never enter
// native code; the kernel is only involved when a caller has to sleep (futex wait, or the waiter
// thread for async waits: _wait.ts) or has to wake a sleeper.
//
// Lock word: 0 = free, else the owner's pid | WAITERS (set by anyone who sleeps on it, so the
// releaser knows it has to wake). A sleeper wakes at least every OWNER_CHECK_MS to ask whether the
// owner is still alive; if it died (SIGKILL, crash) the sleeper takes the word over with a CAS from
// the exact value it saw and reports `ownerDied === true`. Liveness is a pidfd poll on Linux
// (zombies count as dead), kill(pid, 0) elsewhere. Limitation: a lock held by a *thread*
// (worker_threads) that ends without releasing it is not recovered (the process is alive), and a
// pid recycled by the OS before anyone looks is taken for the owner.
import { inspect } from 'node:util';
import { AssertionError, BrokenBarrierError, ValueError, invalidArgType } from './errors';
import { allocate, attachBlock, blockRef, type Block, type BlockRef } from './heap';
import { currentPid } from './_pid';
import { native } from './native';
import { kReduce } from './shared_memory';
import { noteContext, noteLock } from './_spawning';
import { abortError, waitWord, waitWordSync, wakeWord } from './_wait';

const PID_MASK = 0x3fffffff;
const RESOLVED_TRUE: Promise<boolean> = Promise.resolve(true);
const WAITERS = 0x40000000;
/** How often a sleeper re-checks that a lock's owner is alive. */
const OWNER_CHECK_MS = 100;
/**
 * Busy-wait rounds before sleeping on a contended lock: the holder usually runs on another core
 * and a futex sleep + wake costs 10-20 µs. 2000 rounds are ~2 µs in optimized code and tens of µs
 * while the caller still runs in V8's interpreter (whose critical sections are as much longer).
 * Measured, Value += 1 under its lock from 2 processes, 20k/100k/500k ops each: 200 rounds gave
 * 0.45/2.4/6 M ops/s, 2000 rounds 1.2/4.5/9 M ops/s.
 */
const SPIN = 2000;

export interface AcquireOptions {
  /** false: do not wait at all. Default true. */
  block?: boolean;
  /** Milliseconds; undefined waits forever; negative means 0. */
  timeout?: number | undefined;
}

export interface AsyncAcquireOptions extends AcquireOptions {
  signal?: AbortSignal | undefined;
}

export interface WaitOptions {
  signal?: AbortSignal | undefined;
}

// ---------------------------------------------------------------- helpers

function checkTimeout(timeout: unknown, name = 'timeout'): number | undefined {
  if (timeout === undefined || timeout === null) return undefined;
  if (typeof timeout !== 'number' || Number.isNaN(timeout)) throw invalidArgType(name, 'a number of milliseconds', timeout);
  return Math.max(0, timeout);
}

function parseAcquire(opts: AsyncAcquireOptions | undefined): { block: boolean; deadline: number; signal: AbortSignal | undefined } {
  if (opts === undefined) return { block: true, deadline: Infinity, signal: undefined };
  if (opts === null || typeof opts !== 'object') throw invalidArgType('options', 'an object', opts);
  const block = opts.block ?? true;
  if (typeof block !== 'boolean') throw invalidArgType('block', 'a boolean', block);
  const timeout = checkTimeout(opts.timeout);
  const signal = opts.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalidArgType('signal', 'an AbortSignal', signal);
  return { block, deadline: timeout === undefined ? Infinity : performance.now() + timeout, signal };
}

function deadlineOf(timeout: unknown): number {
  const t = checkTimeout(timeout);
  return t === undefined ? Infinity : performance.now() + t;
}

function remaining(deadline: number): number {
  return deadline === Infinity ? Infinity : deadline - performance.now();
}

function ownerDead(word: number): boolean {
  const owner = word & PID_MASK;
  return owner !== 0 && owner !== currentPid && !native.pidAlive(owner);
}

let rebuilding: Block | undefined;
function block(bytes: number): { b: Block; fresh: boolean } {
  if (rebuilding !== undefined) {
    const b = rebuilding;
    rebuilding = undefined;
    return { b, fresh: false };
  }
  return { b: allocate(bytes), fresh: true };
}
function words(b: Block, n: number): Int32Array {
  return new Int32Array(b.sab, b.offset, n);
}

// ---------------------------------------------------------------- the mutex word

const enum Got {
  No = 0,
  Yes = 1,
  FromDeadOwner = 2,
}

/** One non-blocking attempt (including the take-over of a dead owner's word). */
function tryLockWord(w: Int32Array, pid: number): Got {
  const c = Atomics.compareExchange(w, 0, 0, pid);
  if (c === 0) return Got.Yes;
  if (ownerDead(c) && Atomics.compareExchange(w, 0, c, pid | (c & WAITERS)) === c) return Got.FromDeadOwner;
  return Got.No;
}

function spin(w: Int32Array, pid: number): boolean {
  for (let s = 0; s < SPIN; s++) {
    if (Atomics.load(w, 0) === 0 && Atomics.compareExchange(w, 0, 0, pid) === 0) return true;
  }
  return false;
}

// Sleeps until the word is ours or the deadline passes. Race notes:
// - WAITERS is set (CAS) before sleeping, and the sleep compares against the value with WAITERS,
//   so a release between our CAS and our futex wait makes the wait return at once (not equal).
// - Whoever acquires after having slept sets WAITERS again: other sleepers may still be there.
// - A sleeper that gives up (timeout/abort) after having slept passes one wake-up on: the wake it
//   may have consumed belonged to somebody still waiting.

/** What one turn of the contended acquire loop decided: a result, or a word value to sleep on. */
interface Sleep {
  word: number;
  ms: number;
}

// One turn of the acquire loop, shared by the Sync and async forms (they differ only in how
// they sleep): takes the word if free, else marks WAITERS and says what to sleep on and how long.
function lockTurn(w: Int32Array, pid: number, deadline: number, slept: boolean): Got | Sleep {
  for (;;) {
    let c = Atomics.load(w, 0);
    if (c === 0) {
      if (Atomics.compareExchange(w, 0, 0, pid | WAITERS) === 0) return Got.Yes;
      continue;
    }
    if ((c & WAITERS) === 0) {
      if (Atomics.compareExchange(w, 0, c, c | WAITERS) !== c) continue;
      c |= WAITERS;
    }
    const rem = remaining(deadline);
    if (rem <= 0) {
      if (takeOverIfDead(w, c, pid)) return Got.FromDeadOwner;
      if (slept) wakeWord(w, 0, 1);
      return Got.No;
    }
    return { word: c, ms: Math.min(rem, OWNER_CHECK_MS) };
  }
}

/** The holder recorded in `c` is dead and the word still reads `c`: take it over. */
function takeOverIfDead(w: Int32Array, c: number, pid: number): boolean {
  return ownerDead(c) && Atomics.compareExchange(w, 0, c, pid | WAITERS) === c;
}

function lockWordSync(w: Int32Array, pid: number, deadline: number): Got {
  if (spin(w, pid)) return Got.Yes;
  let slept = false;
  for (;;) {
    const t = lockTurn(w, pid, deadline, slept);
    if (typeof t === 'number') return t;
    const r = waitWordSync(w, 0, t.word, t.ms);
    slept = true;
    if (r === 'timed-out' && takeOverIfDead(w, t.word, pid)) return Got.FromDeadOwner;
  }
}

async function lockWordAsync(w: Int32Array, pid: number, deadline: number, signal: AbortSignal | undefined): Promise<Got> {
  let slept = false;
  for (;;) {
    const t = lockTurn(w, pid, deadline, slept);
    if (typeof t === 'number') return t;
    let r;
    try {
      r = await waitWord(w, 0, t.word, { timeout: t.ms, signal });
    } catch (e) {
      if (slept) wakeWord(w, 0, 1);
      throw e;
    }
    slept = true;
    if (r === 'timed-out' && takeOverIfDead(w, t.word, pid)) return Got.FromDeadOwner;
  }
}

function unlockWord(w: Int32Array): number {
  const old = Atomics.exchange(w, 0, 0);
  if ((old & WAITERS) !== 0) wakeWord(w, 0, 1);
  return old;
}

// ---------------------------------------------------------------- Lock

/** Internal interface Condition needs from its lock. */
interface CondLock {
  _isMine(): boolean;
  _releaseSave(): number;
  _acquireRestoreSync(state: number): void;
  _acquireRestore(state: number): Promise<void>;
  acquireSync(opts?: AcquireOptions): boolean;
  acquire(opts?: AsyncAcquireOptions): Promise<boolean>;
  release(): void;
  [kReduce](): LockDescription;
}

type LockDescription = { type: 'Lock' | 'RLock'; block: BlockRef };

/** A non-recursive lock shared by processes (any process may release it, as in CPython). */
export class Lock implements CondLock {
  #b: Block;
  #w: Int32Array;
  #ownerDied = false;
  // Acquired through this object (so by this thread) and not released through it since.
  #held = false;

  constructor() {
    const { b, fresh } = block(4);
    this.#b = b;
    this.#w = words(b, 1);
    noteContext(this, fresh ? undefined : null);
  }

  /** true if the last successful acquire took the lock over from a process that died holding it. */
  get ownerDied(): boolean {
    return this.#ownerDied;
  }

  acquireSync(opts?: AcquireOptions): boolean {
    const pid = currentPid;
    if (Atomics.compareExchange(this.#w, 0, 0, pid) === 0) {
      this.#ownerDied = false;
      this.#held = true;
      return true;
    }
    const { block, deadline } = parseAcquire(opts);
    const got = block ? lockWordSync(this.#w, pid, deadline) : tryLockWord(this.#w, pid);
    if (got === Got.No) return false;
    this.#ownerDied = got === Got.FromDeadOwner;
    this.#held = true;
    return true;
  }

  acquire(opts?: AsyncAcquireOptions): Promise<boolean> {
    // Uncontended and without options: no async machinery, one shared settled promise.
    if (opts === undefined && Atomics.compareExchange(this.#w, 0, 0, currentPid) === 0) {
      this.#ownerDied = false;
      this.#held = true;
      return RESOLVED_TRUE;
    }
    return this.#acquireAsync(opts);
  }

  async #acquireAsync(opts: AsyncAcquireOptions | undefined): Promise<boolean> {
    const pid = currentPid;
    const { block, deadline, signal } = parseAcquire(opts);
    if (signal?.aborted) throw abortError(signal);
    let got = tryLockWord(this.#w, pid);
    if (got === Got.No && block) got = await lockWordAsync(this.#w, pid, deadline, signal);
    if (got === Got.No) return false;
    this.#ownerDied = got === Got.FromDeadOwner;
    this.#held = true;
    return true;
  }

  release(): void {
    this.#held = false;
    const old = Atomics.exchange(this.#w, 0, 0);
    if (old === 0) throw new ValueError('semaphore or lock released too many times');
    if ((old & WAITERS) !== 0) wakeWord(this.#w, 0, 1);
  }

  locked(): boolean {
    return Atomics.load(this.#w, 0) !== 0;
  }

  _isMine(): boolean {
    // CPython tracks the acquiring thread even for a plain Lock: acquired through this object
    // (objects never cross threads) and the word still names this process.
    return this.#held && (Atomics.load(this.#w, 0) & PID_MASK) === currentPid;
  }
  _releaseSave(): number {
    this.release();
    return 1;
  }
  _acquireRestoreSync(): void {
    this.acquireSync();
  }
  async _acquireRestore(): Promise<void> {
    await this.acquire();
  }

  [kReduce](): LockDescription {
    return { type: 'Lock', block: blockRef(this.#b) };
  }

  [inspect.custom](): string {
    const c = Atomics.load(this.#w, 0);
    return `<Lock(owner=${c === 0 ? 'None' : c & PID_MASK})>`;
  }
}

// ---------------------------------------------------------------- RLock

/**
 * A recursive lock: owned by one thread of one process, which may acquire it again; it is free
 * when that owner has released it as often. The shared word is the same mutex word as Lock's
 * (owner pid for other processes and for death detection); which thread owns it and how deep is
 * local to this JS object: a handle never crosses threads (a Worker rebuilds its own from the
 * description), so "this object holds it in this process" means "this thread holds it". A forked
 * child inherits the object but not the ownership (its pid differs), as in CPython.
 */
export class RLock implements CondLock {
  #b: Block;
  #w: Int32Array;
  #ownerDied = false;
  #ownPid = 0;
  #count = 0;

  constructor() {
    const { b, fresh } = block(4);
    this.#b = b;
    this.#w = words(b, 1);
    noteContext(this, fresh ? undefined : null);
  }

  get ownerDied(): boolean {
    return this.#ownerDied;
  }

  #took(got: Got, pid: number, count = 1): void {
    this.#ownPid = pid;
    this.#count = count;
    this.#ownerDied = got === Got.FromDeadOwner;
  }

  acquireSync(opts?: AcquireOptions): boolean {
    const pid = currentPid;
    if (this.#ownPid === pid) {
      this.#count++;
      return true;
    }
    const w = this.#w;
    if (Atomics.compareExchange(w, 0, 0, pid) === 0) {
      this.#took(Got.Yes, pid);
      return true;
    }
    const { block, deadline } = parseAcquire(opts);
    const got = block ? lockWordSync(w, pid, deadline) : tryLockWord(w, pid);
    if (got === Got.No) return false;
    this.#took(got, pid);
    return true;
  }

  acquire(opts?: AsyncAcquireOptions): Promise<boolean> {
    // Uncontended (or recursive) and without options: no async machinery.
    if (opts === undefined) {
      const pid = currentPid;
      if (this.#ownPid === pid) {
        this.#count++;
        return RESOLVED_TRUE;
      }
      if (Atomics.compareExchange(this.#w, 0, 0, pid) === 0) {
        this.#took(Got.Yes, pid);
        return RESOLVED_TRUE;
      }
    }
    return this.#acquireAsync(opts);
  }

  async #acquireAsync(opts: AsyncAcquireOptions | undefined): Promise<boolean> {
    const pid = currentPid;
    const { block, deadline, signal } = parseAcquire(opts);
    if (signal?.aborted) throw abortError(signal);
    if (this.#ownPid === pid) {
      this.#count++;
      return true;
    }
    let got = tryLockWord(this.#w, pid);
    if (got === Got.No && block) got = await lockWordAsync(this.#w, pid, deadline, signal);
    if (got === Got.No) return false;
    this.#took(got, pid);
    return true;
  }

  release(): void {
    if (this.#ownPid !== currentPid) throw new AssertionError('attempt to release recursive lock not owned by thread');
    if (--this.#count > 0) return;
    this.#ownPid = 0;
    unlockWord(this.#w);
  }

  locked(): boolean {
    return Atomics.load(this.#w, 0) !== 0;
  }

  /** Recursion depth held by the calling thread (0 if it does not own the lock). */
  get _count(): number {
    return this.#ownPid === currentPid ? this.#count : 0;
  }

  _isMine(): boolean {
    return this.#ownPid === currentPid;
  }
  _releaseSave(): number {
    if (this.#ownPid !== currentPid) throw new AssertionError('cannot release un-acquired lock');
    const count = this.#count;
    this.#count = 0;
    this.#ownPid = 0;
    unlockWord(this.#w);
    return count;
  }
  _acquireRestoreSync(count: number): void {
    const pid = currentPid;
    const got = Atomics.compareExchange(this.#w, 0, 0, pid) === 0 ? Got.Yes : lockWordSync(this.#w, pid, Infinity);
    this.#took(got, pid, count);
  }
  async _acquireRestore(count: number): Promise<void> {
    const pid = currentPid;
    let got = tryLockWord(this.#w, pid);
    if (got === Got.No) got = await lockWordAsync(this.#w, pid, Infinity, undefined);
    this.#took(got, pid, count);
  }

  [kReduce](): LockDescription {
    return { type: 'RLock', block: blockRef(this.#b) };
  }

  [inspect.custom](): string {
    const c = Atomics.load(this.#w, 0);
    if (c === 0) return '<RLock(None, 0)>';
    return this._isMine() ? `<RLock(${c & PID_MASK}, ${this.#count})>` : `<RLock(${c & PID_MASK}, unknown)>`;
  }
}

// ---------------------------------------------------------------- Semaphore

const SEM_VALUE_MAX = 0x7fffffff;
/** Holder-table entries per semaphore (processes that can hold counts at once and be recovered). */
const HOLDER_SLOTS = 16;
const H0 = 4; // first word of the holder table
const FOREIGN_RELEASE = 1;
const RECOVERING = -1;

/**
 * A counting semaphore. Words: [value, sleepers, maximum (bounded) or -1, flags, then a holder
 * table of HOLDER_SLOTS × (pid, counts held)].
 *
 * Counts have no owner in CPython (any process may release), so what a dead process held cannot
 * be known in general. This one keeps, per process, how many counts it holds (acquired and not
 * yet released by that same process). As long as the semaphore is used that way (each process
 * releases what it acquired: a resource pool, mutual exclusion), a process that dies holding
 * counts does not starve the others: a sleeper checks every OWNER_CHECK_MS, returns the dead
 * process's counts and reports `ownerDied === true`. Once any process releases a count it did not
 * acquire (signalling: one process acquires, another releases), per-process holdings mean nothing
 * and recovery is switched off for good (CPython's behaviour: a dead holder's counts are lost).
 * Also not recovered: counts of a process that died between its two bookkeeping steps (a few
 * instructions), and of processes beyond the HOLDER_SLOTS-th holding counts at the same time.
 */
export class Semaphore {
  #b: Block;
  #w: Int32Array;
  #slot = -1;
  #slotPid = 0;
  #ownerDied = false;

  constructor(value = 1) {
    if (typeof value !== 'number' || !Number.isInteger(value)) throw invalidArgType('value', 'an integer', value);
    if (value < 0) throw new ValueError('semaphore initial value must be >= 0');
    if (value > SEM_VALUE_MAX) throw new ValueError(`semaphore initial value must be <= ${SEM_VALUE_MAX}`);
    const { b, fresh } = block((H0 + 2 * HOLDER_SLOTS) * 4);
    this.#b = b;
    this.#w = words(b, H0 + 2 * HOLDER_SLOTS);
    noteContext(this, fresh ? undefined : null);
    if (fresh) {
      Atomics.store(this.#w, 0, value);
      Atomics.store(this.#w, 2, this._bounded() ? value : -1);
    }
  }

  /** Overridden by BoundedSemaphore. */
  protected _bounded(): boolean {
    return false;
  }

  /** true if the last successful acquire came after returning the counts of a process that died. */
  get ownerDied(): boolean {
    return this.#ownerDied;
  }

  #try(): boolean {
    const w = this.#w;
    let v = Atomics.load(w, 0);
    while (v > 0) {
      const p = Atomics.compareExchange(w, 0, v, v - 1);
      if (p === v) return true;
      v = p;
    }
    return false;
  }

  // This process's holder-table entry (claimed on first use), or -1 if the table is full.
  #mySlot(pid: number): number {
    if (this.#slotPid === pid) return this.#slot;
    const w = this.#w;
    let slot = -1;
    for (let i = 0; i < HOLDER_SLOTS && slot < 0; i++) if (Atomics.load(w, H0 + 2 * i) === pid) slot = i;
    for (let i = 0; i < HOLDER_SLOTS && slot < 0; i++) if (Atomics.compareExchange(w, H0 + 2 * i, 0, pid) === 0) slot = i;
    this.#slot = slot;
    this.#slotPid = pid;
    return slot;
  }

  #acquired(recovered: boolean): true {
    const slot = this.#mySlot(currentPid);
    if (slot >= 0) Atomics.add(this.#w, H0 + 2 * slot + 1, 1);
    this.#ownerDied = recovered;
    return true;
  }

  // Returns the counts of dead holders (see the class comment). true if any came back.
  #recover(): boolean {
    const w = this.#w;
    if ((Atomics.load(w, 3) & FOREIGN_RELEASE) !== 0) return false;
    let back = 0;
    for (let i = 0; i < HOLDER_SLOTS; i++) {
      const p = Atomics.load(w, H0 + 2 * i);
      if (p <= 0 || p === currentPid || native.pidAlive(p)) continue;
      // Claim the entry (RECOVERING: nobody else can claim or reuse it), take its counts, free it.
      if (Atomics.compareExchange(w, H0 + 2 * i, p, RECOVERING) !== p) continue;
      back += Math.max(0, Atomics.exchange(w, H0 + 2 * i + 1, 0));
      Atomics.store(w, H0 + 2 * i, 0);
    }
    if (back === 0) return false;
    const max = Atomics.load(w, 2);
    let v = Atomics.load(w, 0);
    for (;;) {
      const nv = max >= 0 ? Math.min(max, v + back) : v + back;
      const p = Atomics.compareExchange(w, 0, v, nv);
      if (p === v) break;
      v = p;
    }
    wakeWord(w, 0, back);
    return true;
  }

  acquireSync(opts?: AcquireOptions): boolean {
    if (this.#try()) return this.#acquired(false);
    const { block, deadline } = parseAcquire(opts);
    if (!block) return this.#recover() && this.#try() ? this.#acquired(true) : false;
    const w = this.#w;
    let recovered = false;
    Atomics.add(w, 1, 1);
    try {
      for (;;) {
        if (this.#try()) return this.#acquired(recovered);
        const rem = remaining(deadline);
        if (rem <= 0) return false;
        if (waitWordSync(w, 0, 0, Math.min(rem, OWNER_CHECK_MS)) === 'timed-out') recovered = this.#recover() || recovered;
      }
    } finally {
      Atomics.sub(w, 1, 1);
    }
  }

  async acquire(opts?: AsyncAcquireOptions): Promise<boolean> {
    const { block, deadline, signal } = parseAcquire(opts);
    if (signal?.aborted) throw abortError(signal);
    if (this.#try()) return this.#acquired(false);
    if (!block) return this.#recover() && this.#try() ? this.#acquired(true) : false;
    const w = this.#w;
    let recovered = false;
    Atomics.add(w, 1, 1);
    try {
      for (;;) {
        if (this.#try()) return this.#acquired(recovered);
        const rem = remaining(deadline);
        if (rem <= 0) return false;
        if ((await waitWord(w, 0, 0, { timeout: Math.min(rem, OWNER_CHECK_MS), signal })) === 'timed-out')
          recovered = this.#recover() || recovered;
      }
    } finally {
      Atomics.sub(w, 1, 1);
    }
  }

  release(): void {
    const w = this.#w;
    const max = Atomics.load(w, 2);
    if (max >= 0 && Atomics.load(w, 0) >= max) throw new ValueError('semaphore or lock released too many times');
    // Bookkeeping first: a count this process holds, or a release of someone else's count.
    const slot = this.#mySlot(currentPid);
    let mine = false;
    if (slot >= 0) {
      const i = H0 + 2 * slot + 1;
      let n = Atomics.load(w, i);
      while (n > 0) {
        const p = Atomics.compareExchange(w, i, n, n - 1);
        if (p === n) {
          mine = true;
          break;
        }
        n = p;
      }
    }
    if (!mine) Atomics.or(w, 3, FOREIGN_RELEASE);
    if (max >= 0) {
      let v = Atomics.load(w, 0);
      for (;;) {
        if (v >= max) {
          if (mine) Atomics.add(w, H0 + 2 * slot + 1, 1); // undo: we still hold it
          throw new ValueError('semaphore or lock released too many times');
        }
        const p = Atomics.compareExchange(w, 0, v, v + 1);
        if (p === v) break;
        v = p;
      }
    } else if (Atomics.add(w, 0, 1) >= SEM_VALUE_MAX) {
      Atomics.sub(w, 0, 1);
      if (mine) Atomics.add(w, H0 + 2 * slot + 1, 1);
      throw new ValueError('semaphore value would overflow');
    }
    // A sleeper registers (word 1) before it checks the value; we changed the value before we
    // read word 1: one of the two sees the other.
    if (Atomics.load(w, 1) > 0) wakeWord(w, 0, 1);
  }

  getValue(): number {
    return Atomics.load(this.#w, 0);
  }

  locked(): boolean {
    return Atomics.load(this.#w, 0) === 0;
  }

  [kReduce](): { type: 'Semaphore' | 'BoundedSemaphore'; block: BlockRef } {
    return { type: this._bounded() ? 'BoundedSemaphore' : 'Semaphore', block: blockRef(this.#b) };
  }

  [inspect.custom](): string {
    const max = Atomics.load(this.#w, 2);
    return `<${this.constructor.name}(value=${this.getValue()}${max >= 0 ? `, maxvalue=${max}` : ''})>`;
  }
}

/** A semaphore that refuses to be released above its initial value (ValueError). */
export class BoundedSemaphore extends Semaphore {
  protected override _bounded(): boolean {
    return true;
  }
}

// ---------------------------------------------------------------- Event

/** Words: [flag, number of sleepers]. */
export class Event {
  #b: Block;
  #w: Int32Array;

  constructor() {
    const { b, fresh } = block(8);
    this.#b = b;
    this.#w = words(b, 2);
    noteContext(this, fresh ? undefined : null);
  }

  isSet(): boolean {
    return Atomics.load(this.#w, 0) === 1;
  }

  set(): void {
    Atomics.store(this.#w, 0, 1);
    if (Atomics.load(this.#w, 1) > 0) wakeWord(this.#w, 0);
  }

  clear(): void {
    Atomics.store(this.#w, 0, 0);
  }

  waitSync(timeout?: number): boolean {
    const w = this.#w;
    if (Atomics.load(w, 0) === 1) return true;
    const deadline = deadlineOf(timeout);
    Atomics.add(w, 1, 1);
    try {
      while (Atomics.load(w, 0) !== 1) {
        const rem = remaining(deadline);
        if (rem <= 0) break;
        waitWordSync(w, 0, 0, rem);
      }
      return Atomics.load(w, 0) === 1;
    } finally {
      Atomics.sub(w, 1, 1);
    }
  }

  async wait(timeout?: number, opts?: WaitOptions): Promise<boolean> {
    const w = this.#w;
    const deadline = deadlineOf(timeout);
    const signal = opts?.signal;
    if (signal?.aborted) throw abortError(signal);
    if (Atomics.load(w, 0) === 1) return true;
    Atomics.add(w, 1, 1);
    try {
      while (Atomics.load(w, 0) !== 1) {
        const rem = remaining(deadline);
        if (rem <= 0) break;
        await waitWord(w, 0, 0, { timeout: rem, signal });
      }
      return Atomics.load(w, 0) === 1;
    } finally {
      Atomics.sub(w, 1, 1);
    }
  }

  [kReduce](): { type: 'Event'; block: BlockRef } {
    return { type: 'Event', block: blockRef(this.#b) };
  }

  [inspect.custom](): string {
    return `<Event(${this.isSet() ? 'set' : 'unset'})>`;
  }
}

// ---------------------------------------------------------------- Condition

/**
 * A condition variable over a Lock or RLock (default: a new RLock, as in CPython).
 * Words: [sequence (the futex word), registered sleepers, pending signals, broadcast generation].
 *
 * wait() registers (sleepers += 1) while holding the lock and notes the broadcast generation,
 * releases the lock, then sleeps on the sequence word until either the generation changed
 * (notifyAll: every waiter registered before it is released, none can be overtaken) or it can
 * take a signal. notify(n), holding the lock, moves k = min(n, sleepers) from "sleepers" to
 * "signals", bumps the sequence and wakes; notifyAll() starts a new generation and zeroes both
 * counts. A sleeper that times out re-takes the lock and then counts as notified if the
 * generation changed or a signal is left (a notify raced with its timeout), or else withdraws
 * (sleepers -= 1). Within a generation sleepers + signals equals the number of live waiters, so
 * notify(n) wakes at most n and never loses a signal (a waiter that arrives later may take it in
 * place of an earlier one, as POSIX condition variables allow). Unlike CPython, notify() never
 * blocks waiting for the woken to run: an async waiter of the same process could not run.
 * A waiter killed while waiting stays counted until the next notifyAll(): a notify(1) may then be
 * spent on it; waitFor() and predicate loops absorb that.
 */
export class Condition {
  #lock: Lock | RLock;
  #b: Block;
  #w: Int32Array;

  constructor(lock?: Lock | RLock) {
    if (lock !== undefined && !(lock instanceof Lock) && !(lock instanceof RLock))
      throw invalidArgType('lock', 'a Lock or an RLock', lock);
    this.#lock = lock ?? new RLock();
    noteLock(this, this.#lock);
    const { b, fresh } = block(16);
    this.#b = b;
    this.#w = words(b, 4);
    noteContext(this, fresh ? undefined : null);
  }

  /** The underlying lock. */
  get lock(): Lock | RLock {
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

  #takeSignal(): boolean {
    const w = this.#w;
    let s = Atomics.load(w, 2);
    while (s > 0) {
      const p = Atomics.compareExchange(w, 2, s, s - 1);
      if (p === s) return true;
      s = p;
    }
    return false;
  }

  // Before sleeping (lock released): notified by a notifyAll since registration, or a signal?
  #woken(gen: number): boolean {
    return Atomics.load(this.#w, 3) !== gen || this.#takeSignal();
  }

  // With the lock held again, for a waiter that was not woken while sleeping: a notify may have
  // raced with its timeout (then it counts as notified), or it withdraws its registration.
  #settle(gen: number): boolean {
    if (Atomics.load(this.#w, 3) !== gen || this.#takeSignal()) return true;
    Atomics.sub(this.#w, 1, 1);
    return false;
  }

  waitSync(timeout?: number): boolean {
    const lock = this.#lock;
    if (!lock._isMine()) throw new AssertionError('must acquire() condition before using wait()');
    const deadline = deadlineOf(timeout);
    const w = this.#w;
    const gen = Atomics.load(w, 3);
    Atomics.add(w, 1, 1);
    const saved = lock._releaseSave();
    let notified = false;
    try {
      for (;;) {
        // Read the sequence before looking: notify changes the counts, then bumps it.
        const seq = Atomics.load(w, 0);
        if (this.#woken(gen)) {
          notified = true;
          break;
        }
        const rem = remaining(deadline);
        if (rem <= 0) break;
        waitWordSync(w, 0, seq, rem);
      }
    } finally {
      lock._acquireRestoreSync(saved);
    }
    return notified || this.#settle(gen);
  }

  async wait(timeout?: number, opts?: WaitOptions): Promise<boolean> {
    const lock = this.#lock;
    if (!lock._isMine()) throw new AssertionError('must acquire() condition before using wait()');
    const deadline = deadlineOf(timeout);
    const signal = opts?.signal;
    if (signal?.aborted) throw abortError(signal);
    const w = this.#w;
    const gen = Atomics.load(w, 3);
    Atomics.add(w, 1, 1);
    const saved = lock._releaseSave();
    let notified = false;
    try {
      for (;;) {
        const seq = Atomics.load(w, 0);
        if (this.#woken(gen)) {
          notified = true;
          break;
        }
        const rem = remaining(deadline);
        if (rem <= 0) break;
        await waitWord(w, 0, seq, { timeout: rem, signal });
      }
    } finally {
      await lock._acquireRestore(saved);
      // Also on abort: the registration must be settled (the lock is held again here).
      if (!notified) notified = this.#settle(gen);
    }
    return notified;
  }

  waitForSync<T>(predicate: () => T, timeout?: number): T {
    let result = predicate();
    if (result) return result;
    const deadline = deadlineOf(timeout);
    while (!result) {
      const rem = remaining(deadline);
      if (rem <= 0) break;
      this.waitSync(rem === Infinity ? undefined : rem);
      result = predicate();
    }
    return result;
  }

  async waitFor<T>(predicate: () => T, timeout?: number, opts?: WaitOptions): Promise<T> {
    let result = predicate();
    if (result) return result;
    const deadline = deadlineOf(timeout);
    while (!result) {
      const rem = remaining(deadline);
      if (rem <= 0) break;
      await this.wait(rem === Infinity ? undefined : rem, opts);
      result = predicate();
    }
    return result;
  }

  /** Wakes at most `n` waiters. The caller must hold the lock. */
  notify(n = 1): void {
    if (typeof n !== 'number' || Number.isNaN(n)) throw invalidArgType('n', 'a number', n);
    if (!this.#lock._isMine()) throw new AssertionError('lock is not owned');
    const w = this.#w;
    const k = Math.min(Math.max(0, Math.floor(n)), Atomics.load(w, 1));
    if (k <= 0) return;
    Atomics.sub(w, 1, k);
    Atomics.add(w, 2, k);
    Atomics.add(w, 0, 1);
    wakeWord(w, 0, k === 1 ? 1 : Infinity);
  }

  /** Wakes every waiter. The caller must hold the lock. */
  notifyAll(): void {
    if (!this.#lock._isMine()) throw new AssertionError('lock is not owned');
    const w = this.#w;
    if (Atomics.load(w, 1) === 0 && Atomics.load(w, 2) === 0) return;
    Atomics.add(w, 3, 1);
    Atomics.store(w, 1, 0);
    Atomics.store(w, 2, 0);
    Atomics.add(w, 0, 1);
    wakeWord(w, 0);
  }

  [kReduce](): { type: 'Condition'; lock: LockDescription; block: BlockRef } {
    return { type: 'Condition', lock: this.#lock[kReduce](), block: blockRef(this.#b) };
  }

  [inspect.custom](): string {
    return `<Condition(${inspect(this.#lock)}, ${Atomics.load(this.#w, 1)})>`;
  }
}

// ---------------------------------------------------------------- Barrier

const FILLING = 0;
const DRAINING = 1;
const RESETTING = -1;
const BROKEN = -2;

export interface BarrierOptions {
  /** Called by one of the parties when all have arrived, before they are released. */
  action?: (() => unknown) | undefined;
  /** Default timeout (ms) for wait(). */
  timeout?: number | undefined;
}

/**
 * threading.Barrier across processes (CPython's algorithm, on a Condition over a Lock and two
 * shared words [state, count]). wait() returns the arrival index 0..parties-1; a timeout, abort()
 * or reset() while waiting, or an action that throws, breaks it: BrokenBarrierError.
 */
export class Barrier {
  #parties: number;
  #action: (() => unknown) | undefined;
  #timeout: number | undefined;
  #cond: Condition;
  #b: Block;
  #w: Int32Array;

  constructor(parties: number, opts: BarrierOptions = {}) {
    if (typeof parties !== 'number' || !Number.isInteger(parties)) throw invalidArgType('parties', 'an integer', parties);
    if (parties < 1) throw new ValueError('parties must be >= 1');
    if (opts === null || typeof opts !== 'object') throw invalidArgType('options', 'an object', opts);
    if (opts.action !== undefined && typeof opts.action !== 'function') throw invalidArgType('action', 'a function', opts.action);
    this.#parties = parties;
    this.#action = opts.action;
    this.#timeout = checkTimeout(opts.timeout);
    const pending = rebuildingCond;
    rebuildingCond = undefined;
    this.#cond = pending ?? new Condition(new Lock());
    const { b, fresh } = block(8);
    this.#b = b;
    this.#w = words(b, 2);
    noteContext(this, fresh ? undefined : null);
  }

  get parties(): number {
    return this.#parties;
  }

  /** Parties currently waiting. */
  get nWaiting(): number {
    return Atomics.load(this.#w, 0) === FILLING ? Atomics.load(this.#w, 1) : 0;
  }

  get broken(): boolean {
    return Atomics.load(this.#w, 0) === BROKEN;
  }

  get #state(): number {
    return Atomics.load(this.#w, 0);
  }
  set #state(v: number) {
    Atomics.store(this.#w, 0, v);
  }
  get #count(): number {
    return Atomics.load(this.#w, 1);
  }
  set #count(v: number) {
    Atomics.store(this.#w, 1, v);
  }

  waitSync(timeout?: number): number {
    const t = timeout === undefined ? this.#timeout : checkTimeout(timeout);
    const cond = this.#cond;
    cond.acquireSync();
    try {
      // Block while the barrier drains or resets.
      while (this.#state === DRAINING || this.#state === RESETTING) cond.waitSync();
      if (this.#state < 0) throw new BrokenBarrierError();
      const index = this.#count;
      this.#count = index + 1;
      try {
        if (index + 1 === this.#parties) this.#release();
        else {
          if (!cond.waitForSync(() => this.#state !== FILLING, t)) {
            this.#break();
            throw new BrokenBarrierError();
          }
          if (this.#state < 0) throw new BrokenBarrierError();
        }
        return index;
      } finally {
        this.#exit();
      }
    } finally {
      cond.release();
    }
  }

  async wait(timeout?: number, opts?: WaitOptions): Promise<number> {
    const t = timeout === undefined ? this.#timeout : checkTimeout(timeout);
    const cond = this.#cond;
    const signal = opts?.signal;
    await cond.acquire({ signal });
    try {
      while (this.#state === DRAINING || this.#state === RESETTING) await cond.wait(undefined, opts);
      if (this.#state < 0) throw new BrokenBarrierError();
      const index = this.#count;
      this.#count = index + 1;
      try {
        if (index + 1 === this.#parties) this.#release();
        else {
          let ok: boolean;
          try {
            ok = await cond.waitFor(() => this.#state !== FILLING, t, opts);
          } catch (e) {
            this.#break(); // aborted: the others must not wait for us forever
            throw e;
          }
          if (!ok) {
            this.#break();
            throw new BrokenBarrierError();
          }
          if (this.#state < 0) throw new BrokenBarrierError();
        }
        return index;
      } finally {
        this.#exit();
      }
    } finally {
      cond.release();
    }
  }

  // The last party to arrive: run the action, then let everyone through.
  #release(): void {
    try {
      if (this.#action !== undefined) this.#action();
      this.#state = DRAINING;
      this.#cond.notifyAll();
    } catch (e) {
      this.#break();
      throw e;
    }
  }

  #exit(): void {
    this.#count = this.#count - 1;
    if (this.#count === 0 && (this.#state === RESETTING || this.#state === DRAINING)) {
      this.#state = FILLING;
      this.#cond.notifyAll();
    }
  }

  #break(): void {
    this.#state = BROKEN;
    this.#cond.notifyAll();
  }

  /** Returns the barrier to its initial state; parties waiting now get BrokenBarrierError. */
  reset(): void {
    const cond = this.#cond;
    cond.acquireSync();
    try {
      if (this.#count > 0) {
        if (this.#state === FILLING || this.#state === BROKEN) this.#state = RESETTING;
      } else this.#state = FILLING;
      cond.notifyAll();
    } finally {
      cond.release();
    }
  }

  /** Breaks the barrier: current and future wait() calls fail until reset(). */
  abort(): void {
    const cond = this.#cond;
    cond.acquireSync();
    try {
      this.#break();
    } finally {
      cond.release();
    }
  }

  [kReduce](): { type: 'Barrier'; parties: number; timeout: number | undefined; cond: ReturnType<Condition[typeof kReduce]>; block: BlockRef } {
    return { type: 'Barrier', parties: this.#parties, timeout: this.#timeout, cond: this.#cond[kReduce](), block: blockRef(this.#b) };
  }

  [inspect.custom](): string {
    return `<Barrier(parties=${this.#parties}, waiting=${this.nWaiting}, broken=${this.broken})>`;
  }
}
let rebuildingCond: Condition | undefined;

// ---------------------------------------------------------------- rebuild

export type SyncDescription =
  | LockDescription
  | ReturnType<Semaphore[typeof kReduce]>
  | ReturnType<Event[typeof kReduce]>
  | ReturnType<Condition[typeof kReduce]>
  | ReturnType<Barrier[typeof kReduce]>;

/**
 * Internal: reopens a primitive from its `[kReduce]()` description in this process (another
 * process, or after a fork). The shared words are the same; a Barrier's action does not travel.
 */
export function rebuild(desc: SyncDescription): Lock | RLock | Semaphore | BoundedSemaphore | Event | Condition | Barrier {
  switch (desc.type) {
    case 'Lock':
    case 'RLock':
    case 'Semaphore':
    case 'BoundedSemaphore':
    case 'Event': {
      rebuilding = attachBlock(desc.block);
      try {
        if (desc.type === 'Lock') return new Lock();
        if (desc.type === 'RLock') return new RLock();
        if (desc.type === 'Event') return new Event();
        return desc.type === 'Semaphore' ? new Semaphore(0) : new BoundedSemaphore(0);
      } finally {
        rebuilding = undefined;
      }
    }
    case 'Condition': {
      const lock = rebuild(desc.lock) as Lock | RLock;
      rebuilding = attachBlock(desc.block);
      try {
        return new Condition(lock);
      } finally {
        rebuilding = undefined;
      }
    }
    case 'Barrier': {
      rebuildingCond = rebuild(desc.cond) as Condition;
      rebuilding = attachBlock(desc.block);
      try {
        return new Barrier(desc.parties, { timeout: desc.timeout });
      } finally {
        rebuilding = undefined;
        rebuildingCond = undefined;
      }
    }
  }
}
