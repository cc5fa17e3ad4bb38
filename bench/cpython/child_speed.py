#!/usr/bin/env python3
"""CPython side of the child-speed rows of bench/process.mjs: the same three workloads (hot
loop, call-heavy loop, factorisation) timed in the parent and then in a forked child; the ratio
child/parent says whether a fork child computes at the parent's speed. CPython has no JIT, so
the sizes are scaled down (the ratio does not depend on them)."""
import multiprocessing as mp
import time

from common import Recorder, config

CPU_START = 1_000_000_000


def suite(hot_iters, calls, factor_count):
    ns = {}
    # fresh code objects, as on the JS side
    exec("def hot(n):\n    s = 0\n    for i in range(n):\n        s = (s + i * i) % 1000003\n    return s\n"
         "def g(x):\n    return (x * 31 + 7) % 1009\n"
         "def fact(n):\n    f = []\n    d = 2\n    while d * d <= n:\n        while n % d == 0:\n"
         "            f.append(d)\n            n //= d\n        d += 1\n    if n > 1:\n        f.append(n)\n    return f\n", ns)
    hot, g, fact = ns["hot"], ns["g"], ns["fact"]
    s = 0
    t = time.perf_counter()
    for i in range(hot_iters):
        s += hot(20000 + i)
    h = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(calls):
        s += g(i)
    c = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(factor_count):
        s += len(fact(CPU_START + i))
    f = time.perf_counter() - t
    return {"hot_ms": h * 1e3, "calls_ms": c * 1e3, "factor_ms": f * 1e3}


def child(params, arr):
    r = suite(*params)
    arr[0], arr[1], arr[2] = r["hot_ms"], r["calls_ms"], r["factor_ms"]


def main():
    cfg = config({"hot_iters": 600, "calls": 20_000_000, "factor_count": 10_000})
    params = (max(1, cfg["hot_iters"] // 10), max(1, cfg["calls"] // 10), max(1, cfg["factor_count"] // 10))
    ctx = mp.get_context("fork")
    rec = Recorder()

    def run():
        parent = suite(*params)
        arr = ctx.RawArray("d", 3)
        p = ctx.Process(target=child, args=(params, arr))
        p.start()
        p.join()
        assert p.exitcode == 0
        kid = dict(zip(("hot_ms", "calls_ms", "factor_ms"), arr))
        rec.notes.append("sizes: hot %d x 20000, calls %d, factorise %d numbers" % params)
        return {f"speed_{k[:-3]}": kid[k] / parent[k] for k in parent}
    rec.step(run)
    rec.finish()


if __name__ == "__main__":
    main()
