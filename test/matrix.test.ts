// The start-method matrix (CPython runs its suite once per method): Process, synchronization and
// queues across processes under fork, forkserver and spawn. Targets are exported functions of
// test/fixtures/matrix-targets.mjs; handles are made with the matching context and passed as
// args. (The closure-based tests in the other files are fork-only by nature.)
import { afterEach, beforeAll, describe, expect, it } from 'vitest';

import { getContext, SharedMemory, waitFor, type Process, type StartMethod } from '../lib/index';

type Targets = typeof import('./fixtures/matrix-targets.mjs', { with: { 'resolution-mode': 'import' } });
let T: Targets;
beforeAll(async () => {
  T = await import('./fixtures/matrix-targets.mjs');
});

const started: Process[] = [];
afterEach(async () => {
  for (const p of started.splice(0)) {
    try {
      if (p.exitCode === null) p.kill();
      await p.join(5000);
    } catch {
      // never started
    }
  }
});

describe.each(['fork', 'forkserver', 'spawn'] as StartMethod[])('%s', (method) => {
  const ctx = getContext(method);
  const run = (target: (...a: never[]) => unknown, args: unknown[] = [], opts: { name?: string; daemon?: boolean } = {}): Process => {
    const p = new ctx.Process({ target, args, ...opts });
    started.push(p);
    p.start();
    return p;
  };

  describe('Process', () => {
    it('exit codes: return 0, process.exit(n), an uncaught error 1, SIGTERM/SIGKILL -15/-9', async () => {
      const q = ctx.Queue();
      const ps = [run(T.asyncReturn, [q]), run(T.exitWith, [5]), run(T.throwError, ['nope'])];
      const t = run(T.forever);
      const k = run(T.forever);
      expect(await q.get({ timeout: 10_000 })).toBe('async done');
      for (const p of ps) await p.join(10_000);
      expect(ps.map((p) => p.exitCode)).toEqual([0, 5, 1]);
      expect(t.isAlive()).toBe(true);
      t.terminate();
      k.kill();
      await t.join(10_000);
      await k.join(10_000);
      expect([t.exitCode, k.exitCode]).toEqual([-15, -9]);
      expect(t.isAlive()).toBe(false);
    });

    it('name, pid, daemon and parentProcess are seen by the child; join(timeout) returns while it runs', async () => {
      const q = ctx.Queue<Record<string, unknown>>();
      const p = run(T.report, [q], { name: `named-${method}`, daemon: true });
      expect(await q.get({ timeout: 10_000 })).toEqual({
        name: `named-${method}`,
        pid: p.pid,
        daemon: true,
        parentPid: process.pid,
        parentAlive: true,
      });
      await p.join(10_000);
      const s = run(T.sleepMs, [300]);
      const t0 = Date.now();
      await s.join(50);
      expect(s.exitCode).toBeNull();
      expect(Date.now() - t0).toBeLessThan(250);
      expect(await waitFor([s.sentinel], 10_000)).toEqual([s.sentinel]);
      await s.join(10_000);
      expect(s.exitCode).toBe(0);
    });

    it('a child starts its own child with the same method (nested)', async () => {
      const q = ctx.Queue<Record<string, unknown>>();
      const p = run(T.grandchild, [method, q], { name: 'middle' });
      const g = await q.get({ timeout: 20_000 });
      expect(g).toMatchObject({ name: 'grandchild', parentAlive: true });
      expect(g.parentPid).toBe(p.pid);
      expect(await q.get({ timeout: 20_000 })).toEqual({ grandchildExit: 0, myName: 'middle' });
      await p.join(10_000);
      expect(p.exitCode).toBe(0);
    });
  });

  describe('synchronization', () => {
    it('Lock: 2 processes x 2,000 increments under the lock lose none; Value and Array are shared', async () => {
      const lock = ctx.Lock();
      const v = ctx.Value('i', 0, { lock: false });
      const ps = [run(T.lockedIncrements, [lock, v, 2000]), run(T.lockedIncrements, [lock, v, 2000])];
      for (const p of ps) await p.join(20_000);
      expect(ps.map((p) => p.exitCode)).toEqual([0, 0]);
      expect(v.value).toBe(4000);
      const arr = ctx.Array('d', 5, { lock: false }) as Float64Array;
      const bytes = ctx.RawArray('B', 3);
      const f = run(T.fillArray, [arr]);
      const g = run(T.fillArray, [bytes]);
      await f.join(10_000);
      await g.join(10_000);
      expect(Array.from(arr)).toEqual([0, 2, 4, 6, 8]);
      expect(Array.from(bytes)).toEqual([0, 2, 4]); // a shared Uint8Array is not sent as a copy
    });

    it('RLock, Semaphore and Event across processes', async () => {
      const rl = ctx.RLock();
      const ev = ctx.Event();
      const p = run(T.rlockTwice, [rl, ev]);
      expect(await ev.wait(10_000)).toBe(true);
      await p.join(10_000);
      expect(rl.acquireSync({ timeout: 1000 })).toBe(true);
      rl.release();
      const sem = ctx.Semaphore(1);
      const holding = ctx.Event();
      const release = ctx.Event();
      const h = run(T.semaphoreHold, [sem, holding, release]);
      expect(await holding.wait(10_000)).toBe(true);
      expect(sem.acquireSync({ block: false })).toBe(false); // the child holds the only count
      release.set();
      expect(await sem.acquire({ timeout: 10_000 })).toBe(true);
      sem.release();
      await h.join(10_000);
      const e2 = ctx.Event();
      run(T.setEvent, [e2]);
      expect(e2.waitSync(10_000)).toBe(true);
    });

    it('Condition and Barrier across processes', async () => {
      const cond = ctx.Condition();
      const flag = ctx.Value('i', 0);
      cond.acquireSync();
      run(T.conditionNotify, [cond, flag]);
      const ok = cond.waitForSync(() => flag.value === 1, 10_000);
      cond.release();
      expect(ok).toBe(true);
      const barrier = ctx.Barrier(2);
      const arr = ctx.Array('i', 2, { lock: false }) as Int32Array;
      const p = run(T.barrierWait, [barrier, arr]);
      const mine = await barrier.wait(10_000);
      await p.join(10_000);
      expect([mine, arr[1]! - 100].sort()).toEqual([0, 1]);
    });
    it('BoundedSemaphore refuses an over-release in the child; a synchronized Array guarded by its lock loses no increment', async () => {
      const bs = ctx.BoundedSemaphore(1);
      const q = ctx.Queue<string>();
      const b = run(T.boundedOverRelease, [bs, q]);
      expect(await q.get({ timeout: 10_000 })).toMatch(/^ValueError: .*released too many times/);
      await b.join(10_000);
      expect(bs.getValue()).toBe(1);
      const arr = ctx.Array('i', 1);
      const ps = [run(T.syncArrayIncrements, [arr, 2000]), run(T.syncArrayIncrements, [arr, 2000])];
      for (const p of ps) await p.join(20_000);
      expect(ps.map((p) => p.exitCode)).toEqual([0, 0]);
      expect((arr as { get(i: number): number }).get(0)).toBe(4000);
    });

    it('a Lock sent over a Queue after start is the same lock in the child (even one made in a fork context)', async () => {
      const q = ctx.Queue<unknown>();
      const out = ctx.Queue<string>();
      const release = ctx.Event();
      const p = run(T.holdLockFromQueue, [q, out, release]);
      const lock = getContext('fork').Lock();
      await q.put(lock);
      expect(await out.get({ timeout: 10_000 })).toBe('held');
      expect(lock.acquireSync({ block: false })).toBe(false); // the child holds it
      release.set();
      expect(lock.acquireSync({ timeout: 10_000 })).toBe(true);
      lock.release();
      await p.join(10_000);
      expect(p.exitCode).toBe(0);
      q.close();
      out.close();
    });
  });

  describe('shared memory', () => {
    it('a SharedMemory block passed as an arg is the same memory in the child', async () => {
      const shm = new SharedMemory({ create: true, size: 64 });
      try {
        const p = run(T.writeShared, [shm, `hello from ${method}`]);
        await p.join(10_000);
        expect(p.exitCode).toBe(0);
        expect(shm.buf.toString('utf8', 0, 6 + 5 + method.length)).toBe(`hello from ${method}`);
      } finally {
        shm.close();
        shm.unlink();
      }
    });
  });

  describe('queues and connections', () => {
    it('Queue and SimpleQueue: items from a child arrive in order', async () => {
      for (const q of [ctx.Queue<number | null>(), ctx.SimpleQueue<number | null>()]) {
        const p = run(T.produce, [q, 500]);
        const got: number[] = [];
        for (let x; (x = await q.get({ timeout: 10_000 })) !== null; ) got.push(x);
        expect(got).toEqual(Array.from({ length: 500 }, (_, i) => i));
        await p.join(10_000);
        q.close();
      }
    });

    it('JoinableQueue: join() returns once a child consumer called taskDone for every item', async () => {
      const q = ctx.JoinableQueue<number | null>();
      const total = ctx.Value('i', 0);
      for (let i = 1; i <= 100; i++) q.putSync(i);
      q.putSync(null);
      const p = run(T.joinableConsume, [q, total]);
      await q.join();
      expect(total.value).toBe(5050);
      await p.join(10_000);
      expect(p.exitCode).toBe(0);
    });

    it('Pipe ends and a Connection passed as args work both ways', async () => {
      const [a, b] = ctx.Pipe<unknown>();
      const p = run(T.echo, [b]);
      b.close();
      for (const v of [1, 'two', { three: [3] }, Buffer.from('four')]) {
        a.send(v);
        expect(await a.recv()).toEqual(v);
      }
      a.send(null);
      await p.join(10_000);
      a.close();
      const [r, w] = ctx.Pipe<string>({ duplex: false });
      const s = run(T.sendOver, [w, `sent by a ${method} child`]);
      w.close();
      expect(r.recvSync()).toBe(`sent by a ${method} child`);
      await s.join(10_000);
      r.close();
    });
  });
});
