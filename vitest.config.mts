import { defineConfig } from 'vitest/config';

// Native addons and fork() do not belong in worker threads: every test file runs in a forked
// Node process, started fork-safe (--single-threaded) so the tests can fork it again.
export default defineConfig({
  test: {
    pool: 'forks',
    execArgv: ['--single-threaded'],
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    teardownTimeout: 10_000,
  },
});
