// The 'fork' start method: this process forks itself and the child runs the target from the
// copied heap (closures and all). CPython's popen_fork.Popen.
//
// start() forks synchronously (the pid is known at once, as in Python). In the child, returning
// from start() would run the rest of the parent's program, so the child never returns: native
// childDetach() quiets the inherited event loop and has V8 terminate, which unwinds the parent's
// whole JS stack without running any catch/finally; the target then runs from a fresh stack on
// the next loop turn (popen/child.ts, native/fork.cc). Verified entry points: top-level CommonJS
// main, top-level ESM (with top-level await), inside an async function after an await (fork in a
// microtask), inside a setTimeout callback, inside an HTTP request handler, inside a vitest test,
// and inside a child's target (grandchildren).
//
// What the child does not see of the parent: its servers and sockets (watchers disarmed: never
// read or accepted on), timers and immediates (ownership guards), pending process.nextTick
// callbacks and promise reactions (dropped), signal / 'exit' / error listeners (removed), the
// IPC channel of a child_process parent (cut), stdin (/dev/null), in-flight and finished-but-
// undelivered thread-pool work. Known gaps: timers created before this library was loaded
// (run programs with `npx multiproc`, which preloads it); close callbacks of handles the parent
// was closing at the moment of the fork; bytes the parent had queued on a full stdout pipe.
import type * as net from 'node:net';

import { assertForkSafe } from '../forksafe';
import { native } from '../native';
import { afterForkInChild, compileForChildren, detachChild, prepareChildSupport } from './child';
import { PidPopen, havePidfd, openParentSentinel } from './pid';
import type { Popen, ProcessObject } from './types';

export { havePidfd };

// V8 places each heap page at a random address; fork() then copies page tables for every one of
// them. From here on the kernel places them side by side instead (native/posix/fork.cc,
// ReserveHintRange): 7-10% off a start+join with a 50 MB heap. MULTIPROC_HEAP_ASLR=1 keeps V8's
// placement.
if (process.platform === 'linux' && process.env.MULTIPROC_HEAP_ASLR !== '1') native.reserveHintRange();

/** Sockets and servers among the target's arguments (also inside arrays): they stay usable in the child. */
export function passedHandles(args: readonly unknown[]): Array<net.Socket | net.Server> {
  const out: Array<net.Socket | net.Server> = [];
  const n = loadedNet();
  if (n === null) return out; // no socket or server can exist yet
  const visit = (v: unknown, depth: number): void => {
    if (v instanceof n.Socket || v instanceof n.Server) out.push(v);
    else if (Array.isArray(v) && depth < 2) for (const x of v) visit(x, depth + 1);
  };
  for (const a of args) visit(a, 0);
  return out;
}

/**
 * node:net if the program loaded it (else there are no sockets to look for): not loaded by this
 * module, as it added a twentieth to the library's import time, which every spawn child pays.
 */
let netModule: typeof net | null = null;
function loadedNet(): typeof net | null {
  if (netModule === null) {
    const list = (process as { moduleLoadList?: string[] }).moduleLoadList;
    if (list === undefined || list.includes('NativeModule net')) netModule = require('node:net') as typeof net;
  }
  return netModule;
}

function handleFd(h: net.Socket | net.Server): number {
  const fd = (h as unknown as { _handle?: { fd?: number } | null })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : -1;
}

export class ForkPopen extends PidPopen {
  readonly method = 'fork';

  constructor(proc: ProcessObject) {
    assertForkSafe();
    const handles = passedHandles(proc.args);
    const keepFds = handles.map(handleFd).filter((fd) => fd >= 0);
    const parentPid = native.getpid();
    prepareChildSupport();
    compileForChildren(proc.entry);
    // Without pidfds: a pipe whose write end only the child holds; EOF means it ended.
    const pipe = havePidfd() ? null : native.pipe();
    const pid = native.fork(proc.daemon);
    if (pid === 0) {
      afterForkInChild(parentPid);
      if (pipe !== null) native.close(pipe[0]);
      const parentFd = openParentSentinel(parentPid);
      // Passed sockets stay readable/writable but, like everything inherited, do not keep the
      // child alive by themselves: the target's own lifetime decides (as in CPython), plus any
      // request (a write) still in flight on them.
      detachChild(
        keepFds,
        (function run(): Promise<void> {
          return proc.bootstrapChild(parentFd, parentPid);
        }),
      );
    }
    if (pipe !== null) native.close(pipe[1]);
    super(pid, pipe !== null ? pipe[0] : -1, proc.daemon);
  }
}

export function forkPopen(proc: ProcessObject): Popen {
  return new ForkPopen(proc);
}
