// Benchmark harness: side-by-side runs of multiproc against its real alternatives (CPython's
// multiprocessing, child_process, worker_threads, piscina), reported as ratios.
//
// Model. A bench file declares metrics and variants. The file run by the user is the
// orchestrator; it never measures anything itself. Every sample (one variant, one round) runs in
// a fresh child process — `node --single-threaded` through bin/multiproc.js for our side, plain
// `node` for the Node alternatives, `python3` for CPython — so the variants cannot disturb one
// another (heap size, live Workers, JIT state) and the fork precondition holds for ours. Rounds
// interleave the variants, rotating their order, so slow drifts of the machine hit all alike.
//
// Busy-machine guard (after /work/shared/bench/cpython_anchor.py). The machine is shared. Around
// every measured step the child samples the CPU busy time of the whole machine and the CPU time
// of our own process tree (the orchestrator and all its descendants, including children they
// reaped); the difference is the load other processes put on the machine during the step, in
// cores. Steps with external load >= extLimit are "disturbed" and left out of the median. A
// cell with no undisturbed round shows the median of all rounds marked `*`: the machine was too
// busy to trust that number. Before each sample the orchestrator waits (bounded) for quiet.
// Where cgroup v1's cpuacct controller is writable (Linux as root), both times are exact
// nanoseconds: the orchestrator moves itself into a cgroup of its own, which every descendant
// inherits (the resource tracker too, which is re-parented to init), and the root cgroup counts
// every task. Elsewhere they are clock ticks from /proc/stat and /proc/PID/stat: 10 ms steps,
// too coarse for a step of 50 ms (a 200k-item queue run): the guard then dropped rounds by
// rounding, the short (fast) ones most often.

import { spawn, spawnSync, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const BENCH_DIR = path.resolve(here, '..');
export const REPO_DIR = path.resolve(BENCH_DIR, '..');

// ---------------------------------------------------------------------------------------------
// CPU accounting
// ---------------------------------------------------------------------------------------------

let HZ = Number(process.env.BENCH_HZ) || 0;
function hz() {
  if (!HZ) {
    try {
      HZ = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      HZ = 100;
    }
  }
  return HZ;
}

/** Root of "our" process tree: the orchestrator (passed down in BENCH_ROOT_PID) or ourselves. */
export function rootPid() {
  return Number(process.env.BENCH_ROOT_PID) || process.pid;
}

/**
 * Every process's /proc/PID/stat fields after the command name (index 0 is the state, 1 the ppid,
 * 2 the process group, 11..14 utime/stime/cutime/cstime), as [pid, fields].
 */
function* procStats() {
  for (const d of fs.readdirSync('/proc')) {
    if (d.charCodeAt(0) < 48 || d.charCodeAt(0) > 57) continue;
    let st;
    try {
      st = fs.readFileSync(`/proc/${d}/stat`, 'latin1');
    } catch {
      continue; // exited meanwhile
    }
    yield [Number(d), st.slice(st.lastIndexOf(')') + 2).split(' ')];
  }
}

/**
 * One sample: wall clock, machine-wide busy jiffies (/proc/stat) and the jiffies used by our
 * process tree (utime+stime+cutime+cstime of the root and every descendant alive now; the CPU of
 * descendants already reaped is in their reaper's cutime/cstime).
 */
export function cpuSample(root = rootPid()) {
  const t = process.hrtime.bigint();
  const acct = process.env.BENCH_CPUACCT;
  if (acct) {
    try {
      const busy = Number(fs.readFileSync(path.join(path.dirname(acct), 'cpuacct.usage'), 'latin1'));
      const ours = Number(fs.readFileSync(path.join(acct, 'cpuacct.usage'), 'latin1'));
      return { t, busy, ours, ok: true, perSecond: 1e9 };
    } catch {
      // the cgroup is gone: fall back to ticks
    }
  }
  let busy = 0;
  try {
    const line = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0];
    // cpu user nice system idle iowait irq softirq steal guest guest_nice (guest is in user)
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    busy = f[0] + f[1] + f[2] + f[5] + f[6] + f[7];
  } catch {
    return { t, busy: 0, ours: 0, ok: false };
  }
  const info = new Map();
  for (const [pid, rest] of procStats()) {
    info.set(pid, { ppid: Number(rest[1]), cpu: +rest[11] + +rest[12] + +rest[13] + +rest[14] });
  }
  const children = new Map();
  for (const [pid, { ppid }] of info) {
    if (!children.has(ppid)) children.set(ppid, []);
    children.get(ppid).push(pid);
  }
  let ours = 0;
  const stack = [root];
  while (stack.length) {
    const pid = stack.pop();
    const i = info.get(pid);
    if (i) ours += i.cpu;
    for (const c of children.get(pid) ?? []) stack.push(c);
  }
  return { t, busy, ours, ok: true, perSecond: hz() };
}

