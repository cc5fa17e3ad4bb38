import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { SharedMemory, createSegment, attachSegment, unlinkSegment } from '../lib/shared_memory';
import { isTracked } from '../lib/resource_tracker';
import { waitWord, waitWordSync, wakeWord, _pendingSlots } from '../lib/_wait';
import { native } from '../lib/native';

const cleanup: Array<() => void> = [];
afterEach(() => {
  while (cleanup.length) {
    try {
      cleanup.pop()!();
    } catch {
      /* already gone */
    }
  }
});

function created(opts: ConstructorParameters<typeof SharedMemory>[0]): SharedMemory {
  const shm = new SharedMemory(opts);
  cleanup.push(() => shm.unlink());
  return shm;
}

// A plain Node child (no fork needed) that runs `code` with `native` in scope.
function child(code: string): Promise<{ code: number | null; out: string; err: string }> {
  const nativePath = require.resolve('../build/Release/multiproc.node');
  const src = `const native = require(${JSON.stringify(nativePath)});\n${code}`;
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['-e', src], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
    p.on('exit', (code) => {
      clearTimeout(t);
      resolve({ code, out, err });
    });
  });
}

describe('SharedMemory', () => {
  it('creates a zero-filled segment with an unguessable mp- name, mode 0600', () => {
    const shm = created({ create: true, size: 100 });
    expect(shm.name).toMatch(/^mp-[0-9a-f]{16}$/);
    expect(shm.size).toBe(100);
    expect(shm.buf.length).toBe(100);
    expect(shm.buf.every((b) => b === 0)).toBe(true);
    expect(shm.buf.buffer).toBeInstanceOf(SharedArrayBuffer);
    const st = fs.statSync(`/dev/shm/${shm.name}`);
    expect(st.mode & 0o777).toBe(0o600);
    expect(isTracked('/' + shm.name, 'shared_memory')).toBe(true);
  });

  it('attaches by name and shares bytes; Atomics work on the buffer', () => {
    const a = created({ create: true, size: 64 });
    const b = new SharedMemory({ name: a.name });
    expect(b.size).toBe(64);
    b.buf.write('hello', 0);
    expect(a.buf.toString('utf8', 0, 5)).toBe('hello');
    const i32 = new Int32Array(a.buf.buffer, 8, 2);
    Atomics.add(new Int32Array(b.buf.buffer, 8, 2), 1, 7);
    expect(Atomics.load(i32, 1)).toBe(7);
    b.close();
    b.close();
    expect(() => b.buf).toThrow(expect.objectContaining({ code: 'ERR_MP_CLOSED' }));
  });

  it('accepts a chosen name with or without the slash; refuses to create it twice (EEXIST)', () => {
    const name = `mp-test-${process.pid}-${Date.now()}`;
    const a = created({ name, create: true, size: 10 });
    expect(a.name).toBe(name);
    expect(() => new SharedMemory({ name: '/' + name, create: true, size: 10 })).toThrow(
      expect.objectContaining({ code: 'EEXIST', syscall: 'shm_open', path: '/' + name }),
    );
    // the failed attempt did not withdraw the first creation from the tracker
    expect(isTracked('/' + name, 'shared_memory')).toBe(true);
  });

  it('missing name → ENOENT SystemError; too-small segment → EINVAL; unlink twice → ENOENT', () => {
    expect(() => new SharedMemory({ name: 'mp-does-not-exist-' + process.pid })).toThrow(
      expect.objectContaining({ code: 'ENOENT', syscall: 'shm_open', errno: -2 }),
    );
    const a = new SharedMemory({ create: true, size: 16 });
    expect(() => new SharedMemory({ name: a.name, size: 17 })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    a.unlink();
    expect(isTracked('/' + a.name, 'shared_memory')).toBe(false);
    expect(fs.existsSync(`/dev/shm/${a.name}`)).toBe(false);
    expect(() => a.unlink()).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    // the mapping outlives the name
    a.buf[3] = 9;
    expect(a.buf[3]).toBe(9);
  });

  it('validates its options', () => {
    expect(() => new SharedMemory({ create: true })).toThrow(expect.objectContaining({ code: 'ERR_MP_VALUE' }));
    expect(() => new SharedMemory({ create: true, size: -1 })).toThrow(expect.objectContaining({ code: 'ERR_MP_VALUE' }));
    expect(() => new SharedMemory({})).toThrow(expect.objectContaining({ code: 'ERR_MP_VALUE' }));
    expect(() => new SharedMemory({ create: true, size: 1.5 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => new SharedMemory({ name: 7 as unknown as string })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => new SharedMemory({ name: 'a/b' })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
  });

  it('another process attaches by name and writes', async () => {
    const shm = created({ create: true, size: 4096 });
    const r = await child(`
      const F = native.shmFlags;
      const fd = native.shmOpen('/${shm.name}', F.O_RDWR, 0);
      const sab = native.mmap(fd, native.fstatSize(fd), 0);
      Buffer.from(sab).write('from child', 100);
    `);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(shm.buf.toString('utf8', 100, 110)).toBe('from child');
  });
});

describe('futex words (internal wait layer)', () => {
  it('sync wait: not-equal at once, timed out within bounds', () => {
    const seg = createSegment(64);
    cleanup.push(() => unlinkSegment(seg.name));
    const w = new Int32Array(seg.sab);
    expect(waitWordSync(w, 0, 1, 1000)).toBe('not-equal');
    const t0 = performance.now();
    expect(waitWordSync(w, 0, 0, 50)).toBe('timed-out');
    const dt = performance.now() - t0;
    expect(dt).toBeGreaterThanOrEqual(45);
    expect(dt).toBeLessThan(100);
  });

  it('async wait is woken by another process, without blocking the loop', async () => {
    const seg = createSegment(64);
    cleanup.push(() => unlinkSegment(seg.name));
    const w = new Int32Array(seg.sab);
    let ticks = 0;
    const iv = setInterval(() => ticks++, 5);
    const waited = waitWord(w, 3, 0, { timeout: 10_000 });
    const r = await child(`
      const F = native.shmFlags;
      const fd = native.shmOpen('${seg.name}', F.O_RDWR, 0);
      const w = new Int32Array(native.mmap(fd, 64, 0));
      setTimeout(() => { Atomics.store(w, 3, 42); native.futexWake(w, 3, 1); }, 100);
    `);
    expect(r.code).toBe(0);
    expect(await waited).toBe('ok');
    clearInterval(iv);
    expect(ticks).toBeGreaterThan(5);
    expect(Atomics.load(w, 3)).toBe(42);
    expect(_pendingSlots()).toBe(0);
  });

  it('sync wait is woken by another process', async () => {
    const seg = createSegment(64);
    cleanup.push(() => unlinkSegment(seg.name));
    const w = new Int32Array(seg.sab);
    const p = child(`
      const F = native.shmFlags;
      const fd = native.shmOpen('${seg.name}', F.O_RDWR, 0);
      const w = new Int32Array(native.mmap(fd, 64, 0));
      // wait until the parent sleeps (it sets word 1), then wake it
      while (Atomics.load(w, 1) === 0) native.futexWait(w, 1, 0, 1000);
      setTimeout(() => { Atomics.store(w, 0, 1); native.futexWake(w, 0, 1); }, 50);
    `);
    Atomics.store(w, 1, 1);
    wakeWord(w, 1);
    const t0 = performance.now();
    let r;
    while (Atomics.load(w, 0) === 0) r = waitWordSync(w, 0, 0, 5000);
    expect(performance.now() - t0).toBeLessThan(4000);
    expect(r).toBe('ok');
    expect((await p).code).toBe(0);
  });

  it('async waits: shared slots, timeouts, aborts, many words at once', async () => {
    const seg = createSegment(4096);
    cleanup.push(() => unlinkSegment(seg.name));
    const w = new Int32Array(seg.sab);
    const a = waitWord(w, 0, 0);
    const b = waitWord(w, 0, 0);
    expect(_pendingSlots()).toBe(1);
    const t0 = performance.now();
    expect(await waitWord(w, 1, 0, { timeout: 60 })).toBe('timed-out');
    expect(performance.now() - t0).toBeGreaterThanOrEqual(55);
    const ac = new AbortController();
    const c = waitWord(w, 2, 0, { signal: ac.signal });
    ac.abort(new Error('stop'));
    await expect(c).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    expect(await waitWord(w, 0, 5)).toBe('not-equal');
    // 300 distinct words (more than one futex_waitv call can hold)
    const many = [];
    for (let i = 100; i < 400; i++) many.push(waitWord(w, i, 0, { timeout: 10_000 }));
    for (let i = 100; i < 400; i++) Atomics.store(w, i, 1);
    for (let i = 100; i < 400; i += 2) wakeWord(w, i);
    expect(await Promise.all(many)).toEqual(many.map(() => 'ok'));
    Atomics.store(w, 0, 1);
    wakeWord(w, 0);
    expect(await Promise.all([a, b])).toEqual(['ok', 'ok']);
    expect(_pendingSlots()).toBe(0);
  });

  it('pidAlive: self yes, a reaped child no', async () => {
    expect(native.pidAlive(process.pid)).toBe(true);
    const p = spawn(process.execPath, ['-e', '0']);
    await new Promise((r) => p.on('exit', r));
    expect(native.pidAlive(p.pid!)).toBe(false);
  });

  it('attachSegment sees the creator size', () => {
    const seg = createSegment(123);
    cleanup.push(() => unlinkSegment(seg.name));
    expect(attachSegment(seg.name).size).toBe(123);
  });
});
