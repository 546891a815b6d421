"""Elementwise work on every core: NumPy runs each ufunc on one core, BLAS on all of them.

A matmul uses every core BLAS is allowed; `np.exp` over the same array uses one. NumPy
releases the GIL inside its loops, so plain Python threads, each handed its own slice of the
rows, run the slices' loops at the same time. The fast paths of group_norm and silu cut their
arrays this way; their slices are independent (each thread writes only its own rows).

minidiff.set_num_threads(n) sets how many slices (threads) there are; by default, one per
core the process may run on. `minidiff train --threads n` sets it together with the BLAS
limit, so one number caps both kinds of work.
"""
import os
from concurrent.futures import ThreadPoolExecutor

from .. import backend

# Below this many numbers a second thread costs more (about 30 µs to hand over) than it saves.
MIN_PARALLEL_SIZE = 1 << 16

_threads = [None]                                  # set_num_threads's n; None: every core
_pool = [None, 0, 0]                       # the executor, its number of workers, its process


def set_num_threads(n):
    """Use n threads for the elementwise fast paths (BLAS keeps its own limit)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be an int >= 1, got {n!r}")
    _threads[0] = n


def get_num_threads():
    """set_num_threads's n, or else the cores this process may run on (its CPU affinity,
    asked each time: an MPI rank pinned to one core gets 1)."""
    if _threads[0] is not None:
        return _threads[0]
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _executor(workers):
    """The pool of worker threads: made once, remade if n changes, and made anew in a child
    process after fork() (which copies the pool object but none of its threads)."""
    if _pool[1] != workers or _pool[2] != os.getpid():
        if _pool[0] is not None and _pool[2] == os.getpid():
            _pool[0].shutdown(wait=True)
        _pool[:] = [ThreadPoolExecutor(workers, thread_name_prefix="minidiff"), workers,
                    os.getpid()]
    return _pool[0]


def over_rows(fn, n_rows, size):
    """Call fn(lo, hi) on slices [lo, hi) that together cover range(n_rows), one per thread.

    `size` is how many numbers the work touches: small work, work on a GPU (CuPy queues it
    anyway) and n = 1 thread run as one call, fn(0, n_rows), in this thread. An exception in
    any slice is raised here, after every slice has finished."""
    if size < MIN_PARALLEL_SIZE or backend.get_device() != "cpu":
        fn(0, n_rows)
        return
    k = min(get_num_threads(), n_rows)
    if k <= 1:
        fn(0, n_rows)
        return
    bounds = [n_rows * i // k for i in range(k + 1)]
    slices = list(zip(bounds[:-1], bounds[1:]))
    futures = [_executor(k - 1).submit(fn, lo, hi) for lo, hi in slices[1:]]
    try:
        fn(*slices[0])                             # this thread takes the first slice
    finally:
        errors = [f.exception() for f in futures]  # waits for every slice
    for e in errors:
        if e is not None:
            raise e


def copy_rows(dst, src):
    """dst[...] = src (same shapes), the rows of the first axis split over threads: conv's
    layout changes are strided copies, one NumPy loop on one core otherwise."""
    def part(lo, hi):
        dst[lo:hi] = src[lo:hi]
    over_rows(part, dst.shape[0], dst.size)
