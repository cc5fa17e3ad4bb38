// A started child known by its pid, as this process's own child: exit watched through a
// sentinel fd on the event loop (no thread pool, no waitpid(-1)), reaped with waitpid(pid).
// The fork and spawn start methods share it (CPython's popen_fork.Popen, which popen_spawn_posix
// extends the same way).
import { native, type FdWatchHandle } from '../native';
import type { Popen } from './types';

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

/**
 * In a child: an fd that becomes readable when the parent `parentPid` ends, or -1.
 * Race: the parent may already be gone; getppid() tells (we were re-parented), and a pidfd
 * opened before that check cannot name a recycled pid. (Not for forkserver children, whose
 * parent is the server: they pass checkPpid = false and accept the tiny window.)
 */
export const openParentSentinel = (function openParentSentinel(parentPid: number, checkPpid = true): number {
  // Parenthesised: compiled at load in the parent, not in every child (lib/popen/child.ts).
  if (!havePidfd()) return -1;
  const fd = native.pidfdOpen(parentPid);
  if (fd >= 0 && checkPpid && native.getppid() !== parentPid) {
    native.close(fd);
    return -1;
  }
  return fd;
});

/**
 * A started child watched through a sentinel fd on the event loop (no thread pool): what every
 * start method's Popen shares. Subclasses say how an exit code is collected once the sentinel
 * is readable.
 */
export abstract class SentinelPopen implements Popen {
  abstract readonly method: string;
  abstract readonly pid: number;
  readonly sentinel: number;
  #returncode: number | null = null;
  #watch: FdWatchHandle | null = null;
  #waiters = new Set<(code: number | null) => void>();
  #closed = false;

  constructor(sentinel: number, daemon: boolean) {
    this.sentinel = sentinel;
    this.#watch = new native.FdWatch(this.sentinel, () => this.#collect(true));
    if (daemon) this.#watch.unref();
  }

  /** The exit code if it can be had now (`afterReadable`: the sentinel said so), else null. */
  protected abstract collect(afterReadable: boolean): number | null;

  #collect(afterReadable: boolean): number | null {
    if (this.#returncode !== null || this.#closed) return this.#returncode;
    const code = this.collect(afterReadable);
    if (code === null) return null;
    this.#returncode = code;
    this.#watch?.close();
    this.#watch = null;
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const w of waiters) w(code);
    return code;
  }

  poll(): number | null {
    return this.#collect(false);
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
    const deadline = timeoutMs === undefined ? Infinity : Date.now() + Math.max(0, timeoutMs);
    for (;;) {
      if (this.poll() !== null || this.#closed) return this.#returncode ?? this.closedCode();
      const left = deadline - Date.now();
      if (left <= 0) return null;
      if (native.waitReadable(this.sentinel, left === Infinity ? -1 : left)) {
        const code = this.#collect(true);
        if (code !== null) return code;
      }
    }
  }

  /** After close(): a last chance to learn the exit code without the sentinel (null: none). */
  protected closedCode(): number | null {
    return null;
  }

  setRef(ref: boolean): void {
    if (ref) this.#watch?.ref();
    else this.#watch?.unref();
  }

  #signal(sig: number): void {
    if (this.poll() !== null) return;
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
    this.closeSentinel();
  }

  protected closeSentinel(): void {
    native.close(this.sentinel);
  }
}

/** Our own child, reaped with waitpid(pid) (the fork and spawn start methods). */
export abstract class PidPopen extends SentinelPopen {
  readonly pid: number;

  /** `pipeSentinel`: the read end of a pipe only the child holds, when there are no pidfds (-1). */
  constructor(pid: number, pipeSentinel: number, daemon: boolean) {
    // Cannot fail for our own unreaped child (a zombie still has its pid).
    super(pipeSentinel >= 0 ? pipeSentinel : native.pidfdOpen(pid), daemon);
    this.pid = pid;
  }

  /** Blocking waitpid once the sentinel said the child ended (a pipe's EOF can precede the zombie). */
  protected collect(afterReadable: boolean): number | null {
    const st = native.waitpid(this.pid, !afterReadable);
    if (st === null) return null;
    return st.signal !== null ? -st.signal : (st.exitCode ?? 0);
  }

  protected override closedCode(): number | null {
    return this.collect(true);
  }
}
