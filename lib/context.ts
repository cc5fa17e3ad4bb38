// Start methods and contexts: CPython's multiprocessing.context.
import { MultiprocError, RuntimeError, ValueError, invalidArgType } from './errors';
import { isForkSafe } from './forksafe';
import { bootstrap } from './_bootstrap';
import { lockNotedFor, noteContext, setDefaultMethodReader } from './_spawning';
import { Pipe, type Connection } from './connection';
import { JoinableQueue, Queue, SimpleQueue, type QueueOptions } from './queues';
import { SharedMemory, type SharedMemoryOptions } from './shared_memory';
import type { Pool, PoolOptions } from './pool';
import type { ProcessPoolExecutor, ProcessPoolExecutorOptions } from './executor';
import { forkPopen } from './popen/fork';
import { forkserverPopen, setForkserverPreload } from './popen/forkserver';
import { setExecutable, spawnPopen } from './popen/spawn';
import { setStartMethodHooks } from './popen/start';
import type { PopenFactory } from './popen/types';
import {
  RawArray,
  RawValue,
  SharedArray,
  Value,
  type LockOption,
  type SharedValue,
  type SynchronizedArray,
  type SynchronizedValue,
  type TypedArrayOf,
  type Typecode,
  type ValueOf,
} from './sharedctypes';
import { Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore, type BarrierOptions } from './synchronize';
import {
  activeChildren,
  cpuCount,
  currentProcess,
  parentProcess,
  Process,
  setPopenResolver,
  type ProcessOptions,
} from './process';

export type StartMethod = 'fork' | 'forkserver' | 'spawn';

const METHODS: readonly StartMethod[] = ['fork', 'forkserver', 'spawn'];

const factories = new Map<StartMethod, PopenFactory>([
  ['fork', forkPopen],
  ['forkserver', forkserverPopen],
  ['spawn', spawnPopen],
]);

/** @internal For the forkserver and spawn start methods to plug themselves in. */
export function registerStartMethod(method: StartMethod, factory: PopenFactory): void {
  factories.set(method, factory);
}

function factoryFor(method: StartMethod): PopenFactory {
  const f = factories.get(method);
  if (f === undefined) {
    throw new MultiprocError(
      `the '${method}' start method is not available yet in this version of multiproc; ` +
        "use 'fork' (run the program with `npx multiproc app.js` to make it fork-safe)",
      'ERR_MP_START_METHOD_UNAVAILABLE',
    );
  }
  return f;
}

const poolClasses = new Map<string, unknown>();
/** @internal lib/pool.ts and lib/executor.ts make themselves available to contexts. */
export function registerPoolClass(name: 'Pool' | 'ProcessPoolExecutor', cls: unknown): void {
  poolClasses.set(name, cls);
}
function poolClass(name: string): unknown {
  const c = poolClasses.get(name);
  if (c === undefined) throw new MultiprocError(`${name} is not loaded (import it from 'multiproc')`, 'ERR_MP_NOT_LOADED');
  return c;
}

/** Bun and Deno run Node programs without libuv or Node's C++ API: only spawn can work there. */
function foreignRuntime(): boolean {
  const g = globalThis as { Bun?: unknown; Deno?: unknown };
  return g.Bun !== undefined || g.Deno !== undefined;
}

/**
 * The default start method (DESIGN.md): fork when this process can fork safely (run with
 * `npx multiproc`, or node --single-threaded, and no Worker), else forkserver on Linux/macOS,
 * spawn on Windows and on runtimes without libuv.
 */
function defaultMethod(): StartMethod {
  if (process.platform === 'win32' || foreignRuntime()) return 'spawn';
  return isForkSafe() ? 'fork' : 'forkserver';
}

function checkMethod(method: unknown): asserts method is StartMethod {
  if (typeof method !== 'string') throw invalidArgType('method', 'of type string', method);
  if (!METHODS.includes(method as StartMethod)) throw new ValueError(`cannot find context for '${method}'`);
}

/** Everything a context offers; the module-level functions are those of the default context. */
export abstract class BaseContext {
  #ProcessClass: typeof Process | undefined;

  abstract getStartMethod(options?: { allowNone?: boolean }): StartMethod | null;
  abstract setStartMethod(method: StartMethod | null, options?: { force?: boolean }): void;

