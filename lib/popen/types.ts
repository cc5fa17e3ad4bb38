import type { FunctionRef } from '../function_ref';
// What a start method gives Process: a handle on one started child (CPython's Popen objects).
// popen/fork.ts implements it; forkserver and spawn will implement the same interface.

export interface Popen {
  readonly method: string;
  readonly pid: number;
  /** An fd that becomes readable when the child ends (pidfd on Linux, else a pipe). */
  readonly sentinel: number;
  /** Exit code (-N for signal N) once reaped, else null. Reaps without blocking. */
  poll(): number | null;
  /** Resolves with the exit code when the child ends, or null after `timeoutMs`. */
  wait(timeoutMs?: number): Promise<number | null>;
  /** Blocking twin of wait(). */
  waitSync(timeoutMs?: number): number | null;
  /** Whether the event loop is kept alive until the child ends. */
  setRef(ref: boolean): void;
  terminate(): void;
  kill(): void;
  /** Releases the sentinel and the watch. Idempotent. */
  close(): void;
}

/** What a start method needs to know about the process it starts. */
export interface ProcessObject {
  readonly daemon: boolean;
  /** The target's arguments: sockets and servers among them stay usable in a forked child. */
  readonly args: readonly unknown[];
  /** The function the child runs first (the target, or a run() override): compiled before a fork. */
  readonly entry: unknown;
  /** Runs in the child (fork: from the copied heap) with the child's exit status as outcome. */
  bootstrapChild(parentSentinel: number, parentPid: number): Promise<void>;
  /** For a fresh process (spawn, forkserver); throws NotReferenceableError if the target cannot travel. */
  childInfo(method: string): ChildInfo;
}

/** What a spawn/forkserver child is told about the process it becomes (plain data). */
export interface ChildInfo {
  name: string;
  identity: number[];
  daemon: boolean;
  parentPid: number;
  parentName: string;
  /** The target by reference (null: no target). */
  target: FunctionRef | null;
}

export type PopenFactory = (proc: ProcessObject) => Popen;
