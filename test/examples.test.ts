// Every example in examples/ runs, as a user would run it (npx multiproc examples/x.js), and
// prints what it promises.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { describe, expect, it } from 'vitest';

const root = path.join(__dirname, '..');
const bin = path.join(root, 'bin', 'multiproc.js');

function runExample(name: string, env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, path.join(root, 'examples', name)], { env: { ...process.env, ...env }, timeout: 60_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const expectations: Record<string, { env?: Record<string, string>; out: RegExp }> = {
  'demo.js': { env: { DEMO_COUNT: '20000' }, out: /speedup [\d.]+x with \d+ processes, [\d.]+x with Pool\(\d+\), on \d+ cores \(results identical\)/ },
  'download.js': { env: { DOWNLOAD_MS: '100' }, out: /4 processes: \d+ ms/ },
  'producer_consumer.js': { out: /got 2000 items in order per producer, sum 999000/ },
  'pipe.js': { out: /child got: hi back/ },
  'counter.js': { out: /counter = 40000 \(expected 40000\)/ },
  'pool_primes.js': { env: { PRIMES_COUNT: '3000' }, out: /1000000001 = 7 x 11 x 13 x 19 x 52579\nserial \d+ ms, Pool\(\d+\) \d+ ms/ },
  'start_methods.js': {
    out: /fork {7}child pid ok: 12 \* 12 = 144, exit 0[\s\S]*forkserver child pid ok: 12 \* 12 = 144, exit 0[\s\S]*spawn {6}child pid ok: 12 \* 12 = 144, exit 0[\s\S]*closure under spawn: ERR_MP_NOT_REFERENCEABLE/,
  },
  'pool_apply_async.js': {
    out: /sum of squares 285\nget\(10\): TimeoutError[\s\S]*imap: sum of squares 1\.\.100 = 338350\nclosure: \[ 7, 14, 21 \]\nerror: true out of range in the worker/,
  },
};

describe('examples', () => {
  it('every file in examples/ has a test here', () => {
    const files = fs.readdirSync(path.join(root, 'examples')).filter((f) => f.endsWith('.js'));
    expect(files.sort()).toEqual(Object.keys(expectations).sort());
  });

  for (const [name, { env, out }] of Object.entries(expectations)) {
    it(`${name} runs and prints its result`, async () => {
      const r = await runExample(name, env);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(out);
    }, 70_000);
  }
});
