// The child side of a fork: what JavaScript must fix after native fork() returns 0.
//
// Raw posix.fork() children get only `afterForkInChild()` (C semantics: the parent's program
// continues). Process children additionally get `detachChild()`: the inherited event sources go
// quiet and the parent's JS stack unwinds, then the target runs from a fresh stack and the child
// exits when the target is done and nothing it started is left (DESIGN.md, "What a forked child
// inherits").
import { AsyncResource, createHook, executionAsyncResource, type AsyncHook } from 'node:async_hooks';
import * as fs from 'node:fs';
import { types } from 'node:util';

import { refreshPid } from '../_pid';

// Functions that run only in a child are written `const f = (function f() {...})`: V8 compiles a
// parenthesised function at load time (its "likely called" hint) instead of at its first call.
// The parent never calls them, so with lazy compilation every child would parse and compile them
// afresh, allocating bytecode on pages it shares with the parent (copy-on-write faults). Compiled
// in the parent, they are inherited ready to run: ~0.2 ms less CPU per Process child here.
import { native } from '../native';

// ---- timers and immediates: ownership by process
//
// Node keeps JS timers in module-private lists driven by one uv timer, so a child cannot list
// the timers it inherited. Instead, from the moment this library loads, every Timeout and
// Immediate records which process created it: the constructors assign `_onTimeout` /
// `_onImmediate`, which we turn into accessors on the prototypes. In another process the getter
// answers "cleared" for a Timeout (Node's list code then drops it and fixes its ref count) and a
// no-op for an Immediate. Timers created before this library was loaded are not covered (the
// `multiproc` bin preloads the library so that none are).

/** Identity of the current process for timer ownership; replaced in each Process child. */
let owner: object = {};
/** In a Process child: the timers/immediates it created, to decide its natural exit. */
let childTimers: Set<object> | null = null;
let refedSymbol: symbol | undefined;
const kOwner = Symbol('multiproc.owner');
const kCallback = Symbol('multiproc.callback');
const noop = (): void => {};

type Owned = Record<symbol, unknown> & { _destroyed?: boolean };

function noteChildTimer(t: object): void {
  const set = childTimers;
  if (set === null) return;
  set.add(t);
  if (set.size > 4096) {
    for (const x of set) if ((x as Owned)._destroyed) set.delete(x);
  }
}

function guard(proto: object, prop: string, foreign: () => unknown): void {
  const existing = Object.getOwnPropertyDescriptor(proto, prop);
  if (existing !== undefined) return; // already installed (library loaded twice)
  Object.defineProperty(proto, prop, {
    configurable: true,
    enumerable: false,
    get(this: Owned) {
      return this[kOwner] === owner ? this[kCallback] : foreign();
    },
    set(this: Owned, v: unknown) {
      if (this[kOwner] !== owner) {
        this[kOwner] = owner;
        noteChildTimer(this);
      }
      this[kCallback] = v;
    },
  });
}

let guardsInstalled = false;
export function installTimerGuards(): void {
  if (guardsInstalled) return;
  guardsInstalled = true;
  const t = setTimeout(noop, 0);
  const i = setImmediate(noop);
  clearTimeout(t);
  clearImmediate(i);
  refedSymbol = Object.getOwnPropertySymbols(t).find((s) => s.description === 'refed');
  guard(Object.getPrototypeOf(t) as object, '_onTimeout', () => undefined);
  guard(Object.getPrototypeOf(i) as object, '_onImmediate', () => noop);
}

/** Timers/immediates created by this child that are pending and keep the process alive. */
const childTimersAlive = (function childTimersAlive(): boolean {
  if (childTimers === null) return false;
  for (const t of childTimers) {
    const o = t as Owned;
    if (o._destroyed) {
      childTimers.delete(t);
      continue;
    }
    if (refedSymbol === undefined || o[refedSymbol] === true) return true;
  }
  return false;
});

// ---- every forked child

