"""Data-parallel training over N processes: the Trainer's hooks, one process or N ranks.

    mpiexec -n 4 minidiff train --model tiny --data digits --batch-size 128 ...

One process is `World` (ranks.py): every hook is the identity, so a run is exactly what it was
before this package existed (same draws, same bits, same checkpoint). Launched by mpiexec or
srun as N > 1 ranks, `world()` (launch.py) is an `MPIWorld` (mpi.py): mpi4py starts the
ranks and all-reduces NumPy gradients; on GPUs, NCCL all-reduces CuPy gradients (nccl.py).
One step:

    every rank   draws the global batch's indices, t and ε from the shared stream (seeded
                 by --seed, the same on every rank), and keeps its rows, B/N examples
                 (Trainer.draw, World.rows)
    every rank   runs forward and backward on its rows; rank-local draws (dropout) come from
                 its own stream, seeded by (seed, rank) (World.own_stream)
    all-reduce   the loss, then the gradients in one flat buffer: a sum, divided by N
                 (World.all_reduce, after backward)
    every rank   the identical clip, Adam(W) and EMA step; every `check_every` steps a digest
                 of the weights is compared across ranks, and a drift stops the run

The Trainer calls these hooks; they never call the Trainer or the diffusion back.

Rank 0 alone keeps the run folder: its lock, log.csv, the checkpoints (with every rank's own
stream, so --resume with the same N is exact) and the pictures. Every wait for the other
ranks is bounded by `timeout` seconds, so a rank that dies never leaves the others hanging.
"""
from . import launch                       # the command line's hooks: minidiff/cli.py
from .launch import init, world, writes
from .ranks import META_KEYS, FollowerExit, RankFailure, Ranks, World, check_streams

__all__ = ["World", "Ranks", "RankFailure", "FollowerExit", "world", "writes", "init",
           "META_KEYS", "check_streams"]
