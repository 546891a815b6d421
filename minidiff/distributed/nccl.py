"""The gradient sum on GPUs: NCCL through `cupy.cuda.nccl`, set up over MPI as ChainerMN did.

Each rank takes the GPU of its local rank (rank r of a node's k ranks: device r mod the
node's GPU count). Rank 0 makes NCCL's unique id, MPI broadcasts it, and every rank joins one
NCCL communicator. A sum is enqueued on the current stream and then polled, like the MPI
messages, until the rank timeout: a dead peer aborts the communicator instead of hanging.

    s = NcclSum(world)                       # world: an MPIWorld (or anything with its
    s.allreduce_sum(cupy_array, "what")      # rank, size, local_rank, timeout, bcast_bytes)
"""
import time

import numpy as np

from .ranks import RankFailure

UID_BYTES = 128                      # NCCL_UNIQUE_ID_BYTES
_TYPES = {np.dtype(np.float32): "NCCL_FLOAT32", np.dtype(np.float64): "NCCL_FLOAT64"}


class NcclSum:
    def __init__(self, world):
        import cupy
        from cupy.cuda import nccl
        self.cupy, self.nccl, self.world = cupy, nccl, world
        n_gpus = cupy.cuda.runtime.getDeviceCount()
        cupy.cuda.Device(world.local_rank % n_gpus).use()      # before any array is made
        uid = nccl.get_unique_id() if world.rank == 0 else ()   # 128 C chars, as ints
        raw = world.bcast_bytes(bytes(c & 0xFF for c in uid), UID_BYTES,
                                "sharing NCCL's unique id")
        self.comm = nccl.NcclCommunicator(world.size, _as_uid(raw), world.rank)

    def allreduce_sum(self, a, what):
        """The elementwise sum of the CuPy array `a` over the ranks, in a new array."""
        kind = _TYPES.get(np.dtype(a.dtype))
        if kind is None:
            raise ValueError(f"allreduce_sum: NCCL sums float32 or float64 here, got {a.dtype}")
        a = self.cupy.ascontiguousarray(a)
        out = self.cupy.empty_like(a)
        stream = self.cupy.cuda.get_current_stream()
        self.comm.allReduce(a.data.ptr, out.data.ptr, a.size, getattr(self.nccl, kind),
                            self.nccl.NCCL_SUM, stream.ptr)
        done = stream.record()
        deadline, pause = time.monotonic() + self.world.timeout, 1e-5
        while not done.done:
            if time.monotonic() > deadline:
                self.comm.abort()
                raise RankFailure(self.world.lost(what, " (NCCL)"))
            time.sleep(pause)
            pause = min(2 * pause, 1e-3)
        return out


def _as_uid(raw):
    """NCCL's unique id as `NcclCommunicator` takes it: a tuple of 128 signed chars."""
    return tuple(int(b) - 256 if b > 127 else int(b) for b in raw)
