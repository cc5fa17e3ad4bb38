// Where this process is in its life as a spawn/forkserver child (CPython's `_inheriting` and
// `__mp_main__`). Kept apart so process.ts and context.ts can both read it without a cycle.
import { RuntimeError } from './errors';

export const bootstrap = {
  /** A spawn/forkserver child (or the forkserver) is importing the parent's main module. */
  importingMain: false,
  /** This process was started by spawn or forkserver: the main module is not the program's entry. */
  spawnedChild: false,
};

export function assertNotBootstrapping(): void {
  if (!bootstrap.importingMain) return;
  throw new RuntimeError(
    'An attempt has been made to start a new process before the current process has finished ' +
      'its bootstrapping phase. This probably means that the main module starts processes at its ' +
      "top level and the 'spawn' or 'forkserver' start method re-imported it in a child. Guard the " +
      "program's entry code:\n\n" +
      "    import { isMainProcess } from 'multiproc';\n" +
      '    if (isMainProcess()) {\n' +
      '      // start processes here\n' +
      '    }\n\n' +
      "(or `if (import.meta.url === pathToFileURL(process.argv[1]).href)` in an ES module, " +
      '`if (require.main === module)` in CommonJS).',
    { code: 'ERR_MP_BOOTSTRAPPING' },
  );
}
