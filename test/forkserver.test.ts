// Forkserver specifics that need a fresh process (the server starts once per parent), and
// references found in the CommonJS cache / marked with exportRef.
import { afterEach, describe, expect, it } from 'vitest';
import { createRequire } from 'node:module';
import * as path from 'node:path';

import { exportRef, getContext, setForkserverPreload, type Process } from '../lib/index';
import { forkserverPid } from '../lib/popen/forkserver';

const req = createRequire(__filename);
const cjs = req('./fixtures/cjs-targets.cjs') as {
  triple: (v: unknown, n: number) => void;
  reportPreload: (q: unknown) => void;
};

const started: Process[] = [];
afterEach(async () => {
  for (const p of started.splice(0)) {
    if (p.exitCode === null) p.kill();
    await p.join(5000);
  }
});

describe('forkserver', () => {
  it('imports the setForkserverPreload modules once, before forking: children inherit them', async () => {
    expect(() => setForkserverPreload('x' as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    setForkserverPreload([path.join(__dirname, 'fixtures', 'preload-me.cjs')]);
    const ctx = getContext('forkserver');
    const q = ctx.Queue<{ preloaded: number | null; name: string }>();
    const ps = [0, 1].map((i) => new ctx.Process({ target: cjs.reportPreload, args: [q], name: `pre-${i}` }));
    for (const p of ps) {
      started.push(p);
      p.start();
    }
    const got = [await q.get({ timeout: 10_000 }), await q.get({ timeout: 10_000 })];
    const server = forkserverPid();
    expect(server).toBeGreaterThan(0);
    expect(got.map((g) => g.preloaded)).toEqual([server, server]);
    expect(got.map((g) => g.name).sort()).toEqual(['pre-0', 'pre-1']);
    for (const p of ps) await p.join(10_000);
    q.close();
  });

  it('finds a CommonJS export through require.cache, and a function marked with exportRef', async () => {
    for (const m of ['forkserver', 'spawn'] as const) {
      const ctx = getContext(m);
      const v = ctx.Value('i', 0);
      const p = new ctx.Process({ target: cjs.triple, args: [v, 14] });
      started.push(p);
      p.start();
      await p.join(10_000);
      expect([m, p.exitCode, v.value]).toEqual([m, 0, 42]);
      // A local function made referenceable by naming the export it is known by.
      const local = exportRef((vv: { value: number }, n: number) => void (vv.value = n), req.resolve('./fixtures/cjs-targets.cjs'), 'triple');
      const p2 = new ctx.Process({ target: local, args: [v, 5] });
      started.push(p2);
      p2.start();
      await p2.join(10_000);
      expect(v.value).toBe(15); // the child ran the module's triple, not the local closure
    }
  });
});
