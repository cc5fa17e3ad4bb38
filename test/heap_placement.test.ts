// V8's heap pages side by side instead of at random addresses (native/posix/fork.cc,
// ReserveHintRange): fewer page tables for fork() to copy. Each case runs in a fresh Node process,
// as the reservation happens when the library loads.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { ensureDist } from './helpers/dist';

const dist = ensureDist();
const linuxX64 = process.platform === 'linux' && process.arch === 'x64';

// Loads the library, then allocates ~64 MB of JS (1 MiB arrays, each a mapping of its own, and
// small objects filling ordinary heap pages) and reports where the new mappings went, the page
// tables, and a forked child that allocates too.
const PROBE = `
  const fs = require('fs');
  const mp = require(${JSON.stringify(dist + '/index.js')});
  const HINT_END = 2n ** 46n; // V8's x64 hints: [0, 64 TiB)
  function maps() {
    return fs.readFileSync('/proc/self/maps', 'utf8').trim().split('\\n').map((l) => {
      const [range, perms, , , inode] = l.split(/\\s+/);
      const [a, b] = range.split('-').map((x) => BigInt('0x' + x));
      return { a, b, perms, anon: inode === '0' && l.trim().split(/\\s+/).length === 5 };
    });
  }
  const before = new Set(maps().map((m) => m.a));
  const reservations = maps().filter((m) => m.anon && m.perms === '---p' && m.b - m.a >= 2n ** 39n);
  const reserved = reservations.reduce((s, m) => s + m.b - m.a, 0n);
  // Resident memory of the reservations, from smaps.
  let reservedRss = 0;
  let inRes = false;
  for (const l of fs.readFileSync('/proc/self/smaps', 'utf8').split('\\n')) {
    const m = /^([0-9a-f]+)-[0-9a-f]+ /.exec(l);
    if (m) inRes = reservations.some((r) => r.a === BigInt('0x' + m[1]));
    else if (inRes && l.startsWith('Rss:')) reservedRss += parseInt(l.slice(4), 10);
  }
  const keep = [];
  for (let i = 0; i < 48; i++) keep.push(new Array(131072).fill(i + 0.5));
  for (let i = 0; i < 200000; i++) keep.push({ i, s: 'x' + i });
  const added = maps().filter((m) => m.anon && m.perms === 'rw-p' && !before.has(m.a));
  // In bytes: side-by-side mappings merge, so counting them would understate the effect.
  const bytes = (ms) => Number(ms.reduce((n, m) => n + m.b - m.a, 0n));
  const addedBytes = bytes(added);
  const inHintRange = bytes(added.filter((m) => m.a < HINT_END));
  const vmPte = Number(/VmPTE:\\s+(\\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]);
  const p = new mp.Process({ target: () => { const a = []; for (let i = 0; i < 32; i++) a.push(new Array(131072).fill(i)); } });
  p.start();
  p.joinSync(15000);
  console.log(JSON.stringify({ reserved: Number(reserved), reservedRss, added: added.length, addedBytes, inHintRange, vmPte, child: p.exitCode }));
`;

function probe(env: Record<string, string>, prefix = ''): Record<string, number> {
  const node = JSON.stringify(process.execPath);
  const r = spawnSync('/bin/sh', ['-c', `${prefix}exec ${node} --single-threaded -e "$PROBE"`], {
    encoding: 'utf8',
    timeout: 30_000,
    killSignal: 'SIGKILL',
    env: { ...process.env, MULTIPROC_HEAP_ASLR: '', ...env, PROBE },
  });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  return JSON.parse(r.stdout) as Record<string, number>;
}

describe.runIf(linuxX64)('heap placement', () => {
  it('new V8 pages land side by side, outside the reserved hint range, and fork works', () => {
    const on = probe({});
    const off = probe({ MULTIPROC_HEAP_ASLR: '1' });
    // Most of the 64 TiB is reserved (whole 512 GiB slots the pages V8 placed before did not take),
    // as address space only: no resident memory.
    expect(on.reserved).toBeGreaterThan(32 * 2 ** 40);
    expect(on.reservedRss).toBe(0);
    expect(off.reserved).toBe(0);
    // ~48 large objects and a few dozen ordinary pages: V8 put all of them at its random hints when
    // nothing is reserved; with the reservation, only those whose hint fell in a 512 GiB slot that
    // was in use when the library loaded (~22 of the 127 here: 14-24% of the bytes in 8 runs).
    expect(off.added).toBeGreaterThan(20);
    expect(off.inHintRange / off.addedBytes).toBeGreaterThan(0.9);
    expect(on.added).toBeGreaterThan(10);
    expect(on.inHintRange / on.addedBytes).toBeLessThan(0.4);
    // What fork() copies: the page tables.
    expect(on.vmPte).toBeLessThan(off.vmPte * 0.7);
    expect(on.child).toBe(0);
    expect(off.child).toBe(0);
  });

  it('nothing is reserved when RLIMIT_AS is finite (it would count); the library works as before', () => {
    // 2 TiB: room for a few 512 GiB slots, which would then be missing from the program's limit.
    const limited = probe({}, 'ulimit -v 2147483648; ');
    expect(limited.reserved).toBe(0);
    expect(limited.child).toBe(0);
  });
});
