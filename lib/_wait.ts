// Internal: waiting on 32-bit words in shared memory, across processes.
//
// The building block of every blocking primitive (synchronize.ts, queues): a word lives in an
// Int32Array over shared memory; a waiter sleeps while the word holds the value it last saw; a
// waker changes the word, then wakes. Sync waits block the calling thread in the kernel (futex).
// Async waits never block the event loop and never occupy a libuv thread-pool slot: they are
// registered with the one native waiter thread of this process (native/futex.cc), which reports
// back through an fd the loop polls. Registrations of the same (array, index, expected) share one
// native slot. Timeouts of async waits are JS timers; AbortSignal cancels.
//
// A wait may return early (spurious wake-up, EINTR, another process's wake): callers always
// re-check their condition in a loop. That is also what makes the fork hand-over safe: a
// registration the parent made before fork() is never delivered in the child; the child's first
// async wait starts a fresh waiter thread (new epoch) and forgets the parent's registrations.
import { native } from './native';

export type WaitResult = 'ok' | 'not-equal' | 'timed-out';
const RESULTS: readonly WaitResult[] = ['ok', 'not-equal', 'timed-out'];

/**
 * Blocks while `i32[index] === expected`, for at most `timeoutMs` (undefined or Infinity: no
 * limit). 'ok' means woken (possibly spuriously).
 */
export function waitWordSync(i32: Int32Array, index: number, expected: number, timeoutMs?: number): WaitResult {
  const ms = timeoutMs === undefined || timeoutMs === Infinity ? -1 : Math.max(0, timeoutMs);
  return RESULTS[native.futexWait(i32, index, expected, ms)];
}

/** Wakes up to `count` waiters (sync or async, any process) sleeping on `i32[index]`. */
export function wakeWord(i32: Int32Array, index: number, count = Infinity): number {
  return native.futexWake(i32, index, count === Infinity ? 0x7fffffff : count);
}

export interface AsyncWaitOptions {
  timeout?: number | undefined;
  signal?: AbortSignal | undefined;
}

/** The error an aborted wait rejects with (Node's shape: name AbortError, code ABORT_ERR). */
export function abortError(signal: AbortSignal): Error {
  const e = new Error('The operation was aborted', { cause: signal.reason }) as Error & { code: string };
  e.name = 'AbortError';
  e.code = 'ABORT_ERR';
  return e;
}

interface Pending {
  resolve(r: WaitResult): void;
}

interface Slot {
  id: number;
  key: number;
  i32: Int32Array; // keeps the mapping alive while the native thread may read it
  waiters: Set<Pending>;
}

let nextId = 1;
let epoch = 0;
let byId = new Map<number, Slot>();
let byArray = new WeakMap<Int32Array, Map<number, Slot>>();
let initialised = false;

function deliver(ids: number[]): void {
  for (const id of ids) {
    const slot = byId.get(id);
    if (slot === undefined) continue;
    byId.delete(id);
    byArray.get(slot.i32)?.delete(slot.key);
    for (const w of slot.waiters) w.resolve('ok');
  }
}

function forgetIfForked(): void {
  // After fork() the child's waiter machinery is new (or not started: epoch 0). Registrations
  // copied from the parent are never delivered here: drop them so that a new wait does not join
  // a dead slot. Their promises stay pending, as every parent event source does in a fork child.
  const current = native.waiterEpoch();
  if (current !== epoch) {
    byId = new Map();
    byArray = new WeakMap();
    epoch = current;
  }
}

function slotFor(i32: Int32Array, index: number, expected: number): Slot {
  if (!initialised) {
    native.waiterInit(deliver);
    initialised = true;
  }
  forgetIfForked();
  // index < 2^28 words and a 32-bit value: a collision-free numeric key.
  const key = index * 0x1_0000_0000 + (expected >>> 0);
  let perArray = byArray.get(i32);
  if (perArray === undefined) {
    perArray = new Map();
    byArray.set(i32, perArray);
  }
  let slot = perArray.get(key);
  if (slot === undefined) {
    const id = nextId;
    nextId = nextId >= 0xffff_fff0 ? 1 : nextId + 1;
    slot = { id, key, i32, waiters: new Set() };
    perArray.set(key, slot);
    byId.set(id, slot);
    epoch = native.waitAsync(i32, index, expected, id);
  }
  return slot;
}

function leave(slot: Slot, w: Pending): void {
  slot.waiters.delete(w);
  if (slot.waiters.size === 0 && byId.get(slot.id) === slot) {
    byId.delete(slot.id);
    byArray.get(slot.i32)?.delete(slot.key);
    native.waitCancel(slot.id);
  }
}

/**
 * Resolves once `i32[index] !== expected` ('ok', possibly spuriously), at once with 'not-equal'
 * if it already differs, or with 'timed-out'. Rejects with an AbortError if `signal` aborts.
 * Never blocks the event loop. While it is pending the process stays alive.
 */
export function waitWord(i32: Int32Array, index: number, expected: number, opts?: AsyncWaitOptions): Promise<WaitResult> {
  const signal = opts?.signal;
  if (signal?.aborted) return Promise.reject(abortError(signal));
  if (Atomics.load(i32, index) !== expected) return Promise.resolve('not-equal');
  const timeout = opts?.timeout;
  if (timeout !== undefined && timeout !== Infinity && timeout <= 0) return Promise.resolve('timed-out');
  return new Promise<WaitResult>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const onAbort = (): void => finish(undefined, abortError(signal as AbortSignal));
    const w: Pending = { resolve: (r) => finish(r) };
    const slot = slotFor(i32, index, expected);
    slot.waiters.add(w);
    function finish(r: WaitResult | undefined, err?: Error): void {
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      leave(slot, w);
      if (err !== undefined) reject(err);
      else resolve(r as WaitResult);
    }
    // setTimeout cannot express more than 2^31-1 ms (~24.8 days); longer means "forever" here.
    if (timeout !== undefined && timeout <= 0x7fffffff) timer = setTimeout(() => finish('timed-out'), timeout);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Number of distinct words this process's waiter thread is watching (for tests). */
export function _pendingSlots(): number {
  forgetIfForked();
  return byId.size;
}