/** CPU (in cores) used by processes outside our tree between two samples. */
export function externalLoad(s0, s1) {
  if (!s0.ok || !s1.ok) return 0;
  const secs = Number(s1.t - s0.t) / 1e9;
  if (secs <= 0) return 0;
  if (s0.perSecond !== s1.perSecond) return 0;
  return Math.max(0, (s1.busy - s0.busy - (s1.ours - s0.ours)) / s1.perSecond / secs);
}

const CPUACCT = '/sys/fs/cgroup/cpuacct';

/** Orchestrator: moves this process into a cpuacct cgroup of its own (see the top); its path or null. */
function enterCpuacct() {
  if (process.platform !== 'linux' || !fs.existsSync(path.join(CPUACCT, 'cpuacct.usage'))) return null;
  // Cgroups of earlier runs, empty once their last process (a resource tracker) exited.
  for (const d of fs.readdirSync(CPUACCT)) {
    if (d.startsWith('multiproc-bench-')) {
      try {
        fs.rmdirSync(path.join(CPUACCT, d));
      } catch {
        // still in use
      }
    }
  }
  const dir = path.join(CPUACCT, `multiproc-bench-${process.pid}`);
  try {
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(process.pid));
    return dir;
  } catch {
    try {
      fs.rmdirSync(dir);
    } catch {
      // not made
    }
    return null; // not root, or a read-only cgroup file system
  }
}

