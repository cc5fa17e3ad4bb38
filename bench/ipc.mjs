// IPC: Queue throughput child -> parent (small items, 1 MiB items) and Pipe round trip, ours
// (async and Sync forms) vs CPython multiprocessing (fork) and Node's child_process IPC.
//   node bench/ipc.mjs [--quick] [--rounds N] [--json out.json]
import { fork } from 'node:child_process';
import path from 'node:path';
import { benchMain, median, BENCH_DIR } from './lib/harness.mjs';

const nowNs = () => Number(process.hrtime.bigint());
const CHILD = path.join(BENCH_DIR, 'lib', 'children.cjs');
const MiB = 2 ** 20;

// --- ours ------------------------------------------------------------------------------------

/** One producer child puts 'ready', n items and null; the parent drains. Returns seconds. */
async function oursQueueRun(mp, n, size, form) {
  const q = new mp.Queue();
  const p = new mp.Process({
    target:
      form === 'sync'
        ? () => {
            q.putSync('ready');
            if (size) {
              const payload = Buffer.alloc(size, 120);
              for (let i = 0; i < n; i++) q.putSync(payload);
            } else for (let i = 0; i < n; i++) q.putSync(i);
            q.putSync(null);
          }
        : async () => {
            await q.put('ready');
            if (size) {
              const payload = Buffer.alloc(size, 120);
              for (let i = 0; i < n; i++) await q.put(payload);
            } else for (let i = 0; i < n; i++) await q.put(i);
            await q.put(null);
          },
  });
  p.start();
  const first = form === 'sync' ? q.getSync() : await q.get();
  if (first !== 'ready') throw new Error(`unexpected first item ${first}`);
  let cnt = 0;
  let bytes = 0;
  const t0 = nowNs();
  if (form === 'sync') {
    for (let x; (x = q.getSync()) !== null; cnt++) bytes += size ? x.length : 0;
  } else {
    for (let x; (x = await q.get()) !== null; cnt++) bytes += size ? x.length : 0;
  }
  const dt = (nowNs() - t0) / 1e9;
  await p.join();
  q.close();
  if (cnt !== n || bytes !== n * size || p.exitCode !== 0) throw new Error(`queue lost items: ${cnt}/${n}, exit ${p.exitCode}`);
  return dt;
}

async function oursQueue(cfg, rec, mp, form) {
  await oursQueueRun(mp, 1000, 0, form); // warm-up
  await rec.step('q_small_items_s', async () => cfg.n_small / (await oursQueueRun(mp, cfg.n_small, 0, form)));
  await rec.step('q_big_mib_s', async () => (cfg.n_big * cfg.big_size) / MiB / (await oursQueueRun(mp, cfg.n_big, cfg.big_size, form)));
}

async function oursPipe(cfg, rec, mp, form) {
  const [a, b] = mp.Pipe();
  const p = new mp.Process({
    target:
      form === 'sync'
        ? () => {
            for (let x; (x = b.recvSync()) !== null; ) b.send(x);
            b.close();
          }
        : async () => {
            for (let x; (x = await b.recv()) !== null; ) b.send(x);
            b.close();
          },
  });
  p.start();
  b.close();
  const rt = form === 'sync' ? (i) => (a.send(i), a.recvSync()) : async (i) => (a.send(i), await a.recv());
  for (let i = 0; i < 500; i++) await rt(i);
  await rec.step('pipe_rtt_us', async () => {
    const lat = [];
    for (let i = 0; i < cfg.n_pipe; i++) {
      const t0 = nowNs();
      const r = await rt(i);
      lat.push((nowNs() - t0) / 1e3);
      if (r !== i) throw new Error(`echo mismatch ${r} != ${i}`);
    }
    return median(lat);
  });
  a.send(null);
  await p.join();
  a.close();
  if (p.exitCode !== 0) throw new Error(`child exit code ${p.exitCode}`);
}

// --- child_process IPC -----------------------------------------------------------------------

async function cpQueueRun(n, size, serialization) {
  const c = fork(CHILD, ['produce'], { serialization });
  const exited = new Promise((resolve) => c.once('exit', resolve));
  await new Promise((resolve) => c.once('message', resolve)); // 'ready'
  let cnt = 0;
  let bytes = 0;
  const t0 = nowNs();
  await new Promise((resolve) => {
    c.on('message', (m) => {
      if (m === null) return resolve();
      cnt++;
      if (size) bytes += m.length;
    });
    c.send({ n, size });
  });
  const dt = (nowNs() - t0) / 1e9;
  const code = await exited;
  if (cnt !== n || bytes !== n * size || code !== 0) throw new Error(`lost items: ${cnt}/${n}, exit ${code}`);
  return dt;
}

