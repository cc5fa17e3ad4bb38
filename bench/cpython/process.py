#!/usr/bin/env python3
"""CPython side of bench/process.mjs: multiprocessing.Process (fork) start+join of a no-op
target, then the same with the parent holding 50 MB / 500 MB of heap."""
import multiprocessing as mp
import os

from common import Recorder, config, med, perf_ns


def noop():
    pass


def start_join(ctx, n):
    for _ in range(3):                       # warm-up
        p = ctx.Process(target=noop)
        p.start()
        p.join()
    tot, st = [], []
    for _ in range(n):
        p = ctx.Process(target=noop)
        t0 = perf_ns()
        p.start()
        t1 = perf_ns()
        p.join()
        t2 = perf_ns()
        assert p.exitcode == 0
        p.close()
        st.append((t1 - t0) / 1e6)
        tot.append((t2 - t0) / 1e6)
    return med(tot), med(st)


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main():
    cfg = config({"n_proc": 200, "n_heap": 40, "heap_mb": [50, 500]})
    ctx = mp.get_context("fork")
    rec = Recorder()

    def base():
        tot, st = start_join(ctx, cfg["n_proc"])
        return {"start_exit_ms": tot, "start_ready_ms": tot, "start_call_ms": st}
    rec.step(base)
    keep = []
    have = 0
    for mb in cfg["heap_mb"]:
        while have < mb:                     # 1 MiB objects, written (resident), kept alive
            keep.append(b"x" * (1 << 20))
            have += 1
        rec.notes.append(f"heap {mb} MB: parent RSS {rss_mb():.0f} MB")
        rec.step(lambda: {f"heap{mb}_ms": start_join(ctx, cfg["n_heap"])[0]})
    rec.finish()


if __name__ == "__main__":
    main()