  /** Process bound to this context (its start method starts it). */
  get Process(): typeof Process {
    if (this.#ProcessClass === undefined) {
      const ctx = this;
      this.#ProcessClass = class extends Process {
        constructor(options: ProcessOptions = {}) {
          super({ ...options, ctx: options.ctx ?? ctx });
        }
      };
      Object.defineProperty(this.#ProcessClass, 'name', { value: 'Process' });
    }
    return this.#ProcessClass;
  }

  // ---- synchronization, shared ctypes and queues (lib/synchronize.ts, lib/sharedctypes.ts,
  // lib/queues.ts). The objects live in shared memory and can be reopened by name; each records
  // the start method of the context that made it (a fork-context one cannot go to a spawn child).
  // A lock the caller passed in (ctx.Condition(lock), ctx.Value(..., { lock })) keeps its own context.
  #made<O extends object>(obj: O, given?: unknown): O {
    const method = this.getStartMethod();
    noteContext(obj, method);
    const lock = lockNotedFor(obj);
    if (lock !== undefined && lock !== given) noteContext(lock, method);
    return obj;
  }
  Lock(): Lock {
    return this.#made(new Lock());
  }
  RLock(): RLock {
    return this.#made(new RLock());
  }
  Semaphore(value?: number): Semaphore {
    return this.#made(new Semaphore(value));
  }
  BoundedSemaphore(value?: number): BoundedSemaphore {
    return this.#made(new BoundedSemaphore(value));
  }
  Event(): Event {
    return this.#made(new Event());
  }
  Condition(lock?: Lock | RLock): Condition {
    return this.#made(new Condition(lock), lock);
  }
  Barrier(parties: number, options?: BarrierOptions): Barrier {
    return this.#made(new Barrier(parties, options));
  }
  Value<T extends Typecode>(typecode: T, initial?: ValueOf<T> | number | bigint, options?: LockOption): SynchronizedValue<T> | SharedValue<T> {
    return this.#made(Value(typecode, initial, options), options?.lock);
  }
  Array<T extends Typecode>(
    typecode: T,
    sizeOrInit: number | Iterable<ValueOf<T> | number | bigint> | string,
    options?: LockOption,
  ): SynchronizedArray<T> | TypedArrayOf<T> {
    return this.#made(SharedArray(typecode, sizeOrInit, options), options?.lock);
  }
  Queue<T = unknown>(maxsize?: number, options?: QueueOptions): Queue<T> {
    return this.#made(new Queue<T>(maxsize, options));
  }
  JoinableQueue<T = unknown>(maxsize?: number, options?: QueueOptions): JoinableQueue<T> {
    return this.#made(new JoinableQueue<T>(maxsize, options));
  }
  SimpleQueue<T = unknown>(options?: QueueOptions): SimpleQueue<T> {
    return this.#made(new SimpleQueue<T>(options));
  }
  Pipe<T = unknown>(options?: { duplex?: boolean }): [Connection<T>, Connection<T>] {
    return Pipe<T>(options);
  }
  /** A SharedMemory block (not bound to a context, as in CPython: any child may receive it). */
  SharedMemory(options?: SharedMemoryOptions): SharedMemory {
    return new SharedMemory(options);
  }

  // ---- pools (CPython's ctx.Pool()). lib/pool.ts and lib/executor.ts import this module, so they
  // register their classes here when they load (the package entry loads both).
  Pool(processes?: number | PoolOptions): Pool {
    const o: PoolOptions = typeof processes === 'object' && processes !== null ? processes : { processes };
    return new (poolClass('Pool') as typeof Pool)({ ...o, ctx: this });
  }
  ProcessPoolExecutor(options: ProcessPoolExecutorOptions = {}): ProcessPoolExecutor {
    return new (poolClass('ProcessPoolExecutor') as typeof ProcessPoolExecutor)({ ...options, ctx: this });
  }
  RawValue<T extends Typecode>(typecode: T, initial?: ValueOf<T> | number | bigint): SharedValue<T> {
    return RawValue(typecode, initial);
  }
  RawArray<T extends Typecode>(typecode: T, sizeOrInit: number | Iterable<ValueOf<T> | number | bigint> | string): TypedArrayOf<T> {
    return RawArray(typecode, sizeOrInit);
  }

  getContext(method?: StartMethod | null): Context {
    if (method === undefined || method === null) return defaultContext.getContext();
    checkMethod(method);
    return concrete[method];
  }

  getAllStartMethods(): StartMethod[] {
    if (process.platform === 'win32' || foreignRuntime()) return ['spawn'];
    const first = defaultMethod();
    return [first, ...METHODS.filter((m) => m !== first)];
  }

  cpuCount(): number {
    return cpuCount();
  }
  activeChildren(): Process[] {
    return activeChildren();
  }
  currentProcess(): Process {
    return currentProcess();
  }
  parentProcess(): ReturnType<typeof parentProcess> {
    return parentProcess();
  }
  isForkSafe(): boolean {
    return isForkSafe();
  }
  /** False in a spawn/forkserver child (its copy of the main module must not start processes again). */
  isMainProcess(): boolean {
    return !bootstrap.spawnedChild;
  }
  setExecutable(file: string): void {
    setExecutable(file);
  }
  setForkserverPreload(modules: readonly string[]): void {
    setForkserverPreload(modules);
  }
}

