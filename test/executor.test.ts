import { afterEach, describe, expect, it } from 'vitest';

import {
  ALL_COMPLETED,
  asCompleted,
  BrokenProcessPool,
  CancelledError,
  FIRST_COMPLETED,
  FIRST_EXCEPTION,
  Future,
  ProcessPoolExecutor,
  RuntimeError,
  TimeoutError,
  wait,
} from '../lib/index';
import { isDead, waitUntil } from './fixtures/children';

const executors: ProcessPoolExecutor[] = [];
const seenPids = new Set<number>();

function makeExecutor(opts?: ConstructorParameters<typeof ProcessPoolExecutor>[0]): ProcessPoolExecutor {
  const ex = new ProcessPoolExecutor(opts);
  executors.push(ex);
  for (const pid of ex.pids) seenPids.add(pid);
  return ex;
}

afterEach(async () => {
  for (const ex of executors.splice(0)) {
    for (const pid of ex.pids) seenPids.add(pid);
    await ex.shutdown({ wait: true, cancelFutures: true });
  }
  const pids = [...seenPids];
  seenPids.clear();
  expect(await waitUntil(() => pids.every(isDead), 2000)).toBe(true);
});

async function started(ex: ProcessPoolExecutor): Promise<number[]> {
  expect(await waitUntil(() => ex.pids.length === ex.maxWorkers, 5000)).toBe(true);
  for (const pid of ex.pids) seenPids.add(pid);
  return ex.pids;
}

const sleepSync = (ms: number): void => {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
};