/**
 * First thing after fork() in any child: the process identity (process.pid/ppid are values
 * captured at startup) and an exit that does not run Node's teardown (which would join threads
 * that do not exist here). process.exit() and fatal errors already end in the native exit
 * handler installed by fork; the natural end is caught at 'beforeExit': once its listeners ran
 * and the loop is still empty, Node would emit 'exit' and tear down, so we do the 'exit' part
 * and _exit.
 */
export const afterForkInChild = (function afterForkInChild(parentPid: number): void {
  const pid = native.getpid();
  Object.defineProperty(process, 'pid', { value: pid, writable: false, configurable: true, enumerable: true });
  Object.defineProperty(process, 'ppid', { value: parentPid, writable: true, configurable: true, enumerable: true });
  refreshPid(); // the locks' cached pid (lib/_pid.ts)
  exitAtNaturalEnd();
});

/** Once 'beforeExit' listeners ran and the loop is still empty: 'exit', then _exit (no teardown). */
const exitAtNaturalEnd = (function exitAtNaturalEnd(): void {
  const emit = process.emit;
  process.emit = (function emitThenExit(this: NodeJS.Process, event: string | symbol, ...args: unknown[]): boolean {
    const r = (emit as (e: string | symbol, ...a: unknown[]) => boolean).call(this, event, ...args);
    if (event === 'beforeExit' && !native.loopAlive()) exitChild();
    return r;
  }) as typeof process.emit;
});

// ---- Process children

const PARENT_EVENTS = [
  'exit',
  'beforeExit',
  'uncaughtException',
  'uncaughtExceptionMonitor',
  'unhandledRejection',
  'rejectionHandled',
  'message',
  'disconnect',
];

// Not a regular expression: V8 runs a new one interpreted and compiles it to machine code at its
// next use, which would be in every child.
const isSignalEvent = (function isSignalEvent(ev: string): boolean {
  if (ev.length < 4 || !ev.startsWith('SIG')) return false;
  for (let i = 3; i < ev.length; i++) {
    const c = ev.charCodeAt(i);
    if (!((c >= 65 && c <= 90) || (c >= 48 && c <= 57))) return false;
  }
  return true;
});

/** Listeners the parent installed must not fire in the child. */
const dropParentListeners = (function dropParentListeners(): void {
  for (const ev of process.eventNames()) {
    if (typeof ev !== 'string') continue;
    if (PARENT_EVENTS.includes(ev) || isSignalEvent(ev)) process.removeAllListeners(ev);
  }
  // Also the capture callback (domains, test runners) that would swallow the child's errors.
  if (process.hasUncaughtExceptionCaptureCallback()) process.setUncaughtExceptionCaptureCallback(null);
});

interface AsyncWrapBinding {
  clearAsyncIdStack(): void;
  async_id_fields: Float64Array;
  constants: { kAsyncIdCounter: number };
}

let asyncWrapBinding: AsyncWrapBinding | undefined;
function asyncWrap(): AsyncWrapBinding {
  if (asyncWrapBinding !== undefined) return asyncWrapBinding;
  // process.binding('async_wrap') is the only way to reach these; silence its deprecation notice.
  const quiet = process.noDeprecation;
  process.noDeprecation = true;
  try {
    asyncWrapBinding = (process as unknown as { binding(name: string): AsyncWrapBinding }).binding('async_wrap');
    return asyncWrapBinding;
  } finally {
    process.noDeprecation = quiet;
  }
}

/**
 * process.nextTick callbacks the parent queued before forking would run in the child right after
 * the unwinding (Node drains them when the interrupted callback's scope closes). The child drops
 * them from Node's tick queue (findTickQueue) before that. Where the queue cannot be found, the
 * tick muter does it: every tick has an async id, and ids only grow, so those at or below the
 * counter at fork are the parent's; until the bootstrap starts, a `before` hook turns those into
 * no-ops (processTicksAndRejections reads `tock.callback` after the hook). The muter costs
 * more: 40-100 µs of a trivial child's start+join (interleaved pairs), and an async hook once
 * enabled leaves V8's promises off their fast paths for good (an await loop 36 -> 48 ms).
 */
