#!/usr/bin/env python3
"""CPython side of bench/process.mjs's forkserver/spawn rows: multiprocessing.Process start+join
of a no-op target under the 'forkserver' (server already running) and 'spawn' start methods."""
import multiprocessing as mp

from common import Recorder, config, med, perf_ns


def noop():
    pass


def start_join(ctx, n):
    tot = []
    for _ in range(n):
        p = ctx.Process(target=noop)
        t0 = perf_ns()
        p.start()
        p.join()
        tot.append((perf_ns() - t0) / 1e6)
        assert p.exitcode == 0
        p.close()
    return med(tot)


def main():
    cfg = config({"n_fs": 100, "n_spawn": 20})
    rec = Recorder()
    fs = mp.get_context("forkserver")
    start_join(fs, 3)                        # starts the server, warm-up
    rec.step(lambda: {"forkserver_ms": start_join(fs, cfg["n_fs"])})
    sp = mp.get_context("spawn")
    start_join(sp, 2)
    rec.step(lambda: {"spawn_ms": start_join(sp, cfg["n_spawn"])})
    rec.finish()


if __name__ == "__main__":
    main()
