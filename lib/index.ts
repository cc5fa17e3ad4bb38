// multiproc: Python's multiprocessing for Node.js. The Python-style layer.
export * from './errors';
export { Process, ParentProcess, currentProcess, parentProcess, activeChildren, cpuCount } from './process';
export type { ProcessOptions } from './process';
export {
  BaseContext,
  Context,
  DefaultContext,
  getContext,
  setStartMethod,
  getStartMethod,
  getAllStartMethods,
  isForkSafe,
  isMainProcess,
} from './context';
export type { StartMethod } from './context';
