import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

import { Connection, Empty, Full, JoinableQueue, Lock, Pipe, Process, Queue, SharedMemory, SimpleQueue, Value, ValueError } from '../lib/index';
import { native } from '../lib/native';
import { _dieMidPutForTests } from '../lib/queues';
import { ensureDist } from './helpers/dist';
import { fork, joinAll } from './helpers/procs';

const closers: { close(): void }[] = [];
afterEach(() => {
  for (const c of closers.splice(0)) c.close();
});

function shmNames(): string[] {
  return fs.readdirSync('/dev/shm').filter((n) => n.startsWith('mp-'));
}

describe('Queue in one process', () => {
  it('put/get in FIFO order, every kind of value, Sync and async forms', async () => {
    const q = new Queue();
    const values: unknown[] = [1, -2.5, 'str', 'ünï', null, undefined, true, [1, [2]], { a: { b: 1 } }, Buffer.from('b'), new Map([[1, 2]]), new Date(3), 7n];
    for (const v of values) q.putSync(v);
    expect(q.qsize()).toBe(values.length);
    expect(q.empty()).toBe(false);
    for (const v of values) expect(await q.get()).toEqual(v);
    expect(q.empty()).toBe(true);
    await q.put('async');
    q.putNowait('nowait');
    expect(q.getSync()).toBe('async');
    expect(q.getNowait()).toBe('nowait');
    // number arrays (packed): int32 then doubles, -0, NaN, beyond int32; numbers then a string
    const ints = Array.from({ length: 20 }, (_, i) => i - 10);
    const mixed = [...ints, 0.5, -0, NaN, Infinity, 2 ** 31, -(2 ** 31), 7];
    const notAll = [...ints, 'x', 3];
    for (const v of [ints, mixed, notAll, [-0, ...ints], [0.25, ...ints]]) {
      q.putSync(v);
      const got = q.getSync() as unknown[];
      expect(got).toEqual(v);
      expect(got.map((x) => Object.is(x, -0))).toEqual(v.map((x) => Object.is(x, -0)));
    }
  });

  it('Empty and Full, with and without timeouts; maxsize', async () => {
    const q = new Queue<number>(2);
    expect(() => q.getNowait()).toThrow(Empty);
    expect(() => q.getSync({ block: false })).toThrow(expect.objectContaining({ code: 'ERR_MP_EMPTY' }));
    const t0 = Date.now();
    await expect(q.get({ timeout: 50 })).rejects.toBeInstanceOf(Empty);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(45);
    expect(() => q.getSync({ timeout: 20 })).toThrow(Empty);
    q.putSync(1);
    q.putSync(2);
    expect(q.full()).toBe(true);
    expect(() => q.putNowait(3)).toThrow(Full);
    expect(() => q.putSync(3, { timeout: 20 })).toThrow(expect.objectContaining({ code: 'ERR_MP_FULL' }));
    await expect(q.put(3, { timeout: 20 })).rejects.toBeInstanceOf(Full);
    // a blocked async put completes when a get makes room
    const p = q.put(3);
    setTimeout(() => q.getSync(), 20);
    await p;
    expect([q.getSync(), q.getSync()]).toEqual([2, 3]);
    expect(q.full()).toBe(false);
    // a blocked async get completes when an item arrives
    const g = q.get({ timeout: 5000 });
    setTimeout(() => q.putSync(9), 20);
    expect(await g).toBe(9);
  });

  it('close(): put and get then throw ValueError "... is closed"; close is idempotent', async () => {
    const q = new Queue();
    q.putSync(1);
    q.close();
    q.close();
    expect(() => q.putSync(2)).toThrow(ValueError);
    expect(() => q.getSync()).toThrow(/is closed/);
    await expect(q.put(1)).rejects.toThrow(expect.objectContaining({ code: 'ERR_MP_QUEUE_CLOSED' }));
    await expect(q.get()).rejects.toThrow(/is closed/);
  });

  it('an item that cannot be serialized throws at put and leaves the queue usable', async () => {
    const q = new Queue();
    q.putSync('before');
    expect(() => q.putSync({ f() {} } as never)).toThrow(/could not be cloned/);
    await expect(q.put(Symbol('s') as never)).rejects.toThrow();
    q.putSync('after');
    expect(q.qsize()).toBe(2);
    expect(q.getSync()).toBe('before');
    expect(q.getSync()).toBe('after');
  });

  it('items larger than the ring go through a side channel, leaving nothing in /dev/shm', () => {
    const before = shmNames().length;
    const q = new Queue(0, { capacity: 64 * 1024 });
    const big = Buffer.alloc(1024 * 1024, 0xab);
    for (let i = 0; i < 3; i++) q.putSync({ i, big });
    q.putSync('small after');
    for (let i = 0; i < 3; i++) {
      const v = q.getSync() as { i: number; big: Buffer };
      expect(v.i).toBe(i);
      expect(v.big.equals(big)).toBe(true);
    }
    expect(q.getSync()).toBe('small after');
    // only the queue's own ring segment remains
    expect(shmNames().length).toBeLessThanOrEqual(before + 1);
  });

  it('side-channel items nobody took are unlinked when the creating process exits', async () => {
    const before = shmNames();
    const p = fork(() => {
      const q = new Queue(0, { capacity: 64 * 1024 });
      q.putSync(Buffer.alloc(512 * 1024, 1));
      q.putSync(Buffer.alloc(512 * 1024, 2));
      q.getSync();
    });
    expect(await joinAll([p])).toEqual([0]);
    expect(shmNames().filter((n) => !before.includes(n))).toEqual([]);
  });

  it('a side-channel item left by a SIGKILLed process tree is unlinked by the resource tracker', async () => {
    // A separate program (its own tracker): a forked producer puts a big item, then the whole
    // tree is SIGKILLed before anyone takes it.
    const dist = path.join(ensureDist(), 'index.js');
    const code = `
      const fs = require('fs');
      const m = require(${JSON.stringify(dist)});
      const before = new Set(fs.readdirSync('/dev/shm'));
      const q = new m.Queue(0, { capacity: 64 * 1024 });
      const p = new m.Process({ target: () => q.putSync(Buffer.alloc(256 * 1024, 7)) });
      p.start();
      p.joinSync();
      const mine = fs.readdirSync('/dev/shm').filter((n) => !before.has(n) && n.startsWith('mp-'));
      process.stdout.write(JSON.stringify(mine) + '\\n', () => process.kill(process.pid, 'SIGKILL'));
    `;
    const ch = spawn(process.execPath, ['--single-threaded', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    ch.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const sig = await new Promise((r) => ch.on('exit', (_c, s) => r(s)));
    expect(sig).toBe('SIGKILL');
    const names = JSON.parse(out.trim()) as string[];
    expect(names.length).toBeGreaterThanOrEqual(2); // the ring, the side item (and arenas)
    const deadlineAt = Date.now() + 10_000;
    while (names.some((n) => fs.existsSync(`/dev/shm/${n}`)) && Date.now() < deadlineAt) await new Promise((r) => setTimeout(r, 50));
    expect(names.filter((n) => fs.existsSync(`/dev/shm/${n}`))).toEqual([]);
  });

  it('a put that fails (Full) leaves no side segment behind', async () => {
    const q = new Queue(1, { capacity: 64 * 1024 });
    q.putSync('fills maxsize');
    const before = shmNames();
    expect(() => q.putSync(Buffer.alloc(128 * 1024), { block: false })).toThrow(Full);
    expect(() => q.putSync(Buffer.alloc(128 * 1024), { timeout: 10 })).toThrow(Full);
    await expect(q.put(Buffer.alloc(128 * 1024), { timeout: 10 })).rejects.toBeInstanceOf(Full);
    await expect(q.put(Buffer.alloc(128 * 1024), { block: false })).rejects.toBeInstanceOf(Full);
    expect(shmNames().filter((n) => !before.includes(n))).toEqual([]);
    expect(q.getSync()).toBe('fills maxsize');
  });

  it('wraps around the ring many times without losing or reordering items', () => {
    const q = new Queue(0, { capacity: 64 * 1024 });
    let next = 0;
    for (let round = 0; round < 200; round++) {
      for (let i = 0; i < 37; i++) q.putSync({ n: round * 37 + i, pad: 'x'.repeat((i * 97) % 900) });
      for (let i = 0; i < 37; i++) expect((q.getSync() as { n: number }).n).toBe(next++);
    }
  });

  it('small items stay in the first 256 KiB of the ring while the consumer keeps up, and use all of it when it falls behind', () => {
    // This process's /dev/shm mappings: name -> resident KiB.
    const shmRss = (): Map<string, number> => {
      const out = new Map<string, number>();
      for (const b of fs.readFileSync('/proc/self/smaps', 'utf8').split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/)) {
        const name = /\/dev\/shm\/(mp-\S+)/.exec(b.split('\n')[0] ?? '')?.[1];
        if (name !== undefined) out.set(name, Number(/\nRss:\s+(\d+) kB/.exec(b)?.[1]));
      }
      return out;
    };
    const before = shmRss();
    const q = new Queue<{ n: number; s: string } | number>();
    closers.push(q);
    const mine = [...shmRss().keys()].filter((n) => !before.has(n));
    expect(mine.length).toBeGreaterThan(0);
    // Resident KiB of this queue's ring (its locks live in other, small segments).
    const ringKiB = (): number => Math.max(...mine.map((n) => shmRss().get(n) ?? 0));
    let next = 0;
    let expectNext = 0;
    // 40,000 items of 16 bytes one at a time: 640 KB of records, circling in the window.
    for (let i = 0; i < 40000; i++) {
      q.putSync(next++);
      expect(q.getSync()).toBe(expectNext++);
    }
    expect(ringKiB()).toBeLessThanOrEqual(256 + 8);
    // A backlog bigger than half the window: records go on past it, in order, nothing lost.
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 20000; i++) q.putSync(i % 7 === 0 ? { n: next++, s: 'y'.repeat(i % 300) } : next++);
      for (let i = 0; i < 20000; i++) {
        const v = q.getSync();
        expect(typeof v === 'number' ? v : v.n).toBe(expectNext++);
      }
    }
    expect(ringKiB()).toBeGreaterThan(256 + 8);
    expect(q.empty()).toBe(true);
  });

  it('JoinableQueue: taskDone/join, and too many taskDone calls', async () => {
    const q = new JoinableQueue<number>();
    expect(() => q.taskDone()).toThrow('task_done() called too many times');
    q.joinSync(); // nothing unfinished
    q.putSync(1);
    q.putSync(2);
    let joined = false;
    const j = q.join().then(() => (joined = true));
    q.getSync();
    q.taskDone();
    await new Promise((r) => setTimeout(r, 20));
    expect(joined).toBe(false);
    q.getSync();
    q.taskDone();
    await j;
    expect(joined).toBe(true);
    expect(() => q.taskDone()).toThrow(expect.objectContaining({ code: 'ERR_MP_TASK_DONE' }));
  });

  it('SimpleQueue', async () => {
    const q = new SimpleQueue<string>();
    expect(q.empty()).toBe(true);
    await q.put('a');
    expect(q.empty()).toBe(false);
    expect(await q.get()).toBe('a');
    q.close();
    expect(() => q.putSync('b')).toThrow(/SimpleQueue .* is closed/);
  });

  it('rejects bad arguments', () => {
    expect(() => new Queue('3' as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    const q = new Queue();
    expect(() => q.putSync(1, { block: 'yes' as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => q.getSync({ timeout: 'x' as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
  });
});

describe('Queue across processes', () => {
  it('a queue captured by a forked child and passed on to a grandchild', async () => {
    const q = new Queue();
    const p = fork(async (qq: Queue) => {
      await qq.put({ from: 'child', pid: process.pid });
      const gc = new Process({
        target: async (q2: Queue) => {
          await q2.put({ from: 'grandchild', pid: process.pid });
        },
        args: [qq],
      });
      gc.start();
      await gc.join(10_000);
      await qq.put({ from: 'child', gcExit: gc.exitCode });
    }, q);
    const got = [await q.get({ timeout: 10_000 }), await q.get({ timeout: 10_000 }), await q.get({ timeout: 10_000 })] as Record<string, unknown>[];
    expect(got[0]).toEqual({ from: 'child', pid: p.pid });
    expect(got[1]!.from).toBe('grandchild');
    expect(got[2]).toEqual({ from: 'child', gcExit: 0 });
    expect(await joinAll([p])).toEqual([0]);
  });

  it('a queue, a Lock and a Value sent over a Connection arrive usable in a spawned-by-name fashion', async () => {
    const [a, b] = Pipe() as [Connection, Connection];
    closers.push(a, b);
    const q = new Queue();
    const lock = new Lock();
    const v = Value('i', 5);
    a.send({ q, lock, v });
    const got = (await b.recv()) as { q: Queue; lock: Lock; v: { value: number } };
    expect(got.q).toBeInstanceOf(Queue);
    got.q.putSync('via rebuilt handle');
    expect(q.getSync()).toBe('via rebuilt handle');
    expect(got.lock.acquireSync({ block: false })).toBe(true);
    expect(lock.acquireSync({ block: false })).toBe(false);
    got.lock.release();
    got.v.value = 42;
    expect(v.value).toBe(42);
    // and a queue put on a queue
    const inner = new Queue();
    q.putSync(inner);
    const innerCopy = q.getSync() as Queue;
    innerCopy.putSync('nested');
    expect(inner.getSync()).toBe('nested');
  });

  it('a Queue, SharedMemory and Lock sent over a Connection to a separately spawned process are reopened by name', async () => {
    const dist = path.join(ensureDist(), 'index.js');
    const [mine, theirs] = native.socketpair();
    const code = `const m = require(${JSON.stringify(dist)});
      const c = new m.Connection(3);
      (async () => {
        const { q, shm, lock } = await c.recv();
        shm.buf.write('written by the spawned child');
        if (!lock.acquireSync({ block: false })) throw new Error('lock should be free');
        for (let i = 0; i < 1000; i++) await q.put({ i });
        lock.release();
        shm.close();
        c.send('done');
        c.close();
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const ch = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'inherit', 'inherit', theirs] });
    const exited = new Promise<number | null>((r) => ch.once('exit', (c) => r(c)));
    try {
      native.close(theirs);
      const conn = new Connection(mine);
      closers.push(conn);
      const q = new Queue<{ i: number }>();
      const shm = new SharedMemory({ create: true, size: 64 });
      closers.push({ close: () => (shm.close(), shm.unlink()) });
      const lock = new Lock();
      conn.send({ q, shm, lock });
      for (let i = 0; i < 1000; i++) expect(await q.get({ timeout: 10_000 })).toEqual({ i });
      expect(await conn.recv()).toBe('done');
      expect(shm.buf.toString('utf8', 0, 28)).toBe('written by the spawned child');
      expect(lock.acquireSync({ block: false })).toBe(true);
      lock.release();
      expect(await exited).toBe(0);
    } finally {
      if (ch.exitCode === null && ch.signalCode === null) {
        ch.kill('SIGKILL');
        await exited;
      }
    }
  });

  it('multi-producer multi-consumer: every item exactly once, FIFO per producer', async () => {
    const q = new Queue<[number, number] | null>(0, { capacity: 64 * 1024 });
    const out = new Queue<[number, number][]>();
    const N = 20_000;
    const producers = [0, 1].map((id) =>
      fork(
        async (qq: Queue<[number, number] | null>, pid: number, n: number) => {
          for (let i = 0; i < n; i++) await qq.put([pid, i]);
        },
        q,
        id,
        N,
      ),
    );
    const consumers = [0, 1].map(() =>
      fork(
        async (qq: Queue<[number, number] | null>, o: Queue<[number, number][]>) => {
          const seen: [number, number][] = [];
          for (;;) {
            const it = await qq.get();
            if (it === null) break;
            seen.push(it);
          }
          await o.put(seen);
        },
        q,
        out,
      ),
    );
    expect(await joinAll(producers)).toEqual([0, 0]);
    q.putSync(null);
    q.putSync(null);
    const lists = [await out.get({ timeout: 20_000 }), await out.get({ timeout: 20_000 })];
    expect(await joinAll(consumers)).toEqual([0, 0]);
    const all = lists.flat();
    expect(all.length).toBe(2 * N);
    expect(new Set(all.map(([p, i]) => p * N + i)).size).toBe(2 * N);
    for (const list of lists) {
      const last = [-1, -1];
      for (const [p, i] of list) {
        expect(i).toBeGreaterThan(last[p]!); // each consumer sees each producer's items in order
        last[p] = i;
      }
    }
  }, 60_000);

  it('SIGKILL of a consumer mid-get and a producer mid-put: survivors go on, nothing delivered twice', async () => {
    const q = new Queue<[number, number] | null>(0, { capacity: 64 * 1024 });
    const out = new Queue<[number, number] | 'done'>(0, { capacity: 1024 * 1024 });
    const N = 100_000;
    const produce = async (qq: Queue<[number, number] | null>, id: number, n: number) => {
      for (let i = 0; i < n; i++) qq.putSync([id, i]);
    };
    const consume = async (qq: Queue<[number, number] | null>, o: Queue<[number, number] | 'done'>) => {
      for (;;) {
        const it = qq.getSync();
        if (it === null) break;
        o.putSync(it);
      }
      o.putSync('done');
    };
    const survivorP = fork(produce, q, 0, N);
    const victimP = fork(produce, q, 1, 10 * N);
    const survivorC = fork(consume, q, out);
    const victimC = fork(consume, q, out);
    const got: [number, number][] = [];
    let doneSeen = false;
    // Drain `out` all along (the consumers block when it is full).
    const collector = (async () => {
      for (;;) {
        const v = await out.get({ timeout: 30_000 });
        if (v === 'done') {
          doneSeen = true;
          return;
        }
        got.push(v);
      }
    })();
    const waitFor = async (cond: () => boolean) => {
      const end = Date.now() + 30_000;
      while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
    };
    await waitFor(() => got.length >= 20_000);
    victimC.kill();
    victimP.kill();
    await victimC.join(5000);
    await victimP.join(5000);
    expect(victimC.exitCode).toBe(-9);
    expect(victimP.exitCode).toBe(-9);
    const n0 = got.length;
    expect(await joinAll([survivorP], 30_000)).toEqual([0]);
    q.putSync(null);
    await collector;
    expect(doneSeen).toBe(true);
    expect(await joinAll([survivorC])).toEqual([0]);
    expect(got.length).toBeGreaterThan(n0); // the survivors kept working after the kills
    const keys = got.map(([p, i]) => p * 10 * N + i);
    expect(new Set(keys).size).toBe(keys.length); // nothing delivered twice
    const fromSurvivor = got.filter(([p]) => p === 0).length;
    // at most the items the killed consumer held (one from q, one being put on out) are lost
    expect(fromSurvivor).toBeGreaterThanOrEqual(N - 2);
    expect(q.empty()).toBe(true);
  }, 120_000);

  it('JoinableQueue: a producer SIGKILLed mid-put never wedges join() nor miscounts tasks', async () => {
    // Resolves with 'joined', or 'waiting' if join() is still waiting after ms.
    const joinWithin = (q: JoinableQueue<string>, ms: number) =>
      Promise.race([q.join().then(() => 'joined'), new Promise((r) => setTimeout(() => r('waiting'), ms))]);
    const dieAt = (stage: 1 | 2) => (q: JoinableQueue<string>) => {
      _dieMidPutForTests(stage);
      q.putSync('x');
    };

    // Killed after counting the item, before publishing it: the item is lost and so is its
    // task; join() repairs the count itself (it used to wait forever).
    const q1 = new JoinableQueue<string>();
    const p1 = fork(dieAt(1), q1);
    expect(await joinAll([p1])).toEqual([-9]);
    expect(q1.empty()).toBe(true);
    expect(await joinWithin(q1, 3000)).toBe('joined');
    expect(() => q1.taskDone()).toThrow(expect.objectContaining({ code: 'ERR_MP_TASK_DONE' }));
    q1.putSync('after');
    expect(q1.getSync({ timeout: 1000 })).toBe('after');
    expect(await joinWithin(q1, 100)).toBe('waiting');
    q1.taskDone();
    expect(await joinWithin(q1, 3000)).toBe('joined');

    // The same, repaired by the next put instead of by join().
    const q2 = new JoinableQueue<string>();
    const p2 = fork(dieAt(1), q2);
    expect(await joinAll([p2])).toEqual([-9]);
    q2.putSync('next');
    expect(q2.qsize()).toBe(1);
    expect(q2.getSync({ timeout: 1000 })).toBe('next');
    q2.taskDone();
    expect(await joinWithin(q2, 3000)).toBe('joined');
    expect(() => q2.taskDone()).toThrow(expect.objectContaining({ code: 'ERR_MP_TASK_DONE' }));

    // Killed after publishing: the item is delivered once, and its task is still owed.
    const q3 = new JoinableQueue<string>();
    const p3 = fork(dieAt(2), q3);
    expect(await joinAll([p3])).toEqual([-9]);
    expect(q3.getSync({ timeout: 1000 })).toBe('x');
    expect(q3.empty()).toBe(true);
    expect(await joinWithin(q3, 1500)).toBe('waiting');
    q3.putSync('y'); // takes over the dead producer's put lock
    expect(q3.getSync({ timeout: 1000 })).toBe('y');
    q3.taskDone();
    expect(await joinWithin(q3, 100)).toBe('waiting');
    q3.taskDone();
    expect(await joinWithin(q3, 3000)).toBe('joined');
    expect(() => q3.taskDone()).toThrow(expect.objectContaining({ code: 'ERR_MP_TASK_DONE' }));
  }, 30_000);
});
