'use strict';
// Workloads shared by every JS variant (and by the worker files of piscina / child_process).

/** Naive trial division, deliberately CPU-bound (as bench/cpython/pool.py's factorize). */
function factorize(n) {
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

/** Checksum of a list of factor lists (compared across variants: same work done). */
function factorChecksum(lists) {
  let s = 0;
  for (const f of lists) for (const x of f) s = (s * 31 + x) % 1000000007;
  return s;
}

const CPU_START = 1000000000;
const CPU_COUNT = 10000;
function cpuRange() {
  return Array.from({ length: CPU_COUNT }, (_, i) => CPU_START + i);
}

/** CPython's default Pool.map chunksize: ceil(len / (4 * workers)). */
function defaultChunksize(len, workers) {
  let [c, extra] = [Math.floor(len / (workers * 4)), len % (workers * 4)];
  if (extra) c += 1;
  return Math.max(1, c);
}

function chunks(arr, size) {
  const out = [];
  for (let i = 0; i < arr.length; i += size) out.push(arr.slice(i, i + size));
  return out;
}

/**
 * The task protocol of the Node pools (piscina and the child_process round-robin pool):
 * { op: 'ident' | 'noop' | 'factorize' | 'source', arg, src }. 'factorize' takes a chunk;
 * 'source' runs a function shipped as source text, compiled once per worker and cached (how a
 * worker pool runs a function it has not seen before).
 */
const compiled = new Map();
function runOp(m) {
  switch (m.op) {
    case 'ident':
      return m.arg;
    case 'noop':
      return null;
    case 'factorize':
      return m.arg.map(factorize);
    case 'source': {
      let fn = compiled.get(m.src);
      if (!fn) compiled.set(m.src, (fn = (0, eval)(m.src)));
      return fn(...m.arg);
    }
    default:
      throw new Error(`unknown op ${m.op}`);
  }
}

/**
 * Speed of ordinary JS in this process (DESIGN.md fact 9: is a forked child slower?). Every
 * function is compiled fresh here (unique source), so each process pays its own JIT warm-up:
 * a self-contained hot loop, a call-heavy loop (`calls` calls of a small function), and the
 * factorisation. Returns milliseconds per part.
 *
 * The driving loops are part of the fresh source too. They used to live in this function, and a
 * forked child inherits this function already run (by the parent's own measurement) with call
 * feedback for a *different* fresh `g`: its call site was polymorphic in the child, `g` was no
 * longer inlined, and the call loop ran 3-5x slower -- in the parent as well, from its second
 * call on. That, not fork, was fact 9's "call-heavy loop is slower in the child".
 */
function speedSuite({ hot_iters, calls, factor_count }) {
  const tag = `${process.pid} ${process.hrtime.bigint()} ${Math.random()}`;
  const now = () => Number(process.hrtime.bigint()) / 1e6;
  const hotF = new Function('n', `/* hot ${tag} */ let s = 0; for (let i = 0; i < n; i++) s = (s + i * i) % 1000003; return s;`);
  const hotLoop = new Function('hotF', 'iters', `/* hl ${tag} */ let s = 0; for (let i = 0; i < iters; i++) s += hotF(20000 + i); return s;`);
  const callLoop = new Function('calls', `/* g ${tag} */ const g = (x) => (x * 31 + 7) % 1009; let s = 0; for (let i = 0; i < calls; i++) s += g(i); return s;`);
  const fact = new Function(`/* f ${tag} */ return ${factorize.toString()}`)();
  const factLoop = new Function('fact', 'start', 'count', `/* fl ${tag} */ let s = 0; for (let i = 0; i < count; i++) s += fact(start + i).length; return s;`);
  let s = 0;
  let t = now();
  s += hotLoop(hotF, hot_iters);
  const hot = now() - t;
  t = now();
  s += callLoop(calls);
  const call = now() - t;
  t = now();
  s += factLoop(fact, CPU_START, factor_count);
  const factor = now() - t;
  return { hot_ms: hot, calls_ms: call, factor_ms: factor, checksum: s };
}

module.exports = {
  speedSuite,
  runOp, factorize, factorChecksum, cpuRange, defaultChunksize, chunks, CPU_START, CPU_COUNT };
