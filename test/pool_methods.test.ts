// Pool and ProcessPoolExecutor under every start method. Under spawn and forkserver the workers
// are fresh processes that take functions by reference (exported from test/fixtures, which a
// plain node can import); under fork the same exported functions work too.
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';

import { getContext, Pool, ProcessPoolExecutor, WorkerLostError, BrokenProcessPool, type StartMethod } from '../lib/index';

type Targets = typeof import('./fixtures/start-targets.mjs', { with: { 'resolution-mode': 'import' } });
let T: Targets;
beforeAll(async () => {
  T = await import('./fixtures/start-targets.mjs');
});

const pools: { terminate(): unknown }[] = [];
afterEach(async () => {
  for (const p of pools.splice(0)) await p.terminate();
});

describe.each(['fork', 'forkserver', 'spawn'] as StartMethod[])('Pool(%s)', (method) => {
  const ctx = getContext(method);

  it('ctx.Pool() / ctx.ProcessPoolExecutor() use the context; workers (pids) exist when the constructor returns', async () => {
    const pool = ctx.Pool(2);
    pools.push(pool);
    expect(pool.pids).toHaveLength(2);
    const who = await pool.apply(T.whoAmI);
    expect(pool.pids).toContain(who.pid);
    // The worker's parent: us (fork, spawn) or the forkserver.
    const ppid = Number(fs.readFileSync(`/proc/${who.pid}/stat`, 'utf8').split(' ')[3]);
    if (method === 'forkserver') expect(ppid).not.toBe(process.pid);
    else expect(ppid).toBe(process.pid);
    pool.close();
    await pool.join();
    const ex = ctx.ProcessPoolExecutor({ maxWorkers: 1 });
    pools.push({ terminate: () => ex.shutdown({ wait: false, cancelFutures: true }) });
    const sums: number[] = [];
    for await (const v of ex.map(T.addPair, [1, 2, 3], [10, 20, 30, 40], { timeout: 10_000 })) sums.push(v as number);
    expect(sums).toEqual([11, 22, 33]); // several iterables, shortest wins
    await ex.shutdown();
  });

  it('map / starmap / apply / imap keep order, run the initializer once per worker, and report errors with their class and stack', async () => {
    const pool = new Pool({ processes: 2, ctx, initializer: T.initWorker, initargs: [method] });
    pools.push(pool);
    expect(await pool.map(T.square, [1, 2, 3, 4, 5, 6, 7], { chunksize: 2 })).toEqual([1, 4, 9, 16, 25, 36, 49]);
    expect(await pool.starmap(T.addPair, [[1, 2], [3, 4]])).toEqual([3, 7]);
    expect(await pool.apply(T.slowSquare, [9])).toBe(81);
    const out: number[] = [];
    for await (const v of pool.imap(T.square, (function* () { for (let i = 0; i < 20; i++) yield i; })())) out.push(v);
    expect(out).toEqual(Array.from({ length: 20 }, (_, i) => i * i));
    const who = await Promise.all(Array.from({ length: 6 }, () => pool.apply(T.whoAmI)));
    for (const w of who) expect(w.init).toBe(`${method}:${w.pid}`);
    expect(new Set(who.map((w) => w.pid)).size).toBeLessThanOrEqual(2);
    const err = await pool.apply(T.failWith, ['bad input']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RangeError);
    expect((err as Error).message).toBe('bad input');
    expect((err as Error & { code?: string }).code).toBe('E_FIXTURE');
    expect(String((err as Error).stack)).toContain('failWith');
    expect(await pool.apply(T.square, [3])).toBe(9); // the worker survived
    pool.close();
    await pool.join();
  });

  it('a worker killed mid-task fails that task with WorkerLostError and is replaced; handles travel as args', async () => {
    const pool = new Pool({ processes: 1, ctx });
    pools.push(pool);
    const before = await pool.apply(T.whoAmI);
    await expect(pool.apply(T.dieNow)).rejects.toBeInstanceOf(WorkerLostError);
    const after = await pool.apply(T.whoAmI);
    expect(after.pid).not.toBe(before.pid);
    const v = ctx.Value('i', 0);
    expect(await pool.map(T.bumpValue, [v, v, v])).toHaveLength(3);
    expect(v.value).toBe(3);
    pool.close();
    await pool.join();
  });

  it('maxTasksPerChild replaces workers; terminate ends everything', async () => {
    const pool = new Pool({ processes: 1, ctx, maxTasksPerChild: 2 });
    pools.push(pool);
    const pids = new Set<number>();
    for (let i = 0; i < 6; i++) pids.add((await pool.apply(T.whoAmI)).pid);
    expect(pids.size).toBe(3);
    const pending = pool.apply(T.hang).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    await pool.terminate();
    expect(Date.now() - t0).toBeLessThan(1500);
    expect(await pending).toBeInstanceOf(Error);
  });

  it('an initializer and tasks exported by a CommonJS module run by reference', async () => {
    const cjs = createRequire(__filename)('./fixtures/cjs-targets.cjs') as { markInit(tag: string): void; readInit(): string | null; double(x: number): number };
    const pool = new Pool({ processes: 1, ctx, initializer: cjs.markInit, initargs: [method] });
    pools.push(pool);
    expect(await pool.apply(cjs.readInit)).toBe(`${method}:${pool.pids[0]}`);
    expect(await pool.map(cjs.double, [1, 2, 3])).toEqual([2, 4, 6]);
    pool.close();
    await pool.join();
  });

  it('ProcessPoolExecutor: submit, map, a dead worker breaks the pool', async () => {
    const ex = new ProcessPoolExecutor({ maxWorkers: 2, ctx });
    pools.push({ terminate: () => ex.shutdown({ wait: false, cancelFutures: true }) });
    expect(await ex.submit(T.addPair, 2, 3)).toBe(5);
    const got: number[] = [];
    for await (const v of ex.map(T.square, [1, 2, 3])) got.push(v);
    expect(got).toEqual([1, 4, 9]);
    await expect(ex.submit(T.dieNow)).rejects.toBeInstanceOf(BrokenProcessPool);
    expect(() => ex.submit(T.square, 2)).toThrow(BrokenProcessPool);
    await ex.shutdown();
  });
});

describe.each(['forkserver', 'spawn'] as StartMethod[])('Pool(%s) and closures', (method) => {
  it('a closure is refused at once with ERR_MP_NOT_REFERENCEABLE and the pool keeps working', async () => {
    const pool = new Pool({ processes: 1, ctx: getContext(method) });
    pools.push(pool);
    const k = 3;
    expect(() => pool.applyAsync((x: number) => x * k, [1])).toThrow(expect.objectContaining({ code: 'ERR_MP_NOT_REFERENCEABLE' }));
    await expect(Promise.resolve().then(() => pool.map((x: number) => x * k, [1]))).rejects.toMatchObject({ code: 'ERR_MP_NOT_REFERENCEABLE' });
    expect(await pool.apply(T.square, [4])).toBe(16);
    pool.close();
    await pool.join();
  });
});
