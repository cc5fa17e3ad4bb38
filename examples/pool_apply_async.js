'use strict';
// Pool.applyAsync with callbacks, AsyncResult.get(timeout), imap over a generator, and a task
// error that comes back with its class, message and the worker's stack (CPython's Pool docs).
//
//   npx multiproc examples/pool_apply_async.js
const { Pool, TimeoutError } = require('multiproc');

function square(x) {
  return x * x;
}

async function main() {
  const pool = new Pool(4);
  try {
    await run(pool);
  } finally {
    await pool[Symbol.asyncDispose](); // what `await using pool = new Pool(4)` does: terminate
  }
}

async function run(pool) {
  // applyAsync: one call, a callback when it is done
  const squares = [];
  const results = [];
  for (let i = 0; i < 10; i++) results.push(pool.applyAsync(square, [i], { callback: (v) => squares.push(v) }));
  for (const r of results) await r.get(5000);
  console.log('applyAsync:', results.length, 'calls, sum of squares', squares.reduce((a, b) => a + b, 0));

  // the result of a call that is not done in time: TimeoutError, the call goes on
  const slow = pool.applyAsync(() => new Promise((r) => setTimeout(() => r(process.pid), 200)));
  try {
    await slow.get(10);
  } catch (e) {
    console.log('get(10):', e instanceof TimeoutError ? 'TimeoutError' : e);
  }
  console.log('then from worker pid', typeof (await slow.get()) === 'number' ? '(a number)' : '?');

  // imap: pulls an endless generator lazily
  function* naturals() {
    for (let i = 1; ; i++) yield i;
  }
  let total = 0;
  for await (const v of pool.imap(square, naturals(), { chunksize: 16 })) {
    total += v;
    if (v >= 100 * 100) break;
  }
  console.log('imap: sum of squares 1..100 =', total);

  // a closure created now, after the pool: the workers are re-forked to know it
  const k = 7;
  console.log('closure:', await pool.map((x) => x * k, [1, 2, 3]));

  // errors keep their class and the worker's stack
  try {
    await pool.apply(() => {
      throw new RangeError('out of range in the worker');
    });
  } catch (e) {
    console.log('error:', e instanceof RangeError, e.message);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
