// multiproc: Python's multiprocessing for Node.js. The Python-style layer.
export * from './errors';
export { SharedMemory } from './shared_memory';
export type { SharedMemoryOptions } from './shared_memory';
export { Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier } from './synchronize';
export type { AcquireOptions, AsyncAcquireOptions, WaitOptions, BarrierOptions } from './synchronize';
export { Value, SharedArray as Array, RawValue, RawArray, SharedValue, SynchronizedValue, SynchronizedArray } from './sharedctypes';
export type { Typecode, ValueOf, TypedArrayOf, LockOption } from './sharedctypes';
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
  setExecutable,
  setForkserverPreload,
} from './context';
export { exportRef } from './function_ref';
export type { FunctionRef } from './function_ref';
export type { StartMethod } from './context';
export { Pool, AsyncResult, defaultChunksize } from './pool';
export type { PoolOptions, ApplyOptions, MapOptions, ImapOptions } from './pool';
export { ProcessPoolExecutor, Future, asCompleted, wait, FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED } from './executor';
export type { FutureState, ProcessPoolExecutorOptions, ExecutorMapOptions, ShutdownOptions, ReturnWhen } from './executor';
export { Queue, JoinableQueue, SimpleQueue } from './queues';
export type { PutOptions, GetOptions, QueueOptions } from './queues';
