// Test helper: scripts run in separate Node processes load the compiled library (dist/). `npm
// test` builds it first (pretest); when vitest is run directly, build it here if any source is
// newer than its output. Test files run in parallel processes: one builds, the others wait.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const root = path.join(__dirname, '..', '..');

function stale(dir: string): boolean {
  const lib = path.join(root, 'lib');
  return fs.readdirSync(dir, { withFileTypes: true }).some((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return stale(p);
    if (!e.name.endsWith('.ts')) return false;
    const out = path.join(root, 'dist', path.relative(lib, p)).replace(/\.ts$/, '.js');
    return !fs.existsSync(out) || fs.statSync(out).mtimeMs < fs.statSync(p).mtimeMs;
  });
}

export function ensureDist(): string {
  const dist = path.join(root, 'dist');
  if (!stale(path.join(root, 'lib'))) return dist;
  const lock = path.join(root, '.dist-build-lock');
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      fs.mkdirSync(lock);
      break;
    } catch {
      try {
        // Left behind by a test process that was killed while building.
        if (fs.statSync(lock).mtimeMs < Date.now() - 120_000) fs.rmdirSync(lock);
      } catch {
        /* gone meanwhile */
      }
      if (Date.now() > deadline) throw new Error('timed out waiting for another test process to build dist/');
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
    }
  }
  try {
    if (stale(path.join(root, 'lib')))
      execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.build.json')], { stdio: 'inherit' });
  } finally {
    fs.rmdirSync(lock);
  }
  return dist;
}
