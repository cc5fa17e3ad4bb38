// Synchronization: Lock, Value under its lock and atomic add from 2 processes, cross-process
// wake latency (Event set -> waiter resumes), SharedMemory create/attach. Ours vs CPython
// multiprocessing (fork) and, where Node has an equivalent, worker_threads / child_process.
//   node bench/sync.mjs [--quick] [--rounds N] [--json out.json]
import { fork } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import path from 'node:path';
import { benchMain, median, sleepSync, requireMethod, BENCH_DIR } from './lib/harness.mjs';

const nowNs = () => Number(process.hrtime.bigint()); // CLOCK_MONOTONIC, same clock in every process
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const CHILD = path.join(BENCH_DIR, 'lib', 'children.cjs');

// --- ours ------------------------------------------------------------------------------------

async function oursLock(cfg, rec, mp) {
  const lk = new mp.Lock();
  for (let i = 0; i < 10000; i++) {
    lk.acquireSync();
    lk.release();
  }
  await rec.step('lock_ns', () => {
    const n = cfg.n_lock;
    const t0 = nowNs();
    for (let i = 0; i < n; i++) {
      lk.acquireSync();
      lk.release();
    }
    return (nowNs() - t0) / n;
  });
  await rec.step('lock_async_ns', async () => {
    const n = Math.ceil(cfg.n_lock / 10);
    const t0 = nowNs();
    for (let i = 0; i < n; i++) {
      await lk.acquire();
      lk.release();
    }
    return (nowNs() - t0) / n;
  });
  lk.close?.();
}

/** Two children run `body(n)` after a common start signal; returns wall seconds to both joined. */
async function twoProcs(mp, n, body) {
  const go = new mp.Event();
  const readies = [new mp.Event(), new mp.Event()];
  const ps = readies.map(
    (ready) =>
      new mp.Process({
        target: () => {
          ready.set();
          go.waitSync();
          body(n);
        },
      }),
  );
  for (const p of ps) p.start();
  for (const r of readies) await r.wait();
  const t0 = nowNs();
  go.set();
  for (const p of ps) await p.join();
  const wall = (nowNs() - t0) / 1e9;
  for (const p of ps) if (p.exitCode !== 0) throw new Error(`child exit code ${p.exitCode}`);
  return wall;
}

async function oursValue(cfg, rec, mp) {
  const n = cfg.n_value;
  await rec.step(['value_2proc_ops', 'value_1proc_ops'], async () => {
    const v = mp.Value('i', 0);
    const lock = v.getLock();
    const wall = await twoProcs(mp, n, (k) => {
      for (let i = 0; i < k; i++) {
        lock.acquireSync();
        v.value += 1;
        lock.release();
      }
    });
    if (v.value !== 2 * n) throw new Error(`lost updates: ${v.value} != ${2 * n}`);
    const v1 = mp.Value('i', 0);
    const lk1 = v1.getLock();
    const t0 = nowNs();
    for (let i = 0; i < n; i++) {
      lk1.acquireSync();
      v1.value += 1;
      lk1.release();
    }
    const single = (nowNs() - t0) / 1e9;
    return { value_2proc_ops: (2 * n) / wall, value_1proc_ops: n / single };
  });
}

async function oursAtomic(cfg, rec, mp) {
  const n = cfg.n_atomic;
  const a = mp.Value('i', 0);
  requireMethod(a, 'add', 'Value');
  await rec.step('atomic_2proc_ops', async () => {
    const wall = await twoProcs(mp, n, (k) => {
      for (let i = 0; i < k; i++) a.add(1);
    });
    if (a.value !== 2 * n) throw new Error(`lost updates: ${a.value} != ${2 * n}`);
    return (2 * n) / wall;
  });
}

/** Event wake latency: the child blocks in wait(); the parent stamps the time and set()s. */
async function oursWake(cfg, rec, mp, form) {
  const n = cfg.n_wake;
  const go = new mp.Event();
  const ack = new mp.Event();
  const arr = mp.RawArray('d', n + 1); // [t0, latency...] in shared memory
  const key = form === 'sync' ? 'wake_sync_us' : 'wake_async_us';
  await rec.step(key, async () => {
    const p = new mp.Process({
      target:
        form === 'sync'
          ? () => {
              for (let i = 0; i < n; i++) {
                go.waitSync();
                const t1 = nowNs();
                go.clear();
                arr[i + 1] = t1 - arr[0];
                ack.set();
              }
            }
          : async () => {
              for (let i = 0; i < n; i++) {
                await go.wait();
                const t1 = nowNs();
                go.clear();
                arr[i + 1] = t1 - arr[0];
                ack.set();
              }
            },
    });
    p.start();
    for (let i = 0; i < n; i++) {
      // the gap lets the child get back into wait(), so each set() really wakes a sleeper
      if (form === 'sync') sleepSync(cfg.wake_gap_ms);
      else await sleep(cfg.wake_gap_ms);
      arr[0] = nowNs();
      go.set();
      if (form === 'sync') ack.waitSync();
      else await ack.wait();
      ack.clear();
    }
    await p.join();
    if (p.exitCode !== 0) throw new Error(`child exit code ${p.exitCode}`);
    return median(Array.from(arr.subarray(1))) / 1e3;
  });
}

