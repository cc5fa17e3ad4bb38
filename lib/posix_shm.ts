// The shared-memory and semaphore part of multiproc/posix: thin wrappers with C semantics.
// Nothing here is tracked or cleaned up for you (that is SharedMemory's job): unlink what you
// create. Names follow POSIX: a leading '/' is added when missing.
import { invalidArgType, invalidArgValue } from './errors';
import { native, type NativeSemHandle } from './native';
import { abortError } from './_wait';

const { O_RDONLY, O_RDWR, O_CREAT, O_EXCL } = native.shmFlags;

function posixName(name: unknown): string {
  if (typeof name !== 'string') throw invalidArgType('name', 'of type string', name);
  if (name.length === 0 || name.includes('\0')) throw invalidArgValue('name', name, 'must be a non-empty string without NUL');
  return name.startsWith('/') ? name : '/' + name;
}

function checkFd(fd: unknown): asserts fd is number {
  if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0) throw invalidArgType('fd', 'a file descriptor', fd);
}

function checkMode(mode: unknown): number {
  if (mode === undefined) return 0o600;
  if (typeof mode !== 'number' || !Number.isInteger(mode) || mode < 0 || mode > 0o7777) throw invalidArgType('mode', 'a file mode', mode);
  return mode;
}

export interface ShmOpenOptions {
  /** O_CREAT. */
  create?: boolean;
  /** O_EXCL (with create): fail with EEXIST if it exists. */
  exclusive?: boolean;
  /** Open read-only (O_RDONLY); default read-write. */
  readOnly?: boolean;
  /** Permission bits when creating; default 0o600. */
  mode?: number;
}

/** shm_open(3) -> a close-on-exec fd. Close it with posix.close(). */
export function shmOpen(name: string, opts: ShmOpenOptions = {}): number {
  if (opts === null || typeof opts !== 'object') throw invalidArgType('options', 'of type object', opts);
  const flags = (opts.readOnly ? O_RDONLY : O_RDWR) | (opts.create ? O_CREAT : 0) | (opts.create && opts.exclusive ? O_EXCL : 0);
  return native.shmOpen(posixName(name), flags, checkMode(opts.mode));
}

/** shm_unlink(3). */
export function shmUnlink(name: string): void {
  native.shmUnlink(posixName(name));
}

/** ftruncate(2): sets the size of a segment (new bytes read as zero). */
export function ftruncate(fd: number, size: number): void {
  checkFd(fd);
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw invalidArgType('size', 'a non-negative integer', size);
  native.ftruncate(fd, size);
}

/**
 * mmap(2), read-write, as a real SharedArrayBuffer (`Atomics` work on it; it can be posted to
 * worker_threads). `fd` null: anonymous memory, shared with fork() children when `shared`.
 * `shared: false` maps privately (copy-on-write). The mapping is released when the buffer is
 * garbage-collected; the fd may be closed right away.
 */
export function mmap(fd: number | null, size: number, opts: { shared?: boolean; offset?: number } = {}): SharedArrayBuffer {
  if (fd !== null) checkFd(fd);
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0) throw invalidArgType('size', 'a positive integer', size);
  if (opts === null || typeof opts !== 'object') throw invalidArgType('options', 'of type object', opts);
  const offset = opts.offset ?? 0;
  if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) throw invalidArgType('offset', 'a non-negative integer', offset);
  return native.mmap(fd ?? -1, size, offset, opts.shared === false);
}

export interface SemOpenOptions {
  /** O_CREAT. */
  create?: boolean;
  /** O_EXCL (with create). */
  exclusive?: boolean;
  /** Initial value when creating (default 1). */
  value?: number;
  /** Permission bits when creating; default 0o600. */
  mode?: number;
}

/**
 * A named POSIX semaphore (sem_open). Any process can open it by name. The async wait() does not
 * block the event loop and parks no thread: it polls sem_trywait on timers (1 ms, growing to
 * 10 ms), so it wakes within that delay; waitSync() blocks in the kernel.
 */
export class NamedSemaphore {
  readonly name: string;
  #h: NativeSemHandle;

  /** Use posix.semOpen(). */
  constructor(name: string, h: NativeSemHandle) {
    this.name = name;
    this.#h = h;
  }

  waitSync(timeout?: number): boolean {
    return this.#h.wait(checkTimeout(timeout));
  }

  async wait(timeout?: number, opts: { signal?: AbortSignal } = {}): Promise<boolean> {
    const signal = opts.signal;
    const ms = checkTimeout(timeout);
    if (signal?.aborted) throw abortError(signal);
    if (this.#h.tryWait()) return true;
    const deadline = ms < 0 ? Infinity : performance.now() + ms;
    let delay = 1;
    for (;;) {
      const rem = deadline - performance.now();
      if (rem <= 0) return false;
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => {
          clearTimeout(t);
          reject(abortError(signal as AbortSignal));
        };
        const t = setTimeout(() => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        }, Math.min(delay, rem));
        signal?.addEventListener('abort', onAbort, { once: true });
      });
      if (this.#h.tryWait()) return true;
      delay = Math.min(10, delay * 2);
    }
  }

  tryWait(): boolean {
    return this.#h.tryWait();
  }

  post(): void {
    this.#h.post();
  }

  /** sem_getvalue (not available on macOS: ENOSYS). */
  getValue(): number {
    return this.#h.getValue();
  }

  /** sem_close (idempotent); the name stays until semUnlink. */
  close(): void {
    this.#h.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

function checkTimeout(timeout: unknown): number {
  if (timeout === undefined || timeout === null) return -1;
  if (typeof timeout !== 'number' || Number.isNaN(timeout)) throw invalidArgType('timeout', 'a number of milliseconds', timeout);
  return Math.max(0, timeout);
}

/** sem_open(3). */
export function semOpen(name: string, opts: SemOpenOptions = {}): NamedSemaphore {
  if (opts === null || typeof opts !== 'object') throw invalidArgType('options', 'of type object', opts);
  const n = posixName(name);
  const value = opts.value ?? 1;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) throw invalidArgType('value', 'a non-negative integer', value);
  const flags = (opts.create ? O_CREAT : 0) | (opts.create && opts.exclusive ? O_EXCL : 0);
  return new NamedSemaphore(n, new native.NamedSemaphoreHandle(n, flags, checkMode(opts.mode), value));
}

/** sem_unlink(3). */
export function semUnlink(name: string): void {
  native.semUnlink(posixName(name));
}
