'use strict';
// The three start methods side by side: the same exported function, run by a forked child
// (fork), a child of the forkserver, and a fresh Node process (spawn). Under forkserver and
// spawn the target travels by reference (this module's export) and the child imports this
// file again: the isMainProcess() guard keeps it from starting processes there.
//   npx multiproc examples/start_methods.js   (fork is the default)
//   node examples/start_methods.js            (forkserver is the default)
const { getContext, getStartMethod, isForkSafe, isMainProcess } = require('multiproc');

function square(q, x) {
  q.put([process.pid, x * x]);
}
exports.square = square;

async function main() {
  console.log(`default start method here: ${getStartMethod()}`);
  // The first forkserver child also starts the server; the second shows a child's own cost.
  for (const method of ['fork', 'forkserver', 'forkserver', 'spawn']) {
    if (method === 'fork' && !isForkSafe()) {
      console.log('fork       not available: this process is not fork-safe (run it with npx multiproc)');
      continue;
    }
    const ctx = getContext(method);
    const q = ctx.Queue();
    const t0 = performance.now();
    const p = new ctx.Process({ target: square, args: [q, 12] });
    p.start();
    const [pid, result] = await q.get({ timeout: 30_000 });
    await p.join();
    const ms = (performance.now() - t0).toFixed(1);
    console.log(`${method.padEnd(10)} child ${pid === p.pid ? 'pid ok' : 'pid mismatch'}: 12 * 12 = ${result}, exit ${p.exitCode}, ${ms} ms`);
    q.close();
  }
  // A closure cannot travel to a fresh process: the error says how to export it.
  try {
    const k = 3;
    new (getContext('spawn').Process)({ target: () => k }).start();
  } catch (e) {
    console.log(`closure under spawn: ${e.code}`);
  }
}

if (isMainProcess()) main();