async function oursShm(cfg, rec, mp) {
  await rec.step(['shm_create_us', 'shm_attach_us', 'shm_close_unlink_us'], () => {
    const cr = [];
    const at = [];
    const cu = [];
    for (let i = 0; i < cfg.n_shm; i++) {
      const t0 = nowNs();
      const s = new mp.SharedMemory({ create: true, size: 4096 });
      const t1 = nowNs();
      const a = new mp.SharedMemory({ name: s.name });
      const t2 = nowNs();
      a.buf[0] = 1;
      if (s.buf[0] !== 1) throw new Error('attached segment does not share memory');
      const t3 = nowNs();
      a.close();
      s.close();
      s.unlink();
      const t4 = nowNs();
      cr.push((t1 - t0) / 1e3);
      at.push((t2 - t1) / 1e3);
      cu.push((t4 - t3) / 1e3);
    }
    return { shm_create_us: median(cr), shm_attach_us: median(at), shm_close_unlink_us: median(cu) };
  });
}

// --- worker_threads (in-process threads, the Node way to share memory) -------------------------

function runWorker(code, workerData) {
  const w = new Worker(code, { eval: true, workerData });
  const exited = new Promise((resolve, reject) => {
    w.once('error', reject);
    w.once('exit', (c) => (c === 0 ? resolve() : reject(new Error(`worker exit ${c}`))));
  });
  const firstMessage = new Promise((resolve) => w.once('message', resolve));
  return { w, exited, firstMessage };
}

async function workerAtomic(cfg, rec) {
  const n = cfg.n_atomic;
  await rec.step('atomic_2proc_ops', async () => {
    const sab = new SharedArrayBuffer(8);
    const i32 = new Int32Array(sab); // [counter, go]
    const code = `const { workerData, parentPort } = require('node:worker_threads');
      const a = new Int32Array(workerData.sab);
      parentPort.postMessage('ready');
      Atomics.wait(a, 1, 0);
      for (let i = 0; i < workerData.n; i++) Atomics.add(a, 0, 1);`;
    const ws = [runWorker(code, { sab, n }), runWorker(code, { sab, n })];
    await Promise.all(ws.map((x) => x.firstMessage));
    const t0 = nowNs();
    Atomics.store(i32, 1, 1);
    Atomics.notify(i32, 1);
    await Promise.all(ws.map((x) => x.exited));
    const wall = (nowNs() - t0) / 1e9;
    if (i32[0] !== 2 * n) throw new Error(`lost updates: ${i32[0]}`);
    return (2 * n) / wall;
  });
}

async function workerWake(cfg, rec, form) {
  const n = cfg.n_wake;
  const key = form === 'sync' ? 'wake_sync_us' : 'wake_async_us';
  await rec.step(key, async () => {
    const ctl = new Int32Array(new SharedArrayBuffer(8)); // [go, ack]
    const arr = new Float64Array(new SharedArrayBuffer(8 * (n + 1)));
    const wait = form === 'sync' ? 'Atomics.wait(ctl, 0, 0)' : 'await Atomics.waitAsync(ctl, 0, 0).value';
    const code = `const { workerData } = require('node:worker_threads');
      const { ctl, arr, n } = workerData;
      // a pending Atomics.waitAsync does not keep a thread's event loop alive: hold it open
      const keepAlive = setInterval(() => {}, 1 << 30);
      (async () => {
        for (let i = 0; i < n; i++) {
          ${wait};
          const t1 = Number(process.hrtime.bigint());
          Atomics.store(ctl, 0, 0);
          arr[i + 1] = t1 - arr[0];
          Atomics.store(ctl, 1, 1);
          Atomics.notify(ctl, 1);
        }
        clearInterval(keepAlive);
      })();`;
    const { exited } = runWorker(code, { ctl, arr, n });
    for (let i = 0; i < n; i++) {
      sleepSync(cfg.wake_gap_ms);
      arr[0] = nowNs();
      Atomics.store(ctl, 0, 1);
      Atomics.notify(ctl, 0);
      Atomics.wait(ctl, 1, 0);
      Atomics.store(ctl, 1, 0);
    }
    await exited;
    return median(Array.from(arr.subarray(1))) / 1e3;
  });
}

// --- child_process: waking another Node process means sending it a message -----------------------

async function cpWake(cfg, rec) {
  const n = cfg.n_wake;
  await rec.step('wake_async_us', async () => {
    const c = fork(CHILD, ['wake']);
    const exited = new Promise((resolve) => c.once('exit', resolve));
    const lat = [];
    for (let i = 0; i < n; i++) {
      await sleep(cfg.wake_gap_ms);
      const reply = new Promise((resolve) => c.once('message', resolve));
      c.send(nowNs());
      lat.push(await reply);
    }
    c.send('stop');
    await exited;
    return median(lat) / 1e3;
  });
}