/** A context with a fixed start method (getContext('fork')). */
export class Context extends BaseContext {
  readonly method: StartMethod;
  constructor(method: StartMethod) {
    super();
    this.method = method;
  }
  override getStartMethod(): StartMethod {
    return this.method;
  }
  override setStartMethod(_method?: StartMethod | null, _options?: { force?: boolean }): void {
    throw new ValueError('cannot set start method of concrete context');
  }
  override getContext(method?: StartMethod | null): Context {
    if (method === undefined || method === null) return this;
    return super.getContext(method);
  }
}

/** The module-level context: its start method is chosen once (setStartMethod) or defaulted. */
export class DefaultContext extends BaseContext {
  #actual: Context | null = null;

  override getContext(method?: StartMethod | null): Context {
    if (method === undefined || method === null) {
      if (this.#actual === null) this.#actual = concrete[defaultMethod()];
      return this.#actual;
    }
    return super.getContext(method);
  }

  override setStartMethod(method: StartMethod | null, options: { force?: boolean } = {}): void {
    if (this.#actual !== null && !options.force) throw new RuntimeError('context has already been set');
    if (method === null && options.force) {
      this.#actual = null;
      return;
    }
    checkMethod(method);
    this.#actual = concrete[method];
  }

  override getStartMethod(options: { allowNone?: boolean } = {}): StartMethod | null {
    if (this.#actual === null) {
      if (options.allowNone) return null;
      this.#actual = concrete[defaultMethod()];
    }
    return this.#actual.method;
  }
}

const concrete: Record<StartMethod, Context> = {
  fork: new Context('fork'),
  forkserver: new Context('forkserver'),
  spawn: new Context('spawn'),
};

export const defaultContext = new DefaultContext();

setDefaultMethodReader(() => defaultContext.getStartMethod());

setStartMethodHooks(
  () => defaultContext.getStartMethod({ allowNone: true }),
  (m) => {
    // The parent's method, as CPython's spawn children take it, unless this process cannot use
    // it (fork, in a child started without --single-threaded): then its own default applies.
    if (!METHODS.includes(m as StartMethod) || (m === 'fork' && !isForkSafe())) return;
    defaultContext.setStartMethod(m as StartMethod, { force: true });
  },
);

setPopenResolver((ctx) => {
  const method = ctx?.getStartMethod() ?? defaultContext.getStartMethod();
  return factoryFor(method as StartMethod);
});

// Module-level functions (those of the default context).
export const getContext = (method?: StartMethod | null): Context => defaultContext.getContext(method);
export const setStartMethod = (method: StartMethod | null, options?: { force?: boolean }): void =>
  defaultContext.setStartMethod(method, options);
export const getStartMethod = (options?: { allowNone?: boolean }): StartMethod | null =>
  defaultContext.getStartMethod(options);
export const getAllStartMethods = (): StartMethod[] => defaultContext.getAllStartMethods();
export const isMainProcess = (): boolean => defaultContext.isMainProcess();
export { setExecutable, setForkserverPreload };
export { isForkSafe };
