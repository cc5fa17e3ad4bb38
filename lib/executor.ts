// concurrent.futures for processes: ProcessPoolExecutor, Future, wait, asCompleted. Runs on the
// worker machinery of lib/pool.ts (PoolCore), in its 'break' mode: a worker that dies breaks the
// executor, as in CPython — every pending future fails with BrokenProcessPool and no new work is
// accepted.
import { inspect } from 'node:util';

import { checkTimeout, DeferredResult } from './_deferred';
import { BrokenProcessPool, CancelledError, invalidArgType, RuntimeError, TimeoutError, ValueError } from './errors';
import { registerPoolClass } from './context';
import { ImapJob, isIterable, parseWorkerOptions, PoolCore, type Job, type Unit } from './pool';
import type { ProcessOptions } from './process';

export type FutureState = 'PENDING' | 'RUNNING' | 'CANCELLED' | 'FINISHED';


/** The eventual result of a submitted call (concurrent.futures.Future); also a thenable. */
export class Future<R = unknown> extends DeferredResult<R> {
  #state: FutureState = 'PENDING';
  #ok = false;
  #value: unknown;
  #doneCallbacks: Array<(f: never) => void> = [];

  /** @internal Futures are made by an executor's submit(). */
  constructor() {
    super();
  }

  /** Cancels the call if it has not started; true if the future is (now) cancelled. */
  cancel(): boolean {
    if (this.#state === 'RUNNING' || this.#state === 'FINISHED') return false;
    if (this.#state === 'CANCELLED') return true;
    this.#state = 'CANCELLED';
    this.#value = new CancelledError('the future was cancelled');
    this.fail(this.#value);
    this.#runCallbacks();
    return true;
  }

  cancelled(): boolean {
    return this.#state === 'CANCELLED';
  }
  running(): boolean {
    return this.#state === 'RUNNING';
  }
  done(): boolean {
    return this.#state === 'CANCELLED' || this.#state === 'FINISHED';
  }
  get state(): FutureState {
    return this.#state;
  }

  /** The call's result, waiting up to `timeout` ms (TimeoutError); rejects as the call did. */
  result(timeout?: number): Promise<R> {
    const t = checkTimeout(timeout);
    if (t === undefined || this.done()) return this.promise;
    return this.within(t).then(() => this.promise);
  }

  /** The call's error (null if it succeeded), waiting up to `timeout` ms (TimeoutError). */
  exception(timeout?: number): Promise<unknown> {
    const t = checkTimeout(timeout);
    const settled = t === undefined || this.done() ? this.settled() : this.within(t);
    return settled.then(() => {
      if (this.#state === 'CANCELLED') throw this.#value;
      return this.#ok ? null : this.#value;
    });
  }

  /** Calls fn(future) when the future is done (at once if it is). */
  addDoneCallback(fn: (f: Future<R>) => void): void {
    if (typeof fn !== 'function') throw invalidArgType('fn', 'a function', fn);
    if (this.done()) fn(this);
    else this.#doneCallbacks.push(fn as (f: never) => void);
  }

  #runCallbacks(): void {
    const cbs = this.#doneCallbacks.splice(0);
    for (const cb of cbs) {
      try {
        cb(this as never);
      } catch (e) {
        // As CPython: a failing callback is reported, not propagated.
        process.emitWarning(`exception calling callback for ${inspect(this)}: ${inspect(e)}`);
      }
    }
  }

  /** @internal PENDING -> RUNNING; false if it was cancelled. */
  _setRunning(): boolean {
    if (this.#state !== 'PENDING') return false;
    this.#state = 'RUNNING';
    return true;
  }

  /** @internal */
  _settle(ok: boolean, value: unknown): void {
    if (this.done()) return;
    this.#state = 'FINISHED';
    this.#ok = ok;
    this.#value = value;
    if (ok) this.fulfil(value);
    else this.fail(value);
    this.#runCallbacks();
  }

  get [Symbol.toStringTag](): string {
    return 'Future';
  }

  [inspect.custom](): string {
    return `<Future state=${this.#state.toLowerCase()}>`;
  }
}

/** One submitted call: a single-unit job. */
class FutureJob implements Job {
  readonly fnId: number;
  readonly future: Future;
  readonly #args: unknown[];
  readonly #done: (job: FutureJob) => void;
  #taken = false;

  constructor(fnId: number, args: unknown[], future: Future, done: (job: FutureJob) => void) {
    this.fnId = fnId;
    this.#args = args;
    this.future = future;
    this.#done = done;
    future.addDoneCallback(() => this.#done(this));
  }
  next(): Unit | null {
    if (this.exhausted) return null;
    this.#taken = true;
    return { job: this, kind: 0, payload: this.#args, seq: 0 };
  }
  get exhausted(): boolean {
    return this.#taken || this.future.done();
  }
  get remaining(): number {
    return this.exhausted ? 0 : 1;
  }
  onDispatch(): void {
    this.future._setRunning();
  }
  onResult(_u: Unit, ok: boolean, value: unknown): void {
    this.future._settle(ok, value);
  }
  fail(err: unknown): void {
    this.future._settle(false, err);
  }
}

export interface ProcessPoolExecutorOptions {
  /** Number of worker processes (default cpuCount()). */
  maxWorkers?: number;
  initializer?: ((...args: never[]) => unknown) | null;
  initargs?: readonly unknown[];
  /** A worker is replaced after this many tasks. Default: never. */
  maxTasksPerChild?: number | null;
  ctx?: ProcessOptions['ctx'];
}

export interface ExecutorMapOptions {
  /** Milliseconds from the map() call; a result not there by then throws TimeoutError. */
  timeout?: number;
  chunksize?: number;
}

export interface ShutdownOptions {
  /** Wait until the pending futures are done and the workers have exited (default true). */
  wait?: boolean;
  /** Cancel the futures that have not started (default false). */
  cancelFutures?: boolean;
}

const brokenMessage =
  'A process in the process pool was terminated abruptly while the future was running or pending.';

/** concurrent.futures.ProcessPoolExecutor on forked workers (closures work). */
export class ProcessPoolExecutor {
  readonly #core: PoolCore;
  readonly #pending = new Set<FutureJob>();
  #shutdown = false;

  constructor(options: ProcessPoolExecutorOptions = {}) {
    if (typeof options !== 'object' || options === null) throw invalidArgType('options', 'an object', options);
    const o = parseWorkerOptions(options, 'maxWorkers');
    this.#core = new PoolCore({ ...o, onLost: 'break', brokenError: () => new BrokenProcessPool(brokenMessage) });
  }

  get maxWorkers(): number {
    return this.#core.processes;
  }

  #checkOpen(): void {
    if (this.#core.broken !== null) throw new BrokenProcessPool(this.#core.broken.message);
    if (this.#shutdown) throw new RuntimeError('cannot schedule new futures after shutdown', { code: 'ERR_MP_EXECUTOR_SHUTDOWN' });
  }

  /** Schedules fn(...args) and returns its Future. */
  submit<A extends unknown[], R>(fn: (...args: A) => R, ...args: A): Future<Awaited<R>> {
    if (typeof fn !== 'function') throw invalidArgType('fn', 'a function', fn);
    this.#checkOpen();
    const future = new Future<Awaited<R>>();
    const id = this.#core.registerFn(fn as never);
    const job = new FutureJob(id, args, future as Future, (j) => {
      this.#pending.delete(j);
      this.#core.releaseFn(id);
    });
    this.#pending.add(job);
    this.#core.submit(job);
    return future;
  }

  /** fn over the items, lazily and in order; `timeout` counts from this call. */
  /**
   * Python's map(fn, *iterables): results in input order, as an async iterator that pulls the
   * inputs lazily. With several iterables fn gets one item of each (shortest wins). A trailing
   * plain object is the options ({ timeout, chunksize }).
   */
  map<T, R>(fn: (item: T) => R, iterable: Iterable<T> | AsyncIterable<T>, opts?: ExecutorMapOptions): AsyncIterableIterator<Awaited<R>>;
  map<R>(
    fn: (...items: never[]) => R,
    ...iterablesAndOptions: Array<Iterable<unknown> | AsyncIterable<unknown> | ExecutorMapOptions>
  ): AsyncIterableIterator<Awaited<R>>;
  map(fn: (...items: never[]) => unknown, ...rest: unknown[]): AsyncIterableIterator<unknown> {
    if (typeof fn !== 'function') throw invalidArgType('fn', 'a function', fn);
    let opts: ExecutorMapOptions = {};
    const last = rest[rest.length - 1];
    if (rest.length > 1 && last !== undefined && !isIterable(last)) {
      if (typeof last !== 'object' || last === null) throw invalidArgType('opts', 'an object', last);
      opts = rest.pop() as ExecutorMapOptions;
    } else if (rest.length === 2 && last === undefined) {
      rest.pop();
    }
    const timeout = checkTimeout(opts.timeout);
    const cs = opts.chunksize ?? 1;
    if (typeof cs !== 'number' || !Number.isInteger(cs)) throw invalidArgType('chunksize', 'an integer', cs);
    if (cs < 1) throw new ValueError('chunksize must be >= 1.', { code: 'ERR_MP_BAD_CHUNKSIZE' });
    if (rest.length === 0) throw invalidArgType('iterable', 'an iterable or async iterable', undefined);
    for (const it of rest) if (!isIterable(it)) throw invalidArgType('iterable', 'an iterable or async iterable', it);
    this.#checkOpen();
    const iterables = rest as Array<Iterable<unknown> | AsyncIterable<unknown>>;
    const id = this.#core.registerFn(fn as never);
    const job = new ImapJob<unknown>(this.#core, id, iterables.length === 1 ? iterables[0]! : zip(iterables), {
      chunksize: cs,
      star: iterables.length > 1,
      ordered: true,
      ...(timeout !== undefined ? { timeout } : {}),
    });
    this.#core.submit(job.asJob);
    return job;
  }

  /**
   * No new work. `cancelFutures` cancels what has not started; `wait` (default) resolves once
   * the rest is done and the workers have exited. Idempotent.
   */
  async shutdown(opts: ShutdownOptions = {}): Promise<void> {
    if (typeof opts !== 'object' || opts === null) throw invalidArgType('opts', 'an object', opts);
    const { wait = true, cancelFutures = false } = opts;
    this.#shutdown = true;
    if (cancelFutures) for (const j of [...this.#pending]) j.future.cancel();
    this.#core.close();
    if (wait) await this.#core.join();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown({ wait: true });
  }

  /** The worker pids right now. */
  get pids(): number[] {
    return this.#core.pids;
  }
}

export const FIRST_COMPLETED = 'FIRST_COMPLETED';
export const FIRST_EXCEPTION = 'FIRST_EXCEPTION';
export const ALL_COMPLETED = 'ALL_COMPLETED';
export type ReturnWhen = typeof FIRST_COMPLETED | typeof FIRST_EXCEPTION | typeof ALL_COMPLETED;

function checkFutures(futures: unknown): Future[] {
  if (futures === null || typeof futures !== 'object' || typeof (futures as Iterable<unknown>)[Symbol.iterator] !== 'function') {
    throw invalidArgType('futures', 'an iterable of Futures', futures);
  }
  const fs = [...new Set(futures as Iterable<unknown>)];
  for (const f of fs) if (!(f instanceof Future)) throw invalidArgType('futures', 'an iterable of Futures', f);
  return fs as Future[];
}

/**
 * Yields the futures as they complete; TimeoutError if some are not done `timeout` ms after the
 * call. (A plain iterator, not an async generator: that would await each Future it yields.)
 */
export function asCompleted<R>(futures: Iterable<Future<R>>, timeout?: number): AsyncIterableIterator<Future<R>> {
  const t = checkTimeout(timeout);
  const fs = checkFutures(futures) as Future<R>[];
  const deadline = t === undefined ? Infinity : Date.now() + t;
  const done: Future<R>[] = [];
  let wake: (() => void) | null = null;
  const pending = new Set<Future<R>>();
  for (const f of fs) {
    if (f.done()) done.push(f);
    else {
      pending.add(f);
      f.addDoneCallback(() => {
        if (!pending.delete(f)) return;
        done.push(f);
        wake?.();
      });
    }
  }
  let yielded = 0;
  let finished = false;
  const next = async (): Promise<IteratorResult<Future<R>>> => {
    for (;;) {
      if (finished || yielded === fs.length) {
        finished = true;
        return { done: true, value: undefined };
      }
      const f = done.shift();
      if (f !== undefined) {
        yielded++;
        return { done: false, value: f };
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        finished = true;
        throw new TimeoutError(`${fs.length - yielded} (of ${fs.length}) futures unfinished`);
      }
      await new Promise<void>((resolve) => {
        const timer = deadline === Infinity ? null : setTimeout(resolve, left);
        wake = () => {
          wake = null;
          if (timer !== null) clearTimeout(timer);
          resolve();
        };
      });
    }
  };
  const it: AsyncIterableIterator<Future<R>> = {
    next,
    return: async () => {
      finished = true;
      pending.clear();
      return { done: true, value: undefined };
    },
    [Symbol.asyncIterator]: () => it,
  };
  return it;
}

/**
 * Waits until `returnWhen` holds (or `timeout` ms pass) and returns the futures that are done
 * and those that are not.
 */
export async function wait<R>(
  futures: Iterable<Future<R>>,
  opts: { timeout?: number; returnWhen?: ReturnWhen } = {},
): Promise<{ done: Set<Future<R>>; notDone: Set<Future<R>> }> {
  const fs = checkFutures(futures) as Future<R>[];
  if (typeof opts !== 'object' || opts === null) throw invalidArgType('opts', 'an object', opts);
  const t = checkTimeout(opts.timeout);
  const returnWhen = opts.returnWhen ?? ALL_COMPLETED;
  if (returnWhen !== FIRST_COMPLETED && returnWhen !== FIRST_EXCEPTION && returnWhen !== ALL_COMPLETED) {
    throw new ValueError(`Invalid return condition: ${String(returnWhen)}`, { code: 'ERR_MP_BAD_RETURN_WHEN' });
  }
  const failedSet = new Set<Future<R>>();
  const satisfied = (): boolean => {
    const nDone = fs.filter((f) => f.done()).length;
    if (nDone === fs.length) return true;
    if (returnWhen === FIRST_COMPLETED) return nDone > 0;
    if (returnWhen === FIRST_EXCEPTION) return failedSet.size > 0;
    return false;
  };
  // Record which futures failed (their promise rejected) as they finish.
  await Promise.all(
    fs.filter((f) => f.done()).map((f) =>
      f.then(
        () => undefined,
        () => {
          if (!f.cancelled()) failedSet.add(f);
        },
      ),
    ),
  );
  if (!satisfied()) {
    await new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | null = null;
      let finished = false;
      const check = (): void => {
        if (finished || !satisfied()) return;
        finished = true;
        if (timer !== null) clearTimeout(timer);
        resolve();
      };
      if (t !== undefined) {
        timer = setTimeout(() => {
          finished = true;
          resolve();
        }, t);
      }
      for (const f of fs) {
        if (f.done()) continue;
        f.then(
          () => check(),
          () => {
            if (!f.cancelled()) failedSet.add(f);
            check();
          },
        );
      }
    });
  }
  const done = new Set<Future<R>>();
  const notDone = new Set<Future<R>>();
  for (const f of fs) (f.done() ? done : notDone).add(f);
  return { done, notDone };
}

/** Python's zip over iterables and async iterables, lazily: tuples until the shortest ends. */
function zip(its: Array<Iterable<unknown> | AsyncIterable<unknown>>): Iterable<unknown[]> | AsyncIterable<unknown[]> {
  if (its.every((it) => typeof (it as Iterable<unknown>)[Symbol.iterator] === 'function')) {
    return (function* () {
      const iters = its.map((it) => (it as Iterable<unknown>)[Symbol.iterator]());
      try {
        for (;;) {
          const row: unknown[] = [];
          for (const i of iters) {
            const r = i.next();
            if (r.done) return;
            row.push(r.value);
          }
          yield row;
        }
      } finally {
        for (const i of iters) i.return?.();
      }
    })();
  }
  return (async function* () {
    const iters = its.map((it) =>
      typeof (it as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function'
        ? (it as AsyncIterable<unknown>)[Symbol.asyncIterator]()
        : (it as Iterable<unknown>)[Symbol.iterator](),
    );
    try {
      for (;;) {
        const row: unknown[] = [];
        for (const i of iters) {
          const r = await i.next();
          if (r.done) return;
          row.push(r.value);
        }
        yield row;
      }
    } finally {
      for (const i of iters) await i.return?.();
    }
  })();
}

registerPoolClass('ProcessPoolExecutor', ProcessPoolExecutor);
