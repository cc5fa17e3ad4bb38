'use strict';
// A shared counter: four processes increment one Value under its lock.
const { Process, Value } = require('multiproc');

const counter = Value('i', 0);
const N = 10_000;

function work() {
  for (let i = 0; i < N; i++) {
    const lock = counter.getLock();
    lock.acquireSync();
    try {
      counter.value += 1;
    } finally {
      lock.release();
    }
  }
}

async function main() {
  const procs = Array.from({ length: 4 }, () => new Process({ target: work }));
  for (const p of procs) p.start();
  for (const p of procs) await p.join();
  console.log(`counter = ${counter.value} (expected ${4 * N})`);
  if (counter.value !== 4 * N) process.exit(1);
}

main().catch((e) => { console.error(e); process.exit(1); });
