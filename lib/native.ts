// Loads the addon (a prebuild if one matches this Node ABI, else build/Release) and gives it a
// type. Only lib/ imports this module; the public surface never exposes the native handles.
import * as fs from 'node:fs';
import * as path from 'node:path';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const load = require('node-gyp-build') as unknown;

// Platform: on win32 the addon registers only errors.cc, function.cc and native/win/*.cc
// (waitProcess, terminateProcess, shmCreate, shmAttach, shmUnlink [a no-op: a mapping dies with
// its last handle], NamedSemaphoreHandle, NamedEventHandle, semUnlink, NamedPipe); the fork,
// futex, spawn and fd-based pipe/shm/wait functions below do not exist there, and lib/ must reach
// them only behind a `process.platform !== 'win32'` check (context.ts and forksafe.ts pick spawn).

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
  /** Reserves the free part of V8's heap-hint range (Linux x64): bytes reserved, 0 if not done. */
  reserveHintRange(): number;
  /** uv_loop_alive(): whether Node would keep running after 'beforeExit'. */
  loopAlive(): boolean;
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
export interface NativeShm {
  /** shm_open(name, flags, mode) -> fd (close-on-exec). Flags from `shmFlags`. */
  shmOpen(name: string, flags: number, mode: number): number;
  shmUnlink(name: string): void;
  ftruncate(fd: number, size: number): void;
  /** MAP_SHARED read-write mapping of `fd` (-1: anonymous, inherited by fork) as a real SharedArrayBuffer. */
  mmap(fd: number, size: number, offset: number, privateMapping?: boolean): SharedArrayBuffer;
  fstatSize(fd: number): number;
  closeFd(fd: number): void;
  /** [read, write], both close-on-exec: the resource tracker's lifeline. */
  lifelinePipe(): [number, number];
  /** Linux: forks the resource tracker (native/posix/tracker.cc) reading `lifelineReadFd`; its pid. */
  startTracker?(lifelineReadFd: number): number;
  readonly shmFlags: { O_RDONLY: number; O_RDWR: number; O_CREAT: number; O_EXCL: number; O_TRUNC: number };

  /** Blocks while i32[index] === expected, at most timeoutMs (<0: no limit). 0 woken/spurious, 1 not equal, 2 timed out. */
  futexWait(i32: Int32Array, index: number, expected: number, timeoutMs: number): 0 | 1 | 2;
  /** Wakes up to `count` waiters of i32[index] in any process. */
  futexWake(i32: Int32Array, index: number, count: number): number;
  /** Sets the function the waiter thread's results are delivered to (ids of fired registrations). */
  waiterInit(callback: (ids: number[]) => void): void;
  /** Delivers `id` once i32[index] !== expected. Returns the waiter epoch (changes after fork). */
  waitAsync(i32: Int32Array, index: number, expected: number, id: number): number;
  /** true if `id` was still pending (it will not be delivered). */
  waitCancel(id: number): boolean;
  /** Epoch of the waiter thread running in this process, 0 if none. */
  waiterEpoch(): number;
  /** Is `pid` a live process? (zombies count as dead on Linux) */
  pidAlive(pid: number): boolean;
}



// ---- native/sem.cc
export interface NativeSemHandle {
  /** sem_wait / sem_timedwait: true if decremented, false on timeout (timeoutMs < 0: no limit). Blocks. */
  wait(timeoutMs: number): boolean;
  tryWait(): boolean;
  post(): void;
  getValue(): number;
  /** sem_close (idempotent). */
  close(): void;
}
export interface NativeSem {
  /** sem_open(name, flags, mode, value); flags from `shmFlags` (O_CREAT, O_EXCL). */
  NamedSemaphoreHandle: new (name: string, flags: number, mode: number, value: number) => NativeSemHandle;
  semUnlink(name: string): void;
}



