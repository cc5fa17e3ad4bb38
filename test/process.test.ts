import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';

import { afterEach, describe, expect, it } from 'vitest';

import {
  activeChildren,
  AssertionError,
  cpuCount,
  currentProcess,
  getAllStartMethods,
  getContext,
  getStartMethod,
  isForkSafe,
  isMainProcess,
  parentProcess,
  Process,
  RawArray,
  RuntimeError,
  setStartMethod,
  ValueError,
} from '../lib/index';
import { native } from '../lib/native';
import { _tickQueueFound, _useTickQueueForTests } from '../lib/popen/child';
import * as posix from '../lib/posix';
import { cleanupChildren, isDead, pipe, runFixture, track, waitUntil } from './fixtures/children';
import { ensureDist } from './helpers/dist';

afterEach(cleanupChildren);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const forever = (): Promise<never> => new Promise(() => setInterval(() => {}, 1000));

describe('Process (fork start method)', () => {
  it('runs a closure with args in a child and reports exit code 0', async () => {
    const out = pipe();
    const captured = { value: 41 };
    const p = track(
      new Process({
        target: (a: number, b: string) => {
          fs.writeSync(out.w, JSON.stringify({ sum: captured.value + a, b, pid: process.pid, ppid: process.ppid }));
        },
        args: [1, 'x'],
      }),
    );
    expect(p.pid).toBeUndefined();
    expect(p.exitCode).toBeNull();
    p.start();
    expect(typeof p.pid).toBe('number');
    await p.join(10_000);
    expect(p.exitCode).toBe(0);
    expect(JSON.parse(out.read())).toEqual({ sum: 42, b: 'x', pid: p.pid, ppid: process.pid });
  });

  it('names processes Process-N and gives the child its own identity', async () => {
    const out = pipe();
    const p = track(
      new Process({
        target: () => {
          const parent = parentProcess();
          fs.writeSync(
            out.w,
            JSON.stringify({
              name: currentProcess().name,
              pid: currentProcess().pid,
              parent: parent && { name: parent.name, pid: parent.pid, alive: parent.isAlive() },
            }),
          );
        },
      }),
    );
    expect(p.name).toMatch(/^Process-\d+$/);
    expect(new Process({ name: 'worker-a' }).name).toBe('worker-a');
    p.start();
    await p.join(10_000);
    const r = JSON.parse(out.read());
    expect(r).toEqual({ name: p.name, pid: p.pid, parent: { name: 'MainProcess', pid: process.pid, alive: true } });
    expect(currentProcess().name).toBe('MainProcess');
    expect(currentProcess().pid).toBe(process.pid);
    expect(parentProcess()).toBeNull();
  });

  it('awaits an async target, runs subclass run(), and lets its own timers finish', async () => {
    const out = pipe();
    class Writer extends Process {
      override async run(): Promise<void> {
        await sleep(30);
        fs.writeSync(out.w, 'run;');
        // Not awaited: a pending child timer keeps the child alive, as in Node.
        setTimeout(() => fs.writeSync(out.w, 'late-timer;'), 50);
        setImmediate(() => fs.writeSync(out.w, 'immediate;'));
      }
    }
    const p = track(new Writer());
    p.start();
    await p.join(10_000);
    expect(p.exitCode).toBe(0);
    expect(out.read()).toBe('run;immediate;late-timer;');
  });

  it('exit codes: throw -> 1 with the stack on stderr, rejection -> 1, process.exit(n) -> n with exit handlers', async () => {
    const err = pipe();
    const thrower = track(
      new Process({
        target: () => {
          posix.dup2(err.w, 2);
          throw new Error('boom in child');
        },
      }),
    );
    thrower.start();
    await thrower.join(10_000);
    expect(thrower.exitCode).toBe(1);
    const stderr = err.read();
    expect(stderr).toContain(`Process ${thrower.name}:`);
    expect(stderr).toContain('Error: boom in child');
    expect(stderr).toMatch(/at .*process\.test\.ts/);

    const rejecter = track(
      new Process({
        target: async () => {
          await sleep(1);
          throw new TypeError('rejected');
        },
      }),
    );
    rejecter.start();
    await rejecter.join(10_000);
    expect(rejecter.exitCode).toBe(1);

    const out = pipe();
    const exiter = track(
      new Process({
        target: () => {
          process.on('exit', (code) => fs.writeSync(out.w, `exit handler ${code}`));
          process.exit(7);
        },
      }),
    );
    exiter.start();
    await exiter.join(10_000);
    expect(exiter.exitCode).toBe(7);
    expect(out.read()).toBe('exit handler 7');
  });

  it('an uncaught error after the target returned still ends the child with 1', async () => {
    const err = pipe();
    const p = track(
      new Process({
        target: () => {
          posix.dup2(err.w, 2);
          setTimeout(() => {
            throw new Error('late failure');
          }, 10);
        },
      }),
    );
    p.start();
    await p.join(10_000);
    expect(p.exitCode).toBe(1);
    expect(err.read()).toContain('Error: late failure');
  });

  it("never reads or writes the test runner's IPC channel from a child", async () => {
    const out = pipe();
    expect(process.send).toBeTypeOf('function'); // the vitest worker talks to vitest over IPC
    const p = track(
      new Process({
        target: () => {
          const sent = process.send?.({ type: 'bogus-message-from-a-forked-child' });
          fs.writeSync(out.w, String(sent));
        },
      }),
    );
    p.start();
    await p.join(10_000);
    expect(p.exitCode).toBe(0);
    expect(out.read()).toBe('false');
  });

  it('kill -> -9, terminate -> -15; join with a timeout returns while the child runs', async () => {
    const a = track(new Process({ target: forever }));
    a.start();
    const t0 = Date.now();
    await a.join(50);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(a.isAlive()).toBe(true);
    expect(a.exitCode).toBeNull();
    a.joinSync(20);
    expect(a.exitCode).toBeNull();
    a.kill();
    await a.join(10_000);
    expect(a.exitCode).toBe(-9);
    expect(a.isAlive()).toBe(false);

    // The parent's own SIGTERM listener must not catch the child's SIGTERM.
    const onTerm = (): void => {};
    process.on('SIGTERM', onTerm);
    try {
      const b = track(new Process({ target: forever }));
      b.start();
      await sleep(50);
      b.terminate();
      b.joinSync(10_000);
      expect(b.exitCode).toBe(-15);
    } finally {
      process.off('SIGTERM', onTerm);
    }
  });

  it('sentinel becomes readable when the child ends', async () => {
    const go = pipe();
    const p = track(
      new Process({
        target: () => {
          const b = Buffer.alloc(1);
          fs.readSync(go.r, b); // waits for the parent's go
        },
      }),
    );
    p.start();
    expect(native.waitReadable(p.sentinel, 0)).toBe(false);
    fs.writeSync(go.w, 'g');
    expect(native.waitReadable(p.sentinel, 10_000)).toBe(true);
    await p.join(10_000);
    expect(p.exitCode).toBe(0);
  });

  it('activeChildren lists running children and reaps finished ones', async () => {
    const go = pipe();
    const quick = track(new Process({ target: () => {} }));
    const slow = track(
      new Process({
        target: () => {
          fs.readSync(go.r, Buffer.alloc(1));
        },
      }),
    );
    quick.start();
    slow.start();
    expect(await waitUntil(() => !activeChildren().includes(quick), 10_000)).toBe(true);
    expect(activeChildren()).toContain(slow);
    expect(quick.exitCode).toBe(0);
    fs.writeSync(go.w, 'g');
    await slow.join(10_000);
    expect(activeChildren()).not.toContain(slow);
  });

  it('nested trees: a child starts grandchildren', async () => {
    const out = pipe();
    const p = track(
      new Process({
        target: async () => {
          const kids = [1, 2].map(
            (i) =>
              new Process({
                target: () => {
                  fs.writeSync(out.w, `${currentProcess().name} ppid=${process.ppid === parentProcess()?.pid}\n`);
                  process.exit(10 + i);
                },
              }),
          );
          for (const k of kids) k.start();
          for (const k of kids) await k.join(10_000);
          fs.writeSync(out.w, `codes ${kids.map((k) => k.exitCode).join(',')}\n`);
        },
      }),
    );
    p.start();
    await p.join(10_000);
    expect(p.exitCode).toBe(0);
    const lines = out.read().trim().split('\n').sort();
    expect(lines).toEqual(['codes 11,12', `${p.name}:1 ppid=true`, `${p.name}:2 ppid=true`].sort());
  });

  it('parentProcess() in a child: alive while the parent runs, join resolves when it ends', async () => {
    const out = pipe();
    const middle = track(
      new Process({
        target: async () => {
          const g = new Process({
            target: async () => {
              const alive = parentProcess()!.isAlive();
              const t0 = Date.now();
              await parentProcess()!.join(10_000);
              fs.writeSync(out.w, `${alive} ${parentProcess()!.isAlive()} ${Date.now() - t0}\n`);
            },
          });
          g.start();
          fs.writeSync(out.w, `${g.pid}\n`);
          await sleep(200);
          posix.exit(0); // skip the exit function: the grandchild outlives its parent
        },
      }),
    );
    middle.start();
    await middle.join(10_000);
    expect(middle.exitCode).toBe(0);
    // EOF once the grandchild has ended too (it holds the write end)
    const [gc, result] = out.read().trim().split('\n');
    const [aliveBefore, aliveAfter, waited] = result.split(' ');
    expect([aliveBefore, aliveAfter]).toEqual(['true', 'false']);
    expect(Number(waited)).toBeGreaterThan(100);
    expect(await waitUntil(() => isDead(Number(gc)), 5000)).toBe(true);
  });

  it('a child of an HTTP server with an interval serves nothing, fires nothing, and exits when done', async () => {
    const log = pipe();
    const server = http.createServer((req, res) => {
      fs.writeSync(log.w, `req ${process.pid}\n`);
      res.end(String(process.pid));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const interval = setInterval(() => fs.writeSync(log.w, `tick ${process.pid}\n`), 5);
    try {
      const agent = new http.Agent({ keepAlive: false });
      const get = (): Promise<string> =>
        new Promise((resolve, reject) => {
          http
            .get({ host: '127.0.0.1', port, agent }, (res) => {
              let body = '';
              res.on('data', (d) => (body += d));
              res.on('end', () => resolve(body));
            })
            .on('error', reject);
        });
      await get(); // the server is live before the fork
      const p = track(
        new Process({
          target: async () => {
            await sleep(300);
            fs.writeSync(log.w, `child-done ${process.pid}\n`);
          },
        }),
      );
      const t0 = Date.now();
      p.start();
      const bodies = [];
      for (let i = 0; i < 20; i++) bodies.push(await get());
      await p.join(10_000);
      const took = Date.now() - t0;
      expect(p.exitCode).toBe(0);
      expect(took).toBeLessThan(5000); // the inherited server and interval did not keep it alive
      expect(new Set(bodies)).toEqual(new Set([String(process.pid)]));
      clearInterval(interval);
      await new Promise((r) => server.close(r));
      agent.destroy();
      const lines = log.read().trim().split('\n');
      const fromChild = lines.filter((l) => l.endsWith(` ${p.pid}`));
      expect(fromChild).toEqual([`child-done ${p.pid}`]);
      expect(lines.filter((l) => l.startsWith('tick')).length).toBeGreaterThan(0);
    } finally {
      clearInterval(interval);
      server.close();
    }
  });

  it.each([
    ['dropped from Node\'s tick queue', true],
    ['muted by an async hook (where the queue is out of reach)', false],
  ])("the parent's pending nextTick callbacks and promise reactions run in the parent only: %s", async (_how, useQueue) => {
    _useTickQueueForTests(useQueue);
    try {
      const ran = RawArray('i', 2); // [in the parent, in a child]
      const parentPid = process.pid;
      const note = (): void => void Atomics.add(ran, process.pid === parentPid ? 0 : 1, 1);
      process.nextTick(note);
      process.nextTick(note);
      void Promise.resolve().then(note);
      const p = track(new Process({ target: () => {} }));
      p.start(); // with two ticks and a reaction queued
      await p.join(5000);
      expect(p.exitCode).toBe(0);
      expect([ran[0], ran[1]]).toEqual([3, 0]);
    } finally {
      _useTickQueueForTests(true);
    }
    // On this Node the queue is found: no async hook is ever enabled at fork (one would leave
    // every promise in this process ~30% slower for good, measured).
    expect(_tickQueueFound()).toBe(true);
  });

  it('a socket passed as an argument keeps working in the child', async () => {
    let accepted: net.Socket | undefined;
    const server = net.createServer((s) => (accepted = s));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    try {
      await waitUntil(() => accepted !== undefined, 5000);
      let received = '';
      client.on('data', (d) => (received += d));
      const p = track(
        new Process({
          target: (sock: net.Socket) =>
            new Promise<void>((resolve) => sock.write(`hello from ${process.pid}`, () => resolve())),
          args: [accepted],
        }),
      );
      p.start();
      await p.join(10_000);
      expect(p.exitCode).toBe(0);
      expect(await waitUntil(() => received.length > 0, 5000)).toBe(true);
      expect(received).toBe(`hello from ${p.pid}`);
    } finally {
      client.destroy();
      accepted?.destroy();
      server.close();
    }
  });

  it('a daemon child dies when its parent is SIGKILLed', async () => {
    const fixture = spawn(process.execPath, ['--single-threaded', path.join(__dirname, 'fixtures/daemon-parent.js')], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      let line = '';
      fixture.stdout.on('data', (d) => (line += d));
      expect(await waitUntil(() => line.includes('\n'), 10_000)).toBe(true);
      const daemonPid = Number(line.trim());
      expect(isDead(daemonPid)).toBe(false);
      fixture.kill('SIGKILL');
      expect(await waitUntil(() => isDead(daemonPid), 5000)).toBe(true);
    } finally {
      fixture.kill('SIGKILL');
    }
  });

  it('at exit the parent terminates daemon children and waits for the others', async () => {
    const t0 = Date.now();
    const r = await runFixture('exit-function.js');
    expect(r.code).toBe(0);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    const [, daemonPid] = /pids (\d+) (\d+)/.exec(r.stdout)!.map(Number);
    expect(r.stdout).toContain('non-daemon done');
    expect(await waitUntil(() => isDead(daemonPid), 5000)).toBe(true);
  });

  it('ESM entry with top-level await: only the target runs in the child', async () => {
    const r = await runFixture('esm-entry.mjs');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const childPid = /parent \d+ child (\d+)/.exec(r.stdout)![1];
    expect(r.stdout).toContain(`child Process-1 saw-ticks ${childPid}`);
    expect(r.stdout).not.toContain(`tick ${childPid}`);
    expect(r.stdout).toContain('exit 0');
  });

  it('daemonic processes are not allowed to have children', async () => {
    const out = pipe();
    const p = track(
      new Process({
        daemon: true,
        target: () => {
          try {
            new Process({ target: () => {} }).start();
            fs.writeSync(out.w, 'started');
          } catch (e) {
            const err = e as AssertionError;
            fs.writeSync(out.w, `${err.name}|${err.code}|${err.message}`);
          }
        },
      }),
    );
    expect(p.daemon).toBe(true);
    p.start();
    await p.join(10_000);
    expect(out.read()).toBe('AssertionError|ERR_MP_ASSERTION|daemonic processes are not allowed to have children');
  });

  it('misuse errors are those CPython raises', async () => {
    const p = track(new Process({ target: () => {} }));
    expect(() => p.sentinel).toThrow(ValueError);
    expect(() => p.sentinel).toThrow('process not started');
    await expect(p.join()).rejects.toThrow(new AssertionError('can only join a started process'));
    expect(() => p.joinSync()).toThrow('can only join a started process');
    expect(p.isAlive()).toBe(false);
    p.start();
    expect(() => p.start()).toThrow(AssertionError);
    expect(() => p.start()).toThrow('cannot start a process twice');
    expect(() => {
      p.daemon = true;
    }).toThrow('process has already started');
    await p.join(10_000);
    p.close();
    p.close(); // idempotent
    for (const f of [() => p.start(), () => p.pid, () => p.exitCode, () => p.isAlive(), () => p.kill()]) {
      try {
        f();
        expect.unreachable();
      } catch (e) {
        expect(e).toBeInstanceOf(ValueError);
        expect((e as ValueError).code).toBe('ERR_MP_VALUE');
        expect((e as Error).message).toBe('process object is closed');
      }
    }

    const running = track(new Process({ target: forever }));
    running.start();
    try {
      running.close();
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ValueError);
      expect((e as Error).message).toBe(
        'Cannot close a process while it is still running. You should first call join() or terminate().',
      );
    }
    running.kill();
    await running.join(10_000);
    running.close();

    for (const bad of [() => new Process({ target: 5 as never }), () => new Process({ args: 'x' as never })]) {
      try {
        bad();
        expect.unreachable();
      } catch (e) {
        expect(e).toBeInstanceOf(TypeError);
        expect((e as NodeJS.ErrnoException).code).toBe('ERR_INVALID_ARG_TYPE');
      }
    }
  });

  it('refuses to fork while a worker_threads Worker is alive, and forks again after it exits', async () => {
    const w = new Worker('setInterval(() => {}, 1000)', { eval: true });
    try {
      await new Promise((r) => w.once('online', r));
      expect(isForkSafe()).toBe(false);
      const p = track(new Process({ target: () => {} }));
      try {
        p.start();
        expect.unreachable();
      } catch (e) {
        expect((e as NodeJS.ErrnoException).code).toBe('ERR_MP_FORK_UNSAFE');
        expect((e as Error).message).toMatch(/Worker/);
        expect((e as Error).message).toMatch(/npx multiproc/);
        expect((e as Error).message).toMatch(/forkserver/);
      }
      expect(() => posix.fork()).toThrow(expect.objectContaining({ code: 'ERR_MP_FORK_UNSAFE' }));
    } finally {
      await w.terminate();
    }
    expect(isForkSafe()).toBe(true);
    const q = track(new Process({ target: () => {} }));
    q.start();
    await q.join(10_000);
    expect(q.exitCode).toBe(0);
  });
});

describe('targets compiled in the parent', () => {
  it('targets of every kind run: builtins, bound functions, proxies, classes, async and generator functions', async () => {
    // Only plain JS functions are compiled before the fork (V8 would crash on the others).
    const targets: Array<[string, unknown, number]> = [
      ['builtin', Math.max, 0],
      ['bound', function (this: unknown, a: number): number {
        return a;
      }.bind(null, 1), 0],
      ['proxy', new Proxy(() => {}, {}), 0],
      ['class', class A {}, 1], // TypeError: a class needs `new`, as calling it in the parent would
      ['async', async (): Promise<void> => {}, 0],
      ['generator', function* (): Generator<number> {
        yield 1;
      }, 0],
    ];
    for (const [kind, target, code] of targets) {
      const p = track(new Process({ target: target as () => void }));
      p.start();
      await p.join(10_000);
      expect([kind, p.exitCode]).toEqual([kind, code]);
    }
    // V8's natives syntax, allowed for a moment to reach the compiler, is off again.
    expect(() => new Function('x', '%GetOptimizationStatus(x)')).toThrow(SyntaxError);
  });

  it('start() and a pool compile the function the children will run, which the parent never called', () => {
    const dist = ensureDist();
    const src = `
      const mp = require(${JSON.stringify(dist + '/index.js')});
      const lazy = (f) => (%GetOptimizationStatus(f) & (1 << 18)) !== 0; // V8's "not compiled yet"
      const target = () => 1 + 1;
      const before = lazy(target);
      const p = new mp.Process({ target });
      p.start();
      const afterStart = lazy(target);
      p.joinSync(10000);
      const double = (x) => x * 2;
      const pool = new mp.Pool(1);
      pool.apply(double, [21]).then((r) => {
        const afterPool = lazy(double);
        pool.terminate();
        let nativesOn = true;
        try { new Function('x', '%GetOptimizationStatus(x)'); } catch { nativesOn = false; }
        console.log(JSON.stringify({ before, afterStart, code: p.exitCode, r, afterPool, nativesOn }));
      });
    `;
    const r = spawnSync(process.execPath, ['--single-threaded', '--allow-natives-syntax', '-e', src], {
      encoding: 'utf8',
      timeout: 20_000,
      killSignal: 'SIGKILL',
    });
    expect(r.stderr).toBe('');
    // Natives syntax was on from the start here, and stays on.
    expect(JSON.parse(r.stdout)).toEqual({ before: true, afterStart: false, code: 0, r: 42, afterPool: false, nativesOn: true });
  });
});

describe('contexts and start methods', () => {
  it('module functions', () => {
    expect(isForkSafe()).toBe(true);
    expect(getAllStartMethods()).toEqual(['fork', 'forkserver', 'spawn']);
    expect(cpuCount()).toBeGreaterThan(0);
    expect(isMainProcess()).toBe(true);
    expect(getContext('fork').getStartMethod()).toBe('fork');
    expect(() => getContext('bogus' as never)).toThrow(ValueError);
    expect(() => getContext('bogus' as never)).toThrow("cannot find context for 'bogus'");
  });

  it('setStartMethod / getStartMethod follow CPython', () => {
    setStartMethod(null, { force: true });
    try {
      expect(getStartMethod({ allowNone: true })).toBeNull();
      setStartMethod('fork');
      expect(getStartMethod()).toBe('fork');
      expect(() => setStartMethod('spawn')).toThrow(RuntimeError);
      expect(() => setStartMethod('spawn')).toThrow('context has already been set');
      setStartMethod('spawn', { force: true });
      expect(getStartMethod()).toBe('spawn');
      expect(() => getContext('fork').setStartMethod('spawn')).toThrow('cannot set start method of concrete context');
    } finally {
      setStartMethod(null, { force: true });
    }
    expect(getStartMethod()).toBe('fork');
  });

  it('forkserver and spawn refuse a closure target at start(), saying how to export it', () => {
    for (const m of ['forkserver', 'spawn'] as const) {
      const ctx = getContext(m);
      expect(ctx.getStartMethod()).toBe(m);
      const k = 3;
      const p = new ctx.Process({ target: () => k });
      try {
        p.start();
        expect.unreachable();
      } catch (e) {
        expect((e as NodeJS.ErrnoException).code).toBe('ERR_MP_NOT_REFERENCEABLE');
        expect((e as Error).message).toContain(m);
        expect((e as Error).message).toContain('export');
      }
      expect(p.pid).toBeUndefined();
    }
  });

  it('a context-bound Process forks with that context', async () => {
    const ctx = getContext('fork');
    const p = track(new ctx.Process({ target: () => process.exit(3) }));
    expect(p).toBeInstanceOf(Process);
    p.start();
    await p.join(10_000);
    expect(p.exitCode).toBe(3);
  });
});
