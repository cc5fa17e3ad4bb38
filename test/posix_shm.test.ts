import * as fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import * as posix from '../lib/posix';

const names: string[] = [];
const sems: string[] = [];
afterEach(() => {
  for (const n of names.splice(0)) fs.rmSync('/dev/shm/' + n.replace(/^\//, ''), { force: true });
  for (const n of sems.splice(0)) fs.rmSync('/dev/shm/sem.' + n.replace(/^\//, ''), { force: true });
});
function fresh(kind: string): string {
  return `/mp-posix-${kind}-${process.pid}-${Math.random().toString(16).slice(2)}`;
}

describe('posix shared memory', () => {
  it('shmOpen/ftruncate/mmap/shmUnlink with C semantics', () => {
    const name = fresh('shm');
    names.push(name);
    const fd = posix.shmOpen(name, { create: true, exclusive: true });
    expect(fs.fstatSync(fd).mode & 0o777).toBe(0o600);
    posix.ftruncate(fd, 8192);
    const a = posix.mmap(fd, 8192);
    expect(a).toBeInstanceOf(SharedArrayBuffer);
    expect(a.byteLength).toBe(8192);
    const fd2 = posix.shmOpen(name);
    const b = posix.mmap(fd2, 4096, { offset: 4096 });
    posix.close(fd);
    posix.close(fd2);
    new Uint8Array(a)[4096 + 5] = 77;
    expect(new Uint8Array(b)[5]).toBe(77);
    expect(() => posix.shmOpen(name, { create: true, exclusive: true })).toThrow(expect.objectContaining({ code: 'EEXIST', syscall: 'shm_open' }));
    posix.shmUnlink(name);
    expect(() => posix.shmUnlink(name)).toThrow(expect.objectContaining({ code: 'ENOENT', syscall: 'shm_unlink' }));
    expect(() => posix.shmOpen(name)).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  });

  it('anonymous shared mappings are shared with a forked child; private ones are not', async () => {
    const shared = new Int32Array(posix.mmap(null, 4096));
    const priv = new Int32Array(posix.mmap(null, 4096, { shared: false }));
    const pid = posix.fork();
    if (pid === 0) {
      Atomics.store(shared, 0, 11);
      priv[0] = 22;
      posix.exit(0);
    }
    const st = posix.waitpid(pid);
    expect(st?.exitCode).toBe(0);
    expect(shared[0]).toBe(11);
    expect(priv[0]).toBe(0);
  });

  it('validates arguments', () => {
    expect(() => posix.shmOpen(3 as unknown as string)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => posix.mmap(null, 0)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => posix.ftruncate(-1, 5)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => posix.mmap(1_000_000, 4096)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'mmap' }));
  });
});

describe('posix named semaphores', () => {
  it('semOpen/post/wait/tryWait/getValue/close/semUnlink', async () => {
    const name = fresh('sem');
    sems.push(name);
    const s = posix.semOpen(name, { create: true, exclusive: true, value: 1 });
    expect(fs.existsSync('/dev/shm/sem.' + name.slice(1))).toBe(true);
    expect(s.getValue()).toBe(1);
    expect(s.tryWait()).toBe(true);
    expect(s.tryWait()).toBe(false);
    const t0 = performance.now();
    expect(s.waitSync(80)).toBe(false);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(75);
    const t1 = performance.now();
    expect(await s.wait(80)).toBe(false);
    expect(performance.now() - t1).toBeGreaterThanOrEqual(75);
    expect(performance.now() - t1).toBeLessThan(140);
    s.post();
    expect(s.waitSync()).toBe(true);
    const other = posix.semOpen(name);
    setTimeout(() => other.post(), 30);
    expect(await s.wait(5000)).toBe(true);
    const ac = new AbortController();
    const pending = s.wait(undefined, { signal: ac.signal });
    ac.abort();
    await expect(pending).rejects.toMatchObject({ code: 'ABORT_ERR' });
    expect(() => posix.semOpen(name, { create: true, exclusive: true })).toThrow(expect.objectContaining({ code: 'EEXIST', syscall: 'sem_open' }));
    s.close();
    s.close();
    expect(() => s.post()).toThrow(expect.objectContaining({ code: 'ERR_MP_CLOSED' }));
    other.close();
    posix.semUnlink(name);
    expect(() => posix.semUnlink(name)).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    expect(() => posix.semOpen(name)).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  });

  it('works across a fork', async () => {
    const name = fresh('sem');
    sems.push(name);
    const s = posix.semOpen(name, { create: true, value: 0 });
    const pid = posix.fork();
    if (pid === 0) {
      const c = posix.semOpen(name);
      c.post();
      c.post();
      posix.exit(0);
    }
    expect(s.waitSync(5000)).toBe(true);
    expect(s.waitSync(5000)).toBe(true);
    expect(posix.waitpid(pid)?.exitCode).toBe(0);
    s.close();
    posix.semUnlink(name);
  });
});
