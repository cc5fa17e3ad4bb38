"""Shared helpers for the CPython side of bench/: configuration, the busy-machine guard and the
JSON result, mirroring bench/lib/harness.mjs.

Each bench/cpython/<name>.py runs ONE round of its workloads (the JS orchestrator runs it once per
round, interleaved with the other variants) and writes {"values", "ext", "notes"} as JSON to
$BENCH_OUT, or prints it when run by hand:  python3 bench/cpython/process.py
The workloads follow /work/shared/bench/cpython_anchor.py (start method fork).
"""
import json
import os
import statistics
import sys
import time

perf = time.perf_counter
perf_ns = time.perf_counter_ns
med = statistics.median


def config(defaults):
    cfg = dict(defaults)
    cfg.update(json.loads(os.environ.get("BENCH_CFG") or "{}"))
    return cfg


_HZ = os.sysconf("SC_CLK_TCK")


_CPUACCT = os.environ.get("BENCH_CPUACCT")


def cpu_sample():
    """(time, machine busy, busy of our process tree, ok, units per second); see harness.mjs
    cpuSample: exact nanoseconds from the run's cpuacct cgroup if there is one, else jiffies."""
    t = time.monotonic()
    if _CPUACCT:
        try:
            with open(os.path.join(os.path.dirname(_CPUACCT), "cpuacct.usage")) as f:
                busy = int(f.read())
            with open(os.path.join(_CPUACCT, "cpuacct.usage")) as f:
                ours = int(f.read())
            return (t, busy, ours, True, 1e9)
        except (OSError, ValueError):
            pass
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    except OSError:
        return (t, 0, 0, False, _HZ)
    root = int(os.environ.get("BENCH_ROOT_PID") or os.getpid())
    info, children = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        rest = st[st.rfind(")") + 2:].split()
        pid, ppid = int(d), int(rest[1])
        info[pid] = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
        children.setdefault(ppid, []).append(pid)
    ours, stack = 0, [root]
    while stack:
        p = stack.pop()
        ours += info.get(p, 0)
        stack.extend(children.get(p, ()))
    return (t, busy, ours, True, _HZ)


def external_load(s0, s1):
    if not (s0[3] and s1[3]) or s1[0] <= s0[0] or s0[4] != s1[4]:
        return 0.0
    return max(0.0, ((s1[1] - s0[1]) - (s1[2] - s0[2])) / s1[4] / (s1[0] - s0[0]))


class Recorder:
    def __init__(self):
        self.values, self.ext, self.notes = {}, {}, []

    def step(self, fn):
        """Run fn() -> {key: number}; record the values and the external load meanwhile."""
        s0 = cpu_sample()
        vals = fn()
        load = external_load(s0, cpu_sample())
        for k, v in vals.items():
            self.values[k] = v
            self.ext[k] = load
        return vals

    def finish(self):
        out = json.dumps({"values": self.values, "ext": self.ext, "notes": self.notes})
        path = os.environ.get("BENCH_OUT")
        if path:
            with open(path, "w") as f:
                f.write(out)
        else:
            print(out)
        sys.stdout.flush()
