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
} else if (mode === 'pool-worker') {
  // Round-robin pool worker: {id, op, arg} -> {id, result}. Ops: ident over a chunk, noop,
  // factorize over a chunk, and run-source (a function shipped as source, compiled once).
  const { factorize } = require('./workloads.cjs');
  const compiled = new Map();
  process.on('message', (m) => {
    if (m === 'stop') return process.disconnect();
    let result;
    switch (m.op) {
      case 'ident':
        result = m.arg;
        break;
      case 'noop':
        result = null;
        break;
      case 'factorize':
        result = m.arg.map(factorize);
        break;
      case 'source': {
        let fn = compiled.get(m.src);
        if (!fn) compiled.set(m.src, (fn = (0, eval)(m.src)));
        result = fn(...m.arg);
        break;
      }
      default:
        throw new Error(`unknown op ${m.op}`);
    }
    process.send({ id: m.id, result });
  });
} else {
  throw new Error(`children.cjs: unknown mode ${mode}`);
}
