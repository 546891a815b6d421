"""Data-parallel training over N processes: the Trainer's hooks, one process or N ranks.

    mpiexec -n 4 minidiff train --model tiny --data digits --batch-size 128 ...

One process is `World`: every hook below is the identity, so a run is exactly what it was
before this package existed (same draws, same bits, same checkpoint). Launched by mpiexec or
srun as N > 1 ranks, `world()` is an `MPIWorld` (mpi.py): mpi4py starts the ranks and
all-reduces NumPy gradients; on GPUs, NCCL all-reduces CuPy gradients (nccl.py). One step:

    every rank   draws the global batch's indices, t and ε from the shared stream (seeded
                 by --seed, the same on every rank), and keeps its slice of B/N examples
    every rank   runs forward and backward on its slice; rank-local draws (dropout) come from
                 its own stream, seeded by (seed, rank)
    all-reduce   the loss, then the gradients in one flat buffer: a sum, divided by N
    every rank   the identical clip, Adam(W) and EMA step; every `check_every` steps a digest
                 of the weights is compared across ranks, and a drift stops the run

Rank 0 alone keeps the run folder: its lock, log.csv, the checkpoints (with every rank's own
stream, so --resume with the same N is exact) and the pictures. Every wait for the other
ranks is bounded by `timeout` seconds, so a rank that dies never leaves the others hanging.
"""
import hashlib
import json

import numpy as np

from .. import backend

__all__ = ["World", "RankFailure", "FollowerExit", "world", "writes", "init", "META_KEYS"]

META_KEYS = ("ranks", "rank_rng")        # what a checkpoint of N > 1 ranks holds besides


class RankFailure(RuntimeError):
    """Another rank died, stopped answering, or the ranks' weights drifted apart."""


class FollowerExit(SystemExit):
    """Rank 0 failed and has said why; the other ranks end quietly, with status 1."""

    def __init__(self):
        super().__init__(1)


class FollowerLock:
    """What ranks 1..N-1 hold instead of the run folder's lock: rank 0 holds the real one."""
    held = True

    def release(self):
        pass


class World:
    """One process: every hook is the identity."""
    size, rank, local_rank, local_size = 1, 0, 0, 1
    timeout = 300.0                      # seconds a rank waits for the others, at most
    check_every = 100                    # steps between two comparisons of the weights

    @property
    def writer(self):
        """Whether this process keeps the run folder (rank 0)."""
        return self.rank == 0

    def join(self, cfg):
        return self

    def lead(self, trainer, failed=None):
        """Rank 0, its folder settled: tell the others where the run starts (or that it
        failed)."""

    def follow(self, trainer):
        """Ranks 1..N-1: start where rank 0 starts (its checkpoint, or step 0)."""

    def training_losses(self, diffusion, model, x0):
        return diffusion.training_losses(model, x0)

    def mean_loss(self, value):
        return value

    def average_gradients(self, params):
        pass

    def check_in(self, trainer):
        pass

    def gather_streams(self):
        return None

    def checkpoint_meta(self, streams=None):
        return {}

    def check_checkpoint(self, path, meta, restore_rng):
        """Refuse, before anything changes, a checkpoint of N ranks resumed with another N."""
        ranks = meta.get("ranks", 1)
        if "ranks" in meta and (isinstance(ranks, bool) or not isinstance(ranks, int)
                                or ranks < 2) or "rank_rng" in meta and "ranks" not in meta:
            raise ValueError(f"checkpoint {path}: meta.ranks: must be an int >= 2, got "
                             f"{ranks!r:.40}. Nothing was loaded or changed")
        if restore_rng and ranks != self.size:
            raise ValueError(
                f"ranks: the checkpoint {path} was written by {ranks} rank(s) and this run has "
                f"{self.size}; resume it with `mpiexec -n {ranks}` (each rank's random stream "
                "is in the checkpoint), or start a new run in another --out-dir. Nothing was "
                "loaded or changed")
        if ranks > 1:
            check_streams(path, meta.get("rank_rng"), ranks)

    def set_stream(self, meta):
        pass

    def abort(self, code=1):
        pass


