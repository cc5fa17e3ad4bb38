'use strict';
// Pool.map: prime factorisation of a range of big integers, serially and on a Pool of cpuCount()
// worker processes (CPython's classic multiprocessing.Pool example). The mapped function is a
// plain closure: under the fork start method the workers already have it.
//
//   npx multiproc examples/pool_primes.js        (PRIMES_COUNT=N to change the size)
const { Pool, cpuCount } = require('multiproc');

const START = 1_000_000_000;
const COUNT = Number(process.env.PRIMES_COUNT ?? 50_000);

function factorise(n) {
  const factors = [];
  let d = 2;
  while (d * d <= n) {
    while (n % d === 0) {
      factors.push(d);
      n /= d;
    }
    d += 1;
  }
  if (n > 1) factors.push(n);
  return factors;
}

async function main() {
  const numbers = Array.from({ length: COUNT }, (_, i) => START + i);

  let t0 = performance.now();
  const serial = numbers.map(factorise);
  const serialMs = performance.now() - t0;

  t0 = performance.now();
  const pool = new Pool(cpuCount());
  const parallel = await pool.map(factorise, numbers);
  pool.close();
  await pool.join();
  const poolMs = performance.now() - t0;

  if (JSON.stringify(serial) !== JSON.stringify(parallel)) throw new Error('pool result differs from the serial one');
  const primes = parallel.filter((f) => f.length === 1).length;
  console.log(`${COUNT} numbers from ${START}: ${primes} primes`);
  console.log(`${START + 1} = ${parallel[1].join(' x ')}`);
  console.log(`serial ${serialMs.toFixed(0)} ms, Pool(${cpuCount()}) ${poolMs.toFixed(0)} ms (start and stop included)`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
