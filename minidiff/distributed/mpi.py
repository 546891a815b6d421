"""N ranks over MPI (mpi4py): the messages of a data-parallel step, each one bounded in time.

Every collective is started non-blocking and then polled until `timeout` seconds have gone
by, so a rank whose peer died (kill -9, out of memory) ends with a message instead of hanging
in MPI forever. On CuPy arrays the gradient sum goes through NCCL (nccl.py), as ChainerMN did:
MPI starts the ranks and broadcasts NCCL's unique id, NCCL sums on the GPUs.

    w = MPIWorld()                      # MPI_Init; rank, size, the node's local rank
    w._allreduce_sum(np.ones(3), "x")   # [N, N, N] on every rank, or RankFailure in time
"""
import json
import sys
import time

import numpy as np

from .. import backend
from .ranks import RankFailure, Ranks

SLOT = 4096           # bytes of one rank's message in _allgather and _bcast (JSON, a digest)


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise RuntimeError("this process was started as one of several ranks (by mpiexec or "
                           "srun), which needs mpi4py: pip install 'minidiff[mpi]'") from e
    return MPI


class MPIWorld(Ranks):
    def __init__(self):
        MPI = self.MPI = _import_mpi()
        comm = self.comm = MPI.COMM_WORLD
        comm.Set_errhandler(MPI.ERRORS_RETURN)          # a dead peer: an error, not an abort
        local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())   # this node
        super().__init__(comm.Get_size(), comm.Get_rank(), local.Get_rank(),
                         local.Get_size())
        local.Free()
        self.nccl = None

    def join(self, cfg):
        super().join(cfg)
        if backend.get_device() == "cuda" and self.nccl is None:
            from .nccl import NcclSum
            self.nccl = NcclSum(self)                    # binds this rank's GPU first
        return self

    # ------------------------------------------------------------------ bounded waits
    def _wait(self, request, what):
        """Poll `request` until it completes; past the timeout, or on an MPI error, stop."""
        deadline, pause = time.monotonic() + self.timeout, 1e-5
        while True:
            try:
                if request.Test():
                    return
            except self.MPI.Exception as e:
                raise RankFailure(self.lost(what, f" (MPI: {e})")) from None
            if time.monotonic() > deadline:
                raise RankFailure(self.lost(what))
            time.sleep(pause)
            pause = min(2 * pause, 1e-3)             # at most 1 ms late, and no busy core

    def lost(self, what, detail=""):
        return (f"rank {self.rank} of {self.size}: no answer from the other ranks within "
                f"{self.timeout:g} s (--rank-timeout) while {what}{detail}; a rank has "
                f"probably died. Stopped; the last checkpoint in {self.out_dir or 'the run'} "
                "is intact: rerun with the same number of ranks and --resume")

    # ------------------------------------------------------------------ the messages
    def _allreduce_sum(self, a, what):
        """The elementwise sum of `a` over the ranks (a NumPy or a CuPy array)."""
        if not isinstance(a, np.ndarray):
            return self.nccl.allreduce_sum(a, what)
        out = np.empty_like(a)
        self._wait(self.comm.Iallreduce(a, out, op=self.MPI.SUM), what)
        return out

    def _allgather(self, data, what):
        """Every rank's bytes (at most SLOT), as a list in rank order, on every rank."""
        if len(data) > SLOT - 4:
            raise ValueError(f"_allgather: {len(data)} bytes, at most {SLOT - 4}")
        mine = np.zeros(SLOT, dtype=np.uint8)
        mine[:4] = np.frombuffer(np.uint32(len(data)).tobytes(), dtype=np.uint8)
        mine[4:4 + len(data)] = np.frombuffer(data, dtype=np.uint8)
        every = np.empty(SLOT * self.size, dtype=np.uint8)
        self._wait(self.comm.Iallgather(mine, every), what)
        out = []
        for r in range(self.size):
            slot = every[r * SLOT:(r + 1) * SLOT]
            n = int(np.frombuffer(slot[:4].tobytes(), dtype=np.uint32)[0])
            out.append(slot[4:4 + n].tobytes())
        return out

    def _bcast(self, obj, what):
        """Rank 0's JSON-able obj, on every rank."""
        buf = np.zeros(SLOT, dtype=np.uint8)
        if self.writer:
            data = json.dumps(obj).encode()[:SLOT - 4]
            buf[:4] = np.frombuffer(np.uint32(len(data)).tobytes(), dtype=np.uint8)
            buf[4:4 + len(data)] = np.frombuffer(data, dtype=np.uint8)
        self._wait(self.comm.Ibcast(buf, root=0), what)
        n = int(np.frombuffer(buf[:4].tobytes(), dtype=np.uint32)[0])
        return json.loads(buf[4:4 + n].tobytes())

    def bcast_bytes(self, data, n, what):
        """Rank 0's n bytes, on every rank (NCCL's unique id)."""
        buf = np.zeros(n, dtype=np.uint8)
        if self.writer:
            buf[:] = np.frombuffer(bytes(data), dtype=np.uint8)
        self._wait(self.comm.Ibcast(buf, root=0), what)
        return buf.tobytes()

    def abort(self, code=1):
        """End every rank of the job now (after this rank has said why)."""
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        self.comm.Abort(code)
