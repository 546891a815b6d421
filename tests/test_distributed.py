"""Data-parallel training over N ranks (minidiff/distributed): `mpiexec -n 2 minidiff train`.

The oracles are runs of one process. In-process (no MPI): each rank feeds its network, bit
for bit, its rows of the one-process batch (the same examples, t and ε), and checkpoints of
N ranks are refused with another N. Under `mpiexec -n 2` (skipped without mpi4py):
- equivalence: 2 ranks at global batch 2B against 1 process at 2B, over S = 20 steps;
- resume: the whole job killed with kill -9, then --resume, against the uninterrupted 2-rank
  run, bit for bit (U-Net with dropout, so each rank's own stream matters);
- one rank killed or frozen: the job ends in time, with a message; the checkpoint loads.

The equivalence tolerance. u = 2^-24. The two runs feed the network the same rows, t and ε
(the in-process test checks it, bit for bit) and differ only in how sums are associated: the
batch sums of the loss and of every weight gradient (one sum of 2B terms, or two sums of B
added), and BLAS's dot products inside the network, whose blocking depends on the number of
rows (the longest has `hidden` terms). A float32 sum of n terms is within γ_{n-1} Σ|x_i| of
the exact sum, γ_n = nu / (1 - nu) (Higham 2002, ch. 4). Here 2B = hidden = 64: the loss terms
are >= 0, so each run's loss is within γ_64 of the exact mean and the two within 2γ_64, and
the gradients' sums make the same relative change in the step. Over S steps at a small
learning rate these differences add up (20 steps do not amplify them), so the losses, the
gradient norms and the distance the weights moved agree within τ = 2 S γ_64 = 1.5e-4.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minidiff import backend, distributed
from minidiff.checkpoint import load_checkpoint, save_checkpoint
from minidiff.config import TrainConfig
from minidiff.distributed import Ranks
from minidiff.runlog import read_log_rows
from minidiff.train import Trainer

pytestmark = pytest.mark.usefixtures("one_blas_thread")

REPO = Path(__file__).resolve().parents[1]
MPIEXEC = Path(sys.executable).parent / "mpiexec"       # the mpich wheel's, beside Python
try:
    import mpi4py  # noqa: F401
    NO_MPI = None if MPIEXEC.exists() else f"no mpiexec beside {sys.executable}"
except ImportError:
    NO_MPI = "mpi4py is not installed: pip install -e '.[mpi]' (CI installs it)"
needs_mpi = pytest.mark.skipif(NO_MPI is not None, reason=NO_MPI or "")

U = 2.0 ** -24
MLP = dict(data="swiss_roll", n_points=500, hidden=64, depth=2, time_dim=16, timesteps=50,
           batch_size=64, n_samples=20, steps=20, ckpt_every=10)


def cfg_of(out_dir, **kw):
    return TrainConfig(**{**MLP, "out_dir": str(out_dir), **kw})


def flags(kw):
    return [a for k, v in kw.items() for a in ("--" + k.replace("_", "-"), str(v))]


def env():
    e = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def train_cmd(ranks, kw, *extra, launcher=()):
    cmd = [sys.executable, "-m", "minidiff", "train", "--quiet", *flags(kw), *extra]
    return cmd if ranks == 0 else [str(MPIEXEC), *launcher, "-n", str(ranks), *cmd]


def run(cmd, timeout=240):
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout)


class Slot(Ranks):
    """Rank `rank` of `size`, without messages: what one rank computes alone."""

    def __init__(self, size, rank, seed=0):
        super().__init__(size, rank)
        self.stream = np.random.PCG64(np.random.SeedSequence([seed, rank])).state


# ------------------------------------------------------------------------------ in-process
def test_each_rank_sees_its_rows_of_the_one_process_batch_t_and_noise(tmp_path, monkeypatch):
    t = Trainer(cfg_of(tmp_path / "run"), quiet=True)
    seen = []

    def spy(x_t, steps):                   # x_t = √ᾱ_t x0 + √(1-ᾱ_t) ε, row by row: exact
        seen.append((x_t.data.copy(), np.asarray(steps).copy()))
        return t.model(x_t, steps)
    start = backend.get_rng_state()
    t.diffusion.training_losses(spy, *t.draw())                          # one process, (64, 2)
    after = backend.get_rng_state()
    for rank in (0, 1):
        backend.set_rng_state(start)
        monkeypatch.setattr(distributed.launch, "_world", [Slot(2, rank)])   # rank of 2
        x0, steps, noise = t.draw()
        assert backend.get_rng_state() == after        # the shared stream stays in step
        with distributed.world().own_stream():
            t.diffusion.training_losses(spy, x0, steps, noise)
        rows = slice(32 * rank, 32 * (rank + 1))
        np.testing.assert_array_equal(seen[-1][0], seen[0][0][rows])
        np.testing.assert_array_equal(seen[-1][1], seen[0][1][rows])
        assert backend.get_rng_state() == after
    t.close()


def test_a_batch_that_does_not_split_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"^batch_size: the global batch 6 does not split "
                       r"evenly over 4 ranks"):
        Slot(4, 0).join(cfg_of(tmp_path, batch_size=6))


def test_a_checkpoint_of_two_ranks_is_refused_by_one_and_read_for_sampling(tmp_path):
    cfg = cfg_of(tmp_path / "run", steps=2, ckpt_every=2)
    Trainer(cfg, quiet=True).run(final_samples=False)
    path = tmp_path / "run" / "checkpoint.npz"
    arrays, meta = load_checkpoint(path)
    own = [np.random.PCG64(np.random.SeedSequence([0, r])).state for r in (0, 1)]
    save_checkpoint(path, arrays, {**meta, "ranks": 2, "rank_rng": own})
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"^ranks: the checkpoint .* was written by 2 rank\(s\) "
                       r"and this run has 1; resume it with `mpiexec -n 2`"):
        Trainer(cfg, resume=True, quiet=True)
    assert path.read_bytes() == before
    assert Trainer.from_checkpoint(str(path)).step == 2          # sampling needs no streams
    save_checkpoint(path, arrays, {**meta, "ranks": 2, "rank_rng": own[:1]})
    with pytest.raises(ValueError, match=r"meta.rank_rng: expected a list of 2 generator"):
        Trainer.from_checkpoint(str(path))


@pytest.mark.parametrize("argv, says", [
    (["--rank-timeout", "0"], "--rank-timeout: must be a number of seconds > 0, got '0'"),
    (["--rank-timeout", "nan"], "--rank-timeout: must be a number of seconds > 0, got 'nan'"),
    (["--check-every", "0"], "--check-every: must be an int >= 1, got '0'")])
def test_bad_rank_flags_are_refused_by_name(argv, says, capsys):
    from minidiff.cli import main
    with pytest.raises(SystemExit) as e:
        main(["train", *argv])
    assert e.value.code == 2 and says in capsys.readouterr().err


def test_one_process_is_the_identity_world():
    w = distributed.world()
    assert (w.size, w.rank, w.writer, w.checkpoint_meta()) == (1, 0, True, {})
    assert w.all_reduce(0.1, []) == 0.1


class OneGpu(Ranks):
    """One rank whose gradient sum goes through a real single-rank NCCL communicator: the
    N-rank step's every line on a GPU, with NCCL, but no second GPU."""

    def __init__(self):
        super().__init__(1, 0)
        from minidiff.distributed.nccl import NcclSum
        self.nccl = NcclSum(self)

    def bcast_bytes(self, data, n, what):
        return bytes(data)

    def lost(self, what, detail=""):
        return f"lost while {what}{detail}"

    def _allreduce_sum(self, a, what):
        return a.copy() if isinstance(a, np.ndarray) else self.nccl.allreduce_sum(a, what)

    def _allgather(self, data, what):
        return [data]

    def _bcast(self, obj, what):
        return obj