function leaveCpuacct(dir) {
  try {
    fs.writeFileSync(path.join(CPUACCT, 'cgroup.procs'), String(process.pid));
    fs.rmdirSync(dir); // fails while a descendant (a tracker) lives on: removed by the next run
  } catch {
    // best effort
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Wait until external load over `windowMs` is below `limit`, or `maxWaitMs` elapsed. */
export async function waitForQuiet(limit, maxWaitMs, windowMs = 500) {
  const end = Date.now() + maxWaitMs;
  for (;;) {
    const s0 = cpuSample();
    await sleep(windowMs);
    const load = externalLoad(s0, cpuSample());
    if (load < limit || Date.now() >= end) return load;
    process.stderr.write(`    waiting for a quiet machine: external load ${load.toFixed(2)} cores\n`);
  }
}

// ---------------------------------------------------------------------------------------------
// Statistics and formatting
// ---------------------------------------------------------------------------------------------

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return NaN;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/** Sleep the thread without the event loop (for Sync-form benchmarks). */
export function sleepSync(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function fmtNum(v, digits) {
  if (!Number.isFinite(v)) return String(v);
  if (digits === 0 || Math.abs(v) >= 10000) return Math.round(v).toLocaleString('en-US');
  return v.toFixed(digits);
}

function fmtRatio(r) {
  if (!(r > 0) || !Number.isFinite(r)) return '-';
  const p = (x) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
  return r >= 1 ? `${p(r)} (ours ${p(r)}× better)` : `${p(r)} (ours ${p(1 / r)}× worse)`;
}

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

export function parseArgs(argv = process.argv.slice(2)) {
  const o = { quick: false, rounds: undefined, json: null, maxWait: undefined, extLimit: 0.1, variants: null, child: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (a.includes('=')) return a.slice(a.indexOf('=') + 1);
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    const name = a.split('=')[0];
    if (name === '--quick') o.quick = true;
    else if (name === '--rounds') o.rounds = Number(val());
    else if (name === '--json') o.json = val();
    else if (name === '--max-wait') o.maxWait = Number(val());
    else if (name === '--ext-limit') o.extLimit = Number(val());
    else if (name === '--variants') o.variants = val().split(',');
    else if (name === '--child') o.child = val();
    else if (name === '--alt-single-threaded') o.altSingleThreaded = true;
    else if (name === '--help' || name === '-h') o.help = true;
    else throw new Error(`unknown option ${a}`);
  }
  // Seconds to wait for a quiet machine before each sample (the anchor waits up to 600 s; on a
  // machine shared with builds we rather measure and mark the result disturbed).
  if (o.maxWait === undefined) o.maxWait = o.quick ? 2 : 10;
  return o;
}

export const USAGE = `options:
  --quick            small sample sizes (smoke run)
  --rounds N         rounds per variant (default 3, 7 for process); the report gives the median over
                     undisturbed rounds and the min..max range
  --json FILE        also write every raw sample (values + external load) as JSON
  --max-wait S       seconds to wait for a quiet machine before each sample (default 10, quick 2)
  --ext-limit C      external load (cores) above which a step counts as disturbed (default 0.10)
  --variants a,b     only these variants (ids as printed)
  --alt-single-threaded  run the Node alternatives under --single-threaded too (default: plain
                     node, as their users run them)`;

// ---------------------------------------------------------------------------------------------
// Our library: honest feature detection on the exported names
// ---------------------------------------------------------------------------------------------

let oursCache;
/** The CommonJS build of this repository ({ mod } or { error }). */
export function loadOurs() {
  if (oursCache) return oursCache;
  const entry = path.join(REPO_DIR, 'dist', 'index.js');
  if (!fs.existsSync(entry)) return (oursCache = { error: 'dist/index.js missing (run npm install)' });
  try {
    oursCache = { mod: createRequire(import.meta.url)(entry) };
  } catch (e) {
    oursCache = { error: `dist/index.js failed to load: ${e.message}` };
  }
  return oursCache;
}

/** Names in `names` that our build does not export as functions/classes. */
export function missingOurs(names) {
  const o = loadOurs();
  if (o.error) return names;
  return names.filter((n) => typeof o.mod[n] !== 'function');
}

// ---------------------------------------------------------------------------------------------
// Child side: a recorder for one sample
// ---------------------------------------------------------------------------------------------

/**
 * Thrown by a variant that finds at run time that our build lacks a method it needs (the
 * exported-name check in missingOurs() cannot see methods): the row prints "not available".
 */
export class Unavailable extends Error {}

/** Throw Unavailable unless obj[method] is a function. */
export function requireMethod(obj, method, what) {
  if (typeof obj?.[method] !== 'function') throw new Unavailable(`not available in this build: ${what}.${method} missing`);
}

export class Recorder {
  values = {};
  ext = {};
  errors = {};
  notes = [];

  /**
   * Run fn, record the number (for `key`) or the {key: number} (for the keys in array `key`) it
   * returns, and the external load meanwhile. A failing step records its error for its keys and
   * the sample goes on with the next step (Unavailable still ends the sample).
   */
  async step(key, fn) {
    const s0 = cpuSample();
    let r;
    try {
      r = await fn();
    } catch (e) {
      if (e instanceof Unavailable) throw e;
      const msg = `${e?.name ?? 'Error'}: ${String(e?.message ?? e).split('\n')[0]}`.slice(0, 200);
      process.stderr.write(`    step ${key} failed: ${e?.stack ?? e}\n`);
      for (const k of Array.isArray(key) ? key : [key]) this.errors[k] = msg;
      return undefined;
    }
    const load = externalLoad(s0, cpuSample());
    const vals = typeof r === 'number' ? { [key]: r } : r;
    for (const [k, v] of Object.entries(vals)) {
      this.values[k] = v;
      this.ext[k] = load;
    }
    return r;
  }

  note(s) {
    this.notes.push(s);
  }
}

async function childMain(spec, opts) {
  const v = spec.variants.find((x) => x.id === opts.child);
  if (!v) throw new Error(`no variant ${opts.child}`);
  const cfg = JSON.parse(process.env.BENCH_CFG || 'null') ?? (opts.quick ? spec.quick : spec.full);
  const rec = new Recorder();
  const mod = v.side === 'ours' ? loadOurs().mod : undefined;
  let unavailable;
  try {
    await v.run(cfg, rec, mod);
  } catch (e) {
    if (!(e instanceof Unavailable)) throw e;
    unavailable = e.message;
  }
  const out = JSON.stringify({ values: rec.values, ext: rec.ext, errors: rec.errors, notes: rec.notes, unavailable });
  if (process.env.BENCH_OUT) fs.writeFileSync(process.env.BENCH_OUT, out);
  else fs.writeSync(1, out + '\n');
  // Do not let a handle someone left open (a pool, a tracker) keep the sample alive.
  process.exit(0);
}

// ---------------------------------------------------------------------------------------------
// Orchestrator side
// ---------------------------------------------------------------------------------------------

const MULTIPROC_BIN = path.join(REPO_DIR, 'bin', 'multiproc.js');

function commandFor(spec, v, file, opts = {}) {
  if (v.side === 'python') {
    return { cmd: process.env.PYTHON || 'python3', args: [path.join(BENCH_DIR, 'cpython', v.script), ...(v.scriptArgs ?? [])], how: 'python3' };
  }
  const flags = v.nodeFlags ?? [];
  const self = [file, '--child', v.id];
  if (v.side === 'ours') {
    // Our side runs fork-safe, the way users run it: bin/multiproc.js = node --single-threaded
    // (+ the library's preload when the build has one).
    if (fs.existsSync(MULTIPROC_BIN)) return { cmd: process.execPath, args: [MULTIPROC_BIN, ...flags, ...self], how: 'node --single-threaded (bin/multiproc.js)' };
    return { cmd: process.execPath, args: ['--single-threaded', ...flags, ...self], how: 'node --single-threaded' };
  }
  const alt = opts.altSingleThreaded ? ['--single-threaded', ...flags] : flags;
  return { cmd: process.execPath, args: [...alt, ...self], how: `${opts.altSingleThreaded ? 'node' : 'plain node'}${alt.length ? ' ' + alt.join(' ') : ''}` };
}

let outSeq = 0;
let liveGroup = 0; // process group of the sample running now (for Ctrl-C)

/** Is a process of group `pgid` still running? Zombies (already dead, waiting for init to reap
 * them, as an orphaned CPython resource tracker can be) do not count. */
function groupAlive(pgid) {
  try {
    process.kill(-pgid, 0);
  } catch {
    return false; // ESRCH: nothing left
  }
  if (!fs.existsSync('/proc/self/stat')) return true; // no procfs (macOS): cannot tell zombies
  for (const [, rest] of procStats()) {
    if (Number(rest[2]) === pgid && rest[0] !== 'Z') return true;
  }
  return false;
}

/** Kill a sample's whole process group; true if anything was still in it. */
function killGroup(pgid) {
  if (!groupAlive(pgid)) return false;
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {}
  return true;
}

/** After a sample ended: give helpers that exit by themselves (CPython's resource tracker) a
 * moment, then kill what is left; true if something had to be killed. */
async function reapGroup(pgid) {
  for (let i = 0; i < 20 && groupAlive(pgid); i++) await sleep(25);
  return killGroup(pgid);
}

/** /dev/shm entries of multiprocessing libraries: CPython's semaphores (sem.mp-*) and segments
 * (psm_*), ours (mp-*). Empty where there is no /dev/shm. */
function shmEntries() {
  try {
    return new Set(fs.readdirSync('/dev/shm').filter((n) => /^(sem\.mp-|mp-|psm_)/.test(n)));
  } catch {
    return new Set();
  }
}

/** A sample that had to be killed cannot clean up (CPython's resource tracker dies with its
 * group): unlink what appeared in /dev/shm while it ran (samples run one at a time). */
function removeShmSince(before) {
  let n = 0;
  for (const name of shmEntries()) {
    if (before.has(name)) continue;
    fs.rmSync(path.join('/dev/shm', name), { force: true });
    n++;
  }
  return n;
}

function onSignal(sig) {
  if (liveGroup) killGroup(liveGroup);
  process.exit(sig === 'SIGINT' ? 130 : 143);
}

function runSample(spec, v, file, cfg, timeoutMs, opts) {
  const { cmd, args } = commandFor(spec, v, file, opts);
  const out = path.join(os.tmpdir(), `mp-bench-${process.pid}-${outSeq++}.json`);
  return new Promise((resolve) => {
    const s0 = cpuSample();
    const shm0 = shmEntries();
    // Own process group: a timeout or Ctrl-C kills the sample with every process it forked (a
    // hung fork child would otherwise outlive us and spin on a shared machine).
    const child = spawn(cmd, args, {
      detached: true,
      stdio: ['ignore', 'inherit', 'pipe'],
      env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1', BENCH_OUT: out, BENCH_CFG: JSON.stringify(cfg), BENCH_ROOT_PID: String(process.pid), BENCH_HZ: String(hz()) },
    });
    liveGroup = child.pid;
    let errTail = '';
    child.stderr.on('data', (d) => {
      process.stderr.write(d);
      errTail = (errTail + d.toString()).slice(-400);
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid);
    }, timeoutMs);
    child.on('close', async (code, signal) => {
      clearTimeout(timer);
      const leftovers = await reapGroup(child.pid);
      liveGroup = 0;
      const removed = timedOut || leftovers || signal ? removeShmSince(shm0) : 0;
      if (removed > 0) process.stderr.write(`    removed ${removed} /dev/shm object(s) the killed sample left behind\n`);
      const whole = externalLoad(s0, cpuSample());
      let res;
      try {
        res = JSON.parse(fs.readFileSync(out, 'utf8'));
      } catch {
        res = null;
      }
      fs.rmSync(out, { force: true });
      if (res && code === 0) {
        if (leftovers) res.notes = [...(res.notes ?? []), 'the sample left processes running 0.5 s after it ended (killed)'];
        resolve({ ...res, whole });
        return;
      }
      const last = errTail.trim().split('\n').filter(Boolean).pop() ?? '';
      const why = timedOut ? `timed out after ${timeoutMs / 1000}s` : signal ? `killed by ${signal}` : `exit code ${code}`;
      resolve({ error: `${why}${last ? ': ' + last.slice(0, 160) : ''}`, whole, timedOut });
    });
  });
}

/**
 * Entry point of every bench file.
 * spec = { name, title, file (import.meta.url), full: cfg, quick: cfg,
 *          metrics: [{ key, label, unit, better: 'lower'|'higher', digits }],
 *          variants: [{ id, label, side: 'ours'|'node'|'python', metrics: [keys],
 *                       requires?: [exported names], run?(cfg, rec, mp), script?, scriptArgs?, nodeFlags? }],
 *          (against: the id of the one ours variant an alternative's ratios compare with; a
 *          target's `of` likewise)
 *          notes?: [strings] }
 */
export async function benchMain(spec) {
  // A spawn/forkserver child of a sample imports the bench file as its main module: the bench
  // must not run again there (the `if __name__ == '__main__'` of the CPython side).
  if (loadOurs().mod?.isMainProcess?.() === false) return undefined;
  const opts = parseArgs();
  // A bench whose key rows sit within the VM's run-to-run noise asks for more rounds (spec.rounds).
  opts.rounds ??= opts.quick ? 3 : (spec.rounds ?? 3);
  const file = fileURLToPath(spec.file);
  if (opts.child) return childMain(spec, opts);
  if (opts.help) {
    process.stdout.write(`usage: node ${path.relative(process.cwd(), file)} [options]\n${USAGE}\nvariants: ${spec.variants.map((v) => v.id).join(', ')}\n`);
    return;
  }
  const cfg = opts.quick ? spec.quick : spec.full;
  const variants = spec.variants.filter((v) => !opts.variants || opts.variants.includes(v.id));
  const results = new Map(variants.map((v) => [v.id, { rounds: [], unavailable: null }]));
  for (const v of variants) {
    if (v.side === 'ours') {
      const miss = missingOurs(v.requires ?? []);
      const err = loadOurs().error;
      if (err) results.get(v.id).unavailable = `not available in this build: ${err}`;
      else if (miss.length) results.get(v.id).unavailable = `not available in this build: ${miss.join(', ')} missing`;
    }
  }
  const runnable = variants.filter((v) => !results.get(v.id).unavailable);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const timeoutMs = (opts.quick ? 60 : 180) * 1000; // a full sample takes < 30 s here
  process.stderr.write(`${spec.name}: ${opts.rounds} rounds, ${opts.quick ? 'quick' : 'full'} sizes, ext-limit ${opts.extLimit} cores\n`);
  if (process.env.NODE_EXTRA_CA_CERTS) opts.extraCaCost = extraCaCost();
  const acct = process.env.BENCH_CPUACCT ? null : enterCpuacct();
  if (acct !== null) process.env.BENCH_CPUACCT = acct; // every sample inherits it
  opts.exactCpu = !!process.env.BENCH_CPUACCT;
  for (let r = 0; r < opts.rounds; r++) {
    const k = runnable.length ? r % runnable.length : 0;
    const order = [...runnable.slice(k), ...runnable.slice(0, k)];
    for (const v of order) {
      if (results.get(v.id).unavailable || results.get(v.id).skip) continue;
      const quiet = await waitForQuiet(opts.extLimit, opts.maxWait * 1000);
      const t0 = Date.now();
      const res = await runSample(spec, v, file, cfg, timeoutMs, opts);
      results.get(v.id).rounds.push(res);
      if (res.unavailable) results.get(v.id).unavailable = res.unavailable;
      // a hang is not worth waiting for again: skip the variant's remaining rounds
      if (res.timedOut) results.get(v.id).skip = true;
      process.stderr.write(
        `  round ${r} ${v.id}: ${res.error ? 'ERROR ' + res.error : 'ok'} in ${((Date.now() - t0) / 1000).toFixed(1)}s ` +
          `(external load before ${quiet.toFixed(2)}, during ${res.whole.toFixed(2)} cores)\n`,
      );
    }
  }
  if (acct !== null) {
    leaveCpuacct(acct);
    delete process.env.BENCH_CPUACCT;
  }
  const report = buildReport(spec, variants, results, opts);
  process.stdout.write(report.text + '\n');
  if (opts.json) {
    const env = { node: process.version, python: pyVersion(), cpus: os.cpus().length, platform: `${os.type()} ${os.release()}`, date: new Date().toISOString() };
    fs.writeFileSync(opts.json, JSON.stringify({ bench: spec.name, env, opts, cfg, summary: report.summary, raw: Object.fromEntries(results) }, null, 1));
  }
  return report;
}

function pyVersion() {
  try {
    return execFileSync(process.env.PYTHON || 'python3', ['-c', 'import sys; print(sys.version.split()[0])'], { encoding: 'utf8' }).trim();
  } catch {
    return null;
  }
}

function summarize(rounds, key, limit) {
  const rows = rounds.filter((x) => !x.error && x.values && key in x.values);
  if (!rows.length) return null;
  const clean = rows.filter((x) => (x.ext?.[key] ?? x.whole ?? 0) < limit).map((x) => x.values[key]);
  const busy = clean.length === 0;
  const vals = busy ? rows.map((x) => x.values[key]) : clean;
  return { median: median(vals), min: Math.min(...vals), max: Math.max(...vals), n: vals.length, kept: clean.length, total: rounds.length, busy };
}

/** "target: ours >= N× vs <alt> on <metric>: met / MISSED / not measured", per ours variant. */
function targetLine(spec, variants, results, summary, t) {
  const m = spec.metrics.find((x) => x.key === t.metric);
  const alt = variants.find((v) => v.id === t.vs);
  const head = `target: ${m.label} — ours ≥ ${t.atLeast}× vs ${alt?.label ?? t.vs}`;
  const sums = summary[t.metric] ?? {};
  const parts = [];
  for (const o of variants.filter((v) => v.side === 'ours' && v.metrics.includes(t.metric) && (!t.of || v.id === t.of))) {
    const a = sums[t.vs];
    const b = sums[o.id];
    const tag = o.tag ? `${o.tag}: ` : '';
    if (!a || !b) {
      parts.push(`${tag}not measured`);
      continue;
    }
    const r = m.better === 'lower' ? a.median / b.median : b.median / a.median;
    parts.push(`${tag}${r >= t.atLeast ? 'met' : 'MISSED'} (${r.toFixed(2)}×)${a.busy || b.busy ? ' unconfirmed: machine busy' : ''}`);
  }
  return `${head}: ${parts.join('; ') || 'not measured'}`;
}

/** Median start-up of a bare `node -e 0` with and without NODE_EXTRA_CA_CERTS (ms). */
function extraCaCost() {
  const time = (env) => {
    const ts = [];
    for (let i = 0; i < 5; i++) {
      const t0 = process.hrtime.bigint();
      spawnSync(process.execPath, ['-e', '0'], { env, stdio: 'ignore' });
      ts.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    return ts.sort((a, b) => a - b)[2];
  };
  const { NODE_EXTRA_CA_CERTS: _, ...without } = process.env;
  return { with: time(process.env), without: time(without) };
}

function buildReport(spec, variants, results, opts) {
  const L = [];
  const summary = {};
  const hows = [...new Set(variants.map((v) => `${v.side === 'ours' ? 'ours' : v.side === 'python' ? 'CPython' : 'Node alternatives'}: ${commandFor(spec, v, '', opts).how}`))];
  L.push(`## ${spec.title}`);
  L.push(`${opts.quick ? 'quick sizes' : 'full sizes'}, ${opts.rounds} rounds; run as: ${hows.join('; ')}`);
  L.push('cell = median over undisturbed rounds (min..max) [rounds kept/run]; ratio = ours vs that row, >1 means ours is better (faster / more throughput)');
  L.push(`busy-machine guard: ${opts.exactCpu ? 'exact CPU times (cgroup cpuacct)' : 'CPU times in clock ticks (/proc): coarse for steps under ~0.5 s'}`);
  if (opts.extraCaCost !== undefined) {
    L.push(
      `note: NODE_EXTRA_CA_CERTS is set here, so every fresh Node process parses that certificate bundle as it starts ` +
        `(a bare \`node -e 0\` takes ${opts.extraCaCost.with.toFixed(0)} ms with it, ${opts.extraCaCost.without.toFixed(0)} ms without): ` +
        'rows that start a Node process (spawn, child_process, the forkserver server) include it; CPython pays nothing like it.',
    );
  }
  L.push('');
  L.push('| metric | variant | result | ratio (>1 = ours better) |');
  L.push('|---|---|---|---|');
  let anyBusy = false;
  for (const m of spec.metrics) {
    const vs = variants.filter((v) => v.metrics.includes(m.key));
    if (!vs.length) continue;
    const oursVs = vs.filter((v) => v.side === 'ours');
    const sums = new Map();
    for (const v of vs) sums.set(v.id, summarize(results.get(v.id).rounds, m.key, opts.extLimit));
    summary[m.key] = Object.fromEntries(vs.map((v) => [v.id, sums.get(v.id)]));
    let first = true;
    for (const v of vs) {
      const res = results.get(v.id);
      const s = sums.get(v.id);
      let cell;
      if (res.unavailable) cell = res.unavailable;
      else if (!s) {
        const err = res.rounds.find((x) => x.errors?.[m.key])?.errors[m.key] ?? res.rounds.find((x) => x.error)?.error;
        cell = err ? `error: ${err}` : 'no result';
      } else {
        anyBusy ||= s.busy;
        cell = `${fmtNum(s.median, m.digits)}${s.busy ? '*' : ''}`;
        if (s.n > 1) cell += ` (${fmtNum(s.min, m.digits)}..${fmtNum(s.max, m.digits)})`;
        cell += ` [${s.kept}/${s.total}]`;
      }
      let ratio = '';
      if (v.side !== 'ours' && s && m.noRatio) ratio = 'n/a (a ratio of ratios)';
      else if (v.side !== 'ours' && s) {
        const parts = [];
        for (const o of oursVs.filter((x) => !v.against || x.id === v.against)) {
          const os_ = sums.get(o.id);
          if (!os_) continue;
          const r = m.better === 'lower' ? s.median / os_.median : os_.median / s.median;
          const tag = oursVs.length > 1 ? `${o.tag ?? o.id}: ` : '';
          parts.push(`${tag}${fmtRatio(r)}${s.busy || os_.busy ? '?' : ''}`);
        }
        ratio = parts.join('; ') || '-';
      }
      const label = first ? `${m.label}, ${m.unit} (${m.better} is better)` : '';
      first = false;
      L.push(`| ${label} | ${v.label} | ${cell} | ${ratio} |`);
    }
  }
  if (anyBusy) {
    L.push('');
    L.push(`\\* machine too busy: no round of this cell ran with external load < ${opts.extLimit} cores; the median of all rounds is shown — do not trust it (ratios built on it end in ?).`);
  }
  for (const t of spec.targets ?? []) L.push(`- ${targetLine(spec, variants, results, summary, t)}`);
  for (const n of spec.notes ?? []) L.push(`- ${n}`);
  const notes = new Set();
  // Notes of the first successful round of each variant (later rounds say the same).
  for (const [id, r] of results) for (const n of r.rounds.find((x) => !x.error)?.notes ?? []) notes.add(`${id}: ${n}`);
  for (const n of notes) L.push(`- ${n}`);
  return { text: L.join('\n'), summary };
}
