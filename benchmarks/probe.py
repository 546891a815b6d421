"""Is this machine quiet right now? Two seconds of one float32 matmul, on 1 and on 2 threads.

    python benchmarks/probe.py before        # then the benchmark, then: probe.py after

It times a 1024 x 1024 x 1024 NumPy matmul (2 n³ FLOPs) on one BLAS thread and on two, in turn,
three times, and prints the median GFLOP/s of each, their ratio, and how many cores other
processes kept busy meanwhile (common.machine_busy_seconds). On a quiet 2-core machine the
ratio t2/t1 is close to 2; when other jobs share the cores it falls towards 1, and figures
measured then compare with nothing: measure again later.
"""
import statistics
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from common import machine_busy_seconds

N = 1024


def gflops(a, out, threads, seconds=0.3):
    """Median GFLOP/s of a @ a over `seconds` of calls on `threads` BLAS threads."""
    times = []
    with threadpool_limits(threads):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            np.matmul(a, a, out=out)
            times.append(time.perf_counter() - t0)
    return 2 * N ** 3 / statistics.median(times) / 1e9


def main(label=""):
    a = np.random.default_rng(0).standard_normal((N, N), dtype=np.float32)
    out = np.empty_like(a)
    busy0, own0, wall0 = machine_busy_seconds(), time.process_time(), time.perf_counter()
    runs = {1: [], 2: []}
    for _ in range(3):
        for threads in runs:
            runs[threads].append(gflops(a, out, threads))
    wall = time.perf_counter() - wall0
    foreign = ("n/a" if busy0 is None else
               f"{((machine_busy_seconds() - busy0) - (time.process_time() - own0)) / wall:.2f}")
    g1, g2 = statistics.median(runs[1]), statistics.median(runs[2])
    print(f"{time.strftime('%H:%M:%S')} {label:20s} t1 {g1:6.1f} GFLOP/s  t2 {g2:6.1f} GFLOP/s"
          f"  t2/t1 {g2 / g1:.2f}  foreign {foreign} cores", flush=True)


if __name__ == "__main__":
    main(" ".join(sys.argv[1:]))
