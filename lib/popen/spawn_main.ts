// Entry point of a 'spawn' child (CPython's spawn.spawn_main):
//   node spawn_main.js <parentPid> <hasLifeline> [pipe]
// with the start socket as fd 3 (a plain pipe with 'pipe': Windows). Reads the start message,
// then lib/popen/start.ts does the rest. The process exits like any Node program: when the target is done and nothing
// it started remains, with process.exit(n), or with 1 on an uncaught error.
import '../index';
import { native } from '../native';
import { adoptLifeline } from '../resource_tracker';
import { openParentSentinel } from './pid';
import { CHILD_FD } from './spawn';
import { readFrameSync } from './spawn_win';
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

/** Windows (the platform seam): the start message arrives on a plain pipe, without descriptors. */
function mainPipe(): void {
  const header = readFrameSync(CHILD_FD.start);
  const body = header === null ? null : readFrameSync(CHILD_FD.start);
  if (header === null || body === null) {
    process.stderr.write('multiproc spawn child: the parent went away before sending the start message\n');
    process.exit(1);
  }
  void runStart({ header: JSON.parse(header.toString()) as StartHeader, body, fds: [] }, -1);
}

function main(): void {
  if (process.argv[4] === 'pipe') return mainPipe();
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