await benchMain({
  name: 'sync',
  title: 'Synchronization (bench/sync.mjs)',
  file: import.meta.url,
  full: { n_lock: 1000000, n_value: 100000, n_atomic: 1000000, n_wake: 500, wake_gap_ms: 1, n_shm: 500 },
  quick: { n_lock: 100000, n_value: 20000, n_atomic: 200000, n_wake: 100, wake_gap_ms: 1, n_shm: 50 },
  metrics: [
    { key: 'lock_ns', label: 'Lock acquire+release, uncontended (ours: acquireSync)', unit: 'ns/op', better: 'lower', digits: 0 },
    { key: 'lock_async_ns', label: 'Lock `await acquire()` + release, uncontended', unit: 'ns/op', better: 'lower', digits: 0 },
    { key: 'value_2proc_ops', label: "Value('i') += 1 under its lock, 2 processes (total)", unit: 'ops/s', better: 'higher', digits: 0 },
    { key: 'value_1proc_ops', label: "Value('i') += 1 under its lock, 1 process", unit: 'ops/s', better: 'higher', digits: 0 },
    { key: 'atomic_2proc_ops', label: 'atomic add from 2 processes (worker_threads: 2 threads, Atomics.add)', unit: 'ops/s', better: 'higher', digits: 0 },
    { key: 'wake_sync_us', label: 'wake latency, blocking waiter: set() -> waiter resumes', unit: 'µs', better: 'lower', digits: 1 },
    { key: 'wake_async_us', label: 'wake latency, async waiter: set() -> awaiting waiter resumes', unit: 'µs', better: 'lower', digits: 1 },
    { key: 'shm_create_us', label: 'SharedMemory create (4096 B)', unit: 'µs', better: 'lower', digits: 1 },
    { key: 'shm_attach_us', label: 'SharedMemory attach by name', unit: 'µs', better: 'lower', digits: 1 },
    { key: 'shm_close_unlink_us', label: 'SharedMemory close both + unlink', unit: 'µs', better: 'lower', digits: 1 },
  ],
  variants: [
    { id: 'ours_lock', label: 'multiproc Lock', side: 'ours', requires: ['Lock'], metrics: ['lock_ns', 'lock_async_ns'], run: oursLock },
    { id: 'ours_value', label: 'multiproc Value + getLock()', side: 'ours', requires: ['Process', 'Value', 'Event'], metrics: ['value_2proc_ops', 'value_1proc_ops'], run: oursValue },
    { id: 'ours_atomic', label: 'multiproc Value.add()', side: 'ours', requires: ['Process', 'Value', 'Event'], metrics: ['atomic_2proc_ops'], run: oursAtomic },
    { id: 'ours_wake_sync', label: 'multiproc Event.waitSync()', side: 'ours', requires: ['Process', 'Event', 'RawArray'], metrics: ['wake_sync_us'], run: (c, r, mp) => oursWake(c, r, mp, 'sync') },
    { id: 'ours_wake_async', label: 'multiproc await Event.wait()', side: 'ours', requires: ['Process', 'Event', 'RawArray'], metrics: ['wake_async_us'], run: (c, r, mp) => oursWake(c, r, mp, 'async') },
    { id: 'ours_shm', label: 'multiproc SharedMemory', side: 'ours', requires: ['SharedMemory'], metrics: ['shm_create_us', 'shm_attach_us', 'shm_close_unlink_us'], run: oursShm },
    {
      id: 'cpython',
      label: 'CPython multiprocessing (fork)',
      side: 'python',
      script: 'sync.py',
      metrics: ['lock_ns', 'value_2proc_ops', 'value_1proc_ops', 'wake_sync_us', 'shm_create_us', 'shm_attach_us', 'shm_close_unlink_us'],
    },
    { id: 'worker_atomics', label: 'worker_threads + Atomics (threads, not processes)', side: 'node', metrics: ['atomic_2proc_ops', 'wake_sync_us'], run: async (c, r) => (await workerAtomic(c, r), await workerWake(c, r, 'sync')) },
    { id: 'worker_waitasync', label: 'worker_threads + Atomics.waitAsync (threads)', side: 'node', metrics: ['wake_async_us'], run: (c, r) => workerWake(c, r, 'async') },
    { id: 'cp_ipc', label: 'child_process IPC message (process.send)', side: 'node', metrics: ['wake_async_us'], run: cpWake },
  ],
  targets: ['lock_ns', 'value_2proc_ops', 'wake_sync_us', 'shm_create_us', 'shm_attach_us'].map((metric) => ({ metric, vs: 'cpython', atLeast: 1 })),
  notes: ['wake latency: one-way, timestamps from CLOCK_MONOTONIC in both processes; a 1 ms gap before each set() lets the waiter block again'],
});
