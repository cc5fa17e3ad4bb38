// The 'spawn' start method on Windows (the platform seam: POSIX uses lib/popen/spawn.ts). No
// posix_spawn, pidfds or SCM_RIGHTS there: the child is started by libuv (child_process) with
// the start message on an extra pipe (its fd 3), and watched through the ChildProcess. Args
// travel by v8.serialize and by name; a Connection cannot (ERR_MP_CANNOT_PASS_FD).
//
// Not run here (nobody can test Windows on this machine); kept small on purpose. The frames are
// CPython's (4-byte big-endian length, then the body), as on POSIX.
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { libraryDir } from '../function_ref';
import { native } from '../native';
import { prepareStart, childExecArgv } from './start';
import type { Popen, ProcessObject } from './types';

function frame(body: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head.writeInt32BE(body.length);
  return Buffer.concat([head, body]);
}

/** Child side: reads one frame from a blocking fd (fd 3 of a spawn child on Windows). */
export function readFrameSync(fd: number): Buffer | null {
  const readExactly = (n: number): Buffer | null => {
    const b = Buffer.alloc(n);
    let got = 0;
    while (got < n) {
      const r = fs.readSync(fd, b, got, n - got, null);
      if (r === 0) return null;
      got += r;
    }
    return b;
  };
  const head = readExactly(4);
  if (head === null) return null;
  return readExactly(head.readInt32BE(0));
}

export class WinSpawnPopen implements Popen {
  readonly method = 'spawn';
  readonly pid: number;
  /** No pollable descriptor on Windows: waitFor() takes the Process's join() instead. */
  readonly sentinel = -1;
  #child: ChildProcess;
  #returncode: number | null = null;

  constructor(proc: ProcessObject, executable: string) {
    const msg = prepareStart(proc, 'spawn', false); // a Connection among the args: ERR_MP_CANNOT_PASS_FD
    const argv = [...childExecArgv(), path.join(libraryDir(), 'popen', 'spawn_main.js'), String(process.pid), '0', 'pipe'];
    const { spawn } = require('node:child_process') as typeof import('node:child_process'); // loaded on Windows only
    this.#child = spawn(executable, argv, { stdio: ['ignore', 'inherit', 'inherit', 'pipe'], windowsHide: true });
    if (this.#child.pid === undefined) throw new Error(`could not start ${executable}`);
    this.pid = this.#child.pid;
    this.#child.on('exit', (code, signal) => {
      this.#returncode = code ?? (signal !== null ? -15 : 1);
    });
    const pipe = this.#child.stdio[3] as NodeJS.WritableStream;
    pipe.write(frame(Buffer.from(JSON.stringify(msg.header))));
    pipe.end(frame(msg.body));
    if (proc.daemon) this.#child.unref();
  }

  poll(): number | null {
    return this.#returncode;
  }

  wait(timeoutMs?: number): Promise<number | null> {
    if (this.#returncode !== null) return Promise.resolve(this.#returncode);
    return new Promise((resolve) => {
      const timer = timeoutMs === undefined ? undefined : setTimeout(() => resolve(null), Math.max(0, timeoutMs));
      this.#child.once('exit', () => {
        if (timer !== undefined) clearTimeout(timer);
        resolve(this.#returncode);
      });
    });
  }

  waitSync(timeoutMs?: number): number | null {
    if (this.#returncode !== null) return this.#returncode;
    // libuv reports the exit on the event loop; a blocking wait asks Windows directly (any number
    // of handles may wait on a process there: no reaping race).
    const wait = (native as unknown as { waitProcess?: (pid: number, ms: number) => number | null }).waitProcess;
    if (wait === undefined) throw new Error("joinSync() needs the Windows addon's waitProcess");
    const code = wait(this.pid, timeoutMs === undefined ? -1 : Math.max(0, timeoutMs));
    if (code !== null) this.#returncode = code;
    return code;
  }

  setRef(ref: boolean): void {
    if (ref) this.#child.ref();
    else this.#child.unref();
  }

  terminate(): void {
    if (this.#returncode === null) this.#child.kill('SIGTERM');
  }

  kill(): void {
    if (this.#returncode === null) this.#child.kill('SIGKILL');
  }

  close(): void {
    this.#child.removeAllListeners('exit');
  }
}

