import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';


import { AuthenticationError, Client, Connection, Listener, Process } from '../lib/index';

const closers: { close(): void }[] = [];
const procs: Process[] = [];
function track<T extends { close(): void }>(x: T): T {
  closers.push(x);
  return x;
}
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) c.close();
  for (const p of procs.splice(0)) {
    if (p.isAlive()) p.kill();
    await p.join(5000);
  }
});

describe('Listener / Client', () => {
  it('default Unix address: a fresh path in a private 0700 directory, removed on close', async () => {
    const l = track(new Listener());
    expect(l.family).toBe('AF_UNIX');
    const addr = l.address as string;
    const dir = path.dirname(addr);
    expect(dir.startsWith(os.tmpdir())).toBe(true);
    expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
    expect(fs.statSync(addr).isSocket()).toBe(true);
    const l2 = track(new Listener());
    expect(l2.address).not.toBe(addr);
    const [s, c] = await Promise.all([l.accept(), Client(addr)]);
    track(s);
    track(c);
    c.send('hi');
    expect(await s.recv()).toBe('hi');
    s.send({ back: [1, 2] });
    expect(c.recvSync()).toEqual({ back: [1, 2] });
    l.close();
    l.close();
    expect(fs.existsSync(addr)).toBe(false);
    expect(fs.existsSync(dir)).toBe(false);
    await expect(l.accept()).rejects.toThrow('handle is closed');
  });

  it('an explicit Unix path is used and unlinked on close', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-test-'));
    try {
      const addr = path.join(dir, 'sock');
      const l = track(new Listener({ address: addr, backlog: 4 }));
      expect(l.address).toBe(addr);
      const [s, c] = await Promise.all([l.accept(), Client(addr)]);
      track(s);
      track(c);
      s.sendBytes(Buffer.from('raw'));
      expect((await c.recvBytes()).toString()).toBe('raw');
      l.close();
      expect(fs.existsSync(addr)).toBe(false);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('TCP on 127.0.0.1 with an ephemeral port', async () => {
    const l = track(new Listener({ address: ['127.0.0.1', 0] }));
    expect(l.family).toBe('AF_INET');
    const [host, port] = l.address as [string, number];
    expect(host).toBe('127.0.0.1');
    expect(port).toBeGreaterThan(0);
    const [s, c] = await Promise.all([l.accept(), Client(['127.0.0.1', port])]);
    track(s);
    track(c);
    c.send({ tcp: true });
    expect(await s.recv()).toEqual({ tcp: true });
    expect(Array.isArray(l.lastAccepted)).toBe(true);
  });

  it('connecting to nothing is a SystemError', async () => {
    const l = new Listener();
    const addr = l.address;
    l.close();
    await expect(Client(addr)).rejects.toThrow(expect.objectContaining({ code: 'ENOENT', syscall: 'connect' }));
  });

  it('TCP connection refused and an unknown host are errors with stable codes', async () => {
    const l = new Listener({ address: ['127.0.0.1', 0] });
    const port = (l.address as [string, number])[1];
    l.close();
    await expect(Client(['127.0.0.1', port])).rejects.toThrow(expect.objectContaining({ code: 'ECONNREFUSED', syscall: 'connect' }));
    await expect(Client(['no-such-host.invalid', 1])).rejects.toThrow(expect.objectContaining({ code: 'ENOTFOUND' }));
  });

  it('authkey: matching keys (including the empty key) authenticate both ways', async () => {
    for (const key of ['secret', Buffer.from([0, 1, 2, 255]), '']) {
      const l = track(new Listener({ authkey: key }));
      const [s, c] = await Promise.all([l.accept(), Client(l.address, { authkey: key })]);
      track(s);
      track(c);
      c.send('authenticated');
      expect(await s.recv()).toBe('authenticated');
    }
  });

  it('a wrong key is an AuthenticationError on both sides, and the listener keeps serving', async () => {
    const l = track(new Listener({ address: ['127.0.0.1', 0], authkey: 'right' }));
    const [srv, cli] = await Promise.allSettled([l.accept(), Client(l.address, { authkey: 'wrong' })]);
    expect(srv.status).toBe('rejected');
    expect(cli.status).toBe('rejected');
    const se = (srv as PromiseRejectedResult).reason;
    const ce = (cli as PromiseRejectedResult).reason;
    expect(se).toBeInstanceOf(AuthenticationError);
    expect(se.message).toBe('digest received was wrong');
    expect(se.code).toBe('ERR_MP_AUTHENTICATION');
    expect(ce).toBeInstanceOf(AuthenticationError);
    expect(ce.message).toBe('digest sent was rejected');
    // the empty key is a key: it does not match a non-empty one
    const r2 = await Promise.allSettled([l.accept(), Client(l.address, { authkey: '' })]);
    expect(r2.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    // a client without a key talking to an authenticating server: the server's challenge is
    // the first message it receives
    const [s, c] = await Promise.all([l.accept(), Client(l.address, { authkey: 'right' })]);
    track(s);
    track(c);
    s.send(1);
    expect(await c.recv()).toBe(1);
  });

  it('a forked child connects back with Client and authenticates', async () => {
    const l = track(new Listener({ authkey: 'family' }));
    const p = new Process({
      target: async (addr: string) => {
        const c = await Client(addr, { authkey: 'family' });
        c.send({ from: process.pid });
        const reply = await c.recv();
        c.send({ reply });
        c.close();
      },
      args: [l.address],
    });
    procs.push(p);
    p.start();
    const s = track(await l.accept()) as Connection;
    expect(await s.recv()).toEqual({ from: p.pid });
    s.send('pong');
    expect(await s.recv()).toEqual({ reply: 'pong' });
    await p.join(10_000);
    expect(p.exitCode).toBe(0);
  });

  it('acceptSync serves a client in another process', async () => {
    const l = track(new Listener({ authkey: 'k' }));
    const p = new Process({
      target: async (addr: string) => {
        const c = await Client(addr, { authkey: 'k' });
        c.send('sync accepted');
        c.close();
      },
      args: [l.address],
    });
    procs.push(p);
    p.start();
    const s = track(l.acceptSync());
    expect(s.recvSync()).toBe('sync accepted');
    await p.join(10_000);
  });

  it('rejects bad options', () => {
    expect(() => new Listener({ address: 5 as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => new Listener({ family: 'AF_BOGUS' as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => new Listener({ authkey: 5 as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
  });
});
