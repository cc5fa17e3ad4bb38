// The spawn and forkserver start methods on their own (the per-method matrix of every
// primitive is in test/matrix.test.ts): a fresh Node process, targets by reference, args by name.
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';

import { getContext, Lock, Pipe, Queue, setExecutable, setStartMethod, Value, type Process } from '../lib/index';
import { forkserverPid } from '../lib/popen/forkserver';
import { usePipeTransport } from '../lib/popen/spawn';

type Targets = typeof import('./fixtures/start-targets.mjs', { with: { 'resolution-mode': 'import' } });
let addAndReport: Targets['addAndReport'];
let exitWith: Targets['exitWith'];
let failAsync: Targets['failAsync'];
let sleepForever: Targets['sleepForever'];
let addAndPut: Targets['addAndPut'];
beforeAll(async () => {
  ({ addAndReport, exitWith, failAsync, sleepForever, addAndPut } = await import('./fixtures/start-targets.mjs'));
});

const fixture = path.join(__dirname, 'fixtures', 'start-targets.mjs');
const started: Process[] = [];
function track<P extends Process>(p: P): P {
  started.push(p);
  return p;
}
afterEach(async () => {
  for (const p of started.splice(0)) {
    try {
      if (p.pid !== undefined && p.exitCode === null) p.kill();
      await p.join(5000);
    } catch {
      /* never started */
    }
  }
});

describe.each(['spawn', 'forkserver'] as const)('%s', (method) => {
  const ctx = getContext(method);

  it('runs an exported target in a fresh process with a Value, a Queue and a Connection as args', async () => {
    const v = ctx.Value('i', 1);
    const q = ctx.Queue<Record<string, unknown>>();
    const [a, b] = Pipe();
    const p = track(new ctx.Process({ target: addAndReport, args: [v, q, b, method], name: `worker-${method}` }));
    p.start();
    expect(p.pid).toBeGreaterThan(0);
    b.close();
    const got = await q.get({ timeout: 10_000 });
    expect(got).toMatchObject({ tag: method, pid: p.pid, name: `worker-${method}`, parent: process.pid });
    expect(a.recvSync()).toBe('over the connection');
    await p.join(10_000);
    expect(p.exitCode).toBe(0);
    expect(v.value).toBe(6);
    q.close();
    a.close();
  });

  it('an uncaught error gives exit code 1; process.exit(n) gives n; a signal gives -N', async () => {
    const e = track(new ctx.Process({ target: failAsync, args: ['bad'] }));
    const x = track(new ctx.Process({ target: exitWith, args: [7] }));
    const s = track(new ctx.Process({ target: sleepForever, daemon: true }));
    e.start();
    x.start();
    s.start();
    await Promise.all([e.join(10_000), x.join(10_000)]);
    expect(e.exitCode).toBe(1);
    expect(x.exitCode).toBe(7);
    expect(s.isAlive()).toBe(true);
    s.terminate();
    s.joinSync(10_000);
    expect(s.exitCode).toBe(-15);
  });

  it("takes references: { module, name }, 'file#name', and a function exported under another name", async () => {
    const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'mp-ref-')), 'f');
    const a = track(new ctx.Process({ target: { module: pathToFileURL(fixture).href, name: 'exitWith' }, args: [3] }));
    const b = track(new ctx.Process({ target: `${fixture}#exitWith`, args: [4] }));
    const c = track(new ctx.Process({ target: `${fixture}#renamedExport`, args: [out] }));
    for (const p of [a, b, c]) p.start();
    for (const p of [a, b, c]) p.joinSync(10_000);
    expect([a.exitCode, b.exitCode, c.exitCode]).toEqual([3, 4, 0]);
    expect(fs.readFileSync(out, 'utf8')).toBe('x');
    fs.rmSync(path.dirname(out), { recursive: true });
  });

  it('a closure or a missing export is refused at start() with ERR_MP_NOT_REFERENCEABLE', () => {
    const k = 1;
    expect(() => new ctx.Process({ target: () => k }).start()).toThrow(expect.objectContaining({ code: 'ERR_MP_NOT_REFERENCEABLE' }));
    function local(): void {}
    expect(() => new ctx.Process({ target: local }).start()).toThrow(/export function local/);
    expect(() => new ctx.Process({ target: 'no-hash-here' }).start()).toThrow(expect.objectContaining({ code: 'ERR_MP_NOT_REFERENCEABLE' }));
  });

  it('a reference that does not resolve in the child fails the child with exit code 1', async () => {
    const p = track(new ctx.Process({ target: `${fixture}#noSuchExport` }));
    p.start();
    await p.join(10_000);
    expect(p.exitCode).toBe(1);
  });
});

