import { setMaxListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { AssertionError, BrokenBarrierError, ValueError } from '../lib/errors';
import { getContext } from '../lib/index';
import { Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore, rebuild } from '../lib/synchronize';
import { RawValue, RawArray, Value, type SynchronizedValue } from '../lib/sharedctypes';
import { kReduce } from '../lib/shared_memory';
import { spawnSync } from 'node:child_process';
import { inspect } from 'node:util';
import { Worker } from 'node:worker_threads';
import { ensureDist } from './helpers/dist';
import { fork, joinAll } from './helpers/procs';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function timed<T>(f: () => T): [T, number] {
  const t0 = performance.now();
  const r = f();
  return [r, performance.now() - t0];
}
async function timedAsync<T>(f: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const r = await f();
  return [r, performance.now() - t0];
}

describe('Lock', () => {
  it('acquire/release/locked; releasing an unlocked lock is a ValueError', async () => {
    const l = new Lock();
    expect(l.locked()).toBe(false);
    expect(l.acquireSync()).toBe(true);
    expect(l.locked()).toBe(true);
    expect(l.acquireSync({ block: false })).toBe(false);
    l.release();
    expect(await l.acquire()).toBe(true);
    l.release();
    expect(() => l.release()).toThrow(ValueError);
    expect(() => l.release()).toThrow(expect.objectContaining({ code: 'ERR_MP_VALUE' }));
    expect(() => l.acquireSync({ timeout: 'x' as unknown as number })).not.toThrow(); // free: fast path
    l.release();
    l.acquireSync();
    expect(() => l.acquireSync({ timeout: 'x' as unknown as number })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    l.release();
  });

  it('timeouts are accurate (±50 ms), sync and async; negative means 0', async () => {
    const l = new Lock();
    l.acquireSync();
    const [r1, t1] = timed(() => l.acquireSync({ timeout: 150 }));
    expect(r1).toBe(false);
    expect(t1).toBeGreaterThanOrEqual(145);
    expect(t1).toBeLessThan(200);
    const [r2, t2] = await timedAsync(() => l.acquire({ timeout: 150 }));
    expect(r2).toBe(false);
    expect(t2).toBeGreaterThanOrEqual(145);
    expect(t2).toBeLessThan(200);
    const [r3, t3] = timed(() => l.acquireSync({ timeout: -5 }));
    expect(r3).toBe(false);
    expect(t3).toBeLessThan(50);
    l.release();
  });

  it('async acquire can be aborted and does not block the event loop', async () => {
    const l = new Lock();
    l.acquireSync();
    const ac = new AbortController();
    let ticks = 0;
    const iv = setInterval(() => ticks++, 5);
    const p = l.acquire({ signal: ac.signal });
    await sleep(60);
    ac.abort();
    await expect(p).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    clearInterval(iv);
    expect(ticks).toBeGreaterThan(3);
    await expect(l.acquire({ signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'ABORT_ERR' });
    l.release();
  });

  it('2 processes × 100,000 locked increments = exactly 200,000', async () => {
    const lock = new Lock();
    const v = RawValue('i', 0);
    const work = (n: number) => {
      for (let i = 0; i < n; i++) {
        lock.acquireSync();
        v.value = (v.value as number) + 1;
        lock.release();
      }
    };
    const ps = [fork(work, 100_000), fork(work, 100_000)];
    expect(await joinAll(ps)).toEqual([0, 0]);
    expect(v.value).toBe(200_000);
  });

  it('a parent waiting asynchronously is woken by a child release', async () => {
    const lock = new Lock();
    const ready = new Event();
    lock.acquireSync();
    const p = fork(async () => {
      ready.set();
      const ok = await lock.acquire({ timeout: 10_000 });
      lock.release();
      process.exitCode = ok ? 7 : 1;
    });
    expect(ready.waitSync(10_000)).toBe(true);
    await sleep(30);
    lock.release();
    await p.join(10_000);
    expect(p.exitCode).toBe(7);
  });

  it('a holder that is SIGKILLed does not deadlock: the next acquirer gets ownerDied', async () => {
    const lock = new Lock();
    const held = new Event();
    const p = fork(() => {
      lock.acquireSync();
      held.set();
      setInterval(() => {}, 1000); // hold it forever
    });
    expect(await held.wait(10_000)).toBe(true);
    expect(lock.acquireSync({ block: false })).toBe(false);
    p.kill(); // not reaped yet: a zombie must count as dead
    const [ok, dt] = timed(() => lock.acquireSync({ timeout: 5000 }));
    expect(ok).toBe(true);
    expect(dt).toBeLessThan(1000);
    expect(lock.ownerDied).toBe(true);
    lock.release();
    expect(lock.acquireSync()).toBe(true);
    expect(lock.ownerDied).toBe(false);
    lock.release();
    await p.join(5000);
    expect(p.exitCode).toBe(-9);
  });

  it('async acquire also recovers a dead holder', async () => {
    const lock = new Lock();
    const held = new Event();
    const p = fork(() => {
      lock.acquireSync();
      held.set();
      setInterval(() => {}, 1000);
    });
    expect(await held.wait(10_000)).toBe(true);
    const waiting = lock.acquire({ timeout: 5000 });
    await sleep(50);
    p.kill();
    expect(await waiting).toBe(true);
    expect(lock.ownerDied).toBe(true);
    lock.release();
  });

  it('is reopened from its description (same word)', () => {
    const l = new Lock();
    const again = rebuild(l[kReduce]()) as Lock;
    expect(again).toBeInstanceOf(Lock);
    l.acquireSync();
    expect(again.locked()).toBe(true);
    again.release(); // any process may release a Lock
    expect(l.locked()).toBe(false);
  });
});

describe('RLock', () => {
  it('is recursive for its owner; others cannot release it', async () => {
    const r = new RLock();
    expect(r.acquireSync()).toBe(true);
    expect(r.acquireSync()).toBe(true);
    expect(await r.acquire()).toBe(true);
    expect(r._count).toBe(3);
    r.release();
    r.release();
    expect(r.locked()).toBe(true);
    r.release();
    expect(r.locked()).toBe(false);
    expect(() => r.release()).toThrow(AssertionError);
    expect(() => r.release()).toThrow(expect.objectContaining({ code: 'ERR_MP_ASSERTION' }));
  });

  it('a child cannot release (AssertionError) nor acquire the parent-held RLock', async () => {
    const r = new RLock();
    r.acquireSync();
    const out = RawArray('i', 2);
    const p = fork(() => {
      try {
        r.release();
      } catch (e) {
        out[0] = e instanceof AssertionError ? 1 : 2;
      }
      out[1] = r.acquireSync({ timeout: 100 }) ? 1 : 2;
    });
    await p.join(10_000);
    expect(p.exitCode).toBe(0);
    expect([...out]).toEqual([1, 2]);
    r.release();
  });

  it('recovers from a dead owner', async () => {
    const r = new RLock();
    const held = new Event();
    const p = fork(() => {
      r.acquireSync();
      r.acquireSync();
      held.set();
      setInterval(() => {}, 1000);
    });
    expect(held.waitSync(10_000)).toBe(true);
    p.kill();
    expect(r.acquireSync({ timeout: 5000 })).toBe(true);
    expect(r.ownerDied).toBe(true);
    expect(r._count).toBe(1);
    r.release();
    expect(r.locked()).toBe(false);
  });
});

describe('Semaphore / BoundedSemaphore', () => {
  it('counts; over-releasing a BoundedSemaphore is a ValueError', async () => {
    const s = new Semaphore(2);
    expect(s.getValue()).toBe(2);
    expect(s.acquireSync()).toBe(true);
    expect(await s.acquire()).toBe(true);
    expect(s.acquireSync({ block: false })).toBe(false);
    expect(s.locked()).toBe(true);
    const [r, dt] = timed(() => s.acquireSync({ timeout: 100 }));
    expect(r).toBe(false);
    expect(dt).toBeGreaterThanOrEqual(95);
    expect(dt).toBeLessThan(150);
    s.release();
    s.release();
    s.release(); // plain Semaphore may go above its initial value
    expect(s.getValue()).toBe(3);
    const b = new BoundedSemaphore(1);
    b.acquireSync();
    b.release();
    expect(() => b.release()).toThrow(ValueError);
    expect(b.getValue()).toBe(1);
    expect(() => new Semaphore(-1)).toThrow(ValueError);
    expect(() => new Semaphore(1.5)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
  });

  it('limits concurrency across processes', async () => {
    const sem = new Semaphore(2);
    const stats = RawArray('i', 2); // [inside now, max inside]
    const statsLock = new Lock();
    const work = () => {
      for (let i = 0; i < 200; i++) {
        sem.acquireSync();
        statsLock.acquireSync();
        const now = ++stats[0];
        if (now > stats[1]) stats[1] = now;
        statsLock.release();
        for (let k = 0; k < 2000; k++); // a little work inside
        statsLock.acquireSync();
        stats[0]--;
        statsLock.release();
        sem.release();
      }
    };
    const ps = [fork(work), fork(work), fork(work), fork(work)];
    expect(await joinAll(ps)).toEqual([0, 0, 0, 0]);
    expect(stats[0]).toBe(0);
    expect(stats[1]).toBeLessThanOrEqual(2);
    expect(sem.getValue()).toBe(2);
  });

  it('async acquire woken by another process', async () => {
    const sem = new Semaphore(0);
    const p = fork(() => {
      setTimeout(() => sem.release(), 50);
    });
    const [ok, dt] = await timedAsync(() => sem.acquire({ timeout: 5000 }));
    expect(ok).toBe(true);
    expect(dt).toBeLessThan(2000);
    await p.join(5000);
  });
});

describe('Semaphore: counts held by a dead process', () => {
  it('are returned to a waiter (ownerDied) when each process releases what it acquired', async () => {
    const sem = new BoundedSemaphore(2);
    const held = new Event();
    sem.acquireSync();
    sem.release(); // own acquire/release pairs keep recovery on
    const p = fork(() => {
      sem.acquireSync();
      sem.acquireSync();
      held.set();
      setInterval(() => {}, 1000);
    });
    expect(held.waitSync(10_000)).toBe(true);
    expect(sem.acquireSync({ block: false })).toBe(false);
    p.kill();
    const [ok, dt] = timed(() => sem.acquireSync({ timeout: 5000 }));
    expect(ok).toBe(true);
    expect(dt).toBeLessThan(1000);
    expect(sem.ownerDied).toBe(true);
    expect(sem.getValue()).toBe(1);
    expect(await sem.acquire({ timeout: 1000 })).toBe(true);
    expect(sem.ownerDied).toBe(false);
    sem.release();
    sem.release();
    expect(() => sem.release()).toThrow(ValueError);
  });

  it('are not guessed at once a process released a count it did not acquire (CPython semantics)', async () => {
    const sem = new Semaphore(0);
    const held = new Event();
    const p = fork(() => {
      sem.release(); // signalling use: counts have no owner any more
      sem.acquireSync();
      held.set();
      setInterval(() => {}, 1000);
    });
    expect(held.waitSync(10_000)).toBe(true);
    p.kill();
    await p.join(5000);
    expect(sem.acquireSync({ timeout: 300 })).toBe(false);
    expect(sem.getValue()).toBe(0);
  });
});

describe('Event', () => {
  it('set/clear/isSet; wait times out accurately', async () => {
    const e = new Event();
    expect(e.isSet()).toBe(false);
    const [r, dt] = timed(() => e.waitSync(100));
    expect(r).toBe(false);
    expect(dt).toBeGreaterThanOrEqual(95);
    expect(dt).toBeLessThan(150);
    const [r2, dt2] = await timedAsync(() => e.wait(100));
    expect(r2).toBe(false);
    expect(dt2).toBeGreaterThanOrEqual(95);
    expect(dt2).toBeLessThan(150);
    e.set();
    expect(e.isSet()).toBe(true);
    expect(e.waitSync(0)).toBe(true);
    expect(await e.wait()).toBe(true);
    e.clear();
    expect(e.isSet()).toBe(false);
  });

  it('a child set() wakes sync and async waiters in the parent', async () => {
    const e = new Event();
    const go = new Event();
    const p = fork(() => {
      go.waitSync(10_000);
      setTimeout(() => e.set(), 30);
    });
    const waiters = [e.wait(10_000), e.wait(10_000)];
    go.set();
    const [r, dt] = timed(() => e.waitSync(10_000));
    expect(r).toBe(true);
    expect(dt).toBeLessThan(5000);
    expect(await Promise.all(waiters)).toEqual([true, true]);
    await p.join(5000);
    expect(p.exitCode).toBe(0);
  });
});

describe('Condition', () => {
  it('wait/notify without holding the lock is an AssertionError', async () => {
    const c = new Condition();
    expect(() => c.waitSync(10)).toThrow(AssertionError);
    await expect(c.wait(10)).rejects.toBeInstanceOf(AssertionError);
    expect(() => c.notify()).toThrow(expect.objectContaining({ code: 'ERR_MP_ASSERTION' }));
    expect(() => c.notifyAll()).toThrow(AssertionError);
    c.acquireSync();
    const [r, dt] = timed(() => c.waitSync(80));
    expect(r).toBe(false);
    expect(dt).toBeGreaterThanOrEqual(75);
    expect(dt).toBeLessThan(130);
    expect(c.lock._isMine()).toBe(true); // re-acquired after the timeout
    c.notify(); // nobody waiting: fine
    c.release();
  });

  it('notify(1) wakes exactly one waiting process, notifyAll the rest', async () => {
    const c = new Condition(new Lock());
    const state = RawArray('i', 2); // [waiting, woken]
    const waiter = () => {
      c.acquireSync();
      state[0]++;
      const ok = c.waitSync(10_000);
      if (ok) state[1]++;
      c.release();
      process.exitCode = ok ? 0 : 3;
    };
    const ps = [fork(waiter), fork(waiter), fork(waiter)];
    const until = async (f: () => boolean) => {
      for (let i = 0; i < 500 && !f(); i++) await sleep(10);
      return f();
    };
    expect(await until(() => Atomics.load(state, 0) === 3)).toBe(true);
    c.acquireSync();
    c.notify(1);
    c.release();
    expect(await until(() => Atomics.load(state, 1) === 1)).toBe(true);
    await sleep(100);
    expect(Atomics.load(state, 1)).toBe(1);
    c.acquireSync();
    c.notifyAll();
    c.release();
    expect(await joinAll(ps)).toEqual([0, 0, 0]);
    expect(state[1]).toBe(3);
  });

  it('waitFor a predicate over shared state, async, across processes', async () => {
    const c = new Condition();
    const v = RawValue('i', 0);
    const p = fork(() => {
      for (let i = 1; i <= 5; i++) {
        c.acquireSync();
        v.value = i;
        c.notifyAll();
        c.release();
      }
    });
    await c.acquire();
    const r = await c.waitFor(() => v.value === 5, 10_000);
    expect(r).toBe(true);
    c.release();
    await p.join(5000);
    expect(p.exitCode).toBe(0);
    c.acquireSync();
    expect(c.waitForSync(() => v.value === 6, 50)).toBe(false);
    c.release();
  });
});

describe('Barrier', () => {
  it('4 processes over 100 cycles: each cycle every index once, action once per cycle', async () => {
    const parties = 4;
    const cycles = 100;
    const seen = RawArray('i', cycles * parties);
    const actions = RawValue('i', 0);
    const b = new Barrier(parties, { action: () => actions.add(1) });
    const worker = () => {
      for (let c = 0; c < cycles; c++) {
        const i = b.waitSync(10_000);
        Atomics.add(seen, c * parties + i, 1);
      }
    };
    const ps = [fork(worker), fork(worker), fork(worker)];
    for (let c = 0; c < cycles; c++) {
      const i = await b.wait(10_000);
      Atomics.add(seen, c * parties + i, 1);
    }
    expect(await joinAll(ps)).toEqual([0, 0, 0]);
    expect([...seen].every((x) => x === 1)).toBe(true);
    expect(actions.value).toBe(cycles);
    expect(b.nWaiting).toBe(0);
    expect(b.broken).toBe(false);
  });

  it('a timeout breaks it; abort and reset', async () => {
    const b = new Barrier(2);
    expect(b.parties).toBe(2);
    const [err, dt] = timed(() => {
      try {
        b.waitSync(80);
      } catch (e) {
        return e;
      }
    });
    expect(err).toBeInstanceOf(BrokenBarrierError);
    expect((err as BrokenBarrierError).code).toBe('ERR_MP_BROKEN_BARRIER');
    expect(dt).toBeGreaterThanOrEqual(75);
    expect(dt).toBeLessThan(150);
    expect(b.broken).toBe(true);
    await expect(b.wait()).rejects.toBeInstanceOf(BrokenBarrierError);
    b.reset();
    expect(b.broken).toBe(false);
    const w = b.wait(5000);
    await sleep(20);
    expect(b.nWaiting).toBe(1);
    b.abort();
    await expect(w).rejects.toBeInstanceOf(BrokenBarrierError);
    expect(() => new Barrier(0)).toThrow(ValueError);
  });

  it('an action that throws breaks the barrier for everyone', async () => {
    const b = new Barrier(2, {
      action: () => {
        throw new Error('boom');
      },
    });
    const p = fork(() => {
      try {
        b.waitSync(5000);
      } catch (e) {
        process.exitCode = e instanceof BrokenBarrierError ? 5 : e instanceof Error && e.message === 'boom' ? 6 : 1;
      }
    });
    let mine: unknown;
    try {
      await b.wait(5000);
    } catch (e) {
      mine = e;
    }
    await p.join(5000);
    // exactly one side ran the action (and got 'boom'), the other was broken
    const codes = [p.exitCode, mine instanceof BrokenBarrierError ? 5 : (mine as Error).message === 'boom' ? 6 : 1].sort();
    expect(codes).toEqual([5, 6]);
  });
});

describe('worker_threads', () => {
  it('a Worker reopens a Condition and an RLock from their descriptions; notify crosses threads', async () => {
    const dist = ensureDist();
    const cond = new Condition(); // over an RLock
    const flag = RawValue('i', 0);
    const worker = new Worker(
      `
      const { workerData, parentPort } = require('node:worker_threads');
      const sync = require(${JSON.stringify(dist + '/synchronize.js')});
      const c = sync.rebuild(workerData.cond);
      const flag = new Int32Array(workerData.flag.buffer, workerData.flag.byteOffset, 1);
      (async () => {
        await c.acquire();
        // The main thread holds nothing now; the RLock is owned by this thread only.
        parentPort.postMessage('waiting');
        const ok = await c.waitFor(() => Atomics.load(flag, 0) === 1, 10000);
        c.release();
        parentPort.postMessage(ok ? 'notified' : 'timeout');
      })();
      `,
      { eval: true, workerData: { cond: cond[kReduce](), flag: flag.array } },
    );
    const messages: string[] = [];
    const next = () => new Promise<string>((r) => worker.once('message', (m) => (messages.push(m), r(m))));
    try {
      expect(await next()).toBe('waiting');
      await cond.acquire(); // blocks until the worker waits (it released the lock)
      Atomics.store(flag.array, 0, 1);
      cond.notifyAll();
      cond.release();
      expect(await next()).toBe('notified');
    } finally {
      await worker.terminate();
    }
  });
});

describe('reopening by name in an unrelated process', () => {
  it('a spawned Node process attaches to a Lock, a Semaphore and a Value by their descriptions', () => {
    const dist = ensureDist();
    const lock = new Lock();
    const sem = new Semaphore(3);
    const v = Value('q', 40n) as SynchronizedValue<'q'>;
    lock.acquireSync();
    const desc = JSON.stringify({ lock: lock[kReduce](), sem: sem[kReduce](), v: v[kReduce]() });
    const r = spawnSync(
      process.execPath,
      [
        '-e',
        `
        const sync = require(${JSON.stringify(dist + '/synchronize.js')});
        const ct = require(${JSON.stringify(dist + '/sharedctypes.js')});
        const d = JSON.parse(process.argv[1]);
        const lock = sync.rebuild(d.lock), sem = sync.rebuild(d.sem);
        const v = ct.rebuildShared(d.v, sync.rebuild);
        const out = { locked: lock.locked(), sem: sem.getValue() };
        lock.release();               // any process may release a Lock
        sem.acquireSync();
        v.value = v.value + 2n;
        out.v = String(v.value);
        console.log(JSON.stringify(out));
        `,
        desc,
      ],
      { encoding: 'utf8', timeout: 10_000 },
    );
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ locked: true, sem: 3, v: '42' });
    expect(lock.locked()).toBe(false);
    expect(sem.getValue()).toBe(2);
    expect(v.value).toBe(42n);
  });
});

describe('contexts', () => {
  it('every context makes the synchronization and shared ctypes objects', () => {
    const ctx = getContext('fork');
    expect(ctx.Lock()).toBeInstanceOf(Lock);
    expect(ctx.RLock()).toBeInstanceOf(RLock);
    expect(ctx.Semaphore(2).getValue()).toBe(2);
    expect(ctx.BoundedSemaphore()).toBeInstanceOf(BoundedSemaphore);
    expect(ctx.Event()).toBeInstanceOf(Event);
    expect(ctx.Condition()).toBeInstanceOf(Condition);
    expect(ctx.Barrier(2).parties).toBe(2);
    expect((ctx.Value('i', 3) as SynchronizedValue<'i'>).value).toBe(3);
    expect(ctx.RawArray('d', 2)).toBeInstanceOf(Float64Array);
    expect(ctx.RawValue('b', 1).value).toBe(1);
    expect(ctx.Array('i', [1, 2], { lock: false })).toBeInstanceOf(Int32Array);
  });
});

describe('async waits', () => {
  it('many pending waits hold no thread-pool slot: fs still works', async () => {
    const { readFile } = await import('node:fs/promises');
    const lock = new Lock();
    const e = new Event();
    lock.acquireSync();
    const ac = new AbortController();
    setMaxListeners(32, ac.signal); // 16 waits share this signal on purpose
    const waits = [
      ...Array.from({ length: 8 }, () => lock.acquire({ signal: ac.signal })),
      ...Array.from({ length: 8 }, () => e.wait(undefined, { signal: ac.signal })),
    ];
    const [, dt] = await timedAsync(() => Promise.all(Array.from({ length: 8 }, () => readFile(__filename))));
    expect(dt).toBeLessThan(1000);
    ac.abort();
    const settled = await Promise.allSettled(waits);
    expect(settled.every((s) => s.status === 'rejected' && (s.reason as { code: string }).code === 'ABORT_ERR')).toBe(true);
    lock.release();
  });

  it('an aborted Condition.wait re-takes the lock and withdraws, so notify(1) reaches the next waiter', async () => {
    const c = new Condition(new Lock());
    await c.acquire();
    const ac = new AbortController();
    const aborted = c.wait(undefined, { signal: ac.signal });
    setTimeout(() => ac.abort(), 20);
    await expect(aborted).rejects.toMatchObject({ code: 'ABORT_ERR' });
    expect(c.lock._isMine()).toBe(true);
    expect(inspect(c)).toMatch(/, 0\)>$/); // no registered sleeper left behind
    const woken = RawValue('i', 0);
    const p = fork(() => {
      c.acquireSync();
      woken.value = c.waitSync(5000) ? 1 : 2;
      c.release();
    });
    c.release();
    // notify(1) until it lands: before the child waits it is a no-op (nobody registered); the
    // aborted waiter must not be counted, or the first notify after the child waits would be lost.
    for (let i = 0; i < 200 && woken.value === 0; i++) {
      await c.acquire();
      c.notify(1);
      c.release();
      await sleep(10);
    }
    await p.join(5000);
    expect(woken.value).toBe(1);
  });
});