let lastParentTickId = 0;
let tickMuter: AsyncHook | undefined;
function muteParentTicks(lastParentId: number): AsyncHook {
  lastParentTickId = lastParentId;
  // Created once (in the parent, at first fork) so that the child only flips it on.
  tickMuter ??= createHook({
    before: (function before(asyncId: number): void {
      if (asyncId > lastParentTickId) return;
      const r = executionAsyncResource() as { callback?: unknown; args?: unknown } | undefined;
      if (r !== undefined && typeof r.callback === 'function' && 'args' in r) r.callback = noop;
    }),
  });
  return tickMuter.enable();
}

interface TickQueue {
  isEmpty(): boolean;
  shift(): unknown;
}

/**
 * Node's queue of process.nextTick callbacks: a FixedQueue held by the closure of Node's own
 * process.nextTick (node:internal/process/task_queues), reached once, in the parent, through an
 * in-process inspector session (~2 ms). null if process.nextTick is not Node's own (replaced by
 * some tool), there is no inspector, or the closure has changed shape in this Node version.
 */
let tickQueue: TickQueue | null | undefined;
function findTickQueue(): TickQueue | null {
  const nextTick = process.nextTick as unknown;
  if (typeof nextTick !== 'function' || !String(nextTick).includes('queue.push(tickObject)')) return null;
  let session: import('node:inspector').Session | undefined;
  const holder = { nextTick, queue: undefined as unknown };
  const key = `__multiprocTickQueue${process.pid}`;
  (globalThis as Record<string, unknown>)[key] = holder;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { Session } = require('node:inspector') as typeof import('node:inspector');
    session = new Session();
    session.connect();
    const s = session;
    // An in-process session answers synchronously.
    const post = <T>(method: string, params: object): T => {
      let out: { err: Error | null; res?: T } | undefined;
      s.post(method, params, (err, res) => (out = { err, res: res as T }));
      if (out === undefined || out.err !== null) throw out?.err ?? new Error(`${method}: no answer`);
      return out.res as T;
    };
    type Prop = { name: string; value?: { objectId?: string } };
    type Props = { result: Prop[]; internalProperties?: Prop[] };
    const fn = post<{ result: { objectId?: string } }>('Runtime.evaluate', { expression: `globalThis.${key}.nextTick` });
    const scopes = post<Props>('Runtime.getProperties', { objectId: fn.result.objectId, ownProperties: false });
    const scopeList = scopes.internalProperties?.find((p) => p.name === '[[Scopes]]')?.value?.objectId;
    if (scopeList === undefined) return null;
    for (const scope of post<Props>('Runtime.getProperties', { objectId: scopeList, ownProperties: true }).result) {
      const vars = post<Props>('Runtime.getProperties', { objectId: scope.value?.objectId, ownProperties: true });
      const q = vars.result.find((v) => v.name === 'queue')?.value?.objectId;
      if (q === undefined) continue;
      post('Runtime.callFunctionOn', { objectId: q, functionDeclaration: `function () { globalThis.${key}.queue = this; }` });
      break;
    }
    const q = holder.queue as Partial<TickQueue> | undefined;
    const ok = q?.constructor?.name === 'FixedQueue' && typeof q.isEmpty === 'function' && typeof q.shift === 'function';
    if (!ok) return null;
    // Every child drains the queue (shift) and a target's process.nextTick pushes to it (isEmpty,
    // push). A parent that never queued a tick has compiled none of these, and compiling them in
    // each child was a quarter of a trivial child's CPU (perf). Run here, on a spare queue.
    const spare = new (q.constructor as new () => TickQueue & { push(x: unknown): void })();
    spare.isEmpty();
    spare.push(spare);
    spare.shift();
    spare.shift();
    return q as TickQueue;
  } catch {
    return null; // no inspector in this build, or the shape differs: the tick muter does it
  } finally {
    session?.disconnect();
    delete (globalThis as Record<string, unknown>)[key];
  }
}

/** Tests: was Node's tick queue found (no async hook needed at fork)? undefined before the first fork. */
export function _tickQueueFound(): boolean | undefined {
  return tickQueue === undefined ? undefined : tickQueue !== null;
}

