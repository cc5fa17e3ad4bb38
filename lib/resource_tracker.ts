// The resource tracker (CPython's multiprocessing.resource_tracker): named kernel objects this
// library creates (shared-memory segments, named semaphores) never outlive their creator.
//
// - A creator unlinks what it created when it unlinks/closes it explicitly, or at the latest when
//   it exits normally (an 'exit' listener, per process: a forked child installs its own).
// - For a creator that cannot clean up (SIGKILL, a crash), a separate tracker process holds the
//   read end of a "lifeline" pipe whose write end only the creator (and its forked children, which
//   inherit it, as in CPython) hold. Every name is announced on the pipe before the object is
//   created, and withdrawn after it is unlinked. When the last writer dies the tracker reads EOF,
//   unlinks whatever is still announced, and exits.
// The tracker is started lazily on the first named object, in its own session (a terminal's ^C
// or a kill of the creator's process group does not reach it), ignoring SIGINT/SIGTERM, never
// keeping its creator alive. On Linux it is a forked child running a small C loop
// (native/posix/tracker.cc): ~1 ms to start, where a fresh Node took 60-80 ms of CPU from the
// program that had just created its first queue or segment. Elsewhere it is a Node process
// (TRACKER_SOURCE below). Lines are shorter than PIPE_BUF, so writes from several forked
// processes never interleave.
import * as fs from 'node:fs';
import * as os from 'node:os';
import { native, nativePath } from './native';

export type ResourceType = 'shared_memory' | 'semaphore';

// The Node tracker's whole program (where native/posix/tracker.cc is not built). It gets the
// addon path as argv[1] (to call shm_unlink/sem_unlink) and falls back to removing the /dev/shm
// entries (Linux's implementation of both).
const TRACKER_SOURCE = `
'use strict';
process.title = 'multiproc-resource-tracker';
process.on('SIGINT', () => {});
process.on('SIGTERM', () => {});
const fs = require('fs');
const live = new Map();
let buf = '';
function handle(line) {
  const [cmd, type, enc] = line.split('\\t');
  if (enc === undefined) return;
  const key = type + '\\t' + enc;
  if (cmd === 'R') live.set(key, [type, decodeURIComponent(enc)]);
  else if (cmd === 'U') live.delete(key);
}
function cleanup() {
  let addon = null;
  if (live.size > 0) {
    try { addon = require(process.argv[1]); } catch {}
    process.stderr.write('multiproc resource_tracker: cleaning up ' + live.size + ' leaked object(s): ' +
      [...live.values()].map((v) => v[1]).join(', ') + '\\n');
  }
  for (const [type, name] of live.values()) {
    try {
      if (addon && type === 'shared_memory') addon.shmUnlink(name);
      else if (addon && type === 'semaphore') addon.semUnlink(name);
      else fs.unlinkSync('/dev/shm/' + (type === 'semaphore' ? 'sem.' : '') + name.slice(1));
    } catch {}
  }
  process.exit(0);
}
const chunk = Buffer.alloc(4096);
function pump() {
  fs.read(0, chunk, 0, chunk.length, null, (err, n) => {
    if (err) { if (err.code === 'EAGAIN' || err.code === 'EINTR') return setTimeout(pump, 10); return cleanup(); }
    if (n === 0) return cleanup();
    buf += chunk.toString('latin1', 0, n);
    let i;
    while ((i = buf.indexOf('\\n')) >= 0) { handle(buf.slice(0, i)); buf = buf.slice(i + 1); }
    pump();
  });
}
pump();
`;

interface TrackerState {
  pid: number; // the process that spawned it (informational)
  trackerPid: number | undefined;
  fd: number; // write end of the lifeline
}

let tracker: TrackerState | undefined;
// Names created by some process of this lineage, with the pid of the creator: a forked child sees
// its parent's entries but only cleans up its own.
const created = new Map<string, { type: ResourceType; name: string; pid: number }>();
const exitHookFor = new Set<number>();

function key(type: ResourceType, name: string): string {
  return `${type}\t${name}`;
}

