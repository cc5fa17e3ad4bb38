'use strict';
// Child programs for the Node alternatives (child_process.fork), selected by argv[2].
const mode = process.argv[2];

if (mode === 'hello') {
  // Process start: first message, then exit once the message is flushed.
  process.send('hi', () => process.disconnect());
} else if (mode === 'echo') {
  // Pipe round trip: echo every message until 'stop'.
  process.on('message', (m) => {
    if (m === 'stop') process.disconnect();
    else process.send(m);
  });
} else if (mode === 'wake') {
  // Wake latency: the message carries the sender's CLOCK_MONOTONIC stamp (ns); reply with the
  // one-way latency.
  process.on('message', (t0) => {
    if (t0 === 'stop') return process.disconnect();
    process.send(Number(process.hrtime.bigint()) - t0);
  });
} else if (mode === 'produce') {
  // Queue throughput: wait for {n, size}, then send n items (ints, or Buffers of `size` bytes)
  // and a final null; exit when everything is flushed.
  process.once('message', ({ n, size }) => {
    const payload = size ? Buffer.alloc(size, 120) : null;
    for (let i = 0; i < n; i++) process.send(payload ?? i);
    process.send(null, () => process.disconnect());
  });
  process.send('ready');
} else if (mode === 'speed') {
  // Child speed: run the suite once with the parameters given, send the timings.
  const { speedSuite } = require('./workloads.cjs');
  process.once('message', (params) => process.send(speedSuite(params), () => process.disconnect()));
} else if (mode === 'pool-worker') {
  // Round-robin pool worker: {id, op, arg, src} -> {id, result} (ops in workloads.cjs).
  const { runOp } = require('./workloads.cjs');
  process.on('message', (m) => {
    if (m === 'stop') return process.disconnect();
    process.send({ id: m.id, result: runOp(m) });
  });
} else {
  throw new Error(`children.cjs: unknown mode ${mode}`);
}