async function cpRtt(n, serialization) {
  const c = fork(CHILD, ['echo'], { serialization });
  const exited = new Promise((resolve) => c.once('exit', resolve));
  const rt = (i) =>
    new Promise((resolve) => {
      c.once('message', resolve);
      c.send(i);
    });
  for (let i = 0; i < 500; i++) await rt(i);
  const lat = [];
  for (let i = 0; i < n; i++) {
    const t0 = nowNs();
    const r = await rt(i);
    lat.push((nowNs() - t0) / 1e3);
    if (r !== i) throw new Error(`echo mismatch ${r} != ${i}`);
  }
  c.send('stop');
  await exited;
  return median(lat);
}

function cpVariant(serialization, withBig) {
  return async (cfg, rec) => {
    await cpQueueRun(1000, 0, serialization); // warm-up
    await rec.step('q_small_items_s', async () => cfg.n_small / (await cpQueueRun(cfg.n_small, 0, serialization)));
    if (withBig) await rec.step('q_big_mib_s', async () => (cfg.n_big * cfg.big_size) / MiB / (await cpQueueRun(cfg.n_big, cfg.big_size, serialization)));
    await rec.step('pipe_rtt_us', () => cpRtt(cfg.n_pipe, serialization));
  };
}

await benchMain({
  name: 'ipc',
  title: 'IPC: queues and pipes between two processes (bench/ipc.mjs)',
  file: import.meta.url,
  full: { n_small: 200000, n_big: 200, big_size: MiB, n_pipe: 10000 },
  quick: { n_small: 20000, n_big: 20, big_size: MiB, n_pipe: 1000 },
  metrics: [
    { key: 'q_small_items_s', label: 'Queue child->parent, small ints', unit: 'items/s', better: 'higher', digits: 0 },
    { key: 'q_big_mib_s', label: 'Queue child->parent, 1 MiB Buffers', unit: 'MiB/s', better: 'higher', digits: 0 },
    { key: 'pipe_rtt_us', label: 'Pipe send + recv round trip, small int (median)', unit: 'µs', better: 'lower', digits: 1 },
  ],
  variants: [
    { id: 'ours_queue_async', tag: 'async', label: 'multiproc Queue, await put()/get()', side: 'ours', requires: ['Process', 'Queue'], metrics: ['q_small_items_s', 'q_big_mib_s'], run: (c, r, mp) => oursQueue(c, r, mp, 'async') },
    { id: 'ours_queue_sync', tag: 'Sync', label: 'multiproc Queue, putSync()/getSync()', side: 'ours', requires: ['Process', 'Queue'], metrics: ['q_small_items_s', 'q_big_mib_s'], run: (c, r, mp) => oursQueue(c, r, mp, 'sync') },
    { id: 'ours_pipe_async', tag: 'async', label: 'multiproc Pipe, send + await recv()', side: 'ours', requires: ['Process', 'Pipe'], metrics: ['pipe_rtt_us'], run: (c, r, mp) => oursPipe(c, r, mp, 'async') },
    { id: 'ours_pipe_sync', tag: 'Sync', label: 'multiproc Pipe, send + recvSync()', side: 'ours', requires: ['Process', 'Pipe'], metrics: ['pipe_rtt_us'], run: (c, r, mp) => oursPipe(c, r, mp, 'sync') },
    { id: 'cpython', label: 'CPython multiprocessing Queue / Pipe (fork)', side: 'python', script: 'ipc.py', metrics: ['q_small_items_s', 'q_big_mib_s', 'pipe_rtt_us'] },
    { id: 'cp_json', label: "child_process.fork IPC, serialization 'json' (default)", side: 'node', metrics: ['q_small_items_s', 'pipe_rtt_us'], run: cpVariant('json', false) },
    { id: 'cp_advanced', label: "child_process.fork IPC, serialization 'advanced'", side: 'node', metrics: ['q_small_items_s', 'q_big_mib_s', 'pipe_rtt_us'], run: cpVariant('advanced', true) },
  ],
  targets: ['q_small_items_s', 'q_big_mib_s', 'pipe_rtt_us'].map((metric) => ({ metric, vs: 'cpython', atLeast: 1 })),
  notes: ["child_process 'json' IPC is left out of the 1 MiB row: it turns a Buffer into a JSON array of numbers"],
});
