// Process objects: CPython's multiprocessing.process, for every start method.
import * as fs from 'node:fs';
import * as os from 'node:os';
import { inspect } from 'node:util';

import { assertNotBootstrapping } from './_bootstrap';
import { AssertionError, invalidArgType, NotReferenceableError, ValueError } from './errors';
import { installWorkerTracking } from './forksafe';
import { isFunctionRef, resolveFunctionRef, toFunctionRef, type FunctionRef } from './function_ref';
import { native } from './native';
import { installTimerGuards, onPrepareChildSupport } from './popen/child';
import type { ChildInfo, Popen, PopenFactory, ProcessObject } from './popen/types';

installWorkerTracking();
installTimerGuards();

export interface ProcessOptions {
  /**
   * Called in the child with `args`; may return a Promise, which the child awaits. Under the
   * spawn and forkserver start methods it travels by reference: a function exported by its
   * module, a `{ module, name }` reference or a 'path/to/module.js#name' string.
   */
  target?: ((...args: never[]) => unknown) | FunctionRef | string | null;
  args?: readonly unknown[];
  /** Default 'Process-N' (N counts the processes this process started; nested: 'Process-1:2'). */
  name?: string;
  /** Daemon children are terminated when this process exits and die with it. Default: inherited. */
  daemon?: boolean;
  /** A context from getContext(): its start method starts this process. */
  ctx?: { getStartMethod(): string | null } | null;
}

// ---- module state of this process (reset in each child)
// Which process this is, shared by every copy of this library loaded in the process (a package
// installed twice, or the source and the build side by side): a function of one copy that asks
// currentProcess() in a child another copy started gets the right answer.
interface ProcessState {
  current: Process | undefined;
  parent: ParentProcess | null;
}
const kState = Symbol.for('multiproc.processState');
const state = ((globalThis as Record<symbol, unknown>)[kState] ??= { current: undefined, parent: null }) as ProcessState;
const children = new Set<Process>();
let counter = 0;

/** Set by context.ts: which start method starts a Process (its ctx, or the default context). */
let popenFor: (ctx: ProcessOptions['ctx']) => PopenFactory = () => {
  throw new Error('multiproc: start methods are not registered (import the package entry point)');
};
export function setPopenResolver(fn: (ctx: ProcessOptions['ctx']) => PopenFactory): void {
  popenFor = fn;
}

const kMain = Symbol('multiproc.main');
/** Was `p` started by this very process (not inherited through a raw posix.fork())? */
let startedHere: (p: Process) => boolean;
/** In the child, on a fresh stack: `p` becomes the current process and runs (see #bootstrap). */
let bootstrapForked: (p: Process, parentSentinel: number, parentPid: number) => Promise<void>;

export class Process {
  #target: ((...args: unknown[]) => unknown) | null;
  #targetRef: FunctionRef | string | null = null;
  #args: readonly unknown[];
  #name: string;
  #daemon: boolean;
  #identity: number[];
  #parentPid: number | null;
  #popen: Popen | null = null;
  #closed = false;
  #ctx: ProcessOptions['ctx'];
  /** Child side: the process a forked copy of this object now is. */
  #isCurrent = false;

