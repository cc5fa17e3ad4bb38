'use strict';
// The main job: CPU-bound work spread over every core by forked processes.
//
// Factorises every integer in [1e9, 1e9 + COUNT) by trial division: serially, then split across
// cpuCount() forked children (one Process each), then with a Pool mapping a closure over slices. Each child runs a closure (it captures `lo`, `hi`
// and the `factorise` function straight from this process: no module re-import, no
// serialisation of code) and sends its result back through a pipe.
//
// Run it with `npm run demo` (which uses `npx multiproc`, i.e. node --single-threaded).
const fs = require('node:fs');
const { Pool, Process, cpuCount } = require('multiproc');
const posix = require('multiproc/posix');

const START = 1_000_000_000;
const COUNT = Number(process.env.DEMO_COUNT ?? 300_000);

function factorise(n) {
  const f = [];
  while (n % 2 === 0) {
    f.push(2);
    n /= 2;
  }
  for (let d = 3; d * d <= n; d += 2) {
    while (n % d === 0) {
      f.push(d);
      n /= d;
    }
  }
  if (n > 1) f.push(n);
  return f;
}

// Sums the number of prime factors and a checksum of them, so both runs can be compared.
function work(lo, hi) {
  let factors = 0;
  let checksum = 0;
  for (let n = lo; n < hi; n++) {
    const f = factorise(n);
    factors += f.length;
    for (const p of f) checksum = (checksum + p) % 1_000_000_007;
  }
  return { factors, checksum };
}

function cpuMs(u) {
  return (u.user + u.system) / 1000;
}

function readAll(fd) {
  const chunks = [];
  const buf = Buffer.alloc(4096);
  let n;
  while ((n = fs.readSync(fd, buf)) > 0) chunks.push(Buffer.from(buf.subarray(0, n)));
  return Buffer.concat(chunks).toString();
}

async function main() {
  const workers = cpuCount();
  console.log(`multiproc demo: factorising ${COUNT.toLocaleString()} integers from ${START.toLocaleString()}`);
  console.log(`machine: ${workers} cores, node ${process.version}\n`);

  let t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const serial = work(START, START + COUNT);
  const serialMs = performance.now() - t0;
  const serialCpuMs = cpuMs(process.cpuUsage(cpu0));
  console.log(`serial      ${serialMs.toFixed(0).padStart(6)} ms   ${serial.factors} prime factors`);

  t0 = performance.now();
  const step = Math.ceil(COUNT / workers);
  const jobs = [];
  for (let i = 0; i < workers; i++) {
    const lo = START + i * step;
    const hi = Math.min(START + COUNT, lo + step);
    const [r, w] = posix.pipe();
    // The target is a closure: it uses lo, hi, w and work() from this process's memory.
    const p = new Process({
      name: `factoriser-${i}`,
      target: () => {
        // A forked child's CPU clock starts at zero: this is the child's own time.
        const result = work(lo, hi);
        fs.writeSync(w, JSON.stringify({ ...result, cpuMs: cpuMs(process.cpuUsage()) }));
      },
    });
    p.start();
    posix.close(w);
    jobs.push({ p, r });
  }
  const parts = [];
  for (const { p, r } of jobs) {
    parts.push(JSON.parse(readAll(r)));
    posix.close(r);
    await p.join();
    if (p.exitCode !== 0) throw new Error(`${p.name} exited with ${p.exitCode}`);
  }
  const parallelMs = performance.now() - t0;
  const factors = parts.reduce((s, x) => s + x.factors, 0);
  const checksum = parts.reduce((s, x) => (s + x.checksum) % 1_000_000_007, 0);
  console.log(`${String(workers).padStart(2)} processes ${parallelMs.toFixed(0).padStart(6)} ms   ${factors} prime factors`);

  if (factors !== serial.factors || checksum !== serial.checksum) {
    console.error('MISMATCH between the serial and the parallel result');
    process.exit(1);
  }

  // The same job on a Pool: map a closure (it captures `work`) over 64 slices of the range, so a
  // slow slice does not leave a core idle. Pool start and stop are included in the time.
  t0 = performance.now();
  const slices = [];
  const sliceLen = Math.ceil(COUNT / 64);
  for (let lo = START; lo < START + COUNT; lo += sliceLen) slices.push([lo, Math.min(START + COUNT, lo + sliceLen)]);
  const pool = new Pool(workers);
  const pooled = await pool.map(([lo, hi]) => work(lo, hi), slices);
  pool.close();
  await pool.join();
  const poolMs = performance.now() - t0;
  const poolFactors = pooled.reduce((s, x) => s + x.factors, 0);
  const poolChecksum = pooled.reduce((s, x) => (s + x.checksum) % 1_000_000_007, 0);
  console.log(`Pool(${workers})     ${poolMs.toFixed(0).padStart(6)} ms   ${poolFactors} prime factors`);
  if (poolFactors !== serial.factors || poolChecksum !== serial.checksum) {
    console.error('MISMATCH between the serial and the Pool result');
    process.exit(1);
  }

  console.log(`\nspeedup ${(serialMs / parallelMs).toFixed(2)}x with ${workers} processes, ${(serialMs / poolMs).toFixed(2)}x with Pool(${workers}), on ${workers} cores (results identical)`);
  // Wall-clock speedup needs idle cores; CPU time shows whether each child computed at full speed
  // (a shared or busy machine lowers the first, not the second).
  const childCpu = parts.reduce((s, x) => s + x.cpuMs, 0);
  console.log(`CPU time: serial ${serialCpuMs.toFixed(0)} ms, children ${parts.map((x) => x.cpuMs.toFixed(0)).join(' + ')} = ${childCpu.toFixed(0)} ms`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
