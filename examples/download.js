'use strict';
// Simulated downloads: serial vs one Process per file (the classic first multiprocessing demo).
// Each "download" sleeps, as a network wait would; forked processes overlap the waits.
const { Process } = require('multiproc');

const FILES = ['a.csv', 'b.csv', 'c.csv', 'd.csv'];
const DELAY_MS = Number(process.env.DOWNLOAD_MS ?? 300);

function download(name) {
  return new Promise((resolve) => setTimeout(() => {
    console.log(`  downloaded ${name} in pid ${process.pid}`);
    resolve();
  }, DELAY_MS));
}

async function main() {
  let t0 = performance.now();
  for (const f of FILES) await download(f);
  const serial = performance.now() - t0;
  console.log(`serial: ${serial.toFixed(0)} ms`);

  t0 = performance.now();
  const procs = FILES.map((f) => new Process({ target: download, args: [f] }));
  for (const p of procs) p.start();
  for (const p of procs) await p.join();
  const parallel = performance.now() - t0;
  console.log(`${procs.length} processes: ${parallel.toFixed(0)} ms`);
  if (procs.some((p) => p.exitCode !== 0)) throw new Error('a download failed');
}

main().catch((e) => { console.error(e); process.exit(1); });
