// multiproc/posix: the raw OS layer, with C semantics.
import * as os from 'node:os';

import { invalidArgType, invalidArgValue } from './errors';
import { assertForkSafe, installWorkerTracking, isForkSafe } from './forksafe';
import { native } from './native';
import { afterForkInChild, installTimerGuards } from './popen/child';

installWorkerTracking();
installTimerGuards();

export { isForkSafe };

export interface ForkOptions {
  /** Fork even if isForkSafe() is false (the child may hang: DESIGN.md facts 2-3). */
  unsafe?: boolean;
  /** Linux: the child gets SIGKILL when this process dies (PR_SET_PDEATHSIG). */
  dieWithParent?: boolean;
}

/**
 * fork(2): returns the child's pid in the parent and 0 in the child; the caller's code then
 * continues in BOTH processes, exactly as in C.
 *
 * Hazard: the child is a copy of the whole Node process, event loop included. Every server,
 * socket, timer, interval, watcher and listener of the parent is live in the child too — a child
 * forked from a web server will accept the parent's connections and fire its intervals, and the
 * child keeps running until its loop is empty (which inherited handles may prevent forever).
 * End the child explicitly with `exit(code)` (or `process.exit`). `Process` (start method
 * 'fork') is the safe form: its child runs only its target.
 *
 * The native part does what every forked Node child needs (DESIGN.md facts 1-5): heap made
 * inheritable, V8 platform queue repaired, loop re-created (uv_loop_fork), signals blocked across
 * the call, process.pid/ppid updated, exit without Node's thread-joining teardown.
 *
 * Throws ERR_MP_FORK_UNSAFE unless isForkSafe() or `{ unsafe: true }`; a SystemError if fork
 * fails (EAGAIN, ENOMEM).
 */
export function fork(options: ForkOptions = {}): number {
  if (typeof options !== 'object' || options === null) throw invalidArgType('options', 'of type object', options);
  if (!options.unsafe) assertForkSafe();
  const parent = native.getpid();
  const pid = native.fork(options.dieWithParent === true);
  if (pid === 0) afterForkInChild(parent);
  return pid;
}

export interface WaitResult {
  pid: number;
  /** The raw wait status. */
  status: number;
  /** Set when the process exited normally. */
  exitCode: number | null;
  /** Set when the process was killed by a signal. */
  signal: number | null;
}

function checkPid(name: string, pid: unknown): asserts pid is number {
  if (typeof pid !== 'number') throw invalidArgType(name, 'of type number', pid);
  if (!Number.isInteger(pid)) throw invalidArgValue(name, pid, 'must be an integer');
}

/**
 * waitpid(2) for one pid (`waitpid(-1)` is not offered: it would reap libuv's children).
 * Blocks until the child ends unless `noHang`, which returns null while it runs.
 */
export function waitpid(pid: number, options: { noHang?: boolean } = {}): WaitResult | null {
  checkPid('pid', pid);
  if (pid <= 0) throw invalidArgValue('pid', pid, 'must be a positive process id');
  return native.waitpid(pid, options.noHang === true);
}

/** kill(2). `signal` is a number or a name like 'SIGTERM' (default). */
export function kill(pid: number, signal: number | NodeJS.Signals = 'SIGTERM'): void {
  checkPid('pid', pid);
  let sig: number;
  if (typeof signal === 'number') {
    if (!Number.isInteger(signal) || signal < 0) throw invalidArgValue('signal', signal, 'must be a signal number');
    sig = signal;
  } else if (typeof signal === 'string') {
    const n = (os.constants.signals as Record<string, number>)[signal];
    if (n === undefined) throw invalidArgValue('signal', signal, 'is not a known signal name');
    sig = n;
  } else {
    throw invalidArgType('signal', 'of type number or string', signal);
  }
  native.kill(pid, sig);
}

/** _exit(2): ends the process at once; no 'exit' listeners, no Node teardown. */
export function exit(code = 0): never {
  if (!Number.isInteger(code)) throw invalidArgType('code', 'an integer', code);
  return native.exit(code);
}

export function getpid(): number {
  return native.getpid();
}

export function getppid(): number {
  return native.getppid();
}

/** setsid(2): new session and process group; returns the session id. */
export function setsid(): number {
  return native.setsid();
}

function checkFd(name: string, fd: unknown): asserts fd is number {
  if (typeof fd !== 'number') throw invalidArgType(name, 'of type number', fd);
  if (!Number.isInteger(fd) || fd < 0) throw invalidArgValue(name, fd, 'must be a non-negative integer');
}

/** pipe(2): [readFd, writeFd], close-on-exec (a forked child inherits them). */
export function pipe(): [number, number] {
  return native.pipe();
}

/** A connected AF_UNIX stream socket pair, close-on-exec. */
export function socketpair(): [number, number] {
  return native.socketpair();
}

export function close(fd: number): void {
  checkFd('fd', fd);
  native.close(fd);
}

/** dup2(2): returns `newFd`. */
export function dup2(oldFd: number, newFd: number): number {
  checkFd('oldFd', oldFd);
  checkFd('newFd', newFd);
  return native.dup2(oldFd, newFd);
}

// ---- shared memory and named semaphores (lib/posix_shm.ts)
export { shmOpen, shmUnlink, ftruncate, mmap, semOpen, semUnlink, NamedSemaphore } from './posix_shm';
export type { ShmOpenOptions, SemOpenOptions } from './posix_shm';
