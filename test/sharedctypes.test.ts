import { describe, expect, it } from 'vitest';
import { Array as MPArray, RawArray, RawValue, SharedValue, SynchronizedArray, SynchronizedValue, Value } from '../lib/index';
import { Lock, RLock, rebuild } from '../lib/synchronize';
import { rebuildShared, describeRawArray } from '../lib/sharedctypes';
import { kReduce } from '../lib/shared_memory';
import { fork, joinAll } from './helpers/procs';

describe('Value', () => {
  it('every typecode round-trips; 64-bit codes are BigInt; c is one byte', () => {
    for (const tc of ['b', 'B', 'h', 'H', 'i', 'I', 'f', 'd'] as const) expect(Value(tc, 7).value).toBe(7);
    for (const tc of ['l', 'L', 'q', 'Q'] as const) expect(Value(tc, 7n).value).toBe(7n);
    expect(Value('q', 5).value).toBe(5n);
    expect(Value('d', 0.1).value).toBe(0.1);
    expect(Value('f', 0.5).value).toBe(0.5);
    expect(Value('c', 'x').value).toBe('x');
    expect(Value('i').value).toBe(0);
    expect(Value('c').value).toBe('\0');
  });

  it('wraps around like ctypes', () => {
    expect(Value('b', 200).value).toBe(-56);
    expect(Value('B', -1).value).toBe(255);
    expect(Value('h', 40000).value).toBe(40000 - 65536);
    expect(Value('I', -1).value).toBe(4294967295);
    expect(Value('q', 2n ** 63n).value).toBe(-(2n ** 63n));
    expect(Value('Q', -1n).value).toBe(2n ** 64n - 1n);
    const v = Value('i', 2 ** 31 - 1);
    v.value = (v.value as number) + 1;
    expect(v.value).toBe(-(2 ** 31));
  });

  it('bad typecode / bad value types are TypeErrors with a code', () => {
    expect(() => Value('z' as 'i')).toThrow(TypeError);
    expect(() => Value('z' as 'i')).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => Value('i', 1.5)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => Value('i', 'x' as unknown as number)).toThrow(TypeError);
    expect(() => Value('c', 'xy')).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => Value('i', 1, { lock: 3 as unknown as boolean })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    const v = Value('d', 1);
    expect(() => v.add(1)).toThrow(expect.objectContaining({ code: 'ERR_MP_NOT_INTEGER_TYPECODE' }));
  });

  it('lock: true gives an RLock, false the raw object, or the given lock', () => {
    const a = Value('i', 1) as SynchronizedValue<'i'>;
    expect(a).toBeInstanceOf(SynchronizedValue);
    expect(a.getLock()).toBeInstanceOf(RLock);
    expect(a.getObj()).toBeInstanceOf(SharedValue);
    const raw = Value('i', 1, { lock: false });
    expect(raw).toBeInstanceOf(SharedValue);
    const l = new Lock();
    const c = Value('i', 1, { lock: l }) as SynchronizedValue<'i'>;
    expect(c.getLock()).toBe(l);
    expect(c.acquireSync()).toBe(true);
    expect(l.locked()).toBe(true);
    c.release();
    expect(RawValue('h', 3)).toBeInstanceOf(SharedValue);
  });

  it('atomic add / compareExchange', () => {
    const v = Value('i', 5) as SynchronizedValue<'i'>;
    expect(v.add(3)).toBe(5);
    expect(v.value).toBe(8);
    expect(v.compareExchange(8, 1)).toBe(8);
    expect(v.value).toBe(1);
    expect(v.compareExchange(8, 2)).toBe(1);
    expect(v.value).toBe(1);
    const b = Value('b', -1) as SynchronizedValue<'b'>;
    expect(b.compareExchange(255, 4)).toBe(-1); // 255 wraps to -1 like the stored value
    expect(b.value).toBe(4);
    const q = Value('q', 1n) as SynchronizedValue<'q'>;
    expect(q.add(2n ** 62n)).toBe(1n);
    expect(q.value).toBe(2n ** 62n + 1n);
  });

  it('2 processes × 100,000 increments under getLock() = 200,000; atomic add too', async () => {
    const v = Value('i', 0) as SynchronizedValue<'i'>;
    const counter = RawValue('q', 0n);
    const work = (n: number) => {
      const lock = v.getLock();
      for (let i = 0; i < n; i++) {
        lock.acquireSync();
        v.value = v.value + 1;
        lock.release();
        counter.add(1n);
      }
    };
    const ps = [fork(work, 100_000), fork(work, 100_000)];
    expect(await joinAll(ps)).toEqual([0, 0]);
    expect(v.value).toBe(200_000);
    expect(counter.value).toBe(200_000n);
  });

  it('is reopened from its description', () => {
    const v = Value('h', 12) as SynchronizedValue<'h'>;
    const again = rebuildShared(v[kReduce](), (d) => rebuild(d) as Lock | RLock) as SynchronizedValue<'h'>;
    expect(again.value).toBe(12);
    again.value = 13;
    expect(v.value).toBe(13);
  });
});

describe('Array', () => {
  it('size or initial values; get/set with negative indices; iteration; typed view', () => {
    const a = MPArray('i', [1, 2, 3]) as SynchronizedArray<'i'>;
    expect(a).toBeInstanceOf(SynchronizedArray);
    expect(a.length).toBe(3);
    expect(a.get(0)).toBe(1);
    expect(a.get(-1)).toBe(3);
    a.set(1, 20);
    expect([...a]).toEqual([1, 20, 3]);
    expect(a.toArray()).toEqual([1, 20, 3]);
    expect(a.array).toBeInstanceOf(Int32Array);
    expect(a.array.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(Atomics.add(a.array, 2, 1)).toBe(3);
    expect(a.get(2)).toBe(4);
    expect(() => a.get(3)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => a.set(0, 1.5)).toThrow(TypeError);
    const z = MPArray('d', 4) as SynchronizedArray<'d'>;
    expect(z.toArray()).toEqual([0, 0, 0, 0]);
    expect(z.getLock()).toBeInstanceOf(RLock);
    const big = MPArray('Q', [1n, 2n]) as SynchronizedArray<'Q'>;
    expect(big.get(1)).toBe(2n);
    const chars = MPArray('c', 'hi\0x') as SynchronizedArray<'c'>;
    expect(chars.value).toBe('hi');
    expect(() => MPArray('i', -1)).toThrow(TypeError);
  });

  it('lock: false and RawArray give the typed array itself, shared with children', async () => {
    const r = RawArray('d', [0.5, 1.5]);
    expect(r).toBeInstanceOf(Float64Array);
    const u = MPArray('B', 3, { lock: false });
    expect(u).toBeInstanceOf(Uint8Array);
    const big = RawArray('b', 100_000); // larger than an arena block: its own segment
    const p = fork(() => {
      r[0] = 42;
      (u as Uint8Array)[2] = 300; // wraps to 44
      big[99_999] = -5;
    });
    expect(await joinAll([p])).toEqual([0]);
    expect(r[0]).toBe(42);
    expect((u as Uint8Array)[2]).toBe(44);
    expect(big[99_999]).toBe(-5);
    const d = describeRawArray(r)!;
    const again = rebuildShared(d, (x) => rebuild(x) as Lock) as Float64Array;
    expect([...again]).toEqual([42, 1.5]);
  });
});
