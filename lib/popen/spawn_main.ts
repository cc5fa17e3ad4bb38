// Entry point of a 'spawn' child: `node spawn_main.js <parentPid> <hasLifeline>`, with the start
// socket as fd 3 (CPython's spawn.spawn_main). Reads the start message, then lib/popen/start.ts
// does the rest. The process exits like any Node program: when the target is done and nothing
// it started remains, with process.exit(n), or with 1 on an uncaught error.
import '../index';
import { native } from '../native';
import { adoptLifeline } from '../resource_tracker';
import { openParentSentinel } from './pid';
import { CHILD_FD } from './spawn';
import { runStart, type StartHeader } from './start';

function readFrame(reader: InstanceType<typeof native.FrameReader>): Buffer {
  const r = reader.readSync(-1);
  if (!Buffer.isBuffer(r)) {
    // The parent died or closed the socket before sending everything: nothing to run.
    process.stderr.write('multiproc spawn child: the parent went away before sending the start message\n');
    process.exit(1);
  }
  return r;
}

function main(): void {
  const parentPid = Number(process.argv[2]);
  if (process.argv[3] === '1') adoptLifeline(CHILD_FD.lifeline);
  const reader = new native.FrameReader(CHILD_FD.start, true);
  const header = JSON.parse(readFrame(reader).toString()) as StartHeader;
  const body = readFrame(reader);
  const fds = reader.takeFds();
  reader.dispose();
  native.close(CHILD_FD.start);
  const parentSentinel = openParentSentinel(parentPid);
  void runStart({ header, body, fds }, parentSentinel);
}

main();
