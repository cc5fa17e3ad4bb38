// The 'forkserver' start method (CPython's popen_forkserver + forkserver). One helper Node
// process per parent, started fresh with posix_spawn and --single-threaded (no Workers, no user
// handles: the cleanest process to fork from), imports the parent's main module and the
// modules named by setForkserverPreload(), then forks a child for each request on a Unix socket.
//
// Per child, the parent connects to the server and sends the start message (lib/popen/start.ts,
// fds as SCM_RIGHTS); the server forks, answers {pid}, and later {code} when the child ended
// (the server reaps its children). That connection is the Popen's sentinel: readable when the
// exit code arrives, or at EOF if the server died (exit code 255, as CPython).
//
// The server dies with its parent: it watches the parent's pidfd (a pipe's EOF where there are
// no pidfds would be held open by forked children), and the parent SIGTERMs it at exit after
// its own children were joined.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { invalidArgType, ProcessError } from '../errors';
import { native, type NativeFrameReader } from '../native';
import { ensureRunning, lifelineFd } from '../resource_tracker';
import { PidPopen, SentinelPopen } from './pid';
import { CHILD_FD, sendStart, spawnNode } from './spawn';
import { mainModulePath, prepareStart } from './start';
import type { Popen, ProcessObject } from './types';

let preload: string[] = [];

/** Modules the forkserver imports before forking children (CPython's set_forkserver_preload). */
export function setForkserverPreload(modules: readonly string[]): void {
  if (!Array.isArray(modules) || !modules.every((m) => typeof m === 'string')) {
    throw invalidArgType('modules', 'an array of strings', modules);
  }
  preload = modules.map((m) => (m.startsWith('.') || path.isAbsolute(m) ? path.resolve(m) : m));
}

export interface ServerConfig {
  preload: string[];
  main: string | null;
  /** The parent's arguments after its script: the main module sees them when the server imports it. */
  argv: string[];
  lifeline: boolean;
}

/** The server process, as this process's child (reaped; never keeps the event loop alive). */
class ServerPopen extends PidPopen {
  readonly method = 'forkserver-server';
}

interface Server {
  popen: ServerPopen;
  dir: string;
  address: string;
  pid: number;
  owner: number;
}

let server: Server | null = null;

function stopServer(): void {
  const s = server;
  server = null;
  if (s === null || s.owner !== process.pid) return;
  s.popen.terminate();
  s.popen.waitSync(1000);
  s.popen.close();
  fs.rmSync(s.dir, { recursive: true, force: true });
}

function ensureServer(): Server {
  // A forked child inherits the variable, not the server's parenthood: it starts its own.
  if (server !== null && server.owner === process.pid && server.popen.poll() === null) return server;
  if (server !== null && server.owner === process.pid) stopServer();
  // The children share this process's resource tracker, which must therefore exist first.
  ensureRunning();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-forkserver-'));
  const address = path.join(dir, 's');
  const listen = native.socketListen('AF_UNIX', address, 0, 128).fd;
  const config: ServerConfig = { preload, main: mainModulePath(), argv: process.argv.slice(2), lifeline: lifelineFd() >= 0 };
  const fdMap = [CHILD_FD.start, listen];
  if (config.lifeline) fdMap.push(CHILD_FD.lifeline, lifelineFd());
  let pid: number;
  try {
    pid = spawnNode('popen/forkserver_main.js', [String(native.getpid()), JSON.stringify(config)], fdMap, ['--single-threaded']);
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  } finally {
    native.close(listen); // the server has its own copy
  }
  const popen = new ServerPopen(pid, -1, true);
  popen.setRef(false);
  if (server === null) process.on('exit', stopServer); // after process.ts's join of the children
  server = { popen, dir, address, pid, owner: process.pid };
  return server;
}

/** The forkserver's pid, once one runs for this process (tests). */
export function forkserverPid(): number | undefined {
  return server !== null && server.owner === process.pid ? server.pid : undefined;
}

function connect(address: string): number {
  for (let attempt = 0; ; attempt++) {
    try {
      const [fd, inProgress] = native.socketConnect('AF_UNIX', address, 0);
      if (inProgress) native.waitReadable(-1, 0);
      return fd;
    } catch (e) {
      // A full backlog (EAGAIN): retry for a while, as a blocking connect would wait.
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN' && attempt < 500) {
        native.waitReadable(-1, 10);
        continue;
      }
      throw e;
    }
  }
}

const SERVER_TIMEOUT_MS = 60_000;

/** Connects, sends the start message and reads the child's pid (or the server's refusal). */
function requestChild(msg: ReturnType<typeof prepareStart>): { fd: number; reader: NativeFrameReader; pid: number } {
  const s = ensureServer();
  const fd = connect(s.address);
  const reader = new native.FrameReader(fd, true);
  try {
    sendStart(fd, msg);
    // The first request waits for the server to start (~50 ms); later ones for one fork.
    const r = reader.readSync(SERVER_TIMEOUT_MS);
    if (!Buffer.isBuffer(r)) throw new ProcessError('the forkserver did not start the process (it died or timed out)', { code: 'ERR_MP_FORKSERVER' });
    const reply = JSON.parse(r.toString()) as { pid?: number; error?: string };
    if (typeof reply.pid !== 'number') throw new ProcessError(`the forkserver could not start the process: ${reply.error}`, { code: 'ERR_MP_FORKSERVER' });
    native.setBlocking(fd, false);
    return { fd, reader, pid: reply.pid };
  } catch (e) {
    reader.dispose();
    native.close(fd);
    throw e;
  }
}

/** A child of the forkserver: its connection to the server is the sentinel and brings the exit code. */
export class ForkserverPopen extends SentinelPopen {
  readonly method = 'forkserver';
  readonly pid: number;
  #reader: NativeFrameReader;

  constructor(proc: ProcessObject) {
    const msg = prepareStart(proc, 'forkserver'); // throws before anything is started
    const { fd, reader, pid } = requestChild(msg);
    super(fd, proc.daemon);
    this.pid = pid;
    this.#reader = reader;
  }

  protected collect(): number | null {
    const r = this.#reader.tryRead();
    if (r === null) return null;
    if (Buffer.isBuffer(r)) return (JSON.parse(r.toString()) as { code: number }).code;
    return 255; // EOF: the server died without telling (CPython's forkserver says 255 too)
  }

  protected override closeSentinel(): void {
    this.#reader.dispose();
    super.closeSentinel();
  }
}

export function forkserverPopen(proc: ProcessObject): Popen {
  return new ForkserverPopen(proc);
}
