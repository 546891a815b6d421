"""The training loop (Ho et al. 2020, Algorithm 1), with EMA, checkpoints and exact resume.

    repeat
        x0 ~ q(x0)                                     a batch of data
        t ~ U{1..T}, ε ~ N(0, I)                       (0-based here: t ~ U{0..T-1})
        step on ∇θ ‖ε − ε_θ(√ᾱ_t x0 + √(1−ᾱ_t) ε, t)‖²   or the loss the config chooses
    until converged

A run lives in one folder (minidiff/rundir.py keeps it whole):
    checkpoint.npz   weights, optimiser state, EMA, step, the RNG state and the config: all it
                     takes to continue bit for bit (minidiff/run_state.py)
    log.csv          step, loss, grad_norm, lr: one row per `log_every` steps (runlog.py)
    loss.png         the loss curve, redrawn at every checkpoint
    samples*.png     sample pictures from the EMA weights
    config.json      the config, for people to read

    trainer = Trainer(TrainConfig(data="swiss_roll", steps=2000, out_dir="runs/roll")).run()
    trainer = Trainer(cfg, resume=True).run()     # continues a killed run exactly
    trainer = Trainer.from_checkpoint("runs/roll/checkpoint.npz")   # for sampling
"""
import io
import json
import math
import os

import numpy as np

from . import backend, data, data_source, distributed, metrics, rundir, run_state, runlog, viz
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig, check_sampler, schedule_betas
from .datakinds import DATA_KINDS, draw_points
from .diffusion import (FlowMatching, GaussianDiffusion, ddim_sample_loop_progressive,
                        ddim_timesteps)
from .models import MLPDenoiser, unet_from_preset
from .optim import EMA, Adam, AdamW, LinearWarmup, clip_grad_norm
from .progress import Progress

__all__ = ["Trainer", "TrainConfig", "NonFiniteLoss", "ModelDiverged", "build_model",
           "build_diffusion", "distances_2d"]


class NonFiniteLoss(RuntimeError):
    """Training met a NaN or inf; the last good checkpoint was left as it was."""


class ModelDiverged(RuntimeError):
    """Sampling met a NaN or inf: the weights produce garbage."""


def build_model(cfg, shape):
    """The MLP for points, or the U-Net preset for images of shape (C, S, S); twice the
    output channels when the variance is learned (Nichol & Dhariwal 2021, Eq. 15)."""
    learn_sigma = cfg.variance == "learned_range"
    if cfg.model == "mlp":
        return MLPDenoiser(data_dim=shape[0], time_dim=cfg.time_dim, hidden=cfg.hidden,
                           depth=cfg.depth, learn_sigma=learn_sigma,
                           fourier_levels=cfg.fourier_levels)
    c, h, w = shape
    if h != w:
        raise ValueError(f"image_size: images must be square, got {h}x{w}")
    return unet_from_preset(cfg.model, in_channels=c, image_size=h, dropout=cfg.dropout,
                            learn_sigma=learn_sigma)


def build_diffusion(cfg, variance=None):
    """The run's diffusion (its flow matching for objective 'flow'); with another (fixed)
    `variance`, one for sampling only."""
    if cfg.objective == "flow":
        return FlowMatching()
    if variance in (None, cfg.variance):
        return GaussianDiffusion(schedule_betas(cfg.schedule, cfg.timesteps),
                                 parameterization=cfg.parameterization, variance=cfg.variance,
                                 loss=cfg.loss, mu_mse_weight=cfg.mu_mse_weight)
    return GaussianDiffusion(schedule_betas(cfg.schedule, cfg.timesteps),
                             parameterization=cfg.parameterization, variance=variance)


def _mean_half(model):
    """The model without its variance channels: sampling a learned-σ run with a fixed σ."""
    return lambda x_t, t: model(x_t, t)[:, :x_t.shape[1]]       # the first C of 2C channels


def distances_2d(samples, cfg, seed=12345, repeats=None):
    """metrics.distances_2d against fresh draws of cfg's 2-D data."""
    return metrics.distances_2d(samples, lambda n, g: draw_points(cfg, n, g), seed, repeats)


