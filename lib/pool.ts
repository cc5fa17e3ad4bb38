// Process pools (CPython's multiprocessing.pool): Pool and AsyncResult, and the worker machinery
// that ProcessPoolExecutor (lib/executor.ts) shares.
//
// Design. The parent owns one duplex Pipe per worker and dispatches every task itself, so it
// always knows which tasks a worker holds: a worker that dies fails exactly the batch it was
// running (WorkerLostError) and is replaced; batches it had not read yet go back to the queue.
// Tasks travel in batches (several per message) and each worker gets up to PREFETCH batches
// ahead, so a worker rarely waits for the parent. A worker answers each batch with one message,
// in order; it blocks in recvSync between batches when it has no async work pending (lowest
// wake-up latency) and otherwise waits on its event loop.
//
// Functions. Workers are forked (fork start method), so a function is sent as a number: the
// parent keeps a registry (function -> id) and a worker forked after a function was registered
// finds it in its copy of the heap. A task whose function is newer than a worker's fork makes
// the pool re-fork that worker (once it is idle); workers are reused while they know the
// function. So any closure works, including one created after the pool.
//
// No deadlock: the parent's writes never block (what does not fit in the socket waits in a
// queue, written when the socket is writable), so it always reads the results a worker is
// blocked writing; batches are sent ahead (PREFETCH) whatever their size, up to AHEAD_BYTES.
import { inspect } from 'node:util';

import { checkTimeout, DeferredResult } from './_deferred';
import { Connection, Pipe } from './connection';
import { getStartMethod, registerPoolClass } from './context';
import {
  CancelledError,
  invalidArgType,
  invalidArgValue,
  MultiprocError,
  TimeoutError,
  ValueError,
  WorkerLostError,
} from './errors';
import * as errorClasses from './errors';
import { assertForkSafe } from './forksafe';
import { commonJsRef, requireRef, internalRef, isFunctionRef, resolveFunctionRef, toFunctionRef, type FunctionRef } from './function_ref';
import { native } from './native';
import { compileForChildren } from './popen/child';
import { cpuCount, Process, type ProcessOptions } from './process';
import { ArrayRange, newArray } from './codec';
import { decodeMessage, decodePairs, encodeMessage, PLACED } from './reduction';

// ------------------------------------------------------------------ function registry

type AnyFn = (...args: never[]) => unknown;

interface FnEntry {
  fn: AnyFn;
  refs: number;
}

/** How many functions without live jobs the registry keeps (each keeps its closure alive). */
const KEEP_FUNCTIONS = 512;
const fnIds = new WeakMap<AnyFn, number>();
const fnTable = new Map<number, FnEntry>();
let nextFnId = 0;

function acquireFn(fn: AnyFn): number {
  let id = fnIds.get(fn);
  if (id === undefined || !fnTable.has(id)) {
    id = nextFnId++;
    fnIds.set(fn, id);
    fnTable.set(id, { fn, refs: 0 });
    if (fnTable.size > KEEP_FUNCTIONS) evictFunctions();
  }
  fnTable.get(id)!.refs++;
  return id;
}

const standIns = new Map<string, AnyFn>();
/** One function object per module#name, so a reference given as data is registered like a function. */
function standIn(ref: FunctionRef): AnyFn {
  const key = `${ref.module}#${ref.name}`;
  let f = standIns.get(key);
  if (f === undefined) {
    f = () => {
      throw new ValueError(`${key} runs only in pool workers`, { code: 'ERR_MP_INTERNAL' });
    };
    standIns.set(key, f);
  }
  return f;
}

function releaseFn(id: number): void {
  const e = fnTable.get(id);
  if (e !== undefined) e.refs--;
}

function evictFunctions(): void {
  // Oldest first (Map iteration order is insertion order); never one a live job uses.
  for (const [id, e] of fnTable) {
    if (fnTable.size <= KEEP_FUNCTIONS / 2) break;
    if (e.refs <= 0) {
      fnTable.delete(id);
      fnIds.delete(e.fn);
    }
  }
}

// ------------------------------------------------------------------ wire format
//
// parent -> worker: 0 (stop), or a batch: [kind, fnId, payload, kind, fnId, payload, ...]
//   kind 0: apply, payload = args;  1: map chunk, payload = items;  2: starmap chunk, payload = arg arrays
// worker -> parent: per batch, [status, value, status, value, ...] in task order
//   status 0: value is the result (a chunk's results array);  1: value is a serialized error

const KIND_APPLY = 0;
const KIND_MAP = 1;
const KIND_STAR = 2;
const ST_OK = 0;
const ST_ERR = 1;

interface SerializedError {
  name: string;
  message: string;
  stack: string;
  code?: unknown;
  props?: Record<string, unknown>;
  /** A thrown value that is not an Error (sent as is when it can travel). */
  value?: unknown;
  isError: boolean;
}

function serializeError(err: unknown): SerializedError {
  if (!(err instanceof Error)) {
    let value: unknown = err;
    try {
      encodeMessage(err, null);
    } catch {
      value = inspect(err);
    }
    return { name: 'Error', message: String(value), stack: '', value, isError: false };
  }
  const props: Record<string, unknown> = {};
  for (const k of Object.keys(err)) {
    if (k === 'stack' || k === 'message') continue;
    const v = (err as unknown as Record<string, unknown>)[k];
    if (v === null || ['string', 'number', 'boolean', 'bigint', 'undefined'].includes(typeof v)) props[k] = v;
  }
  return {
    // A subclass that does not set `name` still reports its class name.
    name: err.name && err.name !== 'Error' ? err.name : err.constructor?.name || 'Error',
    message: err.message,
    stack: typeof err.stack === 'string' ? err.stack : `${err.name}: ${err.message}`,
    props,
    isError: true,
  };
}

const remoteClasses = new Map<string, new (message?: string) => Error>();
const builtinErrors: Record<string, new (message?: string) => Error> = {
  Error,
  TypeError,
  RangeError,
  SyntaxError,
  ReferenceError,
  EvalError,
  URIError,
};

/** An error of the remote error's class name, with its message, properties and stack. */
export function rebuildError(s: SerializedError, pid: number | undefined): unknown {
  if (!s.isError) return s.value;
  let cls: (new (message?: string) => Error) | undefined = builtinErrors[s.name];
  const lib = (errorClasses as Record<string, unknown>)[s.name];
  let err: Error;
  if (typeof lib === 'function' && (lib as { prototype?: unknown }).prototype instanceof MultiprocError) {
    // This library's classes: rebuilt without running their constructors (signatures differ).
    err = Object.create((lib as { prototype: Error }).prototype) as Error;
    Object.defineProperty(err, 'message', { value: s.message, writable: true, configurable: true });
  } else {
    if (cls === undefined) {
      cls = remoteClasses.get(s.name);
      if (cls === undefined) {
        const name = s.name;
        const made: new (message?: string) => Error = { [name]: class extends Error {} }[name]!;
        Object.defineProperty(made.prototype, 'name', { value: name, writable: true, configurable: true });
        remoteClasses.set(name, made);
        cls = made;
      }
    }
    err = new cls(s.message);
  }
  for (const [k, v] of Object.entries(s.props ?? {})) {
    try {
      (err as unknown as Record<string, unknown>)[k] = v;
    } catch {
      // read-only accessor (e.g. a class's `name` getter): the prototype already has it
    }
  }
  const where = pid === undefined ? 'a pool worker' : `pool worker pid ${pid}`;
  Object.defineProperty(err, 'stack', {
    value: `${s.stack}\n    at <${where}>`,
    writable: true,
    configurable: true,
  });
  return err;
}

// ------------------------------------------------------------------ worker side (in the child)

/** A spawn/forkserver worker's functions, by reference ('module#name'), once resolved. */
const byRef = new Map<string, (...a: unknown[]) => unknown>();

/** Every parent-side worker pipe end in this process: a new worker closes its copies. */
const parentEnds = new Set<number>();

/**
 * A worker's loop. Forked workers find a task's function in their copy of the registry (by id);
 * workers started by spawn/forkserver get it by reference (lib/function_ref.ts), resolved once.
 * Exported as this module's entry point for those workers.
 */
