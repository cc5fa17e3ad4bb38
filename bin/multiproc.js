#!/usr/bin/env node
'use strict';
// npx multiproc [node-options] app.js [args...]
//
// Runs a script with Node in fork-safe mode: V8 single-threaded (DESIGN.md fact 3: a Node
// process forks reliably only without V8's background threads). Node options before the
// script are passed through; arguments after it go to the script; the exit code (or the
// signal that killed it) is passed back to the caller.
const { spawn } = require('node:child_process');
const path = require('node:path');
const fs = require('node:fs');

const argv = process.argv.slice(2);
if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h') {
  process.stdout.write(
    'usage: multiproc [node-options] <script> [args...]\n\n' +
      'Runs <script> with node --single-threaded so that multiproc can use the fork start method.\n',
  );
  process.exit(argv.length === 0 ? 2 : 0);
}

let i = 0;
const nodeOptions = [];
// Node options that take a separate value argument.
const withValue = new Set(['-r', '--require', '--import', '--loader', '--experimental-loader', '--conditions', '-C', '--input-type', '--env-file']);
while (i < argv.length && argv[i].startsWith('-')) {
  const opt = argv[i++];
  nodeOptions.push(opt);
  if (withValue.has(opt) && i < argv.length) nodeOptions.push(argv[i++]);
}
if (i >= argv.length) {
  process.stderr.write('multiproc: no script given\n');
  process.exit(2);
}
const script = argv[i];
const scriptArgs = argv.slice(i + 1);

const flags = ['--single-threaded'];
// Node's code in anonymous huge pages instead of a file mapping: fork() copies the page tables
// of anonymous memory but not those of file mappings, so without this every forked child takes
// a page fault for each 64 KB of Node's code it runs (~140 per trivial Process child, about a
// third of its faults; measured in bench/process.mjs). 'silent': a no-op where unsupported.
if (process.platform === 'linux' && !nodeOptions.some((o) => o.startsWith('--use-largepages'))) {
  flags.push('--use-largepages=silent');
}
// The preload installs the library's fork bookkeeping before any user code runs, so that even
// timers the script creates before importing multiproc stay quiet in forked children.
const preload = path.join(__dirname, '..', 'dist', 'preload.js');
if (fs.existsSync(preload)) flags.push('--require', preload);

const child = spawn(process.execPath, [...flags, ...nodeOptions, script, ...scriptArgs], { stdio: 'inherit' });

// Forward the signals a terminal or supervisor sends; the child decides what they mean.
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2']) {
  process.on(sig, () => {
    try {
      child.kill(sig);
    } catch {
      /* already gone */
    }
  });
}

child.on('error', (err) => {
  process.stderr.write(`multiproc: cannot start node: ${err.message}\n`);
  process.exit(127);
});
child.on('exit', (code, signal) => {
  if (signal) {
    // Die of the same signal, so our caller sees what the script saw.
    process.removeAllListeners(signal);
    process.kill(process.pid, signal);
    return;
  }
  process.exit(code ?? 1);
});
