'use strict';
// Producer / consumer over a Queue: two producers, one consumer, a sentinel per producer.
const { Process, Queue } = require('multiproc');

const q = new Queue(16);
const PER_PRODUCER = 1000;

async function produce(id) {
  for (let i = 0; i < PER_PRODUCER; i++) await q.put({ producer: id, i });
  await q.put(null);
}

async function consume() {
  let done = 0;
  let sum = 0;
  const last = new Map();
  while (done < 2) {
    const item = await q.get();
    if (item === null) { done++; continue; }
    if ((last.get(item.producer) ?? -1) !== item.i - 1) throw new Error('out of order');
    last.set(item.producer, item.i);
    sum += item.i;
  }
  console.log(`consumer ${process.pid} got ${2 * PER_PRODUCER} items in order per producer, sum ${sum}`);
}

async function main() {
  const procs = [
    new Process({ target: produce, args: [1] }),
    new Process({ target: produce, args: [2] }),
    new Process({ target: consume }),
  ];
  for (const p of procs) p.start();
  for (const p of procs) await p.join();
  q.close();
  if (procs.some((p) => p.exitCode !== 0)) throw new Error('a process failed');
}

main().catch((e) => { console.error(e); process.exit(1); });
