#!/usr/bin/env python3
"""CPython side of bench/sync.mjs: Lock, Value under its lock from 2 processes, Event wake
latency across processes, SharedMemory create/attach/unlink (start method fork)."""
import multiprocessing as mp
import time

from common import Recorder, config, med, perf, perf_ns


def b_lock(ctx, n):
    lk = ctx.Lock()
    acq, rel = lk.acquire, lk.release
    for _ in range(10000):
        acq()
        rel()
    t0 = perf_ns()
    for _ in range(n):
        acq()
        rel()
    return {"lock_ns": (perf_ns() - t0) / n}


def value_incr(v, n, ready, go):
    lock = v.get_lock()
    ready.set()
    go.wait()
    for _ in range(n):
        with lock:
            v.value += 1


def b_value(ctx, n):
    v = ctx.Value("i", 0)
    go = ctx.Event()
    readies = [ctx.Event() for _ in range(2)]
    ps = [ctx.Process(target=value_incr, args=(v, n, r, go)) for r in readies]
    for p in ps:
        p.start()
    for r in readies:
        r.wait()
    t0 = perf()
    go.set()
    for p in ps:
        p.join()
    wall = perf() - t0
    assert v.value == 2 * n, (v.value, 2 * n)
    v1 = ctx.Value("i", 0)
    lk = v1.get_lock()
    t0 = perf()
    for _ in range(n):
        with lk:
            v1.value += 1
    single = perf() - t0
    return {"value_2proc_ops": 2 * n / wall, "value_1proc_ops": n / single}


def waker_child(go, ack, arr, n):
    for i in range(n):
        go.wait()
        t1 = time.monotonic_ns()
        go.clear()
        arr[i + 1] = t1 - arr[0]
        ack.set()


def b_wake(ctx, n, gap_s):
    go, ack = ctx.Event(), ctx.Event()
    arr = ctx.RawArray("d", n + 1)
    p = ctx.Process(target=waker_child, args=(go, ack, arr, n))
    p.start()
    for _ in range(n):
        time.sleep(gap_s)                    # let the child block in wait()
        arr[0] = time.monotonic_ns()
        go.set()
        ack.wait()
        ack.clear()
    p.join()
    assert p.exitcode == 0
    return {"wake_sync_us": med(arr[1:]) / 1e3}


def b_shm(n, size):
    from multiprocessing import shared_memory
    cr, at, cu = [], [], []
    for _ in range(n):
        t0 = perf_ns()
        s = shared_memory.SharedMemory(create=True, size=size)
        t1 = perf_ns()
        a = shared_memory.SharedMemory(s.name)
        t2 = perf_ns()
        a.buf[0] = 1
        assert s.buf[0] == 1
        t3 = perf_ns()
        a.close()
        s.close()
        s.unlink()
        t4 = perf_ns()
        cr.append((t1 - t0) / 1e3)
        at.append((t2 - t1) / 1e3)
        cu.append((t4 - t3) / 1e3)
    return {"shm_create_us": med(cr), "shm_attach_us": med(at), "shm_close_unlink_us": med(cu)}


def main():
    cfg = config({"n_lock": 1_000_000, "n_value": 100_000, "n_wake": 500, "wake_gap_ms": 1, "n_shm": 500})
    ctx = mp.get_context("fork")
    rec = Recorder()
    rec.step(lambda: b_lock(ctx, cfg["n_lock"]))
    rec.step(lambda: b_value(ctx, cfg["n_value"]))
    rec.step(lambda: b_wake(ctx, cfg["n_wake"], cfg["wake_gap_ms"] / 1e3))
    rec.step(lambda: b_shm(cfg["n_shm"], 4096))
    rec.finish()


if __name__ == "__main__":
    main()
