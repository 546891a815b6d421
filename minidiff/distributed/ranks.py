"""One process or N ranks: what the Trainer asks of the world it runs in.

    World()          one process: the identity (every rank's rows are all rows, an all-reduce
                     of one is the value itself), so a run is what it was before ranks existed
    Ranks(N, r)      rank r of N: its rows of the batch, its own stream, the all-reduces; the
                     messages themselves are a subclass's (mpi.py; nccl.py on GPUs)
"""
import contextlib
import hashlib
import json

import numpy as np

from .. import backend

META_KEYS = ("ranks", "rank_rng")        # what a checkpoint of N > 1 ranks holds besides


class RankFailure(RuntimeError):
    """Another rank died, stopped answering, or the ranks' weights drifted apart."""


class FollowerExit(SystemExit):
    """Rank 0 failed and has said why; the other ranks end quietly, with status 1."""

    def __init__(self):
        super().__init__(1)


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

    def lead(self, step=0, failed=False):
        """Rank 0, its folder settled: tell the others the step the run starts from (or that
        it failed)."""

    def follow(self):
        """Ranks 1..N-1: the step rank 0 starts from (0, or its checkpoint's)."""
        return 0

    def rows(self, batch):
        """This rank's rows [rank·B/N, (rank+1)·B/N) of the global batch of B.

        Every rank draws the whole batch's indices, t and ε from the shared stream (seeded
        by --seed, the same on every rank) and keeps its rows: so N ranks see exactly the
        examples, t and ε of one process, and the shared stream stays in step on every rank.
        The draws cost B, not B/N, numbers per rank, which is little beside the network.
        (Each rank drawing from its own stream would give N different runs at every N, none
        comparable with one process.)"""
        n = batch // self.size
        return slice(self.rank * n, (self.rank + 1) * n)

    def own_stream(self):
        """Where the network's own draws (dropout) come from: the shared stream here."""
        return contextlib.nullcontext()

    def all_reduce(self, loss, params):
        """The global batch's mean loss and gradients: here, this process's own."""
        return loss

    def check_in(self, step, params):
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

    def lead(self, step=0, failed=False):
        self._bcast({"failed": failed, "step": step}, "starting")

    def follow(self):
        said = self._bcast(None, "waiting for rank 0 to open the run folder")
        if said["failed"]:
            raise FollowerExit()
        return said["step"]

    # ------------------------------------------------------------------ one step
    @contextlib.contextmanager
    def own_stream(self):
        """Draws inside the network (dropout) come from this rank's own stream, seeded by
        (seed, rank); the shared stream waits, untouched, for the next batch's draws."""
        shared = backend.get_rng_state()
        backend.set_rng_state(self.stream)
        try:
            yield
        finally:
            self.stream = backend.get_rng_state()
            backend.set_rng_state(shared)

    def all_reduce(self, loss, params):
        """The mean loss of the global batch (each rank's row mean, summed, over N), and each
        gradient ← its mean over ranks, all-reduced once in one flat buffer per dtype (a sum,
        then / N): so every rank takes the identical clip, optimizer and EMA step."""
        total = self._allreduce_sum(np.array([loss], dtype=np.float64), "averaging the loss")
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
                    flat[at:at + n] = p.grad.data.reshape(-1)
                at += n
            flat = self._allreduce_sum(flat, "averaging the gradients")
            flat /= dtype.type(self.size)
            at = 0
            for p, n in zip(group, sizes):
                if p.grad is not None:       # a new array per step: nothing edits it in place
                    p.grad = flat[at:at + n].reshape(p.data.shape)
                at += n
        return float(total[0]) / self.size

    def check_in(self, step, params):
        """Every check_every steps: the ranks' weights must be bit for bit the same."""
        if step % self.check_every:
            return
        h = hashlib.blake2b(digest_size=16)
        for p in params:
            h.update(np.ascontiguousarray(backend.to_numpy(p.data)).tobytes())
        digests = self._allgather(h.digest(), "comparing the weights")
        if len(set(digests)) != 1:
            differ = [r for r, d in enumerate(digests) if d != digests[0]]
            raise RankFailure(f"step {step}: the weights of rank(s) {differ} drifted from "
                              "rank 0's; training stopped. The last checkpoint in "
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