  static {
    startedHere = (p) => p.#parentPid === native.getpid();
    // Runs only in forked children, so it is written as a parenthesised function expression:
    // V8 compiles it with the class, in the parent, and every child inherits it compiled
    // (lib/popen/child.ts, prepareChildSupport).
    bootstrapForked = (async function bootstrap(p: Process, parentSentinel: number, parentPid: number): Promise<void> {
      for (const c of children) c.#popen?.close(); // the parent's other children are not ours
      children.clear();
      counter = 0;
      state.parent = new ParentProcess((state.current as Process).name, parentPid, parentSentinel);
      state.current = p;
      p.#isCurrent = true;
      p.#popen = null;
      process.on('exit', exitFunction);
      try {
        await p.run();
      } catch (err) {
        reportChildError(p.#name, err);
        process.exit(1);
      }
    });
  }

  constructor(options: ProcessOptions = {}) {
    if (typeof options !== 'object' || options === null) throw invalidArgType('options', 'of type object', options);
    const { target = null, args = [], name, daemon, ctx = null } = options;
    if (target !== null && typeof target !== 'function' && typeof target !== 'string' && !isFunctionRef(target)) {
      throw invalidArgType('target', "a function, a { module, name } reference or a 'file.js#name' string", target);
    }
    if (!Array.isArray(args)) throw invalidArgType('args', 'an array', args);
    if (name !== undefined && typeof name !== 'string') throw invalidArgType('name', 'of type string', name);
    if (daemon !== undefined && typeof daemon !== 'boolean') throw invalidArgType('daemon', 'of type boolean', daemon);
    if (typeof target === 'function') this.#target = target as (...a: unknown[]) => unknown;
    else {
      this.#target = null;
      this.#targetRef = target;
    }
    this.#args = [...args];
    this.#ctx = ctx;
    if ((options as { [kMain]?: boolean })[kMain] === true) {
      this.#identity = [];
      this.#parentPid = null;
      this.#name = 'MainProcess';
      this.#daemon = false;
      this.#isCurrent = true;
      return;
    }
    const base = state.current as Process;
    this.#identity = [...base.identity, ++counter];
    this.#parentPid = native.getpid();
    this.#name = name ?? `Process-${this.#identity.join(':')}`;
    this.#daemon = daemon ?? base.daemon;
  }

  /** The child's work; by default calls `target(...args)`. Subclasses may override it. */
  run(): unknown {
    if (this.#target !== null) return this.#target(...this.#args);
    if (this.#targetRef !== null) {
      return resolveFunctionRef(toFunctionRef(this.#targetRef, 'fork')).then((fn) => fn(...this.#args));
    }
    return undefined;
  }

  #checkClosed(): void {
    if (this.#closed) throw new ValueError('process object is closed');
  }

  /** Forks (or spawns) the child now; `pid` is known when this returns. */
  start(): void {
    this.#checkClosed();
    if (this.#popen !== null) throw new AssertionError('cannot start a process twice');
    if (this.#parentPid !== native.getpid()) {
      throw new AssertionError('can only start a process object created by current process');
    }
    if ((state.current as Process).daemon) throw new AssertionError('daemonic processes are not allowed to have children');
    assertNotBootstrapping();
    cleanup();
    const factory = popenFor(this.#ctx);
    this.#popen = factory(this.#processObject());
    children.add(this);
  }

  #processObject(): ProcessObject {
    const self = this;
    return {
      daemon: this.#daemon,
      args: this.#args,
      entry: this.#target ?? (this.run !== Process.prototype.run ? this.run : null),
      bootstrapChild: (function bootstrapChild(parentSentinel: number, parentPid: number): Promise<void> {
        return bootstrapForked(self, parentSentinel, parentPid);
      }),
      childInfo: (method: string) => self.#childInfo(method),
    };
  }

  /** What a fresh process (spawn, forkserver) needs to become this one; throws if the target cannot travel. */
  #childInfo(method: string): ChildInfo {
    if (this.run !== Process.prototype.run) {
      throw new NotReferenceableError(
        `${this.constructor.name} overrides run(), and a '${method}' child cannot rebuild a subclass instance: ` +
          'pass the work as `target` (an exported function) and its `args` instead',
      );
    }
    const target = this.#targetRef ?? this.#target;
    return {
      name: this.#name,
      identity: this.#identity,
      daemon: this.#daemon,
      parentPid: native.getpid(),
      parentName: (state.current as Process).name,
      target: target === null ? null : toFunctionRef(target, method),
    };
  }

  /** In a spawn/forkserver child: become the process described by `info` and run its target. */
  static async runChild(
    info: ChildInfo,
    target: ((...a: unknown[]) => unknown) | null,
    args: readonly unknown[],
    parentSentinel: number,
  ): Promise<void> {
    const p = new Process({ [kMain]: true } as ProcessOptions);
    p.#name = info.name;
    p.#identity = [...info.identity];
    p.#daemon = info.daemon;
    p.#target = target;
    p.#args = args;
    state.parent = new ParentProcess(info.parentName, info.parentPid, parentSentinel);
    state.current = p;
    try {
      await p.run();
    } catch (err) {
      reportChildError(p.#name, err);
      process.exit(1);
    }
  }

  /** Waits for the child to end (at most `timeout` ms). Resolves either way; check exitCode. */
  async join(timeout?: number): Promise<void> {
    this.#checkJoin(timeout);
    const code = await (this.#popen as Popen).wait(timeout);
    if (code !== null) children.delete(this);
  }

  /** Blocking twin of join(). */
  joinSync(timeout?: number): void {
    this.#checkJoin(timeout);
    const code = (this.#popen as Popen).waitSync(timeout);
    if (code !== null) children.delete(this);
  }

  #checkJoin(timeout: number | undefined): void {
    this.#checkClosed();
    if (timeout !== undefined && (typeof timeout !== 'number' || Number.isNaN(timeout))) {
      throw invalidArgType('timeout', 'of type number', timeout);
    }
    if (this.#parentPid !== native.getpid()) throw new AssertionError('can only join a child process');
    if (this.#popen === null) throw new AssertionError('can only join a started process');
  }

  isAlive(): boolean {
    this.#checkClosed();
    if (this === state.current) return true;
    if (this.#parentPid !== native.getpid()) throw new AssertionError('can only test a child process');
    if (this.#popen === null) return false;
    if (this.#popen.poll() === null) return true;
    children.delete(this);
    return false;
  }

  /** SIGTERM. */
  terminate(): void {
    this.#checkClosed();
    this.#popen?.terminate();
  }

  /** SIGKILL. */
  kill(): void {
    this.#checkClosed();
    this.#popen?.kill();
  }

  /** Releases the process object's resources (its sentinel). Idempotent; the child must have ended. */
  close(): void {
    if (this.#closed) return;
    if (this.#popen !== null) {
      if (this.#popen.poll() === null) {
        throw new ValueError(
          'Cannot close a process while it is still running. You should first call join() or terminate().',
        );
      }
      this.#popen.close();
      this.#popen = null;
    }
    children.delete(this);
    this.#closed = true;
  }

  [Symbol.dispose](): void {
    this.close();
  }

  get name(): string {
    return this.#name;
  }
  set name(v: string) {
    if (typeof v !== 'string') throw invalidArgType('name', 'of type string', v);
    this.#name = v;
  }

  get daemon(): boolean {
    return this.#daemon;
  }
  set daemon(v: boolean) {
    if (this.#popen !== null) throw new AssertionError('process has already started');
    if (typeof v !== 'boolean') throw invalidArgType('daemon', 'of type boolean', v);
    this.#daemon = v;
  }

  /** The child's pid once started (this process's pid for currentProcess()). */
  get pid(): number | undefined {
    this.#checkClosed();
    if (this.#isCurrent) return native.getpid();
    return this.#popen?.pid;
  }

  /** null while running or before start; the exit code, or -N for death by signal N. */
  get exitCode(): number | null {
    this.#checkClosed();
    if (this.#popen === null) return null;
    return this.#popen.poll();
  }

  /** An fd that becomes readable when the child ends (for select/poll-style waits). */
  get sentinel(): number {
    this.#checkClosed();
    if (this.#popen === null) throw new ValueError('process not started');
    return this.#popen.sentinel;
  }

  /** CPython's _identity: position in the process tree ([] for the main process). */
  get identity(): readonly number[] {
    return this.#identity;
  }

  toString(): string {
    let status: string;
    if (this.#isCurrent) status = 'started';
    else if (this.#closed) status = 'closed';
    else if (this.#parentPid !== native.getpid()) status = 'unknown';
    else if (this.#popen === null) status = 'initial';
    else {
      const code = this.#popen.poll();
      status = code === null ? 'started' : `stopped exitcode=${code}`;
    }
    return `<${this.constructor.name} name='${this.#name}' ${status}${this.#daemon ? ' daemon' : ''}>`;
  }

  [inspect.custom](): string {
    return this.toString();
  }
}

/** An uncaught error of a child's target: its stack on the child's stderr (the exit code is 1). */
export function reportChildError(name: string, err: unknown): void {
  try {
    fs.writeSync(2, `Process ${name}:\n${inspect(err)}\n`);
  } catch {
    // stderr closed: the exit code still tells
  }
}

/** parentProcess() in a child: enough of a Process to tell whether the parent lives. */
export class ParentProcess {
  readonly name: string;
  readonly pid: number;
  readonly #sentinel: number;

  constructor(name: string, pid: number, sentinel: number) {
    this.name = name;
    this.pid = pid;
    this.#sentinel = sentinel;
  }

  /** fd readable once the parent has ended (-1 where pidfds do not exist). */
  get sentinel(): number {
    return this.#sentinel;
  }

  isAlive(): boolean {
    // A pidfd names the parent exactly (a forkserver child's ppid is the server, not its parent).
    if (this.#sentinel >= 0) return !native.waitReadable(this.#sentinel, 0);
    // Once the parent dies we are re-parented: getppid() changes. No pid-reuse race.
    return native.getppid() === this.pid;
  }

  get exitCode(): number | null {
    return null;
  }

  /** Waits until the parent has ended, at most `timeout` ms. */
  async join(timeout?: number): Promise<void> {
    if (!this.isAlive()) return;
    const ms = timeout === undefined ? undefined : Math.max(0, timeout);
    if (this.#sentinel >= 0) {
      await new Promise<void>((resolve) => {
        let timer: NodeJS.Timeout | undefined;
        const watch = new native.FdWatch(this.#sentinel, () => done());
        const done = (): void => {
          watch.close();
          if (timer !== undefined) clearTimeout(timer);
          resolve();
        };
        if (ms !== undefined) timer = setTimeout(done, ms);
      });
      return;
    }
    const deadline = ms === undefined ? Infinity : Date.now() + ms;
    while (this.isAlive() && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, Math.max(1, Math.min(50, deadline - Date.now()))));
    }
  }

  joinSync(timeout?: number): void {
    if (this.#sentinel >= 0) {
      native.waitReadable(this.#sentinel, timeout === undefined ? -1 : Math.max(0, timeout));
      return;
    }
    const deadline = timeout === undefined ? Infinity : Date.now() + Math.max(0, timeout);
    while (this.isAlive() && Date.now() < deadline) native.waitReadable(-1, Math.min(50, deadline - Date.now()));
  }

  toString(): string {
    return `<_ParentProcess name='${this.name}' parent=${this.pid} ${this.isAlive() ? 'started' : 'stopped'}>`;
  }
}

state.current ??= new Process({ [kMain]: true } as ProcessOptions);

/** Reaps finished children (CPython's _cleanup). */
function cleanup(): void {
  for (const c of [...children]) {
    // A raw posix.fork() child inherits this set: those processes are not its children.
    if (!startedHere(c) || !c.isAlive()) children.delete(c);
  }
}

export function currentProcess(): Process {
  return state.current as Process;
}

export function parentProcess(): ParentProcess | null {
  return state.parent;
}

/** Children still running (finished ones are reaped). */
export function activeChildren(): Process[] {
  cleanup();
  return [...children];
}

export function cpuCount(): number {
  return os.cpus().length || os.availableParallelism();
}

/**
 * At exit (CPython's _exit_function): terminate daemon children, then wait for every child.
 * Non-daemon children also keep the event loop alive while they run, as in CPython.
 */
const exitFunction = (function exitFunction(): void {
  for (const c of activeChildren()) if (c.daemon) c.terminate();
  for (const c of activeChildren()) {
    try {
      c.joinSync();
    } catch {
      // closed or foreign: nothing to wait for
    }
  }
});
process.on('exit', exitFunction);

// What every fork child runs of this module, called once in the parent so that it is compiled
// there (lib/popen/child.ts, prepareChildSupport): all of it harmless here.
onPrepareChildSupport(() => {
  void new ParentProcess('MainProcess', 0, -1).name;
  void currentProcess().name;
  activeChildren();
  new Process({ [kMain]: true } as ProcessOptions).run();
});
