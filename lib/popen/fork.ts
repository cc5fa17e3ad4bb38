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
import * as net from 'node:net';

import { assertForkSafe } from '../forksafe';
import { native, type FdWatchHandle } from '../native';
import { afterForkInChild, detachChild, prepareChildSupport } from './child';
import type { Popen, ProcessObject } from './types';

let pidfdSupport: boolean | undefined;
/** pidfds (Linux >= 5.3) make exact sentinels; elsewhere a pipe the child holds open. */
export function havePidfd(): boolean {
  if (pidfdSupport === undefined) {
    const fd = native.pidfdOpen(native.getpid());
    pidfdSupport = fd >= 0;
    if (fd >= 0) native.close(fd);
  }
  return pidfdSupport;
}

/** Sockets and servers among the target's arguments (also inside arrays): they stay usable in the child. */
export function passedHandles(args: readonly unknown[]): Array<net.Socket | net.Server> {
  const out: Array<net.Socket | net.Server> = [];
  const visit = (v: unknown, depth: number): void => {
    if (v instanceof net.Socket || v instanceof net.Server) out.push(v);
    else if (Array.isArray(v) && depth < 2) for (const x of v) visit(x, depth + 1);
  };
  for (const a of args) visit(a, 0);
  return out;
}

function handleFd(h: net.Socket | net.Server): number {
  const fd = (h as unknown as { _handle?: { fd?: number } | null })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : -1;
}

export class ForkPopen implements Popen {
  readonly method = 'fork';
  readonly pid: number;
  readonly sentinel: number;
  #returncode: number | null = null;
  #watch: FdWatchHandle | null = null;
  #waiters = new Set<(code: number | null) => void>();
  #closed = false;

  constructor(proc: ProcessObject) {
    assertForkSafe();
    const handles = passedHandles(proc.args);
    const keepFds = handles.map(handleFd).filter((fd) => fd >= 0);
    const parentPid = native.getpid();
    prepareChildSupport();
    // Without pidfds: a pipe whose write end only the child holds; EOF means it ended.
    const pipe = havePidfd() ? null : native.pipe();
    const pid = native.fork(proc.daemon);
    if (pid === 0) {
      afterForkInChild(parentPid);
      if (pipe !== null) native.close(pipe[0]);
      // Race: the parent may already be gone; getppid() tells (we were re-parented), and a pidfd
      // opened before that check cannot name a recycled pid.
      let parentFd = havePidfd() ? native.pidfdOpen(parentPid) : -1;
      if (parentFd >= 0 && native.getppid() !== parentPid) {
        native.close(parentFd);
        parentFd = -1;
      }
      // Passed sockets stay readable/writable but, like everything inherited, do not keep the
      // child alive by themselves: the target's own lifetime decides (as in CPython), plus any
      // request (a write) still in flight on them.
      detachChild(keepFds, () => proc.bootstrapChild(parentFd, parentPid));
    }
    this.pid = pid;
    if (pipe !== null) {
      native.close(pipe[1]);
      this.sentinel = pipe[0];
    } else {
      // Cannot fail for our own unreaped child (a zombie still has its pid).
      this.sentinel = native.pidfdOpen(pid);
    }
    this.#watch = new native.FdWatch(this.sentinel, () => this.#onReadable());
    if (proc.daemon) this.#watch.unref();
  }

  #onReadable(): void {
    if (this.poll() === null) this.#reap(false);
  }

  /** Blocking waitpid when the sentinel said the child ended (a pipe's EOF can precede the zombie). */
  #reap(noHang: boolean): number | null {
    if (this.#returncode !== null) return this.#returncode;
    const st = native.waitpid(this.pid, noHang);
    if (st === null) return null;
    this.#returncode = st.signal !== null ? -st.signal : (st.exitCode ?? 0);
    this.#watch?.close();
    this.#watch = null;
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const w of waiters) w(this.#returncode);
    return this.#returncode;
  }

  poll(): number | null {
    return this.#reap(true);
  }

  wait(timeoutMs?: number): Promise<number | null> {
    if (this.poll() !== null) return Promise.resolve(this.#returncode);
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (code: number | null): void => {
        if (timer !== undefined) clearTimeout(timer);
        this.#waiters.delete(done);
        resolve(code);
      };
      this.#waiters.add(done);
      if (timeoutMs !== undefined) timer = setTimeout(() => done(null), Math.max(0, timeoutMs));
    });
  }

  waitSync(timeoutMs?: number): number | null {
    if (this.poll() !== null) return this.#returncode;
    if (this.#closed) return this.#reap(false);
    const ready = native.waitReadable(this.sentinel, timeoutMs === undefined ? -1 : Math.max(0, timeoutMs));
    return ready ? this.#reap(false) : null;
  }

  setRef(ref: boolean): void {
    if (ref) this.#watch?.ref();
    else this.#watch?.unref();
  }

  #signal(sig: number): void {
    if (this.#returncode !== null) return;
    try {
      native.kill(this.pid, sig);
    } catch (e) {
      // Already gone (and maybe reaped elsewhere): nothing to signal.
      if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
    }
  }

  terminate(): void {
    this.#signal(15);
  }

  kill(): void {
    this.#signal(9);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watch?.close();
    this.#watch = null;
    native.close(this.sentinel);
  }
}

export function forkPopen(proc: ProcessObject): Popen {
  return new ForkPopen(proc);
}
