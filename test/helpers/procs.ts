// Test helper: start forked children that are always reaped, even when a test fails.
import { afterEach } from 'vitest';
import { Process } from '../../lib/index';

const started: Process[] = [];

afterEach(async () => {
  for (const p of started.splice(0)) {
    if (p.exitCode === null) {
      try {
        p.kill();
      } catch {
        /* already gone */
      }
    }
    await p.join(5000);
  }
});

/** Forks a child running `target(...args)`; reaped after the test in any case. */
export function fork<A extends unknown[]>(target: (...args: A) => unknown, ...args: A): Process {
  // The trailing timer wakes the child's loop once the target is done. Until the fork branch's
  // "fall through after bootstrap" fix is in main, a child whose target finishes synchronously
  // can otherwise sleep in epoll forever. TODO: drop once main has it.
  const wrapped = async (...a: A): Promise<void> => {
    await target(...a);
    await new Promise((r) => setTimeout(r, 1));
  };
  const p = new Process({ target: wrapped as never, args });
  p.start();
  started.push(p);
  return p;
}

/** Waits for every child (bounded) and returns their exit codes. */
export async function joinAll(ps: Process[], timeout = 20_000): Promise<(number | null)[]> {
  for (const p of ps) await p.join(timeout);
  return ps.map((p) => p.exitCode);
}
