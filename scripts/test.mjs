#!/usr/bin/env node
// `npm test`: runs vitest, then fails the run if anything of ours outlived it — a shared-memory
// segment or semaphore in /dev/shm, or any process started by the suite (children, grandchildren,
// helper processes). Processes are recognised by a marker in their environment, which every
// descendant inherits, so a leak is caught even after it was reparented to init.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';

const MARK = 'MULTIPROC_TEST_RUN';
const id = randomUUID();

function shmEntries() {
  try {
    return fs.readdirSync('/dev/shm').filter((n) => n.startsWith('mp-') || n.startsWith('sem.mp-'));
  } catch {
    return [];
  }
}

function markedProcesses() {
  const found = [];
  let pids = [];
  try {
    pids = fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return found; // no procfs (macOS): the per-test checks still apply
  }
  for (const pid of pids) {
    try {
      const env = fs.readFileSync(`/proc/${pid}/environ`, 'latin1');
      if (env.includes(`${MARK}=${id}`)) {
        const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').replace(/\0/g, ' ').trim();
        found.push({ pid: Number(pid), cmd });
      }
    } catch {
      /* gone, or not ours to read */
    }
  }
  return found;
}

const before = new Set(shmEntries());
const vitestBin = new URL('../node_modules/vitest/vitest.mjs', import.meta.url);
const child = spawn(process.execPath, [vitestBin.pathname, 'run', ...process.argv.slice(2)], {
  stdio: 'inherit',
  env: { ...process.env, [MARK]: id },
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));

child.on('exit', async (code, signal) => {
  let status = code ?? 1;
  if (signal) status = 128 + 1;
  // Give exiting children a moment: a process that is already dying is not a leak.
  let leakedProcs = [];
  let leakedShm = [];
  for (let i = 0; i < 20; i++) {
    leakedProcs = markedProcesses();
    leakedShm = shmEntries().filter((n) => !before.has(n));
    if (leakedProcs.length === 0 && leakedShm.length === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  if (leakedProcs.length > 0) {
    console.error(`\nLEAK: ${leakedProcs.length} process(es) started by the test suite are still running:`);
    for (const p of leakedProcs) {
      console.error(`  ${p.pid} ${p.cmd}`);
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    status = status || 1;
  }
  if (leakedShm.length > 0) {
    console.error(`\nLEAK: the test suite left shared-memory objects in /dev/shm: ${leakedShm.join(', ')}`);
    for (const n of leakedShm) fs.rmSync(`/dev/shm/${n}`, { force: true });
    status = status || 1;
  }
  if (status === 0) console.log('leak check: no processes, segments or semaphores left behind');
  process.exit(status);
});
