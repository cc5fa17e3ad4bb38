import * as fs from 'node:fs';

import { afterEach, describe, expect, it } from 'vitest';

import * as posix from '../lib/posix';
import { cleanupChildren, pipe, runFixture, trackPid } from './fixtures/children';

afterEach(cleanupChildren);

/** Raw fork: the child runs `body` and _exits with its result; it never returns into the test. */
function forkChild(body: () => number): number {
  const pid = posix.fork();
  if (pid === 0) {
    let code = 99;
    try {
      code = body();
    } finally {
      posix.exit(code);
    }
  }
  return trackPid(pid);
}

function expectSystemError(f: () => unknown, code: string, syscall: string): void {
  try {
    f();
    expect.unreachable();
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    expect(err).toBeInstanceOf(Error);
    expect(err.code).toBe(code);
    expect(err.syscall).toBe(syscall);
    expect(typeof err.errno).toBe('number');
    expect(err.errno).toBeLessThan(0);
    expect(err.message).toMatch(new RegExp(`^${code}: .*, ${syscall}`));
  }
}

describe('multiproc/posix', () => {
  it('fork returns the pid in the parent and 0 in the child; waitpid reports the exit code', () => {
    const out = pipe();
    const parent = process.pid;
    const pid = forkChild(() => {
      fs.writeSync(
        out.w,
        JSON.stringify({ pid: posix.getpid(), processPid: process.pid, ppid: posix.getppid(), processPpid: process.ppid }),
      );
      return 5;
    });
    expect(pid).toBeGreaterThan(0);
    const st = posix.waitpid(pid);
    expect(st).toEqual({ pid, status: 5 << 8, exitCode: 5, signal: null });
    expect(JSON.parse(out.read())).toEqual({ pid, processPid: pid, ppid: parent, processPpid: parent });
  });

  it('the child has a working heap: allocation, full GCs, promises run', () => {
    const out = pipe();
    const pid = forkChild(() => {
      const keep: object[] = [];
      for (let i = 0; i < 200_000; i++) keep.push({ i, s: 'x' + i });
      for (let i = 0; i < 3; i++) {
        const junk = new Array(100_000).fill(0).map((_, j) => ({ j }));
        keep.push(junk.slice(0, 10));
      }
      fs.writeSync(out.w, String(keep.length));
      return 0;
    });
    expect(posix.waitpid(pid)?.exitCode).toBe(0);
    expect(out.read()).toBe('200003');
  });

  it('waitpid noHang returns null while the child runs; a signal death is reported', () => {
    const go = pipe();
    const pid = forkChild(() => {
      fs.readSync(go.r, Buffer.alloc(1));
      process.kill(posix.getpid(), 'SIGKILL');
      return 0;
    });
    expect(posix.waitpid(pid, { noHang: true })).toBeNull();
    fs.writeSync(go.w, 'x');
    const st = posix.waitpid(pid);
    expect(st?.signal).toBe(9);
    expect(st?.exitCode).toBeNull();
  });

  it('kill with a signal name or number', () => {
    const go = pipe();
    const pid = forkChild(() => {
      fs.readSync(go.r, Buffer.alloc(1)); // blocks until killed
      return 0;
    });
    // SIGUSR2: neither Node nor the test runner handles it, so its default action (terminate)
    // applies in a raw fork child, which keeps the parent's signal handlers (C semantics).
    posix.kill(pid, 'SIGUSR2');
    expect(posix.waitpid(pid)?.signal).toBe(12);
    const pid2 = forkChild(() => {
      fs.readSync(go.r, Buffer.alloc(1));
      return 0;
    });
    posix.kill(pid2, 9);
    expect(posix.waitpid(pid2)?.signal).toBe(9);
  });

  it('setsid in a child makes it a session leader', () => {
    const out = pipe();
    const pid = forkChild(() => {
      fs.writeSync(out.w, String(posix.setsid()));
      return 0;
    });
    expect(posix.waitpid(pid)?.exitCode).toBe(0);
    expect(Number(out.read())).toBe(pid);
  });

  it('OS failures are SystemErrors', () => {
    // A pid far above pid_max: no such process.
    expectSystemError(() => posix.kill(2 ** 30, 0), 'ESRCH', 'kill');
    expectSystemError(() => posix.waitpid(1), 'ECHILD', 'waitpid');
    expectSystemError(() => posix.close(1_000_000), 'EBADF', 'close');
    expectSystemError(() => posix.dup2(1_000_000, 50), 'EBADF', 'dup2');
    // The calling process is a process-group leader? setsid fails with EPERM only then; the
    // vitest worker is not, so check the pid-group case through a child above.
  });

  it('bad arguments are TypeErrors/RangeErrors with stable codes', () => {
    const code = (f: () => unknown): string | undefined => {
      try {
        f();
      } catch (e) {
        return (e as NodeJS.ErrnoException).code;
      }
      return undefined;
    };
    expect(code(() => posix.kill('1' as never))).toBe('ERR_INVALID_ARG_TYPE');
    expect(code(() => posix.kill(1, 'SIGNOPE' as never))).toBe('ERR_INVALID_ARG_VALUE');
    expect(code(() => posix.kill(1, {} as never))).toBe('ERR_INVALID_ARG_TYPE');
    expect(code(() => posix.waitpid(-1))).toBe('ERR_INVALID_ARG_VALUE');
    expect(code(() => posix.waitpid(1.5))).toBe('ERR_INVALID_ARG_VALUE');
    expect(code(() => posix.close(-1))).toBe('ERR_INVALID_ARG_VALUE');
    expect(code(() => posix.dup2(0, 'x' as never))).toBe('ERR_INVALID_ARG_TYPE');
    expect(code(() => posix.fork(null as never))).toBe('ERR_INVALID_ARG_TYPE');
    expect(code(() => posix.exit(1.5))).toBe('ERR_INVALID_ARG_TYPE');
  });

  it('pipe, socketpair, dup2 and close', () => {
    const [r, w] = posix.pipe();
    const [a, b] = posix.socketpair();
    try {
      fs.writeSync(w, 'through the pipe');
      const buf = Buffer.alloc(64);
      expect(buf.toString('utf8', 0, fs.readSync(r, buf))).toBe('through the pipe');
      fs.writeSync(a, 'ping');
      expect(buf.toString('utf8', 0, fs.readSync(b, buf))).toBe('ping');
      const spare = fs.openSync('/dev/null', 'r');
      expect(posix.dup2(w, spare)).toBe(spare);
      fs.writeSync(spare, 'via dup');
      expect(buf.toString('utf8', 0, fs.readSync(r, buf))).toBe('via dup');
      posix.close(spare);
      expect(() => fs.fstatSync(spare)).toThrow();
    } finally {
      for (const fd of [r, w, a, b]) posix.close(fd);
    }
  });

  it('isForkSafe under --single-threaded with no Worker', () => {
    expect(process.execArgv).toContain('--single-threaded');
    expect(posix.isForkSafe()).toBe(true);
  });

  it('dieWithParent: the child is killed when its parent dies', async () => {
    const out = pipe();
    const hold = pipe(); // never written: reading it blocks until killed
    // middle: forks a grandchild with dieWithParent, reports its pid, then waits to be killed.
    const middle = forkChild(() => {
      const g = posix.fork({ dieWithParent: true });
      if (g === 0) for (;;) fs.readSync(hold.r, Buffer.alloc(1));
      fs.writeSync(out.w, String(g));
      for (;;) fs.readSync(hold.r, Buffer.alloc(1));
    });
    const buf = Buffer.alloc(32);
    const n = fs.readSync(out.r, buf);
    const grandchild = Number(buf.toString('utf8', 0, n));
    expect(grandchild).toBeGreaterThan(0);
    posix.kill(middle, 'SIGKILL');
    posix.waitpid(middle);
    const end = Date.now() + 5000;
    let dead = false;
    while (Date.now() < end && !dead) {
      try {
        const stat = fs.readFileSync(`/proc/${grandchild}/stat`, 'utf8');
        dead = stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
      } catch {
        dead = true;
      }
      if (!dead) await new Promise((r) => setTimeout(r, 10));
    }
    expect(dead).toBe(true);
  });

  it('a raw child whose loop runs dry exits like Node: exit listeners, process.exitCode', async () => {
    const r = await runFixture('raw-natural-exit.js');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('child timer\nchild exit 4\nparent saw 4\n');
  });
});