def gpu_available():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:                   # no CuPy, or no driver: CuPy's own error types
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs CuPy and an NVIDIA GPU (NCCL)")
def test_the_nccl_step_on_one_gpu_equals_the_one_process_step(tmp_path, monkeypatch):
    """A sum over one rank is a copy, so the N-rank path (host draws sliced, NCCL sum, / 1)
    must give the one-process GPU run's losses and weights bit for bit."""
    backend.set_device("cuda")
    runs = []
    for world in (None, "nccl"):
        backend.manual_seed(0)
        if world:
            monkeypatch.setattr(distributed.launch, "_world", [OneGpu()])
        t = Trainer(cfg_of(tmp_path / str(world), steps=5), quiet=True)
        losses = [t.train_step()[0] for _ in range(5)]
        runs.append((losses, [backend.to_numpy(p.data) for p in t.params]))
        t.close()
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------ mpiexec -n 2
def log_rows(folder):
    return [[float(v) for v in r.split(",")] for r in read_log_rows(folder / "log.csv", 10**9)]


@needs_mpi
def test_two_ranks_match_one_process_at_the_same_global_batch(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for ranks, out in ((0, one), (2, two)):
        r = run(train_cmd(ranks, {**MLP, "out_dir": out}))
        assert r.returncode == 0, r.stderr[-3000:]
    tau = 2 * MLP["steps"] * (64 * U / (1 - 64 * U))          # 2 S γ_{2B}, derived above
    a, b = np.array(log_rows(one)), np.array(log_rows(two))
    assert a.shape == b.shape == (20, 4)
    loss_gap = np.abs(a[:, 1:3] - b[:, 1:3]) / np.abs(a[:, 1:3])   # loss, grad norm
    assert loss_gap.max() <= tau, loss_gap.max()
    start = Trainer(cfg_of(tmp_path / "fresh"), quiet=True)     # θ_0, from the same seed
    theta0 = {"model." + k: v for k, v in start.model.state_dict().items()}
    start.close()
    wa, ma = load_checkpoint(one / "checkpoint.npz")
    wb, mb = load_checkpoint(two / "checkpoint.npz")
    assert sorted(wa) == sorted(wb) and mb["ranks"] == 2 and "ranks" not in ma
    for name in wa:
        ref = theta0.get(name.replace("ema.shadow.", "model."), 0) if "opt." not in name \
            else 0                                    # weights: the distance they moved
        moved = np.linalg.norm((wa[name] - ref).ravel())
        gap = np.linalg.norm((wa[name].astype(np.float64) - wb[name]).ravel())
        assert gap <= tau * moved, (name, gap / moved)


def descendants(pid):
    """Every process below `pid` (the launcher's proxies and the ranks)."""
    kids = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def rank_pids(launcher_pid):
    return sorted(p for p in descendants(launcher_pid)
                  if b"minidiff" in Path(f"/proc/{p}/cmdline").read_bytes())


def wait_for(predicate, what, job, timeout=60):
    deadline = time.monotonic() + timeout
    while not predicate():
        if job.poll() is not None:
            out = job.stdout.read() if job.stdout else ""
            pytest.fail(f"the job ended (status {job.returncode}) before {what}: {out[-2000:]}")
        if time.monotonic() > deadline:
            ranks = rank_pids(job.pid)
            for pid in [job.pid] + descendants(job.pid):
                os.kill(pid, signal.SIGKILL)
            pytest.fail(f"timed out waiting for {what}; rank processes: {ranks}")
        time.sleep(0.05)


UNET = dict(data="folder", image_size=8, model="tiny", dropout=0.1, timesteps=50,
            batch_size=4, n_samples=2, steps=20, ckpt_every=5)


def image_folder(where):
    from PIL import Image
    where.mkdir()
    g = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(g.integers(0, 256, (8, 8), dtype=np.uint8)).save(where / f"{i}.png")
    return where


@needs_mpi
def test_a_killed_two_rank_job_resumes_bit_for_bit(tmp_path):
    kw = {**UNET, "data_path": image_folder(tmp_path / "images")}
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    r = run(train_cmd(2, {**kw, "out_dir": whole}))
    assert r.returncode == 0, r.stderr[-3000:]
    job = subprocess.Popen(train_cmd(2, {**kw, "out_dir": cut}), env=env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: (cut / "checkpoint.npz").exists(), "the first checkpoint", job)
    for pid in [job.pid] + descendants(job.pid):              # the whole job, at once
        os.kill(pid, signal.SIGKILL)
    job.wait()
    _, meta = load_checkpoint(cut / "checkpoint.npz")
    assert 5 <= meta["step"] < 20, f"the kill came too late to test anything: {meta['step']}"
    streams = meta["rank_rng"]
    assert meta["ranks"] == 2 and streams[0] != streams[1]   # each rank's own stream
    with pytest.raises(ValueError, match=r"^ranks: .* written by 2 rank\(s\) and this run"):
        Trainer(TrainConfig(**{**kw, "data_path": str(kw["data_path"]), "out_dir": str(cut)}),
                resume=True, quiet=True)
    r = run(train_cmd(2, {**kw, "out_dir": cut}, "--resume"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert (cut / "log.csv").read_bytes() == (whole / "log.csv").read_bytes()
    wa, ma = load_checkpoint(whole / "checkpoint.npz")
    wb, mb = load_checkpoint(cut / "checkpoint.npz")
    ma["config"].pop("out_dir"), mb["config"].pop("out_dir")
    assert ma == mb and sorted(wa) == sorted(wb)          # step, Adam, EMA, every stream
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)


@needs_mpi
@pytest.mark.parametrize("victim, how, launcher", [
    (1, signal.SIGKILL, ()), (0, signal.SIGKILL, ("-disable-auto-cleanup",)),
    (0, signal.SIGSTOP, ("-disable-auto-cleanup",))],
    ids=["rank 1 killed", "rank 0 killed, no launcher clean-up", "rank 0 frozen"])
def test_when_one_rank_dies_the_job_ends_in_time_and_the_checkpoint_loads(
        tmp_path, victim, how, launcher):
    """A killed rank: MPICH's launcher ends the job, or (without its clean-up) the survivor
    does. A frozen rank (SIGSTOP: alive, silent), which no launcher notices: the survivor's
    --rank-timeout ends the job, in its own words."""
    out, timeout = tmp_path / "run", 6
    kw = {**MLP, "steps": 10**6, "ckpt_every": 20, "out_dir": out}
    job = subprocess.Popen(train_cmd(2, kw, "--rank-timeout", str(timeout), launcher=launcher),
                           env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)                        # the launcher's words: stdout
    wait_for(lambda: (out / "checkpoint.npz").exists(), "the first checkpoint", job)
    ranks = rank_pids(job.pid)
    assert len(ranks) == 2, ranks
    rank0 = int((out / ".lock").read_text())
    t0 = time.monotonic()
    os.kill(rank0 if victim == 0 else [p for p in ranks if p != rank0][0], how)
    try:
        err, _ = job.communicate(timeout=timeout + 30)        # timeout + grace + start-up
    except subprocess.TimeoutExpired:
        for pid in [job.pid] + descendants(job.pid):
            os.kill(pid, signal.SIGKILL)
        pytest.fail("the surviving rank hung")
    took = time.monotonic() - t0
    ours = ("minidiff: error: rank 1 of 2: no answer from the other ranks within 6 s "
            "(--rank-timeout)")
    assert job.returncode != 0 and took <= timeout + distributed.launch.GRACE_S + 10, took
    if how == signal.SIGSTOP:
        assert ours in err and took >= timeout - 1, (took, err[-2000:])
    else:
        assert ours in err or "Killed (signal 9)" in err, err[-2000:]
    assert Trainer.from_checkpoint(str(out)).step >= 20


@needs_mpi
def test_uneven_split_under_mpiexec_is_one_line(tmp_path):
    r = run(train_cmd(2, {**MLP, "batch_size": 63, "out_dir": tmp_path / "run"}))
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("minidiff: error:")]
    assert lines and lines[0] == ("minidiff: error: --batch-size: the global batch 63 does not "
                                  "split evenly over 2 ranks; allowed: a multiple of 2"), r.stderr
    assert not (tmp_path / "run" / "checkpoint.npz").exists()