describe('ProcessPoolExecutor', () => {
  it('submit returns a Future with result, exception, states and callbacks', async () => {
    const ex = makeExecutor({ maxWorkers: 2 });
    const k = 10;
    const f = ex.submit((a: number, b: number) => a * b + k, 4, 8);
    expect(f).toBeInstanceOf(Future);
    expect(await f).toBe(42);
    expect(f.done()).toBe(true);
    expect(f.running()).toBe(false);
    expect(f.cancelled()).toBe(false);
    expect(await f.result(0)).toBe(42);
    expect(await f.exception()).toBeNull();
    const bad = ex.submit(() => {
      throw new RangeError('out of range');
    });
    const err = await bad.exception(5000);
    expect(err).toBeInstanceOf(RangeError);
    await expect(bad.result()).rejects.toThrow('out of range');
    const seen: Future[] = [];
    f.addDoneCallback((x) => seen.push(x));
    expect(seen).toEqual([f]);
  });

  it('result(timeout) rejects with TimeoutError; running() while it runs; cancel() only before it starts', async () => {
    const ex = makeExecutor({ maxWorkers: 1 });
    const slow = ex.submit(() => {
      sleepSync(300);
      return 'slow';
    });
    // Fill the worker's prefetch so that at least one future stays queued.
    const queued = [1, 2, 3, 4].map((i) => ex.submit((x: number) => x, i));
    await expect(slow.result(20)).rejects.toBeInstanceOf(TimeoutError);
    await expect(slow.exception(10)).rejects.toBeInstanceOf(TimeoutError);
    expect(slow.running()).toBe(true);
    expect(slow.cancel()).toBe(false);
    const last = queued[queued.length - 1]!;
    expect(last.running()).toBe(false);
    expect(last.cancel()).toBe(true);
    expect(last.cancelled()).toBe(true);
    expect(last.done()).toBe(true);
    await expect(last.result()).rejects.toBeInstanceOf(CancelledError);
    expect(await slow).toBe('slow');
    expect(await queued[0]).toBe(1);
  });

  it('map yields results in order, lazily, with chunksize and a timeout', async () => {
    const ex = makeExecutor({ maxWorkers: 2 });
    const out: number[] = [];
    for await (const v of ex.map((x: number) => x * 3, [1, 2, 3, 4, 5], { chunksize: 2 })) out.push(v);
    expect(out).toEqual([3, 6, 9, 12, 15]);
    function* endless(): Generator<number> {
      for (let i = 0; ; i++) yield i;
    }
    let n = 0;
    for await (const v of ex.map((x: number) => x, endless())) {
      expect(v).toBe(n++);
      if (n === 1000) break;
    }
    const it = ex.map(
      (ms: number) => {
        sleepSync(ms);
        return ms;
      },
      [10, 400],
      { timeout: 150 },
    );
    expect((await it.next()).value).toBe(10);
    await expect(it.next()).rejects.toBeInstanceOf(TimeoutError);
  });

  it('asCompleted yields futures in completion order; wait() honours returnWhen', async () => {
    const ex = makeExecutor({ maxWorkers: 2 });
    const sleepy = (ms: number): number => {
      sleepSync(ms);
      return ms;
    };
    const fs = [ex.submit(sleepy, 300), ex.submit(sleepy, 10)];
    const order: number[] = [];
    // (TypeScript types a for-await variable as the awaited value of a thenable: use next().)
    const it = asCompleted(fs);
    for (let r = await it.next(); !r.done; r = await it.next()) {
      expect(r.value).toBeInstanceOf(Future);
      order.push(await r.value.result());
    }
    expect(order).toEqual([10, 300]);

    const slow = ex.submit(sleepy, 400);
    const fast = ex.submit(sleepy, 5);
    const first = await wait([slow, fast], { returnWhen: FIRST_COMPLETED });
    expect([...first.done]).toEqual([fast]);
    expect([...first.notDone]).toEqual([slow]);
    const timedOut = await wait([slow], { timeout: 10 });
    expect(timedOut.notDone.has(slow)).toBe(true);
    await expect(
      (async () => {
        for await (const f of asCompleted([slow], 10)) void f;
      })(),
    ).rejects.toBeInstanceOf(TimeoutError);
    const failing = ex.submit(() => {
      throw new Error('x');
    });
    const fe = await wait([slow, failing], { returnWhen: FIRST_EXCEPTION });
    expect(fe.done.has(failing)).toBe(true);
    const all = await wait([slow, failing], { returnWhen: ALL_COMPLETED });
    expect(all.done.size).toBe(2);
    expect(all.notDone.size).toBe(0);
  });

  it('a worker killed mid-task breaks the executor: BrokenProcessPool for pending futures, no new work', async () => {
    const ex = makeExecutor({ maxWorkers: 2 });
    const pids = await started(ex);
    const killer = ex.submit(() => {
      sleepSync(50);
      process.kill(process.pid, 'SIGKILL');
    });
    const others = [1, 2, 3, 4, 5].map((i) =>
      ex.submit((x: number) => {
        sleepSync(100);
        return x;
      }, i),
    );
    await expect(killer).rejects.toBeInstanceOf(BrokenProcessPool);
    for (const f of others) {
      const r = await Promise.race([f.then(() => 'ok', (e) => e), new Promise((r) => setTimeout(() => r('hang'), 5000))]);
      expect(r === 'ok' || r instanceof BrokenProcessPool).toBe(true);
    }
    expect(() => ex.submit(() => 1)).toThrow(BrokenProcessPool);
    for (const p of pids) seenPids.add(p);
    expect(await waitUntil(() => pids.every(isDead), 2000)).toBe(true);
  });

  it('shutdown waits for work, cancelFutures cancels queued work, then refuses new work', async () => {
    const ex = makeExecutor({ maxWorkers: 1 });
    const pids = await started(ex);
    const running = ex.submit(() => {
      sleepSync(100);
      return 'done';
    });
    const queued = Array.from({ length: 10 }, (_, i) => ex.submit((x: number) => x, i));
    await new Promise((r) => setTimeout(r, 20));
    await ex.shutdown({ wait: true, cancelFutures: true });
    expect(await running).toBe('done');
    expect(queued.some((f) => f.cancelled())).toBe(true);
    for (const f of queued) expect(f.done()).toBe(true);
    for (const pid of pids) expect(isDead(pid)).toBe(true);
    expect(() => ex.submit(() => 1)).toThrow(RuntimeError);
    await ex.shutdown(); // idempotent
  });

  it('map takes an async iterable; bad arguments get stable codes', async () => {
    const ex = makeExecutor({ maxWorkers: 2 });
    async function* gen(): AsyncGenerator<number> {
      for (let i = 0; i < 50; i++) {
        if (i % 10 === 0) await new Promise((r) => setTimeout(r, 1));
        yield i;
      }
    }
    const out: number[] = [];
    for await (const v of ex.map((x: number) => x * x, gen(), { chunksize: 4 })) out.push(v);
    expect(out).toEqual(Array.from({ length: 50 }, (_, i) => i * i));
    expect(() => ex.submit(42 as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => ex.map((x: number) => x, 7 as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => ex.map((x: number) => x, [1], { chunksize: 0 })).toThrow(expect.objectContaining({ code: 'ERR_MP_BAD_CHUNKSIZE' }));
    await expect(wait([], { returnWhen: 'SOMETIMES' as never })).rejects.toThrow(expect.objectContaining({ code: 'ERR_MP_BAD_RETURN_WHEN' }));
    expect(() => new ProcessPoolExecutor({ maxWorkers: 0 })).toThrow(expect.objectContaining({ code: 'ERR_MP_BAD_PROCESS_COUNT' }));
  });

  it('initializer and maxTasksPerChild', async () => {
    const state = { v: 0 };
    const ex = makeExecutor({
      maxWorkers: 1,
      initializer: (v: number) => {
        state.v = v;
      },
      initargs: [7],
      maxTasksPerChild: 1,
    });
    const task = (): [number, number] => [state.v, process.pid];
    const a = await ex.submit(task);
    const b = await ex.submit(task);
    seenPids.add(a[1]);
    seenPids.add(b[1]);
    expect(a[0]).toBe(7);
    expect(b[0]).toBe(7);
    expect(a[1]).not.toBe(b[1]);
  });
});