export async function workerMain(conn: Connection, initializer: AnyFn | FunctionRef | null, initargs: readonly unknown[]): Promise<void> {
  // Our inherited copies of other workers' parent ends would keep them from seeing EOF when
  // the parent dies (and the parent from seeing theirs): close them.
  for (const fd of parentEnds) {
    try {
      native.close(fd);
    } catch {
      // already closed
    }
  }
  parentEnds.clear();
  const fd = conn.fileno();
  let initError: SerializedError | null = null;
  if (initializer !== null) {
    try {
      // As tasks' functions: a CommonJS export from the module cache without an import() (which
      // in a forkserver child costs ~40 ms of CommonJS export parsing the first time).
      const init = isFunctionRef(initializer) ? (requireRef(initializer) ?? (await resolveFunctionRef(initializer))) : initializer;
      await (init as (...a: unknown[]) => unknown)(...initargs);
    } catch (e) {
      // Answer every task with the initializer's error rather than dying in a respawn loop.
      initError = serializeError(e);
    }
  }
  let sync = true;
  for (;;) {
    let msg: unknown;
    try {
      if (sync) spinUntilReadable(conn);
      msg = sync ? conn.recvSync() : await conn.recv();
    } catch {
      break; // EOF: the parent is gone or closed our pipe
    }
    if (!Array.isArray(msg)) break; // 0: stop
    const n = msg.length / 3;
    const out = new Array<unknown>(n * 2);
    let wentAsync = false;
    for (let i = 0; i < n; i++) {
      const kind = msg[3 * i] as number;
      const fnId = msg[3 * i + 1] as number | FunctionRef;
      const payload = msg[3 * i + 2] as unknown[];
      if (initError !== null) {
        out[2 * i] = ST_ERR;
        out[2 * i + 1] = initError;
        continue;
      }
      try {
        let fn: ((...a: unknown[]) => unknown) | undefined;
        if (typeof fnId === 'number') {
          fn = fnTable.get(fnId)?.fn as ((...a: unknown[]) => unknown) | undefined;
          if (fn === undefined) throw new ValueError(`pool worker does not know function #${fnId}`, { code: 'ERR_MP_INTERNAL' });
        } else {
          const key = `${fnId.module}#${fnId.name}`;
          fn = byRef.get(key) ?? requireRef(fnId) ?? undefined;
          if (fn === undefined) {
            wentAsync = true;
            fn = await resolveFunctionRef(fnId);
          }
          byRef.set(key, fn);
        }
        let value: unknown;
        if (kind === KIND_APPLY) {
          value = fn(...payload);
          if (isThenable(value)) {
            wentAsync = true;
            value = await value;
          }
        } else {
          // The loop runs in a plain function: V8 optimizes it (on-stack replacement) from the
          // first big chunk, which it cannot do for a loop inside this async function.
          // Sized once: grown by push, a 25k-item chunk's results were copied ~20 times into
          // ever larger arrays (each new large array is fresh memory: page faults).
          const res = new Array<unknown>(payload.length);
          let j = runChunk(fn, kind, payload, res, 0);
          while (j < payload.length) {
            wentAsync = true;
            res[j] = await res[j];
            j = runChunk(fn, kind, payload, res, j + 1);
          }
          value = res;
        }
        out[2 * i] = ST_OK;
        out[2 * i + 1] = value;
      } catch (e) {
        out[2 * i] = ST_ERR;
        out[2 * i + 1] = serializeError(e);
      }
    }
    sendResults(fd, out);
    // After async work, wait on the event loop once so timers and I/O the tasks left behind run.
    sync = !wentAsync;
  }
  conn.close();
}

/**
 * Calls fn on payload[start..] into res[start..] until a call returns a thenable (left in res
 * at its index); returns that call's index, or payload.length when all are done.
 */
function runChunk(fn: (...a: unknown[]) => unknown, kind: number, payload: unknown[], res: unknown[], start: number): number {
  const n = payload.length;
  for (let j = start; j < n; j++) {
    const v = kind === KIND_MAP ? fn(payload[j]) : fn(...(payload[j] as unknown[]));
    res[j] = v;
    if (isThenable(v)) return j;
  }
  return n;
}

/**
 * A worker that just answered polls its pipe for a few tens of microseconds before it sleeps:
 * the next task of a caller that awaits each result (apply in a loop) then arrives while it is
 * still on CPU, which saves a wake-up from an idle CPU (tens of microseconds on an idle machine).
 */
const SPIN_MS = 0.05;

function spinUntilReadable(conn: Connection): void {
  // performance.now(), not hrtime.bigint(): a BigInt per turn filled the young generation, and
  // each page it touches is a page fault on some VMs (after a big map, apply() round trips
  // were 80-90 us instead of ~30 here; 60 with this).
  const end = performance.now() + SPIN_MS;
  while (!conn.pollSync(0)) if (performance.now() >= end) return;
}

function sendResults(fd: number, out: unknown[]): void {
  let enc: { chunks: Uint8Array[] };
  try {
    enc = encodeMessage(out, null);
  } catch {
    // Some result cannot travel: that task (only) fails.
    for (let i = 0; i < out.length; i += 2) {
      if (out[i] !== ST_OK) continue;
      try {
        encodeMessage(out[i + 1], null);
      } catch (e) {
        out[i] = ST_ERR;
        const s = serializeError(e);
        s.message = `result could not be sent to the parent: ${s.message}`;
        out[i + 1] = s;
      }
    }
    enc = encodeMessage(out, null);
  }
  native.sendFrame(fd, true, enc.chunks);
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return (typeof v === 'object' || typeof v === 'function') && v !== null && typeof (v as { then?: unknown }).then === 'function';
}

// ------------------------------------------------------------------ parent side: the core

/** One unit of work: an apply call or one chunk of a map. */
export interface Unit {
  job: Job;
  kind: number;
  /** The arguments (apply) or items (a chunk: a range of the job's items, encoded without a copy). */
  payload: unknown[] | ArrayRange;
  /** Position of this unit in its job (chunk index). */
  seq: number;
}

/** A source of units (an apply, a map, an imap, a future) and the sink of their results. */
export interface Job {
  readonly fnId: number;
  /** The next unit to run, or null if none now (see `exhausted`). */
  next(): Unit | null;
  /** No more units will come (next() returns null for good). */
  readonly exhausted: boolean;
  /** A guess of how many units remain (Infinity when unknown), for batch sizes. */
  readonly remaining: number;
  /** The unit went to a worker; `bytes`: its share of the message's size. */
  onDispatch?(unit: Unit, bytes: number): void;
  onResult(unit: Unit, ok: boolean, value: unknown): void;
  /** Where a unit's array result may be decoded directly (its onResult then gets PLACED). */
  placeInto?(unit: Unit): { target: unknown[]; base: number } | null;
  /** The whole job fails (pool terminated or broken, input error, abort). */
  fail(err: unknown): void;
}

const PREFETCH = 2;
const WRITABLE = 2;

/** One frame (CPython header + body) in one Buffer: what #write queues. */
function frameOf(enc: { chunks: Uint8Array[]; length: number }): Buffer {
  const head = native.frameHeader(enc.length);
  return Buffer.concat([head, ...enc.chunks], head.length + enc.length);
}
const MAX_BATCH = 256;
/**
 * Bytes sent ahead to a worker (batches after the one it runs) beyond which no more is sent
 * ahead: a memory bound, not a deadlock guard (the parent's writes never block, see #write).
 */
const AHEAD_BYTES = 4 * 1024 * 1024;

interface Worker {
  proc: Process;
  conn: Connection;
  fd: number;
  pid: number;
  /** Functions with an id below this were registered before the fork: the worker knows them. */
  gen: number;
  batches: Unit[][];
  sizes: number[];
  /** Frames not yet fully written (the parent never blocks writing: see #write). */
  outq: { frame: Buffer; off: number }[];
  /** Writability watch on a dup of fd, while outq is not empty. */
  wwatch: { w: NativeWatcherLike; fd: number } | null;
  units: number;
  /** Units it returned results for. */
  done: number;
  reading: boolean;
  /** Needs a function it does not know: replace it as soon as it is idle. */
  stale: boolean;
  /** Reached maxTasksPerChild: replace it once idle. */
  retiring: boolean;
  gone: boolean;
}

interface NativeWatcherLike {
  start(events: number): void;
  close(): void;
}

function inFlightBytes(w: Worker): number {
  let n = 0;
  for (const s of w.sizes) n += s;
  return n;
}

export interface CoreOptions {
  processes: number;
  initializer: AnyFn | FunctionRef | string | null;
  initargs: readonly unknown[];
  maxTasksPerChild: number | null;
  ctx: ProcessOptions['ctx'];
  /** 'replace' (Pool): a lost worker fails its batch and is replaced; 'break' (executor): everything fails. */
  onLost: 'replace' | 'break';
  brokenError?: () => Error;
}

