// The 'spawn' start method: a fresh Node process (CPython's popen_spawn_posix). It runs
// dist/popen/spawn_main.js, reads its start message from fd 3 (a socketpair, so Connections among
// the args travel as SCM_RIGHTS), imports the parent's main module and runs the target by
// reference. Started with posix_spawn(), which is safe from any process (threads, Workers):
// spawn needs no fork-safety.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { invalidArgType } from '../errors';
import { libraryDir } from '../function_ref';
import { native } from '../native';
import { ensureRunning, lifelineFd } from '../resource_tracker';
import { PidPopen, havePidfd } from './pid';
import { WinSpawnPopen } from './spawn_win';
import { childExecArgv, prepareStart, type StartMessage } from './start';
import type { Popen, ProcessObject } from './types';

let executable = process.execPath;

/** The Node binary spawn and forkserver children run (CPython's set_executable). */
export function setExecutable(file: string): void {
  if (typeof file !== 'string' || file === '') throw invalidArgType('file', 'a non-empty string', file);
  executable = file;
}

export function getExecutable(): string {
  return executable;
}

/** Child-side fd numbers (the parent maps its descriptors onto them). */
export const CHILD_FD = { start: 3, sentinel: 4, lifeline: 5 } as const;

/** Sends the start message as two frames: the JSON header, then the encoded args with their fds. */
export function sendStart(fd: number, msg: StartMessage): void {
  native.setBlocking(fd, true);
  native.sendFrame(fd, true, [Buffer.from(JSON.stringify(msg.header))]);
  native.sendFrame(fd, true, [msg.body], msg.fds);
}

/** Spawns a Node process running one of this library's entry scripts; fdMap as for spawnProgram. */
export function spawnNode(script: string, extraArgv: string[], fdMap: number[], extraExecArgv: string[] = []): number {
  const argv = [executable, ...childExecArgv(), ...extraExecArgv, path.join(libraryDir(), script), ...extraArgv];
  // stdin is /dev/null, as in every Process child (CPython closes it too); stdout/stderr are
  // shared, and must be mapped explicitly: Node marks its own stdio close-on-exec.
  const devnull = fs.openSync('/dev/null', 'r');
  try {
    return native.spawnProgram(executable, argv, [0, devnull, 1, 1, 2, 2, ...fdMap]);
  } finally {
    fs.closeSync(devnull);
  }
}

export class SpawnPopen extends PidPopen {
  readonly method = 'spawn';

  constructor(proc: ProcessObject) {
    const msg = prepareStart(proc, 'spawn'); // throws before anything is started
    const [mine, theirs] = native.socketpair();
    // Without pidfds: the child holds the only write end of a pipe; EOF means it ended.
    const pipe = havePidfd() ? null : native.pipe();
    const fdMap = [CHILD_FD.start, theirs];
    if (pipe !== null) fdMap.push(CHILD_FD.sentinel, pipe[1]);
    // The child shares this process's resource tracker (its lifeline), as CPython passes its fd:
    // objects one of them creates and the other unlinks are announced to the same tracker.
    ensureRunning();
    const lifeline = lifelineFd();
    if (lifeline >= 0) fdMap.push(CHILD_FD.lifeline, lifeline);
    let pid: number;
    try {
      pid = spawnNode('popen/spawn_main.js', [String(native.getpid()), lifeline >= 0 ? '1' : '0'], fdMap);
    } catch (e) {
      native.close(mine);
      if (pipe !== null) native.close(pipe[0]);
      throw e;
    } finally {
      native.close(theirs);
      if (pipe !== null) native.close(pipe[1]);
    }
    super(pid, pipe !== null ? pipe[0] : -1, proc.daemon);
    try {
      // Blocks only while the message exceeds the socket buffer: the child reads it at once.
      sendStart(mine, msg);
    } catch (e) {
      // The child died before reading (EPIPE): its exit code tells the rest.
      if ((e as NodeJS.ErrnoException).code !== 'EPIPE' && (e as NodeJS.ErrnoException).code !== 'ECONNRESET') throw e;
    } finally {
      native.close(mine);
    }
  }
}

let pipeTransport = process.platform === 'win32';
/** @internal Tests run the Windows transport on POSIX (it needs nothing Windows-only). */
export function usePipeTransport(on: boolean): void {
  pipeTransport = on || process.platform === 'win32';
}

export function spawnPopen(proc: ProcessObject): Popen {
  // The platform seam: Windows has no posix_spawn, pidfds or descriptor passing.
  return pipeTransport ? new WinSpawnPopen(proc, executable) : new SpawnPopen(proc);
}
