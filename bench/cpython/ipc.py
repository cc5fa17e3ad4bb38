#!/usr/bin/env python3
"""CPython side of bench/ipc.mjs: Queue child->parent throughput (small ints, 1 MiB bytes) and
Pipe send()/recv() round trip (start method fork)."""
import multiprocessing as mp

from common import Recorder, config, med, perf, perf_ns


def q_producer(q, n, size):
    q.put("ready")
    if size:
        payload = b"x" * size
        for _ in range(n):
            q.put(payload)
    else:
        for i in range(n):
            q.put(i)
    q.put(None)
    q.close()
    q.join_thread()          # make sure the feeder thread flushed everything


def queue_run(ctx, n, size):
    q = ctx.Queue()
    p = ctx.Process(target=q_producer, args=(q, n, size))
    p.start()
    assert q.get() == "ready"
    get = q.get
    t0 = perf()
    cnt = 0
    while True:
        x = get()
        if x is None:
            break
        cnt += 1
    dt = perf() - t0
    p.join()
    assert cnt == n and p.exitcode == 0
    return dt


def pipe_echo(conn):
    recv, send = conn.recv, conn.send
    while True:
        x = recv()
        if x is None:
            break
        send(x)
    conn.close()


def pipe_rtt(ctx, n):
    a, b = ctx.Pipe()
    p = ctx.Process(target=pipe_echo, args=(b,))
    p.start()
    b.close()
    send, recv = a.send, a.recv
    for i in range(500):
        send(i)
        recv()
    lat = []
    for i in range(n):
        t0 = perf_ns()
        send(i)
        recv()
        lat.append((perf_ns() - t0) / 1e3)
    send(None)
    p.join()
    a.close()
    return med(lat)


def main():
    cfg = config({"n_small": 200_000, "n_big": 200, "big_size": 1 << 20, "n_pipe": 10_000})
    ctx = mp.get_context("fork")
    rec = Recorder()
    rec.step(lambda: {"q_small_items_s": cfg["n_small"] / queue_run(ctx, cfg["n_small"], 0)})
    rec.step(lambda: {"q_big_mib_s": cfg["n_big"] * cfg["big_size"] / 2**20 / queue_run(ctx, cfg["n_big"], cfg["big_size"])})
    rec.step(lambda: {"pipe_rtt_us": pipe_rtt(ctx, cfg["n_pipe"])})
    rec.finish()


if __name__ == "__main__":
    main()
