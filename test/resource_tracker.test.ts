import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ensureDist } from './helpers/dist';

const dist = ensureDist();

function onShm(name: string): boolean {
  return fs.existsSync('/dev/shm/' + name.replace(/^\//, ''));
}
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    return !/^\d+ \(.*\) Z/.test(stat);
  } catch {
    return false;
  }
}
async function until(f: () => boolean, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  while (!f() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  return f();
}

// Runs a script (with `mp` = the library) in its own fork-safe Node process; resolves with the
// first line it prints (JSON) and the process, which the caller must end.
function script(src: string): Promise<{ info: Record<string, unknown>; proc: ReturnType<typeof spawn> }> {
  const code = `const mp = require(${JSON.stringify(dist + '/index.js')});\n${src}`;
  const proc = spawn(process.execPath, ['--single-threaded', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const t = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error('script timed out: ' + err));
    }, 15_000);
    proc.stderr!.on('data', (d) => (err += d));
    proc.stdout!.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(t);
        resolve({ info: JSON.parse(out.slice(0, nl)), proc });
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(t);
      if (out.indexOf('\n') < 0) reject(new Error(`script exited ${code}: ${err}`));
    });
  });
}

describe('resource tracker', () => {
  it('a SIGKILLed process tree leaves nothing in /dev/shm; the tracker then exits', async () => {
    const { info, proc } = await script(`
      const tracker = require(${JSON.stringify(dist + '/resource_tracker.js')});
      const { spawnSync } = require('child_process');
      const shm = new mp.SharedMemory({ create: true, size: 4096 });
      const lock = new mp.Lock();                 // lives in a heap arena segment
      const v = mp.Value('i', 1);
      const big = mp.RawArray('d', 10000);        // its own segment
      const fromChild = mp.RawArray('B', 64);
      const p = new mp.Process({ target: () => {
        const mine = new mp.SharedMemory({ create: true, size: 100 });
        Buffer.from(fromChild.buffer, fromChild.byteOffset, 64).write(mine.name);
        setInterval(() => {}, 1000);
      }});
      p.start();
      const t0 = Date.now();
      while (fromChild[0] === 0 && Date.now() - t0 < 5000) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
      const childShm = Buffer.from(fromChild.buffer, fromChild.byteOffset, 64).toString().replace(/\\0+$/, '');
      // Exactly the segments this process created (other test runs may share /dev/shm).
      const { kReduce } = require(${JSON.stringify(dist + '/shared_memory.js')});
      const { describeRawArray } = require(${JSON.stringify(dist + '/sharedctypes.js')});
      const segs = [...new Set([lock[kReduce]().block.segment, v[kReduce]().obj.block.segment, describeRawArray(big).block.segment])]
        .map((n) => n.slice(1));
      console.log(JSON.stringify({ shm: shm.name, childShm, child: p.pid, tracker: tracker.trackerPid(), segs }));
      setInterval(() => {}, 1000);
    `);
    const names = [info.shm as string, info.childShm as string];
    expect(names[1]).toMatch(/^mp-/);
    for (const n of names) expect(onShm(n)).toBe(true);
    const ours = info.segs as string[];
    expect(ours.length).toBe(2); // the heap arena (Lock, Value) + the big array's own segment
    for (const n of ours) expect(onShm(n)).toBe(true);
    const tracker = info.tracker as number;
    expect(alive(tracker)).toBe(true);
    process.kill(info.child as number, 'SIGKILL');
    proc.kill('SIGKILL');
    await new Promise((r) => proc.once('exit', r));
    expect(await until(() => ours.every((n) => !onShm(n)) && names.every((n) => !onShm(n)))).toBe(true);
    expect(await until(() => !alive(tracker))).toBe(true);
  });

  it('a normal exit unlinks what the process created, without the tracker', async () => {
    const { info, proc } = await script(`
      const tracker = require(${JSON.stringify(dist + '/resource_tracker.js')});
      const shm = new mp.SharedMemory({ create: true, size: 10 });
      const keep = new mp.SharedMemory({ create: true, size: 10, track: false });
      const l = new mp.Lock();
      console.log(JSON.stringify({ shm: shm.name, keep: keep.name, tracker: tracker.trackerPid() }));
      setTimeout(() => {}, 200);
    `);
    const code = await new Promise((r) => proc.once('exit', r));
    expect(code).toBe(0);
    expect(onShm(info.shm as string)).toBe(false);
    // track: false is the caller's to unlink (as in CPython)
    expect(onShm(info.keep as string)).toBe(true);
    fs.rmSync('/dev/shm/' + (info.keep as string));
    expect(await until(() => !alive(info.tracker as number))).toBe(true);
  });

  // On Linux the tracker is forked (native/posix/tracker.cc): what it inherits must not hold
  // anything of the program's (fds keep pipes and sockets open; memory would stay pinned).
  it.runIf(process.platform === 'linux')('the tracker holds only its lifeline, none of the program\'s fds or memory, and is nobody\'s zombie', async () => {
    const { info, proc } = await script(`
      const tracker = require(${JSON.stringify(dist + '/resource_tracker.js')});
      const net = require('net');
      const big = Buffer.alloc(128 * 1024 * 1024, 1);     // the program's memory
      const server = net.createServer().listen(0, '127.0.0.1', () => {
        const shm = new mp.SharedMemory({ create: true, size: 4096 });
        console.log(JSON.stringify({ pid: process.pid, tracker: tracker.trackerPid(), shm: shm.name, port: server.address().port }));
      });
      setInterval(() => big[0]++, 1000);
    `);
    const pid = info.pid as number;
    const t = info.tracker as number;
    try {
      // Its pid is known before it has set itself up: it names itself last.
      const named = (): boolean => fs.readFileSync(`/proc/${t}/cmdline`, 'latin1').startsWith('multiproc-resource-tracker\0');
      expect(await until(named)).toBe(true);
      const fds = fs.readdirSync(`/proc/${t}/fd`).sort();
      expect(fds).toEqual(['0', '1', '2']);
      expect(fs.readlinkSync(`/proc/${t}/fd/0`)).toMatch(/^pipe:/);
      expect(fs.readlinkSync(`/proc/${t}/fd/1`)).toBe('/dev/null');
      const rss = (p: number): number => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${p}/status`, 'latin1'))![1]) * 1024;
      expect(rss(pid)).toBeGreaterThan(128 * 1024 * 1024);
      expect(rss(t)).toBeLessThan(16 * 1024 * 1024);
      const stat = (p: number): string[] => fs.readFileSync(`/proc/${p}/stat`, 'latin1').split(') ')[1]!.split(' ');
      expect(Number(stat(t)[1])).not.toBe(pid); // ppid: re-parented, never the program's zombie
      expect(stat(t)[3]).not.toBe(stat(pid)[3]); // its own session
    } finally {
      proc.kill('SIGKILL');
      await new Promise((r) => proc.once('exit', r));
    }
    expect(await until(() => !onShm(info.shm as string))).toBe(true);
    expect(await until(() => !alive(t))).toBe(true);
  });
});
