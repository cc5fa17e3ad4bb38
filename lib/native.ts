// Loads the addon (a prebuild if one matches this Node ABI, else build/Release) and gives it a
// type. Only lib/ imports this module; the public surface never exposes the native handles.
import * as path from 'node:path';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const load = require('node-gyp-build') as (dir: string) => unknown;

// ---- native/errors.cc
export interface NativeErrors {
  /** Node's SystemError shape for a raw errno (positive or negative). */
  errnoError(errno: number, syscall: string, path?: string): Error & NodeJS.ErrnoException;
}

// ---- native/fork.cc, native/wait.cc
export interface ForkProbe {
  /** The V8 platform task queue was located and passed its sanity checks. */
  queue: boolean;
  /** Why not, when `queue` is false. */
  queueProblem: string;
  /** Other threads sitting in epoll_wait (Node's delayed-task scheduler is 1; -1 unknown). */
  loopThreads: number;
}
export interface WaitStatus {
  pid: number;
  status: number;
  exitCode: number | null;
  signal: number | null;
}
export interface FdWatchHandle {
  close(): void;
  ref(): void;
  unref(): void;
}
export interface NativeFork {
  forkProbe(): ForkProbe;
  /** fork() with the child-side fix-ups; 0 in the child. */
  fork(deathSignal: boolean): number;
  /** Process children only: quiet the inherited loop, schedule `bootstrap`, unwind the JS stack. */
  childDetach(keepFds: number[], bootstrap: () => void, onIdle: (phase: number) => boolean): void;
  getpid(): number;
  getppid(): number;
  setsid(): number;
  exit(code: number): never;
  waitpid(pid: number, noHang: boolean): WaitStatus | null;
  kill(pid: number, signal: number): void;
  /** -1 where pidfds do not exist. */
  pidfdOpen(pid: number): number;
  /** Blocks until `fd` is readable (true) or `timeoutMs` passed (false); -1 waits forever. */
  waitReadable(fd: number, timeoutMs: number): boolean;
  FdWatch: new (fd: number, callback: () => void) => FdWatchHandle;
}



// ---- native/shm.cc, native/futex.cc
export interface NativeShm {}



// ---- native/sem.cc
export interface NativeSem {}



// ---- native/pipe.cc
export interface NativePipe {
  /** [read, write], close-on-exec. */
  pipe(): [number, number];
  /** Connected AF_UNIX stream pair, close-on-exec. */
  socketpair(): [number, number];
  close(fd: number): void;
  dup2(oldFd: number, newFd: number): number;
  setBlocking(fd: number, blocking: boolean): void;
}



export type NativeBinding = NativeErrors & NativeFork & NativeShm & NativeSem & NativePipe;

export const native: NativeBinding = load(path.join(__dirname, '..')) as NativeBinding;
