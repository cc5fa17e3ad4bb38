import * as fs from 'node:fs';
import * as v8 from 'node:v8';

import { afterEach, describe, expect, it } from 'vitest';

import { AsyncResult, CancelledError, defaultChunksize, getContext, Pool, TimeoutError, ValueError, WorkerLostError } from '../lib/index';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { createRequire } from 'node:module';

import { isDead, runFixture, waitUntil } from './fixtures/children';

const pools: Pool[] = [];
const seenPids = new Set<number>();

function makePool(opts?: ConstructorParameters<typeof Pool>[0]): Pool {
  const p = new Pool(opts);
  pools.push(p);
  for (const pid of p.pids) seenPids.add(pid);
  return p;
}

afterEach(async () => {
  for (const p of pools.splice(0)) {
    for (const pid of p.pids) seenPids.add(pid);
    await p.terminate();
  }
  // No worker of any pool outlives its test.
  const pids = [...seenPids];
  seenPids.clear();
  expect(await waitUntil(() => pids.every(isDead), 2000)).toBe(true);
});

/** The worker pids once the workers have started (they fork on the next event-loop turn). */
async function started(pool: { pids: number[]; processes: number }): Promise<number[]> {
  expect(await waitUntil(() => pool.pids.length === pool.processes, 5000)).toBe(true);
  for (const pid of pool.pids) seenPids.add(pid);
  return pool.pids;
}

const sleepSync = (ms: number): void => {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
};

class MyError extends Error {
  extra = 42;
}