def check_streams(path, streams, ranks):
    """A checkpoint's rank_rng: one state per rank that NumPy's PCG64 takes as it is."""
    bad = f"checkpoint {path}: meta.rank_rng"
    if not isinstance(streams, list) or len(streams) != ranks:
        raise ValueError(f"{bad}: expected a list of {ranks} generator states. Nothing was "
                         "loaded or changed")
    for i, state in enumerate(streams):
        try:
            g = np.random.PCG64()
            g.state = state
            ok = g.state == state
        except (TypeError, ValueError, OverflowError, KeyError):
            ok = False
        if not ok:
            raise ValueError(f"{bad}[{i}]: not a state NumPy's PCG64 takes as it is. Nothing "
                             "was loaded or changed")


class Ranks(World):
    """N > 1 ranks: the data-parallel step. The messages themselves (`_allreduce_sum`,
    `_allgather`, `_bcast`) are a subclass's: MPI for NumPy arrays, NCCL for CuPy ones."""

    def __init__(self, size, rank, local_rank=0, local_size=1):
        self.size, self.rank, self.local_rank, self.local_size = size, rank, local_rank, \
            local_size
        self.out_dir, self.stream = "", None

    # ------------------------------------------------------------------ start
    def join(self, cfg):
        """Check that the batch splits and that every rank runs the same config; seed this
        rank's own stream from (seed, rank)."""
        if cfg.batch_size % self.size:
            raise ValueError(f"batch_size: the global batch {cfg.batch_size} does not split "
                             f"evenly over {self.size} ranks; allowed: a multiple of "
                             f"{self.size}")
        self.out_dir = cfg.out_dir
        digest = hashlib.blake2b(json.dumps(cfg.to_json(), sort_keys=True).encode(),
                                 digest_size=16).digest()
        if len(set(self._allgather(digest, "comparing the configs"))) != 1:
            raise RankFailure("the ranks were started with different configs; start every "
                              "rank with the same flags")
        seeds = np.random.SeedSequence([cfg.seed, self.rank])
        self.stream = np.random.PCG64(seeds).state
        return self

    def lead(self, trainer, failed=None):
        self._bcast({"failed": failed is not None, "step": getattr(trainer, "step", 0)},
                    "starting")

    def follow(self, trainer):
        said = self._bcast(None, "waiting for rank 0 to open the run folder")
        if said["failed"]:
            raise FollowerExit()
        if said["step"] > 0:
            trainer.load(trainer.ckpt_path)
            if trainer.step != said["step"]:
                raise RankFailure(f"rank {self.rank}: read step {trainer.step} from "
                                  f"{trainer.ckpt_path}, rank 0 read step {said['step']}")

    # ------------------------------------------------------------------ one step
    def training_losses(self, diffusion, model, x0):
        """This rank's slice of the loss of the global batch x0 (B, ...).

        One process at batch B draws t (B,) and then ε (B, ...) from the shared stream
        (GaussianDiffusion.training_losses, Ho et al. 2020, Alg. 1, lines 3-4). Every rank
        draws the same, from the same stream in the same state, and keeps rows
        [rank·B/N, (rank+1)·B/N): so N ranks see exactly the examples, t and ε of one
        process, and the shared stream stays in step on every rank. The draws cost B, not B/N,
        numbers per rank, which is little beside the network. (Each rank drawing from its own
        stream would give N different runs at every N, none comparable with one process.)
        Draws made inside the network (dropout) are rank-local: they come from this rank's
        own stream."""
        B, n = x0.shape[0], x0.shape[0] // self.size
        rows = slice(self.rank * n, (self.rank + 1) * n)
        g = backend.rng()
        host = getattr(g, "host", g)                 # on a GPU: draw on the host, move a slice
        t = host.integers(0, diffusion.num_timesteps, size=B)
        noise = host.standard_normal(x0.shape, dtype=diffusion.dtype)
        xp = backend.xp()
        with self._own_stream():
            return diffusion.training_losses(model, x0[rows], t=xp.asarray(t[rows]),
                                             noise=xp.asarray(noise[rows]))

    def _own_stream(self):
        world = self

        class Swap:
            def __enter__(self):
                self.shared = backend.get_rng_state()
                backend.set_rng_state(world.stream)

            def __exit__(self, *exc):
                world.stream = backend.get_rng_state()
                backend.set_rng_state(self.shared)
        return Swap()

    def mean_loss(self, value):
        """The mean loss of the global batch: each rank's slice mean, summed, over N."""
        total = self._allreduce_sum(np.array([value], dtype=np.float64), "averaging the loss")
        return float(total[0]) / self.size

    def average_gradients(self, params):
        """Each gradient ← the mean over ranks, all-reduced once in one flat buffer per dtype
        (a sum, then / N): so every rank takes the identical optimizer and EMA step."""
        xp = backend.xp()
        by_dtype = {}
        for p in params:
            by_dtype.setdefault(np.dtype(p.data.dtype), []).append(p)
        for dtype, group in by_dtype.items():
            sizes = [p.data.size for p in group]
            flat = xp.zeros(sum(sizes), dtype=dtype)                 # one contiguous buffer
            at = 0
            for p, n in zip(group, sizes):
                if p.grad is not None:
                    flat[at:at + n] = p.grad.reshape(-1)
                at += n
            flat = self._allreduce_sum(flat, "averaging the gradients")
            flat /= dtype.type(self.size)
            at = 0
            for p, n in zip(group, sizes):
                if p.grad is not None:       # a new array per step: nothing edits it in place
                    p.grad = flat[at:at + n].reshape(p.data.shape)
                at += n

    def check_in(self, trainer):
        """Every check_every steps: the ranks' weights must be bit for bit the same."""
        if trainer.step % self.check_every:
            return
        h = hashlib.blake2b(digest_size=16)
        for p in trainer.params:
            h.update(np.ascontiguousarray(backend.to_numpy(p.data)).tobytes())
        digests = self._allgather(h.digest(), "comparing the weights")
        if len(set(digests)) != 1:
            differ = [r for r, d in enumerate(digests) if d != digests[0]]
            raise RankFailure(f"step {trainer.step}: the weights of rank(s) {differ} drifted "
                              "from rank 0's; training stopped. The last checkpoint in "
                              f"{self.out_dir} is intact")

    # ------------------------------------------------------------------ checkpoints
    def gather_streams(self):
        """Every rank's own stream, on rank 0 (None on the others)."""
        streams = self._allgather(json.dumps(self.stream).encode(), "gathering the streams")
        return [json.loads(s) for s in streams] if self.writer else None

    def checkpoint_meta(self, streams=None):
        return {"ranks": self.size, "rank_rng": streams or [self.stream] * self.size}

    def set_stream(self, meta):
        self.stream = meta["rank_rng"][self.rank]


_world = [World()]


def world():
    """This process's World: one process unless init() found N > 1 ranks."""
    return _world[0]


def writes():
    """Whether this process keeps the run folder: one process, or rank 0 of N."""
    return _world[0].writer


def init(timeout=None, check_every=None):
    """Join the ranks mpiexec or srun started (one process: nothing to join). Returns the
    World, which the Trainer's hooks use from then on."""
    from .launch import launched_size
    if launched_size() > 1 and _world[0].size == 1:
        from .mpi import MPIWorld
        w = MPIWorld()
        if w.size != launched_size():
            raise RuntimeError(f"the launcher started {launched_size()} ranks but MPI sees "
                               f"{w.size}: mpi4py's MPI is not the launcher's; use the "
                               "mpiexec of the MPI that mpi4py was built with")
        _world[0] = w
    w = _world[0]
    if timeout is not None:
        w.timeout = float(timeout)
    if check_every is not None:
        w.check_every = int(check_every)
    return w
from . import launch  # noqa: E402  (the command line: minidiff/cli.py uses it)
