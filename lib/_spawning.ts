// Which start method's context made an object (CPython's SemLock `_is_fork_ctx`): a lock, queue
// or synchronized value made in a fork context must not be handed to a spawn or forkserver child
// (CPython refuses; so do we, with the same message). Kept apart so that synchronize.ts,
// sharedctypes.ts and queues.ts can record it without importing context.ts.
import { RuntimeError } from './errors';

const forkMade = new WeakSet<object>();
// The lock a Condition or a synchronized Value/Array travels with (it keeps its own context).
const lockOf = new WeakMap<object, object>();

/** @internal `obj` is sent with `lock` (Condition, Synchronized*): both are checked at a start. */
export function noteLock(obj: object, lock: object): void {
  lockOf.set(obj, lock);
}

/** @internal The lock noted for `obj`, if any. */
export function lockNotedFor(obj: object): object | undefined {
  return lockOf.get(obj);
}
let defaultMethodNow: () => string | null = () => null;

/** @internal context.ts: how to read (and fix, as CPython's get_context()) the default method. */
export function setDefaultMethodReader(fn: () => string | null): void {
  defaultMethodNow = fn;
}

/**
 * Records the start method of the context that made `obj`: `method`, or the default context's
 * (decided now, as CPython's module-level Lock() does). null: made by no context (rebuilt from
 * a description in another process).
 */
export function noteContext(obj: object, method?: string | null): void {
  const m = method === undefined ? defaultMethodNow() : method;
  if (m === 'fork') forkMade.add(obj);
  else forkMade.delete(obj);
}

/** `obj` belongs to the same context as `from` (a synchronized Value and its lock). */
export function sameContextAs(obj: object, from: object): void {
  if (forkMade.has(from)) forkMade.add(obj);
  else forkMade.delete(obj);
}

/** Throws CPython's RuntimeError if `obj` was made in a fork context and `spawning` is not fork. */
export function assertSpawnable(obj: object, spawning: string): void {
  if (spawning === 'fork') return;
  // A Condition or a synchronized Value/Array travels with its lock, which keeps the context
  // that made it (CPython pickles the lock too, and its SemLock refuses).
  const inner = lockOf.get(obj);
  if (inner !== undefined && !forkMade.has(obj)) assertSpawnable(inner, spawning);
  if (!forkMade.has(obj)) return;
  const what = (obj as { constructor?: { name?: string } }).constructor?.name ?? 'object';
  throw new RuntimeError(
    `A ${what} created in a fork context is being shared with a process in a ${spawning} context. ` +
      'This is not supported. Please use the same context to create multiprocessing objects and Process.',
    { code: 'ERR_MP_FORK_CONTEXT' },
  );
}