// ---- native/pipe.cc
export interface NativePipe {
  /** [read, write], close-on-exec. */
  pipe(): [number, number];
  /** Connected AF_UNIX stream pair, close-on-exec. */
  socketpair(): [number, number];
  close(fd: number): void;
  dup2(oldFd: number, newFd: number): number;
  setBlocking(fd: number, blocking: boolean): void;
  /** A new close-on-exec descriptor for the same open file. */
  dup(fd: number): number;
  fdKind(fd: number): 'socket' | 'fifo' | 'other';
  /** The subset of fds readable / at EOF / in error, waiting up to timeoutMs (< 0: forever). */
  pollFds(fds: number[], timeoutMs: number): number[];
  /** Writes one CPython-framed message whose body is the chunks, with fds as SCM_RIGHTS. */
  sendFrame(fd: number, isSocket: boolean, chunks: Uint8Array[], fds?: number[]): void;
  FrameReader: new (fd: number, isSocket: boolean) => NativeFrameReader;
  /** Non-blocking send of bytes[offset..] on a socket; the bytes written now (0: buffer full). */
  writeSome(fd: number, bytes: Uint8Array, offset: number): number;
  /** Writes as much of one frame (header + chunks) as fits now, never blocking; the bytes written. */
  trySendFrame(fd: number, chunks: Uint8Array[]): number;
  /** CPython's frame header for a body of `length` bytes. */
  frameHeader(length: number): Buffer;
  Watcher: new (fd: number, callback: (events: number) => void) => NativeWatcher;
  socketListen(family: string, hostOrPath: string, port: number, backlog: number): { fd: number; address: NativeSockAddr };
  /** -1 when no connection is pending. */
  socketAccept(fd: number): number;
  socketConnect(family: string, hostOrPath: string, port: number): [number, boolean];
  socketConnectFinish(fd: number): void;
  socketName(fd: number): NativeSockAddr;
  socketShutdown(fd: number): void;
  /** memmove between typed arrays' bytes (fast for SharedArrayBuffer memory). */
  copyBytes(dst: ArrayBufferView, dstOffset: number, src: ArrayBufferView, srcOffset: number, length: number): void;
}

export type NativeSockAddr =
  | { family: 'AF_UNIX'; path: string }
  | { family: 'AF_INET' | 'AF_INET6'; host: string; port: number };

/** Reads CPython frames; Buffer = a frame, null = not yet / timed out, false = EOF, number = too long. */
export interface NativeFrameReader {
  tryRead(maxLength?: number): Buffer | null | false | number;
  readSync(timeoutMs: number, maxLength?: number): Buffer | null | false | number;
  takeFds(): number[];
  partial(): boolean;
  dispose(): void;
}

/** uv_poll on the event loop: start(1 readable | 2 writable); callback(events or -errno). */
export interface NativeWatcher {
  start(events: number): void;
  stop(): void;
  /** false: a started watcher stops keeping the event loop alive. */
  setRef(ref: boolean): void;
  close(): void;
}



// ---- native/function.cc, native/posix/spawn.cc
export interface NativeStart {
  /** Where `fn` was defined (0-based line/column), or null for builtins and bound functions. */
  functionOrigin(fn: unknown): { script: string; line: number; column: number } | null;
  /** posix_spawn(file, argv) with fdMap = [childFd, parentFd, ...] dup2'ed in the child. */
  spawnProgram(file: string, argv: string[], fdMap: number[]): number;
}

export type NativeBinding = NativeErrors & NativeFork & NativeShm & NativeSem & NativePipe & NativeStart;

// A local build is what node-gyp-build would pick first (it prefers build/Release to prebuilds);
// looking for it directly saves its directory scans, ~3 ms of every process start.
const root = path.join(__dirname, '..');
const localBuild = path.join(root, 'build', 'Release', 'multiproc.node');

/** Absolute path of the loaded addon (helper processes such as the resource tracker load it too). */
export const nativePath: string = fs.existsSync(localBuild)
  ? localBuild
  : (load as unknown as { resolve(dir: string): string }).resolve(root);

export const native: NativeBinding = require(nativePath) as NativeBinding;