const enum State {
  RUN,
  CLOSE,
  TERMINATE,
}

export class PoolCore {
  readonly #opts: CoreOptions;
  #workers: Worker[] = [];
  /** Jobs with units still to come, in submission order, from #head on (a deque). */
  #jobs: Job[] = [];
  #head = 0;
  /** Units taken back from a lost worker that had not read them: they run first. */
  #retry: Unit[] = [];
  #state = State.RUN;
  #scheduling = false;
  #again = false;
  #broken: Error | null = null;
  #exits = new Set<Promise<void>>();
  #idleWaiters: Array<() => void> = [];
  /** Cancels the pending refill (workers to fork on a later turn), if any. */
  #refill: (() => void) | null = null;
  #refillTimer: NodeJS.Timeout | null = null;
  /** Workers in a row that died before finishing any task. */
  #quickDeaths = 0;
  /** The workers' start method; under spawn/forkserver tasks carry FunctionRefs (by fn id here). */
  #method: string;
  #refs = new Map<number, FunctionRef>();
  #initRef: FunctionRef | null = null;

  constructor(opts: CoreOptions) {
    // Workers run closures from their copy of this process: they must be forked. Check now, so
    // that the error reaches the caller rather than the later turn that forks them.
    const method = opts.ctx?.getStartMethod() ?? getStartMethod() ?? 'fork';
    this.#method = method;
    if (method === 'fork') {
      // Forked workers run closures from their copy of this process: check now, so that the
      // error reaches the caller rather than the later turn that forks them.
      assertForkSafe();
    } else if (opts.initializer !== null) {
      // spawn/forkserver workers get functions by reference: a closure fails here, at once.
      this.#initRef = toFunctionRef(opts.initializer, method);
    }
    this.#opts = opts;
    // The first workers start now, so that pids are known when the constructor returns (a
    // failure to start them is the constructor's error). Replacements start on a later turn
    // (see #dispatch).
    try {
      while (this.#workers.length < opts.processes) this.#spawn();
    } catch (e) {
      this.#state = State.TERMINATE;
      for (const w of this.#workers) w.proc.kill();
      throw e;
    }
    this.schedule();
  }

  get broken(): Error | null {
    return this.#broken;
  }

  get running(): boolean {
    return this.#state === State.RUN;
  }

  get pids(): number[] {
    return this.#workers.filter((w) => !w.gone).map((w) => w.pid);
  }

  get processes(): number {
    return this.#opts.processes;
  }

  /** Registers fn for jobs; under spawn/forkserver it must be referenceable (ERR_MP_NOT_REFERENCEABLE). */
  registerFn(fn: AnyFn | FunctionRef | string): number {
    if (this.#method === 'fork') {
      if (typeof fn !== 'function') throw invalidArgType('func', 'a function under the fork start method', fn);
      compileForChildren(fn); // before the workers that will run it are forked
      const id = acquireFn(fn);
      // An exported function also gets a reference: workers forked before it was registered
      // resolve it by module instead of being re-forked (closures still need the fork).
      if (!this.#refs.has(id) && id >= this.#oldestGen()) {
        const ref = commonJsRef(fn); // ES modules and closures: found by id after a re-fork
        if (ref !== null) this.#refs.set(id, ref);
      }
      return id;
    }
    const ref = toFunctionRef(fn, this.#method);
    // A reference given as data is registered under one stand-in function per module#name.
    const key = typeof fn === 'function' ? fn : standIn(ref);
    const id = acquireFn(key);
    this.#refs.set(id, ref);
    return id;
  }

  releaseFn(id: number): void {
    releaseFn(id);
    if (!fnTable.has(id)) this.#refs.delete(id);
  }

  /** Queues a job; its units are dispatched as workers have room. */
  submit(job: Job): void {
    if (this.#broken !== null) throw this.#broken;
    if (this.#state !== State.RUN) throw new ValueError('Pool not running', { code: 'ERR_MP_POOL_NOT_RUNNING' });
    this.#jobs.push(job);
    this.schedule();
  }

  // ---- workers

  #spawn(): Worker {
    const [parentEnd, childEnd] = Pipe();
    const { initializer, initargs, ctx } = this.#opts;
    const forked = this.#method === 'fork';
    const proc = new Process({
      // A fresh worker (spawn/forkserver) imports this module's entry point by reference.
      target: forked ? (workerMain as never) : internalRef('pool', 'workerMain'),
      args: [childEnd, forked ? initializer : this.#initRef, initargs],
      daemon: true,
      ctx,
    });
    proc.start();
    childEnd.close();
    const fd = parentEnd.fileno();
    parentEnds.add(fd);
    const w: Worker = {
      proc,
      conn: parentEnd,
      fd,
      pid: proc.pid!,
      // Fresh workers resolve every function by reference: none is ever unknown to them.
      gen: this.#method === 'fork' ? nextFnId : Infinity,
      batches: [],
      sizes: [],
      outq: [],
      wwatch: null,
      units: 0,
      done: 0,
      reading: false,
      stale: false,
      retiring: false,
      gone: false,
    };
    this.#workers.push(w);
    const exited = proc.join().then(() => {
      this.#exits.delete(exited);
      if (!w.gone) this.#lost(w);
      this.#closeProc(w); // its sentinel
    });
    this.#exits.add(exited);
    return w;
  }

  #closeProc(w: Worker): void {
    if (w.proc.exitCode === null) return;
    try {
      w.proc.close();
    } catch {
      // still running: closed by whoever reaps it
    }
  }

  /** Stops an idle worker (it exits when it reads the stop message) and forgets it. */
  #retire(w: Worker): void {
    w.gone = true;
    this.#workers.splice(this.#workers.indexOf(w), 1);
    parentEnds.delete(w.fd);
    try {
      // Idle: nothing is queued, and a few bytes always fit in the socket buffer.
      native.writeSome(w.fd, frameOf(encodeMessage(0, null)), 0);
    } catch {
      // already dead: the exit watcher reaps it
    }
    this.#stopWriting(w);
    w.conn.close();
  }

  #lost(w: Worker): void {
    if (w.gone) {
      this.#stopWriting(w);
      return;
    }
    w.gone = true;
    this.#stopWriting(w);
    const i = this.#workers.indexOf(w);
    if (i >= 0) this.#workers.splice(i, 1);
    parentEnds.delete(w.fd);
    w.conn.close();
    const code = w.proc.exitCode;
    if (code === null) {
      try {
        w.proc.kill(); // alive but closed its pipe: of no more use
      } catch {
        // gone
      }
    }
    const batches = w.batches.splice(0);
    w.sizes = [];
    // Died idle without ever finishing a task (a crashing initializer): respawns back off.
    if (w.done === 0 && batches.length === 0) this.#quickDeaths++;
    const how = code === null ? 'closed its pipe' : code < 0 ? `was killed by signal ${-code}` : `exited with code ${code}`;
    if (this.#opts.onLost === 'break') {
      const err = this.#opts.brokenError?.() ?? new WorkerLostError(`pool worker pid ${w.pid} ${how}`);
      for (const b of batches) for (const u of b) u.job.fail(err);
      this.#break(err);
      return;
    }
    // The first batch was being run; the others were never read: they run elsewhere.
    const [running, ...unread] = batches;
    for (let j = unread.length - 1; j >= 0; j--) this.#retry.unshift(...unread[j]!);
    if (running !== undefined) {
      for (const u of running) {
        u.job.onResult(u, false, new WorkerLostError(`pool worker pid ${w.pid} ${how} while running this task`));
      }
    }
    this.schedule();
  }

  #break(err: Error): void {
    if (this.#broken !== null) return;
    this.#broken = err;
    this.#state = State.TERMINATE;
    this.#failAll(err);
    void this.#killAll();
  }

  #failAll(err: unknown): void {
    const jobs = new Set<Job>(this.#jobs.slice(this.#head));
    for (const u of this.#retry) jobs.add(u.job);
    for (const w of this.#workers) for (const b of w.batches) for (const u of b) jobs.add(u.job);
    this.#jobs = [];
    this.#head = 0;
    this.#retry = [];
    for (const w of this.#workers) {
      w.batches = [];
      w.sizes = [];
    }
    for (const j of jobs) j.fail(err);
  }

  // ---- dispatch

  schedule(): void {
    if (this.#scheduling) {
      this.#again = true;
      return;
    }
    this.#scheduling = true;
    try {
      do {
        this.#again = false;
        this.#dispatch();
      } while (this.#again);
    } finally {
      this.#scheduling = false;
    }
    this.#checkIdle();
  }

  #wanted(): number {
    return this.#state === State.RUN || this.#hasWork() ? this.#opts.processes : 0;
  }

  #hasWork(): boolean {
    if (this.#retry.length > 0) return true;
    for (let k = this.#head; k < this.#jobs.length; k++) if (!this.#jobs[k]!.exhausted) return true;
    return false;
  }

  #dispatch(): void {
    if (this.#state === State.TERMINATE) return;
    // Replace idle workers that must go, and keep the pool full while it has (or may get) work.
    for (const w of [...this.#workers]) {
      if ((w.stale || w.retiring) && w.batches.length === 0) this.#retire(w);
    }
    if (this.#workers.length < this.#wanted() && this.#refill === null) {
      // Fork from a fresh stack: forking inside the microtasks of a native callback (the
      // continuation of a Connection read, where results arrive, or of a Process join) kills
      // the child at its first turn. So workers, the first ones too, start on the next turn.
      const refill = (): void => {
        this.#refill = null;
        this.#refillTimer = null;
        if (this.#state === State.TERMINATE) return;
        try {
          while (this.#workers.length < this.#wanted()) this.#spawn();
        } catch (e) {
          // Cannot fork any more (e.g. a worker_threads Worker now runs, or EAGAIN): everything
          // pending fails with that error and the pool accepts no more work.
          this.#break(e instanceof Error ? e : new WorkerLostError(String(e)));
          return;
        }
        this.schedule();
      };
      // Workers that die before their first task (a crashing initializer) are replaced after a
      // growing delay, not in a tight fork loop.
      if (this.#quickDeaths < 3) {
        const i = setImmediate(refill);
        this.#refill = () => clearImmediate(i);
      } else {
        const t = setTimeout(refill, Math.min(1000, 10 << Math.min(this.#quickDeaths, 10)));
        // Keeps the program alive only while there is work for the workers to come.
        if (!this.#hasWork()) t.unref();
        this.#refillTimer = t;
        this.#refill = () => clearTimeout(t);
      }
    } else if (this.#refillTimer !== null && this.#hasWork()) {
      this.#refillTimer.ref();
    }
    if (!this.#hasWork()) return;
    const n = this.#workers.length;
    for (let round = 0; round < PREFETCH; round++) {
      for (const w of [...this.#workers]) {
        if (w.gone || w.stale || w.retiring || w.batches.length > round) continue;
        // Bytes the parent could not write yet wait in outq; do not pile more on top.
        if (w.batches.length > 0 && (w.outq.length > 0 || inFlightBytes(w) >= AHEAD_BYTES)) continue;
        const batch = this.#take(w, n);
        if (batch !== null) this.#send(w, batch);
        if ((w.stale || w.retiring) && w.batches.length === 0) this.#again = true;
      }
    }
  }

  /** Up to a fair share of units for w, or null (nothing it may run now). */
  #take(w: Worker, n: number): Unit[] | null {
    // (Looking at the first jobs is enough to size a batch; thousands of queued applies must
    // not make every dispatch O(jobs).)
    let remaining = this.#retry.length;
    const jobs = this.#jobs;
    for (let k = this.#head; k < jobs.length && k < this.#head + 4 * MAX_BATCH && remaining < n * PREFETCH * MAX_BATCH; k++) {
      remaining += jobs[k]!.remaining;
    }
    let limit = Math.max(1, Math.min(MAX_BATCH, Math.ceil(remaining / (n * PREFETCH))));
    const max = this.#opts.maxTasksPerChild;
    if (max !== null) limit = Math.min(limit, max - w.units);
    const batch: Unit[] = [];
    while (batch.length < limit && this.#retry.length > 0) {
      const u = this.#retry[0]!;
      if (!this.#knows(w, u.job.fnId)) break;
      batch.push(this.#retry.shift()!);
    }
    if (batch.length === 0 && this.#retry.length > 0) {
      this.#markStale(w, this.#retry[0]!.job.fnId);
      return null;
    }
    for (let k = this.#head; k < this.#jobs.length && batch.length < limit; ) {
      const j = this.#jobs[k]!;
      if (j.exhausted) {
        k = this.#removeJob(k);
        continue;
      }
      if (!this.#knows(w, j.fnId)) {
        if (batch.length === 0) this.#markStale(w, j.fnId);
        break;
      }
      let u: Unit | null = null;
      while (batch.length < limit && (u = j.next()) !== null) batch.push(u);
      if (j.exhausted) k = this.#removeJob(k);
      else if (u === null) k++; // held back (backpressure): later jobs may go
    }
    return batch.length > 0 ? batch : null;
  }

  /** Removes the job at k (O(1) at the head, where jobs end in FIFO order); returns the index of the next one. */
  #removeJob(k: number): number {
    const jobs = this.#jobs;
    if (k !== this.#head) {
      jobs.splice(k, 1);
      return k;
    }
    jobs[k] = undefined as unknown as Job;
    this.#head++;
    if (this.#head === jobs.length) {
      this.#jobs = [];
      this.#head = 0;
    } else if (this.#head >= 1024 && this.#head * 2 >= jobs.length) {
      this.#jobs = jobs.slice(this.#head);
      this.#head = 0;
    }
    return this.#head;
  }

  /**
   * w does not know function fnId: re-fork it, unless enough workers that will know it (forked
   * later, or being re-forked) are there for `units` units already — one apply re-forks one
   * worker, a big map all of them.
   */
  #markStale(w: Worker, fnId: number): void {
    // Everything queued that w cannot run counts.
    let units = 0;
    for (const u of this.#retry) if (!this.#knows(w, u.job.fnId)) units++;
    for (let k = this.#head; k < this.#jobs.length; k++) {
      const j = this.#jobs[k]!;
      if (!this.#knows(w, j.fnId)) units += j.remaining;
    }
    let capable = this.#opts.processes - this.#workers.length;
    for (const x of this.#workers) if (x.stale || x.gen > fnId) capable++;
    if (capable < Math.min(units, this.#opts.processes)) w.stale = true;
  }

  /**
   * Writes a frame without ever blocking. A blocking write to a worker that is itself blocked
   * writing its results to us (a full socket both ways) would deadlock; so what does not fit in
   * the socket now waits in w.outq, flushed when the socket becomes writable, while the event
   * loop keeps reading results. Frames go out whole and in order.
   */
  #write(w: Worker, enc: { chunks: Uint8Array[]; length: number }): void {
    if (w.outq.length > 0) {
      w.outq.push({ frame: frameOf(enc), off: 0 });
      return;
    }
    // The common case: the whole frame fits in the socket now (no copy, one syscall).
    const n = native.trySendFrame(w.fd, enc.chunks);
    if (n === (enc.length <= 0x7fffffff ? 4 : 12) + enc.length) return;
    w.outq.push({ frame: frameOf(enc), off: n });
    // A second watch on the same descriptor is not possible (the Connection reads it): watch a dup.
    const fd = native.dup(w.fd);
    const watch = new native.Watcher(fd, () => this.#flush(w));
    w.wwatch = { w: watch, fd };
    watch.start(WRITABLE);
  }

  #flush(w: Worker): void {
    if (w.gone) {
      // Retired, lost or terminated meanwhile: nothing more goes to it.
      w.outq = [];
      this.#stopWriting(w);
      return;
    }
    try {
      while (w.outq.length > 0) {
        const o = w.outq[0]!;
        const n = native.writeSome(w.fd, o.frame, o.off);
        if (n === 0) return; // full again: wait for the next writable event
        o.off += n;
        if (o.off < o.frame.length) return;
        w.outq.shift();
      }
    } catch {
      // The worker is gone (EPIPE): its exit watcher fails or retries what it had.
      this.#stopWriting(w);
      this.#lost(w);
      return;
    }
    this.#stopWriting(w);
    this.schedule(); // room again: more may be sent ahead
  }

  #stopWriting(w: Worker): void {
    if (w.wwatch !== null) {
      w.wwatch.w.close();
      native.close(w.wwatch.fd);
      w.wwatch = null;
    }
    if (w.gone) w.outq = [];
  }

  /** Functions with an id below this are known to every worker (the oldest worker's fork). */
  #oldestGen(): number {
    let g = Infinity;
    for (const w of this.#workers) g = Math.min(g, w.gen);
    return g === Infinity ? 0 : g;
  }

  /** What a task message names its function by: the registry id (fork) or the reference. */
  #fnWire(w: Worker, fnId: number): number | FunctionRef {
    if (this.#method === 'fork' && fnId < w.gen) return fnId;
    return this.#refs.get(fnId) as FunctionRef;
  }

  /**
   * Can w run function fnId? A forked worker knows every function registered before its fork,
   * and finds one exported by a module by reference (its copy of the module cache has it), so
   * only closures newer than the worker need a re-fork.
   */
  #knows(w: Worker, fnId: number): boolean {
    return fnId < w.gen || this.#refs.has(fnId);
  }

  #send(w: Worker, batch: Unit[]): void {
    let msg: unknown[] = [];
    for (const u of batch) msg.push(u.kind, this.#fnWire(w, u.job.fnId), u.payload);
    let enc: { chunks: Uint8Array[]; length: number };
    try {
      enc = encodeMessage(msg, null);
    } catch {
      // Some arguments cannot travel: those tasks (only) fail.
      const good: Unit[] = [];
      for (const u of batch) {
        try {
          encodeMessage(u.payload, null);
          good.push(u);
        } catch (e) {
          u.job.onResult(u, false, e);
        }
      }
      if (good.length === 0) return;
      batch = good;
      msg = [];
      for (const u of batch) msg.push(u.kind, this.#fnWire(w, u.job.fnId), u.payload);
      enc = encodeMessage(msg, null);
    }
    try {
      this.#write(w, enc);
    } catch {
      // The worker is gone (EPIPE): these units were never read.
      this.#retry.unshift(...batch);
      this.#lost(w);
      return;
    }
    w.batches.push(batch);
    w.sizes.push(enc.length);
    w.units += batch.length;
    const max = this.#opts.maxTasksPerChild;
    if (max !== null && w.units >= max) w.retiring = true;
    const share = enc.length / batch.length;
    for (const u of batch) u.job.onDispatch?.(u, share);
    if (!w.reading) this.#read(w);
  }

  #read(w: Worker): void {
    w.reading = true;
    w.conn.recvDecoded((frame, dv) => this.#decodeResults(w, frame, dv)).then(
      (msg) => {
        w.reading = false;
        if (w.gone) return;
        this.#onResults(w, msg);
        if (w.batches.length > 0 && !w.gone) this.#read(w);
        this.schedule();
      },
      () => {
        w.reading = false;
        // EOF: the worker died. Wait for its exit status (bounded) to say how.
        if (w.gone) return;
        void w.proc.join(1000).then(() => this.#lost(w));
      },
    );
  }

  /**
   * A worker's answer to its oldest batch: map results are decoded straight into their job's
   * result array (no array per chunk: 8 x 25k-element arrays were the parent's biggest cost in
   * a default-chunksize map); everything else as usual.
   */
  #decodeResults(w: Worker, frame: Buffer, dv: DataView): unknown[] {
    const batch = w.batches[0];
    const out =
      batch === undefined
        ? null
        : decodePairs(frame, dv, (i, status) => (status === ST_OK ? (batch[i]?.job.placeInto?.(batch[i]!) ?? null) : null));
    return out ?? (decodeMessage(frame, dv, 0, frame.length, false) as unknown[]);
  }

  #onResults(w: Worker, out: unknown[]): void {
    const batch = w.batches.shift();
    w.sizes.shift();
    if (batch === undefined) return;
    w.done += batch.length;
    this.#quickDeaths = 0;
    for (let i = 0; i < batch.length; i++) {
      const u = batch[i]!;
      const st = out[2 * i];
      if (st === ST_OK) u.job.onResult(u, true, out[2 * i + 1]);
      else u.job.onResult(u, false, rebuildError(out[2 * i + 1] as SerializedError, w.pid));
    }
  }

  // ---- lifetime

  #checkIdle(): void {
    if (this.#idleWaiters.length === 0) return;
    if (this.#hasWork()) return;
    for (const w of this.#workers) if (w.batches.length > 0) return;
    for (const r of this.#idleWaiters.splice(0)) r();
  }

  /** No new work; workers exit once everything submitted is done. */
  close(): void {
    if (this.#state === State.RUN) this.#state = State.CLOSE;
    this.schedule();
    void this.#whenIdle().then(() => {
      if (this.#state !== State.CLOSE) return;
      for (const w of [...this.#workers]) this.#retire(w);
    });
  }

  #whenIdle(): Promise<void> {
    return new Promise((resolve) => {
      this.#idleWaiters.push(resolve);
      this.#checkIdle();
    });
  }

  /** Kills the workers (SIGTERM, then SIGKILL after a grace period); everything pending fails. */
  async terminate(err: Error = new CancelledError('the pool was terminated')): Promise<void> {
    if (this.#state !== State.TERMINATE) {
      this.#state = State.TERMINATE;
      this.#failAll(err);
    }
    await this.#killAll();
  }

  async #killAll(): Promise<void> {
    this.#refill?.();
    this.#refill = null;
    this.#refillTimer = null;
    const ws = this.#workers.splice(0);
    for (const w of ws) {
      w.gone = true;
      parentEnds.delete(w.fd);
      // Before its fd is closed (and its number reused): queued writes must never reach a reuser.
      this.#stopWriting(w);
      w.conn.close();
      try {
        w.proc.terminate();
      } catch {
        // closed: already reaped
      }
    }
    const deadline = Date.now() + 500;
    for (const w of ws) {
      try {
        await w.proc.join(Math.max(0, deadline - Date.now()));
        if (w.proc.exitCode === null) {
          w.proc.kill();
          await w.proc.join(5000);
        }
      } catch {
        // closed: already reaped
      }
    }
    await this.join();
  }

  /** Waits until every worker has exited (after close or terminate). */
  async join(): Promise<void> {
    // The workers are daemons: their exit watchers do not keep the event loop alive, but a
    // pending join must (else `await pool.join()` at the end of a program never returns).
    const keepAlive = setInterval(() => {}, 1 << 30);
    try {
      await this.#join();
    } finally {
      clearInterval(keepAlive);
    }
  }

  async #join(): Promise<void> {
    for (;;) {
      if (this.#state !== State.TERMINATE) await this.#whenIdle();
      if (this.#exits.size === 0 && this.#workers.length === 0) return;
      await Promise.all([...this.#exits]);
      if (this.#workers.length > 0) await new Promise((r) => setImmediate(r));
    }
  }
}

// ------------------------------------------------------------------ jobs

function checkChunksize(chunksize: unknown): number | undefined {
  if (chunksize === undefined || chunksize === null) return undefined;
  if (typeof chunksize !== 'number' || !Number.isInteger(chunksize)) throw invalidArgType('chunksize', 'an integer', chunksize);
  if (chunksize < 1) throw invalidArgValue('chunksize', chunksize, 'must be at least 1');
  return chunksize;
}

/** CPython's rule: chunksize, extra = divmod(len, 4 * processes); if extra: chunksize += 1. */
export function defaultChunksize(length: number, processes: number): number {
  let c = Math.floor(length / (4 * processes));
  if (length % (4 * processes)) c += 1;
  return Math.max(1, c);
}

function abortError(signal: AbortSignal): unknown {
  return signal.reason ?? new CancelledError('aborted');
}

/** Base of jobs with a settle-once outcome (apply, map). */
abstract class OnceJob<R> implements Job {
  readonly fnId: number;
  readonly #core: PoolCore;
  result: AsyncResult<R>;
  #settled = false;
  #signal: AbortSignal | undefined;
  #onAbort: (() => void) | null = null;

  constructor(core: PoolCore, fnId: number, result: AsyncResult<R>, signal: AbortSignal | undefined) {
    this.#core = core;
    this.fnId = fnId;
    this.result = result;
    this.#signal = signal;
    if (signal !== undefined) {
      this.#onAbort = () => this.fail(abortError(signal));
      signal.addEventListener('abort', this.#onAbort, { once: true });
    }
  }

  get settled(): boolean {
    return this.#settled;
  }

  abstract next(): Unit | null;
  abstract get exhausted(): boolean;
  abstract get remaining(): number;
  abstract onResult(unit: Unit, ok: boolean, value: unknown): void;

  protected settle(ok: boolean, value: unknown): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#core.releaseFn(this.fnId);
    if (this.#onAbort !== null) this.#signal!.removeEventListener('abort', this.#onAbort);
    if (ok) this.result._resolve(value as R);
    else this.result._reject(value);
  }

  fail(err: unknown): void {
    this.settle(false, err);
  }
}

class ApplyJob<R> extends OnceJob<R> {
  #args: unknown[] | null;
  constructor(core: PoolCore, fnId: number, args: unknown[], result: AsyncResult<R>, signal?: AbortSignal) {
    super(core, fnId, result, signal);
    this.#args = args;
  }
  next(): Unit | null {
    if (this.#args === null || this.settled) return null;
    const u: Unit = { job: this, kind: KIND_APPLY, payload: this.#args, seq: 0 };
    this.#args = null;
    return u;
  }
  get exhausted(): boolean {
    return this.#args === null || this.settled;
  }
  get remaining(): number {
    return this.exhausted ? 0 : 1;
  }
  onResult(_u: Unit, ok: boolean, value: unknown): void {
    this.settle(ok, value);
  }
}

class MapJob<R> extends OnceJob<R[]> {
  #items: unknown[];
  #chunksize: number;
  #kind: number;
  #nextChunk = 0;
  #chunks: number;
  #done = 0;
  #out: unknown[];
  constructor(core: PoolCore, fnId: number, items: unknown[], chunksize: number, star: boolean, result: AsyncResult<R[]>, signal?: AbortSignal) {
    super(core, fnId, result, signal);
    this.#items = items;
    this.#chunksize = chunksize;
    this.#kind = star ? KIND_STAR : KIND_MAP;
    this.#chunks = Math.ceil(items.length / chunksize);
    this.#out = newArray(items.length);
    if (this.#chunks === 0) this.settle(true, this.#out);
  }
  next(): Unit | null {
    if (this.exhausted) return null;
    const seq = this.#nextChunk++;
    const cs = this.#chunksize;
    const payload = cs === 1 ? [this.#items[seq]] : new ArrayRange(this.#items, seq * cs, Math.min((seq + 1) * cs, this.#items.length));
    return { job: this, kind: this.#kind, payload, seq };
  }
  get exhausted(): boolean {
    return this.#nextChunk >= this.#chunks || this.settled;
  }
  get remaining(): number {
    return this.settled ? 0 : this.#chunks - this.#nextChunk;
  }
  onResult(u: Unit, ok: boolean, value: unknown): void {
    if (this.settled) return;
    if (!ok) {
      this.settle(false, value);
      return;
    }
    if (value !== PLACED) {
      const vals = value as unknown[];
      const base = u.seq * this.#chunksize;
      for (let i = 0; i < vals.length; i++) this.#out[base + i] = vals[i];
    }
    if (++this.#done === this.#chunks) this.settle(true, this.#out);
  }
  placeInto(u: Unit): { target: unknown[]; base: number } | null {
    return this.settled ? null : { target: this.#out, base: u.seq * this.#chunksize };
  }
}

/** Encoded input an imap may have out (sent or waiting for the consumer). */
const IMAP_AHEAD_BYTES = 32 * 1024 * 1024;

/** imap / imapUnordered / executor map: pulls the input lazily, with backpressure. */
export class ImapJob<R> implements AsyncIterableIterator<R> {
  readonly fnId: number;
  /** The view the pool core uses (its next() gives units; ours is the iterator protocol's). */
  readonly asJob: Job;
  readonly #core: PoolCore;
  readonly #source: Iterator<unknown> | null;
  /** An async iterable's iterator: pulled ahead into #pending, at most two chunks. */
  readonly #asource: AsyncIterator<unknown> | null;
  #pending: unknown[] = [];
  #pulling = false;
  readonly #chunksize: number;
  readonly #kind: number;
  readonly #ordered: boolean;
  readonly #maxAhead: number;
  readonly #deadline: number;
  #sourceDone = false;
  #nextSeq = 0;
  /** Chunks produced and not yet handed to the consumer. */
  #outstanding = 0;
  #ready = new Map<number, unknown[]>(); // ordered: seq -> values
  #readyQueue: Array<[number, unknown[]]> = []; // unordered: [seq, values]
  /** Encoded input bytes of the chunks out (seq -> bytes) and their sum. */
  #bytes = new Map<number, number>();
  #bytesAhead = 0;
  /** Units made but not sent yet (in a batch being built), and the size of the last one sent. */
  #unsent = 0;
  #unitBytes = 0;
  #yieldSeq = 0;
  #buffer: unknown[] = [];
  #error: { e: unknown } | null = null;
  #finished = false;
  #waiter: { resolve: () => void; timer: NodeJS.Timeout | null } | null = null;
  #signal: AbortSignal | undefined;
  #onAbort: (() => void) | null = null;

  constructor(
    core: PoolCore,
    fnId: number,
    iterable: Iterable<unknown> | AsyncIterable<unknown>,
    opts: { chunksize: number; star: boolean; ordered: boolean; signal?: AbortSignal; timeout?: number },
  ) {
    this.#core = core;
    this.fnId = fnId;
    if (typeof (iterable as Iterable<unknown>)[Symbol.iterator] === 'function') {
      this.#source = (iterable as Iterable<unknown>)[Symbol.iterator]();
      this.#asource = null;
    } else {
      this.#source = null;
      this.#asource = (iterable as AsyncIterable<unknown>)[Symbol.asyncIterator]();
    }
    this.#chunksize = opts.chunksize;
    this.#kind = opts.star ? KIND_STAR : KIND_MAP;
    this.#ordered = opts.ordered;
    // Bounded read-ahead: at most this many chunks (about 1024 items, and at least a few chunks
    // per worker) and IMAP_AHEAD_BYTES of encoded input are in flight or waiting for the consumer.
    this.#maxAhead = Math.max(core.processes * PREFETCH * 4 + 8, Math.ceil(1024 / opts.chunksize));
    this.#deadline = opts.timeout === undefined ? Infinity : Date.now() + Math.max(0, opts.timeout);
    this.#signal = opts.signal;
    const self = this;
    this.asJob = {
      fnId,
      next: () => self.nextUnit(),
      get exhausted() {
        return self.exhausted;
      },
      // Unknown length: guess that as many chunks remain as were made so far, so batches
      // start at one chunk (short inputs spread over the workers) and grow geometrically.
      get remaining() {
        return self.exhausted ? 0 : Math.max(1, self.produced);
      },
      onDispatch: (u, bytes) => self.onDispatch(u, bytes),
      onResult: (u, ok, v) => self.onResult(u, ok, v),
      fail: (e) => self.fail(e),
    };
    if (opts.signal !== undefined) {
      const signal = opts.signal;
      this.#onAbort = () => this.fail(abortError(signal));
      signal.addEventListener('abort', this.#onAbort, { once: true });
    }
    this.#pull();
  }

  next(): Promise<IteratorResult<R>> {
    return this.#next();
  }

  // The Job side (called by the core).
  get exhausted(): boolean {
    return (this.#sourceDone && this.#pending.length === 0) || this.#error !== null || this.#finished;
  }
  get produced(): number {
    return this.#nextSeq;
  }

  nextUnit(): Unit | null {
    if (this.exhausted || this.#outstanding >= this.#maxAhead) return null;
    if (this.#bytesAhead + this.#unsent * this.#unitBytes >= IMAP_AHEAD_BYTES) return null;
    const cs = this.#chunksize;
    if (this.#asource !== null) {
      if (this.#pending.length < cs && !this.#sourceDone) {
        this.#pull();
        return null;
      }
      const payload = this.#pending.splice(0, cs);
      this.#pull();
      this.#outstanding++;
      this.#unsent++;
      return { job: this.asJob, kind: this.#kind, payload, seq: this.#nextSeq++ };
    }
    const payload: unknown[] = [];
    try {
      while (payload.length < cs) {
        const r = this.#source!.next();
        if (r.done) {
          this.#sourceDone = true;
          break;
        }
        payload.push(r.value);
      }
    } catch (e) {
      this.fail(e);
      return null;
    }
    if (payload.length === 0) {
      this.#maybeEnd();
      return null;
    }
    this.#outstanding++;
    this.#unsent++;
    return { job: this.asJob, kind: this.#kind, payload, seq: this.#nextSeq++ };
  }
  onDispatch(u: Unit, bytes: number): void {
    const before = this.#bytes.get(u.seq);
    if (before === undefined) this.#unsent--;
    else this.#bytesAhead -= before; // sent again (its first worker died before reading it)
    this.#bytes.set(u.seq, bytes);
    this.#bytesAhead += bytes;
    this.#unitBytes = bytes;
  }
  onResult(u: Unit, ok: boolean, value: unknown): void {
    if (this.#error !== null || this.#finished) return;
    if (!ok) {
      this.fail(value);
      return;
    }
    if (this.#ordered) this.#ready.set(u.seq, value as unknown[]);
    else this.#readyQueue.push([u.seq, value as unknown[]]);
    this.#wake();
  }
  fail(err: unknown): void {
    if (this.#error !== null || this.#finished) return;
    this.#error = { e: err };
    this.#cleanup();
    this.#wake();
  }

  /** Async input: reads ahead up to two chunks, then tells the core there is work. */
  #pull(): void {
    const src = this.#asource;
    if (src === null || this.#pulling || this.#sourceDone || this.#error !== null || this.#finished) return;
    if (this.#pending.length >= 2 * this.#chunksize) return;
    this.#pulling = true;
    let r: Promise<IteratorResult<unknown>>;
    try {
      r = Promise.resolve(src.next());
    } catch (e) {
      this.#pulling = false;
      this.fail(e);
      return;
    }
    r.then(
      (res) => {
        this.#pulling = false;
        if (this.#error !== null || this.#finished) return;
        if (res.done) this.#sourceDone = true;
        else this.#pending.push(res.value);
        this.#pull();
        this.#core.schedule();
        this.#wake();
      },
      (e) => {
        this.#pulling = false;
        this.fail(e);
      },
    );
  }

  #cleanup(): void {
    this.#core.releaseFn(this.fnId);
    if (this.#onAbort !== null) this.#signal!.removeEventListener('abort', this.#onAbort);
    this.#onAbort = null;
    try {
      if (!this.#sourceDone) {
        this.#source?.return?.();
        if (this.#asource?.return) Promise.resolve(this.#asource.return()).catch(() => {});
      }
    } catch {
      // the source's own cleanup failed: nothing more to pull anyway
    }
  }

  #maybeEnd(): void {
    if (this.#sourceDone && this.#outstanding === 0 && this.#buffer.length === 0) this.#wake();
  }

  #wake(): void {
    const w = this.#waiter;
    if (w === null) return;
    this.#waiter = null;
    if (w.timer !== null) clearTimeout(w.timer);
    w.resolve();
  }

  #takeReady(): boolean {
    let vals: unknown[] | undefined;
    let seq = this.#yieldSeq;
    if (this.#ordered) {
      vals = this.#ready.get(seq);
      if (vals !== undefined) {
        this.#ready.delete(seq);
        this.#yieldSeq++;
      }
    } else {
      const e = this.#readyQueue.shift();
      if (e !== undefined) [seq, vals] = e;
    }
    if (vals === undefined) return false;
    this.#outstanding--;
    this.#bytesAhead -= this.#bytes.get(seq) ?? 0;
    this.#bytes.delete(seq);
    for (const v of vals) this.#buffer.push(v);
    // Room for more input: ask for it once we are down to half (bigger batches than one chunk
    // at a time; nothing stalls, as half of the read-ahead is still running or ready).
    if (this.#outstanding <= this.#maxAhead / 2) this.#core.schedule();
    return true;
  }

  #next(): Promise<IteratorResult<R>> {
    // Fast path: a value is buffered.
    if (this.#buffer.length > 0) return Promise.resolve({ done: false, value: this.#buffer.shift() as R });
    return this.#nextSlow();
  }

  async #nextSlow(): Promise<IteratorResult<R>> {
    for (;;) {
      if (this.#buffer.length > 0) return { done: false, value: this.#buffer.shift() as R };
      if (this.#finished) return { done: true, value: undefined };
      if (this.#takeReady()) continue;
      if (this.#error !== null) {
        this.#finished = true;
        throw this.#error.e;
      }
      if (this.#sourceDone && this.#outstanding === 0 && this.#pending.length === 0) {
        this.#finished = true;
        this.#cleanup();
        return { done: true, value: undefined };
      }
      const left = this.#deadline - Date.now();
      if (left <= 0) {
        const e = new TimeoutError('map timed out');
        this.fail(e);
        continue;
      }
      await new Promise<void>((resolve) => {
        const timer = this.#deadline === Infinity ? null : setTimeout(() => this.#wake(), left);
        this.#waiter = { resolve, timer };
      });
    }
  }

  /** Ends the iteration early (a `break` in for await): nothing more is pulled. */
  async return(): Promise<IteratorResult<R>> {
    if (!this.#finished) {
      if (this.#error === null) {
        this.#error = { e: new CancelledError('iteration ended') };
        this.#cleanup();
      }
      this.#finished = true;
      this.#buffer = [];
    }
    return { done: true, value: undefined };
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

// ------------------------------------------------------------------ AsyncResult

const PENDING = 0;
const FULFILLED = 1;
const REJECTED = 2;

/** The result of applyAsync / mapAsync: a thenable with CPython's AsyncResult methods. */
export class AsyncResult<R> extends DeferredResult<R> {
  #state = PENDING;
  #callback: ((v: R) => void) | undefined;
  #errorCallback: ((e: unknown) => void) | undefined;

  /** @internal */
  constructor(callback?: (v: R) => void, errorCallback?: (e: unknown) => void) {
    super();
    this.#callback = callback;
    this.#errorCallback = errorCallback;
  }

  /** @internal */
  _resolve(v: R): void {
    if (this.#state !== PENDING) return;
    this.#state = FULFILLED;
    this.fulfil(v);
    if (this.#callback) queueMicrotask(() => this.#callback!(v));
  }

  /** @internal */
  _reject(e: unknown): void {
    if (this.#state !== PENDING) return;
    this.#state = REJECTED;
    this.fail(e);
    if (this.#errorCallback) queueMicrotask(() => this.#errorCallback!(e));
  }

  ready(): boolean {
    return this.#state !== PENDING;
  }

  /** Whether the call completed without error; ValueError if it is not ready. */
  successful(): boolean {
    if (this.#state === PENDING) throw new ValueError('AsyncResult is not ready', { code: 'ERR_MP_NOT_READY' });
    return this.#state === FULFILLED;
  }

  /** Waits up to `timeout` ms for the result; TimeoutError if it is not there by then. */
  get(timeout?: number): Promise<R> {
    const t = checkTimeout(timeout);
    if (t === undefined || this.#state !== PENDING) return this.promise;
    return this.within(t).then(() => this.promise);
  }

  /** Waits up to `timeout` ms until the result is ready (never rejects). */
  async wait(timeout?: number): Promise<void> {
    const t = checkTimeout(timeout);
    if (this.#state !== PENDING) return;
    if (t === undefined) return this.settled();
    await this.within(t).catch(() => undefined);
  }

  get [Symbol.toStringTag](): string {
    return 'AsyncResult';
  }
}


// ------------------------------------------------------------------ Pool

export interface PoolOptions {
  /** Number of worker processes (default cpuCount()). */
  processes?: number;
  /** Called in each worker when it starts, with `initargs`. */
  initializer?: ((...args: never[]) => unknown) | null;
  initargs?: readonly unknown[];
  /** A worker is replaced after this many tasks (a map chunk counts as one). Default: never. */
  maxTasksPerChild?: number | null;
  ctx?: ProcessOptions['ctx'];
}

export interface ApplyOptions<R> {
  callback?: (value: R) => void;
  errorCallback?: (err: unknown) => void;
  signal?: AbortSignal;
}

export interface MapOptions<R = unknown> {
  chunksize?: number;
  signal?: AbortSignal;
  callback?: (value: R) => void;
  errorCallback?: (err: unknown) => void;
}

export interface ImapOptions {
  chunksize?: number;
  signal?: AbortSignal;
}

export function parseWorkerOptions(
  opts: unknown,
  countName: string,
): { processes: number; initializer: AnyFn | null; initargs: readonly unknown[]; maxTasksPerChild: number | null; ctx: ProcessOptions['ctx'] } {
  let o: Record<string, unknown>;
  if (opts === undefined || opts === null) o = {};
  else if (typeof opts === 'number') o = { [countName]: opts };
  else if (typeof opts === 'object') o = opts as Record<string, unknown>;
  else throw invalidArgType('options', 'a number or an object', opts);
  const n = o[countName];
  let processes: number;
  if (n === undefined || n === null) processes = cpuCount();
  else {
    if (typeof n !== 'number' || !Number.isInteger(n)) throw invalidArgType(countName, 'an integer', n);
    if (n < 1) throw new ValueError(`Number of processes must be at least 1`, { code: 'ERR_MP_BAD_PROCESS_COUNT' });
    processes = n;
  }
  const initializer = o.initializer ?? null;
  if (initializer !== null && typeof initializer !== 'function') throw invalidArgType('initializer', 'a function', initializer);
  const initargs = o.initargs ?? [];
  if (!Array.isArray(initargs)) throw invalidArgType('initargs', 'an array', initargs);
  const mt = o.maxTasksPerChild ?? null;
  if (mt !== null) {
    if (typeof mt !== 'number' || !Number.isInteger(mt)) throw invalidArgType('maxTasksPerChild', 'an integer', mt);
    if (mt < 1) throw new ValueError('maxTasksPerChild must be a positive integer or null', { code: 'ERR_MP_BAD_MAX_TASKS' });
  }
  return {
    processes,
    initializer: initializer as AnyFn | null,
    initargs: [...initargs],
    maxTasksPerChild: mt as number | null,
    ctx: (o.ctx ?? null) as ProcessOptions['ctx'],
  };
}

/** A sync or async iterable. */
export function isIterable(v: unknown): v is Iterable<unknown> | AsyncIterable<unknown> {
  if (v === null || (typeof v !== 'object' && typeof v !== 'function')) return false;
  return (
    typeof (v as Iterable<unknown>)[Symbol.iterator] === 'function' ||
    typeof (v as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function'
  );
}

function checkFn(fn: unknown): asserts fn is AnyFn {
  if (typeof fn !== 'function') throw invalidArgType('fn', 'a function', fn);
}

function checkSignal(signal: unknown): AbortSignal | undefined {
  if (signal === undefined) return undefined;
  if (!(signal instanceof AbortSignal)) throw invalidArgType('signal', 'an AbortSignal', signal);
  return signal;
}

function toArray(name: string, it: unknown): unknown[] {
  if (Array.isArray(it)) return it;
  if (it !== null && typeof it === 'object' && typeof (it as Iterable<unknown>)[Symbol.iterator] === 'function') {
    return Array.from(it as Iterable<unknown>);
  }
  throw invalidArgType(name, 'an iterable', it);
}

/** A pool of worker processes (CPython's multiprocessing.Pool). */
export class Pool {
  readonly #core: PoolCore;
  #closed = false;
  #terminated = false;

  constructor(processes?: number | PoolOptions) {
    const o = parseWorkerOptions(processes, 'processes');
    this.#core = new PoolCore({ ...o, onLost: 'replace' });
  }

  /** The worker pids right now: empty until the workers start (on the next event-loop turn); they change as workers are replaced. */
  get pids(): number[] {
    return this.#core.pids;
  }

  get processes(): number {
    return this.#core.processes;
  }

  #checkRunning(): void {
    if (!this.#core.running) throw new ValueError('Pool not running', { code: 'ERR_MP_POOL_NOT_RUNNING' });
  }

  /** Runs fn(...args) in a worker and resolves with its result. */
  apply<A extends unknown[], R>(fn: (...args: A) => R, args?: A, opts?: { signal?: AbortSignal }): Promise<Awaited<R>> {
    try {
      return this.applyAsync(fn, args, opts).get();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  applyAsync<A extends unknown[], R>(fn: (...args: A) => R, args?: A, opts: ApplyOptions<Awaited<R>> = {}): AsyncResult<Awaited<R>> {
    checkFn(fn);
    const a = args === undefined ? [] : args;
    if (!Array.isArray(a)) throw invalidArgType('args', 'an array', args);
    const signal = checkSignal(opts.signal);
    this.#checkRunning();
    const result = new AsyncResult<Awaited<R>>(opts.callback, opts.errorCallback);
    if (signal?.aborted) {
      result._reject(abortError(signal));
      return result;
    }
    const id = this.#core.registerFn(fn);
    this.#core.submit(new ApplyJob(this.#core, id, a, result, signal));
    return result;
  }

  /** fn over every item, results in input order. */
  map<T, R>(fn: (item: T) => R, iterable: Iterable<T>, opts?: MapOptions<Awaited<R>[]>): Promise<Awaited<R>[]> {
    try {
      return this.mapAsync(fn, iterable, opts).get();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  mapAsync<T, R>(fn: (item: T) => R, iterable: Iterable<T>, opts: MapOptions<Awaited<R>[]> = {}): AsyncResult<Awaited<R>[]> {
    return this.#mapAsync(fn as AnyFn, iterable, opts as MapOptions<never>, false) as AsyncResult<Awaited<R>[]>;
  }

  /** fn(...args) for every args array, results in input order. */
  starmap<A extends unknown[], R>(fn: (...args: A) => R, iterable: Iterable<A>, opts?: MapOptions<Awaited<R>[]>): Promise<Awaited<R>[]> {
    try {
      return this.starmapAsync(fn, iterable, opts).get();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  starmapAsync<A extends unknown[], R>(fn: (...args: A) => R, iterable: Iterable<A>, opts: MapOptions<Awaited<R>[]> = {}): AsyncResult<Awaited<R>[]> {
    return this.#mapAsync(fn as AnyFn, iterable, opts as MapOptions<never>, true) as AsyncResult<Awaited<R>[]>;
  }

  #mapAsync(fn: AnyFn, iterable: unknown, opts: MapOptions<never>, star: boolean): AsyncResult<unknown[]> {
    checkFn(fn);
    if (typeof opts !== 'object' || opts === null) throw invalidArgType('opts', 'an object', opts);
    let chunksize = checkChunksize(opts.chunksize);
    const signal = checkSignal(opts.signal);
    this.#checkRunning();
    const items = toArray('iterable', iterable);
    if (star) for (const a of items) if (!Array.isArray(a)) throw invalidArgType('iterable item', 'an array of arguments', a);
    chunksize ??= defaultChunksize(items.length, this.#core.processes);
    const result = new AsyncResult<unknown[]>(opts.callback as ((v: unknown[]) => void) | undefined, opts.errorCallback);
    if (signal?.aborted) {
      result._reject(abortError(signal));
      return result;
    }
    const id = this.#core.registerFn(fn);
    this.#core.submit(new MapJob(this.#core, id, items, chunksize, star, result, signal));
    return result;
  }

  /** Lazy, ordered map: pulls the input as workers have room (an infinite generator works). */
  imap<T, R>(fn: (item: T) => R, iterable: Iterable<T> | AsyncIterable<T>, opts: ImapOptions = {}): AsyncIterableIterator<Awaited<R>> {
    return this.#imap(fn as AnyFn, iterable, opts, true) as AsyncIterableIterator<Awaited<R>>;
  }

  /** As imap, results in completion order. */
  imapUnordered<T, R>(fn: (item: T) => R, iterable: Iterable<T> | AsyncIterable<T>, opts: ImapOptions = {}): AsyncIterableIterator<Awaited<R>> {
    return this.#imap(fn as AnyFn, iterable, opts, false) as AsyncIterableIterator<Awaited<R>>;
  }

  #imap(fn: AnyFn, iterable: unknown, opts: ImapOptions, ordered: boolean): AsyncIterableIterator<unknown> {
    checkFn(fn);
    if (typeof opts !== 'object' || opts === null) throw invalidArgType('opts', 'an object', opts);
    const chunksize = checkChunksize(opts.chunksize) ?? 1;
    const signal = checkSignal(opts.signal);
    if (!isIterable(iterable)) throw invalidArgType('iterable', 'an iterable or async iterable', iterable);
    this.#checkRunning();
    const id = this.#core.registerFn(fn);
    const job = new ImapJob<unknown>(this.#core, id, iterable, { chunksize, star: false, ordered, signal });
    if (signal?.aborted) job.fail(abortError(signal));
    else this.#core.submit(job.asJob);
    return job;
  }

  /** No new work; the workers exit when the submitted work is done. */
  close(): void {
    this.#closed = true;
    this.#core.close();
  }

  /** Stops the workers now (SIGTERM, SIGKILL after 0.5 s); pending work rejects with CancelledError. */
  async terminate(): Promise<void> {
    this.#closed = true;
    this.#terminated = true;
    await this.#core.terminate();
  }

  /** Waits for the workers to exit; call close() or terminate() first. */
  async join(): Promise<void> {
    if (!this.#closed) throw new ValueError('Pool is still running', { code: 'ERR_MP_POOL_RUNNING' });
    await this.#core.join();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.terminate();
  }

  toString(): string {
    const state = this.#terminated ? 'TERMINATE' : this.#closed ? 'CLOSE' : 'RUN';
    return `<multiproc.pool.Pool state=${state} pool_size=${this.#core.processes}>`;
  }

  [inspect.custom](): string {
    return this.toString();
  }
}

registerPoolClass('Pool', Pool);
