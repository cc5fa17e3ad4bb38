// Runs every benchmark (process, sync, ipc, pool), each as its own child process, and prints
// their tables. Options are passed through to each bench (see bench/lib/harness.mjs):
//   npm run bench -- --quick                  smoke run
//   npm run bench -- --json all.json          also write every raw sample, one file
//   npm run bench -- --only process,ipc       a subset
import { spawnSync, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = path.dirname(fileURLToPath(import.meta.url));
const ALL = ['process', 'sync', 'ipc', 'pool'];

const argv = process.argv.slice(2);
let only = ALL;
let json = null;
const pass = [];
for (let i = 0; i < argv.length; i++) {
  const [name, inline] = argv[i].split(/=(.*)/s);
  if (name === '--only') only = (inline ?? argv[++i]).split(',');
  else if (name === '--json') json = inline ?? argv[++i];
  else pass.push(argv[i]);
}
for (const b of only) if (!ALL.includes(b)) throw new Error(`unknown bench ${b} (have ${ALL.join(', ')})`);

let py = 'python3 missing';
try {
  py = execFileSync(process.env.PYTHON || 'python3', ['--version'], { encoding: 'utf8' }).trim();
} catch {}
process.stdout.write(
  `# multiproc benchmarks — ${new Date().toISOString()}\n` +
    `Node ${process.version}, ${py}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), ${os.type()} ${os.release()}, load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}\n\n`,
);

const merged = {};
let failed = false;
for (const b of only) {
  const out = json ? path.join(os.tmpdir(), `mp-bench-run-${process.pid}-${b}.json`) : null;
  const r = spawnSync(process.execPath, [path.join(dir, `${b}.mjs`), ...pass, ...(out ? ['--json', out] : [])], { stdio: 'inherit' });
  if (r.status !== 0) {
    failed = true;
    process.stdout.write(`\n(bench ${b} failed: ${r.signal ?? 'exit code ' + r.status})\n`);
  }
  if (out && fs.existsSync(out)) {
    merged[b] = JSON.parse(fs.readFileSync(out, 'utf8'));
    fs.rmSync(out);
  }
  process.stdout.write('\n');
}
if (json) fs.writeFileSync(json, JSON.stringify(merged, null, 1));
process.exitCode = failed ? 1 : 0;