describe('Pool', () => {
  it('apply and applyAsync run closures in worker processes', async () => {
    const pool = makePool(2);
    const base = 40;
    expect(await pool.apply((a: number, b: number) => base + a + b, [1, 1])).toBe(42);
    const pid = await pool.apply(() => process.pid);
    expect(pid).not.toBe(process.pid);
    expect(pool.pids).toContain(pid);
    const got: number[] = [];
    const r = pool.applyAsync((x: number) => x * 2, [21], { callback: (v) => got.push(v) });
    expect(r).toBeInstanceOf(AsyncResult);
    expect(await r).toBe(42);
    expect(r.ready()).toBe(true);
    expect(r.successful()).toBe(true);
    await new Promise((res) => setImmediate(res));
    expect(got).toEqual([42]);
    // async functions are awaited in the worker
    expect(await pool.apply(async (x: number) => new Promise((res) => setTimeout(() => res(x + 1), 5)), [1])).toBe(2);
    // a chunk whose items return a promise here and a value there keeps every result in place
    const mixed = (x: number): number | Promise<number> => (x % 3 === 0 ? new Promise((res) => setTimeout(() => res(x * 10), 1)) : x * 10);
    const xs = Array.from({ length: 100 }, (_, i) => i);
    expect(await pool.map(mixed, xs, { chunksize: 25 })).toEqual(xs.map((x) => x * 10));
    expect(await pool.starmap((a: number, b: number) => (a % 2 ? Promise.resolve(a + b) : a - b), xs.map((x): [number, number] => [x, 1]), { chunksize: 7 })).toEqual(
      xs.map((x) => (x % 2 ? x + 1 : x - 1)),
    );
  });

  it('AsyncResult: get(timeout) rejects with TimeoutError, wait, successful before ready', async () => {
    const pool = makePool(1);
    const r = pool.applyAsync(() => {
      sleepSync(300);
      return 'late';
    });
    expect(r.ready()).toBe(false);
    expect(() => r.successful()).toThrow(ValueError);
    await expect(r.get(20)).rejects.toBeInstanceOf(TimeoutError);
    await r.wait(10);
    expect(r.ready()).toBe(false);
    await r.wait(5000);
    expect(r.ready()).toBe(true);
    expect(await r.get(0)).toBe('late');
    const errs: unknown[] = [];
    const bad = pool.applyAsync(
      () => {
        throw new RangeError('nope');
      },
      [],
      { errorCallback: (e) => errs.push(e) },
    );
    await bad.wait(5000);
    expect(bad.successful()).toBe(false);
    await new Promise((res) => setImmediate(res));
    expect(errs[0]).toBeInstanceOf(RangeError);
  });

  it('map keeps input order, for every chunksize, and starmap spreads arguments', async () => {
    const pool = makePool(2);
    const xs = Array.from({ length: 1000 }, (_, i) => i);
    const slowOdd = (x: number): number => {
      if (x % 97 === 1) sleepSync(2);
      return x * x;
    };
    expect(await pool.map(slowOdd, xs)).toEqual(xs.map((x) => x * x));
    expect(await pool.map(slowOdd, xs, { chunksize: 1 })).toEqual(xs.map((x) => x * x));
    expect(await pool.map(slowOdd, new Set(xs), { chunksize: 333 })).toEqual(xs.map((x) => x * x));
    expect(await pool.map((x: number) => x, [])).toEqual([]);
    expect(await pool.starmap((a: number, b: string) => `${b}${a}`, [[1, 'a'], [2, 'b']])).toEqual(['a1', 'b2']);
    expect(await pool.mapAsync((x: number) => -x, [1, 2, 3]).get(5000)).toEqual([-1, -2, -3]);
    expect(await pool.starmapAsync((a: number, b: number) => a * b, [[2, 3]])).toEqual([6]);
    // async functions (and functions returning a promise for some items) are awaited per item
    const mixed = (x: number): number | Promise<number> => (x % 2 ? new Promise((r) => setTimeout(() => r(x * 10), 1)) : x * 10);
    expect(await pool.map(mixed, [1, 2, 3, 4, 5, 6, 7], { chunksize: 4 })).toEqual([10, 20, 30, 40, 50, 60, 70]);
    expect(await pool.starmap(async (a: number, b: number) => a - b, [[5, 1], [9, 3]], { chunksize: 2 })).toEqual([4, 6]);
  });

  it('map chunks of every kind of item and result come back whole and in order', async () => {
    const pool = makePool(2);
    const n = 3001;
    const xs = Array.from({ length: n }, (_, i) => i);
    // numbers (packed both ways), floats, strings and objects; a last chunk shorter than the rest
    expect(await pool.map((x: number) => x * 2, xs, { chunksize: 500 })).toEqual(xs.map((x) => x * 2));
    expect(await pool.map((x: number) => x / 4, xs, { chunksize: 1000 })).toEqual(xs.map((x) => x / 4));
    const objs = xs.map((i) => ({ i, s: `s${i}` }));
    expect(await pool.map((o: { i: number; s: string }) => `${o.s}:${o.i}`, objs, { chunksize: 64 })).toEqual(objs.map((o) => `${o.s}:${o.i}`));
    // items and results only v8.serialize can carry (a Map): the general codec, both ways
    const maps = xs.slice(0, 300).map((i) => new Map([[i, i + 1]]));
    const got = await pool.map((m: Map<number, number>) => new Map([...m].map(([k, v]) => [v, k])), maps, { chunksize: 7 });
    expect(got.map((m) => [...m][0])).toEqual(maps.map((m) => [...m].map(([k, v]) => [v, k])[0]));
    // many small chunks sent to a worker together; mixed results per chunk (numbers, null, arrays)
    const mixed = (x: number): unknown => (x % 3 === 0 ? x : x % 3 === 1 ? null : [x]);
    expect(await pool.map(mixed, xs, { chunksize: 3 })).toEqual(xs.map(mixed));
    // an error in one chunk rejects the map; the pool goes on
    await expect(
      pool.map((x: number) => {
        if (x === 1234) throw new RangeError('bad item');
        return x;
      }, xs, { chunksize: 100 }),
    ).rejects.toThrow('bad item');
    expect(await pool.map((x: number) => x + 1, xs.slice(0, 20), { chunksize: 8 })).toEqual(xs.slice(0, 20).map((x) => x + 1));
  });

  it('integers arrive as small integers, also after arrays of doubles were decoded (no deoptimization storm)', async () => {
    // V8 internals, read with natives syntax (enabled for the functions compiled below only).
    v8.setFlagsFromString('--allow-natives-syntax');
    const isSmi = new Function('x', 'return %IsSmi(x)') as (x: unknown) => boolean;
    const hasDoubles = new Function('a', 'return %HasDoubleElements(a)') as (a: unknown) => boolean;
    const xs = Array.from({ length: 4000 }, (_, i) => 1_000_000 + i);
    {
      // The parent decodes arrays holding doubles, many times (V8 then remembered "double array"
      // for the decoder's arrays, and later integer arrays came out as heap numbers).
      const pool = makePool(2);
      for (let k = 0; k < 20; k++) await pool.map((x: number) => [x, x + 0.5], xs.slice(0, 200), { chunksize: 20 });
      await pool.terminate();
    }
    // Workers forked now inherit that decoder: the items they receive are still small integers.
    const pool = makePool(2);
    const smis = await pool.map((x: number) => isSmi(x), xs);
    expect(smis.filter((b) => !b).length).toBe(0);
    // And the results the parent decodes are too.
    const back = await pool.map((x: number) => [x, x + 1], xs);
    expect(back.every((pair) => !hasDoubles(pair) && isSmi(pair[0]) && isSmi(pair[1]))).toBe(true);
    const flat = await pool.map((x: number) => x, xs);
    expect(!hasDoubles(flat) && flat.every(isSmi)).toBe(true);
  });
  it('moves large arguments and results both ways without deadlocking', async () => {
    const pool = makePool(2);
    const big = Array.from({ length: 12 }, (_, i) => String.fromCharCode(97 + i).repeat(1 << 20));
    const echoed = await pool.map((s: string) => s + s, big, { chunksize: 1 });
    expect(echoed.map((s) => s.length)).toEqual(big.map((s) => 2 * s.length));
    expect(echoed[11]!.slice(0, 3)).toBe('lll');
    const sizes = await Promise.all(big.map((s) => pool.apply((x: string) => x.length, [s])));
    expect(sizes).toEqual(big.map((s) => s.length));
    // imap bounds its read-ahead in bytes too: 1 MiB items, at most ~32 MiB out
    let pulled = 0;
    function* megabytes(): Generator<string> {
      for (;;) {
        pulled++;
        yield 'm'.repeat(1 << 20);
      }
    }
    let consumed = 0;
    let maxAhead = 0;
    for await (const len of pool.imap((s: string) => s.length, megabytes())) {
      expect(len).toBe(1 << 20);
      maxAhead = Math.max(maxAhead, pulled - ++consumed);
      if (consumed === 100) break;
    }
    expect(maxAhead).toBeLessThan(48);
  });

  it("uses CPython's default chunksize rule", () => {
    expect(defaultChunksize(200_000, 2)).toBe(25_000);
    expect(defaultChunksize(10, 2)).toBe(2);
    expect(defaultChunksize(9, 2)).toBe(2);
    expect(defaultChunksize(8, 2)).toBe(1);
    expect(defaultChunksize(0, 4)).toBe(1);
  });

  it('runs closures created after the pool, reusing workers while the function is known', async () => {
    const pool = makePool(2);
    const xs = [1, 2, 3];
    for (let k = 0; k < 5; k++) {
      expect(await pool.map((x: number) => x * k, xs)).toEqual(xs.map((x) => x * k));
    }
    const f = (x: number): number => x + 1;
    await pool.map(f, [1, 2, 3, 4]);
    const pidsAfterFirst = pool.pids.slice().sort();
    for (let i = 0; i < 5; i++) await pool.map(f, [1, 2, 3, 4]);
    expect(pool.pids.slice().sort()).toEqual(pidsAfterFirst);
  });

  it('a function exported by a CommonJS module after the pool was made runs without re-forking the workers', async () => {
    const pool = makePool(2);
    await pool.map((x: number) => x, [1, 2]); // workers up
    const before = pool.pids.slice().sort();
    const { double } = createRequire(__filename)('./fixtures/cjs-targets.cjs') as { double: (x: number) => number };
    expect(await pool.map(double, [1, 2, 3, 4, 5, 6, 7, 8], { chunksize: 1 })).toEqual([2, 4, 6, 8, 10, 12, 14, 16]);
    expect(pool.pids.slice().sort()).toEqual(before);
  });

  it('initializer runs in each worker with initargs', async () => {
    const state = { tag: 'unset' };
    const pool = makePool({
      processes: 2,
      initializer: (tag: string) => {
        state.tag = `${tag}:${process.pid}`;
      },
      initargs: ['init'],
    });
    const tags = await pool.map(() => state.tag, [1, 2, 3, 4], { chunksize: 1 });
    for (const t of tags) expect(t).toMatch(/^init:\d+$/);
    expect(state.tag).toBe('unset');
  });

  it('an initializer that throws fails the tasks with its error instead of respawning forever', async () => {
    const pool = makePool({
      processes: 1,
      initializer: () => {
        throw new Error('init failed');
      },
    });
    await expect(pool.apply(() => 1)).rejects.toThrow('init failed');
  });

  it('an initializer that kills its worker fails the task with WorkerLostError; respawns back off', async () => {
    const pool = makePool({ processes: 1, initializer: () => process.exit(4) });
    const e = await pool.apply((x: number) => x, [1]).catch((err) => err);
    expect(e).toBeInstanceOf(WorkerLostError);
    expect((e as Error).message).toMatch(/exited with code 4/);
    const seen = new Set<number>();
    const end = Date.now() + 500;
    while (Date.now() < end) {
      for (const pid of pool.pids) seen.add(pid);
      await new Promise((r) => setTimeout(r, 5));
    }
    for (const pid of seen) seenPids.add(pid);
    expect(seen.size).toBeLessThan(15); // not a tight fork loop
  });

  it('task errors keep their class name, message, properties and remote stack; the worker survives', async () => {
    const pool = makePool(1);
    function deepInWorker(): never {
      throw new TypeError('bad type here');
    }
    const thrower = (kind: string): string => {
      if (kind === 'type') deepInWorker();
      if (kind === 'custom') throw new MyError('custom');
      if (kind === 'lib') throw new ValueError('lib error');
      if (kind === 'value') throw { reason: 7 };
      if (kind === 'syntax') throw new SyntaxError('five');
      return kind;
    };
    await pool.apply(thrower, ['warm']);
    const pids = pool.pids;
    const e1 = (await pool.apply(thrower, ['type']).catch((e) => e)) as Error;
    expect(e1).toBeInstanceOf(TypeError);
    expect(e1.message).toBe('bad type here');
    expect(e1.stack).toContain('deepInWorker');
    expect(e1.stack).toMatch(/pool worker pid \d+/);
    const e2 = (await pool.apply(thrower, ['custom']).catch((e) => e)) as Error & { extra: number };
    expect(e2.name).toBe('MyError');
    expect(e2.constructor.name).toBe('MyError');
    expect(e2.message).toBe('custom');
    expect(e2.extra).toBe(42);
    expect(e2.stack).toContain('thrower');
    const e3 = await pool.apply(thrower, ['lib']).catch((e) => e);
    expect(e3).toBeInstanceOf(ValueError);
    expect((e3 as ValueError).code).toBe('ERR_MP_VALUE');
    // a thrown non-Error value arrives as is
    expect(await pool.apply(thrower, ['value']).catch((e) => e)).toEqual({ reason: 7 });
    // a map fails with the first error
    await expect(pool.map(thrower, ['a', 'b', 'syntax', 'c'], { chunksize: 1 })).rejects.toThrow(SyntaxError);
    expect(pool.pids).toEqual(pids);
    expect(await pool.apply(thrower, ['alive'])).toBe('alive');
    expect(pool.pids).toEqual(pids);
  });

  it('an unserializable result or argument fails that task only', async () => {
    const pool = makePool(1);
    const results = await Promise.allSettled([
      pool.apply(() => 1),
      pool.apply(() => () => 'a function cannot travel'),
      pool.apply((x: unknown) => x, [Symbol('no')]),
      pool.apply(() => 2),
    ]);
    expect(results[0]).toEqual({ status: 'fulfilled', value: 1 });
    expect(results[1]!.status).toBe('rejected');
    expect(String((results[1] as PromiseRejectedResult).reason.message)).toMatch(/result could not be sent/);
    expect(results[2]!.status).toBe('rejected');
    expect(results[3]).toEqual({ status: 'fulfilled', value: 2 });
  });

  it('a worker that dies (exit, SIGKILL, segfault) fails its task with WorkerLostError and is replaced', async () => {
    const pool = makePool(2);
    await pool.map((x: number) => x, [1, 2, 3, 4], { chunksize: 1 });
    const before = pool.pids;
    const e1 = await pool.apply(() => process.exit(3)).catch((e) => e);
    expect(e1).toBeInstanceOf(WorkerLostError);
    expect((e1 as Error).message).toMatch(/exited with code 3/);
    const e2 = await pool.apply(() => process.kill(process.pid, 'SIGKILL')).catch((e) => e);
    expect(e2).toBeInstanceOf(WorkerLostError);
    expect((e2 as Error).message).toMatch(/signal 9/);
    const e3 = await pool.apply(() => process.kill(process.pid, 'SIGSEGV')).catch((e) => e);
    expect(e3).toBeInstanceOf(WorkerLostError);
    // replaced: the pool is full again and works
    expect(await pool.map((x: number) => x + 1, [1, 2, 3], { chunksize: 1 })).toEqual([2, 3, 4]);
    expect(await waitUntil(() => pool.pids.length === 2, 2000)).toBe(true);
    for (const pid of before) seenPids.add(pid);
    expect(pool.pids.filter((p) => before.includes(p)).length).toBeLessThan(2);
  });

  it('worker death during a map rejects the map with WorkerLostError, never hangs', async () => {
    const pool = makePool(2);
    const parent = process.pid;
    const r = pool.map(
      (x: number) => {
        if (x === 50 && process.ppid === parent) process.kill(process.pid, 'SIGKILL');
        return x;
      },
      Array.from({ length: 100 }, (_, i) => i),
      { chunksize: 1 },
    );
    await expect(r).rejects.toBeInstanceOf(WorkerLostError);
    expect(await pool.apply(() => 'ok')).toBe('ok');
  });

  it('maxTasksPerChild replaces workers', async () => {
    const pool = makePool({ processes: 1, maxTasksPerChild: 2 });
    const pids: number[] = [];
    const getPid = (): number => process.pid;
    for (let i = 0; i < 6; i++) pids.push(await pool.apply(getPid));
    for (const p of pids) seenPids.add(p);
    expect(pids[0]).toBe(pids[1]);
    expect(pids[2]).toBe(pids[3]);
    expect(new Set(pids).size).toBe(3);
    const r = await pool.map((x: number) => [x, process.pid], Array.from({ length: 10 }, (_, i) => i), { chunksize: 1 });
    expect(r.map((p) => p[0])).toEqual(Array.from({ length: 10 }, (_, i) => i));
    for (const [, p] of r) seenPids.add(p!);
    expect(new Set(r.map((p) => p[1])).size).toBeGreaterThanOrEqual(5);
  });

  it('imap pulls an endless generator lazily with bounded memory; imapUnordered yields everything', async () => {
    const pool = makePool(2);
    let pulled = 0;
    function* naturals(): Generator<number> {
      for (let i = 0; ; i++) {
        pulled++;
        yield i;
      }
    }
    let expected = 0;
    let maxAhead = 0;
    for await (const v of pool.imap((x: number) => x * 2, naturals(), { chunksize: 7 })) {
      expect(v).toBe(expected * 2);
      expected++;
      maxAhead = Math.max(maxAhead, pulled - expected);
      if (expected === 20_000) break;
    }
    expect(maxAhead).toBeLessThan(2000);
    const pulledAtBreak = pulled;
    await new Promise((r) => setTimeout(r, 20));
    expect(pulled).toBe(pulledAtBreak); // nothing pulled after break
    const got: number[] = [];
    for await (const v of pool.imapUnordered((x: number) => x + 1, [1, 2, 3, 4, 5, 6, 7])) got.push(v);
    expect(got.sort()).toEqual([2, 3, 4, 5, 6, 7, 8]);
    // errors end the iteration with the task's error
    const it = pool.imap((x: number) => {
      if (x === 3) throw new Error('three');
      return x;
    }, [1, 2, 3, 4]);
    const seen: number[] = [];
    await expect(
      (async () => {
        for await (const v of it) seen.push(v);
      })(),
    ).rejects.toThrow('three');
    expect(seen).toEqual([1, 2]);
  });

  it('imap pulls an async iterable lazily too, and reports its errors', async () => {
    const pool = makePool(2);
    let pulled = 0;
    async function* slowNaturals(): AsyncGenerator<number> {
      for (let i = 0; ; i++) {
        if (i % 100 === 0) await new Promise((r) => setTimeout(r, 1));
        pulled++;
        yield i;
      }
    }
    let n = 0;
    let maxAhead = 0;
    for await (const v of pool.imap((x: number) => x + 1, slowNaturals(), { chunksize: 3 })) {
      expect(v).toBe(++n);
      maxAhead = Math.max(maxAhead, pulled - n);
      if (n === 3000) break;
    }
    expect(maxAhead).toBeLessThan(2000);
    async function* few(): AsyncGenerator<number> {
      yield 1;
      await new Promise((r) => setTimeout(r, 5));
      yield 2;
      yield 3;
    }
    const got: number[] = [];
    for await (const v of pool.imapUnordered((x: number) => x * 2, few(), { chunksize: 2 })) got.push(v);
    expect(got.sort()).toEqual([2, 4, 6]);
    async function* broken(): AsyncGenerator<number> {
      yield 1;
      throw new Error('source broke');
    }
    await expect(
      (async () => {
        for await (const v of pool.imap((x: number) => x, broken())) void v;
      })(),
    ).rejects.toThrow('source broke');
  });

  it('close, join and submit after close', async () => {
    const pool = makePool(2);
    await expect(pool.join()).rejects.toBeInstanceOf(ValueError);
    const r = pool.map((x: number) => {
      sleepSync(20);
      return x;
    }, [1, 2, 3, 4], { chunksize: 1 });
    const pids = await started(pool);
    pool.close();
    pool.close(); // idempotent
    expect(() => pool.applyAsync(() => 1)).toThrow('Pool not running');
    await expect(pool.apply(() => 1)).rejects.toBeInstanceOf(ValueError);
    await pool.join();
    expect(await r).toEqual([1, 2, 3, 4]);
    for (const pid of pids) expect(isDead(pid)).toBe(true);
  });

  it('terminate kills running tasks within a second; pending work rejects with CancelledError', async () => {
    const pool = makePool(2);
    const pids = await started(pool);
    const rs = [1, 2, 3, 4].map(() =>
      pool.apply(() => {
        sleepSync(20_000);
      }),
    );
    await new Promise((r) => setTimeout(r, 50));
    const t0 = Date.now();
    await pool.terminate();
    expect(Date.now() - t0).toBeLessThan(1000);
    for (const r of rs) await expect(r).rejects.toBeInstanceOf(CancelledError);
    for (const pid of pids) expect(isDead(pid)).toBe(true);
    await pool.join();
    expect(() => pool.applyAsync(() => 1)).toThrow(ValueError);
  });

  it('Symbol.asyncDispose terminates the pool', async () => {
    const pool = makePool(1);
    const pids = await started(pool);
    await pool[Symbol.asyncDispose]();
    for (const pid of pids) expect(isDead(pid)).toBe(true);
  });

  it('an AbortSignal cancels pending work', async () => {
    const pool = makePool(1);
    const ac = new AbortController();
    const slow = pool.apply(() => {
      sleepSync(200);
      return 1;
    });
    const later = pool.map((x: number) => x, [1, 2, 3], { signal: ac.signal });
    const later2 = pool.apply(() => 2, [], { signal: ac.signal });
    ac.abort(new CancelledError('stop'));
    await expect(later).rejects.toThrow('stop');
    await expect(later2).rejects.toThrow('stop');
    expect(await slow).toBe(1);
    const pre = AbortSignal.abort();
    await expect(pool.apply(() => 1, [], { signal: pre })).rejects.toBeDefined();
  });

  it('validates arguments', async () => {
    expect(() => new Pool(0)).toThrow(ValueError);
    expect(() => new Pool({ processes: 1.5 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => new Pool({ maxTasksPerChild: 0 })).toThrow(ValueError);
    // spawn/forkserver workers take functions by reference: a closure initializer fails at once
    const k = 1;
    expect(() => new Pool({ processes: 1, ctx: getContext('spawn'), initializer: () => k })).toThrow(
      expect.objectContaining({ code: 'ERR_MP_NOT_REFERENCEABLE' }),
    );
    const pool = makePool(1);
    expect(() => pool.applyAsync(42 as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => pool.mapAsync((x: number) => x, [1], { chunksize: 0 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => pool.imap((x: number) => x, 5 as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(fs.existsSync(`/proc/${(await started(pool))[0]}`)).toBe(true);
  });

  it('a program that never closes its pool still exits, and leaves no worker behind', async () => {
    const r = await runFixture('pool-unclosed.js', [], 20_000);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('result [3,6,9,12]');
    const pids = r.stdout.match(/pids (.*)/)![1]!.split(' ').map(Number);
    expect(pids).toHaveLength(2);
    expect(await waitUntil(() => pids.every(isDead), 2000)).toBe(true);
  });

  it('tasks that kill their workers again and again: each fails, the replacements keep the program alive', async () => {
    const r = await runFixture('pool-unclosed.js', ['deaths'], 20_000);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('lost 6');
    expect(r.stdout).toContain('after 42');
  });

  it('join() keeps the program alive until the workers have exited', async () => {
    const r = await runFixture('pool-unclosed.js', ['join'], 20_000);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('joined');
  });

  it('workers die with their parent (SIGKILL), idle or busy', async () => {
    const child = spawn(process.execPath, ['--single-threaded', path.join(__dirname, 'fixtures', 'pool-unclosed.js'), 'hang'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      let out = '';
      child.stdout!.on('data', (d) => (out += d));
      expect(await waitUntil(() => out.includes('pids '), 10_000)).toBe(true);
      const pids = out.match(/pids (.*)/)![1]!.split(' ').map(Number);
      await new Promise((r) => setTimeout(r, 50));
      child.kill('SIGKILL');
      expect(await waitUntil(() => pids.every(isDead), 3000)).toBe(true);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('a pool made in the continuation of a join (a native callback) works', async () => {
    const first = makePool(1);
    expect(await first.apply((x: number) => x, [1])).toBe(1);
    first.close();
    await first.join();
    const second = makePool(2);
    expect(await second.map((x: number) => x + 1, [1, 2, 3], { chunksize: 1 })).toEqual([2, 3, 4]);
  });
});
