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
export function openParentSentinel(parentPid: number, checkPpid = true): number {
  if (!havePidfd()) return -1;
  const fd = native.pidfdOpen(parentPid);
  if (fd >= 0 && checkPpid && native.getppid() !== parentPid) {
    native.close(fd);
    return -1;
  }
  return fd;
}

export abstract class PidPopen implements Popen {
  abstract readonly method: string;
  readonly pid: number;
  readonly sentinel: number;
  #returncode: number | null = null;
  #watch: FdWatchHandle | null = null;
  #waiters = new Set<(code: number | null) => void>();
  #closed = false;

  /** `pipeSentinel`: the read end of a pipe only the child holds, when there are no pidfds (-1). */
  constructor(pid: number, pipeSentinel: number, daemon: boolean) {
    this.pid = pid;
    // Cannot fail for our own unreaped child (a zombie still has its pid).
    this.sentinel = pipeSentinel >= 0 ? pipeSentinel : native.pidfdOpen(pid);
    this.#watch = new native.FdWatch(this.sentinel, () => this.#onReadable());
    if (daemon) this.#watch.unref();
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
