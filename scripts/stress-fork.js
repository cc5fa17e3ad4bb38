'use strict';
// Fork reliability under stress (issue 2): many Process children (fork start method), forked in
// sequence and 4 at a time from a parent that is idle, allocating hard with a ~1 GB heap, or
// keeping fs requests in flight. Each child runs a deterministic workload that does full GCs,
// timers, promises, fs.promises, crypto and zlib on the thread pool and TurboFan-optimised hot
// code, and reports a checksum. Any hang (gdb backtrace saved), crash or wrong checksum fails
// the run. Finally a live Worker must make start() refuse with ERR_MP_FORK_UNSAFE.
//
//   npm run stress:fork                 (1,000 forks)
//   node --single-threaded scripts/stress-fork.js --short   (CI: < 60 s)
//   ... --only=fsops                    (one parent state)
const { execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { promisify } = require('node:util');
const v8 = require('node:v8');
const vm = require('node:vm');
const zlib = require('node:zlib');

const { Process, isForkSafe } = require('../dist/index.js');

const SHORT = process.argv.includes('--short');
// --only=idle|fsops|alloc runs one parent state (to chase a failure)
const ONLY = (process.argv.find((a) => a.startsWith('--only=')) ?? '').slice(7);
const CHILD_TIMEOUT_MS = 60_000;
// forks per parent state, split evenly between sequential and 4-at-a-time
const PLAN = SHORT
  ? [
      { state: 'idle', forks: 24 },
      { state: 'fsops', forks: 16 },
      { state: 'alloc', forks: 12 },
    ]
  : [
      { state: 'idle', forks: 400 },
      { state: 'fsops', forks: 400 },
      { state: 'alloc', forks: 200 },
    ];
const ALLOC_MB = SHORT ? 8 : 24; // child garbage per run
const HEAP_GB = 1;

v8.setFlagsFromString('--expose-gc');
v8.setFlagsFromString('--allow-natives-syntax');
const gc = vm.runInNewContext('gc');
const optimizationStatus = new Function('f', 'return %GetOptimizationStatus(f)');
const TURBOFANNED = 1 << 6;

const pbkdf2 = promisify(crypto.pbkdf2);
const deflate = promisify(zlib.deflate);
const inflate = promisify(zlib.inflate);

// ---- the child's workload (also run once per seed in the parent for reference checksums)
async function work(seed) {
  let h = seed | 0;
  const mix = (x) => {
    h = (Math.imul(h ^ (x | 0), 0x9e3779b1) + 0x7f4a7c15) | 0;
  };
  const keep = [];
  const iters = ALLOC_MB * 15; // ~65 KB each
  for (let i = 0; i < iters; i++) {
    const arr = new Array(1000);
    for (let j = 0; j < 1000; j++) arr[j] = { a: j + seed, b: 'x' + ((j * 7 + i) % 5000) };
    if (i % 25 === 0) keep.push(arr);
    if (keep.length > 40) keep.splice(0, 10);
    mix(arr[i % 1000].a);
    mix(arr[(i * 13) % 1000].b.length);
    if (i % Math.ceil(iters / 5) === 0) gc(); // full GCs interleaved with allocation
  }
  for (let g = 0; g < 5; g++) {
    gc();
    mix(g);
  }
  await new Promise((r) => setTimeout(r, 1));
  await new Promise((r) => setImmediate(r));
  let p = Promise.resolve(seed);
  for (let i = 0; i < 1000; i++) p = p.then((x) => x + 1);
  mix(await p);
  const [file, key, z] = await Promise.all([
    fs.promises.readFile(__filename),
    pbkdf2('pw', 'salt' + seed, 2000, 32, 'sha256'),
    deflate(Buffer.alloc(200_000, seed + 1)),
  ]);
  mix(file.length);
  for (const b of key) mix(b);
  const back = await inflate(z);
  mix(back.length);
  mix(back[12345]);
  const j = JSON.parse(JSON.stringify(keep.slice(0, 5).map((a) => a.slice(0, 200))));
  mix(j[3][150].a);
  // A fresh function (unique source) so TurboFan must compile it in this process.
  const hot = new Function(
    'n',
    `/* ${process.pid} ${Date.now()} */ let s = 0; for (let i = 0; i < n; i++) s = (s + i * i) % 1000003; return s;`,
  );
  let s = 0;
  for (let i = 0; i < 300; i++) s += hot(20_000 + i);
  // Call-count tier-up of a small fresh function (under --single-threaded this is the path that
  // reaches TurboFan; the loop above stays in the lower tiers).
  const small = new Function('x', `/* ${process.pid} ${Date.now()} */ return (x * 31 + 7) % 1009;`);
  for (let i = 0; i < 1e6; i++) s += small(i);
  mix(s);
  return { h, turbofan: ((optimizationStatus(hot) | optimizationStatus(small)) & TURBOFANNED) !== 0 };
}

// ---- parent states
let big = [];
let churning = false;
function buildBigHeap() {
  // Packed double arrays: ~1 GB of heap the GC does not need to trace element by element.
  const per = 8 * 1024 * 1024; // 64 MB each
  for (let mb = 0; mb < HEAP_GB * 1024; mb += 64) big.push(new Array(per).fill(mb + 0.5));
}
function churn(ms) {
  const end = Date.now() + ms;
  const junk = [];
  while (Date.now() < end) {
    for (let k = 0; k < 200; k++) junk.push({ x: k, y: 'w' + (k % 100), z: [k] });
    if (junk.length > 100_000) junk.length = 0;
  }
}
let fsInFlight = 0;
let fsDone = 0;
let stopFs = true;
function startFsOps(n) {
  stopFs = false;
  const one = () => {
    if (stopFs) return;
    fsInFlight++;
    fs.promises
      .stat(__filename)
      .then(() => fs.promises.readFile(__filename))
      .then(() => {
        fsInFlight--;
        fsDone++;
        one();
      });
  };
  for (let i = 0; i < n; i++) one();
}

// ---- one fork
const resultsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-stress-'));
const hangDir = path.join(os.tmpdir(), 'mp-stress-hangs');
let seq = 0;

async function runOne(state, refs, stats) {
  const id = seq++;
  const seed = id % 4;
  const file = path.join(resultsDir, `${id}.json`);
  const p = new Process({
    target: async () => {
      const r = await work(seed);
      fs.writeFileSync(file, JSON.stringify(r));
    },
  });
  let t0;
  if (state === 'alloc') {
    // fork from inside the allocating loop
    churn(Math.random() * 20);
    t0 = process.hrtime.bigint();
    p.start();
  } else {
    t0 = process.hrtime.bigint();
    p.start();
  }
  stats.forkUs.push(Number(process.hrtime.bigint() - t0) / 1000);
  if (state === 'alloc') churn(Math.random() * 20);
  await p.join(CHILD_TIMEOUT_MS);
  const code = p.exitCode;
  if (code === null) {
    stats.hangs++;
    fs.mkdirSync(hangDir, { recursive: true });
    const where = path.join(hangDir, `${state}-${p.pid}.txt`);
    try {
      fs.writeFileSync(
        where,
        execFileSync('gdb', ['-p', String(p.pid), '-batch', '-ex', 'thread apply all bt 30'], {
          encoding: 'utf8',
          timeout: 60_000,
        }),
      );
      stats.fails.push(`hang: pid ${p.pid}, backtrace in ${where}`);
    } catch (e) {
      stats.fails.push(`hang: pid ${p.pid} (gdb failed: ${e.message})`);
    }
    p.kill();
    await p.join(10_000);
  } else if (code !== 0) {
    stats.crashes++;
    stats.fails.push(`child ${p.pid} exit ${code}`);
  } else {
    try {
      const r = JSON.parse(fs.readFileSync(file, 'utf8'));
      if (r.h === refs[seed]) stats.ok++;
      else {
        stats.bad++;
        stats.fails.push(`bad checksum from ${p.pid}: ${r.h} != ${refs[seed]}`);
      }
      if (r.turbofan) stats.turbofan++;
    } catch (e) {
      stats.bad++;
      stats.fails.push(`no result from ${p.pid}: ${e.message}`);
    }
  }
  fs.rmSync(file, { force: true });
  p.close();
}

async function phase(state, forks, concurrency, refs) {
  const stats = { state, concurrency, forks, ok: 0, bad: 0, hangs: 0, crashes: 0, turbofan: 0, forkUs: [], fails: [] };
  const t0 = Date.now();
  const running = new Set();
  for (let i = 0; i < forks; i++) {
    if (stats.hangs + stats.crashes >= 10) {
      stats.fails.push(`stopped after ${i} forks`);
      break;
    }
    while (running.size >= concurrency) await Promise.race(running);
    const job = runOne(state, refs, stats).finally(() => running.delete(job));
    running.add(job);
  }
  await Promise.all(running);
  const sorted = [...stats.forkUs].sort((a, b) => a - b);
  const median = sorted.length ? sorted[sorted.length >> 1] : NaN;
  const summary = {
    state,
    concurrency,
    forks: stats.forkUs.length,
    ok: stats.ok,
    bad: stats.bad,
    hangs: stats.hangs,
    crashes: stats.crashes,
    turbofanned: stats.turbofan,
    wallS: +((Date.now() - t0) / 1000).toFixed(1),
    forkUsMedian: Math.round(median),
    forkUsP95: Math.round(sorted[Math.floor(sorted.length * 0.95)] ?? NaN),
    fails: stats.fails.slice(0, 5),
  };
  console.log(JSON.stringify(summary));
  return summary;
}

async function workerRefusal() {
  const { Worker } = require('node:worker_threads');
  const w = new Worker('setInterval(() => {}, 1000)', { eval: true });
  await new Promise((r) => w.once('online', r));
  let refused = false;
  try {
    new Process({ target: () => {} }).start();
  } catch (e) {
    refused = e.code === 'ERR_MP_FORK_UNSAFE';
  }
  await w.terminate();
  const after = new Process({ target: () => {} });
  after.start();
  await after.join(CHILD_TIMEOUT_MS);
  const ok = refused && after.exitCode === 0;
  console.log(JSON.stringify({ workerAlive: 'fork refused', refused, forkAfterExit: after.exitCode }));
  return ok;
}

async function main() {
  if (!isForkSafe()) {
    console.error('not fork-safe: run with node --single-threaded (or npx multiproc)');
    process.exit(2);
  }
  const t0 = Date.now();
  const refs = [];
  for (let s = 0; s < 4; s++) refs.push((await work(s)).h);
  const all = [];
  for (const { state, forks } of PLAN.filter((p) => ONLY === '' || p.state === ONLY)) {
    if (state === 'fsops') startFsOps(64);
    if (state === 'alloc') {
      buildBigHeap();
      gc();
      churning = true;
    }
    const heapMB = Math.round(process.memoryUsage().heapUsed / 1e6);
    console.log(`# parent ${state}: heap ${heapMB} MB${state === 'fsops' ? `, ${fsInFlight} fs requests in flight` : ''}`);
    all.push(await phase(state, forks / 2, 1, refs));
    all.push(await phase(state, forks / 2, 4, refs));
    if (state === 'fsops') stopFs = true;
    if (state === 'alloc') {
      big = [];
      churning = false;
    }
  }
  const workerOk = await workerRefusal();
  fs.rmSync(resultsDir, { recursive: true, force: true });
  const total = (k) => all.reduce((a, s) => a + s[k], 0);
  const medians = all.map((s) => s.forkUsMedian).sort((a, b) => a - b);
  const result = {
    forks: total('forks'),
    ok: total('ok'),
    hangs: total('hangs'),
    crashes: total('crashes'),
    badChecksums: total('bad'),
    turbofanned: total('turbofanned'),
    wallS: +((Date.now() - t0) / 1000).toFixed(1),
    forkUsMedianOfPhases: medians[medians.length >> 1],
    fsRequestsCompletedInParent: fsDone,
    workerRefusal: workerOk,
  };
  console.log(JSON.stringify(result));
  const pass = result.ok === result.forks && result.hangs === 0 && result.crashes === 0 && workerOk && !churning;
  console.log(pass ? 'PASS' : 'FAIL');
  process.exit(pass ? 0 : 1);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
