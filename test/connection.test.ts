import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';


import { BufferTooShort, Connection, EOFError, Pipe, Process, ValueError, waitFor, waitForSync } from '../lib/index';
import { native } from '../lib/native';
import { ensureDist } from './helpers/dist';

// ---- cleanup: every Connection and child a test makes is closed/reaped, even on failure
const conns: Connection[] = [];
const children: ChildProcess[] = [];
const procs: Process[] = [];
function track<T extends Connection[]>(...c: T): T {
  conns.push(...c);
  return c;
}
afterEach(async () => {
  for (const c of conns.splice(0)) c.close();
  for (const ch of children.splice(0)) {
    if (ch.exitCode === null && ch.signalCode === null) {
      ch.kill('SIGKILL');
      await new Promise((r) => ch.once('exit', r));
    }
  }
  for (const p of procs.splice(0)) {
    if (p.isAlive()) p.kill();
    await p.join(5000);
  }
});

const DIST = path.join(ensureDist(), 'index.js');

/** Spawns `node -e script` with `fd` as its descriptor 3; the script gets `m` (multiproc) and `c` = Connection(3). */
function spawnWithFd(fd: number, script: string): ChildProcess {
  const code = `const m = require(${JSON.stringify(DIST)}); const c = new m.Connection(3); (async () => { ${script} })().catch((e) => { console.error(e); process.exit(1); });`;
  const ch = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'inherit', 'inherit', fd] });
  children.push(ch);
  return ch;
}

function exitOf(ch: ChildProcess): Promise<number | null> {
  if (ch.exitCode !== null) return Promise.resolve(ch.exitCode);
  return new Promise((r) => ch.once('exit', (code) => r(code)));
}