let foundQueue: TickQueue | null | undefined;
/** Tests: forks from now on use the tick muter (false) or the queue found (true). */
export function _useTickQueueForTests(use: boolean): void {
  prepareChildSupport();
  foundQueue ??= tickQueue ?? null;
  tickQueue = use ? foundQueue : null;
}

/**
 * The IPC channel of a parent started by child_process.fork (e.g. a vitest worker) must never be
 * read or written by this child: its watcher is already disarmed; here process.send becomes a
 * no-op and the descriptor is pointed at /dev/null so that nothing can reach the parent's peer.
 */
const cutIpcChannel = (function cutIpcChannel(): void {
  const channel = (process as { channel?: { fd?: number } }).channel;
  if (channel === undefined) return;
  const fd = channel.fd;
  if (typeof fd === 'number' && fd > 2) {
    const nul = fs.openSync('/dev/null', 'r+');
    try {
      native.dup2(nul, fd);
    } finally {
      fs.closeSync(nul);
    }
  }
  process.send = (() => false) as typeof process.send;
  process.disconnect = noop;
});

const exitCodeNow = (function exitCodeNow(): number {
  const c = process.exitCode;
  return typeof c === 'number' ? c : typeof c === 'string' && c !== '' ? Number(c) : 0;
});

/**
 * Node's process.exit, restated for the child: test frameworks replace process.exit in their
 * workers (vitest makes it throw), and a child is not the test runner. 'exit' listeners run, then
 * _exit (the emit wrapper from afterForkInChild).
 */
const exitChild = (function exitChild(code?: number | string | null): never {
  if (code !== undefined && code !== null) process.exitCode = code;
  const p = process as { _exiting?: boolean };
  if (!p._exiting) {
    p._exiting = true;
    process.emit('exit', exitCodeNow());
  }
  return native.exit(exitCodeNow());
});

/**
 * A spawn/forkserver child ends like a fork child: its 'exit' listeners run, then _exit. Node's
 * own teardown (environment, isolate, platform) costs ~10 ms per child here and does nothing a
 * child needs: stdout and stderr are synchronous on files, pipes and terminals.
 */
export function installFastExit(): void {
  process.exit = exitChild as typeof process.exit;
  exitAtNaturalEnd();
}

/**
 * In the parent, before forking: what the child will need, made ready while it is cheap. Work
 * done here once is inherited by every child; work left to the child is paid again in each one,
 * and at a premium: its first writes to memory shared with the parent are copy-on-write faults.
 */
let childSupportReady = false;
const warmups: Array<() => void> = [];

/** Modules with child-only code register a harmless call of it here (see prepareChildSupport). */
export function onPrepareChildSupport(warm: () => void): void {
  warmups.push(warm);
}

export function prepareChildSupport(): void {
  if (childSupportReady) return;
  childSupportReady = true;
  asyncWrap();
  refreshPid();
  tickQueue = findTickQueue();
  // V8 compiles a function at its first call. The Node functions every child calls while it
  // detaches (listener removal, the capture-callback check, process.exitCode, the async-hook
  // trampoline that runs the tick muter's `before`) are called here once, harmlessly, so that
  // they are compiled in the parent and inherited: compiled in each child they cost it ~1/3 of
  // its CPU (parsing plus the copy-on-write faults of the new bytecode; measured with perf).
  const ev = Symbol('multiproc.warmup');
  const a = (): void => {};
  const b = (): void => {};
  process.on(ev, a);
  process.on(ev, b);
  process.removeListener(ev, b);
  process.removeAllListeners(ev);
  process.eventNames();
  process.hasUncaughtExceptionCaptureCallback();
  // eslint-disable-next-line no-self-assign
  process.exitCode = process.exitCode;
  void (process as { _exiting?: boolean })._exiting;
  // Only where the tick queue is out of reach: the tick muter's `before` (lastParentTickId 0
  // makes it a no-op here), run once through Node's hook dispatch by a synchronous async scope,
  // then off again. (Enabling an async hook also switches V8's promises off their fast paths for
  // good, in this process and its children: not done when it is not needed.)
  if (tickQueue === null) {
    executionAsyncResource();
    const ticks = muteParentTicks(0);
    try {
      new AsyncResource('multiproc.warmup').runInAsyncScope(noop);
    } finally {
      ticks.disable();
    }
  }
  for (const warm of warmups) warm();
}