function startTracker(): TrackerState {
  const [r, w] = native.lifelinePipe();
  try {
    if (native.startTracker !== undefined) return { pid: process.pid, trackerPid: native.startTracker(r), fd: w };
    // node:child_process on first use: most processes never start a tracker themselves.
    const { spawn } = require('node:child_process') as typeof import('node:child_process');
    const child = spawn(process.execPath, ['-e', TRACKER_SOURCE, nativePath], {
      stdio: [r, 'ignore', 'inherit'],
      detached: true,
      // The tracker must not inherit the parent's Node options (a --require hook, an inspector).
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    child.unref();
    child.on('error', () => {});
    if (child.pid !== undefined) lowerPriority(child.pid);
    return { pid: process.pid, trackerPid: child.pid, fd: w };
  } catch (e) {
    native.closeFd(w);
    throw e;
  } finally {
    // The tracker has its own copy (its stdin); ours would keep it from ever seeing EOF.
    native.closeFd(r);
  }
}

/**
 * A Node tracker is a janitor: its start-up must not take a core from the program that just
 * created its first segment. Best effort: where it fails, the tracker runs at normal priority.
 */
function lowerPriority(pid: number): void {
  try {
    os.setPriority(pid, Math.min(19, os.getPriority() + 10));
  } catch {
    // not allowed here
  }
}

/** Starts the tracker if this process has none (forked children share their parent's). */
export function ensureRunning(): void {
  if (tracker === undefined) tracker = startTracker();
}

/** The lifeline's write end, for a spawned child to share this process's tracker (-1: none yet). */
export function lifelineFd(): number {
  return tracker?.fd ?? -1;
}

/** In a spawned child: use the tracker of the process that passed its lifeline (as fd `fd`). */
export function adoptLifeline(fd: number): void {
  if (tracker === undefined) tracker = { pid: process.pid, trackerPid: undefined, fd };
}

/** Pid of the tracker process serving this process, if one was started. */
export function trackerPid(): number | undefined {
  return tracker?.trackerPid;
}

function send(line: string): void {
  ensureRunning();
  const data = Buffer.from(line, 'latin1');
  try {
    fs.writeSync((tracker as TrackerState).fd, data);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPIPE') throw e;
    // The tracker is gone (killed by hand): start another and re-announce what is live.
    try {
      native.closeFd((tracker as TrackerState).fd);
    } catch {
      /* already closed */
    }
    tracker = startTracker();
    for (const c of created.values()) fs.writeSync(tracker.fd, Buffer.from(line_('R', c.type, c.name), 'latin1'));
    fs.writeSync(tracker.fd, data);
  }
}

function line_(cmd: 'R' | 'U', type: ResourceType, name: string): string {
  return `${cmd}\t${type}\t${encodeURIComponent(name)}\n`;
}

function onExit(): void {
  // Unlink what this process created and still owns (a normal exit: no warning, nothing left
  // for the tracker). Forked children have their own listener and only see their own entries.
  const me = process.pid;
  for (const [k, c] of created) {
    if (c.pid !== me) continue;
    try {
      if (c.type === 'shared_memory') native.shmUnlink(c.name);
      else native.semUnlink(c.name);
    } catch {
      /* already gone */
    }
    created.delete(k);
    try {
      send(line_('U', c.type, c.name));
    } catch {
      /* tracker gone: nothing to withdraw */
    }
  }
}

/**
 * Announces a name this process is about to create: from now on it is unlinked when this
 * process exits, or by the tracker if it dies first. Call before creating the object.
 */
export function register(name: string, type: ResourceType): void {
  send(line_('R', type, name));
  created.set(key(type, name), { type, name, pid: process.pid });
  if (!exitHookFor.has(process.pid)) {
    exitHookFor.add(process.pid);
    process.on('exit', onExit);
  }
}

/** Withdraws a name after its object was unlinked (or handed over to someone else). */
export function unregister(name: string, type: ResourceType): void {
  if (!created.delete(key(type, name))) return;
  send(line_('U', type, name));
}

/**
 * Announces a name that belongs to the whole lineage rather than to this process (a queue's
 * side-channel item, which outlives its producer until a consumer takes it): nobody unlinks it
 * at exit; the tracker does once every process sharing it is gone, unless it was withdrawn.
 */
export function announce(name: string, type: ResourceType): void {
  send(line_('R', type, name));
}

/** Withdraws an announced name (its object was unlinked, by whichever process). */
export function withdraw(name: string, type: ResourceType): void {
  send(line_('U', type, name));
}

/** Is `name` tracked for cleanup by this process lineage? (tests) */
export function isTracked(name: string, type: ResourceType): boolean {
  return created.has(key(type, name));
}
