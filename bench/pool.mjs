// Pools: map of a trivial function (chunksize 1 and default), apply round trip, CPU-bound
// factorisation speedup (serial vs 2 workers, pool start/stop included) and the first call of a
// function the workers have not seen. Ours vs CPython Pool(2) (fork), piscina (2 threads) and a
// child_process.fork round-robin pool of 2. Pool(2) under the forkserver and spawn start methods:
// start-up, apply round trip and map chunksize 1, ours vs CPython's under the same method.
//   node bench/pool.mjs [--quick] [--rounds N] [--json out.json]
import { fork } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { benchMain, median, BENCH_DIR } from './lib/harness.mjs';

const require = createRequire(import.meta.url);
const { factorize, factorChecksum, defaultChunksize, chunks } = require('./lib/workloads.cjs');

const nowNs = () => Number(process.hrtime.bigint());
const CHILD = path.join(BENCH_DIR, 'lib', 'children.cjs');
const WORKERS = 2;

// Exported: under spawn/forkserver the workers import them from this module by reference (the
// bench does not run again there: benchMain returns in a child, as `if __name__ == '__main__'`).
export const ident = (x) => x;
export const noop = () => null;

const range = (a, n) => Array.from({ length: n }, (_, i) => a + i);
function sameArray(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A fresh function the pool has never seen: unique source, no captured state. */
const freshFunction = (i) => (0, eval)(`(x) => x + ${i}`);

/**
 * The measurements every pool goes through. `P` adapts one pool kind:
 *   create(), close(p), map(p, fn-name, data, chunksize|undefined), apply(p, 'noop'),
 *   closure(p, i) -> result of calling function #i on 1.
 */
/** map over `data` with chunksize 1: one task per item. */
function mapChunk1Step(rec, P, pool, data) {
  return rec.step('map_chunk1_tps', async () => {
    const t0 = nowNs();
    const r = await P.map(pool, 'ident', data, 1);
    const dt = (nowNs() - t0) / 1e9;
    if (!sameArray(r, data)) throw new Error('map chunksize=1: wrong result');
    return data.length / dt;
  });
}

/** The median round trip of apply(noop), after 200 to warm up. */
function applyStep(rec, P, pool, cfg) {
  return rec.step('apply_rtt_us', async () => {
    for (let i = 0; i < 200; i++) await P.apply(pool);
    const lat = [];
    for (let i = 0; i < cfg.n_rtt; i++) {
      const t0 = nowNs();
      await P.apply(pool);
      lat.push((nowNs() - t0) / 1e3);
    }
    return median(lat);
  });
}

async function poolSuite(cfg, rec, P) {
  const data = range(0, cfg.n_map);
  if (P.start) await startStep(rec, P.start, cfg.n_start);
  const pool = await P.create();
  await P.map(pool, 'ident', range(0, 1000)); // warm-up
  await mapChunk1Step(rec, P, pool, data);
  await rec.step('map_default_tps', async () => {
    const t0 = nowNs();
    const r = await P.map(pool, 'ident', data, undefined);
    const dt = (nowNs() - t0) / 1e9;
    if (!sameArray(r, data)) throw new Error('map default chunksize: wrong result');
    return data.length / dt;
  });
  await applyStep(rec, P, pool, cfg);
  await rec.step('closure_us', async () => {
    const lat = [];
    for (let i = 0; i < cfg.n_closure; i++) {
      const t0 = nowNs();
      const r = await P.closure(pool, i);
      lat.push((nowNs() - t0) / 1e3);
      if (r !== 1 + i) throw new Error(`new function #${i} returned ${r}`);
    }
    return median(lat);
  });
  await P.close(pool);

  await cpuSpeedup(rec, P, range(cfg.cpu_start, cfg.cpu_count), 'cpu');
  // JavaScript factorises ~30x faster than CPython, so the range above is over in ~0.1 s and
  // mostly measures pool start-up; the bigger range shows the parallel speedup itself.
  await cpuSpeedup(rec, P, range(cfg.cpu_start, cfg.cpu_big_count), 'cpu_big');
}

/** Pool(2) start-up: constructor to the answer of map(ident, [0, 1], chunksize 1) (median;
 * close+join not counted). */
async function startStep(rec, create, n) {
  await rec.step('start_ms', async () => {
    const lat = [];
    for (let i = 0; i < n; i++) {
      const t0 = nowNs();
      const p = create();
      const r = await p.map(ident, [0, 1], { chunksize: 1 });
      lat.push((nowNs() - t0) / 1e6);
      if (!sameArray(r, [0, 1])) throw new Error('start-up map: wrong result');
      p.close();
      await p.join();
    }
    return median(lat);
  });
}

/** Pool(2) under `method` (forkserver / spawn): start-up, map chunksize 1, apply round trip. */
async function methodSuite(cfg, rec, mp, method) {
  const ctx = mp.getContext(method);
  if (method === 'forkserver') {
    const p = ctx.Pool(1); // starts the server (CPython's rows start it before measuring too)
    await p.apply(noop);
    await p.terminate();
  }
  await startStep(rec, () => ctx.Pool(WORKERS), cfg.n_start);
  const P = { ...oursPool(mp), create: async () => ctx.Pool(WORKERS) };
  const data = range(0, cfg.n_map);
  const pool = await P.create();
  await P.map(pool, 'ident', range(0, 1000)); // warm-up
  await mapChunk1Step(rec, P, pool, data);
  await applyStep(rec, P, pool, cfg);
  await P.close(pool);
}

async function cpuSpeedup(rec, P, nums, prefix) {
  let ref;
  await rec.step(`${prefix}_serial_s`, () => {
    const t0 = nowNs();
    ref = factorChecksum(nums.map(factorize));
    return (nowNs() - t0) / 1e9;
  });
  await rec.step(`${prefix}_pool_s`, async () => {
    const t0 = nowNs();
    const p = await P.create();
    const r = await P.map(p, 'factorize', nums, undefined);
    await P.close(p);
    const dt = (nowNs() - t0) / 1e9;
    if (factorChecksum(r) !== ref) throw new Error('parallel factorisation differs from serial');
    return dt;
  });
  const v = rec.values;
  if (v[`${prefix}_serial_s`] !== undefined && v[`${prefix}_pool_s`] !== undefined) {
    v[`${prefix}_speedup`] = v[`${prefix}_serial_s`] / v[`${prefix}_pool_s`];
    rec.ext[`${prefix}_speedup`] = Math.max(rec.ext[`${prefix}_serial_s`], rec.ext[`${prefix}_pool_s`]);
  }
  rec.note(`${prefix}: ${nums.length} numbers, factorisation checksum ${ref}`);
}

// --- ours ------------------------------------------------------------------------------------

const FN = { ident, factorize };

const oursPool = (mp) => ({
  start: () => new mp.Pool(WORKERS),
  create: async () => new mp.Pool(WORKERS),
  close: async (p) => {
    p.close();
    await p.join();
  },
  map: (p, fn, data, chunksize) => p.map(FN[fn], data, chunksize === undefined ? undefined : { chunksize }),
  apply: (p) => p.apply(noop),
  closure: (p, i) => p.apply(freshFunction(i), [1]),
});

// map() for the message-passing alternatives (piscina, the child_process pool): one message per
// chunk (per item when chunksize is 1), CPython's default chunksize rule.
async function mapByMessages(p, op, data, chunksize) {
  const size = chunksize ?? defaultChunksize(data.length, WORKERS);
  if (size === 1 && op === 'ident') return Promise.all(data.map((x) => p.run({ op, arg: x })));
  const parts = await Promise.all(chunks(data, size).map((c) => p.run({ op, arg: c })));
  return parts.flat(1);
}

// --- piscina ---------------------------------------------------------------------------------

const piscinaPool = () => {
  const Piscina = require('piscina');
  const filename = path.join(BENCH_DIR, 'lib', 'piscina_worker.cjs');
  return {
    create: async () => new Piscina({ filename, minThreads: WORKERS, maxThreads: WORKERS }),
    close: (p) => p.destroy(),
    map: mapByMessages,
    apply: (p) => p.run({ op: 'noop' }),
    closure: (p, i) => p.run({ op: 'source', src: freshFunction(i).toString(), arg: [1] }),
  };
};

// --- child_process.fork round-robin pool --------------------------------------------------------

class CpPool {
  #kids = [];
  #pending = new Map();
  #next = 0;
  #id = 0;
  #exits = [];
  constructor(n) {
    for (let i = 0; i < n; i++) {
      const c = fork(CHILD, ['pool-worker']);
      c.on('message', ({ id, result }) => {
        const p = this.#pending.get(id);
        this.#pending.delete(id);
        p.resolve(result);
      });
      this.#exits.push(new Promise((resolve) => c.once('exit', resolve)));
      this.#kids.push(c);
    }
  }
  run(msg) {
    const id = this.#id++;
    const kid = this.#kids[this.#next++ % this.#kids.length];
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      kid.send({ ...msg, id });
    });
  }
  async close() {
    for (const k of this.#kids) k.send('stop');
    await Promise.all(this.#exits);
  }
}

const cpPool = {
  create: async () => new CpPool(WORKERS),
  close: (p) => p.close(),
  map: mapByMessages,
  apply: (p) => p.run({ op: 'noop' }),
  closure: (p, i) => p.run({ op: 'source', src: freshFunction(i).toString(), arg: [1] }),
};

const METHOD = ['start_ms', 'map_chunk1_tps', 'apply_rtt_us'];
const PY = ['start_ms', 'map_chunk1_tps', 'map_default_tps', 'apply_rtt_us', 'closure_us', 'cpu_serial_s', 'cpu_pool_s', 'cpu_speedup'];
const ALL = [...PY.slice(1), 'cpu_big_serial_s', 'cpu_big_pool_s', 'cpu_big_speedup'];

await benchMain({
  name: 'pool',
  title: 'Pools of 2 workers (bench/pool.mjs)',
  file: import.meta.url,
  full: { n_start: 20, n_map: 200000, n_rtt: 2000, n_closure: 200, cpu_start: 1000000000, cpu_count: 10000, cpu_big_count: 200000 },
  quick: { n_start: 4, n_map: 20000, n_rtt: 200, n_closure: 50, cpu_start: 1000000000, cpu_count: 2000, cpu_big_count: 40000 },
  metrics: [
    { key: 'start_ms', label: 'Pool(2) start-up: constructor to the answer of map(x => x, [0, 1], chunksize 1) (median)', unit: 'ms', better: 'lower', digits: 1 },
    { key: 'map_chunk1_tps', label: 'map(x => x, 0..n), chunksize 1', unit: 'tasks/s', better: 'higher', digits: 0 },
    { key: 'map_default_tps', label: 'map(x => x, 0..n), default chunksize (CPython rule)', unit: 'tasks/s', better: 'higher', digits: 0 },
    { key: 'apply_rtt_us', label: 'apply(noop) round trip (median)', unit: 'µs', better: 'lower', digits: 0 },
    { key: 'closure_us', label: 'first apply() of a function the workers have not seen (median)', unit: 'µs', better: 'lower', digits: 0 },
    { key: 'cpu_serial_s', label: 'factorise 1e9.. serially in the parent', unit: 's', better: 'lower', digits: 2 },
    { key: 'cpu_pool_s', label: 'same with the pool (incl. pool start/stop)', unit: 's', better: 'lower', digits: 2 },
    { key: 'cpu_speedup', label: 'pool speedup vs serial (same process kind)', unit: '×', better: 'higher', digits: 2 },
    { key: 'cpu_big_serial_s', label: 'factorise a bigger range (JS only) serially', unit: 's', better: 'lower', digits: 2 },
    { key: 'cpu_big_pool_s', label: 'same with the pool (incl. pool start/stop)', unit: 's', better: 'lower', digits: 2 },
    { key: 'cpu_big_speedup', label: 'pool speedup vs serial, bigger range', unit: '×', better: 'higher', digits: 2 },
  ],
  variants: [
    { id: 'ours', label: 'multiproc Pool(2) (fork)', side: 'ours', requires: ['Pool'], metrics: ['start_ms', ...ALL], run: (c, r, mp) => poolSuite(c, r, oursPool(mp)) },
    { id: 'cpython', label: 'CPython multiprocessing Pool(2) (fork)', side: 'python', script: 'pool.py', against: 'ours', metrics: PY },
    ...['forkserver', 'spawn'].flatMap((method) => [
      { id: `ours_${method}`, label: `multiproc Pool(2) (${method})`, side: 'ours', requires: ['Pool', 'getContext'], metrics: METHOD, run: (c, r, mp) => methodSuite(c, r, mp, method) },
      { id: `cpython_${method}`, label: `CPython multiprocessing Pool(2) (${method})`, side: 'python', script: 'pool.py', scriptArgs: [method], against: `ours_${method}`, metrics: METHOD },
    ]),
    { id: 'piscina', label: 'piscina (2 worker threads)', side: 'node', metrics: ALL, run: (c, r) => poolSuite(c, r, piscinaPool()) },
    { id: 'cp_pool', label: 'child_process.fork round-robin pool of 2', side: 'node', metrics: ALL, run: (c, r) => poolSuite(c, r, cpPool) },
  ],
  targets: [
    ...['map_chunk1_tps', 'map_default_tps', 'apply_rtt_us'].map((metric) => ({ metric, of: 'ours', vs: 'cpython', atLeast: 1 })),
    ...['forkserver', 'spawn'].flatMap((m) => ['start_ms', 'map_chunk1_tps', 'apply_rtt_us'].map((metric) => ({ metric, of: `ours_${m}`, vs: `cpython_${m}`, atLeast: 1 }))),
    ...['map_chunk1_tps', 'apply_rtt_us', 'cpu_big_speedup'].map((metric) => ({ metric, of: 'ours', vs: 'piscina', atLeast: 1 })),
  ],
  notes: [
    'new function: ours gets a fresh function object; CPython, piscina and the child_process pool get its source text and compile it once per worker (pickle and structured clone cannot carry code)',
    'factorisation: 1,000,000,000 + 0..count by trial division (10,000 numbers; bigger range 200,000); every variant checks the parallel result against its serial one',
  ],
});
