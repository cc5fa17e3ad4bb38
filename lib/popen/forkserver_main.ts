// Entry point of the forkserver: `node --single-threaded forkserver_main.js <parentPid> <config>`
// with the listening socket as fd 3 (and the resource tracker's lifeline as fd 5). See
// lib/popen/forkserver.ts for the protocol.
import { pathToFileURL } from 'node:url';

import '../index';
import { bootstrap } from '../_bootstrap';
import { native } from '../native';
import { adoptLifeline } from '../resource_tracker';
import { ForkPopen } from './fork';
import type { ServerConfig } from './forkserver';
import { openParentSentinel } from './pid';
import { CHILD_FD } from './spawn';
import { runStart, type StartHeader } from './start';

const parentPid = Number(process.argv[2]);
const config = JSON.parse(process.argv[3] as string) as ServerConfig;
// The main module sees the program's arguments (after this script), as in the parent.
process.argv.splice(2, process.argv.length - 2, ...config.argv);
process.title = 'multiproc-forkserver';
if (config.lifeline) adoptLifeline(CHILD_FD.lifeline);
bootstrap.spawnedChild = true;
// ^C in a terminal reaches the whole foreground group: the parent decides, the server follows it.
process.on('SIGINT', () => {});

/** Connections to parents still open here (a forked child closes them all). */
const open = new Set<number>();

function send(fd: number, v: unknown): void {
  try {
    native.sendFrame(fd, true, [Buffer.from(JSON.stringify(v))]);
  } catch {
    // the parent closed its end (it closed the Process): nothing to tell
  }
}

function serve(conn: number): void {
  open.add(conn);
  native.setBlocking(conn, true);
  const reader = new native.FrameReader(conn, true);
  let header: StartHeader;
  let body: Buffer;
  let fds: number[];
  try {
    // The client sends everything right after connecting; a stuck client is dropped.
    const h = reader.readSync(5000);
    const b = Buffer.isBuffer(h) ? reader.readSync(5000) : null;
    if (!Buffer.isBuffer(h) || !Buffer.isBuffer(b)) throw new Error('incomplete start message');
    header = JSON.parse(h.toString()) as StartHeader;
    body = b;
    fds = reader.takeFds();
  } catch (e) {
    send(conn, { error: (e as Error).message });
    reader.dispose();
    open.delete(conn);
    native.close(conn);
    return;
  }
  reader.dispose();
  let popen: ForkPopen;
  try {
    popen = new ForkPopen({
      daemon: header.daemon,
      args: [],
      entry: null, // the target is imported in the child, by reference
      bootstrapChild: (serverSentinel: number) => {
        // In the child: nothing of the server's is ours, and our parent is the requester.
        if (serverSentinel >= 0) native.close(serverSentinel);
        for (const fd of open) native.close(fd);
        native.close(CHILD_FD.start);
        return runStart({ header, body, fds }, openParentSentinel(header.parentPid, false));
      },
      childInfo: () => {
        throw new Error('unreachable');
      },
    });
  } catch (e) {
    for (const fd of fds) native.close(fd);
    send(conn, { error: (e as Error).message });
    open.delete(conn);
    native.close(conn);
    return;
  }
  for (const fd of fds) native.close(fd); // the child has them now
  send(conn, { pid: popen.pid });
  void popen.wait().then((code) => {
    send(conn, { code });
    popen.close();
    open.delete(conn);
    native.close(conn);
  });
}

async function main(): Promise<void> {
  // Die with the parent. Race: it may be gone already (then getppid() differs and we exit).
  const parentFd = openParentSentinel(parentPid);
  if (parentFd >= 0) {
    new native.FdWatch(parentFd, () => process.exit(0));
  } else {
    setInterval(() => {
      if (native.getppid() !== parentPid) process.exit(0);
    }, 200);
  }
  if (native.getppid() !== parentPid) process.exit(0);
  // Preload: the parent's main module (its guarded entry code does not run: isMainProcess() is
  // false) and the modules it named. A failure is reported and the server goes on: a child
  // that needs the module then fails with the error itself.
  const modules = [...(config.main !== null ? [config.main] : []), ...config.preload];
  for (const m of modules) {
    bootstrap.importingMain = m === config.main;
    try {
      await import(m.startsWith('/') ? pathToFileURL(m).href : m);
    } catch (e) {
      process.stderr.write(`multiproc forkserver: could not preload ${m}: ${(e as Error)?.stack ?? String(e)}\n`);
    } finally {
      bootstrap.importingMain = false;
    }
  }
  const listener = new native.Watcher(CHILD_FD.start, () => {
    for (;;) {
      const conn = native.socketAccept(CHILD_FD.start);
      if (conn < 0) return;
      serve(conn);
    }
  });
  listener.start(1);
}

void main();
