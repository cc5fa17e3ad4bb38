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
export interface NativeFork {}



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
