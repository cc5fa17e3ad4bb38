// multiproc: Python's multiprocessing for Node.js. The Python-style layer.
export * from './errors';
export { Connection, Pipe, waitFor, waitForSync, Listener, Client } from './connection';
export type { ConnectionOptions, Waitable, Address, Family, ListenerOptions, ClientOptions } from './connection';
export { reduceHandle, registerRebuilder } from './reduction';
export type { Reducible, Reduced, ReduceContext, RebuildContext } from './reduction';
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
