// What spawn and forkserver children start from (CPython's spawn.get_preparation_data +
// the pickled Process object, and spawn._main on the child side).
//
// The parent sends two frames: a plain JSON header (who the child is, the target by reference,
// the main module to import) and the encoded args, with the descriptors of any Connection among
// them as SCM_RIGHTS. The child imports the parent's main module first (with isMainProcess()
// false, so its guarded entry code does not run again), then decodes the args (handle types
// the main module registers are known by then), resolves the target and runs it.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';

import { bootstrap } from '../_bootstrap';
import { resolveFunctionRef } from '../function_ref';
import { native } from '../native';
import { Process, reportChildError } from '../process';
import { decodeMessage, encodeForChild } from '../reduction';
import { installFastExit } from './child';
import type { ChildInfo, ProcessObject } from './types';

export interface StartHeader extends ChildInfo {
  method: 'spawn' | 'forkserver';
  /** Absolute path of the parent's main module, to import before anything else (null: none). */
  main: string | null;
  cwd: string;
  /** The parent's process.argv after the script (user arguments). */
  argv: string[];
  /** The parent's default start method, which becomes the child's (as CPython's preparation data). */
  startMethod: string | null;
}

let defaultMethodOf: () => string | null = () => null;
let adoptMethod: (m: string) => void = () => {};
/** @internal context.ts tells how to read and set the default start method (no import cycle). */
export function setStartMethodHooks(get: () => string | null, set: (m: string) => void): void {
  defaultMethodOf = get;
  adoptMethod = set;
}

export interface StartMessage {
  header: StartHeader;
  /** The args, encoded by lib/reduction.ts. */
  body: Buffer;
  /** Descriptors the args refer to (the sender still owns them). */
  fds: number[];
}

let mainOverride: string | null | undefined;
/** @internal Which main module children import (null: none); undefined restores the default. */
export function setChildMainModule(file: string | null | undefined): void {
  mainOverride = file;
}

/**
 * The program's main module, if a child should import it: a file given to node on the command
 * line, not a tool's entry point inside node_modules (a test runner) and not -e/-p code.
 */
export function mainModulePath(): string | null {
  if (mainOverride !== undefined) return mainOverride;
  if (bootstrap.spawnedChild) return spawnedMain;
  const arg = process.argv[1];
  if (arg === undefined || process.execArgv.some((a) => /^(-e|-p|--eval|--print)(=|$)/.test(a))) return null;
  let file: string;
  try {
    file = fs.realpathSync(path.resolve(arg));
  } catch {
    return null;
  }
  if (file.split(path.sep).includes('node_modules')) return null;
  return file;
}

/** In a spawned child: the main module of the program it belongs to (grandchildren import it too). */
let spawnedMain: string | null = null;

/**
 * Node options a fresh child should run with: the parent's, minus those that cannot be shared
 * (an inspector port, code given with -e), and the multiproc bin's fork-time additions:
 * --single-threaded, --use-largepages (together ~60 ms of a fresh process's start-up) and its
 * preload.
 */
export function childExecArgv(): string[] {
  const out: string[] = [];
  const argv = process.execArgv;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a.startsWith('--use-largepages')) continue;
    // A fork-safety flag for a process that forks: a fresh child pays ~45 ms of start-up for it
    // (V8 compiles everything on the main thread). Its own children then use the forkserver,
    // which adds the flag where it matters (lib/popen/forkserver.ts).
    if (a === '--single-threaded') continue;
    // The bin's preload of this library: a fresh child loads the library first thing anyway.
    if ((a === '--require' || a === '-r') && /[\\/]dist[\\/]preload\.js$/.test(argv[i + 1] ?? '')) {
      i++;
      continue;
    }
    if (/^--(inspect|debug)/.test(a) || /^--(test|watch)/.test(a) || a === '--input-type' || a.startsWith('--input-type=')) {
      if (a === '--input-type') i++;
      continue;
    }
    if (a === '-e' || a === '-p' || a === '--eval' || a === '--print') {
      i++;
      continue;
    }
    if (/^(-e|-p|--eval|--print)=/.test(a)) continue;
    out.push(a);
  }
  return out;
}

/** Parent side: the header and encoded args for `proc` (throws if the target or an arg cannot travel). */
export function prepareStart(proc: ProcessObject, method: 'spawn' | 'forkserver', canPassFds = true): StartMessage {
  const header: StartHeader = {
    ...proc.childInfo(method),
    method,
    main: mainModulePath(),
    cwd: process.cwd(),
    argv: process.argv.slice(2),
    startMethod: defaultMethodOf(),
  };
  const fds: number[] = [];
  const body = encodeForChild(proc.args, canPassFds ? fds : null, method);
  return { header, body, fds };
}

/** Child side: import the main module, decode the args, run the target. Never returns normally. */
export async function runStart(msg: StartMessage, parentSentinel: number): Promise<void> {
  const { header } = msg;
  bootstrap.spawnedChild = true;
  // A forkserver child was forked: the fork path already ends it this way.
  if (header.method === 'spawn') installFastExit();
  // The guard idiom `import.meta.url === pathToFileURL(process.argv[1]).href` stays false: argv[1]
  // is this library's entry script. The user's own arguments follow, as in the parent.
  process.argv.splice(2, process.argv.length - 2, ...header.argv);
  if (header.startMethod !== null) adoptMethod(header.startMethod);
  spawnedMain = header.main;
  let target: ((...a: unknown[]) => unknown) | null = null;
  let args: readonly unknown[];
  try {
    try {
      process.chdir(header.cwd);
    } catch {
      // the parent's directory is gone: stay where we are
    }
    if (header.main !== null) {
      bootstrap.importingMain = true;
      try {
        await import(pathToFileURL(header.main).href);
      } finally {
        bootstrap.importingMain = false;
      }
    }
    const fds = msg.fds;
    args = decodeMessage(msg.body, new DataView(msg.body.buffer, msg.body.byteOffset, msg.body.byteLength), 0, msg.body.length, false, (i) => {
      const fd = fds[i];
      if (fd === undefined) throw new RangeError(`descriptor ${i} did not arrive`);
      return fd;
    }) as unknown[];
    if (header.target !== null) target = await resolveFunctionRef(header.target);
  } catch (err) {
    reportChildError(header.name, err);
    process.exit(1);
  }
  if (header.daemon) dieWithParent(header.parentPid, parentSentinel);
  await Process.runChild(header, target, args, parentSentinel);
}

/**
 * A daemon child dies with the process that started it, also when that process is SIGKILLed.
 * A forked child gets PR_SET_PDEATHSIG; a spawned or forkserver child watches its parent instead
 * (a dup of the sentinel: the event loop cannot watch one fd twice).
 */
function dieWithParent(parentPid: number, parentSentinel: number): void {
  const suicide = (): void => {
    process.kill(process.pid, 'SIGKILL');
  };
  if (parentSentinel >= 0) {
    new native.FdWatch(native.dup(parentSentinel), suicide).unref();
    return;
  }
  const t = setInterval(() => {
    try {
      process.kill(parentPid, 0);
    } catch {
      suicide();
    }
  }, 500);
  t.unref();
}
