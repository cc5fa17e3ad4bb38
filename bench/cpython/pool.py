#!/usr/bin/env python3
"""CPython side of bench/pool.mjs: Pool(2).map of a trivial function (chunksize 1 and default),
apply() round trip, CPU-bound factorisation serial vs Pool(2), and the first call of a function
the workers have not seen (start method fork).
    python3 bench/cpython/pool.py [fork|forkserver|spawn]
Under forkserver / spawn (bench/pool.mjs's rows of those methods): Pool(2) start-up, map chunksize 1
and the apply() round trip only."""
import multiprocessing as mp
import sys

from common import Recorder, config, med, perf, perf_ns


def ident(x):
    return x


def noop(*_a):
    return None


def factorize(n):
    """Naive trial division, deliberately CPU-bound (as in typical tutorials)."""
    factors = []
    d = 2
    while d * d <= n:
        while n % d == 0:
            factors.append(d)
            n //= d
        d += 1
    if n > 1:
        factors.append(n)
    return factors


def checksum(lists):
    s = 0
    for f in lists:
        for x in f:
            s = (s * 31 + x) % 1000000007
    return s


_compiled = {}


def run_source(src, args):
    """Run a function shipped as source text, compiled once per worker (pickle sends functions
    by reference, so this is how a Pool runs a function defined after its workers started)."""
    fn = _compiled.get(src)
    if fn is None:
        ns = {}
        exec(src, ns)
        fn = _compiled[src] = ns["f"]
    return fn(*args)


def start_ms(ctx, n):
    """Pool(2) start-up: constructor to the answer of map(ident, [0, 1], chunksize=1) (median;
    close+join not counted), as bench/pool.mjs."""
    lat = []
    for _ in range(n):
        t0 = perf_ns()
        pool = ctx.Pool(2)
        r = pool.map(ident, [0, 1], chunksize=1)
        lat.append((perf_ns() - t0) / 1e6)
        assert r == [0, 1]
        pool.close()
        pool.join()
    return med(lat)


def main():
    method = sys.argv[1] if len(sys.argv) > 1 else "fork"
    cfg = config({"n_start": 20, "n_map": 200_000, "n_rtt": 2000, "n_closure": 200, "cpu_start": 1_000_000_000, "cpu_count": 10_000})
    ctx = mp.get_context(method)
    rec = Recorder()
    data = list(range(cfg["n_map"]))
    if method == "forkserver":
        with ctx.Pool(1) as p:                 # starts the server
            p.apply(noop)
    rec.step(lambda: {"start_ms": start_ms(ctx, cfg["n_start"])})
    with ctx.Pool(2) as pool:
        pool.map(ident, range(1000))           # warm

        def m1():
            t0 = perf()
            r = pool.map(ident, data, chunksize=1)
            dt = perf() - t0
            assert r == data
            return {"map_chunk1_tps": len(data) / dt}

        def md():
            t0 = perf()
            r = pool.map(ident, data)
            dt = perf() - t0
            assert r == data
            return {"map_default_tps": len(data) / dt}

        def rtt():
            for _ in range(200):
                pool.apply(noop)
            lat = []
            for _ in range(cfg["n_rtt"]):
                t0 = perf_ns()
                pool.apply(noop)
                lat.append((perf_ns() - t0) / 1e3)
            return {"apply_rtt_us": med(lat)}

        def closure():
            lat = []
            for i in range(cfg["n_closure"]):
                src = f"def f(x):\n    return x + {i}\n"
                t0 = perf_ns()
                r = pool.apply(run_source, (src, (1,)))
                lat.append((perf_ns() - t0) / 1e3)
                assert r == 1 + i
            return {"closure_us": med(lat)}

        rec.step(m1)
        if method != "fork":
            rec.step(rtt)
        else:
            rec.step(md)
            rec.step(rtt)
            rec.step(closure)
    if method != "fork":
        rec.finish()
        return

    rng = range(cfg["cpu_start"], cfg["cpu_start"] + cfg["cpu_count"])
    box = {}

    def serial():
        t0 = perf()
        box["ref"] = checksum([factorize(n) for n in rng])
        return {"cpu_serial_s": perf() - t0}

    def parallel():
        t0 = perf()
        with ctx.Pool(2) as pool:
            res = pool.map(factorize, rng)
        dt = perf() - t0
        assert checksum(res) == box["ref"]
        return {"cpu_pool_s": dt}

    rec.step(serial)
    rec.step(parallel)
    rec.values["cpu_speedup"] = rec.values["cpu_serial_s"] / rec.values["cpu_pool_s"]
    rec.ext["cpu_speedup"] = max(rec.ext["cpu_serial_s"], rec.ext["cpu_pool_s"])
    rec.notes.append(f"factorisation checksum {box['ref']}")
    rec.finish()


if __name__ == "__main__":
    main()
