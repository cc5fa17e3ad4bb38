// May this process fork()? (DESIGN.md facts 2-3.) Three conditions, each seen to hang children
// when violated: V8 runs single-threaded, no worker_threads Worker is alive, and the V8 platform
// task queue was located so that the child can repair it.
import { syncBuiltinESMExports } from 'node:module';
// The real exports object (an `import * as` namespace would be a copy we could not patch).
import workerThreads = require('node:worker_threads');

import { MultiprocError } from './errors';
import { native } from './native';

let liveWorkers = 0;
let trackingInstalled = false;

/**
 * Counts live Workers by replacing `worker_threads.Worker` with a subclass that notes its start
 * and 'exit' (also for ESM importers, via syncBuiltinESMExports). A Worker class captured before
 * this library loaded is not counted; an idle one is still caught by the thread census below.
 */
export function installWorkerTracking(): void {
  if (trackingInstalled) return;
  trackingInstalled = true;
  const Original = workerThreads.Worker;
  class Worker extends Original {
    constructor(...args: ConstructorParameters<typeof Original>) {
      super(...args);
      liveWorkers++;
      this.once('exit', () => {
        liveWorkers--;
      });
    }
  }
  Object.defineProperty(Worker, 'name', { value: 'Worker' });
  try {
    (workerThreads as { Worker: typeof Original }).Worker = Worker;
    syncBuiltinESMExports();
  } catch {
    // A frozen module object: the census still applies.
  }
}

function singleThreaded(): boolean {
  if (process.execArgv.includes('--single-threaded')) return true;
  const opts = process.env.NODE_OPTIONS;
  return opts !== undefined && opts.split(/\s+/).includes('--single-threaded');
}

/** Why this process may not fork; empty when it may. */
export function forkUnsafeReasons(): string[] {
  const reasons: string[] = [];
  if (process.platform === 'win32') return ['fork() does not exist on Windows'];
  if (!singleThreaded()) {
    reasons.push('V8 is not single-threaded: start Node with --single-threaded (`npx multiproc app.js` does)');
  }
  const probe = native.forkProbe();
  if (liveWorkers > 0 || probe.loopThreads > 1) {
    const n = Math.max(liveWorkers, probe.loopThreads - 1);
    reasons.push(
      `${n} worker_threads Worker${n === 1 ? ' is' : 's are'} alive (or another thread runs its own event loop, ` +
        'like the inspector): stop them first (await worker.terminate())',
    );
  }
  if (!probe.queue) reasons.push(`the V8 platform repair is unavailable (${probe.queueProblem})`);
  return reasons;
}

/** May this process use the fork start method / posix.fork()? */
export function isForkSafe(): boolean {
  return forkUnsafeReasons().length === 0;
}

/** Throws ERR_MP_FORK_UNSAFE saying why and what to do, unless the process is fork-safe. */
export function assertForkSafe(): void {
  const reasons = forkUnsafeReasons();
  if (reasons.length === 0) return;
  throw new MultiprocError(
    `this process cannot fork safely: ${reasons.join('; ')}. ` +
      "Run the program with `npx multiproc app.js`, stop the Worker, or use the 'forkserver' start method " +
      "(setStartMethod('forkserver')).",
    'ERR_MP_FORK_UNSAFE',
  );
}