/**
 * V8 compiles a function at its first call, so a target the parent never calls is compiled in
 * every child: for a trivial one, 75 µs of a 1.9 ms start+join here (10 interleaved pairs), plus the
 * copy-on-write faults of its bytecode. Compiled here, once, every child inherits it. Node has no
 * API to compile a function without running it; V8's %EnsureFeedbackVectorForFunction does exactly
 * that (bytecode and feedback vector, nothing runs, errors are swallowed), reached by allowing
 * natives syntax for the one `new Function` that names it. Only plain JS functions may go there:
 * a bound function, a proxy or a builtin would crash V8 (they all print as "[native code]").
 */
let ensureCompiled: ((fn: unknown) => void) | null | undefined;

function makeEnsureCompiled(): ((fn: unknown) => void) | null {
  const major = Number(process.versions.node.split('.')[0]);
  if (major < 18 || major > 22) return null; // the versions whose V8 this was read against
  const body = '%EnsureFeedbackVectorForFunction(fn)';
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const v8 = require('node:v8') as typeof import('node:v8');
  let alreadyOn = true;
  try {
    new Function('fn', body);
  } catch {
    alreadyOn = false; // as normal: `%` is the remainder operator
  }
  try {
    if (!alreadyOn) v8.setFlagsFromString('--allow-natives-syntax');
    return new Function('fn', body) as (fn: unknown) => void;
  } catch {
    return null; // no such runtime function, or code generation from strings is disallowed
  } finally {
    if (!alreadyOn) v8.setFlagsFromString('--no-allow-natives-syntax');
  }
}

/** Compiles `fn` (if a plain JS function not yet compiled) so that forked children inherit it. */
export function compileForChildren(fn: unknown): void {
  if (typeof fn !== 'function') return;
  ensureCompiled ??= makeEnsureCompiled();
  if (ensureCompiled === null || types.isProxy(fn)) return;
  // V8 prints every function without JS source as "function name() { [native code] }".
  if (Function.prototype.toString.call(fn).endsWith('{ [native code] }')) return;
  ensureCompiled(fn);
}

/**
 * In a Process child right after fork(): never returns. The parent's JS stack unwinds (V8
 * terminate), then `run()` (which runs the target and reports its errors) starts on the next
 * loop turn; the child exits once it has settled and nothing the child started is pending.
 */
export const detachChild = (function detachChild(keepFds: number[], run: () => Promise<void>): never {
  owner = {};
  childTimers = new Set();
  let settled = false;
  const aw = asyncWrap();
  let ticks: AsyncHook | null = null;
  if (tickQueue) {
    while (tickQueue.shift() !== null) {
      // the parent's: dropped
    }
  } else {
    ticks = muteParentTicks(aw.async_id_fields[aw.constants.kAsyncIdCounter]);
  }
  const bootstrap = (function bootstrap(): void {
    ticks?.disable();
    cutIpcChannel();
    process.exit = exitChild as typeof process.exit;
    process.exitCode = undefined;
    const done = (function done(): void {
      // run() reports its own errors and exits: settled either way.
      settled = true;
    });
    run().then(done, done);
  });
  const onIdle = (function onIdle(phase: number): boolean {
    if (!settled || childTimersAlive()) return false;
    if (phase === 0) {
      process.emit('beforeExit', exitCodeNow());
      return true;
    }
    process.exit();
  });
  // The unwinding skips the async-context pops of the callbacks on the stack (a timer's, an HTTP
  // request's): Node would then find its async-id stack corrupted and abort. Start it empty.
  aw.clearAsyncIdStack();
  // Before the loop can turn again: a signal arriving now must not reach the parent's listeners
  // (removing them closes their uv signal handles and restores the default dispositions).
  dropParentListeners();
  native.childDetach(keepFds, bootstrap, onIdle);
  // V8 was asked to terminate: this loop's first back-edge check unwinds the whole stack.
  for (;;) {
    /* unreachable once the termination lands */
  }
});
