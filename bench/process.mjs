// Process start cost: a trivial child, ours (fork) vs CPython multiprocessing.Process (fork),
// child_process.fork and worker_threads. Also fork cost vs the parent's heap size.
//   node bench/process.mjs [--quick] [--rounds N] [--json out.json]
import { fork } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import path from 'node:path';
import { benchMain, median, BENCH_DIR } from './lib/harness.mjs';

const now = () => Number(process.hrtime.bigint()) / 1e6; // ms
const CHILD = path.join(BENCH_DIR, 'lib', 'children.cjs');

function rssMb() {
  return process.memoryUsage().rss / 2 ** 20;
}

/** Grow a live JS heap to about `mb` MB (1 MiB arrays of doubles, kept reachable). */
function growHeap(keep, mb) {
  while (keep.length < mb) keep.push(Array.from({ length: 131072 }, (_, i) => i + 0.5));
}

async function oursStartJoin(mp, n) {
  const tot = [];
  const st = [];
  for (let i = 0; i < n; i++) {
    const p = new mp.Process({ target: () => {} });
    const t0 = now();
    p.start();
    const t1 = now();
    await p.join();
    const t2 = now();
    if (p.exitCode !== 0) throw new Error(`child exit code ${p.exitCode}`);
    p.close();
    st.push(t1 - t0);
    tot.push(t2 - t0);
  }
  return { tot: median(tot), st: median(st) };
}

function cpForkOnce() {
  return new Promise((resolve, reject) => {
    const t0 = now();
    let tMsg = 0;
    const c = fork(CHILD, ['hello']);
    c.once('message', () => (tMsg = now()));
    c.once('error', reject);
    c.once('exit', (code) => (code === 0 && tMsg ? resolve([tMsg - t0, now() - t0]) : reject(new Error(`child exit ${code}`))));
  });
}

function workerOnce() {
  return new Promise((resolve, reject) => {
    const t0 = now();
    let tMsg = 0;
    const w = new Worker("require('node:worker_threads').parentPort.postMessage(1)", { eval: true });
    w.once('message', () => (tMsg = now()));
    w.once('error', reject);
    w.once('exit', (code) => (code === 0 && tMsg ? resolve([tMsg - t0, now() - t0]) : reject(new Error(`worker exit ${code}`))));
  });
}

async function altSeries(once, n, rec) {
  for (let i = 0; i < 2; i++) await once(); // warm-up
  await rec.step('', async () => {
    const ready = [];
    const exit = [];
    for (let i = 0; i < n; i++) {
      const [a, b] = await once();
      ready.push(a);
      exit.push(b);
    }
    return { start_ready_ms: median(ready), start_exit_ms: median(exit) };
  });
}

await benchMain({
  name: 'process',
  title: 'Process start: trivial child (bench/process.mjs)',
  file: import.meta.url,
  full: { n_proc: 200, n_slow: 30, n_heap: 40, heap_mb: [50, 500] },
  quick: { n_proc: 20, n_slow: 5, n_heap: 5, heap_mb: [50, 500] },
  metrics: [
    { key: 'start_ready_ms', label: 'start until the child has run (ours, CPython: start+join; child_process, Worker: first message)', unit: 'ms', better: 'lower', digits: 2 },
    { key: 'start_exit_ms', label: 'start until the child exited and was reaped', unit: 'ms', better: 'lower', digits: 2 },
    { key: 'start_call_ms', label: 'of which the start() call', unit: 'ms', better: 'lower', digits: 2 },
    { key: 'heap50_ms', label: 'start+join with a 50 MB parent heap', unit: 'ms', better: 'lower', digits: 2 },
    { key: 'heap500_ms', label: 'start+join with a 500 MB parent heap', unit: 'ms', better: 'lower', digits: 2 },
  ],
  variants: [
    {
      id: 'ours',
      label: 'multiproc Process (fork)',
      side: 'ours',
      requires: ['Process'],
      metrics: ['start_ready_ms', 'start_exit_ms', 'start_call_ms', 'heap50_ms', 'heap500_ms'],
      async run(cfg, rec, mp) {
        await oursStartJoin(mp, 3); // warm-up
        await rec.step('', async () => {
          const r = await oursStartJoin(mp, cfg.n_proc);
          return { start_ready_ms: r.tot, start_exit_ms: r.tot, start_call_ms: r.st };
        });
        const keep = [];
        for (const mb of cfg.heap_mb) {
          growHeap(keep, mb);
          rec.note(`heap ${mb} MB: parent RSS ${rssMb().toFixed(0)} MB`);
          await rec.step(`heap${mb}_ms`, async () => (await oursStartJoin(mp, cfg.n_heap)).tot);
        }
      },
    },
    {
      id: 'cpython',
      label: 'CPython multiprocessing.Process (fork)',
      side: 'python',
      script: 'process.py',
      metrics: ['start_ready_ms', 'start_exit_ms', 'start_call_ms', 'heap50_ms', 'heap500_ms'],
    },
    {
      id: 'cp_fork',
      label: 'child_process.fork',
      side: 'node',
      metrics: ['start_ready_ms', 'start_exit_ms'],
      run: (cfg, rec) => altSeries(cpForkOnce, cfg.n_slow, rec),
    },
    {
      id: 'worker',
      label: 'new Worker (worker_threads)',
      side: 'node',
      metrics: ['start_ready_ms', 'start_exit_ms'],
      run: (cfg, rec) => altSeries(workerOnce, cfg.n_slow, rec),
    },
  ],
});