class Trainer:
    """Everything one run needs; `run()` trains to cfg.steps.

    resume=True continues from out_dir/checkpoint.npz (if there is one); overwrite=True starts
    afresh over an existing run. Without either, a folder that already holds a run is refused,
    so nothing is lost by accident.

    The trainer holds the folder's lock (minidiff.rundir) from here to the end of run(): a
    second trainer on the same folder is refused. With overwrite=True the old run is moved
    aside when run() starts and dropped only once the new run's first checkpoint is on disk;
    if the new run fails before that, the old run is put back.
    """

    def __init__(self, cfg, resume=False, overwrite=False, quiet=False):
        self.quiet = quiet
        cfg.validate()
        world = distributed.init().join(cfg)             # N ranks (mpiexec): minidiff/distributed
        if not world.writer:                             # ranks 1..N-1: rank 0 keeps the folder
            self.quiet, self._lock = True, distributed.FollowerLock()
            self._build(cfg)
            world.follow(self)                           # from rank 0's checkpoint, if it took one
            return
        self._lock = None
        try:
            rundir.claim(cfg.out_dir)                    # a user's folder: refused, untouched
            self._lock = rundir.RunLock(cfg.out_dir)     # before we look at what is there
            self._say(rundir.recover(cfg.out_dir))
            self._build(cfg)
            if os.path.exists(self.ckpt_path):
                if resume:
                    self.load(self.ckpt_path)
                    self._say(f"resume: continuing {cfg.out_dir} from step {self.step}")
                elif overwrite:
                    self._overwrite = True              # run() moves the old run aside
                else:
                    raise FileExistsError(
                        f"out_dir: {cfg.out_dir} already holds a run ({self.ckpt_path}); pass "
                        "--resume to continue it, --overwrite to start it again, or choose "
                        "another --out-dir")
            elif resume:
                self._say(f"resume: no checkpoint in {cfg.out_dir}; starting from step 0")
            world.lead(self)
        except BaseException as e:
            self.close()
            if not isinstance(e, distributed.RankFailure):
                world.lead(self, failed=e)               # N ranks: the others stop too
            raise

    def _build(self, cfg, with_data=True):
        """Data, model, diffusion, optimiser, warm-up and EMA, all from cfg and its seed.
        Without data (sampling a saved image run), the shape comes from the config."""
        cfg.data_path = os.path.abspath(cfg.data_path) if cfg.data_path else ""   # not cwd's
        self.cfg = cfg.validate()
        self.kind = DATA_KINDS[cfg.data]
        backend.manual_seed(cfg.seed)
        self.data = self.kind.load(cfg) if with_data else None
        self.data_record = data_source.record(cfg.data_path) if with_data else None
        self.shape = self.kind.shape(cfg)
        self.model = build_model(cfg, self.shape)
        self.diffusion = build_diffusion(cfg)
        self.params = self.model.parameters()
        opt_cls = AdamW if cfg.optimizer == "adamw" else Adam
        self.opt = opt_cls(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.warmup = LinearWarmup(self.opt, cfg.warmup, cfg.lr)
        self.ema = EMA(self.model, decay=cfg.ema_decay)
        self.step = 0
        self._replacing = None              # the old run's .previous/ while it is replaced
        self._overwrite = False
        self.ckpt_path = os.path.join(cfg.out_dir, "checkpoint.npz")
        self.log_path = os.path.join(cfg.out_dir, "log.csv")
        self._log = None

    @classmethod
    def from_checkpoint(cls, path, quiet=True, data_path=None):
        """A trainer holding a saved run (its config and weights), for sampling and
        evaluation. `path` is a checkpoint or a run folder. It writes nothing but what undoes
        a killed --overwrite (rundir.recover_for_reading), and
        an image run does not need its training images. A 2-D run reads its data (the plots'
        reference) where it was trained, or at `data_path` if it moved; either way it must be
        the same data (check_data)."""
        note = rundir.recover_for_reading(path)      # a killed --overwrite: the old run back
        if note:
            print(note, flush=True)                  # files moved: said even when quiet
        if os.path.isdir(path):
            path = os.path.join(path, "checkpoint.npz")
        arrays, meta = load_checkpoint(path, limit=run_state.checkpoint_limit)   # one read:
        cfg = run_state.saved_config(path, meta)     # a whole checkpoint, even if replaced
        cfg.out_dir = os.path.dirname(os.path.abspath(path))
        cfg.data_path = cfg.data_path if data_path is None else data_path
        self = cls.__new__(cls)
        self.quiet, self._lock = quiet, None        # reading takes no lock
        self.ckpt_path, self.saved_meta = path, meta
        points = not DATA_KINDS[cfg.data].images    # points: the data is the plots' reference
        if points:
            self.check_data(cfg.data_path)
        self._build(cfg, with_data=points)
        self.ckpt_path = path
        run_state.restore(self, path, arrays, meta, restore_rng=False)
        return self

    def check_data(self, data_path):
        """Refuse, in one line, data at data_path that is not what this saved run was trained
        on (minidiff/data_source.py); say so if only its files' times changed."""
        note = run_state.check_data(self.ckpt_path, self.saved_meta, data_path)
        if note:
            self._say(note)

    def close(self):
        """Let go of the run folder (run() does this when it ends)."""
        if self._lock is not None:
            self._lock.release()

    def _say(self, msg):
        if msg and not self.quiet:
            print(msg, flush=True)

    # ---------------------------------------------------- Ho et al. 2020, Algorithm 1
    def next_batch(self):
        """x0: a batch drawn with replacement through the library's generator."""
        g = backend.rng()
        idx = backend.to_numpy(g.integers(0, len(self.data), size=self.cfg.batch_size))  # (B,)
        if isinstance(self.data, data.ImageFolder):
            x0 = self.data.batch(idx, rng=g)                          # (B, C, H, W)
        else:
            x0 = self.data[idx]                                       # (B, 2) or (B, C, H, W)
        return backend.xp().asarray(x0)                               # on the device

    def train_step(self):
        """One update; returns (loss, grad_norm, lr). Raises NonFiniteLoss before any change
        to the weights if the loss or the gradient is NaN or inf."""
        x0 = self.next_batch()                                   # Ho et al. 2020, Alg. 1, l. 2
        with np.errstate(over="ignore", invalid="ignore"):       # checked just below
            world = distributed.world()                          # N ranks: this rank's rows
            losses = world.training_losses(self.diffusion, self.model, x0)  # Ho 2020, l. 3-4
            loss = losses.mean()
            value = world.mean_loss(loss.item())                 # N ranks: the global batch's
        if not math.isfinite(value):
            raise NonFiniteLoss(f"step {self.step + 1}: the loss is {value}; training stopped. "
                                f"{self._last_good()} Try a lower --lr, more --warmup, or "
                                "--loss simple.")
        self.opt.zero_grad()
        loss.backward()
        distributed.world().average_gradients(self.params)      # N ranks: the mean gradient
        grad_norm = clip_grad_norm(self.params, self.cfg.grad_clip)   # Ho et al.: clip to 1
        if not math.isfinite(grad_norm):
            raise NonFiniteLoss(f"step {self.step + 1}: the gradient norm is {grad_norm}; "
                                f"training stopped. {self._last_good()}")
        lr = self.opt.lr
        self.opt.step()                                          # Ho et al. 2020, Alg. 1, l. 5
        self.warmup.step()
        # EMA with a warm-up: decay min(d, (1 + k)/(10 + k)) after k updates, as TF's
        # ExponentialMovingAverage(num_updates=k) does, so short runs are not averaged
        # mostly with the random initial weights (0.999^300 ≈ 0.74 of them would remain).
        self.ema.decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        self.ema.update()
        self.step += 1
        distributed.world().check_in(self)                       # N ranks: no drift
        return value, grad_norm, lr

    def _last_good(self):
        if self._replacing is not None:
            return (f"No checkpoint of this run was written, so the run it was to overwrite "
                    f"in {self.cfg.out_dir} is put back as it was.")
        if os.path.exists(self.ckpt_path):
            return f"The last good checkpoint, {self.ckpt_path}, is untouched."
        return "No checkpoint had been written yet."

    def run(self, final_samples=True):
        """Train from self.step to cfg.steps; then (if final_samples) draw samples.png."""
        cfg = self.cfg
        if self._lock is None or not self._lock.held:   # a second run() of this trainer
            self._lock = rundir.RunLock(cfg.out_dir)
        try:
            if self._overwrite:                         # the old run waits in .previous/
                self._replacing = rundir.move_run_aside(cfg.out_dir)
                self._overwrite = False
            self._train()
            if final_samples:
                self.save_samples("samples.png")
        except BaseException:
            if self._replacing is not None:             # failed before its first checkpoint
                rundir.restore(self._replacing)
                self._replacing = None
            raise
        finally:
            self._lock.release()
        return self

    def _train(self):
        """Ho et al. 2020's Algorithm 1 as a loop, with the log, checkpoints and sample
        pictures on the way."""
        cfg = self.cfg
        self._log = io.StringIO()                    # N ranks: only rank 0 writes the folder
        if distributed.writes():
            rundir.mark(cfg.out_dir)                 # a run from before the mark: ours now
            for tmp in rundir.remove_stale_temp_files(cfg.out_dir):
                self._say(f"removed {tmp}, left half-written by a killed run")
            self._log, note = runlog.open_log(self.log_path, self.step)   # a damaged line:
            self._say(note)                                                 # dropped, said
            rundir.write_atomic(os.path.join(cfg.out_dir, "config.json"),
                                json.dumps(cfg.to_json(), indent=1) + "\n")
        bar = Progress(cfg.steps, start=self.step, desc="train",
                       stream=io.StringIO() if self.quiet else None)
        self.model.train()
        try:
            while self.step < cfg.steps:
                loss, gnorm, lr = self.train_step()
                if self.step % cfg.log_every == 0:
                    self._log.write(runlog.format_row(self.step, loss, gnorm, lr))
                bar.update(1, loss=loss)
                if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                    self._log.flush()                 # every logged row is on disk first
                    self.save(self.ckpt_path)
                    if self._replacing is not None:   # the new run is durable: drop the old
                        rundir.commit(self._replacing)
                        self._replacing = None
                    self.plot_losses()
                if cfg.sample_every and self.step % cfg.sample_every == 0:
                    self.save_samples(f"samples_{self.step:06d}.png")
        except NonFiniteLoss:
            self._log.flush()
            if self._replacing is None:
                self.plot_losses()
            raise
        finally:
            bar.close()
            self._log.close()

    # -------------------------------------------------------------------- checkpoints
    def state(self, streams=None):
        """(arrays, meta): the whole run, as a checkpoint holds it."""
        return run_state.state(self, streams)

    def save(self, path):
        """Write the whole state atomically. Weights that are not finite are never saved,
        so the checkpoint on disk is always one that training can continue from."""
        streams = distributed.world().gather_streams()    # N ranks: every rank's own stream
        if not distributed.writes():                     # rank 0 writes it
            return
        arrays, meta = self.state(streams)
        bad = [k for k, v in arrays.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
        if bad:
            raise NonFiniteLoss(f"step {self.step}: {len(bad)} arrays hold NaN or inf (e.g. "
                                f"{bad[0]}); not saving them. {self._last_good()}")
        save_checkpoint(path, arrays, meta)

    def load(self, path, restore_rng=True):
        """Restore a checkpoint, checked whole first (minidiff/run_state.py)."""
        arrays, meta = load_checkpoint(path, limit=run_state.checkpoint_limit)
        note = run_state.check_data(path, meta, self.cfg.data_path)   # the same data
        run_state.restore(self, path, arrays, meta, restore_rng)
        if note:
            self._say(note)

    def read_log(self):
        """(steps, losses) from log.csv."""
        if self._log is not None and not self._log.closed:
            self._log.flush()
        return runlog.read_log(self.log_path)

    # -------------------------------------------------------------------- sampling
    def sample(self, n, use_ema=True, sampler=None, variance=None, ddim_steps=50,
               eta=0.0, frames=0, euler_steps=100):
        """n samples (Ho et al. 2020, Algorithm 2, or DDIM; Euler's method for a flow run),
        from the EMA weights by default. sampler None: ancestral, or euler for a flow run.

        Returns (x0 (n, ...), trajectory): the trajectory is a list of (s, x_s) with about
        `frames` states of the reverse process, from s = T down to s = 0 (empty if frames=0;
        a flow run's s is its time, 1 down to 0).
        The training RNG is left as it was, so sampling during training never changes a run.
        """
        sampler = sampler or ("euler" if self.cfg.objective == "flow" else "ancestral")
        check_sampler(self.cfg, sampler, variance)
        args = (n, sampler, variance, ddim_steps, eta, frames, euler_steps)
        state = backend.get_rng_state()
        self.model.eval()
        try:
            if use_ema:
                with self.ema.swapped_in(self.model):
                    return self._sample(*args)
            return self._sample(*args)
        finally:
            self.model.train()
            backend.set_rng_state(state)

    def _sample(self, n, sampler, variance, ddim_steps, eta, frames, euler_steps):
        shape = (n,) + self.shape
        clip = self.kind.clip                               # images live in [-1, 1]
        d, model = self.diffusion, self.model
        if variance not in (None, self.cfg.variance):
            d = build_diffusion(self.cfg, variance)
            if self.diffusion.variance == "learned_range" and d.variance != "learned_range":
                model = _mean_half(self.model)                      # keep the first C channels
        if sampler == "euler":                              # flow: dx/dt = v_θ, t = 1 → 0
            chain = d.euler_sample_progressive(model, shape, euler_steps)
            n_states = euler_steps + 1
        elif sampler == "ddim":
            chain = ddim_sample_loop_progressive(d, model, shape, num_steps=ddim_steps,
                                                 eta=eta, clip_denoised=clip)
            n_states = len(ddim_timesteps(d.num_timesteps, ddim_steps)) + 1
        else:                                               # ancestral (checked in sample)
            chain = d.p_sample_loop_progressive(model, shape, clip_denoised=clip)
            n_states = d.num_timesteps + 1                  # x_T, x_{T-1}, ..., x_0
        keep = viz.frame_indices(n_states, frames) if frames else set()
        trajectory = []
        for k, (s, x) in enumerate(chain):
            if not bool(backend.xp().isfinite(x).all()):
                raise ModelDiverged(
                    f"sampling: x_{s} holds NaN or inf: the model's predictions blew up, so "
                    f"its weights ({self.ckpt_path}) are not usable; the run probably diverged "
                    "in training. Try sampling the raw weights (--no-ema), or train again with "
                    "a lower --lr, more --warmup, or --loss simple")
            if k in keep:
                trajectory.append((s, backend.to_numpy(x)))
        return backend.to_numpy(x), trajectory

    # -------------------------------------------------------------------- pictures
    def save_samples(self, name):
        """A picture of samples from the EMA weights (what it looks like: self.kind)."""
        path = os.path.join(self.cfg.out_dir, name)
        x, _ = self.sample(self.cfg.n_samples if not self.kind.images else
                           min(self.cfg.n_samples, 64))
        reference = None if self.kind.images else self.data[:5000]
        if distributed.writes():               # N ranks: all sample (in step), rank 0 draws
            self.kind.picture(x, path, reference=reference, title=f"step {self.step}")
        return path

    def plot_losses(self):
        steps, losses = self.read_log() if distributed.writes() else ([], [])
        if len(steps) >= 2:
            viz.plot_loss_curve(steps, losses, os.path.join(self.cfg.out_dir, "loss.png"),
                                log_scale=None,          # log exactly when all > 0
                                title=f"{self.cfg.data}: {self.cfg.parameterization}, "
                                      f"loss {self.cfg.loss}")