describe('the fork-context rule (CPython: "created in a fork context")', () => {
  it('a lock, value or queue made in a fork context is refused by spawn/forkserver at start(); same-context objects pass', async () => {
    const fork = getContext('fork');
    for (const m of ['spawn', 'forkserver'] as const) {
      const ctx = getContext(m);
      for (const made of [fork.Lock(), fork.Value('i', 0), fork.Queue(), fork.Event(), fork.Condition(), fork.Barrier(2)]) {
        const p = new ctx.Process({ target: exitWith, args: [0, made] });
        expect(() => p.start()).toThrow(
          expect.objectContaining({ code: 'ERR_MP_FORK_CONTEXT', message: expect.stringContaining(`shared with a process in a ${m} context`) }),
        );
        expect(p.pid).toBeUndefined();
      }
      // The module-level classes belong to the default context: fork here (vitest runs fork-safe).
      expect(() => new ctx.Process({ target: exitWith, args: [0, { nested: [new Lock()] }] }).start()).toThrow(
        expect.objectContaining({ code: 'ERR_MP_FORK_CONTEXT' }),
      );
      expect(() => new ctx.Process({ target: exitWith, args: [0, Value('i', 1)] }).start()).toThrow(expect.objectContaining({ code: 'ERR_MP_FORK_CONTEXT' }));
      expect(() => new ctx.Process({ target: exitWith, args: [0, new Queue()] }).start()).toThrow(expect.objectContaining({ code: 'ERR_MP_FORK_CONTEXT' }));
      const ok = track(new ctx.Process({ target: exitWith, args: [0, ctx.Lock(), ctx.Value('d', 1.5), ctx.Queue(), fork.RawValue('i', 3)] }));
      ok.start();
      await ok.join(10_000);
      expect(ok.exitCode).toBe(0);
    }
    // Over a queue or pipe (not a start), fork-context objects travel as before.
    const [a, b] = Pipe();
    a.send(fork.Lock());
    expect(b.recvSync()).toBeDefined();
    a.close();
    b.close();
  });

  it('the module-level classes take the default method at creation: made while it is spawn, they go to a spawn child', async () => {
    const before = new Lock(); // default: fork here
    setStartMethod('spawn', { force: true });
    try {
      const made = [new Lock(), Value('i', 2), new Queue()];
      const ctx = getContext('spawn');
      expect(() => new ctx.Process({ target: exitWith, args: [0, before] }).start()).toThrow(expect.objectContaining({ code: 'ERR_MP_FORK_CONTEXT' }));
      const ok = track(new ctx.Process({ target: exitWith, args: [0, ...made] }));
      ok.start();
      await ok.join(10_000);
      expect(ok.exitCode).toBe(0);
    } finally {
      setStartMethod(null, { force: true });
    }
  });

  it('every context-bound type is refused (RLock, semaphores, Array, all queues); SharedMemory, Connection and raw ctypes are not bound', async () => {
    const fork = getContext('fork');
    const ctx = getContext('spawn');
    const made = {
      RLock: fork.RLock(),
      Semaphore: fork.Semaphore(2),
      BoundedSemaphore: fork.BoundedSemaphore(2),
      Array: fork.Array('i', 4),
      SimpleQueue: fork.SimpleQueue(),
      JoinableQueue: fork.JoinableQueue(),
    };
    for (const [kind, obj] of Object.entries(made)) {
      const p = new ctx.Process({ target: exitWith, args: [0, obj] });
      let err: unknown;
      try {
        p.start();
      } catch (e) {
        err = e;
      }
      expect([kind, err]).toEqual([
        kind,
        expect.objectContaining({
          name: 'RuntimeError',
          code: 'ERR_MP_FORK_CONTEXT',
          message: expect.stringContaining('This is not supported. Please use the same context to create multiprocessing objects and Process.'),
        }),
      ]);
      expect(p.pid).toBeUndefined();
    }
    // A Condition or a synchronized Value made by the spawn context around a fork-context lock
    // travels with that lock: refused too (CPython pickles the lock, whose SemLock refuses).
    const forkLock = fork.Lock();
    for (const obj of [ctx.Condition(forkLock), ctx.Value('i', 0, { lock: forkLock }), ctx.Array('i', 2, { lock: forkLock })]) {
      expect(() => new ctx.Process({ target: exitWith, args: [0, obj] }).start()).toThrow(
        expect.objectContaining({ code: 'ERR_MP_FORK_CONTEXT', message: expect.stringContaining('A Lock created in a fork context') }),
      );
    }
    // The same objects still go to a fork child (the rule is about the receiving method).
    const f = track(new fork.Process({ target: exitWith, args: [0, ...Object.values(made)] }));
    f.start();
    await f.join(10_000);
    expect(f.exitCode).toBe(0);
    const shm = fork.SharedMemory({ create: true, size: 16 });
    const [a, b] = fork.Pipe();
    try {
      const ok = track(new ctx.Process({ target: exitWith, args: [0, shm, b, fork.RawArray('b', 2)] }));
      ok.start();
      await ok.join(10_000);
      expect(ok.exitCode).toBe(0);
    } finally {
      a.close();
      b.close();
      shm.close();
      shm.unlink();
    }
  });
});

