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
  const p = new Process({ target: target as never, args });
  p.start();
  started.push(p);
  return p;
}

/** Waits for every child (bounded) and returns their exit codes. */
export async function joinAll(ps: Process[], timeout = 20_000): Promise<(number | null)[]> {
  for (const p of ps) await p.join(timeout);
  return ps.map((p) => p.exitCode);
}
