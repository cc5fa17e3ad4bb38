import { describe, expect, it } from 'vitest';
import { CalledProcessError, Popen, TimeoutExpired, run, runSync } from '../lib/subprocess';

const node = process.execPath;

describe('subprocess.run', () => {
  it('captures output as Buffers, or text', async () => {
    const r = await run([node, '-e', 'process.stdout.write("out"); process.stderr.write("err")'], { capture: true });
    expect(r.returncode).toBe(0);
    expect(Buffer.isBuffer(r.stdout)).toBe(true);
    expect(r.stdout?.toString()).toBe('out');
    expect(r.stderr?.toString()).toBe('err');
    const t = await run([node, '-e', 'console.log("héllo")'], { capture: true, text: true });
    expect(t.stdout).toBe('héllo\n');
  });

  it('passes input, cwd and env', async () => {
    const r = await run([node, '-e', 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(s.toUpperCase(), process.cwd(), process.env.MP_X))'], {
      capture: true, text: true, input: 'abc', cwd: '/tmp', env: { ...process.env, MP_X: 'y' },
    });
    expect(r.stdout).toBe('ABC /tmp y\n');
  });

  it('check: non-zero exit throws CalledProcessError with the output', async () => {
    const p = run([node, '-e', 'console.log("o"); process.exit(3)'], { capture: true, text: true, check: true });
    await expect(p).rejects.toBeInstanceOf(CalledProcessError);
    await p.catch((e: CalledProcessError) => {
      expect(e.returncode).toBe(3);
      expect(e.stdout).toBe('o\n');
      expect(e.code).toBe('ERR_MP_CALLED_PROCESS');
      expect(e.message).toMatch(/non-zero exit status 3/);
    });
    const r = await run([node, '-e', 'process.exit(3)']);
    expect(r.returncode).toBe(3);
  });

  it('a signal death is a negative returncode', async () => {
    const r = await run([node, '-e', 'process.kill(process.pid, "SIGKILL")']);
    expect(r.returncode).toBe(-9);
  });

  it('timeout kills the child and throws TimeoutExpired', async () => {
    const t0 = Date.now();
    const p = run([node, '-e', 'setTimeout(()=>{}, 60000)'], { timeout: 200 });
    await expect(p).rejects.toBeInstanceOf(TimeoutExpired);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('a missing program is the spawn SystemError', async () => {
    await expect(run(['/nonexistent/prog'])).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('rejects bad arguments with a code', async () => {
    await expect(run([] as string[])).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    await expect(run('ls' as unknown as string[])).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
  });
});

describe('subprocess.runSync', () => {
  it('is the blocking twin', () => {
    const r = runSync([node, '-e', 'console.log(1+1)'], { capture: true, text: true });
    expect(r.stdout).toBe('2\n');
    expect(() => runSync([node, '-e', 'process.exit(2)'], { check: true })).toThrow(CalledProcessError);
    expect(() => runSync([node, '-e', 'setTimeout(()=>{}, 60000)'], { timeout: 200 })).toThrow(TimeoutExpired);
  });
});

describe('Popen', () => {
  it('poll, wait with timeout, kill', async () => {
    const p = new Popen([node, '-e', 'setTimeout(()=>{}, 60000)']);
    try {
      expect(typeof p.pid).toBe('number');
      expect(p.poll()).toBeNull();
      await expect(p.wait(100)).rejects.toBeInstanceOf(TimeoutExpired);
      p.kill();
      expect(await p.wait(5000)).toBe(-9);
      expect(p.returncode).toBe(-9);
    } finally {
      p.kill();
    }
  });

  it('communicate', async () => {
    const p = new Popen([node, '-e', 'process.stdin.pipe(process.stdout)'], { stdin: 'pipe', stdout: 'pipe' });
    const { stdout } = await p.communicate('echo', 5000);
    expect(stdout?.toString()).toBe('echo');
    expect(p.returncode).toBe(0);
  });
});