describe('setExecutable', () => {
  it('spawn children run the binary it names', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-exe-'));
    const marker = path.join(dir, 'used');
    const wrapper = path.join(dir, 'node-wrapper.sh');
    fs.writeFileSync(wrapper, `#!/bin/sh\necho "$$" >> ${JSON.stringify(marker)}\nexec ${JSON.stringify(process.execPath)} "$@"\n`, { mode: 0o755 });
    expect(() => setExecutable('')).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    setExecutable(wrapper);
    try {
      const p = track(new (getContext('spawn').Process)({ target: exitWith, args: [6] }));
      p.start();
      await p.join(10_000);
      expect(p.exitCode).toBe(6);
      expect(fs.readFileSync(marker, 'utf8').trim()).toBe(String(p.pid)); // exec keeps the pid
    } finally {
      setExecutable(process.execPath);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('forkserver', () => {
  it('one server serves every child of this process and is a child of it', async () => {
    const ctx = getContext('forkserver');
    const a = track(new ctx.Process({ target: exitWith, args: [0] }));
    a.start();
    const server = forkserverPid();
    expect(server).toBeGreaterThan(0);
    const b = track(new ctx.Process({ target: exitWith, args: [0] }));
    b.start();
    expect(forkserverPid()).toBe(server);
    expect(fs.readFileSync(`/proc/${server}/stat`, 'utf8').split(' ')[3]).toBe(String(process.pid));
    // Its children are the server's, not ours.
    expect(fs.readFileSync(`/proc/${a.pid}/stat`, 'utf8').split(' ')[3]).toBe(String(server));
    await Promise.all([a.join(10_000), b.join(10_000)]);
  });
});

describe('spawn over the Windows transport (child_process + a plain pipe, run here on POSIX)', () => {
  it('runs a target with a Value and a Queue; a Connection among the args is refused', async () => {
    const ctx = getContext('spawn');
    usePipeTransport(true);
    try {
      const v = ctx.Value('i', 1);
      const q = ctx.Queue<Record<string, unknown>>();
      const [a, b] = Pipe();
      expect(() => new ctx.Process({ target: addAndReport, args: [v, q, b, 'win'] }).start()).toThrow(
        expect.objectContaining({ code: 'ERR_MP_CANNOT_PASS_FD' }),
      );
      const x = track(new ctx.Process({ target: exitWith, args: [5] }));
      x.start();
      await x.join(10_000);
      expect(x.exitCode).toBe(5);
      const e = track(new ctx.Process({ target: failAsync, args: ['on the pipe transport'] }));
      e.start();
      await e.join(10_000);
      expect(e.exitCode).toBe(1);
      const ok = track(new ctx.Process({ target: addAndPut, args: [v, q, 41], name: 'over-a-pipe' }));
      ok.start();
      expect(await q.get({ timeout: 10_000 })).toEqual(['added', 41, 'over-a-pipe']);
      await ok.join(10_000);
      expect(ok.exitCode).toBe(0);
      expect(v.value).toBe(42);
      a.close();
      b.close();
      q.close();
    } finally {
      usePipeTransport(false);
    }
  });
});
