// Internal: small blocks of shared memory for locks, Values and Arrays (CPython's
// multiprocessing.heap).
//
// Blocks are carved out of named "arena" segments (64 KiB, bump-allocated, 64-byte aligned); a
// block larger than 8 KiB gets a segment of its own. Every block is identified by (segment name,
// offset, size), so another process can map the same bytes by name (attachBlock): that is what a
// handle's reduce() description carries. Blocks are never reused: an object handed to another
// process may outlive every reference here, and a reused block would silently alias it. Arenas are
// unlinked when their creator exits (resource tracker); mappings stay valid in every process that
// has them.
//
// fork(): a child inherits the parent's current arena with its bump pointer; allocating from it
// would hand the child and the parent the same bytes. An arena belongs to the pid that created it;
// a child starts its own.
import { createSegment, attachSegment } from './shared_memory';

export interface BlockRef {
  readonly segment: string;
  readonly offset: number;
  readonly size: number;
}

export interface Block extends BlockRef {
  readonly sab: SharedArrayBuffer;
}

const ARENA_SIZE = 64 * 1024;
const LARGE = 8 * 1024;

interface Arena {
  pid: number;
  name: string;
  sab: SharedArrayBuffer;
  used: number;
}

let arena: Arena | undefined;
// Segments this process has mapped, by name: attachBlock maps each segment once.
const mapped = new Map<string, WeakRef<SharedArrayBuffer>>();

/**
 * Allocates `size` zero-filled bytes of shared memory, in cache lines of their own (64-byte
 * aligned and padded): two locks, or a lock and a Value, used by different processes on
 * different cores must not share a line (false sharing halves a queue's rate here).
 */
export function allocate(size: number): Block {
  const bytes = Math.max(64, Math.ceil(size / 64) * 64);
  if (bytes > LARGE) {
    const seg = createSegment(bytes);
    mapped.set(seg.name, new WeakRef(seg.sab));
    return { segment: seg.name, offset: 0, size, sab: seg.sab };
  }
  if (arena === undefined || arena.pid !== process.pid || arena.used + bytes > ARENA_SIZE) {
    const seg = createSegment(ARENA_SIZE);
    mapped.set(seg.name, new WeakRef(seg.sab));
    arena = { pid: process.pid, name: seg.name, sab: seg.sab, used: 0 };
  }
  const offset = arena.used;
  arena.used += bytes;
  return { segment: arena.name, offset, size, sab: arena.sab };
}

/** Maps the block another process allocated (by segment name). ENOENT once its creator is gone. */
export function attachBlock(ref: BlockRef): Block {
  let sab = mapped.get(ref.segment)?.deref();
  if (sab === undefined) {
    sab = attachSegment(ref.segment, ref.offset + ref.size).sab;
    mapped.set(ref.segment, new WeakRef(sab));
  }
  if (ref.offset + ref.size > sab.byteLength) throw new RangeError('block outside its segment');
  return { segment: ref.segment, offset: ref.offset, size: ref.size, sab };
}

/** The serialisable part of a block. */
export function blockRef(b: Block): BlockRef {
  return { segment: b.segment, offset: b.offset, size: b.size };
}
