import { describe, expect, it } from 'vitest';
import { native } from '../lib/native';

describe('native error helper', () => {
  it('builds Node SystemError shape from an errno', () => {
    const e = native.errnoError(2, 'shm_open', '/mp-x');
    expect(e).toBeInstanceOf(Error);
    expect(e.code).toBe('ENOENT');
    expect(e.errno).toBe(-2);
    expect(e.syscall).toBe('shm_open');
    expect(e.path).toBe('/mp-x');
    expect(e.message).toBe("ENOENT: no such file or directory, shm_open '/mp-x'");
  });
  it('accepts negative errno and no path', () => {
    const e = native.errnoError(-17, 'open');
    expect(e.code).toBe('EEXIST');
    expect(e.message).toMatch(/^EEXIST: .*exists, open$/);
    expect(e.path).toBeUndefined();
  });
});