describe('Pipe and Connection in one process', () => {
  it('sends values of every kind (fast codec and v8.serialize) and keeps messages apart', async () => {
    const [a, b] = track(...Pipe());
    const values: unknown[] = [
      0, -0, 1.5, -7, 2 ** 40, NaN, 'x', 'héllo wörld ✓', '', true, false, null, undefined,
      [1, 'two', [3], { four: 4 }], { a: 1, nested: { b: [null] } }, Buffer.from('bytes'), new Uint8Array([1, 2, 3]),
      new Map([[1, { x: 2 }]]), new Set(['s']), new Date(5), 10n, /re/g, new Float64Array([1.25]),
      'long'.repeat(1000), Buffer.alloc(100_000, 7),
      // packed number arrays: int32 and float64 forms, the edges of int32, -0, NaN, Infinity
      [0, 1, -1, 2 ** 31 - 1, -(2 ** 31), 7, 8, 9],
      [0, 1, 2, 3, 4, 5, 6, -0],
      [1.5, NaN, Infinity, -Infinity, 2 ** 31, 2 ** 53, -1e-300, 0],
      Array.from({ length: 5000 }, (_, i) => i * 3 - 7000),
    ];
    for (const v of values) a.send(v);
    for (const v of values) expect(b.recvSync()).toStrictEqual(v);
    // -0 survives inside a packed array; a holey array keeps its holes (general path)
    a.send([1, 2, 3, 4, 5, 6, 7, -0]);
    expect(Object.is((b.recvSync() as number[])[7], -0)).toBe(true);
    // eslint-disable-next-line no-sparse-arrays
    const holey = [1, , 3, 4, 5, 6, 7, 8, 9];
    a.send(holey);
    const h = b.recvSync() as number[];
    expect(1 in h).toBe(false);
    expect(h).toStrictEqual(holey);
    expect(Object.is(b.recvSync.length, 0)).toBe(true);
    // shared references and cycles survive (v8 path)
    const shared = { s: 1 };
    const cyc: Record<string, unknown> = { shared, again: shared };
    cyc.self = cyc;
    a.send(cyc);
    const got = (await b.recv()) as Record<string, unknown>;
    expect(got.self).toBe(got);
    expect(got.shared).toBe(got.again);
  });

  it('async recv waits for a later send, in order, on the event loop', async () => {
    const [a, b] = track(...Pipe());
    const p1 = b.recv();
    const p2 = b.recvBytes();
    setTimeout(() => {
      a.send('first');
      a.sendBytes(Buffer.from('second'));
    }, 20);
    expect(await p1).toBe('first');
    expect((await p2).toString()).toBe('second');
  });

  it('poll reports readiness with and without timeout', async () => {
    const [a, b] = track(...Pipe());
    expect(b.pollSync()).toBe(false);
    expect(await b.poll()).toBe(false);
    const t0 = Date.now();
    expect(await b.poll(50)).toBe(false);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(45);
    setTimeout(() => a.send(1), 10);
    expect(await b.poll(5000)).toBe(true);
    expect(b.pollSync(0)).toBe(true);
    expect(b.recvSync()).toBe(1);
    expect(b.pollSync(30)).toBe(false);
  });

  it('sendBytes offset/size and recvBytesInto behave as CPython, with its errors', async () => {
    const [a, b] = track(...Pipe());
    const src = Buffer.from('0123456789');
    a.sendBytes(src, 2, 3);
    expect(b.recvBytesSync().toString()).toBe('234');
    a.sendBytes(src, 7);
    expect((await b.recvBytes()).toString()).toBe('789');
    a.sendBytes(new Uint16Array([0x4142]));
    expect(b.recvBytesSync().length).toBe(2);
    expect(() => a.sendBytes(src, -1)).toThrow(/offset is negative/);
    expect(() => a.sendBytes(src, 11)).toThrow(/buffer length < offset/);
    expect(() => a.sendBytes(src, 0, -1)).toThrow(/size is negative/);
    expect(() => a.sendBytes(src, 5, 6)).toThrow(/buffer length < offset \+ size/);
    expect(() => a.sendBytes('str' as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));

    a.sendBytes(Buffer.from('abcdef'));
    const into = Buffer.alloc(10, 0x2e);
    expect(await b.recvBytesInto(into, 2)).toBe(6);
    expect(into.toString()).toBe('..abcdef..');
    a.sendBytes(Buffer.from('xyz'));
    expect(b.recvBytesIntoSync(into, 7)).toBe(3);
    await expect(b.recvBytesInto(into, -1)).rejects.toThrow(/negative offset/);
    await expect(b.recvBytesInto(into, 11)).rejects.toThrow(/offset too large/);
    a.sendBytes(Buffer.from('too long message'));
    let err: unknown;
    try {
      b.recvBytesIntoSync(Buffer.alloc(4));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(BufferTooShort);
    expect((err as BufferTooShort).code).toBe('ERR_MP_BUFFER_TOO_SHORT');
    expect((err as BufferTooShort).data.toString()).toBe('too long message');
    // the stream is still in step
    a.send('next');
    expect(b.recvSync()).toBe('next');
  });

  it('maxLength: negative is a ValueError; too long leaves the message for a later read', async () => {
    const [a, b] = track(...Pipe());
    expect(() => b.recvBytesSync(-1)).toThrow(/negative maxlength/);
    a.sendBytes(Buffer.alloc(100));
    expect(() => b.recvBytesSync(10)).toThrow(expect.objectContaining({ code: 'ERR_MP_BAD_MESSAGE_LENGTH' }));
    expect((await b.recvBytes()).length).toBe(100);
    a.sendBytes(Buffer.alloc(5));
    expect((await b.recvBytes(5)).length).toBe(5);
  });

  it('EOFError when the peer closed, also for a pending async recv', async () => {
    const [a, b] = track(...Pipe());
    a.send('last');
    const pending = (async () => {
      expect(await b.recv()).toBe('last');
      return b.recv();
    })();
    setTimeout(() => a.close(), 10);
    await expect(pending).rejects.toBeInstanceOf(EOFError);
    expect(() => b.recvSync()).toThrow(EOFError);
    expect(b.pollSync()).toBe(true); // EOF is readable, as in CPython
  });

  it('one-way pipes reject the wrong direction with CPython messages; closed handles too', async () => {
    const [r, w] = track(...Pipe({ duplex: false }));
    expect(r.readable && !r.writable).toBe(true);
    expect(w.writable && !w.readable).toBe(true);
    expect(() => r.send(1)).toThrow(expect.objectContaining({ message: 'connection is read-only', code: 'ERR_MP_CONNECTION_READ_ONLY' }));
    expect(() => w.recvSync()).toThrow(expect.objectContaining({ message: 'connection is write-only' }));
    await expect(w.recv()).rejects.toThrow(ValueError);
    w.send({ ok: 1 });
    expect(await r.recv()).toEqual({ ok: 1 });
    const pending = r.recv();
    r.close();
    r.close(); // idempotent
    await expect(pending).rejects.toThrow('handle is closed');
    expect(r.closed).toBe(true);
    expect(() => r.fileno()).toThrow('handle is closed');
    expect(() => r.recvSync()).toThrow(expect.objectContaining({ code: 'ERR_MP_CONNECTION_CLOSED' }));
  });

  it('an unserializable value throws at send and leaves the connection usable', () => {
    const [a, b] = track(...Pipe());
    expect(() => a.send({ f: () => 1 })).toThrow(/could not be cloned/);
    a.send('fine');
    expect(b.recvSync()).toBe('fine');
    expect(b.pollSync()).toBe(false);
  });

  it('a Connection sent over a connection arrives usable (SCM_RIGHTS)', async () => {
    const [a, b] = track(...Pipe());
    const [x, y] = track(...Pipe());
    a.send({ conn: y, tag: 'handle' });
    const got = (await b.recv()) as { conn: Connection; tag: string };
    track(got.conn);
    expect(got.tag).toBe('handle');
    expect(got.conn).toBeInstanceOf(Connection);
    expect(got.conn.fileno()).not.toBe(y.fileno());
    y.close();
    got.conn.send('through the passed end');
    expect(x.recvSync()).toBe('through the passed end');
    // a one-way pipe cannot carry descriptors
    const [r, w] = track(...Pipe({ duplex: false }));
    expect(() => w.send(x)).toThrow(expect.objectContaining({ code: 'ERR_MP_CANNOT_PASS_FD' }));
    w.send('still usable');
    expect(r.recvSync()).toBe('still usable');
  });

  it('rejects bad arguments with stable codes', () => {
    expect(() => new Connection(-1)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => new Connection('3' as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    const [a] = track(...Pipe());
    expect(() => a.pollSync('x' as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
  });
});

describe('waitFor', () => {
  it('returns the ready connections and descriptors, [] on timeout', async () => {
    const [a, b] = track(...Pipe());
    const [c, d] = track(...Pipe());
    const [r, w] = native.pipe();
    try {
      expect(await waitFor([b, d, r], 30)).toEqual([]);
      expect(waitForSync([b, d, r], 0)).toEqual([]);
      setTimeout(() => c.send(1), 10);
      expect(await waitFor([b, d, r], 5000)).toEqual([d]);
      native.close(w);
      expect((await waitFor([b, d, r])).sort()).toEqual([d, r].sort());
      a.send(2);
      expect(waitForSync([b, d], 1000)).toEqual([b, d]);
      // a connection whose own poll() is watching it can be waited on too (private dup)
      const pend = b.poll(1000);
      expect(await waitFor([b], 1000)).toEqual([b]);
      expect(await pend).toBe(true);
      expect(b.recvSync()).toBe(2);
    } finally {
      native.close(r);
    }
  });
});

describe('across processes', () => {
  it('round trips with a spawned child given the descriptor (async and Sync forms)', async () => {
    const [mine, theirs] = native.socketpair();
    const ch = spawnWithFd(theirs, `
      for (;;) {
        let v;
        try { v = process.argv.length > 9 ? c.recvSync() : await c.recv(); } catch (e) { if (e instanceof m.EOFError) break; throw e; }
        c.send({ echo: v });
        const v2 = c.recvSync();
        c.send({ echo: v2 });
      }`);
    native.close(theirs);
    const [conn] = track(new Connection(mine));
    for (let i = 0; i < 50; i++) {
      conn.send(i);
      expect(await conn.recv()).toEqual({ echo: i });
      conn.send(`s${i}`);
      expect(conn.recvSync()).toEqual({ echo: `s${i}` });
    }
    conn.close();
    expect(await exitOf(ch)).toBe(0);
  });

  it('64 MiB messages cross intact in both directions; messages never merge', async () => {
    const [mine, theirs] = native.socketpair();
    const ch = spawnWithFd(theirs, `
      const big = await c.recvBytes();
      c.sendBytes(big);
      const o = await c.recv();
      c.send(o);
      for (let i = 0; i < 100; i++) c.sendBytes(Buffer.alloc(i, i));
      c.close();`);
    native.close(theirs);
    const [conn] = track(new Connection(mine));
    const big = Buffer.allocUnsafe(64 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE(i, i);
    // the child echoes while we send, so send in a way that lets us read concurrently:
    // the socket buffer is far smaller than 64 MiB, and the child reads as we write.
    conn.sendBytes(big);
    const back = await conn.recvBytes();
    expect(back.length).toBe(big.length);
    expect(back.equals(big)).toBe(true);
    const obj = { blob: big.subarray(0, 5 * 1024 * 1024), n: 1 };
    conn.send(obj);
    const o = (await conn.recv()) as { blob: Buffer; n: number };
    expect(o.n).toBe(1);
    expect(Buffer.compare(o.blob, obj.blob)).toBe(0);
    for (let i = 0; i < 100; i++) {
      const m = conn.recvBytesSync();
      expect(m.length).toBe(i);
      if (i > 0) expect(m[0]).toBe(i);
    }
    await expect(conn.recv()).rejects.toBeInstanceOf(EOFError);
    expect(await exitOf(ch)).toBe(0);
  }, 60_000);

  it('a connection the parent already read from asynchronously works in a forked child', async () => {
    const [parentEnd, childEnd] = track(...Pipe());
    parentEnd.send('warm-up');
    expect(await childEnd.recv()).toBe('warm-up'); // the parent's watcher on childEnd exists
    const pending = childEnd.recv(); // and is started at fork time
    const p = new Process({
      target: async (conn: Connection) => {
        const v = await conn.recv(); // must keep the child alive until the message comes
        conn.send({ child: v });
      },
      args: [childEnd],
    });
    procs.push(p);
    p.start();
    await new Promise((r) => setTimeout(r, 50));
    // Both processes now wait on the same socket; the parent stops reading first.
    childEnd.close();
    await expect(pending).rejects.toThrow('handle is closed');
    parentEnd.send('for the child');
    expect(await parentEnd.recv()).toEqual({ child: 'for the child' });
    await p.join(10_000);
    expect(p.exitCode).toBe(0);
  });

  it('after quick answers (reads spin briefly), a slow answer still arrives, async and Sync', async () => {
    const [a, b] = track(...Pipe());
    const p = new Process({
      target: async () => {
        a.close();
        for (let i = 0; i < 50; i++) b.send(await b.recv()); // quick echoes: the parent's reads spin
        await new Promise((r) => setTimeout(r, 150));
        b.send('slow');
        await new Promise((r) => setTimeout(r, 150));
        b.send('slow again');
        b.close();
      },
    });
    procs.push(p);
    p.start();
    b.close();
    for (let i = 0; i < 50; i++) {
      a.send(i);
      expect(i % 2 ? a.recvSync() : await a.recv()).toBe(i);
    }
    const t0 = performance.now();
    expect(await a.recv()).toBe('slow');
    expect(a.recvSync()).toBe('slow again');
    expect(performance.now() - t0).toBeGreaterThan(250);
    await expect(a.recv()).rejects.toBeInstanceOf(EOFError);
    await p.join(10_000);
    expect(p.exitCode).toBe(0);
  });

  it('a forked Process child uses an inherited connection and a connection sent to it', async () => {
    const [parentEnd, childEnd] = track(...Pipe());
    const [side1, side2] = track(...Pipe());
    const p = new Process({
      target: async (conn: Connection) => {
        const got = (await conn.recv()) as { c: Connection };
        got.c.send('hello over the passed connection');
        conn.send({ pid: process.pid });
        conn.close();
      },
      args: [childEnd],
    });
    procs.push(p);
    p.start();
    parentEnd.send({ c: side2 });
    expect(await side1.recv()).toBe('hello over the passed connection');
    const msg = (await parentEnd.recv()) as { pid: number };
    expect(msg.pid).toBe(p.pid);
    await p.join(10_000);
    expect(p.exitCode).toBe(0);
    // waitFor over a process sentinel
    const p2 = new Process({ target: () => new Promise((r) => setTimeout(r, 50)) });
    procs.push(p2);
    p2.start();
    expect(await waitFor([p2.sentinel], 10_000)).toEqual([p2.sentinel]);
    await p2.join(5000);
    expect(p2.exitCode).toBe(0);
  });
});
