// Programs run with plain node (not the test runner): the main-module guard under spawn and
// forkserver, and a forkserver that dies with its parent.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

import { ensureDist } from './helpers/dist';

const fixture = (f: string): string => path.join(__dirname, 'fixtures', f);

function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.split(') ')[1]?.[0] !== 'Z';
  } catch {
    return false;
  }
}

describe.each(['spawn', 'forkserver'] as const)('%s: the main module', (method) => {
  it('with the guard, the child imports it without starting processes, and runs its target', () => {
    ensureDist();
    const r = spawnSync(process.execPath, [fixture('guarded-main.mjs'), method, 'guard'], { encoding: 'utf8', timeout: 20_000 });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`child ran ${method} main=false`);
    expect(r.stdout).toContain('parent saw exit 0');
  });

  it('without the guard, the bootstrap start() fails with ERR_MP_BOOTSTRAPPING: exit code 1, no fork bomb', () => {
    const r = spawnSync(process.execPath, [fixture('guarded-main.mjs'), method, 'noguard'], { encoding: 'utf8', timeout: 20_000 });
    expect(r.status).toBe(0); // the parent itself is fine
    expect(r.stdout).toContain('parent saw exit 1');
    expect(r.stdout).not.toContain('child ran');
    expect(r.stderr).toContain('ERR_MP_BOOTSTRAPPING');
    expect(r.stderr).toContain('isMainProcess()');
    // exactly one start message: the child did not start a grandchild
    expect(r.stdout.match(/parent saw exit/g)).toHaveLength(1);
  });
});

describe.each(['spawn', 'forkserver'] as const)('%s: an uncaught error in the target', (method) => {
  it('exits the child with code 1 and prints the process name and the stack on its stderr', () => {
    ensureDist();
    const r = spawnSync(process.execPath, [fixture('failing-child.mjs'), method], { encoding: 'utf8', timeout: 20_000 });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('parent saw exit 1\n');
    expect(r.stderr).toContain('Process failing:');
    expect(r.stderr).toContain(`RangeError: boom in a ${method} child`);
    expect(r.stderr).toMatch(/at (\S+\.)?boom \(file:\/\/\S*failing-child\.mjs:6:/);
  });
});

describe('forkserver', () => {
  it('dies with its parent (SIGKILL), and so do daemon children: no orphan is left', async () => {
    const ch = spawn(process.execPath, [fixture('forkserver-parent.mjs')], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    const info = await new Promise<{ parent: number; server: number; child: number }>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no pids printed: ${out}`)), 20_000);
      ch.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) {
          clearTimeout(t);
          resolve(JSON.parse(out.split('\n')[0]!));
        }
      });
    });
    expect(alive(info.server)).toBe(true);
    expect(alive(info.child)).toBe(true);
    ch.kill('SIGKILL');
    await new Promise((r) => ch.on('exit', r));
    const deadline = Date.now() + 10_000;
    while ((alive(info.server) || alive(info.child)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect([alive(info.server), alive(info.child)]).toEqual([false, false]);
  });
});
